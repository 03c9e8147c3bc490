"""Exact kernel engine vs a float64 brute force built from full Jacobians (torch.func.jacrev).

Tolerances (relative to the largest absolute entry): 1e-6 in float64, 1e-4 in float32 -- the engine sums the
same products in another order, so float64 agrees to ~1e-14 and float32 to ~1e-6.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev, vmap

from lpntk.forgetting import first_order_logit_change
from lpntk.grad_sample import OuterFactors
from lpntk.grad_sample import conv as grad_sample_conv
from lpntk.kernel import (
    _engine,
    _packing,
    entk_blocks,
    gradient_gram,
    jvp_logits,
    logit_loss_gradient,
    loss_gradient,
    lpntk_features,
    lpntk_gram,
    per_sample_grad_norms,
    per_sample_gradients,
    pntk_gram,
    sign_vectors,
)
from lpntk.models import build_model

TOL64 = 1e-6
TOL32 = 1e-4


# ------------------------------------------------------------------------------------------------ models


class ConvNet(nn.Module):
    """Convolutions with stride, padding, dilation, 'same' (asymmetric) padding, a reflect-padded conv, no bias,
    a small-spatial wide conv (pairwise form), average pooling and a Conv1d."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 8, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=(2, 1), dilation=2, bias=False)
        self.c3 = nn.Conv2d(8, 9, 2, padding="same")
        self.c4 = nn.Conv2d(9, 8, (3, 2), stride=(1, 2), padding=1, padding_mode="reflect")
        self.c5 = nn.Conv2d(8, 16, 3, padding=1)
        self.c1d = nn.Conv1d(16, 6, 2, stride=1)
        self.fc = nn.Linear(6 * 3, 5)

    def forward(self, x):
        h = F.relu(self.c1(x))
        h = F.relu(self.c2(h))
        h = torch.tanh(self.c3(h))
        h = F.relu(self.c4(h))
        h = F.avg_pool2d(h, 2)
        h = F.relu(self.c5(h))  # (N, 16, 2, 2)
        h = torch.tanh(self.c1d(h.flatten(2)))  # (N, 6, 3)
        return self.fc(h.flatten(1))


class BNNet(nn.Module):
    """BatchNorm2d and BatchNorm1d in eval mode (affine maps with non-trivial running statistics)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 3 * 3, 6)
        self.bn1 = nn.BatchNorm1d(6)
        self.out = nn.Linear(6, 3)
        g = torch.Generator().manual_seed(3)
        for bn in (self.bn, self.bn1):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.weight.data.copy_(torch.randn(bn.num_features, generator=g))
            bn.bias.data.copy_(torch.randn(bn.num_features, generator=g))

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.out(F.relu(self.bn1(self.fc(h.flatten(1)))))


class Scale(nn.Module):
    """A layer the registry does not know (generic torch.func fallback)."""

    def __init__(self, c: int):
        super().__init__()
        self.s = nn.Parameter(torch.randn(c))

    def forward(self, x):
        return x * self.s.view(1, -1, *([1] * (x.dim() - 2)))


class TwoOut(nn.Module):
    """Parameterised module with a tuple output (whole-model fallback)."""

    def __init__(self, d: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))

    def forward(self, x):
        return x * self.w, x + self.w


class Exotic(nn.Module):
    """Unknown layers (GroupNorm, Scale), LayerNorm, a module called twice, weights tied across modules, a
    module whose weight is used without calling it, a tuple-output module, a parameter on the root, and an
    in-place ReLU on a Linear output."""

    def __init__(self, k: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3, padding=1)
        self.gn = nn.GroupNorm(2, 6)
        self.scale = Scale(6)
        self.lin = nn.Linear(24, 8)
        self.shared = nn.Linear(8, 8)
        self.tied_a = nn.Linear(8, 8)
        self.tied_b = nn.Linear(8, 8)
        self.tied_b.weight = self.tied_a.weight
        self.direct = nn.Linear(8, 8)
        self.two = TwoOut(8)
        self.ln = nn.LayerNorm(8)
        self.head = nn.Linear(8, k)
        self.bias0 = nn.Parameter(torch.randn(k))

    def forward(self, x):
        h = F.relu(self.scale(self.gn(self.scale(self.conv(x)))))  # scale called twice
        h = F.avg_pool2d(h, 2).flatten(1)
        h = F.relu(self.lin(h), inplace=True)
        h = torch.tanh(self.shared(torch.tanh(self.shared(h))))
        h = self.tied_b(torch.relu(self.tied_a(h)))
        h = torch.tanh(F.linear(h, self.direct.weight, self.direct.bias))
        a, b = self.two(h)
        h = self.ln(a * torch.sigmoid(b))
        return self.head(h) + self.bias0


def make_model(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    if name == "mlp":
        return build_model("mlp", (1, 5, 5), 4, hidden=(6, 5)), (1, 5, 5)
    if name == "mlp_inplace":
        return nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.ReLU(inplace=True), nn.Linear(7, 4)), (3, 4)
    if name == "convnet":
        return ConvNet(), (2, 9, 16)
    if name == "resnet":
        return build_model("resnet18_nobn", (3, 8, 8), 10, width=1 / 16), (3, 8, 8)
    if name == "mnist_cnn":
        return build_model("mnist_cnn", (1, 12, 12), 10, width=0.125), (1, 12, 12)
    if name == "bn_eval":
        return BNNet().eval(), (1, 6, 6)
    if name == "exotic":
        return Exotic(), (2, 4, 4)
    raise KeyError(name)


MODELS = ["mlp", "mlp_inplace", "convnet", "resnet", "mnist_cnn", "bn_eval", "exotic"]


# ------------------------------------------------------------------------------------------- brute force


def jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Full per-sample Jacobians J (N, K, P) of the logits w.r.t. all trainable parameters, eval mode."""
    was = model.training
    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}

    def f(p, xi):
        return functional_call(model, p, (xi.unsqueeze(0),)).squeeze(0)

    J = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    model.train(was)
    return torch.cat([J[k].reshape(x.shape[0], J[k].shape[1], -1) for k in params], 2)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def setup(name: str, n: int = 7, seed: int = 1):
    model, shape = make_model(name)
    model = model.double()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    with torch.no_grad():
        k = model.eval()(x).shape[1]
    y = torch.randint(0, k, (n,), generator=g)
    return model, x, y, k


@pytest.fixture(scope="module")
def brute():
    cache = {}

    def get(name: str, n: int = 7, seed: int = 1):
        key = (name, n, seed)
        if key not in cache:
            model, x, y, k = setup(name, n, seed)
            J = jacobian(model, x)
            cache[key] = (model, x, y, k, J)
        return cache[key]

    return get


def signs(y: torch.Tensor, k: int) -> torch.Tensor:
    """s(y) by hand, independently of the library's sign_vectors: +1 at the label, -1 elsewhere, float64."""
    return 2 * F.one_hot(y, k).double() - 1


def lpntk_brute(J: torch.Tensor, y: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    s = signs(y, k)
    phi = torch.einsum("nkp,nk->np", J, s) / math.sqrt(k)
    return phi @ phi.T, phi


# ------------------------------------------------------------------------------------------------- tests


def test_sign_vectors_by_hand():
    s = sign_vectors(torch.tensor([0, 2, 1]), 3)
    assert torch.equal(s, torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]]))
    assert torch.equal(s.double(), signs(torch.tensor([0, 2, 1]), 3))


@pytest.fixture(params=["auto", "factored", "materialised"])
def layer_form(request, monkeypatch):
    """Run a test with the engine's per-layer choice, or with every outer-product layer forced to one form."""
    if request.param == "factored":
        monkeypatch.setattr(OuterFactors, "factored_cost", lambda self, pairs: 0.0)
    elif request.param == "materialised":
        monkeypatch.setattr(OuterFactors, "factored_cost", lambda self, pairs: float("inf"))
    return request.param


@pytest.mark.parametrize("name", MODELS)
def test_lpntk_float64_matches_bruteforce(brute, name, layer_form):
    model, x, y, k, J = brute(name)
    ref, phi = lpntk_brute(J, y, k)
    G = lpntk_gram(model, x, y, block_size=3)
    assert G.dtype == torch.float64 and G.shape == (len(x), len(x))
    assert rel_err(G, ref) <= TOL64
    assert torch.equal(G, G.T)
    assert torch.allclose(torch.diagonal(G), phi.pow(2).sum(1), rtol=1e-10, atol=0)


@pytest.mark.parametrize("path", ["grouped", "unfold"])
def test_conv_weight_grad_paths(brute, monkeypatch, path):
    monkeypatch.setattr(grad_sample_conv, "CONV_WEIGHT_GRAD", path)
    monkeypatch.setattr(OuterFactors, "factored_cost", lambda self, pairs: float("inf"))
    for name in ("convnet", "resnet"):
        model, x, y, k, J = brute(name)
        ref, _ = lpntk_brute(J, y, k)
        assert rel_err(lpntk_gram(model, x, y), ref) <= TOL64


@pytest.mark.parametrize("name", ["mlp", "convnet", "resnet", "mnist_cnn", "bn_eval", "exotic"])
def test_float32(brute, name):
    model, x, y, k, J = brute(name)
    ref, _ = lpntk_brute(J, y, k)
    m32 = copy.deepcopy(model).float()
    G = lpntk_gram(m32, x.float(), y)
    assert G.dtype == torch.float32
    assert rel_err(G, ref) <= TOL32
    # dtype= casts a copy and leaves the caller's model alone
    G64 = lpntk_gram(m32, x.float(), y, dtype=torch.float64)
    assert G64.dtype == torch.float64 and next(m32.parameters()).dtype == torch.float32
    assert rel_err(G64, lpntk_gram(m32.double(), x.float().double(), y)) <= 1e-12


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("name", ["mlp", "convnet", "resnet", "mnist_cnn", "exotic"])
def test_entk_blocks_and_contractions(brute, name, batched, monkeypatch):
    """eNTK blocks (vectorised or looped backward over the K directions) and their lpNTK / pNTK contractions."""
    monkeypatch.setattr(_engine, "BATCHED_BACKWARD", batched)
    model, x, y, k, J = brute(name)
    B = entk_blocks(model, x[:5], x[2:], block_size=2)
    ref = torch.einsum("iap,jbp->ijab", J[:5], J[2:])
    assert B.shape == (5, len(x) - 2, k, k)
    assert rel_err(B, ref) <= TOL64
    Bs = entk_blocks(model, x)
    assert rel_err(Bs, torch.einsum("iap,jbp->ijab", J, J)) <= TOL64
    s = signs(y, k)
    lp = torch.einsum("ia,ijab,jb->ij", s, Bs, s) / k
    assert rel_err(lp, lpntk_gram(model, x, y)) <= TOL64
    ones = torch.ones(k, dtype=torch.float64)
    pn = torch.einsum("a,ijab,b->ij", ones, Bs, ones) / k
    P = pntk_gram(model, x)
    assert rel_err(P, pn) <= TOL64 and torch.equal(P, P.T)


def test_cross_gram_is_subblock(brute, layer_form):
    for name in ("convnet", "exotic"):
        model, x, y, k, J = brute(name, n=9)
        full = lpntk_gram(model, x, y)
        cross = lpntk_gram(model, x[:4], y[:4], x2=x[4:], y2=y[4:], block_size=2)
        assert cross.shape == (4, 5)
        assert rel_err(cross, full[:4, 4:]) <= TOL64
        pc = pntk_gram(model, x[:4], x[4:])
        assert rel_err(pc, pntk_gram(model, x)[:4, 4:]) <= TOL64


def test_blocking_and_memory_chunking(brute, monkeypatch):
    """block_size < N, Gram panels smaller than N, and a memory budget small enough to force chunk pairs
    with recomputation."""
    monkeypatch.setattr(_packing, "_PANEL_ROWS", 3)
    model, x, y, k, J = brute("convnet", n=11)
    ref, _ = lpntk_brute(J, y, k)
    for bs, mem in [(11, 2**30), (4, 2**30), (1, 2**30), (2, 1), (3, 20_000)]:
        G = lpntk_gram(model, x, y, block_size=bs, max_memory_bytes=mem)
        assert rel_err(G, ref) <= TOL64, (bs, mem)
        assert torch.equal(G, G.T)
    Gc = lpntk_gram(model, x[:5], y[:5], x2=x[5:], y2=y[5:], block_size=2, max_memory_bytes=1)
    assert rel_err(Gc, ref[:5, 5:]) <= TOL64
    Bc = entk_blocks(model, x, block_size=3, max_memory_bytes=1)
    assert rel_err(Bc, torch.einsum("iap,jbp->ijab", J, J)) <= TOL64


def test_features_and_gradient_gram(brute):
    model, x, y, k, J = brute("exotic")
    ref, phi = lpntk_brute(J, y, k)
    assert rel_err(lpntk_features(model, x, y, num_classes=k, block_size=3), phi) <= TOL64
    v = torch.randn(len(x), k, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    g = torch.einsum("nkp,nk->np", J, v)
    assert rel_err(per_sample_gradients(model, x, v), g) <= TOL64
    assert rel_err(gradient_gram(model, x, v), g @ g.T) <= TOL64
    assert rel_err(gradient_gram(model, x[:3], v[:3], x2=x[3:], v2=v[3:]), g[:3] @ g[3:].T) <= TOL64


def test_linear_model_wrappers_against_the_closed_form():
    """The public Grams of z = W x + b, where J(x) J(x')^T = (x . x' + 1) I_K: gradient_gram = theta * (v v'^T),
    lpntk_gram = theta * (s s'^T) / K, pntk_gram = theta, through every option the wrappers hand on (cross Grams,
    block and memory sizes, num_classes, dtype, the sketch's dimension and seed) and the arguments they check."""
    g = torch.Generator().manual_seed(3)
    k, d = 3, 4
    model = nn.Linear(d, k).double()
    x, x2 = torch.randn(5, d, generator=g, dtype=torch.float64), torch.randn(3, d, generator=g, dtype=torch.float64)
    y, y2 = torch.tensor([0, 2, 1, 1, 0]), torch.tensor([2, 2, 0])
    v, v2 = torch.randn(5, k, generator=g, dtype=torch.float64), torch.randn(3, k, generator=g, dtype=torch.float64)
    theta, theta_x = x @ x.T + 1, x @ x2.T + 1  # written out: (x . x' + 1), the scalar of the identity block
    s, s2 = signs(y, k), signs(y2, k)
    ref = {
        "gradient": (theta * (v @ v.T), theta_x * (v @ v2.T)),
        "lpntk": (theta * (s @ s.T) / k, theta_x * (s @ s2.T) / k),
        "pntk": (theta, theta_x),
    }
    calls = {
        "gradient": lambda *cross, **kw: gradient_gram(model, x, v, *cross, **kw),
        "lpntk": lambda *cross, **kw: lpntk_gram(model, x, y, k, *cross, **kw),
        "pntk": lambda *cross, **kw: pntk_gram(model, x, *cross[:1], **kw),
    }
    cross_args = {"gradient": (x2, v2), "lpntk": (x2, y2), "pntk": (x2,)}
    for name, call in calls.items():
        full, cross = ref[name]
        G = call(block_size=1, max_memory_bytes=1)  # the smallest valid sizes
        assert G.shape == (5, 5) and G.dtype == torch.float64 and rel_err(G, full) <= 1e-12, name
        C = call(*cross_args[name], block_size=2)
        assert C.shape == (5, 3) and rel_err(C, cross) <= 1e-12, name
        G32 = call(dtype=torch.float32)
        assert G32.dtype == torch.float32 and rel_err(G32, full) <= 1e-5, name
        C32 = call(*cross_args[name], dtype=torch.float32)  # x2 (float64) is cast along with the model
        assert C32.dtype == torch.float32 and rel_err(C32, cross) <= 1e-5, name
        # a CountSketch far wider than the 15 parameters has no collisions for these seeds: exact inner products
        for seed in (0, 1):
            assert rel_err(call(mode="sketch", sketch_dim=100_000, seed=seed), full) <= 1e-12, (name, seed)
        # a one-dimensional sketch is valid, reproducible from its seed, and another seed draws another sketch
        one = call(mode="sketch", sketch_dim=1, seed=5)
        assert one.shape == (5, 5) and torch.equal(one, call(mode="sketch", sketch_dim=1, seed=5))
        assert not torch.equal(call(mode="sketch", sketch_dim=2, seed=1), call(mode="sketch", sketch_dim=2, seed=2))
        # the default seed is 0
        assert torch.equal(call(mode="sketch", sketch_dim=2), call(mode="sketch", sketch_dim=2, seed=0)), name
        assert not torch.equal(call(mode="sketch", sketch_dim=2), call(mode="sketch", sketch_dim=2, seed=1)), name
        for bad, match in (
            ({"block_size": 0}, "^block_size:"),
            ({"block_size": 2.0}, "^block_size:"),
            ({"max_memory_bytes": 0}, "^max_memory_bytes:"),
            ({"mode": "approx"}, "^mode:"),
            ({"mode": "sketch"}, "^sketch_dim:"),
            ({"mode": "sketch", "sketch_dim": 0}, "^sketch_dim:"),
            ({"mode": "sketch", "sketch_dim": 2.0}, "^sketch_dim:"),
        ):
            with pytest.raises(ValueError, match=match):
                call(**bad)
    # the argument names in the messages
    with pytest.raises(ValueError, match="^x:"):
        lpntk_gram(model, x[:0], y[:0])
    with pytest.raises(ValueError, match="^x2:"):
        lpntk_gram(model, x, y, x2=x2[:0], y2=y2[:0])
    with pytest.raises(ValueError, match="^x2:"):
        pntk_gram(model, x, x2[:0])
    with pytest.raises(ValueError, match="^y:"):
        lpntk_gram(model, x, y[:3])
    with pytest.raises(ValueError, match="^y2:"):
        lpntk_gram(model, x, y, x2=x2, y2=y2[:2])
    for kw in ({"x2": x2}, {"y2": y2}):
        with pytest.raises(ValueError, match="^x2, y2: give both or neither"):
            lpntk_gram(model, x, y, **kw)
    for kw in ({"x2": x2}, {"v2": v2}):
        with pytest.raises(ValueError, match="^x2, v2: give both or neither"):
            gradient_gram(model, x, v, **kw)
    with pytest.raises(ValueError, match=r"^v: expected shape \(5, 3\)"):
        gradient_gram(model, x, v[:, None])
    with pytest.raises(ValueError, match=r"^v2: expected shape \(3, 3\)"):
        gradient_gram(model, x, v, x2, v2[:2])


@pytest.mark.parametrize("name", ["mlp", "convnet", "mnist_cnn", "bn_eval", "exotic"])
def test_per_sample_grad_norms(brute, name, layer_form):
    model, x, y, k, J = brute(name)
    with torch.no_grad():
        z = model.eval()(x)
    e = torch.softmax(z, 1) - F.one_hot(y, k).double()
    ref = torch.einsum("nkp,nk->np", J, e).norm(dim=1)
    got = per_sample_grad_norms(model, x, y, block_size=3)
    assert got.shape == (len(x),)
    assert rel_err(got, ref) <= TOL64
    # also against autograd, sample by sample
    i = 2
    loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
    gs = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    assert math.isclose(float(torch.cat([g.flatten() for g in gs]).norm()), float(got[i]), rel_tol=1e-9)


def test_jvp_loss_gradient_and_forgetting_prediction(brute):
    model, x, y, k, J = brute("convnet", n=9)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    shapes = {n: p.shape for n, p in model.named_parameters()}
    u = torch.randn(J.shape[2], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    direction, off = {}, 0
    for n in names:
        direction[n] = u[off : off + shapes[n].numel()].view(shapes[n])
        off += shapes[n].numel()
    assert rel_err(jvp_logits(model, x, direction, block_size=4), J @ u) <= TOL64
    # batch gradient of the mean cross-entropy
    xo, yo, xu, yu = x[:4], y[:4], x[4:], y[4:]
    e = logit_loss_gradient(model, xu, yu)
    with torch.no_grad():
        ref_e = torch.softmax(model(xu), 1) - F.one_hot(yu, k).double()
    assert rel_err(e, ref_e) <= TOL64
    g = loss_gradient(model, xu, yu, block_size=2)
    flat = torch.cat([g[n].flatten() for n in names])
    assert rel_err(flat, torch.einsum("nkp,nk->p", J[4:], ref_e) / len(xu)) <= TOL64
    lr = 0.1
    Ko = torch.einsum("iap,jbp->ijab", J[:4], J[4:])
    dz_entk = -lr * torch.einsum("ijab,jb->ia", Ko, ref_e) / len(xu)
    assert rel_err(first_order_logit_change(model, xo, xu, yu, lr), dz_entk) <= TOL64
    s_o, s_u = signs(yo, k), signs(yu, k)
    kap = torch.einsum("ia,ijab,jb->ij", s_o, Ko, s_u) / k
    dz_lp = -lr * kap @ ref_e / len(xu)
    assert rel_err(first_order_logit_change(model, xo, xu, yu, lr, kernel="lpntk", y_obs=yo), dz_lp) <= TOL64
    pk = Ko.sum((2, 3)) / k
    assert rel_err(first_order_logit_change(model, xo, xu, yu, lr, kernel="pntk"), -lr * pk @ ref_e / len(xu)) <= TOL64


def test_sketch_unbiased_with_bounded_variance(brute):
    """CountSketch inner products: mean over seeds -> exact Gram; variance <= (|g|^2|g'|^2 + <g,g'>^2)/D."""
    model, x, y, k, J = brute("mlp", n=5)
    ref, phi = lpntk_brute(J, y, k)
    D, R = 16, 400
    S = torch.stack([lpntk_gram(model, x, y, mode="sketch", sketch_dim=D, seed=s) for s in range(R)])
    sq = phi.pow(2).sum(1)
    bound = (sq[:, None] * sq[None, :] + ref.pow(2)) / D
    mean, var = S.mean(0), S.var(0)
    # unbiased: |mean - exact| within 5 standard errors (fixed seeds, so deterministic)
    assert torch.all((mean - ref).abs() <= 5 * torch.sqrt(bound / R) + 1e-12)
    # variance bound, with slack for the sampling error of a variance estimate from R draws
    assert torch.all(var <= 1.3 * bound + 1e-12)
    # and the sketch really is random: a sizeable error on some entry
    assert float((S[0] - ref).abs().max()) > 1e-3 * float(ref.abs().max())
    # reproducible from the seed; symmetric
    again = lpntk_gram(model, x, y, mode="sketch", sketch_dim=D, seed=3)
    assert torch.equal(again, S[3]) and torch.equal(again, again.T)
    # a large sketch is close to exact
    big = lpntk_gram(model, x, y, mode="sketch", sketch_dim=20000, seed=0)
    assert rel_err(big, ref) < 0.05


def test_input_errors(brute):
    model, x, y, k, J = brute("mlp")
    with pytest.raises(ValueError, match="y"):
        lpntk_gram(model, x, y[:-1])
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        lpntk_gram(model, x, torch.full_like(y, k))
    with pytest.raises(ValueError, match="y"):
        lpntk_gram(model, x, -torch.ones_like(y))
    with pytest.raises(ValueError, match="y"):
        lpntk_gram(model, x, y.double())
    with pytest.raises(ValueError, match="num_classes"):
        lpntk_gram(model, x, y, num_classes=k + 1)
    with pytest.raises(ValueError, match="num_classes"):
        lpntk_features(model, x, y, num_classes=3)
    with pytest.raises(ValueError, match="y2"):
        lpntk_gram(model, x, y, x2=x)
    with pytest.raises(ValueError, match="y2"):
        lpntk_gram(model, x, y, x2=x[:3], y2=y[:2])
    with pytest.raises(ValueError, match="v"):
        gradient_gram(model, x, torch.zeros(len(x), k + 1))
    with pytest.raises(ValueError, match="y"):
        per_sample_grad_norms(model, x, y[:3])
    with pytest.raises(ValueError, match="mode"):
        lpntk_gram(model, x, y, mode="approx")
    with pytest.raises(ValueError, match="sketch_dim"):
        lpntk_gram(model, x, y, mode="sketch")
    with pytest.raises(ValueError, match="block_size"):
        lpntk_gram(model, x, y, block_size=0)


def test_batchnorm_train_mode_is_an_error():
    model = BNNet().double().train()
    x = torch.randn(4, 1, 6, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="'bn'.*train mode"):
        lpntk_gram(model, x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="train mode"):
        per_sample_grad_norms(model, x, torch.zeros(4, dtype=torch.long))
    assert model.training  # untouched
    nostats = nn.Sequential(nn.Flatten(), nn.Linear(36, 4), nn.BatchNorm1d(4, track_running_stats=False)).eval()
    with pytest.raises(ValueError, match="track_running_stats"):
        pntk_gram(nostats, x.float())


def test_mode_restored_and_dropout_off():
    torch.manual_seed(0)
    model = build_model("mnist_cnn", (1, 12, 12), 10, width=0.125).double()
    model.train()
    model.dropout1.eval()  # a mixed state must come back exactly
    x = torch.randn(5, 1, 12, 12, dtype=torch.float64)
    y = torch.arange(5)
    G1 = lpntk_gram(model, x, y)
    assert model.training and not model.dropout1.training and model.dropout2.training
    G2 = lpntk_gram(model, x, y)
    assert torch.equal(G1, G2)  # dropout was off (eval) both times
    per_sample_grad_norms(model, x, y)
    entk_blocks(model, x[:2])
    assert model.training and not model.dropout1.training


def test_frozen_parameters_are_excluded():
    torch.manual_seed(0)
    model = build_model("small_cnn", (1, 8, 8), 10, width=0.5).double()
    model.conv1.weight.requires_grad_(False)
    model.fc1.bias.requires_grad_(False)
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 10, (6,))
    J = jacobian(model, x)
    ref, _ = lpntk_brute(J, y, 10)
    assert rel_err(lpntk_gram(model, x, y), ref) <= TOL64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_keeps_tf32_setting():
    model, x, y, k = setup("convnet")
    ref = lpntk_gram(model, x, y)
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        G = lpntk_gram(model.float(), x.float(), y, device="cuda")
        assert G.device.type == "cuda"
        assert rel_err(G.cpu(), ref) <= TOL32
        assert torch.backends.cuda.matmul.allow_tf32  # restored
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False

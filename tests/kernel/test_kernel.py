"""Exact kernel engine vs a float64 brute force built from full Jacobians (torch.func.jacrev), beyond the contract
every public kernel function shares (test_kernel_contracts.py): s(y) by hand, both convolution weight-gradient
paths, float32, the eNTK blocks (batched or looped backward) and their contractions, cross Grams, blocking and memory
chunking, the linear model's closed form through every option, JVPs and the forgetting predictors, the sketch's
statistics, input errors, train-mode BatchNorm, the model's mode, frozen parameters and CUDA. The brute force and
the test models are in kernel_brute_force.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from kernel_brute_force import (
    LAYER_FORMS,
    TOL32,
    TOL64,
    BNNet,
    force_layer_form,
    jacobian,
    lpntk_brute,
    make_brute,
    rel_err,
    setup,
    signs,
)
from torch import nn

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
    pntk_gram,
    sign_vectors,
)
from lpntk.models import build_model


@pytest.fixture(scope="module")
def brute():
    return make_brute()


@pytest.fixture(params=LAYER_FORMS)
def layer_form(request, monkeypatch):
    """Run a test with the engine's per-layer choice, or with every outer-product layer forced to one form."""
    return force_layer_form(request.param, monkeypatch)


def test_sign_vectors_by_hand():
    s = sign_vectors(torch.tensor([0, 2, 1]), 3)
    assert torch.equal(s, torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]]))
    assert torch.equal(s.double(), signs(torch.tensor([0, 2, 1]), 3))


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

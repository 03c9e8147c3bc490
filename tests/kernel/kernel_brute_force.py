"""The float64 brute force the kernel tests share (tests/kernel/): the test models (every layer kind the engine
handles, its generic fallbacks and awkward module graphs), full per-sample Jacobians J (N, K, P) of the logits by
torch.func.jacrev, s(y) by hand, and the lpNTK contracted from them -- written without the code under test.

Tolerances (relative to the largest absolute entry): 1e-6 in float64, 1e-4 in float32 -- the engine sums the
same products in another order, so float64 agrees to ~1e-14 and float32 to ~1e-6.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev, vmap

from lpntk.grad_sample import OuterFactors
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


def make_brute():
    """A getter (name, n=7, seed=1) -> (model, x, y, k, J), each case built and differentiated once (a test module's
    ``brute`` fixture holds one)."""
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


LAYER_FORMS = ["auto", "factored", "materialised"]


def force_layer_form(form: str, monkeypatch) -> str:
    """The engine's per-layer choice (``auto``), or every outer-product layer forced to one form."""
    if form == "factored":
        monkeypatch.setattr(OuterFactors, "factored_cost", lambda self, pairs: 0.0)
    elif form == "materialised":
        monkeypatch.setattr(OuterFactors, "factored_cost", lambda self, pairs: float("inf"))
    return form

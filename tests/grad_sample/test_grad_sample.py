"""Per-layer handlers (lpntk.grad_sample) against an independent float64 reference, and a user-registered handler.

The shared base :class:`HandlerCheck` records calls of one module the way the kernel engine does (inputs and the
output gradients delta_{ia} for m cotangent directions), runs the module type's registered handler, and compares
its factors with a reference written without the code under test: torch.func ``vmap(grad)`` of
<module(p; x_i), delta_{ia}> over the module's direct trainable parameters, summed over calls. Checked: the
materialised per-sample gradients, their squared norms, row slices, and for outer-product factors the pairwise
("ghost") inner products sum_{t,t'} (a_it . a_jt' + 1[bias]) (delta_it . delta_jt').
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

import lpntk
from lpntk.grad_sample import GRAD_SAMPLERS, Call, DenseFactors, OuterFactors
from lpntk.grad_sample import conv as grad_sample_conv
from lpntk.kernel import _engine

TOL = 1e-10
N, M = 5, 3  # samples per call, cotangent directions per sample


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


# ------------------------------------------------------------------------------------------------ the base


class HandlerCheck:
    """Check a module's registered handler against torch.func in float64 (one or several calls)."""

    def __init__(self, module: nn.Module, input_shapes: list[tuple[int, ...]], seed: int = 0):
        self.module = module.double()
        self.gen = torch.Generator().manual_seed(seed)
        self.inputs = [torch.randn(N, *s, generator=self.gen, dtype=torch.float64) for s in input_shapes]
        self.params = {k: p for k, p in self.module.named_parameters(recurse=False) if p.requires_grad}

    def calls(self) -> list[Call]:
        out = []
        for x in self.inputs:
            with torch.no_grad():
                y = self.module(x)
            delta = torch.randn(N, M, *y.shape[1:], generator=self.gen, dtype=torch.float64)
            out.append(Call(args=(x,), kwargs={}, output=y, out_version=y._version, in_versions=(), grad=delta))
        return out

    def reference(self, calls: list[Call]) -> torch.Tensor:
        """g_{ia} = sum_calls grad_p <module(p; x_i), delta_{ia}>, (N, M, P) in the handler's parameter order."""
        primals = {k: p.detach() for k, p in self.params.items()}

        def inner(p, x_i, d_ia):
            return (functional_call(self.module, p, (x_i.unsqueeze(0),)).squeeze(0) * d_ia).sum()

        per_sample = vmap(vmap(grad(inner), in_dims=(None, None, 0)), in_dims=(None, 0, 0))
        total = 0
        for c in calls:
            g = per_sample(primals, c.args[0], c.grad)
            total = total + torch.cat([g[k].reshape(N, M, -1) for k in self.params], 2)
        return total

    def run(self) -> DenseFactors | OuterFactors:
        self.module.eval()
        calls = self.calls()
        ref = self.reference(calls)
        f = GRAD_SAMPLERS[type(self.module)](self.module, calls)
        # the factors cover exactly the module's trainable parameters; the reference uses the same order
        assert {id(p) for p in f.params} == {id(p) for p in self.params.values()}
        name_of = {id(p): k for k, p in self.params.items()}
        order = [name_of[id(p)] for p in f.params]
        ref = torch.cat([self._slice(ref, k) for k in order], 2)
        g = f.materialise()
        assert g.shape == (N, M, ref.shape[2]) and g.dtype == torch.float64
        assert rel_err(g, ref) <= TOL
        assert rel_err(f.squared_norms(), ref.pow(2).sum(-1)) <= TOL
        assert rel_err(f.rows(1, 4).materialise(), ref[1:4]) <= TOL
        if isinstance(f, OuterFactors):
            aa = torch.einsum("itd,jsd->itjs", f.a, f.a) + float(f.bias)
            dd = torch.einsum("iatd,jbsd->iatjbs", f.d, f.d)
            ghost = torch.einsum("itjs,iatjbs->iajb", aa, dd)
            assert rel_err(ghost, torch.einsum("iap,jbp->iajb", ref, ref)) <= TOL
        return f

    def _slice(self, ref: torch.Tensor, name: str) -> torch.Tensor:
        off = 0
        for k, p in self.params.items():
            if k == name:
                return ref[:, :, off : off + p.numel()]
            off += p.numel()
        raise KeyError(name)


# ------------------------------------------------------------------------------------------------ the cases


def _bn(cls, c: int) -> nn.Module:
    bn = cls(c)
    g = torch.Generator().manual_seed(c)
    bn.running_mean.copy_(torch.randn(c, generator=g))
    bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    bn.weight.data.copy_(torch.randn(c, generator=g))
    bn.bias.data.copy_(torch.randn(c, generator=g))
    return bn


def _frozen(module: nn.Module, name: str) -> nn.Module:
    getattr(module, name).requires_grad_(False)
    return module


@dataclass
class Case:
    make: Callable[[], nn.Module]
    shapes: list[tuple[int, ...]]  # one input shape (without the batch dim) per call


CASES = {
    "linear": Case(lambda: nn.Linear(6, 4), [(6,)]),
    "linear_sequence": Case(lambda: nn.Linear(6, 4), [(3, 6)]),
    "linear_no_bias": Case(lambda: nn.Linear(6, 4, bias=False), [(2, 2, 6)]),
    "linear_frozen_weight": Case(lambda: _frozen(nn.Linear(6, 4), "weight"), [(6,)]),
    "linear_two_calls": Case(lambda: nn.Linear(6, 4), [(6,), (2, 6)]),
    "conv2d": Case(lambda: nn.Conv2d(3, 5, 3, stride=2, padding=1), [(3, 7, 7)]),
    "conv2d_dilated_no_bias": Case(
        lambda: nn.Conv2d(3, 4, (3, 2), padding=(2, 1), dilation=2, bias=False), [(3, 6, 5)]
    ),
    "conv2d_same": Case(lambda: nn.Conv2d(3, 4, 2, padding="same"), [(3, 5, 5)]),
    "conv2d_reflect": Case(lambda: nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"), [(2, 5, 4)]),
    "conv2d_groups": Case(lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2), [(4, 4, 4)]),
    "conv2d_frozen_weight": Case(lambda: _frozen(nn.Conv2d(2, 3, 3), "weight"), [(2, 4, 4)]),
    "conv2d_two_calls": Case(lambda: nn.Conv2d(2, 3, 3, padding=1), [(2, 4, 4), (2, 3, 5)]),
    "conv1d": Case(lambda: nn.Conv1d(3, 5, 3, stride=2, padding=1), [(3, 9)]),
    "batchnorm1d": Case(lambda: _bn(nn.BatchNorm1d, 5), [(5,)]),
    "batchnorm1d_sequence": Case(lambda: _bn(nn.BatchNorm1d, 4), [(4, 6)]),
    "batchnorm2d": Case(lambda: _bn(nn.BatchNorm2d, 3), [(3, 4, 4)]),
    "batchnorm2d_frozen_weight": Case(lambda: _frozen(_bn(nn.BatchNorm2d, 3), "weight"), [(3, 2, 2)]),
    "batchnorm3d": Case(lambda: _bn(nn.BatchNorm3d, 2), [(2, 3, 3, 3)]),
    "layernorm": Case(lambda: nn.LayerNorm(6), [(3, 6)]),
    "layernorm_2d_shape": Case(lambda: nn.LayerNorm((3, 4)), [(2, 3, 4)]),
    "layernorm_two_calls": Case(lambda: nn.LayerNorm(6), [(6,), (2, 6)]),
}


@pytest.fixture
def restore_registry():
    saved = dict(GRAD_SAMPLERS)
    yield
    GRAD_SAMPLERS.clear()
    GRAD_SAMPLERS.update(saved)


def test_every_registered_layer_type_has_a_case():
    assert set(GRAD_SAMPLERS) <= {type(case.make()) for case in CASES.values()}


@pytest.mark.parametrize("name", [k for k in CASES if not k.startswith("conv")])
def test_handler_matches_reference(name):
    case = CASES[name]
    HandlerCheck(case.make(), case.shapes).run()


@pytest.mark.parametrize("path", ["unfold", "grouped"])
@pytest.mark.parametrize("name", [k for k in CASES if k.startswith("conv")])
def test_conv_handler_matches_reference(name, path, monkeypatch):
    monkeypatch.setattr(grad_sample_conv, "CONV_WEIGHT_GRAD", path)
    case = CASES[name]
    HandlerCheck(case.make(), case.shapes).run()


# ------------------------------------------------------------------------------------------------ a user's layer


class DiagScale(nn.Module):
    """A layer of the user's own: y = x * w + b over the last dim (no handler in the library)."""

    def __init__(self, d: int):
        super().__init__()
        g = torch.Generator().manual_seed(d)
        self.w = nn.Parameter(torch.randn(d, generator=g))
        self.b = nn.Parameter(torch.randn(d, generator=g))

    def forward(self, x):
        return x * self.w + self.b


def diag_scale_factors(module: DiagScale, calls) -> DenseFactors:
    """g^w = sum_pos delta * x, g^b = sum_pos delta (the example of the lpntk.grad_sample docstring)."""
    g = 0
    for c in calls:
        x, d = c.args[0], c.grad
        n, m = d.shape[:2]
        x, d = x.reshape(n, 1, -1, x.shape[-1]), d.reshape(n, m, -1, d.shape[-1])
        g = g + torch.cat([(d * x).sum(2), d.sum(2)], dim=2)
    return DenseFactors(g, params=[module.w, module.b])


def _brute_lpntk(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """float64 brute force: full per-sample Jacobians by jacrev, s(y) by hand, (1/K) s^T J J'^T s'."""
    params = {n: p.detach() for n, p in model.named_parameters()}

    def f(p, x_i):
        return functional_call(model, p, (x_i.unsqueeze(0),)).squeeze(0)

    J = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    J = torch.cat([J[n].reshape(len(x), k, -1) for n in params], 2)
    s = 2 * F.one_hot(y, k).double() - 1
    phi = torch.einsum("nkp,nk->np", J, s) / math.sqrt(k)
    return phi @ phi.T


def test_user_registered_handler_is_used_by_the_kernel(restore_registry, monkeypatch):
    called = []

    @lpntk.register_grad_sampler(DiagScale)
    def handler(module, calls):
        called.append(module)
        return diag_scale_factors(module, calls)

    fallback = []
    generic = _engine.generic_module_factors
    monkeypatch.setattr(
        _engine,
        "generic_module_factors",
        lambda mod, calls, params: fallback.append(type(mod)) or generic(mod, calls, params),
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), DiagScale(6), nn.Tanh(), nn.Linear(6, 4)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (7,), generator=g)
    G = lpntk.lpntk_gram(model, x, y, block_size=3)
    assert called and all(m is model[1] for m in called)  # the user's handler, once per block
    assert DiagScale not in fallback  # not the generic torch.func path
    assert rel_err(G, _brute_lpntk(model, x, y, 4)) <= TOL
    # the handler passes the shared check too (one and two calls, with sequence dims)
    HandlerCheck(DiagScale(6), [(6,)]).run()
    HandlerCheck(DiagScale(6), [(3, 6), (6,)]).run()
    # without it the same model goes through the generic fallback, to the same Gram
    del GRAD_SAMPLERS[DiagScale]
    G2 = lpntk.lpntk_gram(model, x, y, block_size=3)
    assert DiagScale in fallback and rel_err(G2, G) <= TOL

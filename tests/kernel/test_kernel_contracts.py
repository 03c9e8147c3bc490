"""The contract every public kernel function shares, checked by one base: on every test model (kernel_brute_force.py)
and with every outer-product layer form, the function equals a contraction of the full float64 Jacobians J (N, K, P)
of the logits, built by torch.func.jacrev without the code under test.

:data:`CONTRACTS` maps a function to how it is called on a case and the contraction it must equal (plus any checks
of its own); :func:`test_kernel_equals_its_jacobian_contraction` runs every entry on every model of
:data:`kernel_brute_force.MODELS`. A new public kernel is one entry here, a new test model one line in ``MODELS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from kernel_brute_force import LAYER_FORMS, MODELS, TOL64, force_layer_form, lpntk_brute, make_brute, rel_err
from torch import Tensor, nn

from lpntk.kernel import (
    entk_blocks,
    gradient_gram,
    lpntk_features,
    lpntk_gram,
    per_sample_grad_norms,
    per_sample_gradients,
    pntk_gram,
)


@pytest.fixture(scope="module")
def brute():
    return make_brute()


@pytest.fixture(params=LAYER_FORMS)
def layer_form(request, monkeypatch):
    """Run a test with the engine's per-layer choice, or with every outer-product layer forced to one form."""
    return force_layer_form(request.param, monkeypatch)


@dataclass
class Case:
    """One test model's inputs and its brute force: labels y, K classes, the Jacobians J (N, K, P), a seeded cotangent
    v (N, K) and the cross-entropy's logit gradient e = softmax(z) - e_y at the eval-mode logits z."""

    model: nn.Module
    x: Tensor
    y: Tensor
    k: int
    J: Tensor
    v: Tensor
    e: Tensor

    def g(self) -> Tensor:
        """Per-sample gradients J^T v, (N, P)."""
        return torch.einsum("nkp,nk->np", self.J, self.v)


@dataclass(frozen=True)
class Contract:
    """A public kernel function on a case (``compute``), the contraction of J it must equal (``reference``), and
    checks of its own beyond that (``also(case, result)``)."""

    compute: Callable[[Case], Tensor]
    reference: Callable[[Case], Tensor]
    also: Callable[[Case, Tensor], None] | None = None


def _symmetric_with_the_feature_norms_on_the_diagonal(c: Case, G: Tensor) -> None:
    _, phi = lpntk_brute(c.J, c.y, c.k)
    assert torch.equal(G, G.T)
    assert torch.allclose(torch.diagonal(G), phi.pow(2).sum(1), rtol=1e-10, atol=0)


def _symmetric(c: Case, G: Tensor) -> None:
    assert torch.equal(G, G.T)


def _one_sample_against_autograd(c: Case, norms: Tensor) -> None:
    i = 2
    loss = F.cross_entropy(c.model(c.x[i : i + 1]), c.y[i : i + 1])
    gs = torch.autograd.grad(loss, [p for p in c.model.parameters() if p.requires_grad])
    assert math.isclose(float(torch.cat([g.flatten() for g in gs]).norm()), float(norms[i]), rel_tol=1e-9)


CONTRACTS: dict[str, Contract] = {
    # lpNTK Gram: (1/K) s(y)^T J J'^T s(y') = phi phi'^T
    "lpntk_gram": Contract(
        lambda c: lpntk_gram(c.model, c.x, c.y, block_size=3),
        lambda c: lpntk_brute(c.J, c.y, c.k)[0],
        _symmetric_with_the_feature_norms_on_the_diagonal,
    ),
    # pNTK Gram: (1/K) 1^T J J'^T 1
    "pntk_gram": Contract(
        lambda c: pntk_gram(c.model, c.x, block_size=3),
        lambda c: torch.einsum("iap,jbp->ij", c.J, c.J) / c.k,
        _symmetric,
    ),
    # eNTK blocks J(x_i) J(x'_j)^T of a cross pair of sets
    "entk_blocks": Contract(
        lambda c: entk_blocks(c.model, c.x[:5], c.x[2:], block_size=2),
        lambda c: torch.einsum("iap,jbp->ijab", c.J[:5], c.J[2:]),
    ),
    # lpNTK features phi = J^T s(y) / sqrt K
    "lpntk_features": Contract(
        lambda c: lpntk_features(c.model, c.x, c.y, num_classes=c.k, block_size=3),
        lambda c: lpntk_brute(c.J, c.y, c.k)[1],
    ),
    # per-sample gradients J^T v, their Gram and a cross Gram
    "per_sample_gradients": Contract(lambda c: per_sample_gradients(c.model, c.x, c.v), lambda c: c.g()),
    "gradient_gram": Contract(lambda c: gradient_gram(c.model, c.x, c.v), lambda c: c.g() @ c.g().T),
    "gradient_gram_cross": Contract(
        lambda c: gradient_gram(c.model, c.x[:3], c.v[:3], x2=c.x[3:], v2=c.v[3:]),
        lambda c: c.g()[:3] @ c.g()[3:].T,
    ),
    # GraNd: ||J^T (softmax(z) - e_y)||, and one sample against autograd of the cross-entropy
    "per_sample_grad_norms": Contract(
        lambda c: per_sample_grad_norms(c.model, c.x, c.y, block_size=3),
        lambda c: torch.einsum("nkp,nk->np", c.J, c.e).norm(dim=1),
        _one_sample_against_autograd,
    ),
}


def _case(brute, name: str) -> Case:
    model, x, y, k, J = brute(name)
    with torch.no_grad():
        z = model.eval()(x)
    e = torch.softmax(z, 1) - F.one_hot(y, k).double()
    v = torch.randn(len(x), k, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    return Case(model, x, y, k, J, v, e)


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("kernel", CONTRACTS)
def test_kernel_equals_its_jacobian_contraction(brute, kernel, model_name, layer_form):
    case = _case(brute, model_name)
    contract = CONTRACTS[kernel]
    got, ref = contract.compute(case), contract.reference(case)
    assert got.dtype == torch.float64 and got.shape == ref.shape
    assert rel_err(got, ref) <= TOL64
    if contract.also is not None:
        contract.also(case, got)

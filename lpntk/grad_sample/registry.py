"""Factor types and the registry of per-layer handlers (``register_grad_sampler``).

A forward pass over a block of n samples records, for every module that owns trainable parameters, each call's
inputs and output (a :class:`Call`); one backward pass per cotangent direction a then gives the gradient
delta_{ia} = d(sum_i v_{ia} . z_i)/d(out) of every recorded output. In eval mode samples do not interact, so
delta_{ia} is sample i's own output gradient J_out(x_i)^T v_{ia} and a layer's per-sample parameter gradient
g_{ia} = J_w(x_i)^T v_{ia} is a function of (inputs_i, delta_{ia}) alone.

A handler ``(module, calls) -> factors`` in :data:`GRAD_SAMPLERS` (keyed by the module's exact type) returns one
of two factor types, each with an axis m of cotangent directions per sample (m = 1 for a Gram of J(x_i)^T v_i,
m = K for eNTK blocks):

* :class:`OuterFactors` -- a weight whose gradient is a sum of outer products over positions t,
  g^W_{ia} = sum_t delta_{iat} a_{it}^T and g^b_{ia} = sum_t delta_{iat}, kept as a (n, T, d_in) and
  d (n, m, T, d_out). Two samples' inner product is the "ghost" form
  <g_{ia}, g_{jb}> = sum_{t,t'} (a_{it} . a_{jt'} + 1[bias]) (delta_{iat} . delta_{jbt'}),
  which never builds the P-dimensional gradient; :meth:`OuterFactors.materialise` builds it.
* :class:`DenseFactors` -- the per-sample gradient itself, g of shape (n, m, P_layer).

A handler raises :class:`Unsupported` for a call it cannot express; the engine then uses the generic
torch.func path (:mod:`lpntk.grad_sample.generic`) for that module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = [
    "Call",
    "OuterFactors",
    "DenseFactors",
    "Factors",
    "Handler",
    "Unsupported",
    "GRAD_SAMPLERS",
    "register_grad_sampler",
    "trainable",
    "single_tensor_input",
]


class Unsupported(Exception):
    """Raised by a structured handler for a call it cannot express; the engine then uses the generic path."""


@dataclass
class Call:
    """One recorded call of a module: positional and keyword inputs, output, and output gradient.

    ``grad`` has shape (n, m, *output.shape[1:]): the gradient of ``sum_i v_{i,a} . z_i`` w.r.t. the output,
    for each of the m cotangent directions a.
    """

    args: tuple
    kwargs: dict
    output: Tensor | None
    out_version: int
    in_versions: tuple[int, ...]
    grad: Tensor | None = None


class OuterFactors:
    """Per-sample gradient ``g_i = [sum_t d_{it} a_{it}^T, sum_t d_{it}]`` of a weight (and bias).

    ``a``: (n, T, d_in) inputs per position; ``d``: (n, m, T, d_out) output gradients per direction and
    position. ``params`` are the trainable tensors in the order their gradients are flattened: weight
    (viewed as d_out x d_in) then bias (d_out) when ``bias`` is true.
    """

    def __init__(self, a: Tensor, d: Tensor, bias: bool, params: list[nn.Parameter]):
        self._a, self._d, self.bias, self.params = a, d, bias, params

    @property
    def a(self) -> Tensor:
        return self._a

    @property
    def d(self) -> Tensor:
        return self._d

    @property
    def n(self) -> int:
        return self._d.shape[0]

    @property
    def m(self) -> int:
        return self._d.shape[1]

    @property
    def T(self) -> int:
        return self._a.shape[1]

    @property
    def d_in(self) -> int:
        return self._a.shape[2]

    @property
    def d_out(self) -> int:
        return self._d.shape[3]

    def rows(self, s: int, e: int) -> OuterFactors:
        return OuterFactors(self._a[s:e], self._d[s:e], self.bias, self.params)

    def weight_grad(self) -> Tensor:
        """``sum_t d_t a_t^T`` per sample and direction, (n, m, d_out*d_in)."""
        n, m, T, d_out = self.d.shape
        dm = self.d.transpose(2, 3).reshape(n, m * d_out, T)
        return torch.bmm(dm, self.a).reshape(n, m, d_out * self.d_in)

    def bias_grad(self) -> Tensor:
        return self.d.sum(2)

    def materialise(self) -> Tensor:
        """The per-sample gradients, (n, m, d_out*d_in [+ d_out]); cost n*m*T*d_in*d_out."""
        gw = self.weight_grad()
        return torch.cat([gw, self.bias_grad()], dim=2) if self.bias else gw

    def materialise_cost(self, pairs_per_sample: float) -> float:
        """Multiply-adds to build g and take ``pairs_per_sample`` inner products per sample."""
        p = (self.d_in + self.bias) * self.d_out
        return self.m * self.T * p + pairs_per_sample * self.m * self.m * p

    def factored_cost(self, pairs_per_sample: float) -> float:
        """Multiply-adds of the pairwise (ghost) form per ``pairs_per_sample`` pairs per sample."""
        per_pair = self.d_in + self.m * self.m * (self.d_out + 1)
        return pairs_per_sample * self.T * self.T * per_pair

    def squared_norms(self) -> Tensor:
        """Diagonal ``||g_{ia}||^2``, (n, m), by whichever of the two forms costs less."""
        if self.T == 1:
            aa = self.a[:, 0].pow(2).sum(-1) + float(self.bias)
            return aa[:, None] * self.d[:, :, 0].pow(2).sum(-1)
        if self.materialise_cost(1.0) <= self.factored_cost(1.0):
            return self.materialise().pow(2).sum(-1)
        a = self.a
        aa = torch.bmm(a, a.transpose(1, 2))  # (n, T, T)
        if self.bias:
            aa = aa + 1.0
        n, m, T, d_out = self.d.shape
        dr = self.d.reshape(n * m, T, d_out)
        dd = torch.bmm(dr, dr.transpose(1, 2))
        return (dd.view(n, m, T, T) * aa[:, None]).sum((2, 3))


@dataclass
class DenseFactors:
    """Materialised per-sample gradients ``g`` (n, m, P_layer) of ``params`` (flattened, concatenated)."""

    g: Tensor
    params: list[nn.Parameter] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.g.shape[0]

    @property
    def m(self) -> int:
        return self.g.shape[1]

    def rows(self, s: int, e: int) -> DenseFactors:
        return DenseFactors(self.g[s:e], self.params)

    def materialise(self) -> Tensor:
        return self.g

    def squared_norms(self) -> Tensor:
        return self.g.pow(2).sum(-1)


Factors = OuterFactors | DenseFactors
Handler = Callable[[nn.Module, Sequence[Call]], Factors]

GRAD_SAMPLERS: dict[type, Handler] = {}


def register_grad_sampler(*types: type) -> Callable[[Handler], Handler]:
    """Decorator registering a handler ``(module, calls) -> factors`` for the exact module ``types``.

    The handler receives the module and its :class:`Call` s of one block of n samples (a module called several
    times has several calls; their gradients add up), each with ``grad`` of shape (n, m, *output.shape[1:]), and
    returns the per-sample gradients of every direct trainable parameter of the module (those of
    ``module.named_parameters(recurse=False)`` with ``requires_grad``), listed in ``params`` in the order of the
    flattened gradient. Subclasses are not matched: register them too. A later registration of a type replaces
    the earlier one.
    """

    def deco(fn: Handler) -> Handler:
        for t in types:
            GRAD_SAMPLERS[t] = fn
        return fn

    return deco


def trainable(module: nn.Module, name: str) -> nn.Parameter | None:
    """The module's parameter ``name`` if it exists and requires grad, else None."""
    p = getattr(module, name, None)
    return p if isinstance(p, nn.Parameter) and p.requires_grad else None


def single_tensor_input(call: Call) -> Tensor:
    """The call's only input, a tensor (positional, no keywords); :class:`Unsupported` otherwise."""
    if len(call.args) != 1 or call.kwargs or not isinstance(call.args[0], Tensor):
        raise Unsupported("expected a single tensor input")
    return call.args[0]

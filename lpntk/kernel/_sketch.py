"""CountSketch of the per-sample vectors (``mode="sketch"``): an unbiased estimate of the Gram in D dimensions.

S: R^P -> R^D, (S g)_k = sum_{p: h(p) = k} sigma_p g_p, with h(p) uniform on [0, D) and sigma_p uniform on
{+1, -1}, independent, drawn per parameter tensor in ``named_parameters`` order from one generator seeded with
``seed`` (so independent of how the engine factors the layers). For any g, g' in R^P

    E <S g, S g'> = <g, g'>,    Var <S g, S g'> <= (||g||^2 ||g'||^2 + <g, g'>^2) / D.

The per-sample gradients of each layer are materialised in row groups whose temporaries stay under ``TEMP_BYTES``
and scattered into the (n, m, D) sketch; the Gram of the sketches is then the dense tile of
:mod:`lpntk.kernel._packing`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..grad_sample import Factors
from ._packing import TEMP_BYTES

__all__ = ["CountSketch"]


class CountSketch:
    """A seeded CountSketch S: R^P -> R^D of the parameter vector, S(g)_k = sum_{p: h(p)=k} sigma_p g_p.

    h(p) uniform on [0, D), sigma_p uniform on {+1,-1}, independent; drawn per parameter tensor in
    ``named_parameters`` order from one generator seeded with ``seed`` (independent of how the engine factors
    the layers). E<S g, S g'> = <g, g'>, Var <S g, S g'> <= (||g||^2 ||g'||^2 + <g, g'>^2) / D.
    """

    def __init__(
        self, params: list[tuple[str, nn.Parameter]], dim: int, seed: int, dtype: torch.dtype, device: torch.device
    ):
        gen = torch.Generator().manual_seed(int(seed))
        self.dim = dim
        self.h: dict[int, Tensor] = {}
        self.sigma: dict[int, Tensor] = {}
        for _, p in params:
            self.h[id(p)] = torch.randint(0, dim, (p.numel(),), generator=gen).to(device)
            sign = torch.randint(0, 2, (p.numel(),), generator=gen) * 2 - 1
            self.sigma[id(p)] = sign.to(device=device, dtype=dtype)
        self._cache: dict[int, tuple[Tensor, Tensor]] = {}

    def _hash_of(self, f: Factors) -> tuple[Tensor, Tensor]:
        key = id(f.params[0]) if f.params else 0
        if key not in self._cache:
            self._cache[key] = (
                torch.cat([self.h[id(p)] for p in f.params]),
                torch.cat([self.sigma[id(p)] for p in f.params]),
            )
        return self._cache[key]

    def apply(self, factors: list[Factors], out: Tensor) -> None:
        """out (n, m, D) += S(g) for the block's per-sample gradients (materialised per layer in sub-blocks)."""
        for f in factors:
            h, sig = self._hash_of(f)
            n = f.n
            per = max(1, int(TEMP_BYTES // (out.element_size() * f.m * h.numel())))
            for s in range(0, n, per):
                e = min(n, s + per)
                g = f.rows(s, e).materialise()
                out[s:e].index_add_(2, h, g * sig)

"""Packing and tiles: one chunk's layer factors in the layout its Gram is computed from, and the Gram by panels.

Per layer, the engine's factors are either materialised, g_{ia} (P_layer values), or kept in the outer-product
("ghost") form (a_{it} in R^{d_in}, delta_{iat} in R^{d_out}, t = 1..T). :func:`decide_layout` picks per layer
whichever costs fewer multiply-adds for the Gram at hand (``materialise_cost`` vs ``factored_cost`` of
:class:`~lpntk.grad_sample.OuterFactors`, for the number of pairs per sample). A chunk is then packed
(:class:`Packed`): all materialised layers side by side in one dense (n, m, width) block D, each factored layer as
(A (n, T, d_in), Delta (n, m, T, d_out)).

The Gram of two packed chunks P, Q, as an (n_P m) x (n_Q m) matrix (:func:`gram_tile`):

    G = D_P D_Q^T
      + sum_{factored, T = 1}  (A_P A_Q^T + 1[bias]) * (Delta_P Delta_Q^T)                  (entrywise, per pair)
      + sum_{factored, T > 1}  G_ij += sum_{t,t'} (a_it . a_jt' + 1[bias]) (delta_it . delta_jt')

(the T > 1 sum by row groups whose temporaries stay under ``TEMP_BYTES``). :func:`gram_symmetric_into` fills a
chunk's own symmetric Gram by row panels of ``_PANEL_ROWS`` rows against the rows up to the panel's end (lower
triangle), then mirrors it; :func:`gram_cross_into` fills a chunk pair's block by row panels, and its mirror image
when the pair lies off the diagonal of a symmetric Gram.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..grad_sample import DenseFactors, Factors, OuterFactors

__all__ = [
    "TEMP_BYTES",
    "Layout",
    "decide_layout",
    "Packed",
    "alloc_packed",
    "fill_packed",
    "gram_tile",
    "gram_symmetric_into",
    "gram_cross_into",
]

_PANEL_ROWS = 512  # rows (sample x direction) of one Gram panel
TEMP_BYTES = 256 * 2**20  # bound on temporaries of one pairwise/sketch step


# ----------------------------------------------------------------------------------------------------------
# Packing: one chunk's factors in the layout its Gram is computed from
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Layout:
    """Which layers are materialised into the dense block (and where), and which stay factored."""

    dense: list[tuple[int, int, int]]  # (factor index, column offset, width)
    outer: list[tuple[int, int, int, int, bool]]  # (factor index, T, d_in, d_out, bias)
    width: int
    m: int

    def bytes_per_sample(self, elsize: int) -> int:
        b = self.m * self.width
        for _, T, d_in, d_out, _ in self.outer:
            b += T * d_in + self.m * T * d_out
        return b * elsize


def decide_layout(factors: list[Factors], pairs_per_sample: float) -> Layout:
    """Per layer, materialise or keep the factored form, whichever the FLOP estimate favours."""
    dense, outer, off = [], [], 0
    m = factors[0].m
    for i, f in enumerate(factors):
        if isinstance(f, OuterFactors) and f.factored_cost(pairs_per_sample) < f.materialise_cost(pairs_per_sample):
            outer.append((i, f.T, f.d_in, f.d_out, f.bias))
        else:
            w = f.materialise().shape[2] if isinstance(f, DenseFactors) else f.d_out * (f.d_in + f.bias)
            dense.append((i, off, w))
            off += w
    return Layout(dense, outer, off, m)


@dataclass
class Packed:
    """Factors of a chunk of samples: dense (n, m, width) and, per factored layer, a (n,T,d_in), d (n,m,T,d_out)."""

    dense: Tensor | None
    a: list[Tensor]
    d: list[Tensor]
    bias: list[bool]

    @property
    def n(self) -> int:
        return self.dense.shape[0] if self.dense is not None else self.a[0].shape[0]

    @property
    def m(self) -> int:
        return self.dense.shape[1] if self.dense is not None else self.d[0].shape[1]

    def rows(self, s: int, e: int) -> Packed:
        return Packed(
            None if self.dense is None else self.dense[s:e],
            [a[s:e] for a in self.a],
            [d[s:e] for d in self.d],
            self.bias,
        )


def alloc_packed(layout: Layout, n: int, dtype: torch.dtype, device: torch.device) -> Packed:
    kw = dict(dtype=dtype, device=device)
    dense = torch.empty((n, layout.m, layout.width), **kw) if layout.width else None
    a = [torch.empty((n, T, d_in), **kw) for _, T, d_in, _, _ in layout.outer]
    d = [torch.empty((n, layout.m, T, d_out), **kw) for _, T, _, d_out, _ in layout.outer]
    return Packed(dense, a, d, [b for *_, b in layout.outer])


def fill_packed(p: Packed, s: int, layout: Layout, factors: list[Factors]) -> None:
    n = factors[0].n
    for i, off, w in layout.dense:
        p.dense[s : s + n, :, off : off + w] = factors[i].materialise()
    for k, (i, *_rest) in enumerate(layout.outer):
        p.a[k][s : s + n] = factors[i].a
        p.d[k][s : s + n] = factors[i].d


# ----------------------------------------------------------------------------------------------------------
# Gram accumulation from packed factors
# ----------------------------------------------------------------------------------------------------------


def gram_tile(P: Packed, Q: Packed) -> Tensor:
    """sum over layers of <g_{ia}, g_{jb}> for rows of P against rows of Q, as an (nP*m, nQ*m) matrix.

    dense: G = D_P D_Q^T. Factored layer with T = 1: G += (A_P A_Q^T + 1[bias]) * (Delta_P Delta_Q^T).
    Factored layer with T > 1: G_ij += sum_{t,t'} (a_it . a_jt' + 1[bias]) (delta_it . delta_jt').
    """
    nP, nQ, m = P.n, Q.n, P.m
    if P.dense is not None:
        G = P.dense.reshape(nP * m, -1) @ Q.dense.reshape(nQ * m, -1).T
    else:
        G = P.a[0].new_zeros((nP * m, nQ * m))
    for aP, dP, aQ, dQ, bias in zip(P.a, P.d, Q.a, Q.d, P.bias, strict=True):
        T, d_in, d_out = aP.shape[1], aP.shape[2], dP.shape[3]
        if T == 1:
            aa = aP[:, 0] @ aQ[:, 0].T
            if bias:
                aa += 1.0
            dd = dP[:, :, 0].reshape(nP * m, d_out) @ dQ[:, :, 0].reshape(nQ * m, d_out).T
            if m == 1:
                G.addcmul_(aa, dd)
            else:
                G.view(nP, m, nQ, m).addcmul_(aa[:, None, :, None], dd.view(nP, m, nQ, m))
            continue
        elsize = aP.element_size()
        rows = max(1, int(TEMP_BYTES // (elsize * T * T * nQ * (1 + m * m))))
        aQf, dQf = aQ.reshape(nQ * T, d_in), dQ.reshape(nQ * m * T, d_out)
        for s in range(0, nP, rows):
            e = min(nP, s + rows)
            r = e - s
            aa = (aP[s:e].reshape(r * T, d_in) @ aQf.T).view(r, T, nQ, T)
            if bias:
                aa += 1.0
            dd = (dP[s:e].reshape(r * m * T, d_out) @ dQf.T).view(r, m, T, nQ, m, T)
            G[s * m : e * m] += torch.einsum("itjs,iatjbs->iajb", aa, dd).reshape(r * m, nQ * m)
    return G


def gram_symmetric_into(G2: Tensor, off: int, P: Packed) -> None:
    """Fill G2[off:off+n*m, off:off+n*m] with the Gram of P's rows: lower triangle by panels, then mirrored."""
    n, m = P.n, P.m
    step = max(1, _PANEL_ROWS // m)
    for s in range(0, n, step):
        e = min(n, s + step)
        tile = gram_tile(P.rows(s, e), P.rows(0, e))
        rs, re = off + s * m, off + e * m
        G2[rs:re, off:re] = tile
        diag = G2[rs:re, rs:re]
        diag.copy_(torch.tril(diag) + torch.tril(diag, -1).T)
        if s > 0:
            G2[off:rs, rs:re] = G2[rs:re, off:rs].T


def gram_cross_into(G2: Tensor, roff: int, coff: int, P: Packed, Q: Packed, mirror: bool) -> None:
    """G2[rows of P, cols of Q] = Gram of P vs Q by row panels (and its transpose at the mirrored place)."""
    m = P.m
    step = max(1, _PANEL_ROWS // m)
    for s in range(0, P.n, step):
        e = min(P.n, s + step)
        tile = gram_tile(P.rows(s, e), Q)
        G2[roff + s * m : roff + e * m, coff : coff + Q.n * m] = tile
        if mirror:
            G2[coff : coff + Q.n * m, roff + s * m : roff + e * m] = tile.T

"""The Gram driver: the Gram of per-sample vectors g_{ia} = J(x_i)^T v_{ia} from the engine's layer factors.

For a left side (x_i, v_{ia}), i = 1..N, and a right side (x'_j, v'_{jb}), j = 1..M (or the left side itself),
with a = 1..m cotangent directions per sample,

    G[i, a, j, b] = <g_{ia}, g'_{jb}> = v_{ia}^T J(x_i) J(x'_j)^T v'_{jb},

summed layer by layer. The first block of left samples goes through the engine once to fix m and the layout (per
layer, materialised or factored: :func:`~lpntk.kernel._packing.decide_layout`, for (N + 1)/2 pairs per sample in
a symmetric Gram, M in a cross Gram) or, for ``mode="sketch"``, the CountSketch; each chunk of samples is then
packed block by block (``block_size`` samples per forward/backward pass) and the Gram filled over chunk pairs
within ``max_memory_bytes`` (:func:`~lpntk.kernel._tiling.tiled_gram`). A symmetric Gram computes one triangle.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._engine import Cotangent, Engine, iter_blocks, model_dtype_device
from ._packing import Packed, alloc_packed, decide_layout, fill_packed
from ._sketch import CountSketch
from ._tiling import tiled_gram

__all__ = ["Side", "gram"]


@dataclass
class Side:
    """One side of a Gram: the inputs x (N, ...) and their cotangents, ``cot(z, idx)`` -> (n, m, K)."""

    x: Tensor
    cot: Cotangent


def gram(
    model: nn.Module,
    left: Side,
    right: Side | None,
    *,
    block_size: int,
    max_memory_bytes: int,
    mode: str,
    sketch_dim: int | None,
    seed: int,
) -> Tensor:
    """(N, m, M, m) Gram of g_{ia} = J(x_i)^T v_{ia} (left) against the right side (or left itself).

    Call inside :func:`~lpntk.kernel._engine.eval_mode`; computes in the model's dtype, on its device.
    """
    eng = Engine(model)
    dtype, device = model_dtype_device(model)
    symmetric = right is None
    N = len(left.x)
    M = N if symmetric else len(right.x)
    pairs = (N + 1) / 2 if symmetric else M
    with eng:
        first_sl = slice(0, min(N, block_size))
        first, v = eng.factors(left.x[first_sl], left.cot, first_sl)
        m = v.shape[1]
        sketch = CountSketch(eng.params, sketch_dim, seed, dtype, device) if mode == "sketch" else None
        if sketch is None:
            layout = decide_layout(first, pairs)
            bps = layout.bytes_per_sample(torch.empty((), dtype=dtype).element_size())
        else:
            layout = None
            bps = m * sketch_dim * torch.empty((), dtype=dtype).element_size()

        def pack(side: Side, start: int, stop: int) -> Packed:
            nonlocal first
            if sketch is None:
                p = alloc_packed(layout, stop - start, dtype, device)
            else:
                p = Packed(torch.zeros((stop - start, m, sketch_dim), dtype=dtype, device=device), [], [], [])
            for sl in iter_blocks(start, stop, block_size):
                if side is left and sl.start == 0 and first is not None:
                    fs, first = first, None  # the first block's factors, computed above: used once, then freed
                else:
                    fs, _ = eng.factors(side.x[sl], side.cot, sl)
                if sketch is None:
                    fill_packed(p, sl.start - start, layout, fs)
                else:
                    sketch.apply(fs, p.dense[sl.start - start : sl.stop - start])
                del fs
            return p

        G2 = torch.empty((N * m, M * m), dtype=dtype, device=device)
        tiled_gram(
            G2,
            lambda s, e: pack(left, s, e),
            None if symmetric else (lambda s, e: pack(right, s, e)),
            N,
            M,
            m,
            bytes_per_sample=bps,
            max_memory_bytes=max_memory_bytes,
            block_size=block_size,
        )
    return G2.view(N, m, M, m)

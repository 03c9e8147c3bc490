"""Memory tiling: a Gram computed over pairs of sample chunks whose packed factors fit in a memory budget.

A packed chunk (:class:`~lpntk.kernel._packing.Packed`) holds b bytes per sample (the layout's
``bytes_per_sample``, or m D values for a sketch); ``max_memory_bytes`` = B bounds what is held at once.

* Symmetric N x N Gram: one chunk of c = N samples if N b <= B, else chunks of c = max(block_size, floor(B / 2b)).
  For each chunk I in turn, P_I is packed once and its own Gram filled (lower triangle by panels, mirrored); then
  for each J > I the chunk Q_J is packed again -- its factors recomputed by the engine -- and the block (I, J)
  filled with its mirror image (J, I). At most two chunks are held at once.
* Cross N x M Gram: both sides packed whole if (N + M) b <= B, else chunks of c = max(block_size, floor(B / 2b))
  on both sides; for each row chunk P_I every column chunk Q_J is packed in turn (recomputed per row chunk).

The output (N m x M m) and one engine block's activations come on top of B. A chunk is never smaller than one
engine block (``block_size`` samples), so a budget below two blocks' factors is exceeded rather than refused.
The wrapper knows nothing of models: it is given the functions that pack a range of samples of either side.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from ._packing import Packed, gram_cross_into, gram_symmetric_into

__all__ = ["DEFAULT_MAX_MEMORY_BYTES", "tiled_gram"]

DEFAULT_MAX_MEMORY_BYTES = 2 * 2**30

PackFn = Callable[[int, int], Packed]  # (start, stop) -> the packed factors of samples start..stop-1


def tiled_gram(
    out: Tensor,
    pack_left: PackFn,
    pack_right: PackFn | None,
    n_left: int,
    n_right: int,
    m: int,
    *,
    bytes_per_sample: int,
    max_memory_bytes: int,
    block_size: int,
) -> None:
    """Fill ``out`` (n_left m, n_right m) with the Gram of the left samples' packed factors against the right
    side's, or against themselves (symmetric) when ``pack_right`` is None, chunk pair by chunk pair."""
    N, M, bps = n_left, n_right, bytes_per_sample
    if pack_right is None:
        chunk = N if N * bps <= max_memory_bytes else max(block_size, int(max_memory_bytes // (2 * bps)))
        starts = list(range(0, N, chunk))
        for bi, s in enumerate(starts):
            e = min(N, s + chunk)
            P = pack_left(s, e)
            gram_symmetric_into(out, s * m, P)
            for s2 in starts[bi + 1 :]:
                e2 = min(N, s2 + chunk)
                Q = pack_left(s2, e2)
                gram_cross_into(out, s * m, s2 * m, P, Q, mirror=True)
                del Q
            del P
        return
    if (N + M) * bps <= max_memory_bytes:
        c1, c2 = N, M
    else:
        c1 = max(block_size, int(max_memory_bytes // (2 * bps)))
        c2 = c1
    for s in range(0, N, c1):
        e = min(N, s + c1)
        P = pack_left(s, e)
        for s2 in range(0, M, c2):
            Q = pack_right(s2, min(M, s2 + c2))
            gram_cross_into(out, s * m, s2 * m, P, Q, mirror=False)
            del Q
        del P

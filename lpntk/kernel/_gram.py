"""The Gram driver: the Gram of per-sample vectors g_{ia} = J(x_i)^T v_{ia} from the engine's layer factors.

For a left side (x_i, v_{ia}), i = 1..N, and a right side (x'_j, v'_{jb}), j = 1..M (or the left side itself),
with a = 1..m cotangent directions per sample,

    G[i, a, j, b] = <g_{ia}, g'_{jb}> = v_{ia}^T J(x_i) J(x'_j)^T v'_{jb},

summed layer by layer. How the per-sample vectors are held for the Gram's GEMMs is the approximation chosen by
``mode`` from :data:`MODES` (neural-tangents-style dispatch):

* ``exact`` -- per layer, materialised or factored (:func:`~lpntk.kernel._packing.decide_layout`, for (N + 1)/2
  pairs per sample in a symmetric Gram, M in a cross Gram): exact up to float round-off;
* ``sketch`` -- a seeded CountSketch S g in D = ``sketch_dim`` dimensions (:mod:`lpntk.kernel._sketch`): unbiased.

The first block of left samples goes through the engine once to fix m and the approximation's layout; each chunk of
samples is then packed block by block (``block_size`` samples per forward/backward pass) and the Gram filled over
chunk pairs within ``max_memory_bytes`` (:func:`~lpntk.kernel._tiling.tiled_gram`). A symmetric Gram computes one
triangle. Every option of the public kernels is one field of :class:`KernelOptions`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor, nn

from ..grad_sample import Factors
from ..plugins import allow_choice
from ._engine import DEFAULT_BLOCK_SIZE, Cotangent, Engine, iter_blocks, model_dtype_device
from ._packing import Packed, alloc_packed, decide_layout, fill_packed
from ._sketch import CountSketch
from ._tiling import DEFAULT_MAX_MEMORY_BYTES, tiled_gram

__all__ = ["KernelOptions", "Approximation", "MODES", "register_mode", "Side", "gram"]


class Approximation:
    """How one chunk of per-sample vectors is held for the Gram: ``bytes_per_sample`` of memory, ``alloc(n)`` an
    empty pack of n samples, ``fill(pack, rows, factors)`` one block's factors into the pack's ``rows``."""

    bytes_per_sample: int

    def alloc(self, n: int) -> Packed:
        raise NotImplementedError

    def fill(self, pack: Packed, rows: slice, factors: list[Factors]) -> None:
        raise NotImplementedError


class _Exact(Approximation):
    """Per layer materialised or factored, whichever costs fewer multiply-adds for ``pairs`` pairs per sample."""

    def __init__(self, eng: Engine, first: list[Factors], pairs: float, m: int, opts, dtype, device):
        self.layout, self.dtype, self.device = decide_layout(first, pairs), dtype, device
        self.bytes_per_sample = self.layout.bytes_per_sample(torch.empty((), dtype=dtype).element_size())

    def alloc(self, n: int) -> Packed:
        return alloc_packed(self.layout, n, self.dtype, self.device)

    def fill(self, pack: Packed, rows: slice, factors: list[Factors]) -> None:
        fill_packed(pack, rows.start, self.layout, factors)


class _Sketch(Approximation):
    """A seeded CountSketch of g in D = ``sketch_dim`` dimensions: the dense (n, m, D) block of the pack."""

    def __init__(self, eng: Engine, first: list[Factors], pairs: float, m: int, opts, dtype, device):
        self.sketch = CountSketch(eng.params, opts.sketch_dim, opts.seed, dtype, device)
        self.m, self.dim, self.dtype, self.device = m, opts.sketch_dim, dtype, device
        self.bytes_per_sample = m * opts.sketch_dim * torch.empty((), dtype=dtype).element_size()

    def alloc(self, n: int) -> Packed:
        return Packed(torch.zeros((n, self.m, self.dim), dtype=self.dtype, device=self.device), [], [], [])

    def fill(self, pack: Packed, rows: slice, factors: list[Factors]) -> None:
        self.sketch.apply(factors, pack.dense[rows])


#: ``kernel.mode`` -> (engine, first block's factors, pairs per sample, m, options, dtype, device) -> approximation
MODES: dict[str, Callable[..., Approximation]] = {"exact": _Exact, "sketch": _Sketch}


def register_mode(name: str) -> Callable[[Callable[..., Approximation]], Callable[..., Approximation]]:
    """Decorator: register an approximation (a class like ``_Sketch``) as ``kernel.mode`` ``name``; the config's
    ``kernel.mode`` accepts it from then on."""

    def deco(cls: Callable[..., Approximation]) -> Callable[..., Approximation]:
        MODES[name] = cls
        allow_choice("kernel.mode", name)
        return cls

    return deco


@dataclass(frozen=True)
class KernelOptions:
    """How a Gram is computed -- not what: every public kernel takes these (as ``options=`` or as keywords).

    ``mode``: a key of :data:`MODES` (``exact``, ``sketch``); ``block_size``: samples per forward/backward pass;
    ``max_memory_bytes``: bound on the packed per-layer factors held at once (the output and one block's activations
    come on top); ``dtype``: compute in this dtype (a cast copy of the model), else the model's; ``device``: compute
    there, else on the model's; ``sketch_dim``, ``seed``: the CountSketch's dimension D and seed (``mode="sketch"``).
    """

    mode: str = "exact"
    block_size: int = DEFAULT_BLOCK_SIZE
    max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES
    dtype: torch.dtype | None = None
    device: torch.device | str | None = None
    sketch_dim: int | None = None
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.block_size, int) or self.block_size < 1:
            raise ValueError(f"block_size: expected a positive integer, got {self.block_size!r}")
        if self.max_memory_bytes <= 0:
            raise ValueError(f"max_memory_bytes: expected a positive number, got {self.max_memory_bytes!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(repr(m) for m in MODES)}, got {self.mode!r}")
        if self.mode == "sketch" and (not isinstance(self.sketch_dim, int) or self.sketch_dim < 1):
            raise ValueError(f"sketch_dim: mode='sketch' needs a positive integer sketch_dim, got {self.sketch_dim!r}")

    @classmethod
    def of(cls, options: KernelOptions | None = None, overrides: Mapping[str, Any] | None = None) -> KernelOptions:
        """``options`` (default: the defaults) with the keyword ``overrides`` a caller gave; TypeError for a keyword
        that is no option."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {unknown}; options: {[f.name for f in fields(cls)]}")
        return replace(options or cls(), **overrides)


@dataclass
class Side:
    """One side of a Gram: the inputs x (N, ...) and their cotangents, ``cot(z, idx)`` -> (n, m, K)."""

    x: Tensor
    cot: Cotangent


def gram(model: nn.Module, left: Side, right: Side | None, opts: KernelOptions) -> Tensor:
    """(N, m, M, m) Gram of g_{ia} = J(x_i)^T v_{ia} (left) against the right side (or left itself), by the
    approximation ``MODES[opts.mode]``, ``opts.block_size`` samples per pass, within ``opts.max_memory_bytes``.

    Call inside :func:`~lpntk.kernel._engine.eval_mode`; computes in the model's dtype, on its device.
    """
    eng = Engine(model)
    dtype, device = model_dtype_device(model)
    symmetric = right is None
    N = len(left.x)
    M = N if symmetric else len(right.x)
    pairs = (N + 1) / 2 if symmetric else M
    block_size = opts.block_size
    with eng:
        first_sl = slice(0, min(N, block_size))
        first, v = eng.factors(left.x[first_sl], left.cot, first_sl)
        m = v.shape[1]
        approx = MODES[opts.mode](eng, first, pairs, m, opts, dtype, device)

        def pack(side: Side, start: int, stop: int) -> Packed:
            nonlocal first
            p = approx.alloc(stop - start)
            for sl in iter_blocks(start, stop, block_size):
                if side is left and sl.start == 0 and first is not None:
                    fs, first = first, None  # the first block's factors, computed above: used once, then freed
                else:
                    fs, _ = eng.factors(side.x[sl], side.cot, sl)
                approx.fill(p, slice(sl.start - start, sl.stop - start), fs)
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
            bytes_per_sample=approx.bytes_per_sample,
            max_memory_bytes=opts.max_memory_bytes,
            block_size=block_size,
        )
    return G2.view(N, m, M, m)

"""Exact lpNTK, pNTK and eNTK kernels from per-layer per-sample gradient factors.

Notation (paper-protocols §1.2-1.3). A model f maps x to logits z(x) in R^K; J(x) = dz/dw in R^{K x P} over all
trainable parameters, in eval mode. For a label y, s(y) in {+1,-1}^K is +1 at y and -1 elsewhere.

* eNTK block:  K(x, x') = J(x) J(x')^T  (K x K).
* lpNTK:       kappa((x,y),(x',y')) = (1/K) s(y)^T J(x) J(x')^T s(y') = <phi(x,y), phi(x',y')>,
               phi(x, y) = (1/sqrt K) J(x)^T s(y) = (1/sqrt K) grad_w (s(y) . z(x)).
               The official code drops the 1/K (multiply by K to get its values; rankings are unchanged).
* pNTK:        (1/K) 1^T J(x) J(x')^T 1.

All three are Grams of per-sample vectors g_i = J(x_i)^T v_i for a per-sample cotangent v_i in R^K
(:func:`gradient_gram`; v = s(y)/sqrt K gives lpNTK, v = 1/sqrt K pNTK, v = e_a for a = 1..K the eNTK
blocks, v = softmax(z) - e_y the per-sample cross-entropy gradient).

Method. One forward pass over a block of samples records every parameterised layer's inputs a; one
backward pass of sum_i v_i . z_i gives every layer's output gradients delta_i at once (samples do not interact
in eval mode). A layer's per-sample gradient is then a function of (a_i, delta_i) alone -- for a Linear layer
the outer product delta_i a_i^T -- so inner products of per-sample gradients are computed layer by layer,
either from the factors ("ghost" form: (a_i . a_j)(delta_i . delta_j), summed over positions for sequences and
convolutions) or by materialising the layer's per-sample gradient, whichever costs fewer FLOPs for the Gram
being computed (:mod:`lpntk.grad_sample` holds the per-layer registry and the torch.func fallbacks for
unknown layers). The factors of a chunk of samples are packed -- all materialised layers side by side in one
matrix, factored layers kept as (a, delta) -- and the Gram is accumulated panel by panel with GEMMs; for a
symmetric Gram only the lower triangle is computed. Memory: the packed factors held at once are bounded by
``max_memory_bytes``; when a set does not fit, its Gram is computed over pairs of chunks, recomputing the
column chunk's factors per row chunk.

Precision: computation and accumulation in the model's floating dtype (float32 by default; float64 when the
model is float64 or ``dtype=torch.float64`` is given, which casts a copy of the model and the inputs). TF32
is switched off for the duration of every call on CUDA and restored afterwards.

Assumptions: each sample's logits depend on that sample only, in eval mode (true for Linear, Conv, pooling,
pointwise activations, residual additions, dropout, eval-mode BatchNorm with running statistics, LayerNorm,
GroupNorm, ...). A BatchNorm in train mode or without running statistics mixes samples: ValueError. A module
called several times (shared module) has its calls summed (extra positions of one outer-product sum);
parameters tied across modules, used without calling their module, or of modules with non-tensor outputs go
through a whole-model torch.func path.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jvp

from .grad_sample import (
    GRAD_SAMPLERS,
    Call,
    DenseFactors,
    OuterFactors,
    Unsupported,
    generic_module_factors,
    whole_model_factors,
)

__all__ = [
    "sign_vectors",
    "gradient_gram",
    "lpntk_gram",
    "pntk_gram",
    "entk_blocks",
    "lpntk_features",
    "per_sample_gradients",
    "per_sample_grad_norms",
    "logit_loss_gradient",
    "loss_gradient",
    "jvp_logits",
    "exact_matmul",
]

DEFAULT_BLOCK_SIZE = 256
DEFAULT_MAX_MEMORY_BYTES = 2 * 2**30
_PANEL_ROWS = 512  # rows (sample x direction) of one Gram panel
_TEMP_BYTES = 256 * 2**20  # bound on temporaries of one pairwise/sketch step
BATCHED_BACKWARD = True  # eNTK: one vectorised backward pass over the K directions (is_grads_batched)

Cotangent = Callable[[Tensor, slice], Tensor]  # (logits of a block, its index range) -> (n, m, K)


# ----------------------------------------------------------------------------------------------------------
# Context: exact matmuls, eval mode, validation
# ----------------------------------------------------------------------------------------------------------


@contextmanager
def exact_matmul() -> Iterator[None]:
    """Switch TF32 off for CUDA matmuls and cuDNN convolutions; restore the previous settings on exit."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _check_no_sample_mixing(model: nn.Module) -> None:
    for name, mod in model.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            label = name or type(mod).__name__
            if mod.training:
                raise ValueError(
                    f"model: BatchNorm module {label!r} is in train mode; in train mode BatchNorm normalises with "
                    "batch statistics, so samples interact and per-sample kernels are undefined. The kernel is "
                    "defined in eval mode: call model.eval() first."
                )
            if mod.running_mean is None:
                raise ValueError(
                    f"model: BatchNorm module {label!r} has track_running_stats=False, so it uses batch statistics "
                    "even in eval mode and samples interact; per-sample kernels are undefined for this model."
                )


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Validate, put every module in eval mode, and restore each module's previous mode afterwards.

    Runs under ``torch.no_grad()``: the engine enables grad only for its own forward passes, so no autograd
    graph is built over the factors or the Gram.
    """
    _check_no_sample_mixing(model)
    modes = [(mod, mod.training) for mod in model.modules()]
    model.eval()
    try:
        with exact_matmul(), torch.no_grad():
            yield
    finally:
        for mod, training in modes:
            mod.training = training


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    return torch.get_default_dtype(), torch.device("cpu")


def _prepare_model(
    model: nn.Module, dtype: torch.dtype | None, device: torch.device | str | None, x=None
) -> tuple[nn.Module, torch.dtype, torch.device]:
    """The model to compute with: the caller's own, or a converted copy if ``dtype``/``device`` differ.

    Device: ``device`` if given; else CUDA if the model or the inputs ``x`` are on CUDA; else the model's.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    cur_dtype, cur_device = _model_dtype_device(model)
    dtype = cur_dtype if dtype is None else dtype
    if device is None:
        device = cur_device
        if device.type == "cpu" and isinstance(x, Tensor) and x.device.type == "cuda":
            device = x.device
    device = torch.device(device)
    if not dtype.is_floating_point:
        raise ValueError(f"dtype: expected a floating dtype, got {dtype}")
    if dtype != cur_dtype or device != cur_device:
        model = copy.deepcopy(model).to(device=device, dtype=dtype)
    return model, dtype, device


def _as_inputs(x, name: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    x = torch.as_tensor(x)
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty batch (N, ...), got shape {tuple(x.shape)}")
    x = x.detach()
    if x.is_floating_point() or x.is_complex():
        x = x.to(device=device, dtype=dtype)
    else:
        x = x.to(device=device)
    return x


def _as_labels(y, name: str, n: int, k: int, device: torch.device) -> Tensor:
    if y is None:
        raise ValueError(f"{name}: labels are required")
    y = torch.as_tensor(y)
    if y.dim() != 1:
        raise ValueError(f"{name}: expected a 1-D tensor of integer labels, got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{name}: expected integer class labels, got dtype {y.dtype}")
    if len(y) != n:
        raise ValueError(f"{name}: has {len(y)} labels but the inputs have {n} samples (len(x) != len(y))")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= k):
        raise ValueError(f"{name}: labels must lie in [0, {k}); got values in [{int(y.min())}, {int(y.max())}]")
    return y.to(device=device, dtype=torch.long)


def _output_width(model: nn.Module, x: Tensor, num_classes: int | None) -> int:
    """K, from a forward pass on one sample; checks ``num_classes`` against it."""
    with torch.no_grad():
        z = model(x[:1])
    if not isinstance(z, Tensor) or z.dim() != 2:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"model: expected logits of shape (N, K), got {shape}")
    k = z.shape[1]
    if num_classes is not None and int(num_classes) != k:
        raise ValueError(f"num_classes: got {num_classes} but the model outputs {k} logits")
    return k


def _check_options(block_size: int, max_memory_bytes: int, mode: str, sketch_dim: int | None) -> None:
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size: expected a positive integer, got {block_size!r}")
    if max_memory_bytes <= 0:
        raise ValueError(f"max_memory_bytes: expected a positive number, got {max_memory_bytes!r}")
    if mode not in ("exact", "sketch"):
        raise ValueError(f"mode: expected 'exact' or 'sketch', got {mode!r}")
    if mode == "sketch" and (not isinstance(sketch_dim, int) or sketch_dim < 1):
        raise ValueError(f"sketch_dim: mode='sketch' needs a positive integer sketch_dim, got {sketch_dim!r}")


def sign_vectors(y: Tensor, num_classes: int) -> Tensor:
    """s(y) in {+1,-1}^K per label: +1 at the label, -1 elsewhere (paper-protocols §1.2). (N, K)."""
    y = torch.as_tensor(y).long()
    s = -torch.ones(len(y), num_classes)
    s[torch.arange(len(y)), y] = 1.0
    return s


# ----------------------------------------------------------------------------------------------------------
# Recording engine: per-layer factors of a block of samples
# ----------------------------------------------------------------------------------------------------------


Factors = OuterFactors | DenseFactors


class _Engine:
    """Hooks a model and returns, per block of samples, each layer's per-sample gradient factors."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.params: list[tuple[str, nn.Parameter]] = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("model: has no trainable parameters (requires_grad=True)")
        self.name_of = {id(p): n for n, p in self.params}
        owners: dict[int, int] = defaultdict(int)
        self.modules: list[tuple[str, nn.Module, dict[str, nn.Parameter]]] = []
        for mname, mod in model.named_modules():
            direct = {k: p for k, p in mod.named_parameters(recurse=False) if p.requires_grad}
            if direct:
                self.modules.append((mname, mod, direct))
                for p in direct.values():
                    owners[id(p)] += 1
        tied = {i for i, c in owners.items() if c > 1}
        self.whole: dict[str, nn.Parameter] = {}  # parameters handled by the whole-model torch.func path
        self.hooked: list[tuple[str, nn.Module, dict[str, nn.Parameter]]] = []
        for entry in self.modules:
            if any(id(p) in tied for p in entry[2].values()):
                self._to_whole(entry)
            else:
                self.hooked.append(entry)
        self.plan: list[tuple[str, nn.Module, dict[str, nn.Parameter], str]] | None = None
        self.clone_out: set[nn.Module] = set()  # modules whose output is modified in place downstream
        self.recording = False
        self.batched_backward = BATCHED_BACKWARD
        self.calls: dict[nn.Module, list[Call]] = defaultdict(list)
        self.handles: list = []

    def _to_whole(self, entry: tuple[str, nn.Module, dict[str, nn.Parameter]]) -> None:
        for p in entry[2].values():
            self.whole[self.name_of[id(p)]] = p

    # hooks ---------------------------------------------------------------------------------------------
    def __enter__(self) -> _Engine:
        for _, mod, _ in self.hooked:
            self.handles.append(mod.register_forward_hook(self._hook, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.calls = defaultdict(list)

    def _hook(self, mod: nn.Module, args: tuple, kwargs: dict, out):
        """Record the call; hand a clone downstream if a later in-place op would overwrite the output."""
        if not self.recording:
            return None
        if not isinstance(out, Tensor) or not out.requires_grad:
            self.calls[mod].append(Call(args, kwargs, None, -1, ()))
            return None
        in_versions = tuple(a._version for a in args if isinstance(a, Tensor))
        self.calls[mod].append(Call(args, kwargs, out, out._version, in_versions))
        if mod in self.clone_out:
            return out.clone()
        return None

    # capture ------------------------------------------------------------------------------------------
    def _forward(self, x: Tensor) -> Tensor:
        """Forward pass recording every hooked call; re-run with cloned outputs if one was modified in place."""
        for _ in range(2):
            self.calls = defaultdict(list)
            self.recording = True
            try:
                with torch.enable_grad():
                    z = self.model(x)
            finally:
                self.recording = False
            changed = False
            for mod, calls in self.calls.items():
                for c in calls:
                    if c.output is None:
                        continue
                    if c.output._version != c.out_version:
                        self.clone_out.add(mod)
                        changed = True
                    tensors = [a for a in c.args if isinstance(a, Tensor)]
                    if tuple(a._version for a in tensors) != c.in_versions:
                        raise RuntimeError(
                            f"model: the input of {type(mod).__name__} is modified in place after the "
                            "call; its per-sample gradients cannot be recovered"
                        )
            if not changed:
                return z
        raise RuntimeError("model: recorded layer outputs keep being modified in place; cannot capture them")

    def _make_plan(self) -> None:
        plan = []
        for entry in self.hooked:
            mname, mod, direct = entry
            calls = self.calls.get(mod, [])
            if not calls or any(c.output is None for c in calls):
                self._to_whole(entry)  # never called, or output not a tensor: whole-model path
                continue
            kind = "structured" if type(mod) in GRAD_SAMPLERS else "generic"
            plan.append((mname, mod, direct, kind))
        self.plan = plan

    def _output_grads(self, z: Tensor, outs: list[Tensor], v: Tensor) -> list[Tensor]:
        """d(sum_i v_{ia} . z_i)/d(out) for every recorded output, as (n, m, *out.shape[1:]).

        m = 1: one backward pass. m > 1: one vectorised backward pass over the m directions
        (``is_grads_batched``), or, if an op has no batching rule, one backward pass per direction.
        """
        n, m, _ = v.shape
        if m == 1:
            gs = torch.autograd.grad(z, outs, grad_outputs=v[:, 0], allow_unused=True)
            return [
                torch.zeros_like(o).unsqueeze(1) if g is None else g.unsqueeze(1) for o, g in zip(outs, gs, strict=True)
            ]
        if self.batched_backward:
            try:
                gs = torch.autograd.grad(
                    z, outs, grad_outputs=v.transpose(0, 1), retain_graph=True, is_grads_batched=True, allow_unused=True
                )
                return [
                    o.new_zeros((n, m) + tuple(o.shape[1:])) if g is None else g.transpose(0, 1).contiguous()
                    for o, g in zip(outs, gs, strict=True)
                ]
            except RuntimeError:
                self.batched_backward = False
        grads = [o.new_empty((n, m) + tuple(o.shape[1:])) for o in outs]
        for a in range(m):
            gs = torch.autograd.grad(z, outs, grad_outputs=v[:, a], retain_graph=True, allow_unused=True)
            for buf, g in zip(grads, gs, strict=True):
                if g is None:
                    buf[:, a] = 0
                else:
                    buf[:, a] = g
        return grads

    def factors(self, x: Tensor, cotangent: Cotangent, idx: slice) -> tuple[list[Factors], Tensor]:
        """Per-layer factors for the block ``x`` (samples ``idx`` of the set), and the cotangents used.

        ``cotangent(z, idx)`` gives the (n, m, K) cotangent directions v_{ia} of the block from its logits z;
        one backward pass per direction a of sum_i v_{ia} . z_i yields every recorded output gradient.
        """
        z = self._forward(x)
        if self.plan is None:
            self._make_plan()
        if not isinstance(z, Tensor) or z.dim() != 2:
            raise ValueError("model: expected logits of shape (N, K)")
        v = cotangent(z.detach(), idx).to(z.dtype)
        n, m, _ = v.shape
        recorded = []
        for mname, mod, _, _ in self.plan:
            calls = self.calls.get(mod, [])
            if not calls:
                raise RuntimeError(
                    f"model: module {mname!r} was not called for this block although it was for the "
                    "first; data-dependent control flow is not supported"
                )
            recorded += calls
        outs = [c.output for c in recorded]
        if outs:
            if not z.requires_grad:
                raise ValueError("model: the logits do not depend on any trainable parameter")
            for c, g in zip(recorded, self._output_grads(z, outs, v), strict=True):
                c.grad = g
            for c in recorded:
                c.output = None
        del outs, z
        result: list[Factors] = []
        for i, (mname, mod, direct, kind) in enumerate(self.plan):
            calls = self.calls[mod]
            f = None
            if kind == "structured":
                try:
                    f = GRAD_SAMPLERS[type(mod)](mod, calls)
                except Unsupported:
                    self.plan[i] = (mname, mod, direct, "generic")
            if f is None:
                f = generic_module_factors(mod, calls, direct)
            result.append(f)
        if self.whole:
            result.append(whole_model_factors(self.model, x, v, self.whole))
        self.calls = defaultdict(list)
        return result, v


def _iter_blocks(start: int, stop: int, size: int) -> Iterator[slice]:
    for s in range(start, stop, size):
        yield slice(s, min(stop, s + size))


# ----------------------------------------------------------------------------------------------------------
# Packing: one chunk's factors in the layout its Gram is computed from
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Layout:
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


def _decide_layout(factors: list[Factors], pairs_per_sample: float) -> _Layout:
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
    return _Layout(dense, outer, off, m)


@dataclass
class _Packed:
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

    def rows(self, s: int, e: int) -> _Packed:
        return _Packed(
            None if self.dense is None else self.dense[s:e],
            [a[s:e] for a in self.a],
            [d[s:e] for d in self.d],
            self.bias,
        )


def _alloc_packed(layout: _Layout, n: int, dtype: torch.dtype, device: torch.device) -> _Packed:
    kw = dict(dtype=dtype, device=device)
    dense = torch.empty((n, layout.m, layout.width), **kw) if layout.width else None
    a = [torch.empty((n, T, d_in), **kw) for _, T, d_in, _, _ in layout.outer]
    d = [torch.empty((n, layout.m, T, d_out), **kw) for _, T, _, d_out, _ in layout.outer]
    return _Packed(dense, a, d, [b for *_, b in layout.outer])


def _fill_packed(p: _Packed, s: int, layout: _Layout, factors: list[Factors]) -> None:
    n = factors[0].n
    for i, off, w in layout.dense:
        p.dense[s : s + n, :, off : off + w] = factors[i].materialise()
    for k, (i, *_rest) in enumerate(layout.outer):
        p.a[k][s : s + n] = factors[i].a
        p.d[k][s : s + n] = factors[i].d


# ----------------------------------------------------------------------------------------------------------
# Gram accumulation from packed factors
# ----------------------------------------------------------------------------------------------------------


def _gram_tile(P: _Packed, Q: _Packed) -> Tensor:
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
        rows = max(1, int(_TEMP_BYTES // (elsize * T * T * nQ * (1 + m * m))))
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


def _gram_symmetric_into(G2: Tensor, off: int, P: _Packed) -> None:
    """Fill G2[off:off+n*m, off:off+n*m] with the Gram of P's rows: lower triangle by panels, then mirrored."""
    n, m = P.n, P.m
    step = max(1, _PANEL_ROWS // m)
    for s in range(0, n, step):
        e = min(n, s + step)
        tile = _gram_tile(P.rows(s, e), P.rows(0, e))
        rs, re = off + s * m, off + e * m
        G2[rs:re, off:re] = tile
        diag = G2[rs:re, rs:re]
        diag.copy_(torch.tril(diag) + torch.tril(diag, -1).T)
        if s > 0:
            G2[off:rs, rs:re] = G2[rs:re, off:rs].T


def _gram_cross_into(G2: Tensor, roff: int, coff: int, P: _Packed, Q: _Packed, mirror: bool) -> None:
    """G2[rows of P, cols of Q] = Gram of P vs Q by row panels (and its transpose at the mirrored place)."""
    m = P.m
    step = max(1, _PANEL_ROWS // m)
    for s in range(0, P.n, step):
        e = min(P.n, s + step)
        tile = _gram_tile(P.rows(s, e), Q)
        G2[roff + s * m : roff + e * m, coff : coff + Q.n * m] = tile
        if mirror:
            G2[coff : coff + Q.n * m, roff + s * m : roff + e * m] = tile.T


# ----------------------------------------------------------------------------------------------------------
# CountSketch (mode="sketch")
# ----------------------------------------------------------------------------------------------------------


class _CountSketch:
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
            per = max(1, int(_TEMP_BYTES // (out.element_size() * f.m * h.numel())))
            for s in range(0, n, per):
                e = min(n, s + per)
                g = f.rows(s, e).materialise()
                out[s:e].index_add_(2, h, g * sig)


# ----------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Side:
    x: Tensor
    cot: Cotangent


def _gram(
    model: nn.Module,
    left: _Side,
    right: _Side | None,
    *,
    block_size: int,
    max_memory_bytes: int,
    mode: str,
    sketch_dim: int | None,
    seed: int,
) -> Tensor:
    """(N, m, M, m) Gram of g_{ia} = J(x_i)^T v_{ia} (left) against the right side (or left itself)."""
    eng = _Engine(model)
    dtype, device = _model_dtype_device(model)
    symmetric = right is None
    N = len(left.x)
    M = N if symmetric else len(right.x)
    pairs = (N + 1) / 2 if symmetric else M
    with eng:
        first_sl = slice(0, min(N, block_size))
        first, v = eng.factors(left.x[first_sl], left.cot, first_sl)
        m = v.shape[1]
        sketch = _CountSketch(eng.params, sketch_dim, seed, dtype, device) if mode == "sketch" else None
        if sketch is None:
            layout = _decide_layout(first, pairs)
            bps = layout.bytes_per_sample(torch.empty((), dtype=dtype).element_size())
        else:
            layout = None
            bps = m * sketch_dim * torch.empty((), dtype=dtype).element_size()

        def pack(side: _Side, start: int, stop: int) -> _Packed:
            if sketch is None:
                p = _alloc_packed(layout, stop - start, dtype, device)
            else:
                p = _Packed(torch.zeros((stop - start, m, sketch_dim), dtype=dtype, device=device), [], [], [])
            for sl in _iter_blocks(start, stop, block_size):
                if side is left and sl.start == 0 and first is not None:
                    fs = first
                else:
                    fs, _ = eng.factors(side.x[sl], side.cot, sl)
                if sketch is None:
                    _fill_packed(p, sl.start - start, layout, fs)
                else:
                    sketch.apply(fs, p.dense[sl.start - start : sl.stop - start])
                del fs
            return p

        G2 = torch.empty((N * m, M * m), dtype=dtype, device=device)
        if symmetric:
            chunk = N if N * bps <= max_memory_bytes else max(block_size, int(max_memory_bytes // (2 * bps)))
            starts = list(range(0, N, chunk))
            for bi, s in enumerate(starts):
                e = min(N, s + chunk)
                P = pack(left, s, e)
                if bi == 0:
                    first = None
                _gram_symmetric_into(G2, s * m, P)
                for s2 in starts[bi + 1 :]:
                    e2 = min(N, s2 + chunk)
                    Q = pack(left, s2, e2)
                    _gram_cross_into(G2, s * m, s2 * m, P, Q, mirror=True)
                    del Q
                del P
        else:
            if (N + M) * bps <= max_memory_bytes:
                c1, c2 = N, M
            else:
                c1 = max(block_size, int(max_memory_bytes // (2 * bps)))
                c2 = c1
            for s in range(0, N, c1):
                e = min(N, s + c1)
                P = pack(left, s, e)
                first = None
                for s2 in range(0, M, c2):
                    Q = pack(right, s2, min(M, s2 + c2))
                    _gram_cross_into(G2, s * m, s2 * m, P, Q, mirror=False)
                    del Q
                del P
    return G2.view(N, m, M, m)


def _setup(model: nn.Module, x, x2, dtype, device, num_classes, block_size, max_memory_bytes, mode, sketch_dim):
    _check_options(block_size, max_memory_bytes, mode, sketch_dim)
    model, dtype, device = _prepare_model(model, dtype, device, x)
    x = _as_inputs(x, "x", dtype, device)
    x2 = None if x2 is None else _as_inputs(x2, "x2", dtype, device)
    with _eval_mode(model):
        k = _output_width(model, x, num_classes)
    return model, dtype, device, x, x2, k


def _const_cot(v: Tensor) -> Cotangent:
    """Cotangents given up front: v (N, m, K)."""
    return lambda z, idx: v[idx]


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------


def gradient_gram(
    model: nn.Module,
    x: Tensor,
    v: Tensor,
    x2: Tensor | None = None,
    v2: Tensor | None = None,
    *,
    mode: str = "exact",
    block_size: int = DEFAULT_BLOCK_SIZE,
    max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    sketch_dim: int | None = None,
    seed: int = 0,
) -> Tensor:
    """Gram of per-sample vectors g_i = J(x_i)^T v_i:  G_ij = <g_i, g'_j> = v_i^T J(x_i) J(x'_j)^T v'_j.

    ``v``: (N, K) per-sample cotangents (v = s(y)/sqrt K gives lpNTK, v = softmax(z) - e_y the per-sample
    cross-entropy gradient). With ``x2``/``v2`` the (N, M) cross Gram, else the symmetric (N, N) Gram
    (only one triangle is computed). ``mode="sketch"`` replaces g by a seeded CountSketch to ``sketch_dim``
    dims (unbiased; see :func:`lpntk_gram`). ``block_size`` samples go through one forward/backward pass;
    ``max_memory_bytes`` bounds the packed per-layer factors held at once (the output and one block's
    activations come on top). Computation and accumulation in the model's dtype, or in ``dtype`` (a cast
    copy of the model is used); on ``device`` if given, else the model's.
    """
    if (x2 is None) != (v2 is None):
        raise ValueError("x2, v2: give both or neither")
    model, dtype, device, x, x2, k = _setup(
        model, x, x2, dtype, device, None, block_size, max_memory_bytes, mode, sketch_dim
    )

    def as_cot(vv, name, n):
        vv = torch.as_tensor(vv).to(device=device, dtype=dtype)
        if vv.dim() != 2 or vv.shape != (n, k):
            raise ValueError(f"{name}: expected shape ({n}, {k}) = (len(x), K), got {tuple(vv.shape)}")
        return _const_cot(vv.unsqueeze(1))

    left = _Side(x, as_cot(v, "v", len(x)))
    right = None if x2 is None else _Side(x2, as_cot(v2, "v2", len(x2)))
    with _eval_mode(model):
        G = _gram(
            model,
            left,
            right,
            block_size=block_size,
            max_memory_bytes=max_memory_bytes,
            mode=mode,
            sketch_dim=sketch_dim,
            seed=seed,
        )
    return G[:, 0, :, 0]


def _label_gram(model, x, y, num_classes, x2, y2, vec: Callable[[Tensor, int], Tensor], **kw) -> Tensor:
    if (x2 is None) != (y2 is None):
        raise ValueError("x2, y2: give both or neither")
    model, dtype, device, x, x2, k = _setup(
        model,
        x,
        x2,
        kw["dtype"],
        kw["device"],
        num_classes,
        kw["block_size"],
        kw["max_memory_bytes"],
        kw["mode"],
        kw["sketch_dim"],
    )
    y = _as_labels(y, "y", len(x), k, device)
    left = _Side(x, _const_cot(vec(y, k).to(device=device, dtype=dtype).unsqueeze(1)))
    right = None
    if x2 is not None:
        y2 = _as_labels(y2, "y2", len(x2), k, device)
        right = _Side(x2, _const_cot(vec(y2, k).to(device=device, dtype=dtype).unsqueeze(1)))
    with _eval_mode(model):
        G = _gram(
            model,
            left,
            right,
            block_size=kw["block_size"],
            max_memory_bytes=kw["max_memory_bytes"],
            mode=kw["mode"],
            sketch_dim=kw["sketch_dim"],
            seed=kw["seed"],
        )
    return G[:, 0, :, 0]


def _lpntk_vec(y: Tensor, k: int) -> Tensor:
    return sign_vectors(y.cpu(), k).double() / math.sqrt(k)


def lpntk_gram(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    num_classes: int | None = None,
    x2: Tensor | None = None,
    y2: Tensor | None = None,
    *,
    mode: str = "exact",
    block_size: int = DEFAULT_BLOCK_SIZE,
    max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    sketch_dim: int | None = None,
    seed: int = 0,
) -> Tensor:
    """lpNTK Gram: kappa_ij = (1/K) s(y_i)^T J(x_i) J(x'_j)^T s(y'_j) = <phi_i, phi'_j>, phi = J^T s(y)/sqrt K.

    (N, N) symmetric (one triangle computed, then mirrored), or (N, M) against ``x2``/``y2``. The official code
    omits the 1/K: multiply by K for its values. ``num_classes`` is checked against the model's output width.

    ``mode="exact"`` (default): exact up to float round-off, from per-layer factors (module docstring).
    ``mode="sketch"``: phi is replaced by a seeded CountSketch S phi in R^D, D = ``sketch_dim`` (hash and sign per
    parameter coordinate, drawn from ``seed``); each entry is unbiased, E[<S phi, S phi'>] = kappa, with variance
    at most (||phi||^2 ||phi'||^2 + kappa^2) / D, i.e. a standard deviation <= sqrt(2/D) ||phi|| ||phi'||.
    See :func:`gradient_gram` for ``block_size``, ``max_memory_bytes``, ``dtype``, ``device``.
    """
    return _label_gram(
        model,
        x,
        y,
        num_classes,
        x2,
        y2,
        _lpntk_vec,
        mode=mode,
        block_size=block_size,
        max_memory_bytes=max_memory_bytes,
        dtype=dtype,
        device=device,
        sketch_dim=sketch_dim,
        seed=seed,
    )


def pntk_gram(
    model: nn.Module,
    x: Tensor,
    x2: Tensor | None = None,
    *,
    mode: str = "exact",
    block_size: int = DEFAULT_BLOCK_SIZE,
    max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    sketch_dim: int | None = None,
    seed: int = 0,
) -> Tensor:
    """pNTK Gram (Mohamadi et al. 2023): (1/K) 1^T J(x_i) J(x'_j)^T 1, i.e. the Gram of J^T 1 / sqrt K.

    (N, N) or (N, M) against ``x2``; options as in :func:`lpntk_gram`.
    """
    model, dtype, device, x, x2, k = _setup(
        model, x, x2, dtype, device, None, block_size, max_memory_bytes, mode, sketch_dim
    )
    ones = lambda n: torch.full((n, 1, k), 1.0 / math.sqrt(k), dtype=dtype, device=device)
    left = _Side(x, _const_cot(ones(len(x))))
    right = None if x2 is None else _Side(x2, _const_cot(ones(len(x2))))
    with _eval_mode(model):
        G = _gram(
            model,
            left,
            right,
            block_size=block_size,
            max_memory_bytes=max_memory_bytes,
            mode=mode,
            sketch_dim=sketch_dim,
            seed=seed,
        )
    return G[:, 0, :, 0]


def entk_blocks(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    mode: str = "exact",
    block_size: int = DEFAULT_BLOCK_SIZE,
    max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    sketch_dim: int | None = None,
    seed: int = 0,
) -> Tensor:
    """eNTK blocks K(x1_i, x2_j) = J(x1_i) J(x2_j)^T, returned as (N1, N2, K, K) (x2 defaults to x1).

    Per sample, K backward passes (one per logit) give the layer factors with an extra K axis; the blocks are
    their contraction. lpNTK = (1/K) s^T B s and pNTK = (1/K) 1^T B 1 for each block B.
    """
    model, dtype, device, x1, x2, k = _setup(
        model, x1, x2, dtype, device, None, block_size, max_memory_bytes, mode, sketch_dim
    )
    eye = torch.eye(k, dtype=dtype, device=device)
    cot = lambda z, idx: eye.expand(z.shape[0], k, k)
    left = _Side(x1, cot)
    right = None if x2 is None else _Side(x2, cot)
    with _eval_mode(model):
        G = _gram(
            model,
            left,
            right,
            block_size=block_size,
            max_memory_bytes=max_memory_bytes,
            mode=mode,
            sketch_dim=sketch_dim,
            seed=seed,
        )
    return G.permute(0, 2, 1, 3).contiguous()


def per_sample_gradients(
    model: nn.Module,
    x: Tensor,
    v: Tensor,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Materialised per-sample vectors g_i = J(x_i)^T v_i, (N, P), columns in ``named_parameters()`` order
    (trainable parameters only, each flattened). For small models; memory N * P."""
    model, dtype, device, x, _, k = _setup(model, x, None, dtype, device, None, block_size, 1, "exact", None)
    v = torch.as_tensor(v).to(device=device, dtype=dtype)
    if v.shape != (len(x), k):
        raise ValueError(f"v: expected shape ({len(x)}, {k}) = (len(x), K), got {tuple(v.shape)}")
    return _materialise_all(model, x, _const_cot(v.unsqueeze(1)), block_size)


def _materialise_all(model: nn.Module, x: Tensor, cot: Cotangent, block_size: int) -> Tensor:
    dtype, device = _model_dtype_device(model)
    with _eval_mode(model):
        eng = _Engine(model)
        offsets, off = {}, 0
        for _, p in eng.params:
            offsets[id(p)] = off
            off += p.numel()
        out = torch.zeros((len(x), off), dtype=dtype, device=device)
        with eng:
            for sl in _iter_blocks(0, len(x), block_size):
                fs, _ = eng.factors(x[sl], cot, sl)
                for f in fs:
                    g = f.materialise()[:, 0]
                    c = 0
                    for p in f.params:
                        out[sl, offsets[id(p)] : offsets[id(p)] + p.numel()] = g[:, c : c + p.numel()]
                        c += p.numel()
    return out


def lpntk_features(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    num_classes: int | None = None,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """lpNTK feature vectors phi(x_i, y_i) = (1/sqrt K) J(x_i)^T s(y_i) = (1/sqrt K) grad_w (s(y_i) . z(x_i)).

    (N, P), columns in ``named_parameters()`` order; lpntk_gram = Phi Phi^T. Memory N * P: small models only.
    """
    model, dtype, device, x, _, k = _setup(model, x, None, dtype, device, num_classes, block_size, 1, "exact", None)
    y = _as_labels(y, "y", len(x), k, device)
    v = _lpntk_vec(y, k).to(device=device, dtype=dtype)
    return _materialise_all(model, x, _const_cot(v.unsqueeze(1)), block_size)


def _ce_cot(y: Tensor, k: int) -> Cotangent:
    def cot(z: Tensor, idx: slice) -> Tensor:
        g = torch.softmax(z, dim=1)
        g[torch.arange(len(z), device=z.device), y[idx]] -= 1.0
        return g.unsqueeze(1)

    return cot


def per_sample_grad_norms(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    loss: str = "cross_entropy",
    block_size: int = DEFAULT_BLOCK_SIZE,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """GraNd (Paul et al. 2021): ||grad_w CE(f(x_i), y_i)||_2 = ||J(x_i)^T (softmax(z_i) - e_{y_i})||_2, (N,).

    Diagonal only, per layer and per block: ||a||^2 ||delta||^2 for Linear layers, the cheaper of the
    materialised gradient and the ghost norm sum_{t,t'} (a_t . a_t')(delta_t . delta_t') for convolutions.
    Eval mode (dropout off), like every kernel here.
    """
    if loss != "cross_entropy":
        raise ValueError(f"loss: only 'cross_entropy' is supported, got {loss!r}")
    _check_options(block_size, 1, "exact", None)
    model, dtype, device = _prepare_model(model, dtype, device, x)
    x = _as_inputs(x, "x", dtype, device)
    with _eval_mode(model):
        k = _output_width(model, x, None)
        y = _as_labels(y, "y", len(x), k, device)
        eng = _Engine(model)
        out = torch.zeros(len(x), dtype=dtype, device=device)
        cot = _ce_cot(y, k)
        with eng:
            for sl in _iter_blocks(0, len(x), block_size):
                fs, _ = eng.factors(x[sl], cot, sl)
                out[sl] = sum(f.squared_norms()[:, 0] for f in fs)
    return out.sqrt()


def logit_loss_gradient(model: nn.Module, x: Tensor, y: Tensor, *, block_size: int = 1024) -> Tensor:
    """Per-sample cross-entropy gradient w.r.t. the logits: dL/dz = softmax(z(x_i)) - e_{y_i}, (N, K), eval mode."""
    dtype, device = _model_dtype_device(model)
    x = _as_inputs(x, "x", dtype, device)
    with _eval_mode(model), torch.no_grad():
        k = _output_width(model, x, None)
        y = _as_labels(y, "y", len(x), k, device)
        z = torch.cat([model(x[sl]) for sl in _iter_blocks(0, len(x), block_size)])
    g = torch.softmax(z, dim=1)
    g[torch.arange(len(x), device=device), y] -= 1.0
    return g


def loss_gradient(
    model: nn.Module, x: Tensor, y: Tensor, *, reduction: str = "mean", block_size: int = DEFAULT_BLOCK_SIZE
) -> dict[str, Tensor]:
    """Batch gradient grad_w L as a parameter-shaped dict (trainable parameters, ``named_parameters`` names).

    L = (1/N) sum_u CE(f(x_u), y_u) for ``reduction="mean"`` (sum for "sum"), in eval mode, so that
    grad_w L = (1/N) sum_u J(x_u)^T (softmax(z_u) - e_{y_u}).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
    dtype, device = _model_dtype_device(model)
    x = _as_inputs(x, "x", dtype, device)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model: has no trainable parameters (requires_grad=True)")
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    with _eval_mode(model):
        k = _output_width(model, x, None)
        y = _as_labels(y, "y", len(x), k, device)
        for sl in _iter_blocks(0, len(x), block_size):
            with torch.enable_grad():
                loss = F.cross_entropy(model(x[sl]), y[sl], reduction="sum")
                gs = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (n, _), g in zip(params.items(), gs, strict=True):
                if g is not None:
                    total[n] += g
    if reduction == "mean":
        for n in total:
            total[n] /= len(x)
    return total


def jvp_logits(
    model: nn.Module, x: Tensor, direction: Mapping[str, Tensor], *, block_size: int = DEFAULT_BLOCK_SIZE
) -> Tensor:
    """Matrix-free J(x) u: the directional derivative of the logits along a parameter-space vector u,
    (N, K), by forward-mode AD (``torch.func.jvp`` of ``functional_call``), in eval mode.

    ``direction`` maps parameter names (as in ``named_parameters``) to tensors of the parameters' shapes;
    parameters not named are held fixed (zero tangent). E.g. the first-order logit change of one SGD step on a
    batch is Delta z(x_o) = -lr * jvp_logits(model, x_o, loss_gradient(model, x_batch, y_batch)).
    """
    dtype, device = _model_dtype_device(model)
    x = _as_inputs(x, "x", dtype, device)
    named = dict(model.named_parameters())
    unknown = [k for k in direction if k not in named]
    if unknown:
        raise ValueError(f"direction: unknown parameter names {unknown}")
    primals = {k: named[k].detach() for k in direction}
    tangents = {}
    for k, t in direction.items():
        t = torch.as_tensor(t).to(device=device, dtype=dtype)
        if t.shape != primals[k].shape:
            raise ValueError(f"direction: {k!r} has shape {tuple(t.shape)}, parameter has {tuple(primals[k].shape)}")
        tangents[k] = t
    outs = []
    with _eval_mode(model):
        for sl in _iter_blocks(0, len(x), block_size):
            _, jz = jvp(lambda p, xb=x[sl]: functional_call(model, p, (xb,)), (primals,), (tangents,))
            outs.append(jz)
    return torch.cat(outs)

"""The recording engine: per-layer per-sample gradient factors of a block of samples, and its context.

A model maps x to logits z(x) in R^K; J(x) = dz/dw over the trainable parameters w, in eval mode. For a block of n
samples and per-sample cotangents v_{ia} in R^K (a = 1..m directions), the engine yields every parameterised
layer's factors of the per-sample vectors

    g_{ia} = J(x_i)^T v_{ia}  restricted to the layer's parameters:

one forward pass records each hooked module's calls (inputs a, outputs); one backward pass of sum_i v_{ia} . z_i
per direction (all m at once with ``is_grads_batched``) gives every recorded output's gradient delta_{ia}. Samples
do not interact in eval mode, so delta_{ia} is sample i's own output gradient, and the module's handler in
:data:`lpntk.grad_sample.GRAD_SAMPLERS` turns (a_i, delta_{ia}) into factors (Linear: g^W = sum_t delta_t a_t^T).
Modules no handler knows go through :func:`lpntk.grad_sample.generic_module_factors`; parameters tied across
modules, used without calling their module, or of modules with non-tensor outputs through
:func:`lpntk.grad_sample.whole_model_factors`. A module called several times has its calls summed; an output
modified in place downstream is recorded from a clone (found after a forward pass, which is then re-run).

The context of every kernel call: :func:`eval_mode` validates that no BatchNorm mixes samples (train mode or no
running statistics: ValueError), puts every module in eval mode and restores each one's mode afterwards, runs
under ``torch.no_grad()``, and switches TF32 off for CUDA matmuls and cuDNN convolutions (:func:`exact_matmul`);
:func:`prepare_model`, :func:`as_inputs`, :func:`as_labels`, :func:`output_width` check and convert the
arguments.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..grad_sample import (
    GRAD_SAMPLERS,
    Call,
    Factors,
    Unsupported,
    generic_module_factors,
    whole_model_factors,
)

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "BATCHED_BACKWARD",
    "Cotangent",
    "Engine",
    "exact_matmul",
    "check_no_sample_mixing",
    "eval_mode",
    "model_dtype_device",
    "prepare_model",
    "as_inputs",
    "as_labels",
    "output_width",
    "iter_blocks",
]

DEFAULT_BLOCK_SIZE = 256  # samples per forward/backward pass
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


def check_no_sample_mixing(model: nn.Module) -> None:
    """ValueError if a BatchNorm would normalise with batch statistics (train mode, or no running statistics)."""
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
def eval_mode(model: nn.Module, *, check: bool = True) -> Iterator[None]:
    """Validate (unless ``check=False``), put every module in eval mode, switch TF32 off (:func:`exact_matmul`),
    and restore each module's previous mode afterwards.

    Runs under ``torch.no_grad()``: the engine enables grad only for its own forward passes, so no autograd
    graph is built over the factors or the Gram.
    """
    if check:
        check_no_sample_mixing(model)
    modes = [(mod, mod.training) for mod in model.modules()]
    model.eval()
    try:
        with exact_matmul(), torch.no_grad():
            yield
    finally:
        for mod, training in modes:
            mod.training = training


def model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    """dtype and device of the model's first floating parameter (the default dtype on CPU if it has none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    return torch.get_default_dtype(), torch.device("cpu")


def prepare_model(
    model: nn.Module, dtype: torch.dtype | None, device: torch.device | str | None, x=None
) -> tuple[nn.Module, torch.dtype, torch.device]:
    """The model to compute with: the caller's own, or a converted copy if ``dtype``/``device`` differ.

    Device: ``device`` if given; else CUDA if the model or the inputs ``x`` are on CUDA; else the model's.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    cur_dtype, cur_device = model_dtype_device(model)
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


def as_inputs(x, name: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A non-empty batch (N, ...), detached, on ``device``; floating inputs cast to ``dtype``."""
    x = torch.as_tensor(x)
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty batch (N, ...), got shape {tuple(x.shape)}")
    x = x.detach()
    if x.is_floating_point() or x.is_complex():
        x = x.to(device=device, dtype=dtype)
    else:
        x = x.to(device=device)
    return x


def as_labels(y, name: str, n: int, k: int, device: torch.device) -> Tensor:
    """``n`` integer class labels in [0, k) as a long tensor on ``device``; ValueError naming ``name`` otherwise."""
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


def output_width(model: nn.Module, x: Tensor, num_classes: int | None) -> int:
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


# ----------------------------------------------------------------------------------------------------------
# Recording engine: per-layer factors of a block of samples
# ----------------------------------------------------------------------------------------------------------


class Engine:
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
    def __enter__(self) -> Engine:
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
        self._record_output_grads(z, v)
        del z
        result = [self._layer_factors(i) for i in range(len(self.plan))]
        if self.whole:
            result.append(whole_model_factors(self.model, x, v, self.whole))
        self.calls = defaultdict(list)
        return result, v

    def _record_output_grads(self, z: Tensor, v: Tensor) -> None:
        """Give every recorded call of the planned modules its output gradient ``grad`` (d(sum_i v_{ia} . z_i)/d(out),
        :meth:`_output_grads`) and release its output."""
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
        if not outs:
            return
        if not z.requires_grad:
            raise ValueError("model: the logits do not depend on any trainable parameter")
        for c, g in zip(recorded, self._output_grads(z, outs, v), strict=True):
            c.grad = g
        for c in recorded:
            c.output = None

    def _layer_factors(self, i: int) -> Factors:
        """The factors of the ``i``-th planned module: its structured grad sampler (``GRAD_SAMPLERS``), or the generic
        path when it has none or the sampler declines these calls (the module then stays on the generic path)."""
        mname, mod, direct, kind = self.plan[i]
        calls = self.calls[mod]
        f = None
        if kind == "structured":
            try:
                f = GRAD_SAMPLERS[type(mod)](mod, calls)
            except Unsupported:
                self.plan[i] = (mname, mod, direct, "generic")
        return f if f is not None else generic_module_factors(mod, calls, direct)


def iter_blocks(start: int, stop: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` covering [start, stop)."""
    for s in range(start, stop, size):
        yield slice(s, min(stop, s + size))

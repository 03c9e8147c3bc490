"""Linearisation: the cross-entropy gradients and Jacobian-vector products of the logits, in eval mode.

For a batch (x_u, y_u), u = 1..N, with logits z_u = z(x_u; w) and L = (1/N) sum_u CE(z_u, y_u) (or the sum):

    grad_z CE(z_u, y_u) = softmax(z_u) - e_{y_u}                    (per sample, (N, K)),
    grad_w L            = (1/N) sum_u J(x_u)^T (softmax(z_u) - e_{y_u})  (by parameter name),

both from one forward/backward pass (:func:`cross_entropy_gradients`; :func:`loss_gradient` and
:func:`logit_loss_gradient` return one of the two). The first-order change of the logits along a parameter-space
vector u is

    z(x; w + u) - z(x; w) ~ J(x) u                                  (:func:`jvp_logits`, forward-mode AD),

so one plain SGD step w -> w - eta grad_w L changes the logits of x_o by ~ -eta J(x_o) grad_w L
(paper Eq. 1; used by :mod:`lpntk.forgetting`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jvp

from ._engine import (
    DEFAULT_BLOCK_SIZE,
    as_inputs,
    as_labels,
    check_no_sample_mixing,
    eval_mode,
    iter_blocks,
    model_dtype_device,
)

__all__ = ["LossGradients", "cross_entropy_gradients", "loss_gradient", "logit_loss_gradient", "jvp_logits"]


class LossGradients(NamedTuple):
    """What :func:`cross_entropy_gradients` returns (unpacks as ``params, logits, loss``)."""

    params: dict[str, Tensor]  # grad_w L, trainable parameters by ``named_parameters`` name
    logits: Tensor  # grad_z CE(z_u, y_u) = softmax(z_u) - e_{y_u} per sample, (N, K)
    loss: float  # L


def cross_entropy_gradients(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    reduction: str = "mean",
    block_size: int | None = None,
    with_params: bool = True,
) -> LossGradients:
    """grad_w L, the per-sample logit gradients softmax(z_u) - e_{y_u} and L, from one eval-mode forward and
    backward pass per block of ``block_size`` samples (default: the whole batch in one pass).

    L = (1/N) sum_u CE(z(x_u), y_u) for ``reduction="mean"`` (accumulated over blocks b as sum_b (n_b/N) times
    the block's mean, so one block gives exactly the gradient of ``F.cross_entropy(model(x), y)``), the sum for
    "sum". ``with_params=False`` skips the backward pass (``params`` is then empty).

    Eval mode (dropout off, BatchNorm with its running statistics), TF32 off, every module's mode restored. Unlike
    the kernels, a BatchNorm in train mode is not an error: this is the gradient of the eval-mode network, which
    :func:`lpntk.forgetting.run_forgetting` steps along from a model in any mode.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
    dtype, device = model_dtype_device(model)
    x = as_inputs(x, "x", dtype, device)
    n = len(x)
    if block_size is None:
        block_size = n
    elif not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size: expected a positive integer, got {block_size!r}")
    params = {name: p for name, p in model.named_parameters() if p.requires_grad} if with_params else {}
    if with_params and not params:
        raise ValueError("model: has no trainable parameters (requires_grad=True)")
    grads: dict[str, Tensor] = {}
    errs: list[Tensor] = []
    loss = 0.0
    labels: Tensor | None = None
    with eval_mode(model, check=False):
        for sl in iter_blocks(0, n, block_size):
            with torch.set_grad_enabled(with_params):
                z = model(x[sl])
                if labels is None:
                    if not isinstance(z, Tensor) or z.dim() != 2:
                        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
                        raise ValueError(f"model: expected logits of shape (N, K), got {shape}")
                    labels = as_labels(y, "y", n, z.shape[1], device)
                yb = labels[sl]
                if reduction == "mean":
                    block_loss = F.cross_entropy(z, yb) * (len(yb) / n)
                else:
                    block_loss = F.cross_entropy(z, yb, reduction="sum")
                gs = torch.autograd.grad(block_loss, list(params.values()), allow_unused=True) if with_params else ()
            for (name, p), g in zip(params.items(), gs, strict=True):
                g = torch.zeros_like(p) if g is None else g
                grads[name] = g if name not in grads else grads[name] + g
            err = torch.softmax(z.detach(), dim=1)
            err[torch.arange(len(yb), device=err.device), yb] -= 1.0
            errs.append(err)
            loss += float(block_loss.detach())
    return LossGradients(grads, errs[0] if len(errs) == 1 else torch.cat(errs), loss)


def logit_loss_gradient(model: nn.Module, x: Tensor, y: Tensor, *, block_size: int = 1024) -> Tensor:
    """Per-sample cross-entropy gradient w.r.t. the logits: dL/dz = softmax(z(x_i)) - e_{y_i}, (N, K), eval mode.

    :func:`cross_entropy_gradients` without the backward pass; a BatchNorm that mixes samples is an error."""
    check_no_sample_mixing(model)
    return cross_entropy_gradients(model, x, y, block_size=block_size, with_params=False).logits


def loss_gradient(
    model: nn.Module, x: Tensor, y: Tensor, *, reduction: str = "mean", block_size: int = DEFAULT_BLOCK_SIZE
) -> dict[str, Tensor]:
    """Batch gradient grad_w L as a parameter-shaped dict (trainable parameters, ``named_parameters`` names).

    L = (1/N) sum_u CE(f(x_u), y_u) for ``reduction="mean"`` (sum for "sum"), in eval mode, so that
    grad_w L = (1/N) sum_u J(x_u)^T (softmax(z_u) - e_{y_u}). The ``params`` of :func:`cross_entropy_gradients`;
    a BatchNorm that mixes samples is an error.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
    check_no_sample_mixing(model)
    return cross_entropy_gradients(model, x, y, reduction=reduction, block_size=block_size).params


def jvp_logits(
    model: nn.Module, x: Tensor, direction: Mapping[str, Tensor], *, block_size: int = DEFAULT_BLOCK_SIZE
) -> Tensor:
    """Matrix-free J(x) u: the directional derivative of the logits along a parameter-space vector u,
    (N, K), by forward-mode AD (``torch.func.jvp`` of ``functional_call``), in eval mode.

    ``direction`` maps parameter names (as in ``named_parameters``) to tensors of the parameters' shapes;
    parameters not named are held fixed (zero tangent). E.g. the first-order logit change of one SGD step on a
    batch is Delta z(x_o) = -lr * jvp_logits(model, x_o, loss_gradient(model, x_batch, y_batch)).
    """
    dtype, device = model_dtype_device(model)
    x = as_inputs(x, "x", dtype, device)
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
    with eval_mode(model):
        for sl in iter_blocks(0, len(x), block_size):
            _, jz = jvp(lambda p, xb=x[sl]: functional_call(model, p, (xb,)), (primals,), (tangents,))
            outs.append(jz)
    return torch.cat(outs)

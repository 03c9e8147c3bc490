"""Linearisation: the cross-entropy gradients and Jacobian-vector products of the logits, in eval mode.

For a batch (x_u, y_u), u = 1..N, with logits z_u = z(x_u; w) and L = (1/N) sum_u CE(z_u, y_u) (or the sum):

    grad_z CE(z_u, y_u) = softmax(z_u) - e_{y_u}                    (per sample, (N, K)),
    grad_w L            = (1/N) sum_u J(x_u)^T (softmax(z_u) - e_{y_u})  (by parameter name),

(:func:`logit_loss_gradient`, :func:`loss_gradient`). The first-order change of the logits along a parameter-space
vector u is

    z(x; w + u) - z(x; w) ~ J(x) u                                  (:func:`jvp_logits`, forward-mode AD),

so one plain SGD step w -> w - eta grad_w L changes the logits of x_o by ~ -eta J(x_o) grad_w L
(paper Eq. 1; used by :mod:`lpntk.forgetting`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jvp

from ._engine import (
    DEFAULT_BLOCK_SIZE,
    as_inputs,
    as_labels,
    eval_mode,
    iter_blocks,
    model_dtype_device,
    output_width,
)

__all__ = ["logit_loss_gradient", "loss_gradient", "jvp_logits"]


def logit_loss_gradient(model: nn.Module, x: Tensor, y: Tensor, *, block_size: int = 1024) -> Tensor:
    """Per-sample cross-entropy gradient w.r.t. the logits: dL/dz = softmax(z(x_i)) - e_{y_i}, (N, K), eval mode."""
    dtype, device = model_dtype_device(model)
    x = as_inputs(x, "x", dtype, device)
    with eval_mode(model), torch.no_grad():
        k = output_width(model, x, None)
        y = as_labels(y, "y", len(x), k, device)
        z = torch.cat([model(x[sl]) for sl in iter_blocks(0, len(x), block_size)])
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
    dtype, device = model_dtype_device(model)
    x = as_inputs(x, "x", dtype, device)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model: has no trainable parameters (requires_grad=True)")
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    with eval_mode(model):
        k = output_width(model, x, None)
        y = as_labels(y, "y", len(x), k, device)
        for sl in iter_blocks(0, len(x), block_size):
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

"""Eval-mode normalisation layers (BatchNorm1d/2d/3d with running statistics, LayerNorm): affine maps of xhat.

In eval mode BatchNorm is z = gamma * xhat + beta with xhat = (x - running_mean) / sqrt(running_var + eps) per
channel c; LayerNorm the same with xhat normalised over the trailing ``normalized_shape`` dims of each sample.
With delta the output gradient, summed over the positions that share a parameter entry,

    g^gamma_{ia} = sum_pos delta_{ia,pos} * xhat_{i,pos},    g^beta_{ia} = sum_pos delta_{ia,pos},

materialised as :class:`~lpntk.grad_sample.registry.DenseFactors`. A BatchNorm using batch statistics (train mode,
or no running statistics) mixes samples: :class:`~lpntk.grad_sample.registry.Unsupported`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .registry import Call, DenseFactors, Factors, Unsupported, register_grad_sampler, single_tensor_input, trainable

__all__ = ["batchnorm_eval_factors", "layernorm_factors"]


def _affine_factors(
    gamma: nn.Parameter | None, beta: nn.Parameter | None, xhat: Tensor, d: Tensor, reduce_dims: tuple[int, ...]
) -> DenseFactors:
    n, m = d.shape[:2]
    parts, params = [], []
    if gamma is not None:
        parts.append((d * xhat.unsqueeze(1)).sum(reduce_dims).reshape(n, m, -1))
        params.append(gamma)
    if beta is not None:
        parts.append(d.sum(reduce_dims).reshape(n, m, -1))
        params.append(beta)
    return DenseFactors(g=torch.cat(parts, 2) if len(parts) > 1 else parts[0], params=params)


@register_grad_sampler(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def batchnorm_eval_factors(module: nn.modules.batchnorm._BatchNorm, calls: Sequence[Call]) -> Factors:
    """Eval-mode BatchNorm is the affine map ``gamma * xhat + beta`` with running statistics:
    ``g^gamma_c = sum_pos d_c xhat_c``, ``g^beta_c = sum_pos d_c``."""
    if module.training or module.running_mean is None:
        raise Unsupported("BatchNorm using batch statistics")
    gs = []
    for c in calls:
        x = single_tensor_input(c)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        xhat = (x - module.running_mean.view(shape)) / torch.sqrt(module.running_var.view(shape) + module.eps)
        d = c.grad
        if x.dim() == 2:  # (n, C): no positions to sum over
            xhat, d = xhat.unsqueeze(-1), d.unsqueeze(-1)
        red = tuple(range(3, d.dim()))
        gs.append(_affine_factors(trainable(module, "weight"), trainable(module, "bias"), xhat, d, red))
    return DenseFactors(g=sum(f.g for f in gs), params=gs[0].params)


@register_grad_sampler(nn.LayerNorm)
def layernorm_factors(module: nn.LayerNorm, calls: Sequence[Call]) -> Factors:
    """LayerNorm ``gamma * xhat + beta`` over the last dims: sum ``d * xhat`` and ``d`` over leading dims."""
    k = len(module.normalized_shape)
    gs = []
    for c in calls:
        x = single_tensor_input(c)
        dims = tuple(range(x.dim() - k, x.dim()))
        mu = x.mean(dims, keepdim=True)
        var = x.var(dims, keepdim=True, unbiased=False)
        xhat = (x - mu) / torch.sqrt(var + module.eps)
        n, m = c.grad.shape[:2]
        gr = c.grad.reshape(n, m, -1, *module.normalized_shape)
        xh = xhat.reshape(n, -1, *module.normalized_shape)
        gs.append(_affine_factors(trainable(module, "weight"), trainable(module, "bias"), xh, gr, (2,)))
    return DenseFactors(g=sum(f.g for f in gs), params=gs[0].params)

"""Linear layers: z = W a + b over any leading sequence dims, an outer product per position.

For a call with input a (n, *, d_in) and output gradient delta (n, m, *, d_out), the positions t run over the
flattened sequence dims and

    g^W_{ia} = sum_t delta_{iat} a_{it}^T,    g^b_{ia} = sum_t delta_{iat},

kept as :class:`~lpntk.grad_sample.registry.OuterFactors`; several calls of one module concatenate their
positions. A frozen weight leaves the bias gradient alone, materialised.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .registry import (
    Call,
    DenseFactors,
    Factors,
    OuterFactors,
    Unsupported,
    register_grad_sampler,
    single_tensor_input,
    trainable,
)

__all__ = ["linear_factors"]


def _outer_or_bias(weight: nn.Parameter | None, bias: nn.Parameter | None, a: Tensor, d: Tensor) -> Factors:
    if weight is not None:
        return OuterFactors(a=a, d=d, bias=bias is not None, params=[weight] + ([bias] if bias is not None else []))
    return DenseFactors(g=d.sum(2), params=[bias])


@register_grad_sampler(nn.Linear)
def linear_factors(module: nn.Linear, calls: Sequence[Call]) -> Factors:
    """Linear ``z = W a + b`` (any leading sequence dims): ``g^W = sum_t d_t a_t^T``, ``g^b = sum_t d_t``."""
    a_list, d_list = [], []
    for c in calls:
        x = single_tensor_input(c)
        n, m = c.grad.shape[:2]
        if x.dim() < 2 or x.shape[0] != n:
            raise Unsupported("Linear input without a batch dimension")
        a_list.append(x.reshape(n, -1, module.in_features))
        d_list.append(c.grad.reshape(n, m, -1, module.out_features))
    a = a_list[0] if len(a_list) == 1 else torch.cat(a_list, 1)
    d = d_list[0] if len(d_list) == 1 else torch.cat(d_list, 2)
    return _outer_or_bias(trainable(module, "weight"), trainable(module, "bias"), a, d)

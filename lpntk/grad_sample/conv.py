"""Convolutions (Conv1d, Conv2d): a Linear map on unfolded input patches, an outer product per output position.

With U_{il} the unfolded input patch of sample i at output position l (C_in k_h k_w values, in ``F.unfold`` order,
after the layer's padding) and delta_{ial} the output gradient there,

    g^W_{ia} = sum_l delta_{ial} U_{il}^T,    g^b_{ia} = sum_l delta_{ial}.

groups = 1 gives :class:`ConvFactors` (outer-product factors whose patches are unfolded only when the pairwise
form needs them; the materialised weight gradient is one grouped-convolution backward or unfold + bmm, chosen by
:data:`CONV_WEIGHT_GRAD`); groups > 1 is materialised per group. Conv1d runs as a Conv2d of height 1; any stride,
dilation, padding and padding mode (non-zero or asymmetric padding is applied to the input first).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
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

__all__ = ["CONV_WEIGHT_GRAD", "ConvFactors", "conv_factors", "unfold_conv_input"]


CONV_WEIGHT_GRAD = "auto"
"""How :class:`ConvFactors` materialises per-sample conv weight gradients: "auto" (by a measured rule),
"grouped" (grouped-convolution backward) or "unfold" (unfold + batched matmul). Tests set it to check both."""


class ConvFactors(OuterFactors):
    """Outer-product factors of a groups=1 Conv1d/Conv2d, kept as (input, output gradient) per call.

    ``a`` (the unfolded patches, (n, L, C_in k_h k_w)) is built only if the pairwise form needs it; the
    materialised weight gradient uses the grouped-convolution identity instead: with the batch folded into
    channels and groups = n, the weight gradient of one convolution is every sample's weight gradient at
    once (one ``convolution_backward`` call, no unfold copy). Several calls are summed (positions
    concatenated).
    """

    def __init__(
        self,
        module: nn.modules.conv._ConvNd,
        xs: list[Tensor],
        ds: list[Tensor],
        pads: list[int],
        bias: bool,
        params: list[nn.Parameter],
    ):
        self.module, self.xs, self.ds, self.pads, self.bias, self.params = module, xs, ds, pads, bias, params
        self._a = None
        self._d = None
        k = module.kernel_size
        self.kernel = (1, k[0]) if len(k) == 1 else tuple(k)
        self.stride = (1, module.stride[0]) if len(k) == 1 else tuple(module.stride)
        self.dilation = (1, module.dilation[0]) if len(k) == 1 else tuple(module.dilation)

    @property
    def n(self) -> int:
        return self.ds[0].shape[0]

    @property
    def m(self) -> int:
        return self.ds[0].shape[1]

    @property
    def T(self) -> int:
        return sum(d.shape[3] * d.shape[4] for d in self.ds)

    @property
    def d_in(self) -> int:
        return self.xs[0].shape[1] * self.kernel[0] * self.kernel[1]

    @property
    def d_out(self) -> int:
        return self.ds[0].shape[2]

    @property
    def a(self) -> Tensor:
        if self._a is None:
            us = [_unfold2d(x, self.pads, self.kernel, self.stride, self.dilation) for x in self.xs]
            self._a = (us[0] if len(us) == 1 else torch.cat(us, 2)).transpose(1, 2)
        return self._a

    @property
    def d(self) -> Tensor:
        if self._d is None:
            n, m, c = self.ds[0].shape[:3]
            flat = [d.reshape(n, m, c, -1) for d in self.ds]
            self._d = (flat[0] if len(flat) == 1 else torch.cat(flat, 3)).transpose(2, 3)
        return self._d

    def rows(self, s: int, e: int) -> ConvFactors:
        return ConvFactors(
            self.module, [x[s:e] for x in self.xs], [d[s:e] for d in self.ds], self.pads, self.bias, self.params
        )

    def _use_grouped(self) -> bool:
        if CONV_WEIGHT_GRAD != "auto":
            return CONV_WEIGHT_GRAD == "grouped"
        x = self.xs[0]
        # measured on CPU (oneDNN, 2 cores): the grouped form wins for >= 8 input channels, >= 64 positions
        # and blocks of >= 128 samples, and loses badly for 1-4 channels or small blocks; float64 (no oneDNN
        # kernel) and CUDA use unfold + bmm.
        return (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.shape[0] >= 128
            and x.shape[1] >= 8
            and self.T >= 64
        )

    def weight_grad(self) -> Tensor:
        if not self._use_grouped():
            return super().weight_grad()
        total = None
        ph, pw = self.pads[2], self.pads[0]
        for x, d in zip(self.xs, self.ds, strict=True):
            n, c, h, w = x.shape
            _, m, c_out, oh, ow = d.shape
            wshape = (n * m * c_out, c) + self.kernel
            g = torch.ops.aten.convolution_backward(
                d.reshape(1, n * m * c_out, oh, ow),
                x.reshape(1, n * c, h, w),
                x.new_zeros(1).expand(wshape),
                None,
                list(self.stride),
                [ph, pw],
                list(self.dilation),
                False,
                [0, 0],
                n,
                [False, True, False],
            )[1]
            g = g.reshape(n, m, -1)
            total = g if total is None else total + g
        return total

    def bias_grad(self) -> Tensor:
        return sum(d.sum((3, 4)) for d in self.ds)


def _pad_amounts(module: nn.modules.conv._ConvNd, nd: int) -> list[int]:
    """F.pad amounts (last dim first) equivalent to the module's padding."""
    rp = getattr(module, "_reversed_padding_repeated_twice", None)
    if rp is not None and len(rp) == 2 * nd:
        return [int(p) for p in rp]
    if module.padding == "valid":
        return [0] * (2 * nd)
    out = []
    for p in reversed(module.padding):
        out += [int(p), int(p)]
    return out


def _unfold2d(
    x: Tensor, pads: list[int], kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> Tensor:
    """Unfolded patches (n, C*k_h*k_w, L) of a 4-D input with symmetric zero padding ``pads`` = [w, w, h, h],
    in ``F.unfold`` order, read with ``as_strided`` (one copy; faster than ``F.unfold`` on CPU)."""
    if any(pads):
        x = F.pad(x, pads)
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    x = x.contiguous()
    n, C, H, W = x.shape
    oh = (H - dh * (kh - 1) - 1) // sh + 1
    ow = (W - dw * (kw - 1) - 1) // sw + 1
    s0, s1, s2, s3 = x.stride()
    u = x.as_strided((n, C, kh, kw, oh, ow), (s0, s1, dh * s2, dw * s3, sh * s2, sw * s3))
    return u.reshape(n, C * kh * kw, oh * ow)


def _conv_input_2d(x: Tensor, module: nn.modules.conv._ConvNd) -> tuple[Tensor, list[int]]:
    """The call's input as (n, C, H, W), pre-padded where the padding is not symmetric zeros, and the
    symmetric zero padding [w, w, h, h] still to apply."""
    nd = 1 if isinstance(module, nn.Conv1d) else 2
    pads = _pad_amounts(module, nd)
    if nd == 1:
        pads = pads + [0, 0]
    symmetric = pads[0] == pads[1] and pads[2] == pads[3]
    if any(pads) and (module.padding_mode != "zeros" or not symmetric):
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, pads[: 2 * nd], mode=mode)
        pads = [0, 0, 0, 0]
    if nd == 1:
        x = x.unsqueeze(2)
    return x, pads


def unfold_conv_input(x: Tensor, module: nn.modules.conv._ConvNd) -> Tensor:
    """Unfolded input patches ``U`` of a Conv1d/Conv2d call, (n, C_in*k_h*k_w, L), in ``F.unfold`` order
    (any stride, dilation, padding, padding mode)."""
    x2, pads = _conv_input_2d(x, module)
    f = ConvFactors(module, [x2], [x2.new_zeros(x2.shape[0], 1, 1, 1, 1)], pads, False, [])
    return _unfold2d(x2, pads, f.kernel, f.stride, f.dilation)


@register_grad_sampler(nn.Conv1d, nn.Conv2d)
def conv_factors(module: nn.modules.conv._ConvNd, calls: Sequence[Call]) -> Factors:
    """Conv as a Linear map on unfolded patches: ``g^W = sum_l d_l U_l^T``, ``g^b = sum_l d_l``.

    groups = 1 gives :class:`ConvFactors` (t = output position); groups > 1 is materialised per group.
    """
    nd = 1 if isinstance(module, nn.Conv1d) else 2
    weight, bias = trainable(module, "weight"), trainable(module, "bias")
    xs, ds, pads = [], [], None
    for c in calls:
        x = single_tensor_input(c)
        n, m = c.grad.shape[:2]
        if x.dim() != nd + 2 or x.shape[0] != n:
            raise Unsupported("unbatched convolution input")
        x2, pads = _conv_input_2d(x, module)
        xs.append(x2)
        g = c.grad
        ds.append(g.unsqueeze(3) if nd == 1 else g)  # (n, m, C_out, oh, ow)
    if weight is None:
        return DenseFactors(g=sum(d.sum((3, 4)) for d in ds), params=[bias])
    if module.groups == 1:
        return ConvFactors(module, xs, ds, pads, bias is not None, [weight] + ([bias] if bias is not None else []))
    f = ConvFactors(module, xs, ds, pads, False, [])
    n, m, T, c_out = f.d.shape
    G = module.groups
    ug = f.a.transpose(1, 2).reshape(n, G, -1, T)
    dg = f.d.transpose(2, 3).reshape(n, m, G, c_out // G, T)
    parts = [torch.einsum("nmgol,ngil->nmgoi", dg, ug).reshape(n, m, -1)]
    if bias is not None:
        parts.append(f.bias_grad())
    return DenseFactors(g=torch.cat(parts, 2), params=[weight] + ([bias] if bias is not None else []))

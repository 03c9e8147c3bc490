"""Per-layer per-sample gradient factors: the registry behind :mod:`lpntk.kernel`.

Modelled on Opacus's grad-sampler registry. A forward pass over a block of n samples records, for every
module that owns trainable parameters, each call's inputs ``a`` and output; one backward pass per cotangent
direction then gives the gradient ``delta`` of ``sum_i v_i . z_i`` with respect to each recorded output.
Because samples do not interact in eval mode, ``delta[i]`` is exactly sample i's output gradient
``J_out(x_i)^T v_i``, so every per-sample parameter gradient is a function of ``(a_i, delta_i)`` alone.

A handler in :data:`GRAD_SAMPLERS` maps ``(module, calls)`` to one of two factor types:

* :class:`OuterFactors` -- layers whose weight gradient is a sum of outer products over positions t
  (Linear: t runs over any extra sequence dims; Conv: t runs over output positions, ``a`` is the unfolded
  input patch), ``g_i^W = sum_t delta_{it} a_{it}^T`` and ``g_i^b = sum_t delta_{it}``. Two samples' inner
  product is ``sum_{t,t'} (a_it . a_jt' + 1[bias]) (delta_it . delta_jt')`` -- the "ghost" form, which never
  builds the P-dimensional gradient. The engine chooses per layer, by a FLOP estimate, between that form
  and materialising ``g`` (:meth:`OuterFactors.materialise`).
* :class:`DenseFactors` -- the per-sample gradient itself, ``g`` of shape (n, m, P_layer).

Every factor carries an extra axis m of cotangent directions per sample (m = 1 for a Gram of
``J(x_i)^T v_i``; m = K for eNTK blocks).

Modules with parameters that no handler knows go to :func:`generic_module_factors`, which re-runs the
module per sample under ``torch.func`` (``vmap`` of ``vjp`` of ``functional_call``) with the captured inputs
and output gradients; parameters no recorded call can reach go to :func:`whole_model_factors`, the same
thing over the whole model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

__all__ = [
    "Call",
    "OuterFactors",
    "ConvFactors",
    "DenseFactors",
    "Unsupported",
    "GRAD_SAMPLERS",
    "register_grad_sampler",
    "generic_module_factors",
    "whole_model_factors",
    "unfold_conv_input",
]


CONV_WEIGHT_GRAD = "auto"
"""How :class:`ConvFactors` materialises per-sample conv weight gradients: "auto" (by a measured rule),
"grouped" (grouped-convolution backward) or "unfold" (unfold + batched matmul). Tests set it to check both."""


class Unsupported(Exception):
    """Raised by a structured handler for a call it cannot express; the engine then uses the generic path."""


@dataclass
class Call:
    """One recorded call of a module: positional and keyword inputs, output, and output gradient.

    ``grad`` has shape (n, m, *output.shape[1:]): the gradient of ``sum_i v_{i,a} . z_i`` w.r.t. the output,
    for each of the m cotangent directions a.
    """

    args: tuple
    kwargs: dict
    output: Tensor | None
    out_version: int
    in_versions: tuple[int, ...]
    grad: Tensor | None = None


class OuterFactors:
    """Per-sample gradient ``g_i = [sum_t d_{it} a_{it}^T, sum_t d_{it}]`` of a weight (and bias).

    ``a``: (n, T, d_in) inputs per position; ``d``: (n, m, T, d_out) output gradients per direction and
    position. ``params`` are the trainable tensors in the order their gradients are flattened: weight
    (viewed as d_out x d_in) then bias (d_out) when ``bias`` is true.
    """

    def __init__(self, a: Tensor, d: Tensor, bias: bool, params: list[nn.Parameter]):
        self._a, self._d, self.bias, self.params = a, d, bias, params

    @property
    def a(self) -> Tensor:
        return self._a

    @property
    def d(self) -> Tensor:
        return self._d

    @property
    def n(self) -> int:
        return self._d.shape[0]

    @property
    def m(self) -> int:
        return self._d.shape[1]

    @property
    def T(self) -> int:
        return self._a.shape[1]

    @property
    def d_in(self) -> int:
        return self._a.shape[2]

    @property
    def d_out(self) -> int:
        return self._d.shape[3]

    def rows(self, s: int, e: int) -> OuterFactors:
        return OuterFactors(self._a[s:e], self._d[s:e], self.bias, self.params)

    def weight_grad(self) -> Tensor:
        """``sum_t d_t a_t^T`` per sample and direction, (n, m, d_out*d_in)."""
        n, m, T, d_out = self.d.shape
        dm = self.d.transpose(2, 3).reshape(n, m * d_out, T)
        return torch.bmm(dm, self.a).reshape(n, m, d_out * self.d_in)

    def bias_grad(self) -> Tensor:
        return self.d.sum(2)

    def materialise(self) -> Tensor:
        """The per-sample gradients, (n, m, d_out*d_in [+ d_out]); cost n*m*T*d_in*d_out."""
        gw = self.weight_grad()
        return torch.cat([gw, self.bias_grad()], dim=2) if self.bias else gw

    def materialise_cost(self, pairs_per_sample: float) -> float:
        """Multiply-adds to build g and take ``pairs_per_sample`` inner products per sample."""
        p = (self.d_in + self.bias) * self.d_out
        return self.m * self.T * p + pairs_per_sample * self.m * self.m * p

    def factored_cost(self, pairs_per_sample: float) -> float:
        """Multiply-adds of the pairwise (ghost) form per ``pairs_per_sample`` pairs per sample."""
        per_pair = self.d_in + self.m * self.m * (self.d_out + 1)
        return pairs_per_sample * self.T * self.T * per_pair

    def squared_norms(self) -> Tensor:
        """Diagonal ``||g_{ia}||^2``, (n, m), by whichever of the two forms costs less."""
        if self.T == 1:
            aa = self.a[:, 0].pow(2).sum(-1) + float(self.bias)
            return aa[:, None] * self.d[:, :, 0].pow(2).sum(-1)
        if self.materialise_cost(1.0) <= self.factored_cost(1.0):
            return self.materialise().pow(2).sum(-1)
        a = self.a
        aa = torch.bmm(a, a.transpose(1, 2))  # (n, T, T)
        if self.bias:
            aa = aa + 1.0
        n, m, T, d_out = self.d.shape
        dr = self.d.reshape(n * m, T, d_out)
        dd = torch.bmm(dr, dr.transpose(1, 2))
        return (dd.view(n, m, T, T) * aa[:, None]).sum((2, 3))


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


@dataclass
class DenseFactors:
    """Materialised per-sample gradients ``g`` (n, m, P_layer) of ``params`` (flattened, concatenated)."""

    g: Tensor
    params: list[nn.Parameter] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.g.shape[0]

    @property
    def m(self) -> int:
        return self.g.shape[1]

    def rows(self, s: int, e: int) -> DenseFactors:
        return DenseFactors(self.g[s:e], self.params)

    def materialise(self) -> Tensor:
        return self.g

    def squared_norms(self) -> Tensor:
        return self.g.pow(2).sum(-1)


Factors = OuterFactors | DenseFactors
Handler = Callable[[nn.Module, Sequence[Call]], Factors]

GRAD_SAMPLERS: dict[type, Handler] = {}


def register_grad_sampler(*types: type) -> Callable[[Handler], Handler]:
    """Decorator registering a handler ``(module, calls) -> factors`` for exact module types."""

    def deco(fn: Handler) -> Handler:
        for t in types:
            GRAD_SAMPLERS[t] = fn
        return fn

    return deco


def _trainable(module: nn.Module, name: str) -> nn.Parameter | None:
    p = getattr(module, name, None)
    return p if isinstance(p, nn.Parameter) and p.requires_grad else None


def _only_tensor_input(call: Call) -> Tensor:
    if len(call.args) != 1 or call.kwargs or not isinstance(call.args[0], Tensor):
        raise Unsupported("expected a single tensor input")
    return call.args[0]


def _outer_or_bias(weight: nn.Parameter | None, bias: nn.Parameter | None, a: Tensor, d: Tensor) -> Factors:
    if weight is not None:
        return OuterFactors(a=a, d=d, bias=bias is not None, params=[weight] + ([bias] if bias is not None else []))
    return DenseFactors(g=d.sum(2), params=[bias])


@register_grad_sampler(nn.Linear)
def linear_factors(module: nn.Linear, calls: Sequence[Call]) -> Factors:
    """Linear ``z = W a + b`` (any leading sequence dims): ``g^W = sum_t d_t a_t^T``, ``g^b = sum_t d_t``."""
    a_list, d_list = [], []
    for c in calls:
        x = _only_tensor_input(c)
        n, m = c.grad.shape[:2]
        if x.dim() < 2 or x.shape[0] != n:
            raise Unsupported("Linear input without a batch dimension")
        a_list.append(x.reshape(n, -1, module.in_features))
        d_list.append(c.grad.reshape(n, m, -1, module.out_features))
    a = a_list[0] if len(a_list) == 1 else torch.cat(a_list, 1)
    d = d_list[0] if len(d_list) == 1 else torch.cat(d_list, 2)
    return _outer_or_bias(_trainable(module, "weight"), _trainable(module, "bias"), a, d)


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
    weight, bias = _trainable(module, "weight"), _trainable(module, "bias")
    xs, ds, pads = [], [], None
    for c in calls:
        x = _only_tensor_input(c)
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
        x = _only_tensor_input(c)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        xhat = (x - module.running_mean.view(shape)) / torch.sqrt(module.running_var.view(shape) + module.eps)
        d = c.grad
        if x.dim() == 2:  # (n, C): no positions to sum over
            xhat, d = xhat.unsqueeze(-1), d.unsqueeze(-1)
        red = tuple(range(3, d.dim()))
        gs.append(_affine_factors(_trainable(module, "weight"), _trainable(module, "bias"), xhat, d, red))
    return DenseFactors(g=sum(f.g for f in gs), params=gs[0].params)


@register_grad_sampler(nn.LayerNorm)
def layernorm_factors(module: nn.LayerNorm, calls: Sequence[Call]) -> Factors:
    """LayerNorm ``gamma * xhat + beta`` over the last dims: sum ``d * xhat`` and ``d`` over leading dims."""
    k = len(module.normalized_shape)
    gs = []
    for c in calls:
        x = _only_tensor_input(c)
        dims = tuple(range(x.dim() - k, x.dim()))
        mu = x.mean(dims, keepdim=True)
        var = x.var(dims, keepdim=True, unbiased=False)
        xhat = (x - mu) / torch.sqrt(var + module.eps)
        n, m = c.grad.shape[:2]
        gr = c.grad.reshape(n, m, -1, *module.normalized_shape)
        xh = xhat.reshape(n, -1, *module.normalized_shape)
        gs.append(_affine_factors(_trainable(module, "weight"), _trainable(module, "bias"), xh, gr, (2,)))
    return DenseFactors(g=sum(f.g for f in gs), params=gs[0].params)


def generic_module_factors(module: nn.Module, calls: Sequence[Call], params: dict[str, nn.Parameter]) -> DenseFactors:
    """Fallback for any module: per-sample gradients of its direct parameters by ``torch.func``.

    For each call and sample i, ``g_{ia} = vjp(p -> module(p; inputs_i), delta_{ia})`` with the module
    re-run on a batch of one (``vmap`` over samples of ``vmap`` over the m directions); summed over calls.
    Inputs whose leading size is n are treated as per-sample, everything else as constant.
    """
    names = list(params)
    primals = {k: p.detach() for k, p in params.items()}
    total: Tensor | None = None
    for c in calls:
        n = c.grad.shape[0]
        leaves, spec = tree_flatten((c.args, c.kwargs))
        leaves = [t.detach() if isinstance(t, Tensor) else t for t in leaves]
        idx = [i for i, t in enumerate(leaves) if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == n]
        batched = [leaves[i] for i in idx]

        def per_sample(b_i: list[Tensor], d_i: Tensor, leaves=leaves, idx=idx, spec=spec) -> dict[str, Tensor]:
            def f(p: dict[str, Tensor]) -> Tensor:
                lv = list(leaves)
                for k, i in enumerate(idx):
                    lv[i] = b_i[k].unsqueeze(0)
                args, kwargs = tree_unflatten(lv, spec)
                return functional_call(module, p, tuple(args), kwargs).squeeze(0)

            _, fn = vjp(f, primals)
            return vmap(fn)(d_i)[0]

        g = vmap(per_sample)(batched, c.grad)
        flat = torch.cat([g[k].reshape(n, c.grad.shape[1], -1) for k in names], 2)
        total = flat if total is None else total + flat
    return DenseFactors(g=total, params=[params[k] for k in names])


def whole_model_factors(model: nn.Module, x: Tensor, v: Tensor, params: dict[str, nn.Parameter]) -> DenseFactors:
    """Fallback for parameters no recorded call reaches (used directly, tied across modules, ...):
    ``g_{ia} = J_p(x_i)^T v_{ia}`` by ``vmap`` over samples of ``vmap`` over directions of a ``vjp`` of
    ``functional_call(model, p, x_i[None])``. ``v``: (n, m, K)."""
    names = list(params)
    primals = {k: p.detach() for k, p in params.items()}

    def per_sample(x_i: Tensor, v_i: Tensor) -> dict[str, Tensor]:
        _, fn = vjp(lambda p: functional_call(model, p, (x_i.unsqueeze(0),)).squeeze(0), primals)
        return vmap(fn)(v_i)[0]

    g = vmap(per_sample)(x, v)
    n, m = v.shape[:2]
    return DenseFactors(g=torch.cat([g[k].reshape(n, m, -1) for k in names], 2), params=[params[k] for k in names])

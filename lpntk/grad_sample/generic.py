"""Generic fallbacks by torch.func, for parameterised modules no handler knows and parameters no call reaches.

Per module (:func:`generic_module_factors`): with the recorded call's inputs and output gradients, each sample i
and direction a gives

    g_{ia} = vjp(p -> module(p; inputs_i), delta_{ia}),

the module re-run on a batch of one (``vmap`` over samples of ``vmap`` over the m directions of a ``vjp`` of
``functional_call``), summed over calls. Per model (:func:`whole_model_factors`), for parameters tied across
modules, used without calling their module, or of modules with non-tensor outputs:

    g_{ia} = J_p(x_i)^T v_{ia},   by the same construction over ``functional_call(model, p, x_i[None])``.

Both return :class:`~lpntk.grad_sample.registry.DenseFactors`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

from .registry import Call, DenseFactors

__all__ = ["generic_module_factors", "whole_model_factors"]


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

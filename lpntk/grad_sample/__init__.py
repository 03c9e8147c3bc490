"""Per-layer per-sample gradients: the registry behind :mod:`lpntk.kernel` (modelled on Opacus's grad samplers).

The kernel engine records, for every module that owns trainable parameters, each call's inputs and the gradient
delta_{ia} of sum_i v_{ia} . z_i with respect to its output. In eval mode samples do not interact, so a layer's
per-sample gradient g_{ia} = J_w(x_i)^T v_{ia} is a function of sample i's inputs and delta_{ia} alone; a
handler computes it for one module type:

* :mod:`~lpntk.grad_sample.registry` -- the factor types (:class:`OuterFactors`: g^W = sum_t delta_t a_t^T kept
  as (a, delta), whose inner products need no P-dimensional vector; :class:`DenseFactors`: g itself), the
  recorded :class:`Call`, :class:`Unsupported`, :data:`GRAD_SAMPLERS` and :func:`register_grad_sampler`;
* :mod:`~lpntk.grad_sample.linear` -- ``nn.Linear``;
* :mod:`~lpntk.grad_sample.conv` -- ``nn.Conv1d``, ``nn.Conv2d`` (:class:`ConvFactors`, the unfold helpers,
  the ``CONV_WEIGHT_GRAD`` switch);
* :mod:`~lpntk.grad_sample.norm` -- eval-mode ``nn.BatchNorm1d/2d/3d`` and ``nn.LayerNorm``;
* :mod:`~lpntk.grad_sample.generic` -- the torch.func fallbacks for any other module
  (:func:`generic_module_factors`) and for parameters no recorded call reaches (:func:`whole_model_factors`).

Registering a layer of your own. A handler maps ``(module, calls)`` to factors; ``call.args`` / ``call.kwargs``
are the call's inputs and ``call.grad`` (n, m, *output.shape[1:]) its output gradients for the m cotangent
directions. For a diagonal scaling ``y = x * w + b`` over the last dim, g^w = sum_pos delta * x, g^b = sum_pos
delta::

    import torch
    from torch import nn
    import lpntk
    from lpntk.grad_sample import DenseFactors


    class DiagScale(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.w, self.b = nn.Parameter(torch.ones(d)), nn.Parameter(torch.zeros(d))

        def forward(self, x):
            return x * self.w + self.b


    @lpntk.register_grad_sampler(DiagScale)
    def diag_scale_factors(module, calls):
        g = 0
        for c in calls:
            x, d = c.args[0], c.grad  # x (n, ..., d), d (n, m, ..., d)
            n, m = d.shape[:2]
            x, d = x.reshape(n, 1, -1, x.shape[-1]), d.reshape(n, m, -1, d.shape[-1])
            g = g + torch.cat([(d * x).sum(2), d.sum(2)], dim=2)  # (n, m, 2d): [g^w, g^b]
        return DenseFactors(g, params=[module.w, module.b])

The handler must cover every direct trainable parameter of the module, in ``params`` in the order of the
flattened gradient, and sum over the module's calls. Without a handler such a module still works, through the
slower :func:`generic_module_factors`. A handler may raise :class:`Unsupported` for a call it cannot express;
the engine then uses the generic path for that module.
"""

from __future__ import annotations

from . import conv, generic, linear, norm, registry  # noqa: F401 -- importing the layer modules registers them
from .conv import ConvFactors, unfold_conv_input
from .generic import generic_module_factors, whole_model_factors
from .registry import (
    GRAD_SAMPLERS,
    Call,
    DenseFactors,
    Factors,
    OuterFactors,
    Unsupported,
    register_grad_sampler,
)

__all__ = [
    "Call",
    "OuterFactors",
    "ConvFactors",
    "DenseFactors",
    "Factors",
    "Unsupported",
    "GRAD_SAMPLERS",
    "register_grad_sampler",
    "generic_module_factors",
    "whole_model_factors",
    "unfold_conv_input",
]

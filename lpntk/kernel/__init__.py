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

Method, one private module per step:

* ``_engine`` -- one forward pass over a block of samples records every parameterised layer's inputs a; one
  backward pass of sum_i v_i . z_i gives every layer's output gradients delta_i at once (samples do not interact
  in eval mode), and the layer's handler in :mod:`lpntk.grad_sample` turns (a_i, delta_i) into factors of its
  per-sample gradient (Linear: g_i = delta_i a_i^T);
* ``_packing`` -- per layer, the Gram is computed from the factors ("ghost" form (a_i . a_j)(delta_i . delta_j),
  summed over positions for sequences and convolutions) or from the materialised per-sample gradient, whichever
  costs fewer FLOPs; a chunk's factors are packed (materialised layers side by side in one matrix, factored
  layers as (a, delta)) and the Gram is accumulated panel by panel with GEMMs, one triangle for a symmetric Gram;
* ``_tiling`` -- memory: the packed factors held at once are bounded by ``max_memory_bytes``; when a set does not
  fit, its Gram is computed over pairs of chunks, recomputing the column chunk's factors per row chunk;
* ``_sketch`` -- ``mode="sketch"``: a seeded CountSketch of g instead of its factors (unbiased);
* ``_gram`` -- the driver joining the three, with the table of approximations by ``mode`` (:data:`MODES`:
  ``exact``, ``sketch``) and the options every public kernel takes (:class:`KernelOptions`); ``_kernels`` -- the
  public kernels above;
* ``_linearisation`` -- the cross-entropy gradients grad_w L and softmax(z) - e_y, and J(x) u by forward-mode AD.

Precision: computation and accumulation in the model's floating dtype (float32 by default; float64 when the
model is float64 or ``dtype=torch.float64`` is given, which casts a copy of the model and the inputs). TF32
is switched off for the duration of every call on CUDA and restored afterwards (:func:`exact_matmul`).

Assumptions: each sample's logits depend on that sample only, in eval mode (true for Linear, Conv, pooling,
pointwise activations, residual additions, dropout, eval-mode BatchNorm with running statistics, LayerNorm,
GroupNorm, ...). A BatchNorm in train mode or without running statistics mixes samples: ValueError. A module
called several times (shared module) has its calls summed (extra positions of one outer-product sum);
parameters tied across modules, used without calling their module, or of modules with non-tensor outputs go
through a whole-model torch.func path.
"""

from __future__ import annotations

from ._engine import exact_matmul
from ._gram import MODES, register_mode
from ._kernels import (
    KernelOptions,
    entk_blocks,
    gradient_gram,
    lpntk_features,
    lpntk_gram,
    per_sample_grad_norms,
    per_sample_gradients,
    pntk_gram,
    sign_vectors,
)
from ._linearisation import LossGradients, cross_entropy_gradients, jvp_logits, logit_loss_gradient, loss_gradient

__all__ = [
    "KernelOptions",
    "MODES",
    "register_mode",
    "sign_vectors",
    "gradient_gram",
    "lpntk_gram",
    "pntk_gram",
    "entk_blocks",
    "lpntk_features",
    "per_sample_gradients",
    "per_sample_grad_norms",
    "cross_entropy_gradients",
    "LossGradients",
    "logit_loss_gradient",
    "loss_gradient",
    "jvp_logits",
    "exact_matmul",
]

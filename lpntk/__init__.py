"""lpNTK: the labelled pseudo neural tangent kernel (Guo, Ren, Albrecht, Smith; ICLR 2024).

For labelled samples (x, y), (x', y') and a K-class model with logits z(x; w),

    kappa((x, y), (x', y')) = (1/K) s(y)^T J(x) J(x')^T s(y'),   J = dz/dw,  s(y) = +1 at y, -1 elsewhere,

the inner product of the per-sample vectors phi(x, y) = J(x)^T s(y) / sqrt(K). Quick use::

    import lpntk
    gram = lpntk.lpntk_gram(model, x, y)          # (N, N), exact

A layer type of your own gets its per-sample gradients from a handler registered with
:func:`register_grad_sampler` (:mod:`lpntk.grad_sample`), else from a generic torch.func fallback.

The package also holds everything the workflow needs to regenerate the paper's experiments: data, models,
seeded training with per-sample dynamics, MLflow tracking, and one module per use case -- relations and
difficulty (use case 1), forgetting (use case 2), scores, clustering and pruning (use case 3). Their main
functions are re-exported here; the modules hold the rest.
"""

from importlib.metadata import PackageNotFoundError, version

from . import clustering, difficulty, forgetting, pruning, relations, scores
from .clustering import farthest_point_clustering
from .data import DataNotFoundError, PreparedData, Split, load_prepared, prepare_dataset
from .difficulty import select_sets, target_l2_curves
from .forgetting import (
    first_order_logit_change,
    forgetting_events,
    predicted_forgetting,
    predicted_logit_changes,
    run_forgetting,
)
from .grad_sample import register_grad_sampler
from .kernel import (
    entk_blocks,
    exact_matmul,
    gradient_gram,
    jvp_logits,
    logit_loss_gradient,
    loss_gradient,
    lpntk_features,
    lpntk_gram,
    per_sample_grad_norms,
    per_sample_gradients,
    pntk_gram,
    sign_vectors,
)
from .models import build_model, count_parameters
from .pruning import remove_small_clusters, select_heads, select_top
from .relations import cosine, redundant_mask, relation_shares
from .scores import score_table
from .train import Recipe, TrainResult, presentation_forgetting, seed_everything, train_model

try:
    __version__ = version("lpntk")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = [
    "lpntk_gram",
    "lpntk_features",
    "pntk_gram",
    "entk_blocks",
    "gradient_gram",
    "per_sample_gradients",
    "per_sample_grad_norms",
    "sign_vectors",
    "loss_gradient",
    "jvp_logits",
    "first_order_logit_change",
    "logit_loss_gradient",
    "exact_matmul",
    "register_grad_sampler",
    "relation_shares",
    "redundant_mask",
    "cosine",
    "select_sets",
    "target_l2_curves",
    "predicted_logit_changes",
    "forgetting_events",
    "predicted_forgetting",
    "run_forgetting",
    "score_table",
    "farthest_point_clustering",
    "select_heads",
    "select_top",
    "remove_small_clusters",
    "relations",
    "difficulty",
    "forgetting",
    "scores",
    "clustering",
    "pruning",
    "build_model",
    "count_parameters",
    "Split",
    "PreparedData",
    "DataNotFoundError",
    "prepare_dataset",
    "load_prepared",
    "Recipe",
    "TrainResult",
    "train_model",
    "seed_everything",
    "presentation_forgetting",
]

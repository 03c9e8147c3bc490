"""lpNTK: the labelled pseudo neural tangent kernel (Guo, Ren, Albrecht, Smith; ICLR 2024).

For labelled samples (x, y), (x', y') and a K-class model with logits z(x; w),

    kappa((x, y), (x', y')) = (1/K) s(y)^T J(x) J(x')^T s(y'),   J = dz/dw,  s(y) = +1 at y, -1 elsewhere,

the inner product of the per-sample vectors phi(x, y) = J(x)^T s(y) / sqrt(K). Quick use::

    import lpntk
    gram = lpntk.lpntk_gram(model, x, y)          # (N, N), exact

The package also holds everything the workflow needs to regenerate the paper's experiments: data, models,
seeded training with per-sample dynamics, MLflow tracking, and one module per use case -- relations and
difficulty (use case 1), forgetting (use case 2), scores, clustering and pruning (use case 3). Their main
functions are re-exported here.

Submodules load on first use (PEP 562): ``import lpntk`` is cheap, and a workflow job that only writes a table
never imports torch. ``lpntk.lpntk_gram`` (or ``from lpntk import lpntk_gram``) imports :mod:`lpntk.kernel` then.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("lpntk")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

#: public name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    # the kernel (lpntk.kernel)
    **dict.fromkeys(
        (
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
            "logit_loss_gradient",
            "exact_matmul",
            "KernelOptions",
        ),
        "kernel",
    ),
    # use case 1
    **dict.fromkeys(("relation_shares", "redundant_mask", "cosine"), "relations"),
    **dict.fromkeys(("select_sets", "target_l2_curves"), "difficulty"),
    # use case 2
    **dict.fromkeys(
        (
            "first_order_logit_change",
            "predicted_logit_changes",
            "forgetting_events",
            "predicted_forgetting",
            "run_forgetting",
        ),
        "forgetting",
    ),
    # use case 3
    "score_table": "scores",
    "farthest_point_clustering": "clustering",
    **dict.fromkeys(("select_heads", "select_top", "remove_small_clusters"), "pruning"),
    # a layer type of one's own for the kernel engine; a pruning method, score or model of one's own
    "register_grad_sampler": "grad_sample",
    **dict.fromkeys(("register_method", "PruningInputs"), "pruning"),
    "register_score": "scores",
    "register_model": "models",
    # foundation
    **dict.fromkeys(("build_model", "count_parameters"), "models"),
    **dict.fromkeys(("Split", "PreparedData", "DataNotFoundError", "prepare_dataset", "load_prepared"), "data"),
    **dict.fromkeys(("Recipe", "TrainResult", "train_model", "seed_everything", "presentation_forgetting"), "train"),
}
_SUBMODULES = ("relations", "difficulty", "forgetting", "scores", "clustering", "pruning")

__all__ = [*_EXPORTS, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'lpntk' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from . import clustering, difficulty, forgetting, pruning, relations, scores  # noqa: F401
    from .clustering import farthest_point_clustering  # noqa: F401
    from .data import DataNotFoundError, PreparedData, Split, load_prepared, prepare_dataset  # noqa: F401
    from .difficulty import select_sets, target_l2_curves  # noqa: F401
    from .forgetting import (  # noqa: F401
        first_order_logit_change,
        forgetting_events,
        predicted_forgetting,
        predicted_logit_changes,
        run_forgetting,
    )
    from .grad_sample import register_grad_sampler  # noqa: F401
    from .kernel import (  # noqa: F401
        KernelOptions,
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
    from .models import build_model, count_parameters, register_model  # noqa: F401
    from .pruning import PruningInputs, register_method, remove_small_clusters, select_heads, select_top  # noqa: F401
    from .relations import cosine, redundant_mask, relation_shares  # noqa: F401
    from .scores import register_score, score_table  # noqa: F401
    from .train import Recipe, TrainResult, presentation_forgetting, seed_everything, train_model  # noqa: F401

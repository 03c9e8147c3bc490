"""The paper's own numbers, in one place: the authors' slides and the official code's published figures.

Every table of the workflow prints these beside ours where the dataset is one the authors report (MNIST, CIFAR-10),
and the claims section compares against them. Sources: ``docs/paper/seed-slides.txt`` (the slides, "Use Case 2"
and "Experiment Results on Pruning Image Training Sets") and ``docs/paper/paper-protocols.md`` §5 (the official
code's statistics notebook). Plain data: importing this module imports nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "FORGETTING",
    "PRUNING",
    "OFFICIAL_MNIST_RELATIONS",
    "slides_dataset",
    "forgetting_reference",
    "pruning_reference",
]

#: Use case 2 (slides): forgetting events predicted to first order, mean and std over runs in %, per torchvision
#: dataset name and predictor. The slides averaged per step (the official code's ``stepwise`` scoring).
FORGETTING: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    "MNIST": {
        "lpntk": {"precision": (42.72, 6.55), "recall": (59.02, 7.49), "f1": (49.54, 6.99)},
        "entk": {"precision": (95.56, 8.14), "recall": (86.67, 13.67), "f1": (89.96, 7.10)},
    },
    "CIFAR10": {
        "lpntk": {"precision": (49.47, 7.06), "recall": (69.50, 7.49), "f1": (57.76, 7.36)},
        "entk": {"precision": (96.99, 3.99), "recall": (98.99, 1.61), "f1": (97.87, 2.08)},
    },
}

#: Use case 3 (slides): test accuracy in % after pruning, mean and std over seeds; the kept fraction is not stated.
PRUNING: dict[str, dict[str, tuple[float, float]]] = {
    "MNIST": {
        "full": (99.31, 0.03),
        "lpntk": (99.37, 0.04),
        "el2n": (99.33, 0.06),
        "grand": (99.28, 0.05),
        "forgetting": (99.26, 0.06),
    },
    "CIFAR10": {
        "full": (93.28, 0.06),
        "lpntk": (93.55, 0.12),
        "el2n": (93.32, 0.07),
        "grand": (92.87, 0.13),
        "forgetting": (92.64, 0.22),
    },
}

#: The official code's statistics notebook (MNIST, LeNet best checkpoint, all pairs i <= j of the 60k training set,
#: same- and cross-class; paper-protocols §5): shares of the raw-value rule K*kappa vs +-0.1, and the self-max share
#: (a sample whose self-lpNTK exceeds its lpNTK with every sample of larger index).
OFFICIAL_MNIST_RELATIONS: dict[str, float] = {
    "positive": 0.997425,
    "negative": 0.002573,
    "zero": 1.40e-6,
    "selfmax_larger_index": 0.8829 / 1.8829,
}


def slides_dataset(cfg: Mapping[str, Any]) -> str | None:
    """The key of a dataset block in the slides' tables (``MNIST``, ``CIFAR10``), or None: torchvision sources only."""
    name = str(cfg.get("name"))
    if cfg.get("source") == "torchvision" and (name in FORGETTING or name in PRUNING):
        return name
    return None


def forgetting_reference(cfg: Mapping[str, Any]) -> dict[str, dict[str, tuple[float, float]]] | None:
    """The slides' forgetting numbers for a dataset block, else None."""
    key = slides_dataset(cfg)
    return FORGETTING.get(key) if key else None


def pruning_reference(cfg: Mapping[str, Any]) -> dict[str, tuple[float, float]] | None:
    """The slides' pruning numbers for a dataset block, else None."""
    key = slides_dataset(cfg)
    return PRUNING.get(key) if key else None

"""Forgetting events, their first-order prediction rule, and the scores of predicted against true events.

Forgetting event at step t (paper-protocols §1.7): a sample x_o of the previous minibatch B_{t-1} that w_{t-1}
classifies correctly and w_t misclassifies,

    argmax z(x_o; w_{t-1}) = y_o   and   argmax z(x_o; w_t) != y_o             (:func:`forgetting_events`).

Predicted forgetting for a predicted logit change Delta z (:func:`predicted_forgetting`): argmax z(x_o) = y_o and
argmax (z(x_o) + Delta z(x_o)) != y_o (``space="logit"``), or, as the official code, argmax (q + A Delta z) != y_o
with q = softmax(z), A = diag(q) - q q^T (``space="probability"``; A Delta z = q * (Delta z - q . Delta z) is
:func:`probability_change`).

Scores of predictions against events (:func:`confusion_counts` per step): pooled over a window, precision =
sum TP / sum (TP + FP), recall = sum TP / sum (TP + FN), F1 = 2 sum TP / sum (2 TP + FP + FN), NaN for an empty
denominator (:func:`pooled_scores`); the official per-step averaging P_t = TP/(TP+FP) (1 if nothing predicted),
R_t = TP/(TP+FN) (1 if nothing forgotten), P, R their means, F1 = 2PR/(P+R) (:func:`stepwise_scores`). The
official EL2N approximation error mean_o | ||q^_o - e_y|| / ||q_o - e_y|| - 1 | (:func:`el2n_approximation_error`).

The window's scores (pooled, stepwise, the Matthews correlation, the trivial predictors) are numpy-only and live in
:mod:`lpntk.forgetting._scores`; ``pooled_scores`` and ``stepwise_scores`` are importable from here too.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ._scores import pooled_scores, stepwise_scores

__all__ = [
    "probability_change",
    "forgetting_events",
    "predicted_forgetting",
    "confusion_counts",
    "pooled_scores",
    "stepwise_scores",
    "el2n_approximation_error",
]


def probability_change(z: Tensor, dz: Tensor) -> Tensor:
    """First-order change of softmax(z) for a logit change dz: Delta q = A dz = q * (dz - q . dz),
    A = diag(q) - q q^T (the official code's form, paper-protocols §1.1)."""
    q = torch.softmax(z, dim=1)
    return q * (dz - (q * dz).sum(dim=1, keepdim=True))


def forgetting_events(z_before: Tensor, z_after: Tensor, y: Tensor) -> Tensor:
    """True forgetting: argmax z_before = y and argmax z_after != y, (N,) bool."""
    return (z_before.argmax(1) == y) & (z_after.argmax(1) != y)


def predicted_forgetting(z_before: Tensor, dz: Tensor, y: Tensor, space: str = "logit") -> Tensor:
    """Predicted forgetting: argmax z = y and argmax (z + dz) != y (``space="logit"``), or
    argmax (softmax(z) + A dz) != y (``space="probability"``, the official code), (N,) bool."""
    if space == "logit":
        after = z_before + dz
    elif space == "probability":
        after = torch.softmax(z_before, dim=1) + probability_change(z_before, dz)
    else:
        raise ValueError(f"space: expected 'logit' or 'probability', got {space!r}")
    return (z_before.argmax(1) == y) & (after.argmax(1) != y)


def confusion_counts(true: Tensor | np.ndarray, pred: Tensor | np.ndarray) -> dict[str, int]:
    """TP, FP, TN, FN of boolean predictions ``pred`` against boolean truth ``true``."""
    t = np.asarray(true.cpu() if isinstance(true, Tensor) else true, dtype=bool)
    p = np.asarray(pred.cpu() if isinstance(pred, Tensor) else pred, dtype=bool)
    return {"tp": int((t & p).sum()), "fp": int((~t & p).sum()), "tn": int((~t & ~p).sum()), "fn": int((t & ~p).sum())}


def el2n_approximation_error(q_pred: Tensor, q_true: Tensor, y: Tensor) -> float:
    """The official code's EL2N approximation error: mean_o | ||q^_o - e_y|| / ||q_t,o - e_y|| - 1 |
    (predicted vs actual prediction after the step; the denominator is clamped at 1e-12)."""
    e = F.one_hot(y, q_true.shape[1]).to(q_true.dtype)
    ratio = (q_pred - e).norm(dim=1) / (q_true - e).norm(dim=1).clamp_min(1e-12)
    return float((ratio - 1).abs().mean())

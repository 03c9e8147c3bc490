"""Forgetting events and their first-order prediction with eNTK, lpNTK and pNTK (use case 2; paper Eq. 1, Table 1).

Setting (paper-protocols §1.1, §1.7, §4.3). Minibatch SGD updates w_{t-1} -> w_t on the minibatch B_t with the
learning rate eta_t. A **forgetting event** at step t is a sample x_o of the *previous* minibatch B_{t-1} that
w_{t-1} classifies correctly and w_t misclassifies:

    argmax z(x_o; w_{t-1}) = y_o   and   argmax z(x_o; w_t) != y_o.

**First-order prediction** (paper Eq. 1, logit form). For a plain SGD step w_t = w_{t-1} - eta_t grad_w L_{B_t},
with L_{B_t} = mean_{u in B_t} CE(z(x_u), y_u),

    Delta z(x_o) ~ -eta_t J(x_o) grad_w L_{B_t} = -eta_t mean_{u in B_t} K(x_o, x_u) grad_z L(x_u),

with J = dz/dw at w_{t-1}, K(x_o, x_u) = J(x_o) J(x_u)^T the K x K eNTK block and
grad_z L(x_u) = softmax(z_u) - e_{y_u}.
The eNTK predictor is computed matrix-free, as one Jacobian-vector product of the batch gradient (no block is
formed). The **lpNTK** predictor replaces each block by kappa((x_o, y_o), (x_u, y_u)) I_K with
kappa = (1/K) s(y_o)^T K(x_o, x_u) s(y_u) (the 1/K keeps kappa on the scale of K's diagonal, paper-protocols §1.4,
§7 A4); the **pNTK** predictor likewise with (1/K) 1^T K(x_o, x_u) 1. Both need only the N_o x N_u Gram.
``lpntk_raw`` and ``pntk_raw`` use the official code's kernels without the 1/K (c = 1, §1.3): K times larger
predicted changes; the constant is irrelevant to rankings but not to Eq. 1.
A fourth predictor, ``entk_update``, is the linearisation along the *actual* parameter update,
Delta z(x_o) ~ J(x_o) (w_t - w_{t-1}); for plain SGD without dropout it equals the eNTK predictor up to round-off,
with momentum / weight decay / dropout it isolates the error of linearising from the error of Eq. 1 ignoring
them (the official code ignored momentum and weight decay, paper-protocols §4.3 item 5).

A sample is **predicted forgotten** when argmax z(x_o) = y_o and argmax (z(x_o) + Delta z(x_o)) != y_o
(logit space). The official code worked in probability space: q^ = q + A(x_o) Delta z with
A = diag(q) - q q^T (``space="probability"``; every run judges each predictor in both, the probability space's under
the predictor's name with ``_prob``). Both are first-order expansions of softmax(z + Delta z): for two
classes a, b the logit test is z_a - z_b + Delta z_a - Delta z_b > 0 and the probability test is
z_a - z_b + log(1 + Delta z_a - q.Delta z) - log(1 + Delta z_b - q.Delta z) > 0, the same to first order in Delta z;
they differ at second order, and the probability form breaks down when |Delta z| is not small (q^ can leave
[0, 1]). The logit form is the exact argmax of the first-order logits; the number of samples on which the two forms
disagree is recorded per step.

**Scores.** Per step the confusion counts TP, FP, TN, FN of the predicted against the true events over B_{t-1}.
Pooled over a window: precision = sum TP / sum (TP + FP), recall = sum TP / sum (TP + FN),
F1 = 2 sum TP / sum (2 TP + FP + FN); an empty denominator gives NaN (undefined; e.g. recall of a window without
true events). The official code's per-step averaging (labelled ``stepwise``): per step P_t = TP/(TP+FP), or 1 when
nothing is predicted; R_t = TP/(TP+FN), or 1 when nothing is forgotten; P and R are their means over the window's
steps, F1 = 2PR/(P+R). A step without events scores R_t = 1 for any predictor that predicts nothing, so the stepwise
F1 has a high floor; the **Matthews correlation** over all (step, candidate) pairs of the window (candidates: the
samples of B_{t-1} correct before the step), MCC = (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) (0 when a
marginal is empty), is 0 for every predictor blind to the samples. The **trivial predictors** -- no event, every
candidate, random at the window's base rate (its expected scores) -- are scored beside the kernels on every metric.

:func:`run_forgetting` trains a model (seeded init and shuffling) and evaluates a window of steps with the
minibatches and learning rates the training used.

Modules: ``_events`` (events, the prediction rule, confusion counts), ``_scores`` (the window's scores and the
trivial predictors, numpy only), ``_predictors`` (the first-order
logit changes), ``_run`` (the training window, judging each step, one run's summary), ``_aggregate`` (mean +- std
over seeds, the table, the slides' numbers); the gradients and kernels come from :mod:`lpntk.kernel`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the module of this package that defines it; loaded on first use (PEP 562), so that the aggregation
#: over seeds (numpy, no torch) serves the forgetting_table job without loading torch
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("aggregate_scores", "format_table"), "_aggregate"),
    **dict.fromkeys(
        (
            "confusion_counts",
            "el2n_approximation_error",
            "forgetting_events",
            "predicted_forgetting",
            "probability_change",
        ),
        "_events",
    ),
    **dict.fromkeys(
        ("TRIVIAL_PREDICTORS", "matthews_correlation", "pooled_scores", "stepwise_scores", "trivial_scores"),
        "_scores",
    ),
    **dict.fromkeys(
        ("KERNEL_PREDICTORS", "PREDICTORS", "first_order_logit_change", "predicted_logit_changes"), "_predictors"
    ),
    **dict.fromkeys(("ForgettingResult", "ForgettingSetup", "run_forgetting", "summarise_steps"), "_run"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lpntk.forgetting' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from ._aggregate import aggregate_scores, format_table  # noqa: F401
    from ._events import (  # noqa: F401
        confusion_counts,
        el2n_approximation_error,
        forgetting_events,
        predicted_forgetting,
        probability_change,
    )
    from ._predictors import KERNEL_PREDICTORS, PREDICTORS, first_order_logit_change, predicted_logit_changes  # noqa: F401
    from ._run import ForgettingResult, ForgettingSetup, run_forgetting, summarise_steps  # noqa: F401
    from ._scores import (  # noqa: F401
        TRIVIAL_PREDICTORS,
        matthews_correlation,
        pooled_scores,
        stepwise_scores,
        trivial_scores,
    )

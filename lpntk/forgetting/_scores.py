"""The scores of predicted against true forgetting events over a window of steps, and the trivial predictors' floor.

Per step t the confusion counts TP_t, FP_t, FN_t, TN_t over the **candidates**, the samples of B_{t-1} that w_{t-1}
classifies correctly (only they can be forgotten or predicted forgotten). Over a window:

* pooled (:func:`pooled_scores`): precision = sum TP / sum (TP + FP), recall = sum TP / sum (TP + FN),
  F1 = 2 sum TP / sum (2 TP + FP + FN), NaN for an empty denominator;
* the official per-step averaging (:func:`stepwise_scores`): P_t = TP/(TP+FP) (1 if nothing predicted),
  R_t = TP/(TP+FN) (1 if nothing forgotten), P, R their means, F1 = 2PR/(P+R);
* the Matthews correlation over all (step, candidate) pairs (:func:`matthews_correlation`), a metric with a floor at
  0: every predictor blind to the samples scores 0 on it in expectation.

The trivial predictors (:func:`trivial_scores`: no event, every candidate, random at the window's base rate) are
that floor for every metric; they never look at Delta z, so they are the same in the logit and the probability
space. numpy only (no torch): the aggregation over seeds imports this module.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["pooled_scores", "stepwise_scores", "matthews_correlation", "TRIVIAL_PREDICTORS", "trivial_scores"]

#: the predictors blind to the samples, the floor of every metric: no event, every candidate, random at the base rate
TRIVIAL_PREDICTORS = ("none", "all", "random")


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


def pooled_scores(tp, fp, fn) -> dict[str, float]:
    """Precision sum TP / sum (TP+FP), recall sum TP / sum (TP+FN), F1 2 sum TP / sum (2TP+FP+FN) over all steps;
    NaN where a denominator is 0 (nothing predicted / nothing forgotten / neither)."""
    tp, fp, fn = (float(np.sum(a)) for a in (tp, fp, fn))
    return {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn)}


def stepwise_scores(tp, fp, fn) -> dict[str, float]:
    """The official code's averaging: P_t = TP/(TP+FP) (1 if nothing predicted), R_t = TP/(TP+FN) (1 if nothing
    forgotten) per step; P, R their means over steps; F1 = 2PR/(P+R) (0 if P+R = 0). NaN for no steps."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    if tp.size == 0:
        return {"precision": float("nan"), "recall": float("nan"), "f1": float("nan")}
    with np.errstate(invalid="ignore", divide="ignore"):
        p_t = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
        r_t = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 1.0)
    p, r = float(p_t.mean()), float(r_t.mean())
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r > 0 else 0.0}


def matthews_correlation(tp, fp, fn, tn) -> float:
    """Matthews correlation of the counts summed over the window's steps,

        MCC = (TP TN - FP FN) / sqrt((TP + FP) (TP + FN) (TN + FP) (TN + FN)),

    with TN the candidates neither forgotten nor predicted. Convention: 0 when a marginal is empty (nothing
    predicted, everything predicted, nothing forgotten, everything forgotten) -- the limit sklearn's
    ``matthews_corrcoef`` also takes: a constant prediction or truth carries no information about the other."""
    tp, fp, fn, tn = (float(np.sum(a)) for a in (tp, fp, fn, tn))
    den = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    return (tp * tn - fp * fn) / math.sqrt(den) if den > 0 else 0.0


def trivial_scores(candidates, events) -> dict[str, dict[str, float]]:
    """The scores of the trivial predictors on a window with c_t candidates and e_t true events at step t.

    ``none`` predicts no event (TP_t = FP_t = 0, FN_t = e_t); ``all`` predicts every candidate an event
    (TP_t = e_t, FP_t = c_t - e_t, FN_t = 0); both are scored by :func:`pooled_scores`, :func:`stepwise_scores`
    and :func:`matthews_correlation` on their counts. ``random`` predicts each candidate an event independently
    with probability b = sum e_t / sum c_t, the window's base rate; its scores are the **expected** ones, analytic
    (no draw): pooled, the expected counts TP = b E, FP = b (C - E), FN = (1 - b) E give precision = recall =
    F1 = b and MCC = 0 (prediction independent of the truth); per step, E[P_t] = (1 - b)^{c_t} + (1 - (1 - b)^{c_t})
    e_t / c_t (P_t = 1 when nothing is predicted, probability (1 - b)^{c_t}; given k > 0 predictions,
    E[TP_t / k] = e_t / c_t) and E[R_t] = b, or 1 when e_t = 0; P and R are their means over steps (exact
    expectations) and F1 = 2PR/(P+R) of them, as :func:`stepwise_scores` forms it. Pooled precision, recall and F1
    of ``random`` are NaN without true events, as for any predictor with an empty denominator.

    The trivial predictors never look at Delta z, so they are the same in the logit and the probability space.
    Returns ``{name: {precision, recall, f1, mcc, stepwise_precision, stepwise_recall, stepwise_f1, tp, fp, fn,
    n_pred}}`` for the names of :data:`TRIVIAL_PREDICTORS` (``random``'s counts are expectations, floats).
    """
    c = np.asarray(candidates, dtype=np.float64)
    e = np.asarray(events, dtype=np.float64)
    if c.shape != e.shape or np.any(e > c) or np.any(e < 0):
        raise ValueError("trivial_scores: expected 0 <= events <= candidates per step, of the same length")
    n_c, n_e = float(c.sum()), float(e.sum())
    zero = np.zeros_like(c)
    out: dict[str, dict[str, float]] = {}
    for name, (tp, fp, fn) in (("none", (zero, zero, e)), ("all", (e, c - e, zero))):
        scores: dict[str, float] = {
            **pooled_scores(tp, fp, fn),
            "mcc": matthews_correlation(tp, fp, fn, c - tp - fp - fn),
        }
        scores.update({f"stepwise_{k}": v for k, v in stepwise_scores(tp, fp, fn).items()})
        scores.update(
            {"tp": float(tp.sum()), "fp": float(fp.sum()), "fn": float(fn.sum()), "n_pred": float((tp + fp).sum())}
        )
        out[name] = scores
    b = n_e / n_c if n_c > 0 else 0.0
    pooled = b if n_e > 0 else float("nan")
    random: dict[str, float] = {"precision": pooled, "recall": pooled, "f1": pooled, "mcc": 0.0}
    if c.size:
        p_t = (1.0 - b) ** c + (1.0 - (1.0 - b) ** c) * np.divide(e, c, out=np.zeros_like(c), where=c > 0)
        r_t = np.where(e > 0, b, 1.0)
        p, r = float(p_t.mean()), float(r_t.mean())
        random.update(
            {"stepwise_precision": p, "stepwise_recall": r, "stepwise_f1": 2 * p * r / (p + r) if p + r > 0 else 0.0}
        )
    else:
        random.update(dict.fromkeys(("stepwise_precision", "stepwise_recall", "stepwise_f1"), float("nan")))
    random.update({"tp": b * n_e, "fp": b * (n_c - n_e), "fn": (1.0 - b) * n_e, "n_pred": b * n_c})
    out["random"] = random
    return out

"""Aggregation over seeds: mean +- std of each predictor's scores, and the table beside the authors' slides.

Per predictor and scoring (pooled, stepwise), over the seeds whose score is defined: the mean and the sample
standard deviation (ddof = 1) of precision, recall and F1 in % and of the Matthews correlation x 100 (pooled only:
it is one statistic of the window's (step, candidate) pairs), with the true-event counts per seed (min, mean, max),
the base rate, the predicted-event counts and first-order errors; the trivial predictors (no event, every candidate,
random at the base rate; the same in both decision spaces) as rows of their own, the floor each metric has on these
runs; the slides' numbers (:data:`lpntk.paper.FORGETTING`, computed with the per-step averaging) beside the stepwise
row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._scores import TRIVIAL_PREDICTORS

__all__ = ["aggregate_scores", "format_table"]

#: the space column of a trivial predictor's rows: it never looks at Delta z, so it is the same in both spaces
BOTH = "both"

_METRICS = ("precision", "recall", "f1", "mcc")


def _num(v: Any) -> float:
    """A score read back from JSON (where NaN was written as null) as a float."""
    return float("nan") if v is None else float(v)


def _mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean and sample std (ddof = 1) over the finite values, and their count (NaN where undefined)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan"), int(v.size)


def aggregate_scores(
    runs: Sequence[Mapping[str, Any]],
    predictors: Sequence[str],
    paper: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    trivial: Sequence[str] | None = None,
):
    """Mean +- std over seeds of each predictor's precision, recall, F1 (in %) and MCC (x 100), pooled and stepwise.

    ``runs`` are per-seed :func:`summarise_steps` dicts. One row per (predictor, decision space -- a name ending
    in ``_prob`` is the probability space --, scoring) with ``{precision,recall,f1,mcc}_{mean,std}`` (std with
    ddof = 1; seeds whose score is undefined are left out; ``mcc`` on the pooled row only, NaN on the stepwise row,
    as the official per-step averaging has no MCC), ``n_seeds`` (the fewest seeds over the metrics defined in any
    seed: the precision of a predictor that never predicts an event is undefined in every seed and does not count),
    the true-event counts per seed ``true_events_{min,mean,max}``, the mean candidates per seed and base rate
    (``candidates_mean``, ``base_rate_mean`` = mean of n_true_events / n_candidates), the mean predicted-event count
    per seed, the first-order errors (``relerr_dz``, ``el2n_err``: means over seeds; NaN for the trivial
    predictors) and, where ``paper`` has the predictor, the slides' mean and std (``paper_{metric}``,
    ``paper_{metric}_std``) on the stepwise row only, the averaging they were computed with.

    ``trivial``: the trivial predictors' rows (space ``"both"``), after the predictors'; by default
    :data:`TRIVIAL_PREDICTORS` where every run has their scores (summaries written before they existed have none).
    Returns a pandas DataFrame.
    """
    import pandas as pd  # deferred: pandas is heavy and only the tables need it

    if trivial is None:
        trivial = [t for t in TRIVIAL_PREDICTORS if runs and all(f"f1_{t}" in r for r in runs)]
    rows = []
    true = [_num(r["n_true_events"]) for r in runs]
    candidates = [_num(r.get("n_candidates")) for r in runs]
    rates = [_num(r.get("base_rate")) for r in runs]
    for p in [*predictors, *trivial]:
        if p in trivial:
            base, space = p, BOTH
        else:
            base, space = (p.removesuffix("_prob"), "probability") if p.endswith("_prob") else (p, "logit")
        for scoring, prefix in (("pooled", ""), ("stepwise", "stepwise_")):
            row: dict[str, Any] = {"predictor": base, "space": space, "scoring": scoring}
            counts = []
            for metric in _METRICS:
                key = f"{prefix}{metric}_{p}"
                mean, std, k = _mean_std([100.0 * _num(r.get(key)) for r in runs])
                row[f"{metric}_mean"], row[f"{metric}_std"] = mean, std
                if k > 0:  # a metric undefined in every seed (the stepwise MCC; no event's precision) does not count
                    counts.append(k)
            row["n_seeds"] = min(counts) if counts else 0
            row["n_runs"] = len(runs)
            row["true_events_min"] = float(np.min(true)) if runs else float("nan")
            row["true_events_mean"] = float(np.mean(true)) if runs else float("nan")
            row["true_events_max"] = float(np.max(true)) if runs else float("nan")
            row["candidates_mean"] = _mean_std(candidates)[0]
            row["base_rate_mean"] = 100.0 * _mean_std(rates)[0]
            row["pred_events_mean"] = float(np.mean([_num(r[f"n_pred_{p}"]) for r in runs])) if runs else float("nan")
            row["relerr_dz_mean"] = _mean_std([_num(r.get(f"relerr_dz_{p}")) for r in runs])[0]
            row["el2n_err_mean"] = _mean_std([_num(r.get(f"el2n_err_{p}")) for r in runs])[0]
            ref = (paper or {}).get(base) if scoring == "stepwise" else None  # the slides averaged per step
            for metric in ("precision", "recall", "f1"):
                row[f"paper_{metric}"], row[f"paper_{metric}_std"] = ref[metric] if ref else (float("nan"),) * 2
            rows.append(row)
    return pd.DataFrame(rows)


def format_table(df) -> Any:
    """The aggregate as display strings: "mean ± std" in % (MCC x 100), the trivial predictors' rows among the
    others, the true events per seed as min / mean / max, the slides' numbers beside ours (Markdown table)."""
    import pandas as pd  # deferred: pandas is heavy and only the tables need it

    def pm(mean, std):
        if not np.isfinite(mean):
            return "n/a"
        return f"{mean:.2f} ± {std:.2f}" if np.isfinite(std) else f"{mean:.2f}"

    def col(key: str, std_key: str) -> list[str]:
        if key not in df:  # a table aggregated before the column existed
            return ["n/a"] * len(df)
        return [pm(m, s) for m, s in zip(df[key], df[std_key], strict=True)]

    def num(key: str, fmt: str) -> list[str]:
        if key not in df:
            return ["n/a"] * len(df)
        return [format(v, fmt) if np.isfinite(v) else "n/a" for v in df[key]]

    if "true_events_min" in df:
        true = [
            f"{lo:.0f} / {mid:.1f} / {hi:.0f}"
            for lo, mid, hi in zip(df["true_events_min"], df["true_events_mean"], df["true_events_max"], strict=True)
        ]
    else:
        true = num("true_events_mean", ".1f")
    return pd.DataFrame(
        {
            **({"recipe": df["recipe"]} if "recipe" in df else {}),
            "predictor": df["predictor"],
            "space": df["space"],
            "scoring": df["scoring"],
            "precision %": col("precision_mean", "precision_std"),
            "recall %": col("recall_mean", "recall_std"),
            "F1 %": col("f1_mean", "f1_std"),
            "MCC × 100": col("mcc_mean", "mcc_std"),
            "paper precision %": col("paper_precision", "paper_precision_std"),
            "paper recall %": col("paper_recall", "paper_recall_std"),
            "paper F1 %": col("paper_f1", "paper_f1_std"),
            "seeds": [f"{a}/{b}" for a, b in zip(df["n_seeds"], df["n_runs"], strict=True)],
            "true events / seed (min / mean / max)": true,
            "base rate %": num("base_rate_mean", ".2f"),
            "predicted / seed": num("pred_events_mean", ".1f"),
            "rel. err. Δz": num("relerr_dz_mean", ".3g"),
            "EL2N err.": num("el2n_err_mean", ".3g"),
        }
    )

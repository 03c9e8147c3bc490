"""Aggregation over seeds: mean +- std of each predictor's scores, and the table beside the authors' slides.

Per predictor and scoring (pooled, stepwise), over the seeds whose score is defined: the mean and the sample
standard deviation (ddof = 1) of precision, recall and F1 in %, with the mean true- and predicted-event counts and
first-order errors; the slides' numbers (:data:`lpntk.paper.FORGETTING`, computed with the per-step averaging) beside
the stepwise row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["aggregate_scores", "format_table"]


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
):
    """Mean +- std over seeds of each predictor's precision, recall and F1 (in %), pooled and stepwise.

    ``runs`` are per-seed :func:`summarise_steps` dicts. One row per (predictor, decision space -- a name ending
    in ``_prob`` is the probability space --, scoring) with
    ``{precision,recall,f1}_{mean,std}`` (std with ddof = 1; seeds whose score is undefined are left out and
    ``n_seeds`` counts the rest), the mean true-event and predicted-event counts per seed, the first-order errors
    (``relerr_dz``, ``el2n_err``: means over seeds) and, where ``paper`` has the predictor, the slides' mean and
    std (``paper_{metric}``, ``paper_{metric}_std``) on the stepwise row only, the averaging they were computed
    with. Returns a pandas DataFrame.
    """
    import pandas as pd  # deferred: pandas is heavy and only the tables need it

    rows = []
    true = [r["n_true_events"] for r in runs]
    for p in predictors:
        base, space = (p.removesuffix("_prob"), "probability") if p.endswith("_prob") else (p, "logit")
        for scoring, prefix in (("pooled", ""), ("stepwise", "stepwise_")):
            row: dict[str, Any] = {"predictor": base, "space": space, "scoring": scoring}
            counts = []
            for metric in ("precision", "recall", "f1"):
                mean, std, k = _mean_std([100.0 * _num(r[f"{prefix}{metric}_{p}"]) for r in runs])
                row[f"{metric}_mean"], row[f"{metric}_std"] = mean, std
                counts.append(k)
            row["n_seeds"] = min(counts)
            row["n_runs"] = len(runs)
            row["true_events_mean"] = float(np.mean(true)) if runs else float("nan")
            row["pred_events_mean"] = float(np.mean([r[f"n_pred_{p}"] for r in runs])) if runs else float("nan")
            row["relerr_dz_mean"] = _mean_std([_num(r[f"relerr_dz_{p}"]) for r in runs])[0]
            row["el2n_err_mean"] = _mean_std([_num(r[f"el2n_err_{p}"]) for r in runs])[0]
            ref = (paper or {}).get(base) if scoring == "stepwise" else None  # the slides averaged per step
            for metric in ("precision", "recall", "f1"):
                row[f"paper_{metric}"], row[f"paper_{metric}_std"] = ref[metric] if ref else (float("nan"),) * 2
            rows.append(row)
    return pd.DataFrame(rows)


def format_table(df) -> Any:
    """The aggregate as display strings: "mean ± std" in %, the slides' numbers beside ours (Markdown table)."""
    import pandas as pd  # deferred: pandas is heavy and only the tables need it

    def pm(mean, std):
        if not np.isfinite(mean):
            return "n/a"
        return f"{mean:.2f} ± {std:.2f}" if np.isfinite(std) else f"{mean:.2f}"

    def col(key: str, std_key: str) -> list[str]:
        return [pm(m, s) for m, s in zip(df[key], df[std_key], strict=True)]

    return pd.DataFrame(
        {
            **({"recipe": df["recipe"]} if "recipe" in df else {}),
            "predictor": df["predictor"],
            "space": df["space"],
            "scoring": df["scoring"],
            "precision %": col("precision_mean", "precision_std"),
            "recall %": col("recall_mean", "recall_std"),
            "F1 %": col("f1_mean", "f1_std"),
            "paper precision %": col("paper_precision", "paper_precision_std"),
            "paper recall %": col("paper_recall", "paper_recall_std"),
            "paper F1 %": col("paper_f1", "paper_f1_std"),
            "seeds": [f"{a}/{b}" for a, b in zip(df["n_seeds"], df["n_runs"], strict=True)],
            "true events / seed": [f"{v:.1f}" for v in df["true_events_mean"]],
            "predicted / seed": [f"{v:.1f}" for v in df["pred_events_mean"]],
            "rel. err. Δz": [f"{v:.3g}" for v in df["relerr_dz_mean"]],
            "EL2N err.": [f"{v:.3g}" for v in df["el2n_err_mean"]],
        }
    )

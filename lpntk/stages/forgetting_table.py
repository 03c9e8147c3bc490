"""Stage forgetting_table: use case 2 over all seeds -- mean +- std of precision, recall and F1 per predictor, the
slides' numbers beside ours, a figure, and an aggregate MLflow run."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..figures.forgetting import plot_forgetting_scores
from ..forgetting import aggregate_scores, format_table
from ..io import load_json, save_json, save_table
from ..paper import forgetting_reference
from .common import log, tracking_run

__all__ = ["forgetting_table_stage"]


def forgetting_table_stage(
    *,
    dataset: str,
    cfg: Mapping,
    summaries: Sequence[str | os.PathLike],
    outputs: Mapping[str, str],
    mlflow_cfg: Mapping | None = None,
) -> pd.DataFrame:
    """Mean +- std over all seeds of the dataset: ``table_csv`` (numbers), ``table_md`` (display, with the slides'
    numbers), ``figure_png``/``figure_pdf`` (bars), ``summary`` (JSON: per-seed and aggregate scores)."""
    groups = [load_json(p, what="forgetting summary") for p in summaries]
    if not groups:
        raise ValueError(f"{dataset}: no forgetting runs to aggregate")
    runs = sorted((r for g in groups for r in g["runs"]), key=lambda r: r["seed"])
    predictors = groups[0]["predictors"]
    if any(g["predictors"] != predictors or g["setup"] != groups[0]["setup"] for g in groups):
        raise ValueError(
            f"{dataset}: the forgetting summaries {list(summaries)} come from different setups; "
            "delete them and rerun the forgetting step"
        )
    paper = forgetting_reference(cfg)
    table = aggregate_scores(runs, predictors, paper)
    save_table(outputs["table_csv"], table)
    save_table(outputs["table_md"], format_table(table))
    setup = groups[0]["setup"]
    title = (
        f"{dataset}: forgetting events predicted to first order, steps {setup['start_step']}-"
        f"{setup['start_step'] + setup['steps'] - 1}, lr {setup['lr']:g}, momentum {setup['momentum']:g}, "
        f"{len(runs)} seeds"
    )
    plot_forgetting_scores(table, outputs["figure_png"], outputs["figure_pdf"], title=title)
    agg: dict[str, float] = {
        "n_seeds": len(runs),
        "n_true_events": float(np.mean([r["n_true_events"] for r in runs])),
        "n_true_events_total": int(sum(r["n_true_events"] for r in runs)),
    }
    for _, row in table.iterrows():
        prefix = "" if row["scoring"] == "pooled" else "stepwise_"
        for metric in ("precision", "recall", "f1"):
            agg[f"{prefix}{metric}_{row['predictor']}"] = row[f"{metric}_mean"] / 100.0
            agg[f"{prefix}{metric}_{row['predictor']}_std"] = row[f"{metric}_std"] / 100.0
        if row["scoring"] == "pooled":
            agg[f"relerr_dz_{row['predictor']}"] = row["relerr_dz_mean"]
    save_json(
        outputs["summary"],
        {
            "dataset": dataset,
            "setup": setup,
            "predictors": predictors,
            "seeds": [r["seed"] for r in runs],
            "aggregate": agg,
            "runs": runs,
            "paper": paper,
        },
    )
    with tracking_run(
        "forgetting_table",
        dataset,
        cfg,
        mlflow_cfg,
        tags={"n_seeds": len(runs)},
        run_name=f"forgetting_table-{dataset}",
        live=False,
    ) as run:
        run.log_metrics(agg)
        run.log_outputs(dict(outputs))
    log.info("%s: forgetting table over %d seeds, %.1f true events per seed", dataset, len(runs), agg["n_true_events"])
    return table

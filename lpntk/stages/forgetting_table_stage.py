"""Stage forgetting_table: use case 2 over all seeds -- mean +- std of precision, recall, F1 and MCC per predictor,
the trivial predictors' rows (no event, every candidate, random at the base rate) beside them, the true events per
seed, the slides' numbers beside ours, a figure, and an aggregate MLflow run."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..figures.forgetting_figures import plot_forgetting_scores
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
    """Mean +- std over all seeds of the dataset: ``table_csv`` (numbers), ``table_md`` (display: every predictor and
    the trivial ones on precision, recall, F1 and MCC, pooled and stepwise, the true events per seed as min / mean /
    max, the slides' numbers beside the stepwise rows), ``figure_png``/``figure_pdf`` (bars), ``summary`` (JSON:
    per-seed and aggregate scores; the aggregate's keys ``{recipe}_{scoring prefix}{metric}_{predictor}``, the
    trivial predictors without a space suffix, ``{recipe}_mcc_{predictor}`` from the pooled rows, and
    ``{recipe}_n_true_events`` (mean) with ``_min`` / ``_max`` over seeds)."""
    groups = [load_json(p, what="forgetting summary") for p in summaries]
    if not groups:
        raise ValueError(f"{dataset}: no forgetting runs to aggregate")
    paper = forgetting_reference(cfg)
    by_recipe: dict[str, list] = {}
    for g in groups:
        by_recipe.setdefault(g["recipe"], []).append(g)
    order = [r for r in cfg["forgetting"]["recipes"] if r in by_recipe]
    tables, recipes, agg = [], {}, {}
    for recipe in order:
        gs = by_recipe[recipe]
        runs = sorted((r for g in gs for r in g["runs"]), key=lambda r: r["seed"])
        predictors = gs[0]["predictors"]
        if any(g["predictors"] != predictors or g["setup"] != gs[0]["setup"] for g in gs):
            raise ValueError(
                f"{dataset}: the forgetting summaries of recipe {recipe!r} come from different setups; delete "
                f"{[str(p) for p in summaries]} and rerun the forgetting step"
            )
        table = aggregate_scores(runs, predictors, paper)
        table.insert(0, "recipe", recipe)
        tables.append(table)
        recipes[recipe] = {
            "setup": gs[0]["setup"],
            "predictors": predictors,
            "seeds": [r["seed"] for r in runs],
            "runs": runs,
        }
        agg[f"{recipe}_n_seeds"] = len(runs)
        events = [r["n_true_events"] for r in runs]
        agg[f"{recipe}_n_true_events"] = float(np.mean(events))
        agg[f"{recipe}_n_true_events_min"], agg[f"{recipe}_n_true_events_max"] = min(events), max(events)
        for _, row in table.iterrows():
            prefix = "" if row["scoring"] == "pooled" else "stepwise_"
            name = row["predictor"] + ("_prob" if row["space"] == "probability" else "")
            for metric in ("precision", "recall", "f1"):
                agg[f"{recipe}_{prefix}{metric}_{name}"] = row[f"{metric}_mean"] / 100.0
            if row["scoring"] == "pooled":
                agg[f"{recipe}_mcc_{name}"] = row["mcc_mean"] / 100.0
                agg[f"{recipe}_relerr_dz_{name}"] = row["relerr_dz_mean"]
    table = pd.concat(tables, ignore_index=True)
    save_table(outputs["table_csv"], table)
    save_table(outputs["table_md"], format_table(table))
    windows = {
        r: f"steps {v['setup']['start_step']}-{v['setup']['start_step'] + v['setup']['steps'] - 1}, lr "
        f"{v['setup']['lr']:g}, momentum {v['setup']['momentum']:g}"
        for r, v in recipes.items()
    }
    title = (
        f"{dataset}: forgetting events predicted to first order ({'; '.join(f'{r}: {w}' for r, w in windows.items())})"
    )
    plot_forgetting_scores(table, outputs["figure_png"], outputs["figure_pdf"], title=title)
    save_json(outputs["summary"], {"dataset": dataset, "recipes": recipes, "aggregate": agg, "paper": paper})
    with tracking_run(
        "forgetting_table",
        dataset,
        cfg,
        mlflow_cfg,
        tags={"recipes": ",".join(order)},
        run_name=f"forgetting_table-{dataset}",
        live=False,
    ) as run:
        run.log_metrics(agg)
        run.log_outputs(dict(outputs))
    log.info(
        "%s: forgetting table of recipes %s",
        dataset,
        ", ".join(f"{r} ({len(v['runs'])} seeds)" for r, v in recipes.items()),
    )
    return table

"""Stages forgetting and forgetting_table: use case 2, forgetting events predicted with eNTK vs lpNTK (and pNTK).

``forgetting`` (one job per dataset and group of seeds): per seed, a seeded training run from a fresh
initialisation whose window of steps is evaluated by :func:`lpntk.forgetting.run_forgetting`; writes the per-step
confusion counts of every predictor, the per-sample events, the record of every step's minibatch and learning rate,
and a summary per seed; one MLflow run per seed. ``forgetting_table`` (one job per dataset): mean +- std over seeds,
the table with the slides' numbers beside ours, a figure, and an aggregate MLflow run.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data import load_prepared
from ..forgetting import (
    PAPER_FORGETTING,
    ForgettingSetup,
    aggregate_scores,
    format_table,
    run_forgetting,
    summarise_steps,
)
from ..io import load_json, save_json, save_npz, save_table
from ..train import seed_everything, select_device
from .common import build_from_config, log, set_threads, tracking_run

__all__ = [
    "seed_group_name",
    "seed_groups",
    "forgetting_setup",
    "forgetting_stage",
    "forgetting_table_stage",
    "paper_reference",
]

#: per-step columns logged to MLflow as step series (with the predictor suffix where it has one)
_STEP_SERIES = ("n_true",)
_STEP_SERIES_PRED = ("tp", "fp", "fn")


def seed_group_name(seeds: Sequence[int]) -> str:
    """The path component of a job's seeds: ``seed3`` for one seed, ``seeds1-2-3`` for several."""
    seeds = [int(s) for s in seeds]
    return f"seed{seeds[0]}" if len(seeds) == 1 else "seeds" + "-".join(str(s) for s in seeds)


def seed_groups(seeds: Sequence[int], per_job: int) -> dict[str, list[int]]:
    """The forgetting jobs' seed groups: ``seeds`` in order, in chunks of ``per_job``, keyed by
    :func:`seed_group_name` (``{"seeds1-2": [1, 2], "seed3": [3]}`` for seeds 1-3, two per job)."""
    seeds = [int(s) for s in seeds]
    per_job = int(per_job)
    if per_job < 1:
        raise ValueError(f"forgetting.seeds_per_job must be at least 1, got {per_job}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"forgetting.seeds {seeds} repeats a seed")
    chunks = [seeds[i : i + per_job] for i in range(0, len(seeds), per_job)]
    return {seed_group_name(chunk): chunk for chunk in chunks}


def forgetting_setup(cfg: Mapping[str, Any]) -> ForgettingSetup:
    """The dataset's ``forgetting`` block as a :class:`ForgettingSetup` (ValueError naming a bad key)."""
    block = dict(cfg.get("forgetting") or {})
    if block.get("augment") and not any((cfg.get("augment") or {}).values()):
        raise ValueError(
            "forgetting.augment: true, but the dataset has no augmentation configured (augment: "
            "crop_padding / horizontal_flip); set forgetting.augment to false"
        )
    return ForgettingSetup.from_config(block)


def paper_reference(cfg: Mapping[str, Any]) -> dict | None:
    """The slides' forgetting numbers for this dataset (torchvision MNIST / CIFAR10 only), else None."""
    if cfg.get("source") != "torchvision":
        return None
    return PAPER_FORGETTING.get(str(cfg.get("name")))


def _step_metrics(row: Mapping[str, float], predictors: Sequence[str]) -> dict[str, float]:
    out = {k: row[k] for k in _STEP_SERIES}
    for p in predictors:
        out.update({f"step_{k}_{p}": row[f"{k}_{p}"] for k in _STEP_SERIES_PRED})
    return out


def _log_series(run, rows: Sequence[Mapping[str, float]], predictors: Sequence[str]) -> None:
    """Per-step series (true events, TP/FP/FN per predictor) in one batch (a call per step costs ~30 ms)."""
    if getattr(run, "run_id", None) is None:  # tracking disabled
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [
        Metric(k, float(v), now, int(row["step"])) for row in rows for k, v in _step_metrics(row, predictors).items()
    ]
    for i in range(0, len(items), 500):
        run.client.log_batch(run.run_id, metrics=items[i : i + 500])


def forgetting_stage(
    dataset: str,
    cfg: Mapping,
    seeds: Sequence[int],
    data_dir: str | os.PathLike,
    outputs: Mapping[str, str],
    threads: int | None = None,
    mlflow_cfg: Mapping | None = None,
) -> dict:
    """Forgetting-prediction runs of ``seeds`` (one after the other; one MLflow run each).

    ``outputs``: ``steps`` (CSV, one row per (seed, evaluated step): confusion counts ``tp_<p>``, ``fp_<p>``,
    ``tn_<p>``, ``fn_<p>`` per predictor p, ``n_true``, squared errors, timings), ``samples`` (npz: per judged sample
    ``seed``, ``step``, ``position``, ``index`` (original), ``label``, ``correct_before``, ``true_event``,
    ``pred_<p>``, margins z_y - max_{k != y} z_k before / after / predicted; and per seed the record of every
    training step, ``batch_positions`` (S, T, batch_size, -1 padded), ``batch_index`` (original indices), ``lr``
    (S, T), ``seeds`` (S,)), ``summary`` (JSON: setup, predictors, one summary per seed).
    """
    setup = forgetting_setup(cfg)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("forgetting.seeds: no seeds to run")
    set_threads(threads)
    device = select_device(cfg.get("device", "auto"))
    prep = load_prepared(data_dir)
    index = prep.train.index.numpy().astype(np.int64)
    predictors = list(setup.predictors)
    step_frames, sample_parts, runs = [], [], []
    batch_pos, lrs = [], []
    for seed in seeds:
        tags = {
            "window": f"{setup.start_step}-{setup.last_step}",
            "lr": setup.lr,
            "momentum": setup.momentum,
            "space": setup.space,
            "device": str(device),
        }
        with tracking_run("forgetting", dataset, cfg, mlflow_cfg, seed=seed, params={"seed": seed}, tags=tags) as run:
            seed_everything(seed)
            model = build_from_config(cfg, prep.info)
            t0 = time.perf_counter()
            res = run_forgetting(
                model,
                prep.train,
                setup,
                seed,
                mean=prep.info.mean,
                std=prep.info.std,
                augment_cfg=cfg.get("augment"),
                device=device,
            )
            timing = {
                "seconds": time.perf_counter() - t0,  # MLflow and the log only: the files stay byte-identical
                "seconds_per_step": float(np.median([r["seconds_predict"] + r["seconds_update"] for r in res.steps])),
            }
            summary = summarise_steps(res.steps, predictors)
            summary["seed"] = seed
            runs.append(summary)
            frame = pd.DataFrame(res.steps).drop(columns=["seconds_predict", "seconds_update"])
            frame.insert(0, "seed", seed)
            step_frames.append(frame)
            part = dict(res.samples)
            part["index"] = index[part["position"]]
            part["seed"] = np.full(len(part["step"]), seed, dtype=np.int64)
            sample_parts.append(part)
            batch_pos.append(res.batches)
            lrs.append(res.lr)
            metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and k != "seed"}
            run.log_metrics({**metrics, **timing})
            _log_series(run, res.steps, predictors)
            with tempfile.TemporaryDirectory() as tmp:  # this seed's per-step table as the run's artifact
                path = Path(tmp) / f"forgetting_steps_seed{seed}.csv"
                save_table(path, frame)
                run.log_artifact(path)
            log.info(
                "%s seed %d: %d steps (%d-%d), %d true events; F1 entk %.3f lpntk %.3f pntk %.3f; %.2f s/step",
                dataset,
                seed,
                summary["n_steps"],
                setup.start_step,
                setup.last_step,
                summary["n_true_events"],
                summary["f1_entk"],
                summary["f1_lpntk"],
                summary["f1_pntk"],
                timing["seconds_per_step"],
            )
    steps = pd.concat(step_frames, ignore_index=True)
    first = ["seed", "step", "epoch", "lr", "n_obs", "n_upd", "n_correct", "n_true"]
    steps = steps[first + [c for c in steps.columns if c not in first]]
    save_table(outputs["steps"], steps)
    keys = list(sample_parts[0])
    order = ["seed", "step", "position", "index"] + [k for k in keys if k not in ("seed", "step", "position", "index")]
    batches = np.stack(batch_pos)
    save_npz(
        outputs["samples"],
        **{k: np.concatenate([p[k] for p in sample_parts]) for k in order},
        seeds=np.asarray(seeds, dtype=np.int64),
        batch_positions=batches,
        batch_index=np.where(batches >= 0, index[np.maximum(batches, 0)], -1),
        lr=np.stack(lrs),
    )
    out = {
        "dataset": dataset,
        "seeds": seeds,
        "predictors": predictors,
        "setup": setup.__dict__.copy(),
        "n_train": len(prep.train),
        "runs": runs,
    }
    save_json(outputs["summary"], out)
    return out


def forgetting_table_stage(
    dataset: str, cfg: Mapping, summaries: Sequence[str], outputs: Mapping[str, str], mlflow_cfg: Mapping | None = None
) -> pd.DataFrame:
    """Mean +- std over all seeds of the dataset: ``table_csv`` (numbers), ``table_md`` (display, with the slides'
    numbers), ``figure_png``/``figure_pdf`` (bars), ``summary`` (JSON: per-seed and aggregate scores)."""
    from ..figures.forgetting import plot_forgetting_scores

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
    paper = paper_reference(cfg)
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
    ) as run:
        run.log_metrics(agg)
        run.log_outputs(dict(outputs))
    log.info("%s: forgetting table over %d seeds, %.1f true events per seed", dataset, len(runs), agg["n_true_events"])
    return table

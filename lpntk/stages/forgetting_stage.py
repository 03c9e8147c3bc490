"""Stage forgetting: use case 2, forgetting events predicted with eNTK vs lpNTK (and pNTK).

``forgetting`` (one job per dataset and group of seeds, :func:`lpntk.plan.seed_groups`): per seed, a seeded training
run from a fresh initialisation whose window of steps is evaluated by :func:`lpntk.forgetting.run_forgetting`; writes
the per-step confusion counts of every predictor, the per-sample events, the record of every step's minibatch and
learning rate, and a summary per seed; one MLflow run per seed. The table over seeds is
:mod:`lpntk.stages.forgetting_table_stage`.
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
from ..forgetting import ForgettingSetup, run_forgetting, summarise_steps
from ..io import save_json, save_npz, save_table
from ..train import seed_everything, select_device
from .common import log, tracking_run
from .torch_setup import build_from_config, set_threads

__all__ = ["forgetting_setup", "forgetting_stage"]

#: per-step columns logged to MLflow as step series (with the predictor suffix where it has one)
_STEP_SERIES = ("n_true",)
_STEP_SERIES_PRED = ("tp", "fp", "fn")


def forgetting_setup(cfg: Mapping[str, Any], recipe: str) -> ForgettingSetup:
    """The dataset's ``forgetting`` block with its recipe ``recipe`` (``forgetting.recipes``) as a
    :class:`ForgettingSetup` (ValueError naming a bad key). A recipe's ``lr`` null means ``forgetting.lr`` scaled by
    (1 - momentum): the same effective step size as plain SGD at ``forgetting.lr``."""
    block = dict(cfg.get("forgetting") or {})  # forgetting.augment needs an augment block: lpntk.config checks it
    recipes = block.pop("recipes", {})
    if recipe not in recipes:
        raise ValueError(f"forgetting.recipes has no recipe {recipe!r} (recipes: {', '.join(recipes)})")
    r = dict(recipes[recipe])
    lr = r.get("lr")
    r["lr"] = float(block["lr"]) * (1.0 - float(r.get("momentum", 0.0))) if lr is None else float(lr)
    return ForgettingSetup.from_config({**block, **r})


def _step_metrics(row: Mapping[str, float], predictors: Sequence[str]) -> dict[str, float]:
    out = {k: row[k] for k in _STEP_SERIES}
    for p in predictors:
        out.update({f"step_{k}_{p}": row[f"{k}_{p}"] for k in _STEP_SERIES_PRED})
    return out


def _log_series(run, rows: Sequence[Mapping[str, float]], predictors: Sequence[str]) -> None:
    """Per-step series (true events, TP/FP/FN per predictor) in one batch (a call per step costs ~30 ms)."""
    run.log_metric_history((k, v, row["step"]) for row in rows for k, v in _step_metrics(row, predictors).items())


def forgetting_stage(
    *,
    dataset: str,
    cfg: Mapping,
    recipe: str,
    seeds: Sequence[int],
    data: Mapping[str, str | os.PathLike],
    outputs: Mapping[str, str],
    threads: int | None = None,
    mlflow_cfg: Mapping | None = None,
) -> dict:
    """Forgetting-prediction runs of ``seeds`` with the recipe ``recipe`` (one after the other; one MLflow run each).

    ``outputs``: ``steps`` (CSV, one row per (seed, evaluated step): confusion counts ``tp_<p>``, ``fp_<p>``,
    ``tn_<p>``, ``fn_<p>`` per predictor p, ``n_true``, squared errors, timings), ``samples`` (npz: per judged sample
    ``seed``, ``step``, ``position``, ``index`` (original), ``label``, ``correct_before``, ``true_event``,
    ``pred_<p>``, margins z_y - max_{k != y} z_k before / after / predicted; and per seed the record of every
    training step, ``batch_positions`` (S, T, batch_size, -1 padded), ``batch_index`` (original indices), ``lr``
    (S, T), ``seeds`` (S,)), ``summary`` (JSON: setup, predictors, one :func:`summarise_steps` summary per seed:
    every predictor's pooled, stepwise and MCC scores, and the trivial predictors' ``none``, ``all``, ``random``).
    """
    setup = forgetting_setup(cfg, recipe)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("forgetting.seeds: no seeds to run")
    set_threads(threads)
    device = select_device(cfg.get("device", "auto"))
    prep = load_prepared(data)
    index = prep.train.index.numpy().astype(np.int64)
    predictors = list(setup.judged)
    step_frames, sample_parts, runs = [], [], []
    batch_pos, lrs = [], []
    for seed in seeds:
        tags = {
            "window": f"{setup.start_step}-{setup.last_step}",
            "lr": setup.lr,
            "momentum": setup.momentum,
            "recipe": recipe,
            "plain_sgd": setup.plain_sgd,
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
                "%s seed %d: %d steps (%d-%d), %d true events of %d candidates; F1 entk %.3f lpntk %.3f pntk %.3f; "
                "MCC entk %.3f lpntk %.3f; stepwise F1 of no event %.3f; %.2f s/step",
                dataset,
                seed,
                summary["n_steps"],
                setup.start_step,
                setup.last_step,
                summary["n_true_events"],
                summary["n_candidates"],
                summary["f1_entk"],
                summary["f1_lpntk"],
                summary["f1_pntk"],
                summary["mcc_entk"],
                summary["mcc_lpntk"],
                summary["stepwise_f1_none"],
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
        "recipe": recipe,
        "seeds": seeds,
        "predictors": predictors,
        "setup": setup.__dict__.copy(),
        "n_train": len(prep.train),
        "runs": runs,
    }
    save_json(outputs["summary"], out)
    return out

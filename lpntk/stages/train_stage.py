"""Stage train: one seeded reference run with its checkpoints and per-sample dynamics."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import torch

from ..data import load_prepared
from ..io import save_json, save_npz, save_table, save_torch
from ..models import count_parameters
from ..train import Recipe, seed_everything, select_device, train_model
from .common import log, tracking_run
from .torch_setup import build_from_config, set_threads

__all__ = ["train_stage"]


def _build(cfg: Mapping, info, seed: int) -> torch.nn.Module:
    seed_everything(seed)
    return build_from_config(cfg, info)


def _log_epoch(run, row: Mapping[str, float]) -> None:
    log.info("epoch %d: %s", row["epoch"], ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))
    run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))


def train_stage(
    *,
    dataset: str,
    cfg: Mapping,
    seed: int,
    data: Mapping[str, str | os.PathLike],
    outputs: Mapping[str, str],
    threads: int | None = None,
    mlflow_cfg: Mapping | None = None,
) -> dict:
    """One seeded reference run: best and last checkpoints, per-sample dynamics, history and summary.

    ``data``: the prepared-data files; ``outputs`` maps ``model_best``, ``model_last``, ``dynamics``, ``history``,
    ``summary`` to paths. With ``train.resume_every`` the run saves a resumable state beside the summary and a rerun
    after a kill continues from it.
    """
    set_threads(threads)
    prep = load_prepared(data)
    recipe = Recipe.from_config(cfg["train"], cfg["augment"])
    device = select_device(cfg.get("device", "auto"))
    resume = Path(outputs["summary"]).with_name("resume.pt")
    with tracking_run("train", dataset, cfg, mlflow_cfg, seed=seed, params={"seed": seed}) as run:
        model = _build(cfg, prep.info, seed)
        run.set_tags(
            {
                "lpntk.model": cfg["model"]["name"],
                "lpntk.n_params": count_parameters(model),
                "lpntk.device": str(device),
                "lpntk.precision": recipe.precision,
            }
        )
        result = train_model(
            model,
            prep.train,
            recipe,
            seed,
            mean=prep.info.mean,
            std=prep.info.std,
            val=prep.val,
            test=prep.test,
            device=device,
            resume_path=resume,
            on_epoch=lambda row: _log_epoch(run, row),
        )
        save_torch(outputs["model_best"], result.best_state)
        save_torch(outputs["model_last"], result.last_state)
        save_npz(outputs["dynamics"], **result.dynamics)
        save_table(outputs["history"], pd.DataFrame(result.history).drop(columns=["seconds"]))
        dyn = result.dynamics
        summary = {
            **result.summary,
            "dataset": dataset,
            "n_train": len(prep.train),
            "n_params": count_parameters(model),
            "forgetting_events": int(dyn["forgetting_count"].sum()),
            "never_learned": int(dyn["never_learned"].sum()),
        }
        save_json(outputs["summary"], summary)
        run.log_metrics(
            {
                k: v
                for k, v in summary.items()
                if k.endswith(("_acc_selected", "_acc_last", "_acc_max"))
                or k in ("best_epoch", "forgetting_events", "never_learned")
            }
        )
        run.log_outputs(outputs)
        log.info(
            "%s seed %d: best epoch %d, test acc %.4f",
            dataset,
            seed,
            summary["best_epoch"],
            summary.get("test_acc_selected", float("nan")),
        )
    return summary

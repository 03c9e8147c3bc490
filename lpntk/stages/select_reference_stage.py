"""Stage select_reference: the reference checkpoint of use cases 1-2 (no torch: a file copy).

The workflow treats it as a checkpoint: the seed it chooses names the kernel files use cases 1-2 read
(``kernel/seed<s>/``), the same files the pruning of that seed reads, so no kernel is computed twice."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..io import atomic_path, load_json, save_json
from ..plan import reference_checkpoint_name
from ..reference_run import choose_reference_run
from .common import log, tracking_run

__all__ = ["select_reference_stage"]


def select_reference_stage(
    *,
    dataset: str,
    cfg: Mapping,
    summaries: Sequence[str | os.PathLike],
    checkpoints: Sequence[str | os.PathLike],
    outputs: Mapping[str, str],
    mlflow_cfg: Mapping | None = None,
) -> dict:
    """Copy the chosen run's checkpoint to ``outputs["model"]`` and describe the choice in ``outputs["info"]``.

    ``summaries`` and ``checkpoints`` are the training runs' ``summary.json`` and their checkpoint of
    ``kernel.checkpoint`` (best or last), in the same seed order (what the rule declares)."""
    kcfg = cfg["kernel"]
    runs = [load_json(p, what="training summary") for p in summaries]
    if len(checkpoints) != len(runs):
        raise ValueError(f"{len(runs)} training summaries but {len(checkpoints)} checkpoints")
    chosen = choose_reference_run(runs, kcfg.get("seed"))
    ckpt = Path(checkpoints[[int(r["seed"]) for r in runs].index(int(chosen["seed"]))])
    if ckpt.name != reference_checkpoint_name(kcfg):
        raise ValueError(f"checkpoint {ckpt} is not the run's {reference_checkpoint_name(kcfg)} (kernel.checkpoint)")
    if not ckpt.is_file():
        raise FileNotFoundError(
            f"checkpoint {ckpt} of the chosen training run (seed {chosen['seed']}, kernel.checkpoint: "
            f"{kcfg['checkpoint']}) does not exist; rerun that seed's train job (delete {ckpt.parent / 'summary.json'} "
            "so Snakemake reruns it)"
        )
    with tracking_run("select_reference", dataset, cfg, mlflow_cfg, seed=int(chosen["seed"]), live=False) as run:
        with atomic_path(outputs["model"]) as tmp:
            shutil.copyfile(ckpt, tmp)
        info = {
            "seed": int(chosen["seed"]),
            "checkpoint": kcfg["checkpoint"],
            "source": str(ckpt),
            "epoch": chosen["best_epoch"] if kcfg["checkpoint"] == "best" else chosen["epochs"],
            "select": chosen.get("select"),
            **{k: v for k, v in chosen.items() if k.endswith(("_acc_selected", "_acc_last"))},
            "candidates": {int(r["seed"]): r.get("val_acc_selected", r.get("test_acc_selected")) for r in runs},
        }
        save_json(outputs["info"], info)
        run.log_metrics({k: v for k, v in info.items() if isinstance(v, float)})
        run.log_outputs(dict(outputs))
    log.info(
        "%s: reference checkpoint = seed %d (%s, epoch %s)", dataset, info["seed"], kcfg["checkpoint"], info["epoch"]
    )
    return info

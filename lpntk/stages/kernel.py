"""Stages select_reference and kernel: the reference checkpoint, and exact per-class lpNTK Grams at it."""

from __future__ import annotations

import os
import resource
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..data import load_prepared, normalize, to_unit
from ..io import atomic_path, load_json, save_json, save_npz
from ..kernel import lpntk_gram
from ..train import choose_reference_run, select_device
from .common import load_reference_model, log, set_threads, tracking_run

__all__ = ["reference_checkpoint_name", "select_reference_stage", "kernel_stage", "class_inputs"]


def reference_checkpoint_name(kernel_cfg: Mapping) -> str:
    """File name of the training run's checkpoint the kernels use: ``kernel.checkpoint`` best or last."""
    return "model_best.pt" if kernel_cfg["checkpoint"] == "best" else "model_last.pt"


def select_reference_stage(
    dataset: str, cfg: Mapping, summaries: Sequence[str], outputs: Mapping[str, str], mlflow_cfg: Mapping | None = None
) -> dict:
    """Copy the chosen run's checkpoint to ``outputs["model"]`` and describe the choice in ``outputs["info"]``."""
    kcfg = cfg["kernel"]
    runs = [load_json(p, what="training summary") for p in summaries]
    chosen = choose_reference_run(runs, kcfg.get("seed"))
    run_dir = Path(summaries[[int(r["seed"]) for r in runs].index(int(chosen["seed"]))]).parent
    ckpt = run_dir / reference_checkpoint_name(kcfg)
    if not ckpt.is_file():
        raise FileNotFoundError(
            f"checkpoint {ckpt} of the chosen training run (seed {chosen['seed']}, "
            f"kernel.checkpoint: {kcfg['checkpoint']}) does not exist; rerun that seed's "
            f"train job (delete {run_dir / 'summary.json'} so Snakemake reruns it)"
        )
    with tracking_run("select_reference", dataset, cfg, mlflow_cfg, seed=int(chosen["seed"])) as run:
        with atomic_path(outputs["model"]) as tmp:
            shutil.copyfile(ckpt, tmp)
        info = {
            "seed": int(chosen["seed"]),
            "checkpoint": kcfg["checkpoint"],
            "source": str(ckpt),
            "epoch": chosen["best_epoch"] if kcfg["checkpoint"] == "best" else chosen["epochs"],
            "select": chosen.get("select"),
            **{k: v for k, v in chosen.items() if k.endswith("_acc_selected") or k.endswith("_acc_last")},
            "candidates": {int(r["seed"]): r.get("val_acc_selected", r.get("test_acc_selected")) for r in runs},
        }
        save_json(outputs["info"], info)
        run.log_metrics({k: v for k, v in info.items() if isinstance(v, float)})
        run.log_outputs(dict(outputs))
    log.info(
        "%s: reference checkpoint = seed %d (%s, epoch %s)", dataset, info["seed"], kcfg["checkpoint"], info["epoch"]
    )
    return info


def class_inputs(prep, klass: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """Positions of class ``klass`` in the training split, and its normalised inputs and labels."""
    pos = np.flatnonzero(prep.train.y.numpy() == klass)
    x = normalize(to_unit(prep.train.x[pos]), prep.info.mean, prep.info.std)
    return pos, x, prep.train.y[pos]


def kernel_stage(
    dataset: str,
    cfg: Mapping,
    klass: int,
    data_dir: str | os.PathLike,
    reference: str | os.PathLike,
    output: str | os.PathLike,
    threads: int | None = None,
    mlflow_cfg: Mapping | None = None,
) -> dict:
    """Exact (or sketched) lpNTK Gram of the training samples of one class at the reference checkpoint.

    Writes ``gram`` (n_c x n_c, float32, kappa with the 1/K of the paper's definition), ``index`` (original
    indices), ``position`` (positions in the training split), ``label`` and ``sq_norm`` (= diag, |phi|^2).
    """
    set_threads(threads)
    kcfg = cfg["kernel"]
    device = select_device(cfg.get("device", "auto"))
    prep = load_prepared(data_dir)
    model = load_reference_model(cfg, prep.info, reference, device)
    pos, x, y = class_inputs(prep, klass)
    dtype = {"float32": torch.float32, "float64": torch.float64}[kcfg["dtype"]]
    tags = {"class": klass, "mode": kcfg["mode"], "n": len(pos)}
    with tracking_run(
        "kernel",
        dataset,
        cfg,
        mlflow_cfg,
        tags=tags,
        params={"class": klass},
        run_name=f"kernel-{dataset}-class{klass}",
    ) as run:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        gram = lpntk_gram(
            model,
            x.to(device),
            y.to(device),
            prep.info.num_classes,
            mode=kcfg["mode"],
            sketch_dim=kcfg.get("sketch_dim"),
            seed=int(kcfg.get("sketch_seed", 0)),
            block_size=int(kcfg["block_size"]),
            max_memory_bytes=int(kcfg["max_memory_gb"] * 2**30),
            dtype=dtype,
        )
        seconds = time.perf_counter() - t0
        g = gram.detach().cpu().to(torch.float64).numpy()
        save_npz(
            output,
            gram=g.astype(np.float32),
            index=prep.train.index[pos].numpy(),
            position=pos,
            label=np.int64(klass),
            sq_norm=np.diag(g).copy(),
            num_classes=np.int64(prep.info.num_classes),
        )
        metrics = {
            "seconds": seconds,
            "n": len(pos),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "asymmetry": float(np.abs(g - g.T).max()) if len(g) else 0.0,
        }
        if device.type == "cuda":
            metrics["peak_gpu_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        run.log_metrics(metrics)
        run.set_tags({"lpntk.shape": f"{len(pos)}x{len(pos)}", "lpntk.device": str(device)})
        run.log_outputs({"gram": str(output)}, attach_below=0)
    log.info(
        "%s class %d: %d x %d lpNTK Gram in %.1f s (%s)", dataset, klass, len(pos), len(pos), seconds, kcfg["mode"]
    )
    return metrics

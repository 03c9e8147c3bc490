"""Stage kernel: exact per-class lpNTK Grams at a training run's checkpoint, for a group of classes per job.

The workflow computes them for every pruning seed (its subsets are selected from them) and for the reference seed
of use cases 1-2, each once (:func:`lpntk.plan.kernel_seeds`)."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..data import load_prepared, normalize, to_unit
from ..grams import ClassGram, save_class_grams
from ..kernel import lpntk_gram
from ..train import select_device
from .common import log, tracking_run
from .torch_setup import load_reference_model, set_threads

__all__ = ["gram_options", "class_inputs", "kernel_stage"]


def gram_options(kernel_cfg: Mapping) -> dict:
    """The keyword options of :func:`lpntk.kernel.lpntk_gram` that a ``kernel`` config block sets (every stage that
    computes lpNTK values computes them the same way)."""
    return {
        "mode": kernel_cfg["mode"],
        "sketch_dim": kernel_cfg.get("sketch_dim"),
        "seed": int(kernel_cfg.get("sketch_seed", 0)),
        "block_size": int(kernel_cfg["block_size"]),
        "max_memory_bytes": int(kernel_cfg["max_memory_gb"] * 2**30),
        "dtype": {"float32": torch.float32, "float64": torch.float64}[kernel_cfg["dtype"]],
    }


def class_inputs(prep, klass: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """Positions of class ``klass`` in the training split, and its normalised inputs and labels."""
    pos = np.flatnonzero(prep.train.y.numpy() == klass)
    x = normalize(to_unit(prep.train.x[pos]), prep.info.mean, prep.info.std)
    return pos, x, prep.train.y[pos]


def kernel_stage(
    *,
    dataset: str,
    cfg: Mapping,
    classes: Sequence[int],
    data: Mapping[str, str | os.PathLike],
    reference: str | os.PathLike,
    output: str | os.PathLike,
    threads: int | None = None,
    seed: int | None = None,
    mlflow_cfg: Mapping | None = None,
) -> list[dict]:
    """Exact (or sketched) lpNTK Gram of the training samples of each class of ``classes`` at the checkpoint
    ``reference``, all written to one file ``output`` (:mod:`lpntk.grams`); one MLflow run per class.

    ``data``: the prepared-data files (info, train, val, test); ``seed``: the training run the checkpoint is of (the
    runs' tag). Gram entries are kappa with the 1/K of the paper's
    definition, computed in ``kernel.dtype`` and stored as float32 (the diagonal |phi|^2 also as float64).
    """
    set_threads(threads)
    kcfg = cfg["kernel"]
    device = select_device(cfg.get("device", "auto"))
    prep = load_prepared(data)
    model = load_reference_model(cfg, prep.info, reference, device)
    options = gram_options(kcfg)
    grams, metrics_all = [], []
    for klass in [int(c) for c in classes]:
        pos, x, y = class_inputs(prep, klass)
        tags = {"class": klass, "mode": kcfg["mode"], "n": len(pos)}
        name = f"kernel-{dataset}" + ("" if seed is None else f"-seed{seed}") + f"-class{klass}"
        params = {"class": klass}
        with tracking_run(
            "kernel", dataset, cfg, mlflow_cfg, seed=seed, tags=tags, params=params, run_name=name
        ) as run:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            gram = lpntk_gram(model, x.to(device), y.to(device), prep.info.num_classes, **options)
            seconds = time.perf_counter() - t0
            g = gram.detach().cpu().to(torch.float64).numpy()
            grams.append(
                ClassGram(
                    label=klass,
                    gram=g.astype(np.float32),
                    sq_norm=np.diag(g).copy(),
                    index=prep.train.index[pos].numpy(),
                    position=pos,
                    num_classes=prep.info.num_classes,
                )
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
            run.set_tags(
                {"lpntk.shape": f"{len(pos)}x{len(pos)}", "lpntk.device": str(device), "lpntk.output.gram": str(output)}
            )
        metrics_all.append(metrics)
        log.info(
            "%s seed %s class %d: %d x %d lpNTK Gram in %.1f s (%s)",
            dataset,
            seed,
            klass,
            len(pos),
            len(pos),
            seconds,
            kcfg["mode"],
        )
    save_class_grams(output, grams)
    return metrics_all

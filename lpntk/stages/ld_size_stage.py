"""Stage ld_size: learning difficulty vs dataset size (paper-protocols §4.1). Method: :mod:`lpntk.difficulty`.

A seeded per-class pool of ``pool_per_class`` training samples, its quad-tree subsets, one training run per subset
(all runs from the same ``seed``: the same initialisation and shuffling stream, so runs differ only in their data),
LD per sample and size, Pearson (and Spearman) correlations between sizes. The training forward pass uses the
dataset's augmentation (as the official exp7.1). With ``difficulty.lockstep`` the nodes of one size train together
(:func:`lpntk.lockstep.train_lockstep`, at most ``difficulty.lockstep_max_runs`` at a time). Every finished run is
kept in a progress folder beside the outputs (:mod:`lpntk.progress`) and the run (or lockstep group) in flight
saves a resumable state every ``difficulty.size.resume_every`` epochs there, so a killed job resumes where it
stopped, with the same results.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import asdict, replace

import numpy as np
import pandas as pd

from ..data import load_prepared
from ..difficulty import learning_difficulty, pearson_matrix, quad_tree_subsets, size_levels
from ..figures.difficulty_figures import plot_ld_correlation
from ..io import save_json, save_table
from ..lockstep import lockstep_groups
from ..progress import Progress, run_key
from ..train import select_device
from .common import check_outputs, log, tracking_run
from .difficulty_stage import difficulty_recipe
from .torch_setup import build_from_config, set_threads

__all__ = ["LD_SIZE_OUTPUTS", "ld_size_stage"]

LD_SIZE_OUTPUTS = ("ld", "correlation", "correlation_md", "heatmap", "heatmap_pdf", "summary")


def ld_size_stage(
    *,
    dataset: str,
    cfg: Mapping,
    data: Mapping[str, str | os.PathLike],
    outputs: Mapping[str, str],
    threads: int | None = None,
    mlflow_cfg: Mapping | None = None,
) -> dict:
    """LD of a per-class pool's samples when trained within quad-tree subsets of every size; correlations.

    ``outputs`` maps every name of :data:`LD_SIZE_OUTPUTS` to a path. Returns the summary (also written as JSON).
    """
    scfg = cfg["difficulty"]["size"]
    check_outputs(outputs, LD_SIZE_OUTPUTS, "ld_size_stage")
    pool_n = int(scfg["pool_per_class"])
    sizes = size_levels(pool_n, int(scfg["min_size"]))
    recipe = replace(difficulty_recipe(scfg, cfg.get("augment")), resume_every=int(scfg["resume_every"]))
    set_threads(threads)
    t0 = time.perf_counter()
    device = select_device(cfg.get("device", "auto"))
    prep = load_prepared(data)
    labels = prep.train.y.numpy()
    rng = np.random.default_rng(int(scfg["partition_seed"]))
    pools = []
    for c in range(prep.info.num_classes):
        pos = np.flatnonzero(labels == c)
        if len(pos) < pool_n:
            raise ValueError(
                f"difficulty.size.pool_per_class = {pool_n} but class {c} has only {len(pos)} "
                f"training samples; use a power of 4 <= {len(pos)}"
            )
        pools.append(rng.choice(pos, size=pool_n, replace=False))
    n_cls = len(pools)
    ld = np.zeros((n_cls, pool_n, len(sizes)))
    seed = int(scfg["seed"])
    lockstep, max_runs = bool(cfg["difficulty"]["lockstep"]), int(cfg["difficulty"]["lockstep_max_runs"])
    make = lambda: build_from_config(cfg, prep.info)  # noqa: E731
    n_runs = 0
    progress = Progress(outputs["summary"])
    spec = {k: v for k, v in asdict(recipe).items() if k != "resume_every"}
    with tracking_run(
        "ld_size",
        dataset,
        cfg,
        mlflow_cfg,
        seed=seed,
        tags={"pool_per_class": pool_n, "lockstep": str(lockstep).lower()},
        run_name=f"ld_size-{dataset}",
    ) as run:
        for si, s in enumerate(sizes):
            t_size = time.perf_counter()
            nodes = [quad_tree_subsets(p, s) for p in pools]
            splits, names, keys, values = {}, {}, {}, {}
            for k in range(pool_n // s):
                positions = np.concatenate([nodes[c][k] for c in range(n_cls)])
                splits[k] = prep.train.subset(positions)
                names[k] = f"size{s}-node{k}"
                keys[k] = run_key(
                    index=splits[k].index.numpy(), y=splits[k].y.numpy(), seed=seed, recipe=spec, model=cfg["model"],
                    mean=prep.info.mean, std=prep.info.std, lockstep=lockstep,
                )  # fmt: skip
                done = progress.load(names[k], keys[k])
                if done is not None:
                    values[k] = done["ld"]
            pending = [k for k in splits if k not in values]
            for group in lockstep_groups(pending, lockstep, max_runs):  # each run kept as its group ends
                name = names[group[0]] if len(group) == 1 else f"size{s}-nodes{group[0]}-{group[-1]}"
                lds = learning_difficulty(
                    make,
                    [splits[k] for k in group] if lockstep else splits[group[0]],
                    recipe,
                    seed,
                    mean=prep.info.mean,
                    std=prep.info.std,
                    device=device,
                    resume_path=progress.resume_path(name),
                )
                for k, ld_k in zip(group, lds if lockstep else [lds], strict=True):
                    values[k] = ld_k
                    progress.save(names[k], keys[k], ld=ld_k)
            for k, v in values.items():
                for c in range(n_cls):
                    ld[c, k * s : (k + 1) * s, si] = v[c * s : (c + 1) * s]
                n_runs += 1
            log.info("%s: size %d per class: %d runs in %.1f s", dataset, s, pool_n // s, time.perf_counter() - t_size)
        flat = ld.reshape(n_cls * pool_n, len(sizes))
        pearson = pearson_matrix(flat)
        ranks = np.argsort(np.argsort(flat, axis=0, kind="stable"), axis=0, kind="stable").astype(np.float64)
        spearman = pearson_matrix(ranks)
        all_pos = np.concatenate(pools)
        ld_df = pd.DataFrame(
            {
                "index": prep.train.index[all_pos].numpy(),
                "position": all_pos,
                "label": labels[all_pos],
                "pool_rank": np.tile(np.arange(pool_n), n_cls),
                **{f"ld_size{s}": flat[:, i] for i, s in enumerate(sizes)},
            }
        )
        corr_rows = [
            {"method": m, "size": s, **{f"size{t}": mat[i, j] for j, t in enumerate(sizes)}}
            for m, mat in (("pearson", pearson), ("spearman", spearman))
            for i, s in enumerate(sizes)
        ]
        corr_df = pd.DataFrame(corr_rows)
        metrics = {f"ld_corr_{sizes[0]}_{s}": float(pearson[0, i]) for i, s in enumerate(sizes[1:], start=1)}
        metrics.update({f"ld_spearman_{sizes[0]}_{s}": float(spearman[0, i]) for i, s in enumerate(sizes[1:], start=1)})
        metrics.update({f"ld_mean_size{s}": float(flat[:, i].mean()) for i, s in enumerate(sizes)})
        summary = {
            "dataset": dataset,
            "pool_per_class": pool_n,
            "sizes": sizes,
            "runs": n_runs,
            "seed": seed,
            "lockstep": lockstep,
            "partition_seed": int(scfg["partition_seed"]),
            "pearson": pearson,
            "spearman": spearman,
            "metrics": metrics,
        }
        save_table(outputs["ld"], ld_df)
        save_table(outputs["correlation"], corr_df)
        save_table(outputs["correlation_md"], corr_df.round(4))
        plot_ld_correlation(pearson, sizes, dataset, outputs["heatmap"], outputs["heatmap_pdf"], n_samples=len(flat))
        save_json(outputs["summary"], summary)  # no timings in files: same config -> same bytes
        summary["seconds"] = time.perf_counter() - t0
        run.log_metrics({**metrics, "runs": n_runs, "seconds": summary["seconds"]})
        run.log_outputs({k: v for k, v in outputs.items() if k != "ld"})
    progress.clear()
    log.info(
        "%s: LD vs size, %d runs, Pearson with size %d: %s",
        dataset,
        n_runs,
        sizes[0],
        ", ".join(f"{s}: {pearson[0, i]:.3f}" for i, s in enumerate(sizes)),
    )
    return summary

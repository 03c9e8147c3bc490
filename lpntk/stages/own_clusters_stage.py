"""Stage own_clusters: the small-cluster experiment's clusters from a model trained on the subset itself.

The slides cluster a 1 % / 5 % subset with the lpNTK of the model trained on the *full* data -- an advantage a user
who only has the subset would not have. This stage gives the variant without it: for every data fraction d and draw
(one per retraining seed, or one shared), the class-balanced subset is drawn exactly as the cluster stage draws it,
a model is trained on it alone (the dataset's recipe for ``pruning.small_clusters.epochs`` epochs, selected on the
validation split, seeded with the retraining seed), the lpNTK Gram of each class of the subset is computed at that
model, and farthest point clustering with round(cluster_keep n_c) clusters per class gives each member's head.

Each finished draw is kept in a progress folder beside the output, so a killed job resumes where it stopped.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..clustering import cluster_sizes, farthest_point_clustering, symmetrize_upper
from ..data import load_prepared, normalize, to_unit
from ..io import load_json, load_npz, save_json, save_npz, save_table
from ..kernel import lpntk_gram
from ..plan import fmt, retrain_settings, small_draw_seeds, small_key
from ..pruning import class_balanced_subset, draw_seed, keep_count
from ..train import seed_everything, select_device, train_model
from .common import log, tracking_run
from .kernel_stage import gram_options
from .retrain_stage import retrain_recipe, subset_split
from .torch_setup import build_from_config, set_threads

__all__ = ["own_clusters_stage"]


def _one_draw(cfg: Mapping, prep, d: float, seed: int | None, device) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Draw, train, kernel, cluster: the members and heads of one draw, and one summary row per class."""
    scfg = cfg["pruning"]["small_clusters"]
    index, labels = prep.train.index.numpy(), prep.train.y.numpy()
    sub = class_balanced_subset(index, labels, d, draw_seed(int(scfg["seed"]), seed))
    train = subset_split(prep.train, sub)
    run_seed = int(seed) if seed is not None else int(scfg["seed"])
    recipe = retrain_recipe(cfg, retrain_settings(cfg)["small_epochs"])
    seed_everything(run_seed)
    model = build_from_config(cfg, prep.info)
    result = train_model(
        model,
        train,
        recipe,
        run_seed,
        mean=prep.info.mean,
        std=prep.info.std,
        val=prep.val,
        device=device,
        record=False,
    )
    model = result.model.eval()
    heads, members, rows = [], [], []
    x_all = normalize(to_unit(train.x), prep.info.mean, prep.info.std)
    for c in np.unique(train.y.numpy()):
        pos = np.flatnonzero(train.y.numpy() == c)
        gram = lpntk_gram(
            model, x_all[pos].to(device), train.y[pos].to(device), prep.info.num_classes, **gram_options(cfg["kernel"])
        )
        S = symmetrize_upper(gram.detach().cpu().double().numpy())
        kc = max(1, keep_count(len(pos), float(scfg["cluster_keep"])))
        res = farthest_point_clustering(S, kc)
        members.append(train.index.numpy()[pos])
        heads.append(train.index.numpy()[pos][res.heads[res.cluster]])
        sizes = cluster_sizes(res.cluster, len(res.heads))
        rows.append(
            {
                "setting": f"d{fmt(d)}" + ("" if seed is None else f" seed {seed}"),
                "class": int(c),
                "n": len(pos),
                "k": kc,
                "clusters": len(res.heads),
                "largest": int(sizes.max()),
                "singletons": int((sizes == 1).sum()),
                "best_epoch": int(result.summary["best_epoch"]),
                "val_acc": float(result.summary.get("val_acc_selected", np.nan)),
            }
        )
    key = small_key(d, seed, "own")
    order = np.argsort(np.concatenate(members), kind="stable")
    return {f"{key}_index": np.concatenate(members)[order], f"{key}_cluster": np.concatenate(heads)[order]}, rows


def own_clusters_stage(
    *,
    dataset: str,
    cfg: Mapping,
    data: Mapping[str, str | os.PathLike],
    outputs: Mapping[str, str],
    threads: int | None = None,
    mlflow_cfg: Mapping | None = None,
) -> pd.DataFrame:
    """Clusters of every small-cluster draw from the lpNTK of a model trained on the draw itself.

    ``data``: the prepared-data files. Writes ``outputs["clusters"]`` (npz: per draw, :func:`lpntk.plan.small_key`
    with kernel "own", ``<key>_index`` the subset's original indices, sorted, and ``<key>_cluster`` each member's
    head) and ``outputs["summary"]`` (CSV: per draw and class, cluster counts and sizes, the model's validation
    accuracy). One MLflow run for the job.
    """
    set_threads(threads)
    scfg = cfg["pruning"]["small_clusters"]
    device = select_device(cfg.get("device", "auto"))
    prep = load_prepared(data)
    progress = Path(outputs["clusters"]).with_name(f".{Path(outputs['clusters']).stem}.progress")
    arrays: dict[str, np.ndarray] = {}
    rows: list[dict] = []
    t0 = time.perf_counter()
    draws = [(float(d), s) for d in sorted({float(x) for x in scfg["data_fractions"]}) for s in small_draw_seeds(cfg)]
    with tracking_run("own_clusters", dataset, cfg, mlflow_cfg, run_name=f"own_clusters-{dataset}") as run:
        for d, seed in draws:
            done = progress / f"{small_key(d, seed, 'own')}.npz"
            if done.is_file():  # finished before the job was killed
                part = load_npz(done, what="own-cluster progress record")
                part_rows = load_json(progress / f"{done.stem}.json", what="own-cluster progress record")
                log.info("%s d=%g seed %s: already clustered (%s)", dataset, d, seed, done)
            else:
                part, part_rows = _one_draw(cfg, prep, d, seed, device)
                save_json(progress / f"{done.stem}.json", part_rows)
                save_npz(done, **part)
                log.info(
                    "%s d=%g seed %s: %d samples in %d clusters",
                    dataset,
                    d,
                    seed,
                    len(part[f"{done.stem}_index"]),
                    sum(r["clusters"] for r in part_rows),
                )
            arrays.update(part)
            rows += part_rows
        summary = pd.DataFrame(rows)
        save_npz(outputs["clusters"], **arrays)
        save_table(outputs["summary"], summary)
        run.log_metrics(
            {"seconds": time.perf_counter() - t0, "draws": len(draws), "val_acc_mean": float(summary["val_acc"].mean())}
        )
        run.log_outputs(dict(outputs))
    shutil.rmtree(progress, ignore_errors=True)
    return summary

"""Stage cluster: farthest point clustering of every class on its lpNTK Gram (use case 3; paper-protocols §1.6, §4.4).

One job per pruning seed s, on the lpNTK Grams of training run s (its retraining seed's subsets are selected from
them alone). Per class, FPC runs until every sample is ranked as a head (or FPC stops), recording every sample's
moves, so that the head ranks and the assignment at any cluster count -- any kept fraction -- follow from this one
file (:func:`clusters_at_keep`): the job reads no kept fraction, and changing ``pruning.keep`` does not rerun it.
For the small-cluster experiment it also clusters seed s's seeded class-balanced 1 % / 5 % subset (or the one shared
draw) on its sub-Gram (the per-class Gram restricted to the subset, still at the full-data checkpoint). Numpy only:
one class's Gram in memory at a time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..clustering import (
    assignment_history,
    cluster_sizes,
    clusters_at,
    farthest_point_clustering,
    head_rank,
    self_max,
    symmetrize_upper,
)
from ..grams import ClassGram, iter_class_grams
from ..io import save_npz, save_table
from ..plan import fmt, small_draw_seed, small_key
from ..pruning import class_balanced_subset, draw_seed, keep_count
from .common import log, tracking_run

__all__ = ["cluster_class", "cluster_stage", "clusters_at_keep"]


def _sizes_row(
    c: int, setting: str, keep: float, n: int, k: int, sizes: np.ndarray, n_self_max: int, stopped: bool
) -> dict:
    return {
        "class": c,
        "setting": setting,
        "keep": keep,
        "n": n,
        "k": k,
        "clusters": int((sizes > 0).sum()),
        "largest": int(sizes.max()),
        "singletons": int((sizes == 1).sum()),
        "median_size": float(np.median(sizes)),
        "self_max": n_self_max,
        "stopped_early": stopped,
    }


def cluster_class(
    g: ClassGram,
    fractions: Sequence[float],
    small_cfg: Mapping,
    draws: Sequence[int | None] = (None,),
) -> tuple[dict[str, np.ndarray], list[dict]]:
    """FPC of one class until every sample is ranked (with its moves), and of its class-balanced subsets at
    ``fractions`` (one draw per retraining seed of ``draws``, None: one shared draw): the per-sample arrays (see
    :func:`cluster_stage`) and the summary rows."""
    c = g.label
    S = symmetrize_upper(g.gram)
    index = np.asarray(g.index, dtype=np.int64)
    n = len(index)
    res = farthest_point_clustering(S, None, history=True)
    moves_n, moves = assignment_history(res, n)
    sm = self_max(S)
    part = {
        "index": index,
        "label": np.full(n, c, dtype=np.int64),
        "position": np.asarray(g.position, np.int64),
        "sq_norm": np.diag(S).copy(),
        "head_rank": head_rank(res, n),
        "self_max": sm,
        "moves_n": moves_n,
        "moves": moves,
    }
    sizes = cluster_sizes(res.cluster, len(res.heads))  # the run's end: k is the number of samples ranked as heads
    rows = [_sizes_row(c, "full", 1.0, n, len(res.heads), sizes, int(sm.sum()), False)]
    for d in fractions:  # FPC of the class-balanced subsets on their sub-Grams (full-data checkpoint)
        for seed in draws:
            sub = class_balanced_subset(index, part["label"], d, draw_seed(int(small_cfg["seed"]), seed))
            sel = np.flatnonzero(np.isin(index, sub))
            kc = max(1, keep_count(len(sel), float(small_cfg["cluster_keep"])))
            S_sub = S[np.ix_(sel, sel)]
            sub_res = farthest_point_clustering(S_sub, kc)
            key = small_key(d, seed)
            part[f"{key}_index"] = index[sel]
            part[f"{key}_cluster"] = index[sel][sub_res.heads[sub_res.cluster]]
            sizes = cluster_sizes(sub_res.cluster, len(sub_res.heads))
            setting = f"d{fmt(d)}" + ("" if seed is None else f" seed {seed}")
            rows.append(
                _sizes_row(
                    c,
                    setting,
                    float(small_cfg["cluster_keep"]),
                    len(sel),
                    kc,
                    sizes,
                    int(self_max(S_sub).sum()),
                    bool(sub_res.stopped_early),
                )
            )
    return part, rows


def cluster_stage(
    *,
    dataset: str,
    cfg: Mapping,
    seed: int,
    kernels: Sequence[str | os.PathLike],
    outputs: Mapping[str, str],
    mlflow_cfg: Mapping | None = None,
) -> pd.DataFrame:
    """FPC of every class until every sample is ranked, and of the small-cluster experiment's subsets, on the
    ``kernels`` of training run ``seed`` (the pruning seed whose subsets they select). ``cfg`` needs
    ``pruning.draws`` and ``pruning.small_clusters`` (enabled, data_fractions, seed, cluster_keep) alone.

    Writes ``outputs["clusters"]`` (npz, one entry per training sample, classes in label order): ``index``
    (original), ``label``, ``position``, ``sq_norm`` (|phi|^2), ``head_rank`` (creation rank of the sample as
    an FPC head within its class, -1 if never), ``self_max`` (the official code's flag), ``moves_n`` and ``moves``
    (the clusters each sample joined, :func:`lpntk.clustering.assignment_history`: :func:`clusters_at_keep` gives
    every sample's head at any kept fraction); and per small-cluster data fraction d, seed ``seed``'s draw
    (:func:`lpntk.plan.small_key`: ``small_d<d>_s<seed>``, or ``small_d<d>`` for the draw shared by every seed):
    ``<key>_index`` (the subset) and ``<key>_cluster`` (head of each member).
    ``outputs["summary"]`` (CSV): per class and setting, cluster counts and sizes (setting ``full``: the run's end,
    k the number of samples ranked as heads).
    """
    scfg = cfg["pruning"]["small_clusters"]
    fractions = sorted({float(x) for x in scfg["data_fractions"]}) if scfg["enabled"] else []
    rows: list[dict] = []
    parts: dict[int, dict[str, np.ndarray]] = {}
    t0 = time.perf_counter()
    seed = int(seed)
    name = f"cluster-{dataset}-seed{seed}"
    with tracking_run("cluster", dataset, cfg, mlflow_cfg, seed=seed, run_name=name, live=False) as run:
        for g in iter_class_grams(kernels):  # one class's Gram in memory at a time
            if g.label in parts:
                raise ValueError(f"two kernel files hold class {g.label}")
            parts[g.label], class_rows = cluster_class(g, fractions, scfg, [small_draw_seed(cfg, seed)])
            rows += class_rows
        order = sorted(parts)
        arrays = {key: np.concatenate([parts[c][key] for c in order]) for key in parts[order[0]]}
        rows.sort(key=lambda r: (r["setting"] != "full", r["setting"], r["class"], -r["keep"]))
        summary = pd.DataFrame(rows)
        save_npz(outputs["clusters"], **arrays)
        save_table(outputs["summary"], summary)
        seconds = time.perf_counter() - t0
        metrics = {"seconds": seconds, "self_max_rate": float(arrays["self_max"].mean())}
        for (setting, keep), grp in summary.groupby(["setting", "keep"], sort=True):
            tag = f"{setting}_k{fmt(keep)}"
            metrics[f"clusters_{tag}"] = int(grp["clusters"].sum())
            metrics[f"largest_{tag}"] = int(grp["largest"].max())
            metrics[f"singletons_{tag}"] = int(grp["singletons"].sum())
        run.log_metrics(metrics)
        run.log_outputs(dict(outputs))
    if summary["stopped_early"].any():
        stopped = summary.loc[summary["stopped_early"], ["class", "setting", "keep"]].to_dict("records")
        log.warning("%s: FPC stopped early (every cluster's farthest member is its head) for %s", dataset, stopped)
    log.info("%s seed %d: FPC of %d classes in %.1f s", dataset, seed, len(parts), seconds)
    return summary


def clusters_at_keep(clusters: Mapping[str, np.ndarray], keep: float) -> np.ndarray:
    """The original index of every sample's FPC head with round(keep N_c) clusters in its class c, from the
    cluster stage's arrays (``clusters``: its npz, loaded), aligned with ``clusters["index"]``."""
    labels = np.asarray(clusters["label"], np.int64)
    index = np.asarray(clusters["index"], np.int64)
    rank = np.asarray(clusters["head_rank"], np.int64)
    counts = np.bincount(labels)
    ids = clusters_at(clusters["moves_n"], clusters["moves"], [keep_count(int(counts[c]), keep) for c in labels])
    heads = np.flatnonzero(rank >= 0)
    heads = heads[np.lexsort((rank[heads], labels[heads]))]  # by class, then rank: class c's heads are 0..h_c - 1
    first = np.concatenate([[0], np.cumsum(np.bincount(labels[heads], minlength=len(counts)))[:-1]])
    return index[heads[first[labels] + ids]]

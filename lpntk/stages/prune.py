"""Stage prune: every training subset of the pruning plan, as ORIGINAL indices (use case 3; paper-protocols §4.4-4.6).

Reads the FPC clusters and the baseline scores, aligns them with the training split, and applies each subset's
selection rule by name (:data:`lpntk.pruning.SELECTORS`). Numpy and pandas only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..io import load_npz, save_npz, save_table
from ..plan import (
    SCORE_METHODS,
    check_pruning_config,
    cluster_keeps,
    fmt,
    retrain_settings,
    small_draw_seeds,
    small_key,
    subset_key,
    subset_plan,
)
from ..pruning import PruningInputs, class_counts_of, select_subset
from .common import log, tracking_run

__all__ = ["pruning_inputs", "prune_stage"]


def _aligned(name: str, src_index: np.ndarray, index: np.ndarray, path) -> np.ndarray:
    """Positions p such that src_index[p] == index, with a clear error if the sets differ."""
    if len(src_index) != len(index) or not np.array_equal(np.sort(src_index), np.sort(index)):
        raise ValueError(
            f"{name} {path} does not cover the training split ({len(src_index)} vs {len(index)} "
            f"samples, or different indices); rerun the step that produces it"
        )
    order = np.argsort(src_index)
    return order[np.searchsorted(src_index[order], index)]


def _small_clusters(cfg: Mapping, cl, own, clusters, own_path) -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
    """{(data fraction, kernel, seed): (members, heads)} of every small-cluster draw the plan needs."""
    scfg = cfg["pruning"]["small_clusters"]
    if not scfg["enabled"]:
        return {}
    out, missing = {}, []
    for d in sorted({float(x) for x in scfg["data_fractions"]}):
        for seed in small_draw_seeds(cfg):
            for kernel in scfg["kernels"]:
                src, path = (cl, clusters) if kernel == "full" else (own, own_path)
                key = small_key(d, seed, kernel)
                if src is None or f"{key}_index" not in src:
                    missing.append(f"{key}_index")
                    continue
                out[d, kernel, seed] = (
                    np.asarray(src[f"{key}_index"], np.int64),
                    np.asarray(src[f"{key}_cluster"], np.int64),
                )
    if missing:
        raise ValueError(
            f"the clusters files ({clusters}, {own_path}) were computed for another configuration (no "
            f"{missing[:4]}{'...' if len(missing) > 4 else ''}); rerun the cluster steps"
        )
    return out


def pruning_inputs(
    cfg: Mapping,
    train: str | os.PathLike,
    clusters: str | os.PathLike,
    scores: str | os.PathLike | None,
    own_clusters: str | os.PathLike | None = None,
) -> PruningInputs:
    """Every per-sample quantity the selection rules read, aligned with the training split (file names in errors)."""
    pcfg = cfg["pruning"]
    arr = load_npz(train, what="prepared train split")
    index, labels = np.asarray(arr["index"], dtype=np.int64), np.asarray(arr["y"], dtype=np.int64)
    cl = load_npz(clusters, what="FPC clusters")
    missing = [f"cluster_k{fmt(k)}" for k in cluster_keeps(cfg) if f"cluster_k{fmt(k)}" not in cl]
    if missing:
        raise ValueError(
            f"FPC clusters {clusters} were computed for another configuration (no {missing}); rerun the cluster step"
        )
    own = load_npz(own_clusters, what="own-model clusters") if own_clusters is not None else None
    cpos = _aligned("FPC clusters", cl["index"], index, clusters)
    scfg = pcfg["small_clusters"]
    inputs = PruningInputs(
        index=index,
        labels=labels,
        head_rank=cl["head_rank"][cpos],
        self_max=cl["self_max"][cpos],
        clusters={k: cl[f"cluster_k{fmt(k)}"][cpos] for k in cluster_keeps(cfg)},
        per_class=pcfg["ranking"] == "per_class",
        node_fraction=float(pcfg["node"]["fraction"]),
        seed=int(pcfg["seed"]),
        small=_small_clusters(cfg, cl, own, clusters, own_clusters),
        small_seed=int(scfg["seed"]),
        sq_norm=cl["sq_norm"][cpos],
        tie_break=scfg["tie_break"],
    )
    if any(p["method"] in (*SCORE_METHODS, "random") for p in subset_plan(cfg)):
        if scores is None:
            raise ValueError("pruning.methods need the baseline scores but no scores table was given")
        table = pd.read_csv(scores)
        spos = _aligned("scores table", table["index"].to_numpy(np.int64), index, scores)
        table = table.iloc[spos].reset_index(drop=True)
        inputs.scores = {m: table[m].to_numpy(np.float64) for m in (*SCORE_METHODS, "random")}
    return inputs


def prune_stage(
    *,
    dataset: str,
    cfg: Mapping,
    train: str | os.PathLike,
    clusters: str | os.PathLike,
    scores: str | os.PathLike | None,
    outputs: Mapping[str, str],
    own_clusters: str | os.PathLike | None = None,
    mlflow_cfg: Mapping | None = None,
) -> pd.DataFrame:
    """Build every subset of :func:`lpntk.plan.subset_plan` as sorted ORIGINAL indices, one per retraining seed
    where it is drawn per seed (its entry :func:`lpntk.plan.subset_key`: ``<name>@seed<s>``).

    ``train``: the prepared training split; ``clusters``: the cluster stage's npz; ``scores``: the scores table
    (or None when no method needs it); ``own_clusters``: the own_clusters stage's npz (small-cluster experiment
    with the subsets' own models). Writes ``outputs["subsets"]`` (npz: subset entry -> original indices) and
    ``outputs["table"]`` (CSV: one row per subset entry: name, seed, method, experiment, nominal keep, realised
    keep, size, per-class sizes).
    """
    check_pruning_config(cfg)
    plan = subset_plan(cfg)
    seeds = retrain_settings(cfg)["seeds"]
    inputs = pruning_inputs(cfg, train, clusters, scores, own_clusters)
    index, labels = inputs.index, inputs.labels
    subsets: dict[str, np.ndarray] = {}
    entries = []  # (spec, seed or None, entry name)
    for p in plan:
        for seed in seeds if p["per_seed"] else [None]:
            key = subset_key(p, seed) if seed is not None else p["name"]
            subsets[key] = select_subset(inputs, p, seed)
            entries.append((p, seed, key))
    lookup = dict(zip(index.tolist(), labels.tolist(), strict=True))
    rows, base_n = [], {}
    for p, seed, key in entries:
        kept = subsets[key]
        counts = class_counts_of([lookup[int(i)] for i in kept])
        if p["method"] == "base":
            base_n[p["data_fraction"], seed] = len(kept)
        ref = (
            base_n.get((p.get("data_fraction"), seed), len(index))
            if p["experiment"] == "small_clusters"
            else len(index)
        )
        rows.append(
            {
                "name": p["name"],
                "entry": key,
                "seed": seed,
                "method": p["method"],
                "experiment": p["experiment"],
                "keep": p.get("keep"),
                "data_fraction": p.get("data_fraction"),
                "remove": p.get("remove"),
                "kernel": p.get("kernel"),
                "n": len(kept),
                "realised_keep": len(kept) / ref,
                "reference_n": ref,
                "min_class": min(counts.values()) if counts else 0,
                "max_class": max(counts.values()) if counts else 0,
                "class_counts": " ".join(f"{c}:{counts.get(c, 0)}" for c in sorted(set(labels.tolist()))),
            }
        )
    summary = pd.DataFrame(rows)
    with tracking_run("prune", dataset, cfg, mlflow_cfg, run_name=f"prune-{dataset}", live=False) as run:
        save_npz(outputs["subsets"], **subsets)
        save_table(outputs["table"], summary)
        run.log_metrics({f"n_{r['entry']}": r["n"] for r in rows})
        run.log_outputs(dict(outputs))
    log.info("%s: %d subsets (%s)", dataset, len(subsets), ", ".join(f"{r['entry']}={r['n']}" for r in rows))
    return summary

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
from ..plan import SCORE_METHODS, check_pruning_config, cluster_keeps, fmt, subset_plan
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


def pruning_inputs(
    cfg: Mapping, train: str | os.PathLike, clusters: str | os.PathLike, scores: str | os.PathLike | None
) -> PruningInputs:
    """Every per-sample quantity the selection rules read, aligned with the training split (file names in errors)."""
    pcfg = cfg["pruning"]
    arr = load_npz(train, what="prepared train split")
    index, labels = np.asarray(arr["index"], dtype=np.int64), np.asarray(arr["y"], dtype=np.int64)
    cl = load_npz(clusters, what="FPC clusters")
    scfg = pcfg["small_clusters"]
    fractions = sorted({float(d) for d in scfg["data_fractions"]}) if scfg["enabled"] else []
    missing = [f"cluster_k{fmt(k)}" for k in cluster_keeps(cfg) if f"cluster_k{fmt(k)}" not in cl]
    missing += [f"small_d{fmt(d)}_index" for d in fractions if f"small_d{fmt(d)}_index" not in cl]
    if missing:
        raise ValueError(
            f"FPC clusters {clusters} were computed for another configuration (no {missing}); rerun the cluster step"
        )
    cpos = _aligned("FPC clusters", cl["index"], index, clusters)
    inputs = PruningInputs(
        index=index,
        labels=labels,
        head_rank=cl["head_rank"][cpos],
        self_max=cl["self_max"][cpos],
        clusters={k: cl[f"cluster_k{fmt(k)}"][cpos] for k in cluster_keeps(cfg)},
        per_class=pcfg["ranking"] == "per_class",
        node_fraction=float(pcfg["node"]["fraction"]),
        small={
            d: (
                np.asarray(cl[f"small_d{fmt(d)}_index"], np.int64),
                np.asarray(cl[f"small_d{fmt(d)}_cluster"], np.int64),
            )
            for d in fractions
        },
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
    mlflow_cfg: Mapping | None = None,
) -> pd.DataFrame:
    """Build every subset of :func:`lpntk.plan.subset_plan` as sorted ORIGINAL indices.

    ``train``: the prepared training split; ``clusters``: the cluster stage's npz; ``scores``: the scores table
    (or None when no method needs it). Writes ``outputs["subsets"]`` (npz: subset name -> original indices) and
    ``outputs["table"]`` (CSV: name, method, experiment, nominal keep, realised keep, size, per-class sizes).
    """
    check_pruning_config(cfg)
    pcfg = cfg["pruning"]
    plan = subset_plan(cfg)
    inputs = pruning_inputs(cfg, train, clusters, scores)
    index, labels = inputs.index, inputs.labels
    subsets: dict[str, np.ndarray] = {}
    for p in plan:  # the small-cluster experiment draws from its own seed
        seed = pcfg["small_clusters"]["seed"] if p["experiment"] == "small_clusters" else pcfg["seed"]
        subsets[p["name"]] = select_subset(inputs, p, int(seed))
    lookup = dict(zip(index.tolist(), labels.tolist(), strict=True))
    rows, base_n = [], {}
    for p in plan:
        kept = subsets[p["name"]]
        counts = class_counts_of([lookup[int(i)] for i in kept])
        if p["method"] == "base":
            base_n[p["data_fraction"]] = len(kept)
        ref = base_n.get(p.get("data_fraction"), len(index)) if p["experiment"] == "small_clusters" else len(index)
        rows.append(
            {
                "name": p["name"],
                "method": p["method"],
                "experiment": p["experiment"],
                "keep": p.get("keep"),
                "data_fraction": p.get("data_fraction"),
                "remove": p.get("remove"),
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
        run.log_metrics({f"n_{r['name']}": r["n"] for r in rows})
        run.log_outputs(dict(outputs))
    log.info("%s: %d subsets (%s)", dataset, len(subsets), ", ".join(f"{r['name']}={r['n']}" for r in rows))
    return summary

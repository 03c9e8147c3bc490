"""Stage prune: every training subset of the pruning plan, as ORIGINAL indices (use case 3; paper-protocols §4.4-4.6).

One job per retraining seed s and prune group (:func:`lpntk.dag.prune_groups`: every method at one kept fraction, or
one small-cluster data fraction), from training run s alone: reads its FPC clusters (on its lpNTK Grams) and its
baseline scores (its dynamics), aligns them with the training split, and applies each subset's selection rule by
name (:data:`lpntk.pruning.SELECTORS`), with seed s's random draws (or the shared ones, ``pruning.draws: shared``).
Every method's spread over retraining seeds thus includes the variance of its selection. Numpy and pandas only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..dag import group_score_columns
from ..io import load_npz, save_npz, save_table
from ..plan import (
    check_pruning_config,
    pruning_seeds,
    small_draw_seed,
    small_key,
    subset_plan,
)
from ..pruning import PruningInputs, class_counts_of, select_subset
from .cluster_stage import clusters_at_keep
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


def _small_clusters(
    cfg: Mapping, seed: int, specs, cl, own, clusters, own_path
) -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
    """{(data fraction, kernel, draw): (members, heads)} of retraining seed ``seed``'s small-cluster draws that the
    subsets ``specs`` select from."""
    wanted = sorted({(float(p["data_fraction"]), p.get("kernel", "full")) for p in specs if "data_fraction" in p})
    if not wanted:
        return {}
    out, missing = {}, []
    draw = small_draw_seed(cfg, seed)
    for d, kernel in wanted:
        src, path = (cl, clusters) if kernel == "full" else (own, own_path)
        key = small_key(d, draw, kernel)
        if src is None or f"{key}_index" not in src:
            missing.append(f"{key}_index")
            continue
        out[d, kernel, draw] = (
            np.asarray(src[f"{key}_index"], np.int64),
            np.asarray(src[f"{key}_cluster"], np.int64),
        )
    if missing:
        raise ValueError(
            f"the clusters files ({clusters}, {own_path}) were computed for another configuration (no "
            f"{missing[:4]}{'...' if len(missing) > 4 else ''}); rerun the cluster steps"
        )
    return out


class _ClustersAt(Mapping):
    """{kept fraction: every sample's FPC head with round(keep N_c) clusters}, aligned with the training split,
    computed on first use from the cluster stage's moves (:func:`lpntk.stages.cluster_stage.clusters_at_keep`)."""

    def __init__(self, cl: Mapping[str, np.ndarray], pos: np.ndarray):
        self._cl, self._pos, self._cache = cl, pos, {}

    def __getitem__(self, keep: float) -> np.ndarray:
        keep = float(keep)
        if keep not in self._cache:
            self._cache[keep] = clusters_at_keep(self._cl, keep)[self._pos]
        return self._cache[keep]

    def __iter__(self):
        return iter(self._cache)

    def __len__(self) -> int:
        return len(self._cache)


def _settings(pcfg: Mapping) -> dict:
    """The selection settings of the pruning block that the job was given (:func:`lpntk.dag.prune_keys`: a key it
    was not given is one its subsets do not read, and keeps :class:`PruningInputs`' placeholder)."""
    kw: dict = {}
    if "ranking" in pcfg:
        kw["per_class"] = pcfg["ranking"] == "per_class"
    if "fraction" in pcfg.get("node", {}):
        kw["node_fraction"] = float(pcfg["node"]["fraction"])
    if "seed" in pcfg:
        kw["seed"] = int(pcfg["seed"])
    scfg = pcfg.get("small_clusters", {})
    if "seed" in scfg:
        kw["small_seed"] = int(scfg["seed"])
    if "tie_break" in scfg:
        kw["tie_break"] = scfg["tie_break"]
    return kw


def pruning_inputs(
    cfg: Mapping,
    seed: int,
    train: str | os.PathLike,
    clusters: str | os.PathLike,
    scores: str | os.PathLike | None,
    own_clusters: str | os.PathLike | None = None,
    subsets: Sequence[Mapping] | None = None,
) -> PruningInputs:
    """Every per-sample quantity the selection rules of ``subsets`` (specs of :func:`lpntk.plan.subset_plan`; None:
    all of them) read for retraining seed ``seed``, aligned with the training split (file names in errors):
    ``clusters`` and ``scores`` are training run ``seed``'s (the cluster stage's npz on its Grams, the scores stage's
    table of its dynamics), ``own_clusters`` the own_clusters stage's npz. The cluster assignment at a kept fraction
    is computed when a rule asks for it."""
    specs = subset_plan(cfg) if subsets is None else list(subsets)
    arr = load_npz(train, what="prepared train split")
    index, labels = np.asarray(arr["index"], dtype=np.int64), np.asarray(arr["y"], dtype=np.int64)
    cl = load_npz(clusters, what="FPC clusters")
    missing = [k for k in ("head_rank", "moves_n", "moves") if k not in cl]
    if missing:
        raise ValueError(f"FPC clusters {clusters} lack {missing} (an older layout); rerun the cluster step")
    own = load_npz(own_clusters, what="own-model clusters") if own_clusters is not None else None
    cpos = _aligned("FPC clusters", cl["index"], index, clusters)
    inputs = PruningInputs(
        index=index,
        labels=labels,
        head_rank=cl["head_rank"][cpos],
        self_max=cl["self_max"][cpos],
        clusters=_ClustersAt(cl, cpos),
        small=_small_clusters(cfg, seed, specs, cl, own, clusters, own_clusters),
        sq_norm=cl["sq_norm"][cpos],
        **_settings(cfg["pruning"]),
    )
    columns = group_score_columns(specs)
    if columns:
        if scores is None:
            raise ValueError(f"pruning.methods need the scores {columns} but no scores table was given")
        table = pd.read_csv(scores)
        missing = sorted(set(columns) - set(table.columns))
        if missing:
            raise ValueError(
                f"scores table {scores} has no column {missing}: rerun the scores stage (a score of one's own is "
                f"computed there once registered, lpntk.register_method(..., score_fn=...))"
            )
        spos = _aligned("scores table", table["index"].to_numpy(np.int64), index, scores)
        table = table.iloc[spos].reset_index(drop=True)
        inputs.scores = {m: table[m].to_numpy(np.float64) for m in columns}
    return inputs


def prune_stage(
    *,
    dataset: str,
    cfg: Mapping,
    seed: int,
    train: str | os.PathLike,
    clusters: str | os.PathLike,
    scores: str | os.PathLike | None,
    outputs: Mapping[str, str],
    own_clusters: str | os.PathLike | None = None,
    subsets: Sequence[Mapping] | None = None,
    group: str | None = None,
    mlflow_cfg: Mapping | None = None,
) -> pd.DataFrame:
    """Build the subsets ``subsets`` (specs of :func:`lpntk.plan.subset_plan`: the workflow gives one prune group's,
    :func:`lpntk.dag.prune_groups`; None: every subset of the plan) for retraining seed ``seed`` as sorted ORIGINAL
    indices, from training run ``seed`` alone.

    ``cfg``: the dataset's block; with ``subsets`` given, its pruning block needs only the keys their selection reads
    (:func:`lpntk.dag.prune_keys`). ``train``: the prepared training split; ``clusters``: the cluster stage's npz of
    seed ``seed`` (FPC on its lpNTK Grams); ``scores``: the scores table of seed ``seed`` (its dynamics; None when no
    method needs it); ``own_clusters``: the own_clusters stage's npz (small-cluster experiment with the subsets' own
    models); ``group``: the prune group's name (the MLflow run's). Writes ``outputs["subsets"]`` (npz: subset name ->
    original indices) and ``outputs["table"]`` (CSV: one row per subset: name, seed, draw (per_seed or shared),
    method, experiment, nominal keep, realised keep, size, per-class sizes).
    """
    seed = int(seed)
    if subsets is None:
        check_pruning_config(cfg)
        if seed not in pruning_seeds(cfg):
            raise ValueError(f"seed {seed} is not a retraining seed of the pruning experiment {pruning_seeds(cfg)}")
    plan = subset_plan(cfg) if subsets is None else [dict(p) for p in subsets]
    inputs = pruning_inputs(cfg, seed, train, clusters, scores, own_clusters, plan)
    index, labels = inputs.index, inputs.labels
    subsets = {p["name"]: select_subset(inputs, p, seed if p["per_seed"] else None) for p in plan}
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
                "seed": seed,
                "draw": "per_seed" if p["per_seed"] else "shared",
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
    name = f"prune-{dataset}-seed{seed}" + (f"-{group}" if group else "")
    tags = {"group": group} if group else None
    with tracking_run("prune", dataset, cfg, mlflow_cfg, seed=seed, tags=tags, run_name=name, live=False) as run:
        save_npz(outputs["subsets"], **subsets)
        save_table(outputs["table"], summary)
        run.log_metrics({f"n_{r['name']}": r["n"] for r in rows})
        run.log_outputs(dict(outputs))
    log.info(
        "%s seed %d: %d subsets (%s)", dataset, seed, len(subsets), ", ".join(f"{r['name']}={r['n']}" for r in rows)
    )
    return summary

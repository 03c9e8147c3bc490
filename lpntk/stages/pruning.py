"""Stages cluster, prune, retrain and pruning_table: use case 3 (paper-protocols §1.6, §4.4-4.6, §7 A6-A9, A13).

* ``cluster`` (per dataset): farthest point clustering of every class on its lpNTK Gram at the reference
  checkpoint, run once to the largest cluster count needed (heads are nested), with the assignments at the
  configured counts; and, for the small-cluster experiment, FPC of seeded class-balanced 1 % / 5 % subsets on
  their sub-Grams (the per-class Gram restricted to the subset, still at the full-data checkpoint).
* ``prune`` (per dataset): every subset of the plan (:func:`subset_plan`) as ORIGINAL indices.
* ``retrain`` (per dataset, unit and shard): train from scratch on the subsets of one unit with the dataset's
  recipe (``pruning.retrain`` may override epochs and seeds), one MLflow run per subset and seed. A unit is one
  subset (``group_by: subset``, the default), one method's subsets or one small-cluster data fraction
  (``method``), or everything (``all``); a shard is ``all`` (every seed in one job: each job pays seconds of
  imports) or ``seed<n>`` (``batch_seeds: false``, one job per seed for a cluster).
* ``pruning_table`` (per dataset): mean +- std over seeds of every subset, the slides' table beside ours,
  and the two figures.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..clustering import cluster_sizes, farthest_point_clustering, head_rank, self_max, symmetrize_upper
from ..data import Split, load_prepared
from ..io import atomic_path, load_json, load_npz, save_json, save_npz, save_table
from ..pruning import (
    accuracy_summary,
    class_balanced_subset,
    class_counts_of,
    keep_count,
    remove_large_clusters,
    remove_random,
    remove_small_clusters,
    select_cluster_random,
    select_gated_heads,
    select_heads,
    select_node,
    select_top,
)
from .common import build_from_config, log, set_threads, tracking_run

__all__ = [
    "KEEP_METHODS",
    "SLIDES",
    "subset_plan",
    "retrain_settings",
    "retrain_shards",
    "retrain_units",
    "cluster_keeps",
    "cluster_stage",
    "prune_stage",
    "subset_split",
    "retrain_stage",
    "aggregate_runs",
    "pruning_table_stage",
]

#: methods selecting a kept fraction of the training set (one subset per keep fraction)
KEEP_METHODS = ("lpntk", "lpntk_gated", "lpntk_random", "el2n", "grand", "forgetting", "random")
SCORE_METHODS = ("el2n", "grand", "forgetting")
#: the authors' slides ("Experiment Results on Pruning Image Training Sets"), test accuracy in %, mean and std;
#: the kept fraction is not stated. Keyed by torchvision dataset name.
SLIDES = {
    "MNIST": {
        "full": (99.31, 0.03),
        "lpntk": (99.37, 0.04),
        "el2n": (99.33, 0.06),
        "grand": (99.28, 0.05),
        "forgetting": (99.26, 0.06),
    },
    "CIFAR10": {
        "full": (93.28, 0.06),
        "lpntk": (93.55, 0.12),
        "el2n": (93.32, 0.07),
        "grand": (92.87, 0.13),
        "forgetting": (92.64, 0.22),
    },
}
METRICS = ("test_acc_best_val", "test_acc_last", "test_acc_max")
_SMALL_METHODS = {"small": "small_clusters", "random": "random_removal", "large": "large_clusters"}


def _fmt(x: float) -> str:
    return f"{float(x):g}"


# ---------------------------------------------------------------------------------------------- the plan


def subset_plan(cfg: Mapping) -> list[dict]:
    """Every training subset the config asks for, in a fixed order: name, method, experiment and parameters.

    ``full``; ``<method>-k<keep>`` for every method of ``pruning.methods`` that keeps a fraction (lpntk and
    random also at ``pruning.curve_keep``); ``node-c<cluster_keep>``; and for the small-cluster experiment
    ``d<fraction>-base`` (the class-balanced subset itself) and ``d<fraction>-<small|random|large>-r<remove>``.
    """
    pcfg = cfg["pruning"]
    plan = [{"name": "full", "method": "full", "experiment": "table", "keep": 1.0}]
    for method in pcfg["methods"]:
        if method == "node":
            ck = float(pcfg["node"]["cluster_keep"])
            plan.append(
                {"name": f"node-c{_fmt(ck)}", "method": "node", "experiment": "table", "keep": None, "cluster_keep": ck}
            )
            continue
        keeps = [float(k) for k in pcfg["keep"]]
        if method in ("lpntk", "random"):
            keeps += [float(k) for k in pcfg.get("curve_keep") or []]
        for keep in sorted(set(keeps), reverse=True):
            plan.append({"name": f"{method}-k{_fmt(keep)}", "method": method, "experiment": "table", "keep": keep})
    scfg = pcfg["small_clusters"]
    if scfg["enabled"]:
        for d in sorted({float(x) for x in scfg["data_fractions"]}):
            plan.append(
                {
                    "name": f"d{_fmt(d)}-base",
                    "method": "base",
                    "experiment": "small_clusters",
                    "data_fraction": d,
                    "remove": 0.0,
                    "keep": 1.0,
                }
            )
            for r in sorted({float(x) for x in scfg["remove"]}):
                for m in ["small", *scfg["controls"]]:
                    plan.append(
                        {
                            "name": f"d{_fmt(d)}-{m}-r{_fmt(r)}",
                            "method": _SMALL_METHODS[m],
                            "experiment": "small_clusters",
                            "data_fraction": d,
                            "remove": r,
                            "keep": 1.0 - r,
                        }
                    )
    names = [p["name"] for p in plan]
    if len(set(names)) != len(names):
        raise ValueError(f"pruning: subset names repeat ({names}); check pruning.methods for duplicates")
    return plan


def retrain_settings(cfg: Mapping) -> dict:
    """Seeds and epochs of the retraining runs: ``pruning.retrain`` overrides, else the ``train`` block;
    ``small_epochs``: ``pruning.small_clusters.epochs``, else the same epochs."""
    rcfg = cfg["pruning"]["retrain"]
    seeds = [int(s) for s in (rcfg.get("seeds") or cfg["train"]["seeds"])]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"pruning.retrain.seeds repeat: {seeds}")
    epochs = int(rcfg.get("epochs") or cfg["train"]["epochs"])
    return {
        "seeds": seeds,
        "epochs": epochs,
        "small_epochs": int(cfg["pruning"]["small_clusters"].get("epochs") or epochs),
    }


def retrain_shards(cfg: Mapping) -> list[str]:
    """``["all"]`` (every seed in one job) or ``["seed1", "seed2", ...]`` (``pruning.retrain.batch_seeds: false``)."""
    if cfg["pruning"]["retrain"]["batch_seeds"]:
        return ["all"]
    return [f"seed{s}" for s in retrain_settings(cfg)["seeds"]]


def retrain_units(cfg: Mapping) -> dict[str, list[str]]:
    """The retraining jobs' units: {unit name: subset names}, after ``pruning.retrain.group_by``.

    ``subset``: one unit per subset (unit = subset name); ``method``: one unit per method of the table (all its
    kept fractions) and one per data fraction of the small-cluster experiment (``d<fraction>``); ``all``: a
    single unit ``all``. Grouping only saves per-job start-up time; the runs and their seeds are the same.
    """
    group_by = cfg["pruning"]["retrain"]["group_by"]
    units: dict[str, list[str]] = {}
    for p in subset_plan(cfg):
        if group_by == "subset":
            unit = p["name"]
        elif group_by == "method":
            unit = p["method"] if p["experiment"] == "table" else f"d{_fmt(p['data_fraction'])}"
        else:
            unit = "all"
        units.setdefault(unit, []).append(p["name"])
    return units


def cluster_keeps(cfg: Mapping) -> list[float]:
    """Kept fractions at which the cluster stage records the FPC assignment (all keeps, node's cluster_keep)."""
    pcfg = cfg["pruning"]
    keeps = {float(k) for k in pcfg["keep"]} | {float(k) for k in pcfg.get("curve_keep") or []}
    if "node" in pcfg["methods"]:
        keeps.add(float(pcfg["node"]["cluster_keep"]))
    return sorted(keeps, reverse=True)


def _check_pruning_config(cfg: Mapping) -> None:
    pcfg = cfg["pruning"]
    for key in ("keep", "curve_keep"):
        bad = [k for k in pcfg.get(key) or [] if not 0 < float(k) < 1]
        if bad:
            raise ValueError(f"pruning.{key}: kept fractions must lie in (0, 1), got {bad}")
    scfg = pcfg["small_clusters"]
    if scfg["enabled"]:
        bad = [r for r in scfg["remove"] if not 0 < float(r) < 1]
        if bad:
            raise ValueError(f"pruning.small_clusters.remove: fractions must lie in (0, 1), got {bad}")


# ---------------------------------------------------------------------------------------------- cluster


def _kernel_class(path: str | os.PathLike) -> dict[str, np.ndarray]:
    k = load_npz(path, what="per-class lpNTK Gram")
    for key in ("gram", "index", "position", "label", "sq_norm"):
        if key not in k:
            raise ValueError(f"per-class lpNTK Gram {path} has no {key!r}; rerun the kernel step")
    return k


def cluster_stage(
    dataset: str,
    cfg: Mapping,
    kernels: Sequence[str | os.PathLike],
    outputs: Mapping[str, str],
    mlflow_cfg: Mapping | None = None,
) -> pd.DataFrame:
    """FPC of every class at every configured cluster count, and of the small-cluster experiment's subsets.

    Writes ``outputs["clusters"]`` (npz, one entry per training sample, classes in label order): ``index``
    (original), ``label``, ``position``, ``sq_norm`` (|phi|^2), ``head_rank`` (creation rank of the sample as
    an FPC head within its class, -1 if never), ``self_max`` (the official code's flag), ``cluster_k<keep>``
    (the original index of the sample's head with round(keep N_c) clusters); and per small-cluster data
    fraction d: ``small_d<d>_index`` (the subset) and ``small_d<d>_cluster`` (head of each member).
    ``outputs["summary"]`` (CSV): per class and setting, cluster counts and sizes.
    """
    _check_pruning_config(cfg)
    pcfg = cfg["pruning"]
    scfg = pcfg["small_clusters"]
    keeps = cluster_keeps(cfg)
    fractions = sorted({float(x) for x in scfg["data_fractions"]}) if scfg["enabled"] else []
    rows: list[dict] = []
    parts: dict[int, dict[str, np.ndarray]] = {}  # class -> its arrays (classes are processed one at a time)
    t0 = time.perf_counter()
    with tracking_run("cluster", dataset, cfg, mlflow_cfg, run_name=f"cluster-{dataset}") as run:
        for path in kernels:
            k = _kernel_class(path)
            c = int(k["label"])
            if c in parts:
                raise ValueError(f"two kernel files hold class {c} ({path})")
            S = symmetrize_upper(k["gram"])
            del k["gram"]
            index = np.asarray(k["index"], dtype=np.int64)
            n = len(index)
            ks = {keep: keep_count(n, keep) for keep in keeps}
            res = farthest_point_clustering(S, max(ks.values()), snapshots=ks.values())
            sm = self_max(S)
            part = {
                "index": index,
                "label": np.full(n, c, dtype=np.int64),
                "position": np.asarray(k["position"], dtype=np.int64),
                "sq_norm": np.diag(S).copy(),
                "head_rank": head_rank(res, n),
                "self_max": sm,
            }
            for keep, kc in ks.items():
                snap = res.snapshots.get(kc, res.cluster)  # stopped early: the final assignment
                part[f"cluster_k{_fmt(keep)}"] = index[res.heads[snap]]
                sizes = cluster_sizes(snap, min(kc, len(res.heads)))
                rows.append(
                    {
                        "class": c,
                        "setting": "full",
                        "keep": keep,
                        "n": n,
                        "k": kc,
                        "clusters": int((sizes > 0).sum()),
                        "largest": int(sizes.max()),
                        "singletons": int((sizes == 1).sum()),
                        "median_size": float(np.median(sizes)),
                        "self_max": int(sm.sum()),
                        "stopped_early": bool(len(res.heads) < kc),
                    }
                )
            for d in fractions:  # FPC of the class-balanced subset on its sub-Gram (full-data checkpoint)
                sub = class_balanced_subset(index, part["label"], d, int(scfg["seed"]))
                sel = np.flatnonzero(np.isin(index, sub))
                kc = max(1, keep_count(len(sel), float(scfg["cluster_keep"])))
                S_sub = S[np.ix_(sel, sel)]
                res = farthest_point_clustering(S_sub, kc)
                part[f"small_d{_fmt(d)}_index"] = index[sel]
                part[f"small_d{_fmt(d)}_cluster"] = index[sel][res.heads[res.cluster]]
                sizes = cluster_sizes(res.cluster, len(res.heads))
                rows.append(
                    {
                        "class": c,
                        "setting": f"d{_fmt(d)}",
                        "keep": float(scfg["cluster_keep"]),
                        "n": len(sel),
                        "k": kc,
                        "clusters": len(res.heads),
                        "largest": int(sizes.max()),
                        "singletons": int((sizes == 1).sum()),
                        "median_size": float(np.median(sizes)),
                        "self_max": int(self_max(S_sub).sum()),
                        "stopped_early": bool(res.stopped_early),
                    }
                )
            parts[c] = part
            del S
        order = sorted(parts)
        arrays = {key: np.concatenate([parts[c][key] for c in order]) for key in parts[order[0]]}
        rows.sort(key=lambda r: (r["setting"] != "full", r["setting"], r["class"], -r["keep"]))
        summary = pd.DataFrame(rows)
        save_npz(outputs["clusters"], **arrays)
        save_table(outputs["summary"], summary)
        seconds = time.perf_counter() - t0
        metrics = {"seconds": seconds, "self_max_rate": float(arrays["self_max"].mean())}
        for (setting, keep), grp in summary.groupby(["setting", "keep"], sort=True):
            tag = f"{setting}_k{_fmt(keep)}"
            metrics[f"clusters_{tag}"] = int(grp["clusters"].sum())
            metrics[f"largest_{tag}"] = int(grp["largest"].max())
            metrics[f"singletons_{tag}"] = int(grp["singletons"].sum())
        run.log_metrics(metrics)
        run.log_outputs(dict(outputs))
    if summary["stopped_early"].any():
        log.warning(
            "%s: FPC stopped early (every cluster's farthest member is its head) for %s",
            dataset,
            summary.loc[summary["stopped_early"], ["class", "setting", "keep"]].to_dict("records"),
        )
    log.info("%s: FPC of %d classes at keeps %s in %.1f s", dataset, len(parts), keeps, seconds)
    return summary


# ---------------------------------------------------------------------------------------------- prune


def _load_train_ids(train_npz: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    arr = load_npz(train_npz, what="prepared train split")
    return np.asarray(arr["index"], dtype=np.int64), np.asarray(arr["y"], dtype=np.int64)


def _aligned(name: str, src_index: np.ndarray, index: np.ndarray, path) -> np.ndarray:
    """Positions p such that src_index[p] == index, with a clear error if the sets differ."""
    if len(src_index) != len(index) or not np.array_equal(np.sort(src_index), np.sort(index)):
        raise ValueError(
            f"{name} {path} does not cover the training split ({len(src_index)} vs {len(index)} "
            f"samples, or different indices); rerun the step that produces it"
        )
    order = np.argsort(src_index)
    return order[np.searchsorted(src_index[order], index)]


def prune_stage(
    dataset: str,
    cfg: Mapping,
    train_npz: str | os.PathLike,
    clusters: str | os.PathLike,
    scores: str | os.PathLike | None,
    outputs: Mapping[str, str],
    mlflow_cfg: Mapping | None = None,
) -> pd.DataFrame:
    """Build every subset of :func:`subset_plan` as sorted ORIGINAL indices.

    Writes ``outputs["subsets"]`` (npz: subset name -> original indices) and ``outputs["table"]`` (CSV: name,
    method, experiment, nominal keep, realised keep, size, per-class sizes).
    """
    _check_pruning_config(cfg)
    pcfg = cfg["pruning"]
    seed = int(pcfg["seed"])
    plan = subset_plan(cfg)
    index, labels = _load_train_ids(train_npz)
    cl = load_npz(clusters, what="FPC clusters")
    missing = [f"cluster_k{_fmt(k)}" for k in cluster_keeps(cfg) if f"cluster_k{_fmt(k)}" not in cl]
    if pcfg["small_clusters"]["enabled"]:
        missing += [
            f"small_d{_fmt(d)}_index"
            for d in pcfg["small_clusters"]["data_fractions"]
            if f"small_d{_fmt(d)}_index" not in cl
        ]
    if missing:
        raise ValueError(
            f"FPC clusters {clusters} were computed for another configuration (no {missing}); rerun the cluster step"
        )
    cpos = _aligned("FPC clusters", cl["index"], index, clusters)
    rank, selfmax, sq_norm = cl["head_rank"][cpos], cl["self_max"][cpos], cl["sq_norm"][cpos]
    need_scores = any(p["method"] in (*SCORE_METHODS, "random") for p in plan)
    if need_scores:
        if scores is None:
            raise ValueError("pruning.methods need the baseline scores but no scores table was given")
        table = pd.read_csv(scores)
        spos = _aligned("scores table", table["index"].to_numpy(np.int64), index, scores)
        table = table.iloc[spos].reset_index(drop=True)
        tiebreak = table["random"].to_numpy(np.float64)
    per_class_rank = pcfg["ranking"] == "per_class"
    subsets: dict[str, np.ndarray] = {}
    small_removed: dict = {}  # (data fraction, remove) -> removed counts per class, and the kept subset
    for p in plan:
        m, name = p["method"], p["name"]
        if m == "full":
            kept = np.sort(index)
        elif m == "lpntk":
            kept = select_heads(index, labels, rank, p["keep"])
        elif m == "lpntk_gated":
            kept = select_gated_heads(index, labels, rank, selfmax, p["keep"])
        elif m == "lpntk_random":
            kept = select_cluster_random(index, labels, cl[f"cluster_k{_fmt(p['keep'])}"][cpos], seed)
        elif m == "node":
            kept = select_node(
                index, labels, cl[f"cluster_k{_fmt(p['cluster_keep'])}"][cpos], seed, float(pcfg["node"]["fraction"])
            )
        elif m in SCORE_METHODS:
            kept = select_top(
                index, labels, table[m].to_numpy(np.float64), p["keep"], per_class=per_class_rank, tiebreak=tiebreak
            )
        elif m == "random":  # class-balanced uniform: per-class top-k of seeded uniform scores
            kept = select_top(index, labels, table["random"].to_numpy(np.float64), p["keep"], per_class=True)
        else:  # small-cluster experiment
            kept = _small_cluster_subset(p, cl, index, labels, sq_norm, pcfg["small_clusters"], small_removed)
        if not np.isin(kept, index).all() or len(np.unique(kept)) != len(kept):
            raise AssertionError(f"subset {name} is not a subset of the training split")  # internal invariant
        subsets[name] = kept
    lookup = dict(zip(index.tolist(), labels.tolist(), strict=True))
    rows = []
    base_n = {}
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
    with tracking_run("prune", dataset, cfg, mlflow_cfg, run_name=f"prune-{dataset}") as run:
        save_npz(outputs["subsets"], **subsets)
        save_table(outputs["table"], summary)
        run.log_metrics({f"n_{r['name']}": r["n"] for r in rows})
        run.log_outputs(dict(outputs))
    log.info("%s: %d subsets (%s)", dataset, len(subsets), ", ".join(f"{r['name']}={r['n']}" for r in rows))
    return summary


def _small_cluster_subset(
    p: Mapping,
    cl: Mapping[str, np.ndarray],
    index: np.ndarray,
    labels: np.ndarray,
    sq_norm: np.ndarray,
    scfg: Mapping,
    removed_cache: dict,
) -> np.ndarray:
    d = _fmt(p["data_fraction"])
    sub = np.asarray(cl[f"small_d{d}_index"], dtype=np.int64)
    head = np.asarray(cl[f"small_d{d}_cluster"], dtype=np.int64)
    lookup = dict(zip(index.tolist(), labels.tolist(), strict=True))
    sub_labels = np.asarray([lookup[int(i)] for i in sub], dtype=np.int64)
    if p["method"] == "base":
        return np.sort(sub)
    key = (d, p["remove"])
    norms = dict(zip(index.tolist(), sq_norm.tolist(), strict=True))
    seed = int(scfg["seed"])
    if key not in removed_cache:
        kept, removed = remove_small_clusters(
            sub,
            sub_labels,
            head,
            p["remove"],
            tie_break=scfg["tie_break"],
            seed=seed,
            head_sq_norm={int(h): norms[int(h)] for h in head},
        )
        removed_cache[key] = removed
        removed_cache[(d, p["remove"], "kept")] = kept
    removed = removed_cache[key]
    if p["method"] == "small_clusters":
        return removed_cache[(d, p["remove"], "kept")]
    if p["method"] == "random_removal":
        return remove_random(sub, sub_labels, removed, seed)
    if p["method"] == "large_clusters":
        return remove_large_clusters(sub, sub_labels, head, removed, seed)
    raise ValueError(f"unknown subset method {p['method']!r}")


# ---------------------------------------------------------------------------------------------- retrain


def subset_split(train: Split, indices) -> Split:
    """The training samples with the given ORIGINAL indices, in training-split order (error if any is missing)."""
    indices = np.asarray(indices, dtype=np.int64)
    all_index = train.index.numpy()
    mask = np.isin(all_index, indices)
    if int(mask.sum()) != len(np.unique(indices)):
        missing = np.setdiff1d(indices, all_index)[:5].tolist()
        raise ValueError(f"subset holds original indices not in the training split (e.g. {missing}); rerun prune")
    return train.subset(np.flatnonzero(mask))


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.sort(np.asarray(a, dtype=np.int64))).tobytes()).hexdigest()[:16]


def retrain_stage(
    dataset: str,
    cfg: Mapping,
    unit: str,
    shard: str,
    data_dir: str | os.PathLike,
    subsets: str | os.PathLike,
    output: str | os.PathLike,
    threads: int | None = None,
    mlflow_cfg: Mapping | None = None,
) -> dict:
    """Train fresh models on every subset of one unit (:func:`retrain_units`), one per seed of the shard.

    Each run uses the dataset's recipe (``pruning.retrain`` may override epochs and seeds, and
    ``pruning.small_clusters.epochs`` the epochs of the small-cluster experiment), validation and test
    splits from the prepared data, and no per-sample recording. Writes ``output`` (JSON): per subset its
    description, size and index checksum, and per seed ``test_acc_best_val``, ``test_acc_last``,
    ``test_acc_max`` (official metric), ``val_acc_best``, ``best_epoch`` and the per-epoch history. One MLflow
    run per subset and seed (rule ``retrain``; tags ``lpntk.method``, ``lpntk.keep``, ``lpntk.seed``,
    ``lpntk.subset``, ``lpntk.experiment``; metrics ``test_acc_best_val``, ``test_acc_last``, ``test_acc_max``).
    """
    from ..train import Recipe, select_device

    set_threads(threads)
    units = retrain_units(cfg)
    if unit not in units:
        raise ValueError(f"retraining unit {unit!r} is not in the config's plan ({', '.join(units)})")
    plan = {p["name"]: p for p in subset_plan(cfg)}
    settings = retrain_settings(cfg)
    if shard == "all":
        seeds = settings["seeds"]
    elif shard.startswith("seed") and shard[4:].isdigit() and int(shard[4:]) in settings["seeds"]:
        seeds = [int(shard[4:])]
    else:
        raise ValueError(f"shard {shard!r}: expected 'all' or seed<n> with n in {settings['seeds']}")
    prep = load_prepared(data_dir)
    if len(prep.val) == 0:
        raise ValueError(
            f"dataset {dataset!r}: retraining reports the test accuracy at the best validation epoch "
            f"and needs a validation split; set val_fraction > 0"
        )
    arr = load_npz(subsets, what="pruned subsets")
    missing = [name for name in units[unit] if name not in arr]
    if missing:
        raise ValueError(f"{subsets} has no subset {missing}; rerun the prune step")
    device = select_device(cfg.get("device", "auto"))
    records = []
    for name in units[unit]:
        epochs = settings["small_epochs" if plan[name]["experiment"] == "small_clusters" else "epochs"]
        recipe = Recipe.from_config(
            {**cfg["train"], "epochs": epochs, "score_epochs": [], "select": "val"}, cfg.get("augment")
        )
        records.append(
            _retrain_subset(
                dataset, cfg, plan[name], subset_split(prep.train, arr[name]), prep, recipe, seeds, device, mlflow_cfg
            )
        )
    out = {"dataset": dataset, "unit": unit, "shard": shard, "epochs": settings["epochs"], "subsets": records}
    save_json(output, out)
    return out


def _retrain_subset(
    dataset: str,
    cfg: Mapping,
    spec: Mapping,
    train: Split,
    prep,
    recipe,
    seeds: Sequence[int],
    device,
    mlflow_cfg: Mapping | None,
) -> dict:
    from ..train import seed_everything, train_model

    subset = spec["name"]
    tags = {
        "method": spec["method"],
        "subset": subset,
        "experiment": spec["experiment"],
        "keep": _fmt(spec["keep"]) if spec.get("keep") is not None else "realised",
        "n_train": len(train),
        "device": str(device),
    }
    if spec["experiment"] == "small_clusters":
        tags.update({"data_fraction": _fmt(spec["data_fraction"]), "remove": _fmt(spec["remove"])})
    runs = []
    for seed in seeds:
        with tracking_run(
            "retrain",
            dataset,
            cfg,
            mlflow_cfg,
            seed=seed,
            tags=tags,
            params={"subset": subset, "retrain_epochs": recipe.epochs},
            run_name=f"retrain-{dataset}-{subset}-seed{seed}",
        ) as run:
            seed_everything(seed)
            model = build_from_config(cfg, prep.info)
            t0 = time.perf_counter()
            result = train_model(
                model,
                train,
                recipe,
                seed,
                mean=prep.info.mean,
                std=prep.info.std,
                val=prep.val,
                test=prep.test,
                device=device,
                record=False,
                on_epoch=lambda row, run=run: run.log_metrics(
                    {k: row[k] for k in ("val_acc", "test_acc", "train_loss", "lr") if k in row}, step=int(row["epoch"])
                ),
            )
            seconds = time.perf_counter() - t0
            acc = accuracy_summary(result.history)
            run.log_metrics({**acc, "n_train": len(train), "seconds": seconds})
            history = [
                {k: h[k] for k in ("epoch", "lr", "train_loss", "val_acc", "test_acc") if k in h}
                for h in result.history
            ]
            runs.append({"seed": int(seed), **acc, "history": history})
            log.info(
                "%s %s seed %d: n=%d, test acc %.4f at best val (epoch %d), last %.4f, max %.4f (%.1f s)",
                dataset,
                subset,
                seed,
                len(train),
                acc["test_acc_best_val"],
                acc["best_epoch"],
                acc["test_acc_last"],
                acc["test_acc_max"],
                seconds,
            )
    return {
        "subset": subset,
        **{k: v for k, v in spec.items() if k != "name"},
        "n_train": len(train),
        "index_sha256": _sha256(train.index.numpy()),
        "epochs": recipe.epochs,
        "runs": runs,
    }


# ---------------------------------------------------------------------------------------------- table


def aggregate_runs(results: Sequence[Mapping], n_full: int | None = None) -> pd.DataFrame:
    """One row per subset of the retraining results: mean and sample std (ddof=1) over seeds of each metric, in %."""
    by_subset: dict[str, dict] = {}
    for rec in (r for res in results for r in res["subsets"]):
        entry = by_subset.setdefault(rec["subset"], {**{k: v for k, v in rec.items() if k != "runs"}, "runs": []})
        entry["runs"].extend(rec["runs"])
    rows = []
    for name, rec in by_subset.items():
        seeds = sorted(r["seed"] for r in rec["runs"])
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"subset {name}: seeds repeat across shards: {seeds}")
        row = {
            "subset": name,
            "method": rec["method"],
            "experiment": rec["experiment"],
            "keep": rec.get("keep"),
            "data_fraction": rec.get("data_fraction"),
            "remove": rec.get("remove"),
            "n_train": rec["n_train"],
            "n_seeds": len(seeds),
            "epochs": rec.get("epochs"),
        }
        if n_full:
            row["realised_keep"] = rec["n_train"] / n_full
        for m in METRICS:
            vals = 100.0 * np.asarray([r[m] for r in rec["runs"]], dtype=np.float64)
            row[f"{m}_mean"] = float(vals.mean())
            row[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def _pm(mean: float, std: float, digits: int = 2) -> str:
    if mean is None or not np.isfinite(mean):
        return ""
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if np.isfinite(std) else f"{mean:.{digits}f}"


def _slides_key(cfg: Mapping) -> str | None:
    if cfg.get("source") == "torchvision" and cfg.get("name") in SLIDES:
        return cfg["name"]
    return None


def _wide(df: pd.DataFrame, metric: str, slides: Mapping | None, methods: Sequence[str]) -> pd.DataFrame:
    table = df[df["experiment"] == "table"]
    keep_rows = table[table["keep"].notna()]
    keeps = sorted({float(k) for k in keep_rows["keep"]}, reverse=True)
    rows = []
    for m in methods:
        row = {"method": m}
        if slides is not None:
            row["slides (keep not stated)"] = _pm(*slides[m]) if m in slides else ""
        for k in keeps:
            hit = keep_rows[(keep_rows["method"] == m) & np.isclose(keep_rows["keep"].astype(float), k)]
            row[f"keep {k:g}"] = _pm(hit[f"{metric}_mean"].iloc[0], hit[f"{metric}_std"].iloc[0]) if len(hit) else ""
        rows.append(row)
    return pd.DataFrame(rows)


def pruning_table_stage(
    dataset: str,
    cfg: Mapping,
    runs: Sequence[str | os.PathLike],
    subsets_table: str | os.PathLike,
    outputs: Mapping[str, str],
    mlflow_cfg: Mapping | None = None,
) -> pd.DataFrame:
    """Aggregate the retraining runs: ``outputs["csv"]`` (long: one row per subset, plus the slides' rows),
    ``outputs["md"]`` (wide tables with the slides beside ours), the figures ``outputs["fig_redundant"]`` /
    ``outputs["fig_small"]`` (PNG) and ``outputs["fig_redundant_pdf"]`` / ``outputs["fig_small_pdf"]``."""
    from ..figures.pruning import plot_redundant_removal, plot_small_clusters

    sizes = pd.read_csv(subsets_table)
    n_full = int(sizes.loc[sizes["name"] == "full", "n"].iloc[0])
    records = [load_json(p, what="retraining result") for p in runs]
    df = aggregate_runs(records, n_full)
    order = {p["name"]: i for i, p in enumerate(subset_plan(cfg))}
    df = df.sort_values("subset", key=lambda s: s.map(order)).reset_index(drop=True)
    small = df["experiment"] == "small_clusters"
    if small.any():  # realised keep of the small-cluster experiment relative to its class-balanced subset
        ref = sizes.set_index("name")["reference_n"]
        df.loc[small, "realised_keep"] = df.loc[small, "n_train"] / df.loc[small, "subset"].map(ref).to_numpy()
    df.insert(0, "source", "ours")
    df.insert(1, "dataset", dataset)
    key = _slides_key(cfg)
    slides = SLIDES.get(key) if key else None
    long = df
    if slides is not None:
        srows = pd.DataFrame(
            [
                {
                    "source": "slides",
                    "dataset": dataset,
                    "subset": "",
                    "method": m,
                    "experiment": "table",
                    "reported_acc_mean": v[0],
                    "reported_acc_std": v[1],
                }
                for m, v in slides.items()
            ]
        )
        long = pd.concat([df, srows], ignore_index=True)
    methods = ["full", *[m for m in cfg["pruning"]["methods"] if m != "node"]]
    n_seeds = int(df["n_seeds"].max())
    table_epochs = sorted({int(e) for e in df.loc[~small, "epochs"]})
    lines = [
        f"# Pruning the training set of {dataset}: test accuracy (%) of models retrained from scratch",
        "",
        f"Mean ± sample std (ddof=1) over {n_seeds} seeds, {'/'.join(map(str, table_epochs))} epochs per "
        "run. "
        "The authors' slides give one number per method for MNIST and CIFAR-10 without stating the kept "
        "fraction (and, as the official code, probably the maximum test accuracy over epochs)."
        + ("" if slides else f" The slides have no numbers for this dataset ({cfg.get('name')})."),
        "",
    ]
    for metric, title in (
        ("test_acc_best_val", "test accuracy at the best-validation epoch (main)"),
        (
            "test_acc_max",
            "maximum test accuracy over epochs (the official code's metric; selects on the test set, optimistic)",
        ),
        ("test_acc_last", "test accuracy at the last epoch"),
    ):
        lines += [f"## {title}", "", _wide(df, metric, slides, methods).to_markdown(index=False), ""]
    other = df[(df["experiment"] == "table") & df["keep"].isna()]
    if len(other):
        lines += [
            "## other variants (kept fraction is an outcome)",
            "",
            other.assign(
                realised=other["realised_keep"].map(lambda v: f"{v:.3f}"),
                acc=[
                    _pm(a, b)
                    for a, b in zip(other["test_acc_best_val_mean"], other["test_acc_best_val_std"], strict=True)
                ],
            )[["subset", "method", "n_train", "realised", "acc"]].to_markdown(index=False),
            "",
        ]
    if small.any():
        s = df[small]
        lines += [
            f"## small-cluster removal on class-balanced subsets (test accuracy at best validation; "
            f"{'/'.join(str(int(e)) for e in sorted(set(s['epochs'])))} epochs per run)",
            "",
            s.assign(
                realised=s["realised_keep"].map(lambda v: f"{v:.3f}"),
                acc=[_pm(a, b) for a, b in zip(s["test_acc_best_val_mean"], s["test_acc_best_val_std"], strict=True)],
            )[["subset", "method", "data_fraction", "remove", "n_train", "realised", "acc"]].to_markdown(index=False),
            "",
        ]
    with tracking_run("pruning_table", dataset, cfg, mlflow_cfg, run_name=f"pruning_table-{dataset}") as run:
        save_table(outputs["csv"], long)
        with atomic_path(outputs["md"]) as tmp:
            tmp.write_text("\n".join(lines))
        plot_redundant_removal(df, dataset, outputs["fig_redundant"], outputs["fig_redundant_pdf"])
        plot_small_clusters(df, dataset, outputs["fig_small"], outputs["fig_small_pdf"])
        metrics = {}
        for _, r in df[df["experiment"] == "table"].iterrows():
            metrics[f"{r['subset']}_test_acc_best_val"] = r["test_acc_best_val_mean"]
            metrics[f"{r['subset']}_test_acc_max"] = r["test_acc_max_mean"]
        run.log_metrics(metrics)
        run.log_outputs(dict(outputs))
    log.info("%s: pruning table of %d subsets", dataset, len(df))
    return long

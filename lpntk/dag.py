"""What each job of the workflow is given: the config keys it reads and, for use case 3, the subsets it holds.

Snakemake reruns a job when its params, its input files or its code change (``--rerun-triggers``, all of them by
default), and the jobs downstream of it with it; a job reruns whole. So each job gets only what it reads, and the
jobs of use case 3 are cut so that one kept fraction is one set of jobs:

* every job's ``cfg`` param is its dataset block restricted to the data keys, the stage blocks it reads and single
  keys of others (:func:`job_config`);
* ``cluster`` ranks every sample of a class by farthest point clustering and keeps every sample's moves, so it reads
  no kept fraction (:data:`CLUSTER_KEYS`); ``own_clusters`` reads the small-cluster keys (:data:`OWN_CLUSTERS_KEYS`);
* ``prune`` runs once per retraining seed and *prune group* (:func:`prune_groups`, :func:`lpntk.plan.subset_group`:
  every method at one kept fraction, a method whose kept fraction is an outcome, or one small-cluster data
  fraction), given the group's
  subset specs and the keys their selection reads (:func:`prune_keys`); the full training set needs no selection;
* ``retrain`` reads the subsets files of the groups its unit holds (:func:`retrain_groups`) and is given the unit's
  subset specs, the shard's seeds and epochs (:func:`retrain_job`), not the pruning block.

Changing ``pruning.keep`` from [0.5] to [0.6] therefore adds the prune jobs of group ``k0.6`` and the retraining of
its subsets, and reruns the tables downstream -- not the full-set retraining, the other fractions, the small
clusters, the clusters, the kernels or the training. Standard library only (the Snakefile calls it).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .plan import (
    KEEP_METHODS,
    RANDOM_METHODS,
    SCORE_METHODS,
    retrain_settings,
    retrain_units,
    score_columns,
    shard_seeds,
    subset_group,
    subset_plan,
)

__all__ = [
    "STAGE_BLOCKS",
    "CLUSTER_KEYS",
    "OWN_CLUSTERS_KEYS",
    "pick",
    "job_config",
    "prune_groups",
    "prune_keys",
    "group_score_columns",
    "retrain_groups",
    "retrain_job",
]

#: The blocks of a dataset's config that belong to one stage; the others (source, name, splits, ...) describe the
#: data and are given to every job.
STAGE_BLOCKS = (
    "model",
    "train",
    "augment",
    "kernel",
    "relations",
    "difficulty",
    "forgetting",
    "scores",
    "pruning",
    "gallery",
    "claims",
)

#: What the cluster stage reads of the pruning block: the small-cluster experiment's draws (no kept fraction).
CLUSTER_KEYS = (
    "pruning.draws",
    "pruning.small_clusters.enabled",
    "pruning.small_clusters.data_fractions",
    "pruning.small_clusters.seed",
    "pruning.small_clusters.cluster_keep",
)

#: What the own_clusters stage reads of the pruning block: the draws, and the retraining seeds and epochs of the
#: models it trains on them.
OWN_CLUSTERS_KEYS = (
    "pruning.draws",
    "pruning.retrain.seeds",
    "pruning.retrain.epochs",
    "pruning.small_clusters.data_fractions",
    "pruning.small_clusters.seed",
    "pruning.small_clusters.cluster_keep",
    "pruning.small_clusters.epochs",
)


def pick(block: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The entries of ``block`` at the dotted ``keys`` (``pruning.small_clusters.seed``), nested as in ``block``;
    a key ``block`` lacks is left out. Copies, so the result can be changed freely."""
    out: dict[str, Any] = {}
    for key in keys:
        parts = key.split(".")
        node: Any = block
        for part in parts:
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            target = out
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = copy.deepcopy(node)
    return out


def _merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in b.items():
        a[k] = _merge(a.get(k, {}), v) if isinstance(v, Mapping) and isinstance(a.get(k), dict) else copy.deepcopy(v)
    return a


def job_config(block: Mapping[str, Any], blocks: Sequence[str] = (), keys: Iterable[str] = ()) -> dict[str, Any]:
    """A job's ``cfg``: the dataset ``block`` restricted to its data keys, the whole stage ``blocks`` and the single
    dotted ``keys`` (:func:`pick`). This is what the job reads and what MLflow records as its params."""
    out = {k: copy.deepcopy(v) for k, v in block.items() if k not in STAGE_BLOCKS or k in blocks}
    return _merge(out, pick(block, keys))


def prune_groups(cfg: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """{group: its subset specs}, in the plan's order: one prune job per retraining seed and group."""
    groups: dict[str, list[dict[str, Any]]] = {}
    if not cfg["pruning"]["enabled"]:
        return groups
    for spec in subset_plan(cfg):
        group = subset_group(spec)
        if group is not None:
            groups.setdefault(group, []).append(spec)
    return groups


def prune_keys(specs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The pruning keys the selection of ``specs`` reads besides the specs themselves (which carry each subset's
    kept fraction, data fraction, removal, kernel and draw): the score baselines' ranking, the random draws' seed
    (and a method's own block, such as ``node``), the small-cluster experiment's seed, tie-break and draws."""
    keys: list[str] = []
    for spec in specs:
        name = spec["method"]
        if spec["experiment"] == "small_clusters":
            keys += ["pruning.draws", "pruning.small_clusters.seed", "pruning.small_clusters.tie_break"]
            continue
        if name in SCORE_METHODS:
            keys.append("pruning.ranking")
        if name in RANDOM_METHODS:
            keys.append("pruning.seed")
        if name not in KEEP_METHODS:
            keys.append(f"pruning.{name}")
    return list(dict.fromkeys(keys))


def group_score_columns(specs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The scores-table columns the selection of ``specs`` reads (the registry's ``score`` of each spec's method,
    with ``random``'s shared draws): the prune job reads training run s's scores table exactly when this is not
    empty."""
    return score_columns({"pruning": {"enabled": True, "methods": [spec["method"] for spec in specs]}})


def retrain_groups(cfg: Mapping[str, Any], unit: str) -> list[str]:
    """The prune groups whose subsets files a retraining unit reads (none for the full training set alone)."""
    names = set(retrain_units(cfg)[unit])
    groups = (subset_group(spec) for spec in subset_plan(cfg) if spec["name"] in names)
    return list(dict.fromkeys(g for g in groups if g is not None))


def retrain_job(cfg: Mapping[str, Any], unit: str, shard: str) -> dict[str, Any]:
    """What a retraining job reads of the pruning block: its unit's subset specs (each with its ``epochs``), the
    seeds of its shard and the lockstep switch."""
    units = retrain_units(cfg)
    if unit not in units:
        raise ValueError(f"retraining unit {unit!r} is not in the config's plan ({', '.join(units)})")
    settings = retrain_settings(cfg)
    names = set(units[unit])
    subsets = [
        {**spec, "epochs": settings["small_epochs" if spec["experiment"] == "small_clusters" else "epochs"]}
        for spec in subset_plan(cfg)
        if spec["name"] in names
    ]
    return {
        "subsets": subsets,
        "seeds": shard_seeds(cfg, shard),
        "lockstep": bool(cfg["pruning"]["retrain"]["lockstep"]),
    }

"""Training-subset selection for use case 3 (paper-protocols §1.6, §4.4-4.6, §7 A6-A9, A11).

Every function takes the training samples as parallel arrays -- ``index`` (ORIGINAL indices), ``labels`` and
a per-sample quantity -- and returns the ORIGINAL indices of the selected subset, sorted ascending. Kept counts
are k = round(keep * n), rounded half up (:func:`keep_count`).

Selections:

* :func:`select_top` -- score-based pruning (EL2N, GraNd, forgetting, random): keep the k highest scores,
  globally (as the baselines' papers do) or per class; ties go to the higher tie-break score (a seeded
  random score), then the smaller original index.
* :func:`select_heads` -- lpNTK redundant-sample removal (the ``lpntk`` method, §4.4 ``head``): per class keep
  the first k_c = round(keep * N_c) heads of farthest point clustering; every removed sample is more similar
  to some kept head than to the head it would otherwise be farthest from.
* :func:`select_gated_heads` -- the same with the official code's self-max gate (§6 item 9; labelled variant).
* :func:`select_cluster_random` -- one uniformly random member per cluster (the official ``random`` variant).
* :func:`select_node` -- de-biasing (§4.4 ``node``): per class keep a random half of the largest cluster and
  every other sample.
* :func:`remove_small_clusters` -- "poisoning" removal (§4.6, §7 A8): per class remove whole clusters,
  smallest first, until at least round(remove * N_c) samples are gone.
* :func:`remove_random`, :func:`remove_large_clusters` -- the controls: remove the same number per class at
  random, or from the largest clusters.
* :func:`class_balanced_subset` -- a seeded class-balanced fraction of the data (the 1 % / 5 % experiment).

:func:`accuracy_summary` turns a retraining history into the reported accuracies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..clustering import gated_heads

__all__ = [
    "keep_count",
    "select_top",
    "select_heads",
    "select_gated_heads",
    "select_cluster_random",
    "select_node",
    "class_balanced_subset",
    "remove_small_clusters",
    "remove_random",
    "remove_large_clusters",
    "class_counts_of",
    "accuracy_summary",
]


def keep_count(n: int, fraction: float) -> int:
    """round(fraction * n), halves rounded up, clipped to 0..n."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    return int(min(n, max(0, math.floor(fraction * n + 0.5))))


def _arrays(index, labels, *others):
    index = np.asarray(index, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if index.ndim != 1 or labels.shape != index.shape:
        raise ValueError(f"index {index.shape} and labels {labels.shape} must be 1-D of equal length")
    if len(np.unique(index)) != len(index):
        raise ValueError("original indices repeat")
    out = [index, labels]
    for o in others:
        o = np.asarray(o)
        if o.shape[0] != len(index):
            raise ValueError(f"per-sample array of length {o.shape[0]} does not match {len(index)} samples")
        out.append(o)
    return out


def _ranked(scores: np.ndarray, tiebreak: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Positions ordered by score descending, then tie-break descending, then original index ascending."""
    return np.lexsort((index, -tiebreak, -scores))


def select_top(index, labels, scores, keep: float, *, per_class: bool = False, tiebreak=None) -> np.ndarray:
    """Keep the round(keep * N) highest ``scores`` (globally), or round(keep * N_c) per class.

    ``tiebreak`` (default: zeros) orders equal scores, higher first; remaining ties go to the smaller
    original index.
    """
    index, labels, scores = _arrays(index, labels, scores)
    scores = scores.astype(np.float64)
    if not np.isfinite(scores).all():
        raise ValueError("scores hold NaN or inf")
    tiebreak = np.zeros(len(index)) if tiebreak is None else np.asarray(tiebreak, dtype=np.float64)
    if per_class:
        parts = []
        for c in np.unique(labels):
            pos = np.flatnonzero(labels == c)
            order = _ranked(scores[pos], tiebreak[pos], index[pos])
            parts.append(index[pos[order[: keep_count(len(pos), keep)]]])
        kept = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    else:
        kept = index[_ranked(scores, tiebreak, index)[: keep_count(len(index), keep)]]
    return np.sort(kept)


def select_heads(index, labels, rank, keep: float) -> np.ndarray:
    """lpNTK ``head`` pruning: per class keep the samples with FPC head rank 0 <= rank < round(keep * N_c).

    ``rank`` is the per-class creation rank of each head (:func:`lpntk.clustering.head_rank`, -1 for
    non-heads). When FPC stopped early a class keeps fewer samples.
    """
    index, labels, rank = _arrays(index, labels, rank)
    parts = []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        k = keep_count(len(pos), keep)
        parts.append(index[pos[(rank[pos] >= 0) & (rank[pos] < k)]])
    return np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)


def select_gated_heads(index, labels, rank, selfmax, keep: float) -> np.ndarray:
    """The official code's gated ``head`` pruning: per class FPC heads if #self-max > k_c, else the self-max samples."""
    index, labels, rank, selfmax = _arrays(index, labels, rank, selfmax)
    parts = []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        parts.append(index[pos[gated_heads(rank[pos], selfmax[pos], keep_count(len(pos), keep))]])
    return np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)


def _groups(cluster: np.ndarray) -> dict[int, np.ndarray]:
    """Positions of every cluster id (ids < 0, unassigned samples, are left out), ids ascending."""
    if len(cluster) == 0:
        return {}
    order = np.argsort(cluster, kind="stable")
    ids, starts = np.unique(cluster[order], return_index=True)
    bounds = list(starts[1:]) + [len(order)]
    return {int(i): order[s:e] for i, s, e in zip(ids, starts, bounds, strict=True) if i >= 0}


def select_cluster_random(index, labels, cluster, seed: int) -> np.ndarray:
    """One uniformly random member of every cluster (``cluster``: a cluster id per sample, e.g. its head's index)."""
    index, labels, cluster = _arrays(index, labels, cluster)
    rng = np.random.default_rng(int(seed))
    kept = [index[rng.choice(pos)] for _, pos in sorted(_groups(cluster).items())]
    return np.sort(np.asarray(kept, dtype=np.int64))


def _clusters_by_size(pos: np.ndarray, cluster: np.ndarray, tiebreak: Mapping[int, float]) -> list[np.ndarray]:
    """Members (positions) of each cluster among ``pos``, ordered by size ascending, then tie-break ascending."""
    groups = _groups(cluster[pos])
    keys = sorted(groups, key=lambda g: (len(groups[g]), tiebreak.get(g, 0.0), g))
    return [pos[groups[g]] for g in keys]


def select_node(index, labels, cluster, seed: int, fraction: float = 0.5) -> np.ndarray:
    """De-biasing ``node`` pruning: per class keep round(fraction * |C|) random members of the largest cluster C
    (ties: the cluster with the smallest id) and every sample of the other clusters."""
    index, labels, cluster = _arrays(index, labels, cluster)
    rng = np.random.default_rng(int(seed))
    keep = np.ones(len(index), dtype=bool)
    for c in np.unique(labels):
        pos = np.flatnonzero((labels == c) & (cluster >= 0))
        if len(pos) == 0:
            continue
        groups = _groups(cluster[pos])
        largest = max(groups, key=lambda g: (len(groups[g]), -g))
        members = pos[groups[largest]]
        drop = rng.permutation(members)[keep_count(len(members), fraction) :]
        keep[drop] = False
    keep &= cluster >= 0
    return np.sort(index[keep])


def class_balanced_subset(index, labels, fraction: float, seed: int) -> np.ndarray:
    """Seeded uniform subset of round(fraction * N_c) samples of every class c (at least one per class).

    Each class draws from its own generator, seeded by (seed, c), so a class's subset does not depend on
    the other classes (the subset of one class can be drawn on its own).
    """
    index, labels = _arrays(index, labels)
    parts = []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        k = max(1, keep_count(len(pos), fraction))
        rng = np.random.default_rng([int(seed), int(c)])
        parts.append(index[np.sort(rng.choice(pos, size=k, replace=False))])
    return np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)


def class_counts_of(labels, selected_mask=None) -> dict[int, int]:
    """{class: count} of ``labels`` (optionally restricted to a boolean mask)."""
    labels = np.asarray(labels)
    if selected_mask is not None:
        labels = labels[np.asarray(selected_mask, dtype=bool)]
    ids, counts = np.unique(labels, return_counts=True)
    return {int(i): int(n) for i, n in zip(ids, counts, strict=True)}


def remove_small_clusters(
    index,
    labels,
    cluster,
    remove: float,
    *,
    tie_break: str = "random",
    seed: int = 0,
    head_sq_norm: Mapping[int, float] | None = None,
) -> tuple[np.ndarray, dict[int, int]]:
    """Remove whole clusters, smallest first, until at least round(remove * N_c) samples of class c are gone.

    Clusters of equal size are taken in a seeded random order (``tie_break="random"``) or by their head's
    |phi|^2 ascending (``"head_norm"``, ``head_sq_norm`` maps cluster id -> |phi_head|^2). The last cluster
    taken may overshoot the target by less than its size. Returns (kept original indices, {class: number
    removed}).
    """
    index, labels, cluster = _arrays(index, labels, cluster)
    if tie_break not in ("random", "head_norm"):
        raise ValueError(f"tie_break must be 'random' or 'head_norm', got {tie_break!r}")
    if tie_break == "head_norm" and head_sq_norm is None:
        raise ValueError("tie_break='head_norm' needs head_sq_norm")
    rng = np.random.default_rng(int(seed))
    keep = np.ones(len(index), dtype=bool)
    removed: dict[int, int] = {}
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        target = keep_count(len(pos), remove)
        ids = np.unique(cluster[pos])
        if tie_break == "random":
            tb = dict(zip(ids.tolist(), rng.random(len(ids)).tolist(), strict=True))
        else:
            tb = {int(g): float(head_sq_norm[int(g)]) for g in ids}
        gone = 0
        for members in _clusters_by_size(pos, cluster, tb):
            if gone >= target:
                break
            keep[members] = False
            gone += len(members)
        removed[int(c)] = gone
    return np.sort(index[keep]), removed


def remove_random(index, labels, counts: Mapping[int, int], seed: int) -> np.ndarray:
    """Remove ``counts[c]`` uniformly random samples of every class c; returns the kept original indices."""
    index, labels = _arrays(index, labels)
    rng = np.random.default_rng(int(seed))
    keep = np.ones(len(index), dtype=bool)
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        n = int(counts.get(int(c), 0))
        if n > len(pos):
            raise ValueError(f"cannot remove {n} samples of class {c}: it has {len(pos)}")
        keep[rng.choice(pos, size=n, replace=False)] = False
    return np.sort(index[keep])


def remove_large_clusters(index, labels, cluster, counts: Mapping[int, int], seed: int) -> np.ndarray:
    """Remove ``counts[c]`` samples of every class c from its largest clusters: random members of the largest
    cluster first, then of the next largest (ties: smaller cluster id first)."""
    index, labels, cluster = _arrays(index, labels, cluster)
    rng = np.random.default_rng(int(seed))
    keep = np.ones(len(index), dtype=bool)
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        left = int(counts.get(int(c), 0))
        if left > len(pos):
            raise ValueError(f"cannot remove {left} samples of class {c}: it has {len(pos)}")
        groups = _groups(cluster[pos])
        for g in sorted(groups, key=lambda g: (-len(groups[g]), g)):
            if left <= 0:
                break
            members = rng.permutation(pos[groups[g]])[:left]
            keep[members] = False
            left -= len(members)
    return np.sort(index[keep])


def accuracy_summary(history: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Reported accuracies of one retraining run from its per-epoch history (epochs 1..E; no epoch 0).

    ``test_acc_best_val``: test accuracy at the epoch of the highest validation accuracy (first such epoch);
    ``test_acc_last``: at the last epoch; ``test_acc_max``: the maximum over epochs -- what the official code
    reports (selection on the test set, optimistic); ``val_acc_best`` and ``best_epoch`` go with the first.
    """
    if not history:
        raise ValueError("empty training history")
    val = np.asarray([h.get("val_acc", np.nan) for h in history], dtype=np.float64)
    test = np.asarray([h.get("test_acc", np.nan) for h in history], dtype=np.float64)
    if np.isnan(val).all():
        raise ValueError(
            "the history has no validation accuracy; retraining needs a validation split (val_fraction > 0)"
        )
    best = int(np.nanargmax(val))
    return {
        "test_acc_best_val": float(test[best]),
        "test_acc_last": float(test[-1]),
        "test_acc_max": float(np.nanmax(test)),
        "val_acc_best": float(val[best]),
        "best_epoch": best + 1,
        "epochs": len(history),
    }

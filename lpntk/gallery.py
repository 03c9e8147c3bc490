"""Which training samples the gallery figure shows: anchors and their partners under lpNTK, FPC clusters, and the
samples pruning removes first. Numpy only; every choice is deterministic (ties go to the smaller position or index).

* :func:`spread_classes`, :func:`anchor_positions`, :func:`min_cosines` -- a few classes spread over the label range
  and, in each, the sample with the largest score: the most contradicted sample (the most negative cosine to some
  other), or the largest |phi|^2 = kappa(x, x) (the official code's target rule, as in the difficulty stage).
* :func:`relation_partners` -- from one row of cosines, the most interchangeable (largest cos > tau), the least
  related (smallest |cos| <= tau) and the most contradictory (most negative cos < -tau) partners.
* :func:`largest_clusters`, :func:`cluster_members` -- the biggest FPC clusters of a class and their members, the
  ones most similar to the head first.
* :func:`removal_order`, :func:`removed` -- the samples a pruned subset leaves out, in the order the method gives
  them up (lowest score first; for the lpNTK methods the most redundant, i.e. closest to their FPC head, first).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .relations import RELATIONS, cosine

__all__ = [
    "spread_classes",
    "anchor_positions",
    "min_cosines",
    "relation_partners",
    "largest_clusters",
    "cluster_members",
    "removed",
    "removal_order",
]


def spread_classes(classes: Sequence[int], n: int) -> list[int]:
    """``n`` of the (sorted, distinct) ``classes`` spread evenly from the first to the last: 0, 4, 9 of ten for
    n = 3; all of them when n >= their number."""
    classes = sorted({int(c) for c in classes})
    if n <= 0 or not classes:
        return []
    if n >= len(classes):
        return classes
    if n == 1:
        return [classes[0]]
    return [classes[(i * (len(classes) - 1)) // (n - 1)] for i in range(n)]


def anchor_positions(labels: np.ndarray, score: np.ndarray, classes: Sequence[int]) -> list[int]:
    """Per class of ``classes`` (in that order) the position with the largest ``score`` among the samples of that
    class (first position on ties); classes without a sample are skipped. With ``score`` = |phi|^2 this is the
    official target rule; with minus :func:`min_cosines`, the sample most contradicted by some other."""
    labels, score = np.asarray(labels), np.asarray(score, dtype=np.float64)
    if labels.shape != score.shape:
        raise ValueError(f"labels {labels.shape} and score {score.shape} differ in shape")
    out = []
    for c in classes:
        pos = np.flatnonzero(labels == int(c))
        if pos.size:
            out.append(int(pos[np.argmax(score[pos])]))
    return out


def min_cosines(gram: np.ndarray, sq_norm: np.ndarray, block: int = 1024) -> np.ndarray:
    """Per sample the smallest lpNTK cosine to any *other* sample of the Gram (its most contradictory partner's
    cos; +inf for a Gram of one sample), computed in row blocks (bounded memory)."""
    gram, sq = np.asarray(gram), np.asarray(sq_norm, dtype=np.float64)
    n = len(sq)
    if gram.shape != (n, n):
        raise ValueError(f"Gram {gram.shape} and sq_norm {sq.shape} do not match")
    out = np.full(n, np.inf)
    for s in range(0, n, block):
        rows = cosine(np.asarray(gram[s : s + block], dtype=np.float64), sq[s : s + block], sq)
        rows[np.arange(len(rows)), np.arange(s, s + len(rows))] = np.inf  # not the sample itself
        out[s : s + len(rows)] = rows.min(axis=1)
    return out


def relation_partners(cos: np.ndarray, exclude: int | Sequence[int], n: int, tau: float) -> dict[str, np.ndarray]:
    """Positions of at most ``n`` partners per relation type from one row of cosines (``exclude``: the anchor).

    interchangeable: cos > tau, largest first; unrelated: |cos| <= tau, smallest |cos| first; contradictory:
    cos < -tau, most negative first. Ties: smaller position first. A type with fewer candidates gets fewer."""
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"tau must lie in [0, 1), got {tau}")
    cos = np.asarray(cos, dtype=np.float64)
    keep = np.ones(len(cos), dtype=bool)
    keep[np.atleast_1d(np.asarray(exclude, dtype=np.int64))] = False
    pos = np.flatnonzero(keep)
    c = cos[pos]
    rules = {
        "interchangeable": (c > tau, -c),
        "unrelated": (np.abs(c) <= tau, np.abs(c)),
        "contradictory": (c < -tau, c),
    }
    out = {}
    for name in RELATIONS:
        mask, key = rules[name]
        cand, k = pos[mask], key[mask]
        out[name] = cand[np.lexsort((cand, k))][: max(int(n), 0)]
    return out


def largest_clusters(head_of: np.ndarray, n: int) -> list[int]:
    """The heads (values of ``head_of``, one per sample: the head its cluster is named after) of the ``n`` largest
    clusters, largest first (ties: the smaller head id)."""
    heads, sizes = np.unique(np.asarray(head_of, dtype=np.int64), return_counts=True)
    order = np.lexsort((heads, -sizes))
    return [int(h) for h in heads[order][: max(int(n), 0)]]


def cluster_members(
    index: np.ndarray, head_of: np.ndarray, head: int, n: int, similarity: np.ndarray | None = None
) -> np.ndarray:
    """Positions of at most ``n`` members of ``head``'s cluster other than the head itself (``index``: the samples'
    ids, ``head_of``: each sample's head id): by ``similarity`` to the head descending when given, else by id."""
    index, head_of = np.asarray(index, dtype=np.int64), np.asarray(head_of, dtype=np.int64)
    pos = np.flatnonzero((head_of == int(head)) & (index != int(head)))
    if similarity is None:
        order = np.argsort(index[pos], kind="stable")
    else:
        order = np.lexsort((index[pos], -np.asarray(similarity, dtype=np.float64)[pos]))
    return pos[order][: max(int(n), 0)]


def removed(base: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """The ids of ``base`` that ``kept`` leaves out, sorted."""
    return np.setdiff1d(np.asarray(base, dtype=np.int64), np.asarray(kept, dtype=np.int64))


def removal_order(index: np.ndarray, kept: np.ndarray, keys: Sequence[np.ndarray], n: int | None = None) -> np.ndarray:
    """Positions (in ``index``) of the samples not in ``kept``, in removal order: by ``keys`` ascending, the first
    key most significant (e.g. the score a method keeps the highest of, then its tie-break), then by id; the first
    ``n`` (all when None)."""
    index = np.asarray(index, dtype=np.int64)
    pos = np.flatnonzero(~np.isin(index, np.asarray(kept, dtype=np.int64)))
    cols = [index[pos]] + [np.asarray(k, dtype=np.float64)[pos] for k in reversed(list(keys))]
    order = pos[np.lexsort(cols)]
    return order if n is None else order[: max(int(n), 0)]

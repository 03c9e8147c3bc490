"""Farthest point clustering (FPC) of one class on its lpNTK Gram (paper-protocols §4.4, §6 item 9, §7 A6).

Input: the similarity S(i, j) = kappa((x_i, y), (x_j, y)) of every pair of samples of one class (self-pairs
included), raw lpNTK values (no normalisation; the constant 1/K does not change anything here). The
official code stores only the pairs i <= j, so S is made symmetric from its upper triangle
(:func:`symmetrize_upper`).

FPC is the similarity version of greedy k-centre (farthest-first traversal), as implemented in the official
``experiments/exp3/exp3.2/run.py``:

1. The initial head h_0 is the row index of the largest entry of the upper triangle,
   h_0 = min{i : max_{j >= i} S(i, j) = max_{i <= j} S(i, j)}; for a PSD Gram this is argmax_i |phi_i|^2
   (first occurrence). Cluster 0 holds every sample.
2. Until there are k clusters: in every cluster take its least-similar member m_c = argmin_{i in c} S(i, h_c)
   (the head included); skip the cluster if m_c is its head; the new head is the m_c with the smallest
   S(m_c, h_c) over the remaining clusters (the sample farthest from its own head). It leaves its cluster
   and heads a new one; every non-head sample i moves to the new cluster when S(i, new) > S(i, head(i))
   (strictly); heads never move.

Vectorised form (this module): keep head(i) and s_i = S(i, head(i)) for every sample; one step costs O(N)
(a per-cluster minimum, one column of S and a comparison), so k steps cost O(k N) per class.

Ties (the official code leaves them to its sort; here they are fixed and documented): within a cluster the
members are ordered by (S(i, h) descending, index ascending), so the least-similar member is the one with the
smallest S(i, h) and, among equal values, the largest index; across clusters the smallest S(m_c, h_c) wins and
equal values go to the cluster created first. The loop stops early when every cluster's least-similar member
is its head (then fewer than k clusters exist; :attr:`FPCResult.stopped_early`).

The official code also *gates* FPC (§6 item 9): it runs FPC only if the class has more "self-max" samples
(:func:`self_max`) than k; otherwise the clusters are the self-max samples as singletons and every other
sample is dropped. With MNIST's ~47 % self-max rate this skips FPC for every kept fraction above ~0.47. The
main method here runs FPC without the gate (§7 A6); :func:`gated_heads` gives the official behaviour as a
labelled variant (with the self-max flags computed within the class, see :func:`self_max`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FPCResult",
    "symmetrize_upper",
    "initial_head",
    "self_max",
    "farthest_point_clustering",
    "head_rank",
    "assignment_history",
    "clusters_at",
    "gated_heads",
    "cluster_sizes",
]

_ROW_BLOCK = 1024


@dataclass
class FPCResult:
    """Outcome of :func:`farthest_point_clustering` on an (n, n) similarity matrix (positions 0..n-1).

    ``heads``: the heads in creation order (cluster c is headed by ``heads[c]``); ``cluster``: (n,) cluster id
    of every sample at the end; ``sim_to_head``: (n,) S(i, head(i)); ``snapshots``: {k: (n,) cluster ids at the
    moment the k-th cluster was created} for the requested k; ``stopped_early``: fewer than the requested
    clusters could be formed; ``moves`` (with ``history=True``): for every cluster id c, the positions that joined
    cluster c when it was created (its head among them; cluster 0: every sample) -- the assignment at any count
    (:func:`assignment_history`, :func:`clusters_at`).
    """

    heads: np.ndarray
    cluster: np.ndarray
    sim_to_head: np.ndarray
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)
    stopped_early: bool = False
    moves: list[np.ndarray] | None = None

    @property
    def head_of(self) -> np.ndarray:
        """(n,) position of every sample's head."""
        return self.heads[self.cluster]


def symmetrize_upper(gram: np.ndarray) -> np.ndarray:
    """S = triu(G) + triu(G, 1)^T: the symmetric matrix of the pairs i <= j (what the official code stores).

    Returned as float64 (the official code sums the kernel in float64).
    """
    g = np.asarray(gram, dtype=np.float64)
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(f"a Gram matrix must be square, got shape {g.shape}")
    upper = np.triu(g)
    return upper + np.triu(g, 1).T


def _check_similarity(S: np.ndarray, symmetric: bool = False) -> np.ndarray:
    S = np.asarray(S)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"similarity matrix must be square, got shape {S.shape}")
    if not np.isfinite(S).all():
        raise ValueError("similarity matrix holds NaN or inf; recompute the lpNTK Gram")
    if symmetric and not np.array_equal(S, S.T):
        raise ValueError(
            "similarity matrix is not symmetric; make it so with symmetrize_upper (the official code "
            "uses the pairs i <= j)"
        )
    return S


def initial_head(S: np.ndarray) -> int:
    """h_0 = min{i : max_{j >= i} S(i, j) = max_{i <= j} S(i, j)}, the source row of the largest pair i <= j.

    For a PSD Gram (by Cauchy-Schwarz) this is argmax_i S(i, i) = argmax_i |phi_i|^2, first occurrence.
    """
    S = _check_similarity(S)
    n = len(S)
    if n == 0:
        raise ValueError("cannot cluster an empty class")
    row_max = np.empty(n, dtype=np.float64)
    cols = np.arange(n)
    for start in range(0, n, _ROW_BLOCK):
        rows = np.arange(start, min(n, start + _ROW_BLOCK))
        block = np.where(cols[None, :] >= rows[:, None], S[rows], -np.inf)
        row_max[rows] = block.max(axis=1)
    return int(np.argmax(row_max))


def self_max(S: np.ndarray) -> np.ndarray:
    """Self-max flags as the official code computes them: S(i, i) >= max_{j > i} S(i, j) (§3.2).

    Only samples with a larger index are compared (the code stores the upper triangle), so the last sample
    is always self-max. The paper's definition of a redundant sample (some x' != x with kappa(x, x') >
    kappa(x, x)) compares with all samples; this function reproduces the code's gate, not the definition.
    The official rows spanned every class; on a per-class similarity (as the pruning stage passes) this is the
    within-class version, which flags more samples as self-max than the code's global test.
    """
    S = _check_similarity(S)
    n = len(S)
    out = np.ones(n, dtype=bool)
    cols = np.arange(n)
    for start in range(0, n, _ROW_BLOCK):
        rows = np.arange(start, min(n, start + _ROW_BLOCK))
        block = np.where(cols[None, :] > rows[:, None], S[rows], -np.inf)
        out[rows] = S[rows, rows] >= block.max(axis=1)
    return out


def farthest_point_clustering(
    S: np.ndarray, k: int | None, snapshots: Iterable[int] = (), history: bool = False
) -> FPCResult:
    """Farthest point clustering of one class into k clusters (module docstring; no self-max gate).

    ``S`` is the (n, n) symmetric similarity matrix (exactly; see :func:`symmetrize_upper`); ``k`` is clipped to
    1..n (None: n, every sample ranked as a head until FPC stops). ``snapshots`` lists cluster counts at which to
    record the assignment (each <= k); the final assignment is the snapshot at k. Heads are nested: the first k'
    heads of a run to k are the heads of a run to k' (the new head never depends on k), so one run serves every
    k' <= k; with ``history`` it records every move (:attr:`FPCResult.moves`), from which :func:`clusters_at`
    gives the assignment at every k' <= k without rerunning.
    """
    S = _check_similarity(S, symmetric=True)
    n = len(S)
    k = n if k is None else int(min(max(int(k), 1), n))
    wanted = sorted({int(c) for c in snapshots if 1 <= int(c) <= k})
    idx = np.arange(n)
    h0 = initial_head(S)
    cluster = np.zeros(n, dtype=np.int64)
    s = S[h0].astype(np.float64)  # s_i = S(i, head(i))
    is_head = np.zeros(n, dtype=bool)
    is_head[h0] = True
    heads = [h0]
    snaps: dict[int, np.ndarray] = {}
    moves = [idx.copy()] if history else None
    if 1 in wanted:
        snaps[1] = cluster.copy()
    stopped = False
    while len(heads) < k:
        m = len(heads)
        # least-similar member of every cluster: smallest s, ties -> largest index
        cmin = np.full(m, np.inf)
        np.minimum.at(cmin, cluster, s)
        at_min = s == cmin[cluster]
        last = np.full(m, -1, dtype=np.int64)
        np.maximum.at(last, cluster[at_min], idx[at_min])
        valid = last != np.asarray(heads)  # skip clusters whose least-similar member is the head
        if not valid.any():
            stopped = True
            break
        candidates = np.flatnonzero(valid)
        c = candidates[np.argmin(cmin[candidates])]  # ties -> the cluster created first
        new = int(last[c])
        is_head[new] = True
        heads.append(new)
        cluster[new] = m
        s[new] = S[new, new]
        col = S[new]  # = S(:, new) for a symmetric S, contiguous in memory
        move = ~is_head & (col > s)
        cluster[move] = m
        s[move] = col[move]
        if moves is not None:
            moves.append(np.sort(np.append(np.flatnonzero(move), new)))
        if m + 1 in wanted:
            snaps[m + 1] = cluster.copy()
    return FPCResult(
        heads=np.asarray(heads, dtype=np.int64),
        cluster=cluster,
        sim_to_head=s,
        snapshots=snaps,
        stopped_early=stopped,
        moves=moves,
    )


def head_rank(result: FPCResult, n: int) -> np.ndarray:
    """(n,) creation rank of every head (0 for h_0, 1 for the next, ...), -1 for samples that never head a cluster.

    The heads of a clustering into k' clusters are the samples with 0 <= rank < k'.
    """
    rank = np.full(n, -1, dtype=np.int64)
    rank[result.heads] = np.arange(len(result.heads))
    return rank


def assignment_history(result: FPCResult, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every sample's moves of a run with ``history=True``, compactly: (counts, ranks) with ``counts[i]`` the number
    of clusters sample i joined and ``ranks`` their ids, sample by sample in position order, ascending (each
    sample's first is 0; a head's last is its own). :func:`clusters_at` reads the assignment at any count from it."""
    if result.moves is None:
        raise ValueError("the FPC run kept no history: call farthest_point_clustering(..., history=True)")
    pos = np.concatenate(result.moves).astype(np.int64)
    rank = np.concatenate([np.full(len(m), c, dtype=np.int64) for c, m in enumerate(result.moves)])
    order = np.lexsort((rank, pos))
    return np.bincount(pos, minlength=n).astype(np.int64), rank[order]


def clusters_at(counts: np.ndarray, ranks: np.ndarray, k) -> np.ndarray:
    """The cluster id of every sample with k clusters (k: one count, or one per sample), from
    :func:`assignment_history`: the last cluster it joined among the first k -- the assignment a run to k ends
    with (the final one where FPC stopped before k)."""
    counts, ranks = np.asarray(counts, np.int64), np.asarray(ranks, np.int64)
    if len(counts) == 0:
        return np.zeros(0, dtype=np.int64)
    if (counts < 1).any() or counts.sum() != len(ranks):
        raise ValueError("not an FPC assignment history: every sample joins cluster 0 first")
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    limit = np.repeat(np.broadcast_to(np.asarray(k, np.int64), counts.shape), counts)
    joined = np.add.reduceat((ranks < limit).astype(np.int64), start)
    return ranks[start + np.maximum(joined, 1) - 1]


def gated_heads(rank: np.ndarray, selfmax: np.ndarray, k: int) -> np.ndarray:
    """Heads the official code keeps for k clusters, with its self-max gate (§4.4, §6 item 9).

    FPC heads (rank < k) if the class has more self-max samples than k; otherwise the self-max samples.
    Returns a boolean mask over the class.
    """
    rank, selfmax = np.asarray(rank), np.asarray(selfmax, dtype=bool)
    if int(selfmax.sum()) > k:
        return (rank >= 0) & (rank < k)
    return selfmax.copy()


def cluster_sizes(cluster: np.ndarray, n_clusters: int | None = None) -> np.ndarray:
    """Number of members of every cluster id 0..n_clusters-1 (ids < 0 are unassigned and ignored)."""
    cluster = np.asarray(cluster)
    cluster = cluster[cluster >= 0]
    return np.bincount(cluster, minlength=int(n_clusters or (cluster.max() + 1 if len(cluster) else 0)))

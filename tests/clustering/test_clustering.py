"""Farthest point clustering: the vectorised O(kN) loop against a literal re-implementation of the official one."""

from __future__ import annotations

import numpy as np
import pytest

from lpntk.clustering import (
    FPCResult,
    assignment_history,
    cluster_sizes,
    clusters_at,
    farthest_point_clustering,
    gated_heads,
    head_rank,
    initial_head,
    self_max,
    symmetrize_upper,
)


def fpc_literal(S: np.ndarray, k: int) -> tuple[list[dict], bool]:
    """The official exp3.2 loop written out with explicit cluster lists (paper-protocols §4.4).

    Clusters are lists ordered by (S(i, head) descending, index ascending); the least-similar member is the
    last one; clusters whose last member is the head are skipped; the smallest S(m, head) wins (strict <, so
    ties go to the cluster created first); every non-head with S(i, head) < S(i, m) moves to the new cluster.
    """
    n = len(S)
    pairs = sorted(((S[i, j], i, j) for i in range(n) for j in range(i, n)), key=lambda t: (-t[0], t[1]))
    h0 = pairs[0][1]
    clusters = [{"head": h0, "members": sorted(range(n), key=lambda i: (-S[i, h0], i))}]
    stopped = False
    while len(clusters) < k:
        best = None
        for c, cl in enumerate(clusters):
            m = cl["members"][-1]
            if m == cl["head"]:
                continue
            if best is None or S[m, cl["head"]] < best[0]:
                best = (S[m, cl["head"]], c, m)
        if best is None:
            stopped = True
            break
        _, c, m = best
        clusters[c]["members"].remove(m)
        moved = [m]
        for cl in clusters:
            stay = []
            for i in cl["members"]:
                if i != cl["head"] and S[i, cl["head"]] < S[i, m]:
                    moved.append(i)
                else:
                    stay.append(i)
            cl["members"] = stay
        clusters.append({"head": m, "members": sorted(moved, key=lambda i: (-S[i, m], i))})
    return clusters, stopped


def _gram(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "psd":
        phi = rng.normal(size=(n, 5))
        return phi @ phi.T
    if kind == "psd_ties":  # small integer features: many exactly equal similarities and duplicate samples
        phi = rng.integers(-2, 3, size=(n, 3)).astype(float)
        return phi @ phi.T
    # symmetric but not PSD, with ties: exercises heads that are not their cluster's most similar member
    return symmetrize_upper(rng.integers(-3, 4, size=(n, n)).astype(float))


@pytest.mark.parametrize("kind", ["psd", "psd_ties", "indefinite_ties"])
def test_vectorised_fpc_equals_literal_loop(kind):
    rng = np.random.default_rng({"psd": 0, "psd_ties": 1, "indefinite_ties": 2}[kind])
    stops = 0
    for _ in range(120):
        n = int(rng.integers(1, 22))
        k = int(rng.integers(1, n + 1))
        S = _gram(kind, n, rng)
        literal, stopped = fpc_literal(S, k)
        res = farthest_point_clustering(S, k)
        assert res.heads.tolist() == [c["head"] for c in literal]
        for c, cl in enumerate(literal):
            assert np.flatnonzero(res.cluster == c).tolist() == sorted(cl["members"])
            assert np.allclose(res.sim_to_head[cl["members"]], S[cl["members"], cl["head"]])
        assert res.stopped_early == stopped
        stops += stopped
    if kind == "indefinite_ties":
        assert stops > 0  # the early stop (every cluster's farthest member is its head) was exercised


def test_heads_are_nested_and_snapshots_match_shorter_runs():
    rng = np.random.default_rng(3)
    S = _gram("psd", 60, rng)
    full = farthest_point_clustering(S, 40, snapshots=[5, 17, 40])
    for k in (5, 17, 40):
        short = farthest_point_clustering(S, k)
        assert np.array_equal(full.heads[:k], short.heads)
        assert np.array_equal(full.snapshots[k], short.cluster)
    rank = head_rank(full, 60)
    assert sorted(rank[rank >= 0].tolist()) == list(range(40)) and (rank[full.heads] == np.arange(40)).all()


@pytest.mark.parametrize("kind", ["psd", "indefinite_ties"])
def test_one_run_to_the_end_gives_the_assignment_at_every_count(kind):
    """The cluster stage runs FPC to the end once with its history: the assignment at any count k -- any kept
    fraction -- is then that of a run to k, so no kept fraction is an input of the clustering."""
    rng = np.random.default_rng(5)
    S = _gram(kind, 50, rng)
    full = farthest_point_clustering(S, None, history=True)
    counts, ranks = assignment_history(full, 50)
    assert counts.sum() == len(ranks) and (counts >= 1).all()
    for k in range(1, 51):
        short = farthest_point_clustering(S, k)
        assert np.array_equal(clusters_at(counts, ranks, k), short.cluster), k
        assert np.array_equal(full.heads[: len(short.heads)], short.heads)
    per_sample = rng.integers(1, 51, size=50)  # a count per sample (one per class in the cluster stage)
    expected = [farthest_point_clustering(S, int(k)).cluster[i] for i, k in enumerate(per_sample)]
    assert np.array_equal(clusters_at(counts, ranks, per_sample), expected)
    with pytest.raises(ValueError, match="history=True"):
        assignment_history(farthest_point_clustering(S, 5), 50)


def test_initial_head_is_largest_norm_and_uses_the_upper_triangle():
    rng = np.random.default_rng(4)
    phi = rng.normal(size=(30, 4))
    S = phi @ phi.T
    assert initial_head(S) == int(np.argmax(np.diag(S)))
    A = np.array([[1.0, 9.0, 0.0], [-5.0, 2.0, 0.0], [0.0, 0.0, 3.0]])  # largest pair (0, 1) in the upper triangle
    assert initial_head(A) == 0
    assert initial_head(A.T) == 2  # now the 9 is below the diagonal and ignored; max of the rest is S[2, 2]
    assert np.array_equal(symmetrize_upper(A), [[1, 9, 0], [9, 2, 0], [0, 0, 3]])


def test_three_separated_groups_give_three_clusters():
    base = np.array([[5.0, 0, 0], [0, 4.0, 0], [0, 0, 3.0]])
    phi = np.repeat(base, [4, 3, 2], axis=0) + 0.01 * np.arange(9)[:, None]
    res = farthest_point_clustering(phi @ phi.T, 3)
    labels = res.cluster
    assert len(set(labels[:4])) == len(set(labels[4:7])) == len(set(labels[7:])) == 1
    assert len(set(labels)) == 3
    assert sorted(cluster_sizes(labels).tolist()) == [2, 3, 4]


def test_self_max_and_official_gate():
    S = np.array([[4.0, 5.0, 1.0, 0.0], [5.0, 9.0, 1.0, 0.0], [1.0, 1.0, 2.0, 3.0], [0.0, 0.0, 3.0, 1.0]])
    # row 0: 4 < 5 -> not self-max; row 1: 9 >= 1, 0; row 2: 2 < 3; row 3: last sample, always self-max
    assert self_max(S).tolist() == [False, True, False, True]
    rank = np.array([0, 1, -1, 2])
    assert gated_heads(rank, self_max(S), 1).tolist() == [True, False, False, False]  # 2 self-max > k=1: FPC heads
    assert gated_heads(rank, self_max(S), 3).tolist() == [False, True, False, True]  # 2 <= 3: the self-max samples


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="square"):
        farthest_point_clustering(np.zeros((2, 3)), 1)
    with pytest.raises(ValueError, match="NaN"):
        farthest_point_clustering(np.array([[1.0, np.nan], [np.nan, 1.0]]), 2)
    with pytest.raises(ValueError, match="symmetrize_upper"):
        farthest_point_clustering(np.array([[1.0, 2.0], [0.0, 1.0]]), 2)


class _CountingGram(np.ndarray):
    """A Gram that counts the entries read through indexing (rows, columns, single entries)."""

    reads = 0

    def __getitem__(self, key):
        out = super().__getitem__(key)
        _CountingGram.reads += int(np.size(out))
        return out.view(np.ndarray) if isinstance(out, np.ndarray) else out


def _entries_read(S: np.ndarray, k: int, monkeypatch) -> tuple[int, FPCResult]:
    with monkeypatch.context() as m:
        m.setattr(np, "asarray", np.asanyarray)  # let the counting subclass through the input checks
        _CountingGram.reads = 0
        res = farthest_point_clustering(S.view(_CountingGram), k)
        return _CountingGram.reads, res


def test_clustering_reads_o_of_n_entries_per_cluster(monkeypatch):
    """Work, not wall-clock: after one O(N^2) pass for the initial head, each new cluster may read O(N) entries of S
    (its column and the new head's self-similarity). A per-step rescan of S or of a cluster's block fails this."""
    rng = np.random.default_rng(5)
    n = 400
    phi = rng.normal(size=(n, 20))
    S = phi @ phi.T
    reads = {}
    for k in (1, 10, 200, 360):
        reads[k], res = _entries_read(S, k, monkeypatch)
        assert len(res.heads) == k and np.array_equal(res.heads, farthest_point_clustering(S, k).heads)
    assert reads[1] > 0  # the counter saw the reads (the wrapper was not bypassed)
    assert reads[1] <= n * n + 2 * n  # initial head: the upper triangle, at most one full pass, plus its row
    for k1, k2 in ((1, 10), (10, 200), (200, 360)):
        assert reads[k2] - reads[k1] <= 2 * n * (k2 - k1), (k1, k2, reads)  # O(N) per extra cluster
    assert reads[360] <= n * n + 2 * n * 360  # O(N^2 + k N) overall; a literal loop reads O(k N^2)


def test_boundaries_messages_and_dtypes():
    """Edge cases the formula tests above leave open (found by mutation testing, docs/mutation-testing.md)."""
    with pytest.raises(ValueError, match=r"^similarity matrix holds NaN or inf; recompute the lpNTK Gram$"):
        initial_head(np.array([[np.inf]]))
    msg = (
        r"^similarity matrix is not symmetric; make it so with symmetrize_upper "
        r"\(the official code uses the pairs i <= j\)$"
    )
    with pytest.raises(ValueError, match=msg):
        farthest_point_clustering(np.array([[1.0, 2.0], [0.0, 1.0]]), 2)
    with pytest.raises(ValueError, match=r"^cannot cluster an empty class$"):
        initial_head(np.zeros((0, 0)))
    with pytest.raises(ValueError, match=r"^a Gram matrix must be square, got shape \(2, 3\)$"):
        symmetrize_upper(np.zeros((2, 3)))
    # symmetrize_upper returns float64 even for integer input
    sym = symmetrize_upper(np.array([[1, 2], [3, 4]]))
    assert sym.dtype == np.float64 and sym.tolist() == [[1.0, 2.0], [2.0, 4.0]]
    # cluster sizes: padded to n_clusters, empty for no assigned sample
    assert cluster_sizes(np.array([0, 0, 2]), 5).tolist() == [2, 0, 1, 0, 0]
    assert cluster_sizes(np.array([-1, -1])).tolist() == []
    assert cluster_sizes(np.array([1, -1, 1])).tolist() == [0, 2]
    # self-max: a tie with a later sample counts as self-max; the flags are booleans
    tie = np.array([[2.0, 2.0, 1.0], [2.0, 3.0, 3.0], [1.0, 3.0, 1.0]])
    flags = self_max(tie)
    assert flags.dtype == bool and flags.tolist() == [True, True, True]
    # the official gate at its boundary: exactly k self-max samples -> the self-max samples, not FPC heads
    rank = np.array([0, 1, -1, 2])
    gated = gated_heads(rank, np.array([1, 0, 0, 1]), 2)
    assert gated.dtype == bool and gated.tolist() == [True, False, False, True]
    assert gated_heads(rank, np.array([1, 0, 0, 1]), 1).tolist() == [True, False, False, False]
    # snapshots: exactly the requested counts, the one-cluster assignment included
    phi = np.random.default_rng(6).normal(size=(12, 3))
    S = phi @ phi.T
    res = farthest_point_clustering(S, 4, snapshots=[1, 3, 9])
    assert sorted(res.snapshots) == [1, 3] and res.snapshots[1].tolist() == [0] * 12
    assert sorted(farthest_point_clustering(S, 4, snapshots=[2, 4]).snapshots) == [2, 4]
    assert res.heads.dtype == np.int64
    # head ranks: -1 for every sample that never heads a cluster
    rank = head_rank(res, 12)
    assert rank.dtype == np.int64 and sorted(rank.tolist()) == [-1] * 8 + [0, 1, 2, 3]


def test_row_blocks_beyond_the_first_are_handled(monkeypatch):
    """More samples than one row block (1024): self-max and the initial head against brute force, and the initial
    head still reads the upper triangle once (each block its own rows)."""
    rng = np.random.default_rng(7)
    n = 1100
    phi = rng.normal(size=(n, 4))
    S = phi @ phi.T
    S[1050, 1050] = 1e6  # the largest norm in the second block
    S[1060, 1060] = S[1060].max()  # and a tie there: self-max with an equal later entry
    brute = np.array([S[i, i] >= max(S[i, i + 1 :], default=-np.inf) for i in range(n)])
    assert np.array_equal(self_max(S), brute) and not brute[1000:].all()
    assert initial_head(S) == 1050
    reads, res = _entries_read(S, 2, monkeypatch)
    assert res.heads[0] == 1050 and reads <= n * n + 4 * n

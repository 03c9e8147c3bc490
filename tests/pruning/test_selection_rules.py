"""The pruning selections on hand-made inputs (lpntk.pruning): keep counts, top scores globally and per class,
lpNTK heads, node and cluster-random picks, small-cluster removal and its controls, class-balanced subsets, the accuracy
summary, and the edge cases mutation testing found."""

from __future__ import annotations

import numpy as np
import pytest
from pruning_setup import INDEX, LABELS

from lpntk.pruning import (
    accuracy_summary,
    class_balanced_subset,
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


def test_keep_count_rounds_half_up():
    assert [keep_count(10, f) for f in (0.0, 0.05, 0.25, 0.5, 0.87, 1.0)] == [0, 1, 3, 5, 9, 10]
    assert keep_count(3, 0.5) == 2 and keep_count(5, 0.3) == 2
    with pytest.raises(ValueError):
        keep_count(10, 1.5)


def test_select_top_global_and_per_class():
    scores = np.array([9, 8, 7, 6, 5, 4, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    glob = select_top(INDEX, LABELS, scores, 0.5)
    assert glob.tolist() == sorted(INDEX[:6].tolist())  # globally the 6 highest are all class 0
    per = select_top(INDEX, LABELS, scores, 0.5, per_class=True)
    assert per.tolist() == sorted(INDEX[[0, 1, 2, 9, 10, 11]].tolist())
    # ties: the higher tie-break first, then the smaller original index
    flat = np.zeros(12)
    assert select_top(INDEX, LABELS, flat, 2 / 12).tolist() == [3, 7]
    tb = np.arange(12, dtype=float)
    assert select_top(INDEX, LABELS, flat, 2 / 12, tiebreak=tb).tolist() == sorted(INDEX[[10, 11]].tolist())
    with pytest.raises(ValueError, match="NaN"):
        select_top(INDEX, LABELS, np.full(12, np.nan), 0.5)


def test_lpntk_heads_per_class():
    rank = np.array([0, 3, 1, -1, 2, -1, 1, -1, 0, 2, -1, -1])
    kept = select_heads(INDEX, LABELS, rank, 0.5)  # k_c = 3 per class
    assert kept.tolist() == sorted([50, 31, 12, 3, 81, 25])
    assert set(kept) <= set(INDEX)
    # class 1 has only 3 heads: keep 0.8 -> k_c = 5 but only 3 exist (FPC stopped early)
    assert len(select_heads(INDEX, LABELS, rank, 0.8)) == 4 + 3
    selfmax = np.array([1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], dtype=bool)
    # k_c = 3: each class has 2 self-max samples <= 3, so the gate keeps just them (FPC is skipped)
    assert select_gated_heads(INDEX, LABELS, rank, selfmax, 3 / 6).tolist() == sorted([50, 7, 3, 70])
    # k_c = 1: 2 self-max > 1, so FPC runs and its first head is kept
    assert select_gated_heads(INDEX, LABELS, rank, selfmax, 1 / 6).tolist() == sorted([50, 81])


def test_node_and_cluster_random():
    # clusters named by their head's original index; class 0: {50: 4 members, 90: 2}; class 1: {3: 3, 81: 3}
    cluster = np.array([50, 50, 50, 90, 50, 90, 3, 3, 3, 81, 81, 81])
    kept = select_node(INDEX, LABELS, cluster, seed=0)
    k0, k1 = kept[np.isin(kept, INDEX[:6])], kept[np.isin(kept, INDEX[6:])]
    assert len(k0) == 2 + 2 and {90, 66} <= set(k0)  # half of the largest cluster (4 -> 2) plus all of the other
    assert len(k1) == 2 + 3 and {25, 18, 70} <= set(k1)  # equal sizes: the smaller id (head 3) is halved (3 -> 2)
    assert np.array_equal(kept, select_node(INDEX, LABELS, cluster, seed=0))
    one = select_cluster_random(INDEX, LABELS, cluster, seed=1)
    assert len(one) == 4 and all(len(set(one) & set(INDEX[cluster == h])) == 1 for h in (50, 90, 3, 81))


def test_small_cluster_removal_and_controls():
    # class 0 (6 samples): clusters of sizes 1, 1, 4; class 1 (6): sizes 1, 2, 3
    cluster = np.array([50, 7, 31, 31, 31, 31, 3, 44, 44, 25, 25, 25])
    norms = {50: 2.0, 7: 1.0, 31: 5.0, 3: 1.0, 44: 1.0, 25: 1.0}
    kept, removed = remove_small_clusters(INDEX, LABELS, cluster, 0.2, tie_break="head_norm", head_sq_norm=norms)
    # target round(0.2 * 6) = 1: class 0 removes the singleton with the smaller head norm (7); class 1 the singleton 3
    assert removed == {0: 1, 1: 1} and set(INDEX) - set(kept) == {7, 3}
    kept, removed = remove_small_clusters(INDEX, LABELS, cluster, 0.5, seed=0)
    # target 3: class 0 takes both singletons (2) then the 4-cluster -> 6; class 1: singleton + pair = 3
    assert removed == {0: 6, 1: 3} and set(kept) == {25, 18, 70}
    rnd = remove_random(INDEX, LABELS, {0: 2, 1: 3}, seed=0)
    assert len(rnd) == 7 and sum(np.isin(rnd, INDEX[:6])) == 4
    large = remove_large_clusters(INDEX, LABELS, cluster, {0: 2, 1: 4}, seed=0)
    assert {50, 7} <= set(large) and len(set(INDEX[2:6]) - set(large)) == 2  # class 0: 2 from the 4-cluster
    assert len(set([25, 18, 70, 44, 81]) - set(large)) == 4 and 3 in large  # class 1: 3 from largest, 1 from pair
    with pytest.raises(ValueError, match="cannot remove"):
        remove_random(INDEX, LABELS, {0: 7}, seed=0)


def test_class_balanced_subset():
    idx = np.arange(1000, 1300)
    lab = np.repeat([0, 1, 2], [100, 150, 50])
    sub = class_balanced_subset(idx, lab, 0.1, seed=3)
    assert set(sub) <= set(idx) and len(np.unique(sub)) == len(sub)
    assert [int((lab[np.isin(idx, sub)] == c).sum()) for c in range(3)] == [10, 15, 5]
    assert np.array_equal(sub, class_balanced_subset(idx, lab, 0.1, seed=3))
    assert [int((lab[np.isin(idx, class_balanced_subset(idx, lab, 0.001, 0))] == c).sum()) for c in range(3)] == [1] * 3


def test_accuracy_summary():
    hist = [
        {"epoch": 1, "val_acc": 0.5, "test_acc": 0.4},
        {"epoch": 2, "val_acc": 0.8, "test_acc": 0.7},
        {"epoch": 3, "val_acc": 0.8, "test_acc": 0.9},
        {"epoch": 4, "val_acc": 0.6, "test_acc": 0.6},
    ]
    acc = accuracy_summary(hist)
    assert acc == {
        "test_acc_best_val": 0.7,
        "test_acc_last": 0.6,
        "test_acc_max": 0.9,
        "val_acc_best": 0.8,
        "best_epoch": 2,
        "epochs": 4,
    }


def test_selection_edge_cases_found_by_mutation_testing():
    """What the hand-worked cases above leave open: unequal class sizes, a cluster named 0 (the head with original
    index 0), a class without clustered samples, empty inputs, the checks' messages, default seeds and missing
    counts, sampling without replacement."""
    # 8 samples of class 0 and 4 of class 1; original index 0 is a head (cluster id 0)
    index = np.array([0, 9, 4, 11, 2, 7, 5, 13, 1, 3, 8, 6])
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    # per class: k_c = round(0.5 N_c) = 4 and 2 -- the positions of the highest scores in each class
    scores = np.array([1, 2, 3, 4, 5, 6, 7, 8, 40, 30, 20, 10], dtype=float)
    assert select_top(index, labels, scores, 0.5, per_class=True).tolist() == sorted([2, 7, 5, 13, 1, 3])
    assert select_top(index, labels, scores, 0.25).tolist() == [1, 3, 8]  # globally: 40, 30, 20
    rank = np.array([0, 1, 2, 3, 4, -1, -1, -1, 0, 1, 2, -1])
    assert select_heads(index, labels, rank, 0.5).tolist() == sorted([0, 9, 4, 11, 1, 3])
    selfmax = np.ones(12, dtype=bool)  # more self-max samples than k_c in each class: the FPC heads
    assert select_gated_heads(index, labels, rank, selfmax, 0.5).tolist() == sorted([0, 9, 4, 11, 1, 3])
    # cluster 0 is a cluster like any other
    cluster = np.array([0, 0, 0, 0, 0, 9, 9, 9, 1, 1, 1, 1])
    one = select_cluster_random(index, labels, cluster, seed=0)
    assert len(one) == 3 and len(set(one) & {0, 9, 4, 11, 2}) == 1
    assert np.array_equal(one, select_cluster_random(index, labels, cluster, seed=0))
    assert len({tuple(select_cluster_random(index, labels, cluster, seed=s)) for s in range(6)}) > 1
    node = select_node(index, labels, cluster, seed=0)  # class 0: 5 -> 3 kept of cluster 0, all of 9; class 1: 4 -> 2
    assert len(node) == 3 + 3 + 2 and {7, 5, 13} <= set(node) and len(set(node) & {0, 9, 4, 11, 2}) == 3
    # a fraction below 1/2 drops a singleton class's only member; unassigned samples (-1) are left out, and a class
    # without any clustered sample does not stop the others
    lone = np.array([0, 0, 0, 0, 0, 9, 9, 9, 1, -1, -1, -1])
    assert 1 not in select_node(index, labels, lone, seed=0, fraction=0.25)
    assert set(select_node(index, labels, lone, seed=0, fraction=0.6)) & {1, 3, 8, 6} == {1}
    first_empty = np.array([-1] * 8 + [1, 1, 1, 1])
    assert len(select_node(index, labels, first_empty, seed=0)) == 2
    # empty inputs give empty int64 selections
    empty = np.array([], dtype=np.int64)
    for out in (
        select_top(empty, empty, empty, 0.5, per_class=True),
        select_heads(empty, empty, empty, 0.5),
        select_gated_heads(empty, empty, empty, empty, 0.5),
        class_balanced_subset(empty, empty, 0.5, 0),
    ):
        assert out.shape == (0,) and out.dtype == np.int64
    # indices given as floats or lists come back as int64
    assert select_top(index.astype(float), labels, scores, 0.5).dtype == np.int64
    assert select_heads(index.tolist(), labels.tolist(), rank, 0.5).dtype == np.int64
    # the checks, by message
    with pytest.raises(ValueError, match=r"^index \(12,\) and labels \(11,\) must be 1-D of equal length$"):
        select_top(index, labels[:11], scores, 0.5)
    with pytest.raises(ValueError, match=r"^index \(1, 12\) and labels \(1, 12\) must be 1-D"):
        select_top(index[None], labels[None], scores, 0.5)
    with pytest.raises(ValueError, match="^original indices repeat$"):
        select_top(np.r_[index[:11], 0], labels, scores, 0.5)
    with pytest.raises(ValueError, match="^per-sample array of length 11 does not match 12 samples$"):
        select_top(index, labels, scores[:11], 0.5)
    with pytest.raises(ValueError, match="^scores hold NaN or inf$"):
        select_top(index, labels, np.r_[scores[:11], np.inf], 0.5)
    with pytest.raises(ValueError, match=r"^fraction must lie in \[0, 1\], got 1.5$"):
        keep_count(10, 1.5)
    with pytest.raises(ValueError, match="^tie_break must be 'random' or 'head_norm', got 'size'$"):
        remove_small_clusters(index, labels, cluster, 0.2, tie_break="size")
    with pytest.raises(ValueError, match="^tie_break='head_norm' needs head_sq_norm$"):
        remove_small_clusters(index, labels, cluster, 0.2, tie_break="head_norm")
    with pytest.raises(ValueError, match="^cannot remove 5 samples of class 1: it has 4$"):
        remove_large_clusters(index, labels, cluster, {1: 5}, seed=0)
    with pytest.raises(ValueError, match="^empty training history$"):
        accuracy_summary([])
    with pytest.raises(ValueError, match="^the history has no validation accuracy; retraining needs a validation"):
        accuracy_summary([{"epoch": 1, "test_acc": 0.5}])
    # head norms order equal-size clusters even against the ids: singletons 0 (|phi|^2 3) and 2 (1): 2 goes first
    sing = np.array([0, 9, 4, 4, 2, 9, 9, 9, 1, 1, 1, 1])
    kept, removed = remove_small_clusters(
        index, labels, sing, 0.1, tie_break="head_norm", head_sq_norm={0: 3.0, 2: 1.0, 4: 1.0, 9: 1.0, 1: 1.0}
    )
    assert removed == {0: 1, 1: 0} and set(index) - set(kept) == {2}  # class 1: round(0.4) = 0
    # random ties: seed 0 by default; other seeds order the singletons otherwise
    draws = {tuple(remove_small_clusters(index, labels, sing, 0.1, seed=s)[0]) for s in range(8)}
    assert len(draws) == 2
    assert np.array_equal(
        remove_small_clusters(index, labels, sing, 0.1)[0], remove_small_clusters(index, labels, sing, 0.1, seed=0)[0]
    )
    # counts: a class left out removes nothing; a whole class may go; seeded and reproducible
    assert set(remove_random(index, labels, {0: 2}, seed=0)) >= {1, 3, 8, 6}
    assert set(remove_large_clusters(index, labels, cluster, {0: 2}, seed=0)) >= {1, 3, 8, 6}
    assert set(remove_random(index, labels, {1: 4}, seed=0)) == set(index[:8])
    assert set(remove_large_clusters(index, labels, cluster, {1: 4}, seed=0)) == set(index[:8])
    for fn in (remove_random, lambda i, lab, c, seed: remove_large_clusters(i, lab, cluster, c, seed)):
        outs = [tuple(fn(index, labels, {0: 3, 1: 1}, seed=s)) for s in (0, 0, 1, 2, 3, 4)]
        assert outs[0] == outs[1] and len(set(outs)) > 1
    # three classes (with two, a rule that took "every other class" for a class would still add up to the same)
    idx3, lab3 = np.arange(100, 109), np.repeat([0, 1, 2], 3)
    rank3 = np.tile([0, 1, 2], 3)
    assert select_top(idx3, lab3, 3.0 - rank3, 1 / 3, per_class=True).tolist() == [100, 103, 106]
    assert select_heads(idx3, lab3, rank3, 1 / 3).tolist() == [100, 103, 106]
    assert select_gated_heads(idx3, lab3, rank3, np.ones(9, dtype=bool), 1 / 3).tolist() == [100, 103, 106]
    node3 = select_node(idx3, lab3, np.repeat([100, 103, 106], 3), seed=0, fraction=1 / 3)
    assert len(node3) == 3 and [int(((node3 - 100) // 3 == c).sum()) for c in range(3)] == [1, 1, 1]
    # class counts, optionally of a mask (0/1 integers read as booleans)
    from lpntk.pruning import class_counts_of

    counts = class_counts_of([2, 0, 2, 1, 2])
    assert counts == {0: 1, 1: 1, 2: 3} and all(type(k) is int and type(v) is int for k, v in counts.items())
    assert class_counts_of(np.array([2, 0, 2, 1, 2]), [1, 0, 1, 1, 0]) == {1: 1, 2: 2}
    assert class_counts_of(labels, labels == 1) == {1: 4} and class_counts_of([]) == {}
    # class-balanced subsets draw without replacement: the whole data at fraction 1
    assert class_balanced_subset(index, labels, 1.0, seed=0).tolist() == sorted(index.tolist())


def test_cluster_selections_of_no_samples_are_empty():
    empty = np.array([], dtype=np.int64)
    out = select_cluster_random(empty, empty, empty, 0)
    assert out.shape == (0,) and out.dtype == np.int64

"""Subset selection (index bookkeeping, class balance, sizes), the pruning stages, and the end-to-end run."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pandas as pd
import pytest

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

# 12 samples of 2 classes with original indices that are neither contiguous nor sorted
INDEX = np.array([50, 7, 31, 90, 12, 66, 3, 44, 81, 25, 18, 70])
LABELS = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])


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


def test_registry_rules_on_hand_built_inputs():
    """Every registered rule on a hand-built PruningInputs (the cases of the tests above, worked out by hand): the
    rule reads its own inputs (the clusters of its keep, its score column, the per-seed draws), and select_subset
    checks what a rule returns."""
    from lpntk.pruning import SELECTORS, PruningInputs, draw_seed, register_selector, select_subset

    # draw_seed: the base alone for a shared draw, else NumPy's SeedSequence of (base, seed), as documented
    assert draw_seed(7, None) == 7 and isinstance(draw_seed(7.0, None), int)
    assert draw_seed(7, 3) == int(np.random.SeedSequence([7, 3]).generate_state(1)[0]) != draw_seed(3, 7)
    assert draw_seed(7, 3) != draw_seed(7, 4) and 0 <= draw_seed(7, 3) < 2**32

    rank = np.array([0, 3, 1, -1, 2, -1, 1, -1, 0, 2, -1, -1])
    selfmax = np.array([1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], dtype=bool)
    node_cluster = np.array([50, 50, 50, 90, 50, 90, 3, 3, 3, 81, 81, 81])
    other = np.array([50, 7, 31, 31, 31, 31, 3, 44, 44, 25, 25, 25])  # sizes 1, 1, 4 and 1, 2, 3
    el2n = np.array([9, 8, 7, 6, 5, 4, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    order = np.arange(12)[::-1]  # the small-cluster subset in another order than the training split
    norm_of = {50: 2.0, 7: 1.0, 31: 5.0, 3: 1.0, 44: 1.0, 25: 1.0}
    inp = PruningInputs(
        index=INDEX,
        labels=LABELS,
        head_rank=rank,
        self_max=selfmax,
        clusters={0.5: node_cluster, 0.3: other},
        scores={"el2n": el2n, "grand": -el2n, "forgetting": np.zeros(12), "random": np.arange(12.0)},
        node_fraction=0.25,
        seed=5,
        small={(0.5, "full", None): (INDEX[order], other[order]), (0.5, "own", 2): (INDEX[:6], other[:6])},
        small_seed=9,
        sq_norm=np.array([norm_of.get(int(i), 100.0) for i in INDEX]),
        tie_break="head_norm",
    )

    def run(method, seed=None, **spec):
        kept = select_subset(inp, {"method": method, **spec}, seed)
        assert kept.dtype == np.int64 and np.all(np.diff(kept) > 0), method
        return kept.tolist()

    assert run("full") == sorted(INDEX.tolist())
    assert run("lpntk", keep=0.5) == sorted([50, 31, 12, 3, 81, 25])
    assert run("lpntk_gated", keep=0.5) == sorted([50, 7, 3, 70])
    # one member per cluster of the keep's clusters (0.5: 4 clusters), drawn from the base seed or per seed
    shared = run("lpntk_random", keep=0.5)
    assert len(shared) == 4 and all(len(set(shared) & set(INDEX[node_cluster == h])) == 1 for h in (50, 90, 3, 81))
    draws = {tuple(run("lpntk_random", s, keep=0.5)) for s in (None, 0, 1, 2, 3, 4, 5)}
    assert len(draws) > 1 and tuple(run("lpntk_random", 1, keep=0.5)) == tuple(run("lpntk_random", 1, keep=0.5))
    # node on the clusters of cluster_keep, with the inputs' node_fraction 0.25: largest 4 -> 1 kept, 3 -> 1 kept
    node = run("node", cluster_keep=0.5)
    assert len(node) == 1 + 2 + 1 + 3 and {90, 66, 25, 18, 70} <= set(node)
    assert len(set(node) & {50, 7, 31, 12}) == 1 and len(set(node) & {3, 44, 81}) == 1
    assert len(run("node", cluster_keep=0.3)) == 6 + 6 - 3 - 2  # 4-cluster -> 1, 3-cluster -> 1
    # score rules read their own column, globally (per_class False) or per class, ties by the random scores
    assert run("el2n", keep=0.5) == sorted(INDEX[:6].tolist())
    assert run("grand", keep=0.5) == sorted(INDEX[6:].tolist())
    assert run("forgetting", keep=2 / 12) == sorted(INDEX[[10, 11]].tolist())  # all tied: the highest random scores
    draw = np.random.default_rng(draw_seed(5, 3)).random(12)  # the per-seed random scores
    assert inp.random_scores(3).tolist() == draw.tolist() and inp.random_scores(None) is inp.scores["random"]
    # per seed, each score method breaks its ties with a stream of its own, not the random baseline's numbers
    import zlib

    own = np.random.default_rng([draw_seed(5, 3), zlib.crc32(b"forgetting")]).random(12)
    assert inp.random_scores(3, "forgetting").tolist() == own.tolist() and not np.allclose(own, draw)
    assert not np.allclose(inp.random_scores(3, "el2n"), own)
    assert run("forgetting", 3, keep=2 / 12) == sorted(INDEX[np.argsort(-own)[:2]].tolist())
    inp.per_class = True
    assert run("el2n", keep=0.5) == sorted(INDEX[[0, 1, 2, 9, 10, 11]].tolist())
    # the factory behind the score rules, called afresh (the registered ones are built at import)
    from lpntk.pruning._registry import _score_selector

    fresh = {name: _score_selector(name) for name in ("el2n", "grand", "forgetting")}
    assert fresh["el2n"](inp, {"keep": 0.5}, None).tolist() == sorted(INDEX[[0, 1, 2, 9, 10, 11]].tolist())
    inp.per_class = False
    assert fresh["grand"](inp, {"keep": 0.5}, None).tolist() == sorted(INDEX[6:].tolist())
    assert fresh["forgetting"](inp, {"keep": 2 / 12}, None).tolist() == sorted(INDEX[[10, 11]].tolist())
    assert fresh["forgetting"](inp, {"keep": 2 / 12}, 3).tolist() == sorted(INDEX[np.argsort(-own)[:2]].tolist())
    assert (
        fresh["grand"].__doc__
        == "Keep the highest grand scores (ties: the higher random score, its own draw per seed)."
    )
    # random: per class the highest random scores, whatever per_class says
    assert run("random", keep=0.5) == sorted(INDEX[[3, 4, 5, 9, 10, 11]].tolist())
    assert run("random", 3, keep=0.5) == sorted(
        INDEX[np.r_[np.argsort(-draw[:6])[:3], 6 + np.argsort(-draw[6:])[:3]]].tolist()
    )
    # the small-cluster experiment: the subset itself, then removals from it (its labels looked up by index)
    assert run("base", data_fraction=0.5) == sorted(INDEX.tolist())
    assert run("base", 2, data_fraction=0.5, kernel="own") == sorted(INDEX[:6].tolist())
    # remove 0.2: one sample per class; class 0's singletons 50 (|phi|^2 2) and 7 (1): the smaller norm goes
    assert set(INDEX) - set(run("small_clusters", data_fraction=0.5, remove=0.2)) == {7, 3}
    assert set(run("small_clusters", data_fraction=0.5, remove=0.5)) == {25, 18, 70}  # 2 singletons + the 4
    rnd = run("random_removal", data_fraction=0.5, remove=0.2)  # as many per class, at random
    assert len(rnd) == 10 and len(set(INDEX[:6]) - set(rnd)) == 1 and len(set(INDEX[6:]) - set(rnd)) == 1
    assert rnd == run("random_removal", data_fraction=0.5, remove=0.2)
    large = run("large_clusters", data_fraction=0.5, remove=0.2)  # one from each class's largest cluster
    assert len(large) == 10 and {50, 7, 3, 44, 81} <= set(large)
    assert len({31, 90, 12, 66} - set(large)) == 1 and len({25, 18, 70} - set(large)) == 1
    own = run("small_clusters", 2, data_fraction=0.5, kernel="own", remove=0.5)  # class 0 only: 2 singletons + 4
    assert own == []
    for seedless in (None, 0):  # the key holds the seed: a shared draw is not a seed's draw
        key = (0.5, "own", seedless)
        with pytest.raises(ValueError, match=rf"^no clusters of the small-cluster subset {re.escape(str(key))}"):
            run("base", seedless, data_fraction=0.5, kernel="own")
    # random ties and no norms: each retraining seed's own draw, from draw_seed(small_seed, seed)
    from lpntk.pruning import remove_small_clusters

    rnd_inp = PruningInputs(
        index=INDEX,
        labels=LABELS,
        small={(0.5, "own", s): (INDEX[:6], other[:6]) for s in range(8)},
        small_seed=9,
    )
    for s in range(8):  # class 0 only; target round(0.2 * 6) = 1: one of the singletons 50 and 7, drawn
        kept = select_subset(
            rnd_inp, {"method": "small_clusters", "data_fraction": 0.5, "kernel": "own", "remove": 0.2}, s
        )
        ref = remove_small_clusters(INDEX[:6], LABELS[:6], other[:6], 0.2, seed=draw_seed(9, s))[0]
        assert kept.tolist() == ref.tolist() and len(set(INDEX[:6]) - set(kept)) == 1
    # select_subset's checks and the registry
    with pytest.raises(ValueError, match="^pruning method 'nope' has no selection rule; known: base, el2n, "):
        run("nope")

    @register_selector("bad")
    def bad(inp, spec, seed):
        return spec["out"]

    try:
        assert SELECTORS["bad"] is bad
        with pytest.raises(AssertionError, match="^subset bad-1 is not a subset"):
            select_subset(inp, {"name": "bad-1", "method": "bad", "out": [50, 1]})
        with pytest.raises(AssertionError, match="^subset bad is not a subset"):
            select_subset(inp, {"method": "bad", "out": [50, 50]})
        assert select_subset(inp, {"method": "bad", "out": [50.0, 7.0]}).dtype == np.int64
    finally:
        del SELECTORS["bad"]


# ------------------------------------------------------------------------------------------- stages


@pytest.fixture(scope="module")
def tiny_cfg(repo, schema_path):
    from lpntk.config import dataset_config, load_config

    cfg = dataset_config(load_config(repo / ".test" / "config" / "config.yaml", schema_path), "tiny")
    cfg["pruning"].update(
        {
            "methods": ["lpntk", "lpntk_gated", "lpntk_random", "node", "el2n", "grand", "forgetting", "random"],
            "keep": [0.7, 0.5],
            "curve_keep": [0.9],
        }
    )
    cfg["pruning"]["small_clusters"].update({"data_fractions": [0.5], "remove": [0.2], "controls": ["random", "large"]})
    return cfg


@pytest.fixture(scope="module")
def full_kernel_cfg(tiny_cfg):
    """tiny_cfg with the small-cluster experiment on the full-data kernel only (the synthetic fixture has no images
    to train a subset's own model on)."""
    cfg = copy.deepcopy(tiny_cfg)
    cfg["pruning"]["small_clusters"]["kernels"] = ["full"]
    return cfg


def test_subset_plan_and_units(tiny_cfg):
    from lpntk.plan import retrain_settings, retrain_shards, retrain_units, subset_plan

    names = [p["name"] for p in subset_plan(tiny_cfg)]
    assert names[:4] == ["full", "lpntk-k0.9", "lpntk-k0.7", "lpntk-k0.5"]
    assert "node-c0.5" in names and "el2n-k0.9" not in names and "random-k0.9" in names
    assert names[-7:] == [
        "d0.5-base",
        "d0.5-small-r0.2",
        "d0.5-random-r0.2",
        "d0.5-large-r0.2",
        "d0.5-own-small-r0.2",
        "d0.5-own-random-r0.2",
        "d0.5-own-large-r0.2",
    ]
    specs = {p["name"]: p for p in subset_plan(tiny_cfg)}
    per_seed = {n for n, p in specs.items() if p["per_seed"]}  # pruning.draws: per_seed (the default)
    assert {
        "random-k0.5",
        "el2n-k0.5",
        "lpntk_random-k0.5",
        "node-c0.5",
        "d0.5-base",
        "d0.5-own-small-r0.2",
    } <= per_seed
    assert not {"full", "lpntk-k0.5", "lpntk_gated-k0.5"} & per_seed  # deterministic selections: one subset
    assert specs["d0.5-own-random-r0.2"]["kernel"] == "own" and specs["d0.5-random-r0.2"]["kernel"] == "full"
    shared = copy.deepcopy(tiny_cfg)
    shared["pruning"]["draws"] = "shared"
    assert not any(p["per_seed"] for p in subset_plan(shared))
    cfg = copy.deepcopy(tiny_cfg)
    for group_by, n_units in (("subset", len(names)), ("method", 10), ("all", 1)):
        cfg["pruning"]["retrain"]["group_by"] = group_by
        units = retrain_units(cfg)
        assert len(units) == n_units and sorted(sum(units.values(), [])) == sorted(names)
    assert retrain_units(cfg) == {"all": names}
    assert retrain_shards(cfg) == ["all"]
    cfg["pruning"]["retrain"].update({"batch_seeds": False, "seeds": [4, 5]})
    assert retrain_shards(cfg) == ["seed4", "seed5"]
    cfg["pruning"]["retrain"]["epochs"] = 7
    assert retrain_settings(cfg) == {"seeds": [4, 5], "epochs": 7, "small_epochs": 7}
    cfg["pruning"]["small_clusters"]["epochs"] = 11
    assert retrain_settings(cfg)["small_epochs"] == 11


def test_plan_of_the_per_seed_selection(tiny_cfg):
    """Each retraining seed selects from its own training run: the pruning seeds are the retraining seeds, the kernel
    seeds add the reference seed where it does not retrain (each kernel once), and the gallery shows one of them."""
    from lpntk.plan import check_pruning_config, gallery_seed, kernel_seeds, pruning_seeds, shard_seeds, small_draw_seed

    cfg = copy.deepcopy(tiny_cfg)  # train.seeds [1, 2]
    assert pruning_seeds(cfg) == [1, 2] and kernel_seeds(cfg) == [1, 2]
    assert kernel_seeds(cfg, reference=2) == [1, 2] and gallery_seed(cfg, 2) == 2
    assert shard_seeds(cfg, "all") == [1, 2] and shard_seeds(cfg, "seed2") == [2]
    with pytest.raises(ValueError, match=r"shard 'seed3'"):
        shard_seeds(cfg, "seed3")
    cfg["train"]["seeds"] = [1, 2, 3]
    cfg["pruning"]["retrain"]["seeds"] = [2, 1]
    check_pruning_config(cfg)
    assert pruning_seeds(cfg) == [2, 1]
    assert kernel_seeds(cfg) == [2, 1, None]  # the reference (chosen at run time) may be seed 3
    assert kernel_seeds(cfg, reference=3) == [2, 1, 3] and kernel_seeds(cfg, reference=1) == [2, 1]
    assert gallery_seed(cfg, 3) == 2 and gallery_seed(cfg, 1) == 1
    cfg["kernel"]["seed"] = 1
    assert kernel_seeds(cfg) == [2, 1]
    cfg["pruning"]["enabled"] = False
    assert pruning_seeds(cfg) == [] and kernel_seeds(cfg) == [1]  # use cases 1-2 alone: the reference's kernel
    with pytest.raises(ValueError, match="pruning is not enabled"):
        gallery_seed(cfg, 1)
    assert small_draw_seed(cfg, 4) == 4
    cfg["pruning"]["draws"] = "shared"
    assert small_draw_seed(cfg, 4) is None


def test_a_retraining_seed_outside_train_seeds_stops_at_config_validation(repo, schema_path):
    import yaml

    from lpntk.config import ConfigError, validate_config
    from lpntk.plan import check_pruning_config

    raw = yaml.safe_load((repo / ".test" / "config" / "config.yaml").read_text())
    raw["datasets"]["tiny"]["pruning"]["retrain"]["seeds"] = [1, 5]
    msg = (
        r"^config error at datasets\.tiny\.pruning\.retrain\.seeds: seed 5 is not among train\.seeds \[1, 2\]; "
        r".* add 5 to train\.seeds or remove it from pruning\.retrain\.seeds"
    )
    with pytest.raises(ConfigError, match=msg):
        validate_config(copy.deepcopy(raw), schema_path)
    raw["datasets"]["tiny"]["pruning"]["enabled"] = False  # no pruning: no check
    cfg = validate_config(copy.deepcopy(raw), schema_path)
    with pytest.raises(ValueError, match=r"^pruning\.retrain\.seeds: seed 5"):
        check_pruning_config(cfg["datasets"]["tiny"])
    raw["datasets"]["tiny"]["kernel"]["seed"] = 3  # the kernels of use cases 1-2 are a training run's own
    with pytest.raises(ConfigError, match=r"^config error at datasets\.tiny\.kernel\.seed: 3 is not among train"):
        validate_config(copy.deepcopy(raw), schema_path)


def _toy_run(tmp, index, labels, seed: int):
    """Training run ``seed`` of the synthetic split: its per-class kernels (random features) and scores."""
    from lpntk.grams import ClassGram, save_class_grams
    from lpntk.io import save_table

    rng = np.random.default_rng(seed)
    n = len(index)
    grams = []
    for c in range(10):
        pos = np.flatnonzero(labels == c)
        phi = rng.normal(size=(len(pos), 4))
        grams.append(ClassGram(c, (phi @ phi.T).astype(np.float32), (phi**2).sum(1), index[pos], pos, 10))
    kernels = [str(tmp / f"kernel{seed}" / "classes5-9.npz"), str(tmp / f"kernel{seed}" / "classes0-4.npz")]
    save_class_grams(kernels[0], grams[5:])
    save_class_grams(kernels[1], grams[:5])
    scores = pd.DataFrame(
        {
            "index": index,
            "label": labels,
            "el2n": rng.random(n),
            "grand": rng.random(n),
            "forgetting": rng.integers(0, 3, n),
            "random": np.random.default_rng(0).random(n),  # the scores stage's random_seed: the same for every run
        }
    )
    save_table(tmp / f"scores{seed}.csv", scores)
    return kernels


def _cluster_and_prune(tmp, cfg, seed: int, kernels, scores, tag: str = ""):
    """The cluster and prune stages of one retraining seed on its own run's kernels and scores: their outputs."""
    from lpntk.stages.cluster_stage import cluster_stage
    from lpntk.stages.prune_stage import prune_stage

    outs = {
        "clusters": str(tmp / f"clusters{seed}{tag}.npz"),
        "summary": str(tmp / f"cluster_summary{seed}{tag}.csv"),
        "subsets": str(tmp / f"subsets{seed}{tag}.npz"),
        "table": str(tmp / f"subsets{seed}{tag}.csv"),
    }
    off = {"enabled": False}
    cluster_outs = {k: outs[k] for k in ("clusters", "summary")}
    cluster_stage(dataset="toy", cfg=cfg, seed=seed, kernels=kernels, outputs=cluster_outs, mlflow_cfg=off)
    prune_stage(
        dataset="toy",
        cfg=cfg,
        seed=seed,
        train=tmp / "train.npz",
        clusters=outs["clusters"],
        scores=scores,
        outputs={k: outs[k] for k in ("subsets", "table")},
        mlflow_cfg=off,
    )
    return outs


@pytest.fixture(scope="module")
def pruning_inputs(tmp_path_factory, full_kernel_cfg):
    """Synthetic prepared training split, and per training run (seeds 1, 2) its per-class kernels and scores; cluster
    + prune run on them for each retraining seed: (tmp, index, labels, {seed: outputs})."""
    from lpntk.io import save_npz

    tmp = tmp_path_factory.mktemp("pruning")
    rng = np.random.default_rng(0)
    n = 60
    index = rng.permutation(np.arange(500, 500 + 3 * n))[:n]  # original indices: shuffled, not 0..N-1
    labels = np.repeat(np.arange(10), 6)
    rng.shuffle(labels)
    save_npz(tmp / "train.npz", x=np.zeros((n, 1, 2, 2), np.float32), y=labels, index=index)
    outs = {}
    for seed in (1, 2):
        kernels = _toy_run(tmp, index, labels, seed)
        outs[seed] = _cluster_and_prune(tmp, full_kernel_cfg, seed, kernels, tmp / f"scores{seed}.csv")
        outs[seed]["kernels"] = kernels
    return tmp, index, labels, outs


def test_cluster_and_prune_stages_keep_original_indices_and_class_balance(pruning_inputs):
    from lpntk.stages.cluster_stage import clusters_at_keep

    tmp, index, labels, outs = pruning_inputs
    lab = dict(zip(index.tolist(), labels.tolist(), strict=True))
    subsets = {s: np.load(outs[s]["subsets"]) for s in (1, 2)}
    for seed in (1, 2):
        cl = np.load(outs[seed]["clusters"])
        assert sorted(cl["index"].tolist()) == sorted(index.tolist()) and (np.diff(cl["label"]) >= 0).all()
        assert set(clusters_at_keep(cl, 0.5)) <= set(index)  # clusters named by their head's ORIGINAL index
        table = pd.read_csv(outs[seed]["table"]).set_index("name")
        assert (table["seed"] == seed).all() and sorted(table.index) == sorted(subsets[seed].files)
        for name in subsets[seed].files:
            kept = subsets[seed][name]
            assert set(kept) <= set(index) and len(np.unique(kept)) == len(kept) and (np.diff(kept) > 0).all(), name
            assert table.loc[name, "n"] == len(kept)
        assert np.array_equal(subsets[seed]["full"], np.sort(index))
        for keep, k in ((0.9, 5), (0.7, 4), (0.5, 3)):  # 6 per class
            for name in (f"lpntk-k{keep:g}", f"random-k{keep:g}"):
                counts = np.bincount([lab[i] for i in subsets[seed][name]], minlength=10)
                assert (counts == k).all(), (seed, name, counts)
        # heads are nested: every sample kept at 0.5 is kept at 0.7 and 0.9
        sub = subsets[seed]
        assert set(sub["lpntk-k0.5"]) <= set(sub["lpntk-k0.7"]) <= set(sub["lpntk-k0.9"])
        # lpntk heads at 0.5 are exactly the first 3 heads by rank of the seed's own FPC
        rank = dict(zip(cl["index"].tolist(), cl["head_rank"].tolist(), strict=True))
        assert all(0 <= rank[i] < 3 for i in sub["lpntk-k0.5"])
        # global ranking (default) keeps the highest el2n of the seed's own scores over the whole set
        sc = pd.read_csv(tmp / f"scores{seed}.csv")
        assert set(sub["el2n-k0.5"]) == set(sc.sort_values("el2n", ascending=False)["index"].to_numpy()[:30])
        # small-cluster experiment: nested in its base subset, the same removed count per class as the control
        base = sub["d0.5-base"]
        assert np.bincount([lab[i] for i in base], minlength=10).tolist() == [3] * 10
        for name in ("d0.5-small-r0.2", "d0.5-random-r0.2", "d0.5-large-r0.2"):
            assert set(sub[name]) <= set(base)
        small = sub["d0.5-small-r0.2"]
        removed_small = np.bincount([lab[i] for i in set(base) - set(small)], minlength=10)
        removed_rand = np.bincount([lab[i] for i in set(base) - set(sub["d0.5-random-r0.2"])], minlength=10)
        assert (removed_small >= 1).all() and np.array_equal(removed_small, removed_rand)
        heads = dict(
            zip(cl[f"small_d0.5_s{seed}_index"].tolist(), cl[f"small_d0.5_s{seed}_cluster"].tolist(), strict=True)
        )
        assert f"small_d0.5_s{3 - seed}_index" not in cl  # the other seed's draw is clustered on its own kernel
        gone = set(base) - set(small)
        assert all(heads[h] in gone for h in gone)  # whole clusters go: their heads go with them
    # every subset but the full set differs between the seeds: its own kernel, scores and random draws
    for name in subsets[1].files:
        same = np.array_equal(subsets[1][name], subsets[2][name])
        assert same == (name == "full"), name


def test_each_seeds_subsets_depend_only_on_its_own_training_run(pruning_inputs, full_kernel_cfg):
    """Retraining seed s's subsets are selected from training run s alone: changing run 2's scores (or its kernels)
    changes seed 2's score (or lpNTK) subsets and leaves every subset of seed 1 as it was."""
    tmp, index, labels, outs = pruning_inputs
    before = {s: np.load(outs[s]["subsets"]) for s in (1, 2)}
    sc = pd.read_csv(tmp / "scores2.csv")
    sc["el2n"] = sc["el2n"].to_numpy()[::-1]  # run 2's EL2N changes
    sc.to_csv(tmp / "scores2-changed.csv", index=False)
    (tmp / "other").mkdir()
    run2 = _toy_run(tmp / "other", index, labels, 7)  # run 2's kernels change
    after = {
        1: _cluster_and_prune(tmp, full_kernel_cfg, 1, outs[1]["kernels"], tmp / "scores1.csv", "-again"),
        2: _cluster_and_prune(tmp, full_kernel_cfg, 2, outs[2]["kernels"], tmp / "scores2-changed.csv", "-scores"),
    }
    new_kernel = _cluster_and_prune(tmp, full_kernel_cfg, 2, run2, tmp / "scores2.csv", "-kernel")
    assert open(after[1]["subsets"], "rb").read() == open(outs[1]["subsets"], "rb").read()  # seed 1: the same bytes
    changed = np.load(after[2]["subsets"])
    assert not np.array_equal(changed["el2n-k0.5"], before[2]["el2n-k0.5"])
    for name in ("lpntk-k0.5", "grand-k0.5", "forgetting-k0.5", "random-k0.5", "d0.5-small-r0.2"):
        assert np.array_equal(changed[name], before[2][name]), name  # what does not read EL2N stays
    rekerneled = np.load(new_kernel["subsets"])
    assert not np.array_equal(rekerneled["lpntk-k0.5"], before[2]["lpntk-k0.5"])
    assert np.array_equal(rekerneled["el2n-k0.5"], before[2]["el2n-k0.5"])  # the scores did not change


def test_prune_is_deterministic_and_checks_its_clusters(pruning_inputs, full_kernel_cfg):
    from lpntk.stages.prune_stage import prune_stage

    tmp, _, _, outs = pruning_inputs
    again = {"subsets": str(tmp / "again.npz"), "table": str(tmp / "again.csv")}
    args = {"dataset": "toy", "seed": 1, "train": tmp / "train.npz", "clusters": outs[1]["clusters"]}
    args.update(scores=tmp / "scores1.csv", outputs=again, mlflow_cfg={"enabled": False})
    prune_stage(cfg=full_kernel_cfg, **args)
    assert open(again["subsets"], "rb").read() == open(outs[1]["subsets"], "rb").read()
    own = copy.deepcopy(full_kernel_cfg)
    own["pruning"]["small_clusters"]["kernels"] = ["full", "own"]
    with pytest.raises(ValueError, match=r"no \['own_d0.5_s1_index'"):  # the own-model clusters were not given
        prune_stage(cfg=own, **args)
    cfg = copy.deepcopy(full_kernel_cfg)
    cfg["pruning"]["curve_keep"] = [0.95]  # any kept fraction: the clusters file ranks every sample (cluster stage)
    prune_stage(cfg=cfg, **args)
    assert len(np.load(again["subsets"])["lpntk-k0.95"]) > len(np.load(outs[1]["subsets"])["lpntk-k0.9"])
    shared = copy.deepcopy(full_kernel_cfg)
    shared["pruning"]["draws"] = "shared"  # the clusters hold seed 1's own draw, not the shared one
    with pytest.raises(ValueError, match=r"no \['small_d0.5_index'"):
        prune_stage(cfg=shared, **args)
    with pytest.raises(ValueError, match=r"seed 3 is not a retraining seed of the pruning experiment \[1, 2\]"):
        prune_stage(cfg=full_kernel_cfg, **{**args, "seed": 3})


def test_shared_draws_keep_one_random_subset_but_each_seeds_selection(pruning_inputs, full_kernel_cfg):
    """pruning.draws: shared -- the random choices are drawn once for every seed (the random baseline is one subset,
    the small-cluster experiment one class-balanced subset), while lpNTK and the scores stay each seed's own."""
    tmp, _, _, outs = pruning_inputs
    cfg = copy.deepcopy(full_kernel_cfg)
    cfg["pruning"]["draws"] = "shared"
    sub = {
        s: np.load(_cluster_and_prune(tmp, cfg, s, outs[s]["kernels"], tmp / f"scores{s}.csv", "-shared")["subsets"])
        for s in (1, 2)
    }
    assert np.array_equal(sub[1]["random-k0.5"], sub[2]["random-k0.5"])
    assert np.array_equal(sub[1]["d0.5-base"], sub[2]["d0.5-base"])
    assert not np.array_equal(sub[1]["lpntk-k0.5"], sub[2]["lpntk-k0.5"])
    assert not np.array_equal(sub[1]["el2n-k0.5"], sub[2]["el2n-k0.5"])
    table = pd.read_csv(tmp / "subsets1-shared.csv").set_index("name")
    assert table.loc["random-k0.5", "draw"] == "shared" and table.loc["lpntk-k0.5", "seed"] == 1


def test_retraining_uses_exactly_the_subset(tmp_path, digits, tiny_cfg, monkeypatch):
    import lpntk.stages.retrain_stage as retrain_module
    from lpntk.data import save_prepared
    from lpntk.io import save_npz
    from lpntk.stages.retrain_stage import retrain_stage

    save_prepared(digits, tmp_path / "data")
    rng = np.random.default_rng(1)
    chosen = np.sort(rng.choice(digits.train.index.numpy(), size=40, replace=False))
    cfg = copy.deepcopy(tiny_cfg)
    cfg["pruning"].update({"methods": ["lpntk"], "keep": [0.5], "curve_keep": []})
    cfg["pruning"]["small_clusters"]["enabled"] = False
    cfg["pruning"]["retrain"].update({"epochs": 1, "seeds": [3, 4], "group_by": "subset"})
    other = np.sort(rng.choice(digits.train.index.numpy(), size=40, replace=False))
    files = []  # one subsets file per seed, each from its own training run: seed 4's lpNTK subset is another
    for seed, kept in ((3, chosen), (4, other)):
        files.append(tmp_path / f"subsets{seed}.npz")
        save_npz(files[-1], **{"full": digits.train.index.numpy(), "lpntk-k0.5": kept})
    seen = []
    real = retrain_module.train_model

    def spy(model, train, recipe, seed, **kw):
        seen.append((seed, train.index.numpy().copy(), recipe.epochs, len(kw["val"]), len(kw["test"])))
        return real(model, train, recipe, seed, **kw)

    monkeypatch.setattr(retrain_module, "train_model", spy)
    out = tmp_path / "res.json"
    retrain_stage(
        dataset="digits",
        cfg=cfg,
        unit="lpntk-k0.5",
        shard="all",
        data=tmp_path / "data",
        subsets=files,
        output=out,
        threads=1,
        mlflow_cfg={"enabled": False},
    )
    assert [s[0] for s in seen] == [3, 4]
    for (_, idx, epochs, n_val, n_test), kept in zip(seen, (chosen, other), strict=True):
        assert np.array_equal(np.sort(idx), kept) and epochs == 1
        assert (n_val, n_test) == (len(digits.val), len(digits.test))
    res = json.loads(out.read_text())
    rec = res["subsets"][0]
    assert rec["n_train"] == 40 and rec["method"] == "lpntk" and [r["seed"] for r in rec["runs"]] == [3, 4]
    for r in rec["runs"]:
        assert 0 <= r["test_acc_best_val"] <= r["test_acc_max"] <= 1 and r["best_epoch"] == 1
    with pytest.raises(ValueError, match="not in the config's plan"):
        retrain_stage(
            dataset="digits",
            cfg=cfg,
            unit="el2n-k0.3",
            shard="all",
            data=tmp_path / "data",
            subsets=files,
            output=out,
            threads=1,
            mlflow_cfg={"enabled": False},
        )
    with pytest.raises(ValueError, match=r"one subsets file per seed of shard 'all' \(\[3, 4\]\)"):
        retrain_stage(
            dataset="digits",
            cfg=cfg,
            unit="lpntk-k0.5",
            shard="all",
            data=tmp_path / "data",
            subsets=files[:1],
            output=out,
            threads=1,
            mlflow_cfg={"enabled": False},
        )


def _result(subset, method, keep, accs, n, experiment="table", **extra):
    """One subset's retraining record; ``n``: its size, or each seed's."""
    sizes = n if isinstance(n, list) else [n] * len(accs)
    runs = [
        {
            "seed": s + 1,
            "n_train": sizes[s],
            "test_acc_best_val": a,
            "test_acc_last": a - 0.01,
            "test_acc_max": a + 0.01,
            "val_acc_best": a,
            "best_epoch": 1,
            "epochs": 2,
            "history": [],
        }
        for s, a in enumerate(accs)
    ]
    return {
        "subset": subset,
        "method": method,
        "experiment": experiment,
        "keep": keep,
        "n_train": float(np.mean(sizes)),
        "epochs": 2,
        "runs": runs,
        **extra,
    }


def test_pruning_table_with_slides(tmp_path, tiny_cfg):
    from lpntk.io import save_json
    from lpntk.stages.pruning_table_stage import aggregate_runs, pruning_table_stage

    cfg = copy.deepcopy(tiny_cfg)
    cfg.update({"source": "torchvision", "name": "MNIST"})
    cfg["pruning"].update({"methods": ["lpntk", "random"], "keep": [0.5], "curve_keep": []})
    cfg["pruning"]["small_clusters"].update({"data_fractions": [0.5], "remove": [0.2], "controls": ["random"]})
    results = [
        {
            "subsets": [
                _result("full", "full", 1.0, [0.99, 0.98], 100),
                _result("lpntk-k0.5", "lpntk", 0.5, [0.97, 0.95], 50),
                _result("random-k0.5", "random", 0.5, [0.96, 0.96], 50),
            ]
        },
        {
            "subsets": [
                _result("d0.5-base", "base", 1.0, [0.8, 0.7], 50, "small_clusters", data_fraction=0.5, remove=0.0),
                _result(
                    "d0.5-small-r0.2",
                    "small_clusters",
                    0.8,
                    [0.75, 0.7],
                    [39, 41],  # whole clusters go: each seed's subset its own size
                    "small_clusters",
                    data_fraction=0.5,
                    remove=0.2,
                ),
                _result(
                    "d0.5-random-r0.2",
                    "random_removal",
                    0.8,
                    [0.6, 0.7],
                    40,
                    "small_clusters",
                    data_fraction=0.5,
                    remove=0.2,
                ),
            ]
        },
    ]
    df = aggregate_runs(results, 100)
    row = df.set_index("subset").loc["lpntk-k0.5"]
    assert row["test_acc_best_val_mean"] == pytest.approx(96.0)
    assert row["test_acc_best_val_std"] == pytest.approx(np.std([97, 95], ddof=1))
    assert row["test_acc_max_mean"] == pytest.approx(97.0) and row["realised_keep"] == 0.5
    files = []
    for i, r in enumerate(results):
        files.append(str(save_json(tmp_path / f"r{i}.json", r)))
    pd.DataFrame(
        [
            {"name": n, "n": k, "reference_n": ref}
            for n, k, ref in (
                ("full", 100, 100),
                ("lpntk-k0.5", 50, 100),
                ("random-k0.5", 50, 100),
                ("d0.5-base", 50, 50),
                ("d0.5-small-r0.2", 40, 50),
                ("d0.5-random-r0.2", 40, 50),
            )
        ]
    ).to_csv(tmp_path / "s.csv", index=False)
    outs = {
        k: str(tmp_path / v)
        for k, v in (
            ("csv", "t.csv"),
            ("md", "t.md"),
            ("runs", "runs.csv"),
            ("fig_redundant", "r.png"),
            ("fig_redundant_pdf", "r.pdf"),
            ("fig_small", "s.png"),
            ("fig_small_pdf", "s.pdf"),
        )
    }
    pruning_table_stage(
        dataset="mnist",
        cfg=cfg,
        runs=files,
        subsets_table=tmp_path / "s.csv",
        outputs=outs,
        mlflow_cfg={"enabled": False},
    )
    md = open(outs["md"]).read()
    assert "99.37 ± 0.04" in md and "96.00 ± 1.41" in md and "keep not stated" in md
    assert (
        "Each retraining seed's subset is selected from its own reference seed: lpNTK from that seed's kernel, "
        "EL2N/GraNd/forgetting from that seed's training dynamics, random drawn per seed; the spread over seeds "
        "therefore includes the selection's variance." in md
    )
    cells = [line.split("|") for line in md.splitlines() if line.startswith("| d0.5")]
    sizes = {c[1].strip(): c[5].strip() for c in cells}  # the small-cluster table's n_train: sizes, not their means
    assert sizes == {"d0.5-base": "50", "d0.5-small-r0.2": "39-41", "d0.5-random-r0.2": "40"}
    long = pd.read_csv(outs["csv"])
    assert set(long["source"]) == {"ours", "slides"}
    assert long.loc[(long["source"] == "slides") & (long["method"] == "lpntk"), "reported_acc_mean"].item() == 99.37
    small = long[long["experiment"] == "small_clusters"].set_index("subset")
    assert small.loc["d0.5-small-r0.2", "realised_keep"] == pytest.approx(0.8)
    per_run = pd.read_csv(outs["runs"])  # one row per (subset, seed): what the claims pair over seeds
    lp = per_run[per_run["subset"] == "lpntk-k0.5"]
    assert list(lp["seed"]) == [1, 2] and 100 * lp["test_acc_best_val"].mean() == pytest.approx(96.0)
    for k in ("fig_redundant", "fig_redundant_pdf", "fig_small", "fig_small_pdf"):
        assert open(outs[k], "rb").read(4) in (b"\x89PNG", b"%PDF")
    png = open(outs["fig_redundant"], "rb").read()
    pruning_table_stage(
        dataset="mnist",
        cfg=cfg,
        runs=files,
        subsets_table=tmp_path / "s.csv",
        outputs=outs,
        mlflow_cfg={"enabled": False},
    )
    assert open(outs["fig_redundant"], "rb").read() == png  # reproducible bytes


# ------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_pruning_stages_end_to_end(workflow_run):
    from mlflow.tracking import MlflowClient

    workdir, _ = workflow_run
    res = workdir / "results" / "tiny"
    train = np.load(res / "data" / "train.npz")
    n = len(train["index"])
    subsets, names = {}, None
    for seed in (1, 2):  # each retraining seed's subsets, from its own training run's kernels and scores
        scores = pd.read_csv(res / "scores" / f"seed{seed}.csv")
        assert scores["index"].tolist() == train["index"].tolist() and scores["label"].tolist() == train["y"].tolist()
        assert scores[["el2n", "grand", "forgetting", "random"]].notna().all().all()
        assert json.loads((res / "scores" / f"seed{seed}.json").read_text())["seeds"] == [seed]
        assert (res / "cluster" / f"seed{seed}" / "clusters.npz").is_file()
        groups = ("k0.8", "k0.5", "d0.5")  # one prune job and file per kept fraction or small-cluster data fraction
        assert sorted(p.stem for p in (res / "pruning" / f"seed{seed}").glob("*.npz")) == sorted(groups)
        subsets[seed] = {k: v for g in groups for k, v in np.load(res / "pruning" / f"seed{seed}" / f"{g}.npz").items()}
        plan = pd.concat([pd.read_csv(res / "pruning" / f"seed{seed}" / f"{g}.csv") for g in groups])  # a row a subset
        assert sorted(plan["name"]) == sorted(subsets[seed]) and (plan["seed"] == seed).all()
        assert names is None or set(plan["name"]) == names
        names = set(plan["name"])
        for name in subsets[seed]:
            assert set(subsets[seed][name]) <= set(train["index"].tolist()), name
        assert len(subsets[seed]["lpntk-k0.5"]) == len(subsets[seed]["random-k0.5"]) == n // 2  # 12 of 24 per class
        assert set(subsets[seed]["lpntk-k0.5"]) <= set(subsets[seed]["lpntk-k0.8"])  # nested heads
    for name in ("lpntk-k0.5", "el2n-k0.5", "random-k0.5", "d0.5-small-r0.25"):  # the seeds select apart
        assert not np.array_equal(subsets[1][name], subsets[2][name]), name
    names.add("full")  # the full training set: retrained, never selected
    mean = pd.read_csv(res / "scores" / "scores.csv")  # scores.enabled: the mean over the seeds, a table of its own
    one = {s: pd.read_csv(res / "scores" / f"seed{s}.csv") for s in (1, 2)}
    assert np.allclose(mean["el2n"], (one[1]["el2n"] + one[2]["el2n"]) / 2)
    table = pd.read_csv(res / "pruning" / "table.csv")
    ours = table[table["source"] == "ours"].set_index("subset")
    assert set(ours.index) == names
    assert (ours["n_seeds"] == 2).all() and ours["test_acc_best_val_mean"].between(0, 100).all()
    assert "is selected from its own reference seed" in (res / "pruning" / "table.md").read_text()
    for f in ("table.md", "redundant_removal.png", "redundant_removal.pdf", "small_clusters.png", "small_clusters.pdf"):
        assert (res / "pruning" / f).stat().st_size > 0
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lpntk-tiny")
    runs = client.search_runs([exp.experiment_id], "tags.`lpntk.rule` = 'retrain'", max_results=1000)
    assert len(runs) == 2 * len(names)  # one run per subset and seed, on that seed's own subset
    tags = {(r.data.tags["lpntk.subset"], r.data.tags["lpntk.seed"]) for r in runs}
    assert tags == {(s, str(seed)) for s in names for seed in (1, 2)}
    for r in runs:
        assert r.info.status == "FINISHED" and {"test_acc_best_val", "test_acc_last", "test_acc_max"} <= set(
            r.data.metrics
        )
        assert r.data.tags["lpntk.method"] in {
            "full",
            "lpntk",
            "el2n",
            "grand",
            "forgetting",
            "random",
            "base",
            "small_clusters",
            "random_removal",
        }
        assert "lpntk.keep" in r.data.tags
    # per seed (+ the mean); prune: per seed and group
    for rule, count in (("scores", 3), ("cluster", 2), ("prune", 6), ("pruning_table", 1)):
        found = client.search_runs([exp.experiment_id], f"tags.`lpntk.rule` = '{rule}'")
        assert len(found) == count and all(r.info.status == "FINISHED" for r in found), rule


def test_killed_retraining_job_resumes_where_it_stopped(tmp_path, digits, tiny_cfg, monkeypatch):
    """A job killed after its first (subset, seed) run and rerun trains only what is missing, and writes the same
    bytes as a job that was never interrupted; the progress folder goes when the job completes."""
    import lpntk.stages.retrain_stage as retrain_module
    from lpntk.data import save_prepared
    from lpntk.io import save_npz
    from lpntk.stages.retrain_stage import retrain_stage

    save_prepared(digits, tmp_path / "data")
    cfg = copy.deepcopy(tiny_cfg)
    cfg["pruning"].update({"methods": ["lpntk"], "keep": [0.5], "curve_keep": []})
    cfg["pruning"]["small_clusters"]["enabled"] = False
    cfg["pruning"]["retrain"].update({"epochs": 2, "seeds": [3, 4], "group_by": "subset"})
    chosen = np.sort(np.random.default_rng(2).choice(digits.train.index.numpy(), size=40, replace=False))
    for seed in (3, 4):  # the seeds' own subsets (here the same)
        save_npz(tmp_path / f"subsets{seed}.npz", **{"full": digits.train.index.numpy(), "lpntk-k0.5": chosen})
    args = {
        "dataset": "digits",
        "cfg": cfg,
        "unit": "lpntk-k0.5",
        "shard": "all",
        "data": tmp_path / "data",
        "subsets": [tmp_path / "subsets3.npz", tmp_path / "subsets4.npz"],
        "threads": 1,
        "mlflow_cfg": {"enabled": False},
    }
    retrain_stage(**args, output=tmp_path / "clean" / "res.json")

    real, seen = retrain_module.train_model, []

    def killed_at_seed4(model, train, recipe, seed, **kw):
        seen.append(seed)
        if seed == 4:
            raise KeyboardInterrupt("killed")
        return real(model, train, recipe, seed, **kw)

    monkeypatch.setattr(retrain_module, "train_model", killed_at_seed4)
    out = tmp_path / "run" / "res.json"
    with pytest.raises(KeyboardInterrupt):
        retrain_stage(**args, output=out)
    assert not out.exists() and (tmp_path / "run" / ".res.progress" / "lpntk-k0.5-seed3.json").is_file()
    seen.clear()
    monkeypatch.setattr(retrain_module, "train_model", lambda *a, **k: (seen.append(a[3]), real(*a, **k))[1])
    retrain_stage(**args, output=out)
    assert seen == [4]  # seed 3 was not trained again
    assert out.read_bytes() == (tmp_path / "clean" / "res.json").read_bytes()
    assert not (tmp_path / "run" / ".res.progress").exists()


def test_a_selection_rule_of_ones_own_is_one_registered_function(pruning_inputs, full_kernel_cfg):
    from lpntk.pruning import SELECTORS, register_selector, select_subset
    from lpntk.stages.prune_stage import pruning_inputs as read_inputs

    tmp, index, labels, outs = pruning_inputs
    inputs = read_inputs(full_kernel_cfg, 1, tmp / "train.npz", outs[1]["clusters"], tmp / "scores1.csv")

    @register_selector("lowest_el2n")
    def lowest(inp, spec, seed):  # the easiest samples: the opposite of the EL2N baseline
        order = np.argsort(inp.scores["el2n"], kind="stable")
        return np.sort(inp.index[order[: int(round(spec["keep"] * len(inp.index)))]])

    try:
        kept = select_subset(inputs, {"name": "lowest_el2n-k0.5", "method": "lowest_el2n", "keep": 0.5}, 0)
        sc = pd.read_csv(tmp / "scores1.csv")
        assert set(kept) == set(sc.sort_values("el2n")["index"].to_numpy()[:30])
        with pytest.raises(ValueError, match="no selection rule"):
            select_subset(inputs, {"method": "nope"}, 0)
    finally:
        del SELECTORS["lowest_el2n"]


def test_own_clusters_cluster_each_draw_with_a_model_trained_on_it(tmp_path, digits, tiny_cfg):
    """The own-kernel variant: per retraining seed, the same class-balanced draw as the cluster stage, clustered with
    the lpNTK of a model trained on that draw alone; a rerun after a kill reuses the finished draws."""
    from lpntk.data import save_prepared
    from lpntk.plan import small_key
    from lpntk.pruning import class_balanced_subset, draw_seed
    from lpntk.stages.own_clusters_stage import own_clusters_stage

    save_prepared(digits, tmp_path / "data")
    cfg = copy.deepcopy(tiny_cfg)
    cfg["pruning"]["small_clusters"].update({"data_fractions": [0.1], "epochs": 1, "cluster_keep": 0.5})
    cfg["pruning"]["retrain"]["seeds"] = [3, 4]
    outs = {"clusters": str(tmp_path / "own.npz"), "summary": str(tmp_path / "own.csv")}
    summary = own_clusters_stage(
        dataset="digits", cfg=cfg, data=tmp_path / "data", outputs=outs, mlflow_cfg={"enabled": False}
    )
    own = np.load(outs["clusters"])
    index, labels = digits.train.index.numpy(), digits.train.y.numpy()
    for seed in (3, 4):
        key = small_key(0.1, seed, "own")
        expect = class_balanced_subset(index, labels, 0.1, draw_seed(0, seed))  # what the cluster stage draws
        np.testing.assert_array_equal(own[f"{key}_index"], np.sort(expect))
        heads = own[f"{key}_cluster"]
        assert set(heads) <= set(expect)
        lab = dict(zip(index.tolist(), labels.tolist(), strict=True))
        assert all(lab[int(h)] == lab[int(i)] for i, h in zip(own[f"{key}_index"], heads, strict=True))  # per class
        for c in range(10):  # round(cluster_keep n_c) clusters per class, each head its own member
            members = own[f"{key}_index"][[lab[int(i)] == c for i in own[f"{key}_index"]]]
            assert len(set(heads[np.isin(own[f"{key}_index"], members)])) <= max(1, int(0.5 * len(members) + 0.5))
    assert set(summary["setting"]) == {"d0.1 seed 3", "d0.1 seed 4"}
    first = open(outs["clusters"], "rb").read()
    own_clusters_stage(dataset="digits", cfg=cfg, data=tmp_path / "data", outputs=outs, mlflow_cfg={"enabled": False})
    assert open(outs["clusters"], "rb").read() == first  # same config, same bytes

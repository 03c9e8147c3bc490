"""Target and set selection of the learning-difficulty control (lpntk.difficulty) on hand-made Grams: the target
rules, the easy / median / hard sets, the contradictory sets, the training-set positions, the quad-tree subsets and
sizes, the Pearson matrix, and the edge cases mutation testing found."""

from __future__ import annotations

import numpy as np
import pytest

from lpntk.difficulty import (
    choose_target,
    contradictory_sets,
    official_swap,
    pearson_matrix,
    quad_tree_subsets,
    rank_others,
    select_sets,
    size_levels,
    target_similarity,
    training_set_positions,
)


def _hand_gram():
    # 8 samples; sample 2 has the largest self-lpNTK, sample 5 the largest mean lpNTK to the others
    g = np.array(
        [
            [4.0, 1.0, 3.0, 1.0, 1.0, 2.0, 0.5, 1.0],
            [1.0, 2.0, 0.2, 0.5, 0.7, 1.9, 0.1, 0.3],
            [3.0, 0.2, 9.0, 2.5, 1.5, 2.6, -0.5, 0.8],
            [1.0, 0.5, 2.5, 3.0, 0.6, 2.0, 0.2, 0.4],
            [1.0, 0.7, 1.5, 0.6, 2.5, 2.2, 0.3, 0.9],
            [2.0, 1.9, 2.6, 2.0, 2.2, 5.0, 1.0, 2.1],
            [0.5, 0.1, -0.5, 0.2, 0.3, 1.0, 1.0, 0.1],
            [1.0, 0.3, 0.8, 0.4, 0.9, 2.1, 0.1, 2.0],
        ]
    )
    assert np.allclose(g, g.T)
    return g


def test_choose_target_rules():
    g = _hand_gram()
    assert choose_target(g, "max_self") == 2
    assert choose_target(g, "max_mean") == 5
    with pytest.raises(ValueError, match="difficulty.target"):
        choose_target(g, "median")


def test_select_sets_on_hand_made_gram():
    g = _hand_gram()
    values = target_similarity(g, 2)  # kappa(2, j): 3.0, 0.2, [9], 2.5, 1.5, 2.6, -0.5, 0.8
    np.testing.assert_array_equal(rank_others(values, 2), [0, 5, 3, 4, 7, 1, 6])
    sets = select_sets(values, 2, 2)
    np.testing.assert_array_equal(sets["easy"], [0, 5])
    np.testing.assert_array_equal(sets["median"], [3, 4])  # 7 others, start (7 - 2) // 2 = 2 -> ranks 2, 3
    np.testing.assert_array_equal(sets["hard"], [1, 6])  # the two lowest, in descending order
    sets3 = select_sets(values, 2, 3)
    np.testing.assert_array_equal(sets3["median"], [3, 4, 7])  # start (7 - 3) // 2 = 2: ranks 2, 3, 4
    # ties: smaller position first
    np.testing.assert_array_equal(rank_others(np.array([1.0, 5.0, 1.0, 1.0]), 1), [0, 2, 3])
    # ranking by cosine changes the order: kappa / (|phi_2| |phi_j|)
    cos = target_similarity(g, 2, "cosine")
    np.testing.assert_allclose(cos, g[2] / np.sqrt(9.0 * np.diag(g)))
    np.testing.assert_array_equal(select_sets(cos, 2, 2)["easy"], rank_others(cos, 2)[:2])
    with pytest.raises(ValueError, match="difficulty.num = 8"):
        select_sets(values, 2, 8)
    # the official swap: "median" holds the least similar, "hard" the median ones
    swapped = official_swap(sets)
    np.testing.assert_array_equal(swapped["median"], sets["hard"])
    np.testing.assert_array_equal(swapped["hard"], sets["median"])
    np.testing.assert_array_equal(swapped["easy"], sets["easy"])


def test_select_sets_median_is_centred():
    values = -np.arange(12, dtype=float)  # target 0; others ranked 1..11 in order
    sets = select_sets(values, 0, 3)
    np.testing.assert_array_equal(sets["easy"], [1, 2, 3])
    np.testing.assert_array_equal(sets["median"], [5, 6, 7])  # the median of 1..11 is 6
    np.testing.assert_array_equal(sets["hard"], [9, 10, 11])


def test_contradictory_sets_most_negative_without_repeats():
    sim = np.array(
        [
            [5.0, -1.0, -3.0, 0.5, -2.0, -0.1],  # target at 0: negatives 2 (-3), 4 (-2), 5 (-0.1); 1 is a target
            [-4.0, 6.0, -0.5, -5.0, -2.5, 1.0],  # target at 1: negatives 3 (-5), 4 (-2.5), 2 (-0.5); 0 is a target
        ]
    )
    chosen, available = contradictory_sets(sim, [0, 1], 2)
    np.testing.assert_array_equal(chosen[0], [2, 4])
    np.testing.assert_array_equal(chosen[1], [3])  # 4 and 2 are taken by target 0
    assert available == [3, 1]
    chosen, available = contradictory_sets(sim, [0, 1], 2, candidates=[np.array([1, 5]), np.array([2, 3, 4])])
    np.testing.assert_array_equal(chosen[0], [5])
    np.testing.assert_array_equal(chosen[1], [3, 4])
    assert available == [1, 3]


def test_training_set_positions():
    pos, where = training_set_positions([10, 20], [np.array([1, 2]), np.array([3])])
    np.testing.assert_array_equal(pos, [10, 1, 2, 20, 3])
    np.testing.assert_array_equal(where, [0, 3])


def test_quad_tree_and_sizes():
    assert size_levels(64) == [64, 16, 4, 1]
    assert size_levels(64, 4) == [64, 16, 4]
    for bad in (48, 2, 8):
        with pytest.raises(ValueError, match="pool_per_class"):
            size_levels(bad)
    with pytest.raises(ValueError, match="min_size"):
        size_levels(16, 64)
    pool = np.random.default_rng(0).permutation(100)[:64]
    for s in (16, 4, 1):
        small, big = quad_tree_subsets(pool, s), quad_tree_subsets(pool, 4 * s)
        assert len(small) == 64 // s and all(len(n) == s for n in small)
        # nested: node k of size s lies in node k // 4 of size 4 s; the nodes of one size partition the pool
        for k, node in enumerate(small):
            assert set(node) <= set(big[k // 4])
        assert sorted(np.concatenate(small).tolist()) == sorted(pool.tolist())
    with pytest.raises(ValueError, match="divide"):
        quad_tree_subsets(pool, 5)


def test_pearson_matrix_matches_numpy():
    v = np.random.default_rng(2).normal(size=(50, 4))
    v[:, 1] += v[:, 0]
    np.testing.assert_allclose(pearson_matrix(v), np.corrcoef(v.T), atol=1e-12)
    const = np.c_[v[:, 0], np.ones(50)]
    assert np.isnan(pearson_matrix(const)[0, 1])


def test_edge_cases_found_by_mutation_testing():
    """Defaults, boundaries, zero norms and messages (mutants that survived the first mutmut pass,
    docs/mutation-testing.md)."""
    import warnings

    g = _hand_gram()
    assert choose_target(g) == 2  # the default rule is the official max_self
    assert choose_target(np.array([[5.0]])) == 0 and choose_target(np.array([[5.0]]), "max_mean") == 0
    assert choose_target(np.array([[1.0, 0.5], [0.5, 2.0]]), "max_mean") == 0  # two samples: a tie, the first
    for bad in (np.zeros((2, 3)), np.zeros((0, 0)), np.zeros(3)):
        with pytest.raises(ValueError, match=r"^expected a non-empty square Gram, got shape"):
            choose_target(bad)
    with pytest.raises(ValueError, match=r"^difficulty.rank_by must be 'lpntk' or 'cosine', got 'angle'$"):
        target_similarity(g, 2, "angle")
    # sets of one sample, and a class with exactly num samples besides the target
    one = select_sets(np.array([9.0, 2.0, 1.0]), 0, 1)
    assert {k: v.tolist() for k, v in one.items()} == {"easy": [1], "median": [1], "hard": [2]}
    full = select_sets(np.array([9.0, 2.0, 1.0]), 0, 2)
    assert {k: v.tolist() for k, v in full.items()} == {"easy": [1, 2], "median": [1, 2], "hard": [1, 2]}
    with pytest.raises(ValueError, match=r"^difficulty.num must be >= 1, got 0$"):
        select_sets(np.array([9.0, 2.0, 1.0]), 0, 0)
    # cosine with zero and sub-unit norms: 0 where a norm vanishes, the plain ratio elsewhere
    z = np.array([[0.25, 0.1, 0.0], [0.1, 0.16, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(target_similarity(z, 0, "cosine"), [1.0, 0.1 / (0.5 * 0.4), 0.0], rtol=1e-12)
    # contradictory: strictly negative only (a zero similarity is unrelated, not contradictory)
    chosen, available = contradictory_sets(np.array([[0.0, -1.0, 0.0, -2.0]]), [0], 3)
    assert chosen[0].tolist() == [3, 1] and available == [2]
    # one training set: offsets accumulate over classes; the lists must pair up
    pos, where = training_set_positions([5, 9, 2], [np.array([1, 2]), np.array([3]), np.array([4, 6, 7])])
    assert pos.dtype == np.int64 and pos.tolist() == [5, 1, 2, 9, 3, 2, 4, 6, 7] and where.tolist() == [0, 3, 5]
    with pytest.raises(ValueError):
        training_set_positions([5, 9], [np.array([1])])
    # quad-tree sizes are integers; a pool of one size is one level
    assert size_levels(4, 4) == [4] and all(type(s) is int for s in size_levels(64, 1))
    # a constant column gives NaN without warnings; round-off cannot leave [-1, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = pearson_matrix(np.c_[np.arange(5.0), np.ones(5)])
    assert np.isnan(r[0, 1]) and r[0, 0] == pytest.approx(1.0)
    v = np.random.default_rng(0).normal(size=(7, 1)) * 1e8 + 3
    r = pearson_matrix(np.c_[v, 3 * v, -v])
    assert r.max() <= 1.0 and r.min() >= -1.0

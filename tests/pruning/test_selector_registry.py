"""The registry of selection rules (lpntk.pruning.SELECTORS): every registered rule on a hand-built PruningInputs
(the cases of test_selection_rules.py), and select_subset's checks of what a rule returns."""

from __future__ import annotations

import re

import numpy as np
import pytest
from pruning_setup import INDEX, LABELS


def test_registry_rules_on_hand_built_inputs():
    """Every registered rule on a hand-built PruningInputs (the cases of test_selection_rules.py, worked out by
    hand): the rule reads its own inputs (the clusters of its keep, its score column, the per-seed draws), and
    select_subset checks what a rule returns."""
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

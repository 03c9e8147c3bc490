"""label_matched_sets (lpntk.difficulty) on tiny hand-made inputs, the expected control sets written out by hand:
labels matched per target, the targets never drawn, no sample serving two targets, the seeded draw uniform among
what is left, and an error when a label runs out."""

from __future__ import annotations

import numpy as np
import pytest

from lpntk.difficulty import label_matched_sets

# positions:      0  1  2  3  4  5  6  7
LABELS = np.array([0, 0, 0, 1, 1, 1, 2, 2])
TARGETS = [0, 3]  # target 0 (label 0) at position 0, target 1 (label 1) at position 3: never drawn
# target 0's company carries labels 1, 2, 2; target 1's carries 0, 0, 1
COMPANY = [np.array([4, 6, 7]), np.array([1, 2, 5])]


def _by_hand_outcomes() -> list[list[list[int]]]:
    # what is left after the targets: label 0 {1, 2}, label 1 {4, 5}, label 2 {6, 7}.
    # label 2: target 0 wants two, exactly what is left -> {6, 7}; label 0: target 1 wants two -> {1, 2};
    # label 1: each target wants one of {4, 5}, and no sample serves two targets: one gets 4, the other 5
    return [[[4, 6, 7], [1, 2, 5]], [[5, 6, 7], [1, 2, 4]]]


def test_controls_written_out():
    seen = set()
    for seed in range(200):
        out = label_matched_sets(LABELS, COMPANY, TARGETS, seed)
        got = [o.tolist() for o in out]
        assert got in _by_hand_outcomes(), (seed, got)
        assert all(o.dtype == np.int64 for o in out)
        # reproducible from the seed
        assert [o.tolist() for o in label_matched_sets(LABELS, COMPANY, TARGETS, seed)] == got
        seen.add(got[0][0])
    assert seen == {4, 5}


def test_the_open_draw_is_uniform():
    # target 0 takes 4 or 5 with probability 1/2 each: over 200 seeds the count of 4 is Binomial(200, 1/2),
    # mean 100, sd 7.1; [65, 135] is a 5-sd band
    fours = sum(label_matched_sets(LABELS, COMPANY, TARGETS, seed)[0][0] == 4 for seed in range(200))
    assert 65 <= fours <= 135


def test_label_mix_matches_each_company_on_a_larger_pool():
    # 3 labels, 10 samples each; targets at 0, 10, 20; companies of mixed labels, some repeated labels
    labels = np.repeat([0, 1, 2], 10)
    targets = [0, 10, 20]
    company = [np.array([11, 12, 21]), np.array([1, 2, 3, 22]), np.array([4, 13, 14, 15, 23, 24])]
    # the wanted label counts per target by hand: {1: 2, 2: 1}, {0: 3, 2: 1}, {0: 1, 1: 3, 2: 2}
    wanted = [{1: 2, 2: 1}, {0: 3, 2: 1}, {0: 1, 1: 3, 2: 2}]
    for seed in range(20):
        out = label_matched_sets(labels, company, targets, seed)
        drawn = np.concatenate(out)
        assert len(set(drawn.tolist())) == len(drawn) == 3 + 4 + 6  # no sample serves two targets
        assert not set(drawn.tolist()) & set(targets)
        for o, w in zip(out, wanted, strict=True):
            assert o.tolist() == sorted(o.tolist())
            labs, counts = np.unique(labels[o], return_counts=True)
            assert dict(zip(labs.tolist(), counts.tolist(), strict=True)) == w


def test_empty_company_and_exhausted_label():
    out = label_matched_sets(LABELS, [np.array([], dtype=np.int64), np.array([6])], TARGETS, 0)
    assert out[0].tolist() == [] and out[0].dtype == np.int64
    assert out[1].tolist() in ([6], [7])
    # label 1 has 4 and 5 left: target 0 takes both, nothing is left for target 1's one
    with pytest.raises(ValueError, match="label 1: only 0 samples left for a control of 1"):
        label_matched_sets(LABELS, [np.array([4, 5]), np.array([4])], TARGETS, 0)
    # a target is never drawn, even when its label is wanted: label 0 has only 1 and 2 besides target 0
    with pytest.raises(ValueError, match="label 0: only 2 samples left for a control of 3"):
        label_matched_sets(LABELS, [np.array([1, 2, 0])], TARGETS, 0)

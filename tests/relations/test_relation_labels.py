"""Relation labels on a hand-built Gram with asymmetric counts: classes of 5 (odd), 4 and 1 samples, more
contradictory than interchangeable pairs in one class, none in another, a zero-norm sample, exact zeros of kappa
(orthogonal pairs) at tau = 0, a class with no pair at all. Every expected label and count is worked out by hand
from integer feature vectors phi (kappa = <phi, phi'>), not with the code under test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lpntk.grams import ClassGram
from lpntk.relations import cross_class_pairs, stratified_shares, within_class_pairs

# class 0 (5 samples): a = (1, 0), b = (2, 0), c = (-1, 0), d = (-3, 1), e = (0, 2)
# class 1 (4 samples): q = (0, 1), r = (1, 1), p = (1, 0), o = (0, 0) (zero norm: no angle, unrelated to all)
# class 2 (1 sample):  s = (-2, -1)
PHI = {
    0: np.array([[1, 0], [2, 0], [-1, 0], [-3, 1], [0, 2]], dtype=np.float64),
    1: np.array([[0, 1], [1, 1], [1, 0], [0, 0]], dtype=np.float64),
    2: np.array([[-2, -1]], dtype=np.float64),
}
# original indices deliberately not in row order (the self-max test follows them)
INDEX = {0: [50, 10, 40, 20, 30], 1: [7, 5, 6, 8], 2: [99]}
K = 3

# class 0, pairs i < j row by row, kappa and cos = kappa / (|phi_i| |phi_j|) by hand (|d| = sqrt 10):
#   ab  2  +1        ac -1  -1        ad -3  -3/sqrt10 = -0.949   ae  0  0
#   bc -2  -1        bd -6  -0.949    be  0  0
#   cd  3  +0.949    ce  0  0
#   de  2  2/(2 sqrt10) = +0.316
KAPPA_0 = [2, -1, -3, 0, -2, -6, 0, 3, 0, 2]
COS_0 = [1, -1, -3 / math.sqrt(10), 0, -1, -3 / math.sqrt(10), 0, 3 / math.sqrt(10), 0, 1 / math.sqrt(10)]
# class 1: qr 1 (cos 1/sqrt2), qp 0, qo 0, rp 1 (1/sqrt2), ro 0, po 0
KAPPA_1 = [1, 0, 0, 1, 0, 0]
COS_1 = [1 / math.sqrt(2), 0, 0, 1 / math.sqrt(2), 0, 0]

# labels per pair by hand: interchangeable if cos > tau, contradictory if cos < -tau, unrelated otherwise
EXPECTED = {
    # tau = 0: class 0 I = {ab, cd, de}, U = {ae, be, ce}, C = {ac, ad, bc, bd}; class 1 I = {qr, rp}, U = the other 4
    0.0: [
        {"interchangeable": 3, "unrelated": 3, "contradictory": 4},
        {"interchangeable": 2, "unrelated": 4, "contradictory": 0},
        {"interchangeable": 0, "unrelated": 0, "contradictory": 0},
    ],
    # tau = 0.5: de (0.316) becomes unrelated; 1/sqrt2 = 0.707 stays interchangeable
    0.5: [
        {"interchangeable": 2, "unrelated": 4, "contradictory": 4},
        {"interchangeable": 2, "unrelated": 4, "contradictory": 0},
        {"interchangeable": 0, "unrelated": 0, "contradictory": 0},
    ],
    # tau = 0.95: only the exactly parallel ab stays interchangeable, only ac and bc (cos -1) contradictory
    0.95: [
        {"interchangeable": 1, "unrelated": 7, "contradictory": 2},
        {"interchangeable": 0, "unrelated": 6, "contradictory": 0},
        {"interchangeable": 0, "unrelated": 0, "contradictory": 0},
    ],
}


def _grams() -> list[ClassGram]:
    out = []
    for c, phi in PHI.items():
        g = phi @ phi.T
        n = len(phi)
        out.append(ClassGram(c, g.astype(np.float32), np.diag(g).copy(), np.asarray(INDEX[c]), np.arange(n), K))
    return out


def test_within_class_labels_and_counts_by_hand():
    taus = sorted(EXPECTED)
    w = within_class_pairs(_grams(), taus, tau=0.5, thr=7.0)
    # pooled values: class 0's 10 pairs, then class 1's 6; the 1-sample class contributes none
    np.testing.assert_array_equal(w.kappa, KAPPA_0 + KAPPA_1)
    np.testing.assert_allclose(w.cos, COS_0 + COS_1, atol=1e-6)
    for t in taus:
        assert w.counts[t] == EXPECTED[t], t
    # the official rule on K kappa (K = 3) against +-7: class 0 K kappa = [6, -3, -9, 0, -6, -18, 0, 9, 0, 6]
    # -> positive {9}, negative {-9, -18}, zero 7; class 1 K kappa in {0, 3} -> all zero
    assert w.official == [
        {"positive": 1, "zero": 7, "negative": 2},
        {"positive": 0, "zero": 6, "negative": 0},
        {"positive": 0, "zero": 0, "negative": 0},
    ]


def test_within_class_rows_by_hand():
    w = within_class_pairs(_grams(), [0.0, 0.5], tau=0.5, thr=0.1)
    r0, r1, r2 = w.rows
    assert (r0["class"], r0["n"], r0["pairs"]) == (0, 5, 10)
    assert (r1["class"], r1["n"], r1["pairs"]) == (1, 4, 6)
    assert (r2["class"], r2["n"], r2["pairs"]) == (2, 1, 0)
    # shares at the reporting tau (0.5) over the class's own pairs
    assert r0["share_interchangeable"] == pytest.approx(2 / 10)
    assert r0["share_unrelated"] == pytest.approx(4 / 10)
    assert r0["share_contradictory"] == pytest.approx(4 / 10)
    assert r1["share_interchangeable"] == pytest.approx(2 / 6)
    assert r1["share_unrelated"] == pytest.approx(4 / 6)
    assert r1["share_contradictory"] == 0.0
    # no pair: no share
    assert all(math.isnan(r2[f"share_{k}"]) for k in ("interchangeable", "unrelated", "contradictory"))
    # median of class 0's sorted cosines: -1, -1, -.949, -.949, 0, 0, 0, .316, .949, 1 -> (0 + 0) / 2
    assert r0["cos_median"] == pytest.approx(0.0, abs=1e-7)
    # redundant (some other kappa_ij > kappa_ii): a (kappa_ab = 2 > 1), c (kappa_cd = 3 > 1); b, d, e not
    assert r0["share_redundant"] == pytest.approx(2 / 5)
    # class 1: q (1 = 1, not >), r (2), p (1 = 1), o (0 = 0): none, the zero vector included
    assert r1["share_redundant"] == 0.0
    # self-max over later samples by original index: order b(10) d(20) e(30) c(40) a(50); every sample's own kappa
    # is at least each later one's (b: 4 vs -6, 0, -2, 2; d: 10 vs 2, 3, -3; e: 4 vs 0, 0; c: 1 vs -1; a last).
    # In row order a and c would fail (kappa_ab = 2 > 1, kappa_cd = 3 > 1): 3/5.
    assert r0["share_selfmax_larger_index"] == 1.0


def test_cross_class_labels_counts_and_populations_by_hand():
    grams = _grams()
    # panel: a, c of class 0; q, r of class 1; s of class 2
    panel_pos = [np.array([0, 2]), np.array([0, 1]), np.array([0])]
    phi = np.concatenate([PHI[c][pos] for c, pos in enumerate(panel_pos)])
    out = cross_class_pairs(grams, phi @ phi.T, panel_pos, [0.0, 0.5], thr=0.1)
    assert out.check_err == 0.0
    # blocks (0,1), (0,2), (1,2), row-major within each:
    #   (0,1): aq 0 -> U, ar 1 (cos .707) -> I, cq 0 -> U, cr -1 (-.707) -> C
    #   (0,2): as -2 (-2/sqrt5 = -.894) -> C, cs 2 (.894) -> I
    #   (1,2): qs -1 (-1/sqrt5 = -.447) -> C (U at tau .5), rs -3 (-3/sqrt10 = -.949) -> C
    np.testing.assert_array_equal(out.kappa, [0, 1, 0, -1, -2, 2, -1, -3])
    s2, s5, s10 = math.sqrt(2), math.sqrt(5), math.sqrt(10)
    np.testing.assert_allclose(out.cos, [0, 1 / s2, 0, -1 / s2, -2 / s5, 2 / s5, -1 / s5, -3 / s10], atol=1e-12)
    assert out.counts[0.0] == [
        {"interchangeable": 1, "unrelated": 2, "contradictory": 1},
        {"interchangeable": 1, "unrelated": 0, "contradictory": 1},
        {"interchangeable": 0, "unrelated": 0, "contradictory": 2},
    ]
    assert out.counts[0.5] == [
        {"interchangeable": 1, "unrelated": 2, "contradictory": 1},
        {"interchangeable": 1, "unrelated": 0, "contradictory": 1},
        {"interchangeable": 0, "unrelated": 1, "contradictory": 1},
    ]
    # the populations are the full class sizes' products n_a n_b, not the panel's
    assert out.population == [5 * 4, 5 * 1, 4 * 1]
    # weighted by population: I = (20 * 1/4 + 5 * 1/2) / 29, U = 20 * 2/4 / 29, C = (20/4 + 5/2 + 4) / 29
    shares = stratified_shares(out.counts[0.0], out.population)
    assert shares == pytest.approx({"interchangeable": 7.5 / 29, "unrelated": 10 / 29, "contradictory": 11.5 / 29})
    # redundant across classes (kappa with another class's panel member > own kappa): c (kappa_cs = 2 > 1) only
    assert [m.tolist() for m in out.redundant] == [[False, True], [False, False], [False]]

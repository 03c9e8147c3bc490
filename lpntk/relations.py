"""Sample relations under lpNTK: interchangeable, unrelated, contradictory, redundant (paper-protocols §1.5, §1.6).

Every labelled sample (x, y) is a vector phi(x, y) = J(x)^T s(y) / sqrt(K) and kappa = <phi, phi'> (the Gram of
:func:`lpntk.kernel.lpntk_gram`, with the paper's 1/K). A pair's relation is read from its angle,

    cos((x, y), (x', y')) = kappa / (|phi| |phi'|),

* interchangeable:  cos >  tau   (learning one also moves the other towards its label),
* unrelated:        |cos| <= tau (no first-order effect),
* contradictory:    cos < -tau   (learning one moves the other away from its label),

reported for tau = 0 (the pure sign of kappa) and a small tau (paper-protocols §1.5 recommendation). The official
code never labels pairs; its statistics notebook thresholds the *raw* kappa on its own scale (no 1/K, i.e. K kappa):
positive if K kappa >= 0.1, negative if K kappa <= -0.1, zero otherwise (:func:`official_value_shares`; it found
99.743 % / 0.257 % / 1.4e-6 on MNIST over all pairs i <= j). Shares here are over distinct pairs i < j only; a
self-pair is always "interchangeable" (cos = 1) and carries no information about relations between samples.

Redundant samples (the slides' formal definition): (x, y) is redundant if some *other* sample x' has
kappa((x, y), (x', y')) > kappa((x, y), (x, y)) = |phi|^2 (:func:`redundant_mask`). The official code tested the
complement ("self-max") only against samples of larger index (:func:`selfmax_larger_index_mask`, 46.9 % self-max
on MNIST, paper-protocols §3.2 and §6 item 8). The official lists held the later samples of *every* class; this
package applies the test within each class's Gram (the cross-class part of a 60,000 x 60,000 kernel is not
computed), a looser test that finds more self-max samples, so the two rates are not directly comparable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "OFFICIAL_MNIST",
    "RELATIONS",
    "cosine",
    "upper_triangle",
    "relation_counts",
    "relation_shares",
    "official_value_counts",
    "official_value_shares",
    "redundant_mask",
    "cross_redundant_mask",
    "selfmax_larger_index_mask",
    "stratified_shares",
]

RELATIONS = ("interchangeable", "unrelated", "contradictory")

#: Numbers of the official code's statistics notebook (MNIST, LeNet best checkpoint, all pairs i <= j of the 60k
#: training set, same- and cross-class; paper-protocols §5): raw-value rule shares and the self-max share.
OFFICIAL_MNIST = {"positive": 0.997425, "negative": 0.002573, "zero": 1.40e-6, "selfmax_larger_index": 0.8829 / 1.8829}


def cosine(kappa: np.ndarray, sq_norm_rows: np.ndarray, sq_norm_cols: np.ndarray | None = None) -> np.ndarray:
    """cos_ij = kappa_ij / (|phi_i| |phi'_j|) with |phi|^2 = ``sq_norm`` (the Gram's diagonal).

    ``sq_norm_cols`` defaults to ``sq_norm_rows`` (a symmetric Gram). A pair with a zero-norm member has no angle;
    it is given cos = 0 (unrelated: such a sample neither affects nor is affected by any other to first order).
    The result is clipped to [-1, 1] against round-off.
    """
    kappa = np.asarray(kappa, dtype=np.float64)
    rows = np.sqrt(np.clip(np.asarray(sq_norm_rows, dtype=np.float64), 0.0, None))
    cols = rows if sq_norm_cols is None else np.sqrt(np.clip(np.asarray(sq_norm_cols, dtype=np.float64), 0.0, None))
    if kappa.shape != (len(rows), len(cols)):
        raise ValueError(f"kappa has shape {kappa.shape} but the norms give ({len(rows)}, {len(cols)})")
    denom = np.outer(rows, cols)
    out = np.zeros_like(kappa)
    np.divide(kappa, denom, out=out, where=denom > 0)
    return np.clip(out, -1.0, 1.0)


def upper_triangle(a: np.ndarray) -> np.ndarray:
    """The entries a_ij with i < j of a square matrix (distinct unordered pairs), row by row."""
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {a.shape}")
    return a[np.triu(np.ones(a.shape, dtype=bool), k=1)]


def relation_counts(cos: np.ndarray, tau: float) -> dict[str, int]:
    """Numbers of interchangeable (cos > tau), unrelated (|cos| <= tau) and contradictory (cos < -tau) values."""
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"tau must lie in [0, 1), got {tau}")
    cos = np.asarray(cos).ravel()
    pos, neg = int(np.count_nonzero(cos > tau)), int(np.count_nonzero(cos < -tau))
    return {"interchangeable": pos, "unrelated": cos.size - pos - neg, "contradictory": neg}


def relation_shares(cos: np.ndarray, tau: float) -> dict[str, float]:
    """Shares of the three relation types among the given cosines (:func:`relation_counts` / count; NaN if empty)."""
    counts = relation_counts(cos, tau)
    n = sum(counts.values())
    return {k: (v / n if n else float("nan")) for k, v in counts.items()}


def official_value_counts(kappa_official: np.ndarray, threshold: float = 0.1) -> dict[str, int]:
    """The official notebook's rule on raw values of its scale (K kappa): positive if >= threshold, negative if
    <= -threshold, zero if |K kappa| < threshold."""
    v = np.asarray(kappa_official).ravel()
    pos, neg = int(np.count_nonzero(v >= threshold)), int(np.count_nonzero(v <= -threshold))
    return {"positive": pos, "zero": v.size - pos - neg, "negative": neg}


def official_value_shares(kappa_official: np.ndarray, threshold: float = 0.1) -> dict[str, float]:
    """Shares of :func:`official_value_counts` (NaN if empty)."""
    counts = official_value_counts(kappa_official, threshold)
    n = sum(counts.values())
    return {k: (v / n if n else float("nan")) for k, v in counts.items()}


def redundant_mask(gram: np.ndarray) -> np.ndarray:
    """Redundant samples of a set: r_i = exists j != i with kappa_ij > kappa_ii (the slides' formal definition).

    ``gram`` is the symmetric Gram of the set (here: one class). Strict inequality; an exact duplicate
    (kappa_ij = kappa_ii) does not make a sample redundant.
    """
    g = np.asarray(gram, dtype=np.float64)
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(f"expected a square Gram, got shape {g.shape}")
    off = g.copy()
    np.fill_diagonal(off, -np.inf)
    return (off > np.diag(g)[:, None]).any(axis=1) if len(g) > 1 else np.zeros(len(g), dtype=bool)


def cross_redundant_mask(cross: np.ndarray, sq_norm_rows: np.ndarray) -> np.ndarray:
    """r_i = exists j with kappa(x_i, x'_j) > kappa(x_i, x_i), for a cross Gram (rows: x_i, columns: other samples)."""
    cross = np.asarray(cross, dtype=np.float64)
    if cross.shape[1] == 0:
        return np.zeros(cross.shape[0], dtype=bool)
    return (cross > np.asarray(sq_norm_rows, dtype=np.float64)[:, None]).any(axis=1)


def selfmax_larger_index_mask(gram: np.ndarray, order: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """The official code's self-max test (paper-protocols §3.2): m_i = kappa_ii >= kappa_ij for every j after i.

    "After" is in ``order`` (a permutation of the rows, e.g. by original index; default: row order). The code
    sorted each anchor's row over j >= i only, so the last sample is always self-max; it is *not* the complement
    of :func:`redundant_mask` (which compares with every other sample). The official rows spanned all classes;
    applied to one class's Gram, as the relations stage does, it is the within-class version of the test.
    """
    g = np.asarray(gram, dtype=np.float64)
    n = len(g)
    perm = np.arange(n) if order is None else np.asarray(order)
    if sorted(perm.tolist()) != list(range(n)):
        raise ValueError("order must be a permutation of the Gram's rows")
    h = g[np.ix_(perm, perm)]
    later = np.where(np.triu(np.ones((n, n), dtype=bool), k=1), h, -np.inf)
    selfmax_sorted = np.diag(h) >= later.max(axis=1, initial=-np.inf)
    out = np.empty(n, dtype=bool)
    out[perm] = selfmax_sorted
    return out


def stratified_shares(counts: Sequence[Mapping[str, int]], population: Sequence[float]) -> dict[str, float]:
    """Population shares estimated from per-stratum sample counts: sum_s N_s p_s / sum_s N_s.

    ``counts[s]`` are the category counts of the pairs sampled from stratum s (e.g. one pair of classes) and
    ``population[s]`` is N_s, the stratum's number of pairs in the population (n_a n_b); p_s is the sample share.
    Exact when every stratum is fully enumerated.
    """
    if len(counts) != len(population):
        raise ValueError("counts and population differ in length")
    keys = list(counts[0]) if counts else []
    total, acc = 0.0, dict.fromkeys(keys, 0.0)
    for c, n_pop in zip(counts, population, strict=True):
        n = sum(c.values())
        if n == 0 or n_pop == 0:
            continue
        total += n_pop
        for k in keys:
            acc[k] += n_pop * c[k] / n
    return {k: (v / total if total else float("nan")) for k, v in acc.items()}

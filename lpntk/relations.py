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
from dataclasses import dataclass, field

import numpy as np

from .grams import ClassGram

__all__ = [
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
    "sample_panel",
    "distribution",
    "WithinPairs",
    "within_class_pairs",
    "CrossPairs",
    "cross_class_pairs",
]

RELATIONS = ("interchangeable", "unrelated", "contradictory")


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


def sample_panel(class_sizes: Sequence[int], per_class: int, seed: int) -> list[np.ndarray]:
    """Seeded choice of ``min(per_class, n_c)`` within-class positions per class (sorted), in class order."""
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(n, size=min(per_class, n), replace=False)) for n in class_sizes]


def distribution(values: np.ndarray, quantiles: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """Mean, standard deviation and quantiles of ``scale * values`` (accumulated in float64)."""
    if not values.size:
        return {"mean": float("nan"), "std": float("nan"), **{f"q{q:g}": float("nan") for q in quantiles}}
    out = {
        "mean": scale * float(values.mean(dtype=np.float64)),
        "std": abs(scale) * float(values.std(dtype=np.float64)),
    }
    qs = np.quantile(values, quantiles)
    out.update({f"q{q:g}": scale * float(v) for q, v in zip(quantiles, qs, strict=True)})
    return out


# ---------------------------------------------------------------------------------------------- within classes


@dataclass
class WithinPairs:
    """Every pair i < j within each class: pooled kappa and cosine values, relation counts per class."""

    kappa: np.ndarray  # pooled over classes, float32
    cos: np.ndarray
    counts: dict[float, list[dict[str, int]]]  # tau -> per-class counts of the cosine rule
    official: list[dict[str, int]]  # per-class counts of the official raw-value rule
    rows: list[dict] = field(default_factory=list)  # per-class statistics


def within_class_pairs(grams: Sequence[ClassGram], taus: Sequence[float], tau: float, thr: float) -> WithinPairs:
    """Relation counts (cosine rule at each of ``taus``; the official rule K*kappa vs +-``thr``), redundant and
    self-max shares of every class from its Gram."""
    sizes = [len(g) for g in grams]
    n_pairs = [s * (s - 1) // 2 for s in sizes]
    offsets = np.concatenate([[0], np.cumsum(n_pairs)]).astype(np.int64)
    out = WithinPairs(
        kappa=np.empty(sum(n_pairs), dtype=np.float32),
        cos=np.empty(sum(n_pairs), dtype=np.float32),
        counts={t: [] for t in taus},
        official=[],
    )
    for c, g in enumerate(grams):
        gram = g.gram.astype(np.float64)
        kv = upper_triangle(gram)
        cv = upper_triangle(cosine(gram, g.sq_norm.astype(np.float64)))
        out.kappa[offsets[c] : offsets[c + 1]] = kv
        out.cos[offsets[c] : offsets[c + 1]] = cv
        for t in taus:
            out.counts[t].append(relation_counts(cv, t))
        out.official.append(official_value_counts(g.num_classes * kv, thr))
        red = redundant_mask(gram)
        selfmax = selfmax_larger_index_mask(gram, np.argsort(g.index, kind="stable"))
        row = {
            "class": c,
            "n": sizes[c],
            "pairs": kv.size,
            "share_redundant": float(red.mean()) if red.size else np.nan,
            "share_selfmax_larger_index": float(selfmax.mean()) if selfmax.size else np.nan,
            "cos_median": float(np.median(cv)) if cv.size else np.nan,
        }
        row.update({f"share_{k}": v / max(kv.size, 1) if kv.size else np.nan for k, v in out.counts[tau][-1].items()})
        out.rows.append(row)
    return out


# ---------------------------------------------------------------------------------------------- across classes


@dataclass
class CrossPairs:
    """The sampled cross-class pairs: pooled values, counts per pair of classes, their populations n_a n_b."""

    kappa: np.ndarray
    cos: np.ndarray
    counts: dict[float, list[dict[str, int]]]
    official: list[dict[str, int]]
    population: list[float]
    redundant: list[np.ndarray]  # per class: panel members redundant against another class's panel members
    check_err: float = float("nan")


def cross_class_pairs(
    grams: Sequence[ClassGram], panel: np.ndarray, panel_pos: Sequence[np.ndarray], taus: Sequence[float], thr: float
) -> CrossPairs:
    """Relation counts of the panel's cross-class blocks, and the relative error of its within-class blocks against
    the per-class Grams (``check_err``)."""
    k = len(grams)
    sizes = [len(g) for g in grams]
    out = CrossPairs(np.zeros(0), np.zeros(0), {t: [] for t in taus}, [], [], [np.zeros(0, bool) for _ in grams])
    if not panel.size or k < 2:
        return out
    bounds = np.cumsum([0] + [len(p) for p in panel_pos])
    sl = [slice(bounds[c], bounds[c + 1]) for c in range(k)]
    errs = []
    for c, g in enumerate(grams):  # the panel's within-class blocks must reproduce the per-class Grams
        ref = g.gram[np.ix_(panel_pos[c], panel_pos[c])].astype(np.float64)
        errs.append(np.abs(panel[sl[c], sl[c]] - ref).max() / max(np.abs(ref).max(), 1e-30))
    out.check_err = float(max(errs))
    ks, cs = [], []
    for a in range(k):
        sq_a = grams[a].sq_norm.astype(np.float64)[panel_pos[a]]
        others = np.concatenate([np.arange(bounds[b], bounds[b + 1]) for b in range(k) if b != a])
        out.redundant[a] = cross_redundant_mask(panel[sl[a], :][:, others], sq_a)
        for b in range(a + 1, k):
            sq_b = grams[b].sq_norm.astype(np.float64)[panel_pos[b]]
            block = panel[sl[a], sl[b]]
            cos_ab = cosine(block, sq_a, sq_b).ravel()
            ks.append(block.ravel())
            cs.append(cos_ab)
            for t in taus:
                out.counts[t].append(relation_counts(cos_ab, t))
            out.official.append(official_value_counts(k * block.ravel(), thr))
            out.population.append(float(sizes[a]) * sizes[b])
    out.kappa, out.cos = np.concatenate(ks), np.concatenate(cs)
    return out

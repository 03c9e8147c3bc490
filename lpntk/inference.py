"""Statistical inference for the claims: paired tests, non-inferiority, exact small-n tests, Holm, intersection-union.

Every comparison is of two arms that share their units (seeds, targets, classes): the differences
d_i = a_i - b_i are paired and oriented so that d > 0 is what the paper claims. With n finite pairs, mean d_bar and
standard deviation s_d:

* **Superiority** (:func:`paired_test`): H0: E[d] = 0, two-sided. The paired t-test, t = d_bar / (s_d / sqrt(n)),
  p = 2 P(T_{n-1} > |t|), interval d_bar +- t_{1-alpha/2, n-1} s_d / sqrt(n). Where s_d = 0 (every difference equal)
  the t statistic is undefined (a degenerate t would give p = 0): the exact sign-flip permutation test instead,
  p = #{s in {-1, 1}^n : |mean(s d)| >= |d_bar|} / 2^n, whose smallest value is 2 / 2^n (0.5 at n = 2).
* **Non-inferiority** (:func:`noninferiority_test`): H0: E[d] <= -m for a margin m > 0 declared before the run.
  t = (d_bar + m) / (s_d / sqrt(n)), the one-sided p = P(T_{n-1} > t); the one-sided 95 % lower bound
  d_bar - t_{0.95, n-1} s_d / sqrt(n) (the lower end of the two-sided 90 % interval, which is reported). The mirror
  test, H0: E[d] >= -m, gives p_inferior = P(T_{n-1} < t). Zero spread: the exact sign-flip test on d + m.
* **Decision** (:func:`decide`): at level alpha, *supported* when the claimed direction's test rejects, *contradicted*
  when the opposite direction's does, else *inconclusive*; *provisional* when n is below the declared minimum
  ``min_n`` or the test cannot reach alpha at this n (its smallest attainable p exceeds alpha), whatever the data.
* **Holm** (:func:`holm`): the step-down adjusted p-values of a family of m tests, p_(i)^adj =
  max_{j <= i} min(1, (m - j + 1) p_(j)), controlling the family-wise error rate at alpha.
* **Intersection-union** (:func:`intersection_union`): a claim that needs *all* of k comparisons (lpNTK beats each of
  four baselines) is supported only when each component is supported at alpha (no adjustment is needed: the
  composite null is the union of the components' nulls); its p is the largest component p. It is contradicted when
  some component is contradicted at alpha / k (Bonferroni over the k ways to contradict it).
* **Power** (:func:`seeds_to_resolve`, :func:`seeds_to_show_noninferiority`): the smallest n at which the test
  reaches 80 % power for an assumed true difference delta at the spread s_d, from the noncentral t.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "SUPPORTED",
    "CONTRADICTED",
    "INCONCLUSIVE",
    "PROVISIONAL",
    "NOT_MEASURED",
    "Test",
    "finite_pairs",
    "sign_flip_p",
    "paired_test",
    "noninferiority_test",
    "decide",
    "holm",
    "intersection_union",
    "seeds_to_resolve",
    "seeds_to_show_noninferiority",
    "bootstrap_interval",
]

SUPPORTED, CONTRADICTED, INCONCLUSIVE, PROVISIONAL = "supported", "contradicted", "inconclusive", "provisional"
NOT_MEASURED = "not measured"  # a comparison the config asks for whose arm could not be built (the note says why)

#: Beyond this many pairs the sign-flip test samples 2^16 sign vectors (seeded) instead of enumerating them.
_EXACT_MAX_N = 16


@dataclass
class Test:
    """One paired comparison: the effect (mean difference), its interval at ``level``, the pair count, the spread,
    the claimed-direction p (``p``; two-sided for superiority, one-sided for non-inferiority), the opposite
    direction's p where it differs (``p_against``), the smallest p this test can reach at this n, the test's name,
    and how many pairs were dropped for a non-finite value."""

    mean: float
    low: float
    high: float
    n: int
    sd: float
    p: float
    test: str
    level: float = 0.95
    p_against: float = math.nan
    min_p: float = 0.0
    dropped: int = 0
    kind: str = "superiority"  # or "non-inferiority"
    margin: float | None = None


def finite_pairs(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, int]:
    """The differences a - b of the pairs where both are finite, and how many pairs were dropped."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples differ in shape: {a.shape} vs {b.shape}")
    d = a - b
    keep = np.isfinite(d)
    return d[keep], int((~keep).sum())


def sign_flip_p(d: Sequence[float], alternative: str = "two-sided", *, seed: int = 0) -> float:
    """Exact sign-flip permutation p of H0: d symmetric about 0, statistic mean(d).

    ``alternative``: "two-sided" (|mean(s d)| >= |mean(d)|), "greater" (mean(s d) >= mean(d)). Enumerates the 2^n
    sign vectors up to n = 16, else 2^16 seeded draws (the observed signs counted once, so p > 0)."""
    d = np.asarray(d, dtype=np.float64)
    n = len(d)
    if n == 0:
        return math.nan
    if n <= _EXACT_MAX_N:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    else:
        rng = np.random.default_rng(seed)
        signs = np.vstack([np.ones(n), rng.choice((1.0, -1.0), size=(2**16 - 1, n))])
    means = signs @ d / n
    obs = d.mean()
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    if alternative == "two-sided":
        return float(np.mean(np.abs(means) >= abs(obs) - tol))
    if alternative == "greater":
        return float(np.mean(means >= obs - tol))
    raise ValueError(f"alternative must be 'two-sided' or 'greater', not {alternative!r}")


def _no_spread(d: np.ndarray, sd: float) -> bool:
    """Every difference equal up to rounding (s_d within 1e-9 of their size): the t statistic is meaningless."""
    return len(d) < 2 or sd <= 1e-9 * float(np.abs(d).max())


def _sign_flip_min_p(n: int, alternative: str) -> float:
    """Smallest p the sign-flip test can reach with n pairs: 2 / 2^n two-sided, 1 / 2^n one-sided."""
    if n == 0:
        return 1.0
    return (2.0 if alternative == "two-sided" else 1.0) / 2.0 ** min(n, _EXACT_MAX_N)


def paired_test(a: Sequence[float], b: Sequence[float], *, level: float = 0.95) -> Test:
    """Superiority of a over b: mean of d = a - b, its ``level`` t-interval and the two-sided paired t-test's p;
    the exact sign-flip test where the differences have no spread (or there is a single pair)."""
    d, dropped = finite_pairs(a, b)
    n = len(d)
    if n == 0:
        return Test(math.nan, math.nan, math.nan, 0, math.nan, math.nan, "-", level, dropped=dropped, min_p=1.0)
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    if _no_spread(d, sd):
        p = sign_flip_p(d) if mean != 0 else 1.0
        return Test(
            mean,
            mean if n > 1 else -math.inf,
            mean if n > 1 else math.inf,
            n,
            sd,
            p,
            "sign-flip permutation (exact; no spread)",
            level,
            min_p=_sign_flip_min_p(n, "two-sided"),
            dropped=dropped,
        )
    se = sd / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return Test(mean, mean - half, mean + half, n, sd, p, "paired t", level, dropped=dropped)


def noninferiority_test(kept: Sequence[float], full: Sequence[float], margin: float, *, alpha: float = 0.05) -> Test:
    """Non-inferiority of ``kept`` to ``full`` by the declared ``margin`` (> 0, the unit of the values): H0: E[d] <=
    -margin with d = kept - full; ``p`` its one-sided p, ``p_against`` the mirror test's (H0: E[d] >= -margin), and
    the two-sided (1 - 2 alpha) interval, whose lower end is the one-sided (1 - alpha) lower bound."""
    if margin is None or not np.isfinite(margin) or margin <= 0:
        raise ValueError(f"the non-inferiority margin must be a positive number declared in the config, not {margin}")
    d, dropped = finite_pairs(kept, full)
    n = len(d)
    level = 1 - 2 * alpha
    name = f"paired t, one-sided non-inferiority (margin {margin:g})"
    if n == 0:
        return Test(
            math.nan,
            math.nan,
            math.nan,
            0,
            math.nan,
            math.nan,
            "-",
            level,
            math.nan,
            1.0,
            dropped,
            "non-inferiority",
            margin,
        )
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    if _no_spread(d, sd):
        shifted = d + margin
        p = sign_flip_p(shifted, "greater")
        p_against = sign_flip_p(-shifted, "greater")
        lo, hi = (mean, mean) if n > 1 else (-math.inf, math.inf)
        name = f"sign-flip permutation on d + margin (exact; no spread; margin {margin:g})"
        return Test(
            mean,
            lo,
            hi,
            n,
            sd,
            p,
            name,
            level,
            p_against,
            _sign_flip_min_p(n, "greater"),
            dropped,
            "non-inferiority",
            margin,
        )
    se = sd / math.sqrt(n)
    t = (mean + margin) / se
    half = float(stats.t.ppf(1 - alpha, n - 1)) * se
    p, p_against = float(stats.t.sf(t, n - 1)), float(stats.t.cdf(t, n - 1))
    return Test(
        mean, mean - half, mean + half, n, sd, p, name, level, p_against, 0.0, dropped, "non-inferiority", margin
    )


def decide(
    test: Test, *, alpha: float = 0.05, min_n: int = 5, p: float | None = None, p_against: float | None = None
) -> str:
    """The verdict of one test at level ``alpha`` (``p``, ``p_against``: adjusted p-values, e.g. Holm's, in place
    of the test's own).

    No pairs: *not measured*. Fewer than ``min_n`` pairs, or a test whose smallest attainable p exceeds alpha at this
    n: *provisional*, whatever the data (the effect and interval are still reported). Otherwise superiority is
    *supported* / *contradicted* when its two-sided p < alpha with the effect above / below 0; non-inferiority is
    *supported* when its p < alpha, *contradicted* when the mirror test's p < alpha; else *inconclusive*."""
    if test.n == 0:
        return NOT_MEASURED
    if test.n < min_n or test.min_p > alpha:
        return PROVISIONAL
    p = test.p if p is None else p
    if test.kind == "non-inferiority":
        against = test.p_against if p_against is None else p_against
        if p < alpha:
            return SUPPORTED
        if against < alpha:
            return CONTRADICTED
        return INCONCLUSIVE
    if p < alpha:
        return SUPPORTED if test.mean > 0 else CONTRADICTED
    return INCONCLUSIVE


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN entries stay NaN and do not count in the family size)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out


def intersection_union(tests: Sequence[Test], *, alpha: float = 0.05, min_n: int = 5) -> tuple[str, float]:
    """The verdict and p of "every component holds": supported when every component is supported at ``alpha``
    (p = the largest component p, a component on the wrong side counting as 1); contradicted when some component
    is contradicted at alpha / k; provisional when some component is provisional and none is contradicted; not
    measured when a component is; else inconclusive."""
    k = len(tests)
    if k == 0:
        return NOT_MEASURED, math.nan
    verdicts = [decide(t, alpha=alpha, min_n=min_n) for t in tests]
    # the p of "every component holds": a component on the wrong side supports nothing (its p for the claim is 1)
    claimed = [t.p if (t.kind == "non-inferiority" or t.mean > 0) else 1.0 for t in tests]
    p = max(claimed) if all(np.isfinite(c) for c in claimed) else math.nan
    if all(v == SUPPORTED for v in verdicts):
        return SUPPORTED, p
    if any(decide(t, alpha=alpha / k, min_n=min_n) == CONTRADICTED for t in tests):
        return CONTRADICTED, p
    if NOT_MEASURED in verdicts:
        return NOT_MEASURED, p
    if PROVISIONAL in verdicts:
        return PROVISIONAL, p
    return INCONCLUSIVE, p


def seeds_to_resolve(
    delta: float | None, sd: float, power: float = 0.80, alpha: float = 0.05, limit: int = 100_000
) -> int | None:
    """Pairs a two-sided paired t-test at ``alpha`` needs to detect a true difference ``delta`` with ``power``, at
    the spread ``sd`` of the paired differences: the smallest n >= 2 with P(|T| > t_{1-alpha/2, n-1}) >= ``power``,
    T noncentral t with n - 1 degrees of freedom and noncentrality |delta| sqrt(n) / sd. None without a delta or a
    spread; ``limit`` + 1 means "more than ``limit``"."""
    if delta is None or not np.isfinite(sd) or sd <= 0 or delta == 0 or not np.isfinite(delta):
        return None
    ratio = abs(delta) / sd

    def reached(n: int) -> bool:
        crit = stats.t.ppf(1 - alpha / 2, n - 1)
        nc = ratio * math.sqrt(n)
        upper = stats.nct.sf(crit, n - 1, nc)
        # the lower tail is ~0 for a large noncentrality, where scipy's nct.cdf returns NaN (e.g. 1 df, nc > ~15)
        lower = float(np.nan_to_num(stats.nct.cdf(-crit, n - 1, nc), nan=0.0))
        return upper + lower >= power

    return _smallest_n(reached, ratio, stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power), limit)


def seeds_to_show_noninferiority(
    delta: float | None, sd: float, margin: float, power: float = 0.80, alpha: float = 0.05, limit: int = 100_000
) -> int | None:
    """Pairs the one-sided non-inferiority t-test at ``alpha`` needs to reject H0: E[d] <= -margin with ``power``
    when the true difference is ``delta``: the smallest n >= 2 with P(T > t_{1-alpha, n-1}) >= ``power``, T
    noncentral t (n - 1 df, noncentrality (delta + margin) sqrt(n) / sd). None when delta + margin <= 0 (no n
    shows it), or without a delta, a spread or a margin."""
    if delta is None or margin is None or not np.isfinite(sd) or sd <= 0 or not np.isfinite(delta):
        return None
    shift = delta + margin
    if shift <= 0:
        return None
    ratio = shift / sd

    def reached(n: int) -> bool:
        return stats.nct.sf(stats.t.ppf(1 - alpha, n - 1), n - 1, ratio * math.sqrt(n)) >= power

    return _smallest_n(reached, ratio, stats.norm.ppf(1 - alpha) + stats.norm.ppf(power), limit)


def _smallest_n(reached, ratio: float, z: float, limit: int) -> int:
    for n in range(2, 10_001):
        if reached(n):
            return n
    n = math.ceil((z / ratio) ** 2)  # huge n: the normal approximation is exact enough
    return n if n <= limit else limit + 1


def bootstrap_interval(
    statistic, rows: np.ndarray, *, level: float = 0.95, draws: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """The statistic of ``rows`` and its percentile bootstrap interval over ``draws`` resamplings of the rows."""
    rows = np.asarray(rows)
    rng = np.random.default_rng(seed)
    value = float(statistic(rows))
    boot = np.array([statistic(rows[rng.integers(0, len(rows), len(rows))]) for _ in range(draws)])
    boot = boot[np.isfinite(boot)]
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]) if boot.size else (math.nan, math.nan)
    return value, float(lo), float(hi)

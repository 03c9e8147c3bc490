"""The inference rules against independent references: the t distribution's formulas (scipy), exact enumeration by
hand, Holm on a hand-computed family, published power tables, and null simulations of the declared design."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lpntk.claims import design_for, pruning_claims, settle
from lpntk.inference import (
    CONTRADICTED,
    INCONCLUSIVE,
    PROVISIONAL,
    SUPPORTED,
    bootstrap_interval,
    decide,
    holm,
    intersection_union,
    noninferiority_test,
    paired_test,
    seeds_to_resolve,
    seeds_to_show_noninferiority,
    sign_flip_p,
)


def test_paired_t_by_hand():
    d = np.array([0.5, 1.5, 1.0, 2.0, 0.0])
    t = paired_test(d + 10, np.full(5, 10.0))
    half = 2.7764451051977987 * d.std(ddof=1) / math.sqrt(5)  # t_{0.975, 4}
    assert t.mean == pytest.approx(1.0) and t.low == pytest.approx(1 - half) and t.high == pytest.approx(1 + half)
    assert t.p == pytest.approx(0.0474, abs=2e-4) and t.test == "paired t"  # t = 2.828 on 4 df, from a t table
    assert decide(t, min_n=5) == SUPPORTED and decide(t, alpha=0.01) == INCONCLUSIVE


def test_noninferiority_p_is_the_one_sided_t_formula():
    rng = np.random.default_rng(3)
    full = 98 + rng.normal(0, 0.1, 8)
    kept = full - 0.1 + rng.normal(0, 0.1, 8)
    t = noninferiority_test(kept, full, 0.2)
    d = kept - full
    stat = (d.mean() + 0.2) / (d.std(ddof=1) / math.sqrt(8))
    assert t.p == pytest.approx(1 - stats.t.cdf(stat, 7), rel=1e-10)
    assert t.p_against == pytest.approx(stats.t.cdf(stat, 7), rel=1e-10)
    lower = d.mean() - stats.t.ppf(0.95, 7) * d.std(ddof=1) / math.sqrt(8)
    assert t.low == pytest.approx(lower) and t.level == pytest.approx(0.90)
    assert decide(t) == (SUPPORTED if t.p < 0.05 else INCONCLUSIVE)
    # clearly worse than the margin: contradicted; clearly better: supported
    assert decide(noninferiority_test(full - 1 + rng.normal(0, 0.05, 8), full, 0.2)) == CONTRADICTED
    assert decide(noninferiority_test(full + rng.normal(0, 0.05, 8), full, 0.2)) == SUPPORTED
    with pytest.raises(ValueError, match="margin"):
        noninferiority_test(kept, full, math.nan)


def test_two_identical_pairs_are_provisional_never_supported():
    # n = 2 with identical nonzero differences: no spread; the degenerate t would give p = 0
    t = paired_test([1.3, 2.3], [1.0, 2.0])
    assert t.test.startswith("sign-flip") and t.p == pytest.approx(0.5) and t.min_p == pytest.approx(0.5)
    assert decide(t) == PROVISIONAL and decide(t, min_n=2) == PROVISIONAL
    ni = noninferiority_test([1.3, 2.3], [1.0, 2.0], 0.3)  # identical nonzero differences
    assert ni.test.startswith("sign-flip") and decide(ni) == PROVISIONAL and decide(ni, min_n=2) == PROVISIONAL
    ni = noninferiority_test([1.0, 1.0], [1.0, 1.0], 0.3)
    assert ni.p == pytest.approx(0.25) and decide(ni) == PROVISIONAL and decide(ni, min_n=2) == PROVISIONAL
    # noisy n = 3 with a huge effect: still provisional below min_n
    assert decide(paired_test([10.0, 11.0, 12.5], [0.0, 0.0, 0.0])) == PROVISIONAL


def test_sign_flip_exact_by_enumeration():
    # six equal differences: 2 of the 64 sign vectors reach |mean| = 1
    assert sign_flip_p(np.ones(6)) == pytest.approx(2 / 64)
    assert sign_flip_p(np.ones(6), "greater") == pytest.approx(1 / 64)
    # d = (1, 2, 3): sign vectors with mean >= 2 are (+,+,+) only: 1/8; |mean| >= 2: 2/8
    assert sign_flip_p([1.0, 2.0, 3.0], "greater") == pytest.approx(1 / 8)
    assert sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)
    t = paired_test(np.full(6, 2.0), np.ones(6))
    assert decide(t) == SUPPORTED  # zero spread at n = 6: the exact test reaches 0.031
    t = paired_test(np.full(5, 2.0), np.ones(5))
    assert decide(t) == PROVISIONAL  # at n = 5 its smallest p is 0.0625 > 0.05


def test_holm_hand_computed():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4 x 0.005 = 0.02, 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(0.06, 0.04) = 0.06
    adj = holm([0.01, 0.04, 0.03, 0.005])
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(holm([math.nan, 0.02])[0]) and holm([math.nan, 0.02])[1] == pytest.approx(0.02)
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 2 x 0.5 = 1; max(1, 0.9)


def test_intersection_union():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, 10)
    clear = [paired_test(base + 2 + rng.normal(0, 0.3, 10), base) for _ in range(4)]
    v, p = intersection_union(clear)
    assert v == SUPPORTED and p == max(t.p for t in clear)
    mixed = clear[:3] + [paired_test(base + rng.normal(0, 0.3, 10), base)]
    assert intersection_union(mixed)[0] == INCONCLUSIVE
    worse = clear[:3] + [paired_test(base - 2 + rng.normal(0, 0.3, 10), base)]
    assert intersection_union(worse)[0] == CONTRADICTED
    small = clear[:3] + [paired_test([3.0, 4.0], [1.0, 1.5])]
    assert intersection_union(small)[0] == PROVISIONAL


@pytest.mark.parametrize("d,n", [(0.5, 34), (0.8, 15), (1.0, 10), (2.0, 5)])
def test_seeds_to_resolve_matches_power_tables(d, n):
    # one-sample / paired t-test, two-sided alpha 0.05, power 0.80 (G*Power and Cohen's tables)
    assert seeds_to_resolve(d * 1.7, 1.7) == n
    assert seeds_to_resolve(None, 1.0) is None and seeds_to_resolve(1.0, 0.0) is None


def test_seeds_to_show_noninferiority_against_simulation():
    # true difference 0, margin 0.2, spread 0.2: effect size 1 one-sided -> n = 8 (G*Power: 0.80 power at n = 8)
    n = seeds_to_show_noninferiority(0.0, 0.2, 0.2)
    assert n == 8
    rng = np.random.default_rng(1)
    hits = [noninferiority_test(rng.normal(0, 0.2, n), np.zeros(n), 0.2).p < 0.05 for _ in range(2000)]
    assert np.mean(hits) == pytest.approx(0.80, abs=0.04)
    assert seeds_to_show_noninferiority(-0.3, 0.1, 0.2) is None  # a true loss beyond the margin: no n shows it
    assert seeds_to_show_noninferiority(0.0, 0.1, 0.2) < seeds_to_show_noninferiority(0.0, 0.1, 0.05)


def _null_runs(rng, n=10, keeps=(0.95, 0.9, 0.87, 0.8, 0.7, 0.5)):
    rows = []
    level = rng.normal(98, 0.1, n)  # per-seed level shared by every method (pairing)
    for seed in range(n):
        rows.append(dict(method="full", experiment="table", keep=1.0, seed=seed, acc=level[seed]))
        for k in keeps:
            for m in ("lpntk", "el2n", "grand", "forgetting", "random"):
                rows.append(dict(method=m, experiment="table", keep=k, seed=seed, acc=level[seed]))
    df = pd.DataFrame(rows)
    df["test_acc_best_val"] = (df["acc"] + rng.normal(0, 0.1, len(df))) / 100
    return df


def test_null_simulation_keeps_the_familywise_supported_rate():
    """No true effect (every method drawn from one distribution), 500 repetitions of the declared C3b design (6 kept
    fractions x 4 baselines, n = 10): the primary (intersection-union) is supported in at most 5 % of runs, and the
    secondary family (23 comparisons under Holm) has any supported row in at most 5 %, within simulation error."""
    rng = np.random.default_rng(2024)
    design = design_for({})
    reps, primary, any_secondary = 500, 0, 0
    for _ in range(reps):
        rows = [r for r in pruning_claims("null", _null_runs(rng)) if r.claim == "C3b"]
        settled = settle(rows, design)
        primary += any(r.role == "primary" and r.verdict == SUPPORTED for r in settled)
        any_secondary += any(r.role == "secondary" and r.verdict == SUPPORTED for r in settled)
    se = math.sqrt(0.05 * 0.95 / reps)
    assert primary / reps <= 0.05 + 2 * se
    assert any_secondary / reps <= 0.05 + 2 * se


def test_null_simulation_noninferiority_at_the_margin():
    """True difference exactly at -margin (the edge of H0): the non-inferiority test says supported in at most
    alpha of 500 runs; at n = 2 it never does."""
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(500):
        full = rng.normal(98, 0.1, 10)
        kept = full - 0.2 + rng.normal(0, 0.1, 10)
        hits += decide(noninferiority_test(kept, full, 0.2)) == SUPPORTED
    assert hits / 500 <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 500)
    assert all(
        decide(noninferiority_test(rng.normal(0, 1, 2), rng.normal(0, 1, 2), 0.2)) != SUPPORTED for _ in range(50)
    )


def _t2(level: float) -> float:
    """t quantile at (1 + level) / 2 with 2 degrees of freedom, closed form: F(t) = 1/2 + t / (2 sqrt(2 + t^2))."""
    q = 0.5 + level / 2
    return (2 * q - 1) / math.sqrt(2 * q * (1 - q))


def test_seeds_to_resolve_edges():
    # sd below 1 and delta 1 are ordinary values: d = 1 (10 seeds), d = 0.5 (34), negative delta as positive
    assert seeds_to_resolve(0.5, 0.5) == 10 and seeds_to_resolve(1.0, 2.0) == 34 == seeds_to_resolve(-1.0, 2.0)
    for delta, sd in ((math.inf, 1.0), (math.nan, 1.0), (0.0, 1.0), (1.0, math.inf), (1.0, math.nan), (1.0, -1.0)):
        assert seeds_to_resolve(delta, sd) is None, (delta, sd)
    # the two-sided t-test is unbiased (power >= its size alpha at any effect), so a power of alpha is reached at
    # the smallest n, 2: both tails and both degrees of freedom n - 1 count
    assert seeds_to_resolve(0.01, 1.0, power=0.05) == 2
    assert seeds_to_resolve(0.01, 1.0, power=0.1, alpha=0.1) == 2


def test_seeds_to_resolve_beyond_the_t_search(monkeypatch):
    """Past n = 10 000 the search stops and the normal approximation n = ceil(((z_{1-alpha/2} + z_power) / d)^2)
    answers, capped at limit + 1. The t powers are replaced by a stand-in that is reached at one chosen n (or never),
    so that the 10 000 steps cost nothing; z_0.975 = 1.959964, z_0.8 = 0.841621 (printed tables)."""
    import types

    import lpntk.inference as claims

    seen = []

    class Nct:
        at = None  # the n at which the stand-in power jumps to 1

        @classmethod
        def sf(cls, x, df, nc):
            seen.append((df, x > 0))
            return 1.0 if df + 1 == cls.at else 0.0

        @classmethod
        def cdf(cls, x, df, nc):
            seen.append((df, x > 0))
            return 0.0

    quick_t = types.SimpleNamespace(ppf=lambda q, df: 2.0)  # the critical values do not matter here
    monkeypatch.setattr(claims, "stats", types.SimpleNamespace(t=quick_t, norm=stats.norm, nct=Nct))
    z = 1.959963985 + 0.841621234
    assert seeds_to_resolve(0.01, 1.0) == math.ceil((z / 0.01) ** 2) == 78489  # (280.1585)^2 = 78488.8
    assert seeds_to_resolve(0.02, 2.0, limit=78489) == 78489 and seeds_to_resolve(0.01, 1.0, limit=78488) == 78489
    assert seeds_to_resolve(0.01, 1.0, limit=50) == 51 and seeds_to_resolve(1e-6, 1.0) == 100_001
    z90 = 1.644853627 + 0.524400513  # alpha 0.1, power 0.7
    assert seeds_to_resolve(-0.01, 1.0, power=0.7, alpha=0.1) == math.ceil((z90 / 0.01) ** 2) == 47057
    # every n from 2 to 10 000 is tried with n - 1 degrees of freedom, the upper tail at +crit, the lower at -crit
    seen.clear()
    seeds_to_resolve(0.01, 1.0)
    assert seen == [(n - 1, up) for n in range(2, 10_001) for up in (True, False)]
    Nct.at = 10_000  # the last n of the search is still searched; the next one is not
    assert seeds_to_resolve(0.01, 1.0) == 10_000
    Nct.at = 10_001
    assert seeds_to_resolve(0.01, 1.0) == 78489


def test_seeds_to_resolve_two_seeds_for_a_huge_effect():
    # at n = 2 (1 degree of freedom) and noncentrality 30 sqrt 2 the two-sided test at 5 % rejects with probability
    # P(|Z + 42.4| / |Z'| > 12.706) ~ P(|Z'| < 3.3) = 0.999 (Z, Z' standard normal): 2 seeds give power 0.8
    rng = np.random.default_rng(0)
    z, c = rng.standard_normal(200_000), rng.standard_normal(200_000)
    assert np.mean(np.abs((z + 30 * math.sqrt(2)) / np.abs(c)) > 12.706204736) > 0.99
    assert seeds_to_resolve(30.0, 1.0) == 2


def test_bootstrap_interval_covers_the_statistic():
    rows = np.arange(100, dtype=float)
    v, lo, hi = bootstrap_interval(lambda r: r.mean(), rows, seed=2)
    assert v == pytest.approx(49.5) and lo < 49.5 < hi and hi - lo == pytest.approx(2 * 1.96 * 29.0 / 10, rel=0.2)


def test_bootstrap_interval_draws_levels_and_seed():
    # a statistic that returns how often it was called: the value (call 0), then the draws 1..2000, whose 2.5 % and
    # 97.5 % quantiles (linear interpolation, positions 0.025 * 1999 and 0.975 * 1999) are 1 + 49.975, 1 + 1949.025
    calls = []

    def counter(r):
        calls.append(len(r))
        return float(len(calls) - 1)

    v, lo, hi = bootstrap_interval(counter, np.zeros(7))
    assert len(calls) == 2001 and set(calls) == {7} and v == 0.0
    assert lo == pytest.approx(50.975, rel=1e-12) and hi == pytest.approx(1950.025, rel=1e-12)
    calls.clear()
    _, lo, hi = bootstrap_interval(counter, np.zeros(7), level=0.9, draws=101)
    assert len(calls) == 102 and lo == pytest.approx(1 + 0.05 * 100) and hi == pytest.approx(1 + 0.95 * 100)
    # resampling rows with replacement from every row: the first row of three turns up in 1 - (2/3)^3 = 70 % of them
    rows = np.array([1.0, 0.0, 0.0])
    assert bootstrap_interval(np.max, rows, draws=400) == (1.0, 0.0, 1.0)
    assert np.mean([bootstrap_interval(np.max, rows, draws=1, seed=s)[1] for s in range(300)]) == pytest.approx(
        1 - (2 / 3) ** 3, abs=0.08
    )
    # the seed: 0 by default, reproducible, and another seed draws other resamples
    rows = np.random.default_rng(5).normal(size=30)
    base = bootstrap_interval(np.mean, rows)
    assert base == bootstrap_interval(np.mean, rows, seed=0) == bootstrap_interval(np.mean, rows)
    assert base != bootstrap_interval(np.mean, rows, seed=1)
    # non-finite statistics are left out; none finite: NaN bounds
    v, lo, hi = bootstrap_interval(lambda r: math.nan, rows)
    assert math.isnan(v) and math.isnan(lo) and math.isnan(hi)


def test_three_pairs_every_field_by_hand():
    """Three pairs (2 degrees of freedom: the t distribution in closed form) with a missing value: d = (1, 3, 0),
    mean 4/3, s_d^2 = 7/3, t = 4 / sqrt 7, two-sided p = 1 - 4 / sqrt 30; the non-inferiority test's interval."""
    a, b = [1.0, None, 4.0, 2.0, math.nan], [0.0, 0.0, 1.0, 2.0, 1.0]
    half = _t2(0.95) * math.sqrt(7 / 9)
    assert _t2(0.95) == pytest.approx(4.302652729911275, rel=1e-9)  # the printed tables' t_{0.975, 2}
    t = paired_test(a, b)
    assert (t.mean, t.low, t.high, t.sd, t.p) == pytest.approx(
        (4 / 3, 4 / 3 - half, 4 / 3 + half, math.sqrt(7 / 3), 1 - 4 / math.sqrt(30)), rel=1e-9
    )
    assert (t.n, t.dropped) == (3, 2)
    t = paired_test(b, a, level=0.8)
    assert (t.mean, t.low) == pytest.approx((-4 / 3, -4 / 3 - _t2(0.8) * math.sqrt(7 / 9)), rel=1e-9)
    ni = noninferiority_test([11.0, 14.0, 12.0], [10.0, 11.0, 12.0], margin=1.25)
    assert ni.low == pytest.approx(4 / 3 - _t2(0.9) * math.sqrt(7 / 9), rel=1e-9)
    for x, y in (([1.0, 2.0], [1.0]), ([[1.0, 2.0]], [[1.0, 2.0]])):
        with pytest.raises(ValueError, match=r"^paired samples differ in shape: \("):
            paired_test(x, y)
    assert paired_test([], []).n == 0 and decide(paired_test([math.nan], [1.0])) == "not measured"


def test_intersection_union_least_favourable_configuration():
    """Three components truly positive, one null (the least favourable point of the composite null): the
    intersection-union is supported in at most alpha / 2 of runs (the null component supported on the claimed side),
    within simulation error; its p counts a wrong-side component as 1."""
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(500):
        base = rng.normal(0, 1, 10)
        tests = [paired_test(base + 3 + rng.normal(0, 0.5, 10), base) for _ in range(3)]
        tests.append(paired_test(base + rng.normal(0, 0.5, 10), base))
        hits += intersection_union(tests)[0] == SUPPORTED
    assert hits / 500 <= 0.025 + 2 * math.sqrt(0.025 * 0.975 / 500)
    base = rng.normal(0, 1, 10)
    wrong = [paired_test(base + 3 + rng.normal(0, 0.1, 10), base), paired_test(base - 1 + rng.normal(0, 0.1, 10), base)]
    verdict, p = intersection_union(wrong)
    assert verdict == CONTRADICTED and p == 1.0


def test_noninferiority_contradicted_by_the_holm_adjusted_mirror_p():
    t = noninferiority_test(np.array([97.0, 97.1, 96.9, 97.05, 96.95, 97.0]), np.full(6, 98.0), 0.2)
    assert t.p_against < 1e-6 and decide(t) == CONTRADICTED
    assert decide(t, p=min(1.0, 2 * t.p), p_against=0.2) == INCONCLUSIVE  # the adjusted mirror p decides

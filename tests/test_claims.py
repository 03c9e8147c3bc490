"""The verdict logic on synthetic effects: a clear effect is supported, a reversed one contradicted, noise
inconclusive; intervals against closed forms; the seeds-to-resolve count against published power tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lpntk.claims import (
    bootstrap_interval,
    difficulty_claims,
    forgetting_claims,
    ld_size_claims,
    noninferiority,
    paired_effect,
    pruning_claims,
    seeds_to_resolve,
    small_cluster_claims,
    verdict,
)


def _arms(effect: float, n: int, noise: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = rng.normal(50, 5, n)  # shared per-seed level: pairing removes it
    return base + effect + rng.normal(0, noise, n), base + rng.normal(0, noise, n)


def test_clear_reversed_and_null_effects():
    a, b = _arms(3.0, 10)
    e = paired_effect(a, b)
    assert e.low > 0 and verdict(e.low, e.high, e.n) == "supported"
    e = paired_effect(b, a)
    assert e.high < 0 and verdict(e.low, e.high, e.n) == "contradicted"
    a, b = _arms(0.0, 10, seed=3)
    e = paired_effect(a, b)
    assert verdict(e.low, e.high, e.n) == "inconclusive at n = 10"
    e = paired_effect([1.0], [0.0])  # one pair: no spread, no verdict
    assert (e.low, e.high) == (-math.inf, math.inf) and verdict(e.low, e.high, 1) == "inconclusive at n = 1"


def test_paired_interval_is_the_t_interval_by_hand():
    d = np.array([0.5, 1.5, 1.0, 2.0, 0.0])
    e = paired_effect(d + 10, np.full(5, 10.0))
    half = 2.7764451051977987 * d.std(ddof=1) / math.sqrt(5)  # t_{0.975, 4}
    assert e.mean == pytest.approx(1.0) and e.low == pytest.approx(1.0 - half) and e.high == pytest.approx(1.0 + half)
    t = 1.0 / (d.std(ddof=1) / math.sqrt(5))
    assert t == pytest.approx(2.828, abs=1e-3) and e.p == pytest.approx(0.0474, abs=2e-4)  # t table: df 4


def test_noninferiority_margin():
    rng = np.random.default_rng(1)
    full = 99.3 + rng.normal(0, 0.05, 8)
    _, v = noninferiority(full + 0.001 + rng.normal(0, 0.01, 8), full, margin=0.05)
    assert v == "supported"
    _, v = noninferiority(full - 0.5 + rng.normal(0, 0.01, 8), full, margin=0.05)
    assert v == "contradicted"
    _, v = noninferiority(full - 0.05 + rng.normal(0, 0.2, 8), full, margin=0.05)
    assert v.startswith("inconclusive")
    _, v = noninferiority([1.0, 2.0], [1.0, 2.0], margin=math.nan)
    assert "no margin" in v


@pytest.mark.parametrize("d,n", [(0.5, 34), (0.8, 15), (1.0, 10), (2.0, 5)])
def test_seeds_to_resolve_matches_power_tables(d, n):
    # one-sample / paired t-test, two-sided alpha 0.05, power 0.80 (G*Power and Cohen's tables)
    assert seeds_to_resolve(d * 1.7, 1.7) == n
    assert seeds_to_resolve(None, 1.0) is None and seeds_to_resolve(1.0, 0.0) is None


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


def _t2(level: float) -> float:
    """t quantile at (1 + level) / 2 with 2 degrees of freedom, closed form: F(t) = 1/2 + t / (2 sqrt(2 + t^2))."""
    q = 0.5 + level / 2
    return (2 * q - 1) / math.sqrt(2 * q * (1 - q))


def test_effects_edges_and_verdict_boundaries_by_hand():
    """Every field of the paired effect, with three pairs (2 degrees of freedom: the t distribution in closed form),
    a missing value, no spread, one pair and none; the verdict at its boundaries; the non-inferiority test's
    90 % interval and its margin."""
    from dataclasses import astuple

    from lpntk.claims import Effect

    def same(e, want):
        assert [type(v) for v in astuple(e)] == [type(v) for v in astuple(want)], (e, want)
        np.testing.assert_allclose(astuple(e)[:6], astuple(want)[:6], rtol=1e-9)
        assert astuple(e)[6:] == astuple(want)[6:]

    # d = (1, 3, 0) (the pair with None / NaN left out): mean 4/3, s_d^2 = (1/9 + 25/9 + 16/9) / 2 = 7/3,
    # t = (4/3) / sqrt(7/9) = 4 / sqrt 7, two-sided p = 1 - t / sqrt(2 + t^2) = 1 - 4 / sqrt 30
    a, b = [1.0, None, 4.0, 2.0, math.nan], [0.0, 0.0, 1.0, 2.0, 1.0]
    sd, half = math.sqrt(7 / 3), _t2(0.95) * math.sqrt(7 / 9)
    assert _t2(0.95) == pytest.approx(4.302652729911275, rel=1e-9)  # the printed tables' t_{0.975, 2}
    same(paired_effect(a, b), Effect(4 / 3, 4 / 3 - half, 4 / 3 + half, 3, sd, 1 - 4 / math.sqrt(30), "paired t-test"))
    half80 = _t2(0.8) * math.sqrt(7 / 9)
    e = paired_effect(a, b, level=0.8)
    same(e, Effect(4 / 3, 4 / 3 - half80, 4 / 3 + half80, 3, sd, 1 - 4 / math.sqrt(30), "paired t-test", 0.8))
    same(
        paired_effect(b, a), Effect(-4 / 3, -4 / 3 - half, -4 / 3 + half, 3, sd, 1 - 4 / math.sqrt(30), "paired t-test")
    )
    # no spread: the interval is the value, p 0 (or 1 for no difference); one pair: infinite; none: NaN
    same(paired_effect([3, 4, 5], [1, 2, 3]), Effect(2.0, 2.0, 2.0, 3, 0.0, 0.0, "paired t-test"))
    same(paired_effect([3, 4], [3, 4], level=0.9), Effect(0.0, 0.0, 0.0, 2, 0.0, 1.0, "paired t-test", 0.9))
    same(
        paired_effect([1.0, 5.0], [1.5, None], 0.9),
        Effect(-0.5, -math.inf, math.inf, 1, math.nan, math.nan, "paired t-test", 0.9),
    )
    nan = math.nan
    same(paired_effect([], [], 0.9), Effect(nan, nan, nan, 0, nan, nan, "paired t-test", 0.9))
    same(paired_effect([nan, 1.0], [0.0, nan]), Effect(nan, nan, nan, 0, nan, nan, "paired t-test"))
    for x, y in (([1.0, 2.0], [1.0]), ([[1.0, 2.0]], [[1.0, 2.0]])):
        with pytest.raises(ValueError, match=r"^paired samples differ in shape: \("):
            paired_effect(x, y)

    # verdict: strictly above / below the threshold; on it, inconclusive
    assert verdict(0.0, 1.0, 5) == verdict(-1.0, 0.0, 5) == "inconclusive at n = 5"
    assert verdict(1e-12, 1.0, 5) == "supported" and verdict(-1.0, -1e-12, 5) == "contradicted"
    assert verdict(-0.5, 1.0, 4, threshold=-1.0) == "supported" and verdict(-3, -1.5, 4, threshold=-1) == "contradicted"
    assert verdict(-1.0, 2.0, 4, threshold=-1.0) == "inconclusive at n = 4"

    # non-inferiority: the one-sided 5 % test is the 90 % interval's lower end against -margin
    full = [10.0, 11.0, 12.0]
    kept = [11.0, 14.0, 12.0]  # d = (1, 3, 0) again
    low90 = 4 / 3 - _t2(0.9) * math.sqrt(7 / 9)  # t_{0.95, 2} = 2.919986
    assert _t2(0.9) == pytest.approx(2.919985580, rel=1e-9) and -1.25 < low90 < -1.24
    eff, v = noninferiority(kept, full, margin=1.25)
    same(
        eff,
        Effect(
            4 / 3,
            low90,
            4 / 3 + _t2(0.9) * math.sqrt(7 / 9),
            3,
            sd,
            1 - 4 / math.sqrt(30),
            "paired t, one-sided 5 % non-inferiority",
            0.9,
        ),
    )
    assert v == "supported"
    assert noninferiority(kept, full, margin=1.24)[1] == "inconclusive at n = 3"
    assert noninferiority(full, [15.0, 16.0, 17.0], margin=1.0)[1] == "contradicted"
    for margin in (0.0, -1.0, math.inf, math.nan):
        eff, v = noninferiority(kept, full, margin=margin)
        assert v == "inconclusive at n = 3 (no margin: fewer than 2 seeds of the full set)" and eff.n == 3


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

    import lpntk.claims as claims

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


def test_difficulty_claims_orientation():
    rng = np.random.default_rng(0)
    easy, median, hard = 10 + rng.normal(0, 0.1, 20), 12 + rng.normal(0, 0.1, 20), 11 + rng.normal(0, 0.1, 20)
    summary = {
        "rankings": ["lpntk"],
        "l2_pass": "train",
        "auc_per_run": {"lpntk/easy": easy, "lpntk/median": median, "lpntk/hard": hard},
    }
    rows = {c.comparison: c for c in difficulty_claims("d", summary)}
    assert rows["median - easy (raw lpNTK ranking)"].verdict == "supported"  # easy has the smaller area
    assert rows["hard - median (raw lpNTK ranking)"].verdict == "contradicted"  # hard came out easier here
    assert len(rows) == 2  # no contradictory arm: no row

    # asked for but skipped (no target has enough negative-lpNTK samples): a row that says so, verdict not measured
    skipped = "contradictory set skipped: the targets of classes [0, 1] have fewer than num = 10 samples"
    rows = {c.comparison: c for c in difficulty_claims("d", {**summary, "contradictory": skipped})}
    row = rows["contradictory - control (raw lpNTK ranking)"]
    assert row.verdict == "not measured" and row.note == skipped and row.n == 0 and math.isnan(row.effect)
    assert len(rows) == 3
    built = "contradictory set built from pool 'all' (candidates per class: [10, 12])"
    assert len(difficulty_claims("d", {**summary, "contradictory": built})) == 2  # built but no areas: no row


def test_forgetting_pruning_small_cluster_and_ld_size_rows():
    runs = [
        {
            "stepwise_f1_entk": 0.9 + 0.01 * i,
            "stepwise_f1_lpntk": 0.5 - 0.01 * i,
            "f1_entk": 0.8,
            "f1_lpntk": 0.6 + 0.001 * i,
        }
        for i in range(4)
    ]
    paper = {"entk": {"f1": (89.96, 7.1)}, "lpntk": {"f1": (49.54, 6.99)}}
    c2 = forgetting_claims("mnist", runs, paper)
    assert c2[0].verdict == "supported" and c2[0].paper_effect == pytest.approx(40.42)
    assert c2[0].effect == pytest.approx(43.0)  # mean of 40, 42, 44, 46

    rows = []
    rng = np.random.default_rng(5)
    for seed in range(5):
        for subset, method, keep, acc in (
            ("full", "full", 1.0, 0.990),
            ("lpntk-k0.5", "lpntk", 0.5, 0.990),
            ("el2n-k0.5", "el2n", 0.5, 0.950),
            ("random-k0.5", "random", 0.5, 0.991),
        ):
            rows.append(
                {
                    "subset": subset,
                    "method": method,
                    "experiment": "table",
                    "keep": keep,
                    "seed": seed,
                    "test_acc_best_val": acc + rng.normal(0, 0.0005),
                }
            )
        for name, method, acc in (
            ("d0.05-small-r0.2", "small_clusters", 0.80),
            ("d0.05-random-r0.2", "random_removal", 0.85),
        ):
            rows.append(
                {
                    "subset": name,
                    "method": method,
                    "experiment": "small_clusters",
                    "keep": 0.8,
                    "seed": seed,
                    "data_fraction": 0.05,
                    "remove": 0.2,
                    "test_acc_best_val": acc + rng.normal(0, 0.001),
                }
            )
    table = pd.DataFrame(rows)
    c3 = {
        c.comparison: c
        for c in pruning_claims("mnist", table, {"full": (99.31, 0.03), "lpntk": (99.37, 0.04), "el2n": (99.33, 0.06)})
    }
    assert c3["lpNTK keeping 0.5 - full set"].claim == "C3a"
    assert c3["lpNTK - el2n keeping 0.5"].verdict == "supported"
    assert c3["lpNTK - random keeping 0.5"].verdict in ("contradicted", "inconclusive at n = 5")
    assert c3["lpNTK - el2n keeping 0.5"].paper_effect == pytest.approx(0.04)
    (c4,) = small_cluster_claims("mnist", table)
    assert c4.verdict == "contradicted" and c4.effect == pytest.approx(-5.0, abs=0.5)

    base = np.random.default_rng(0).normal(size=400)
    ld = np.stack(
        [
            base,
            base + np.random.default_rng(1).normal(0, 0.3, 400),
            base + np.random.default_rng(2).normal(0, 2.0, 400),
        ],
        axis=1,
    )
    (c5,) = ld_size_claims("mnist", ld, [64, 16, 4])
    assert c5.verdict == "supported" and c5.effect > 0.3
    assert ld_size_claims("mnist", ld[:, :2], [64, 16]) == []


def test_claims_stage_reads_the_stage_outputs_and_writes_the_table(tmp_path):
    import json

    from lpntk.stages.claims import claims_stage

    rng = np.random.default_rng(0)
    difficulty = {
        "rankings": ["lpntk", "cosine"],
        "l2_pass": "train",
        "label_purity": {"lpntk/contradictory": 0.1, "cosine/contradictory": 0.1},
        "auc_per_run": {
            f"{r}/{s}": (v + rng.normal(0, 0.05, 12)).tolist()
            for r in ("lpntk", "cosine")
            for s, v in (("easy", 5.0), ("median", 6.0), ("hard", 7.0), ("contradictory", 9.0), ("control", 8.0))
        },
    }
    (tmp_path / "d.json").write_text(json.dumps(difficulty))
    runs = [
        {
            "seed": s,
            "stepwise_f1_entk": 0.9,
            "stepwise_f1_lpntk": 0.5 + 0.01 * s,
            "f1_entk": 0.9,
            "f1_lpntk": 0.4,
            "stepwise_f1_entk_prob": 0.8,
            "stepwise_f1_lpntk_prob": 0.6,
            "f1_entk_prob": 0.7,
            "f1_lpntk_prob": 0.7 + 0.01 * s,
        }
        for s in range(3)
    ]
    (tmp_path / "f.json").write_text(json.dumps({"recipes": {"plain": {"runs": runs}, "official": {"runs": runs}}}))
    outs = {k: str(tmp_path / f"claims.{e}") for k, e in (("csv", "csv"), ("md", "md"), ("summary", "json"))}
    cfg = {"source": "torchvision", "name": "MNIST"}
    table = claims_stage(
        dataset="mnist",
        cfg=cfg,
        outputs=outs,
        difficulty=tmp_path / "d.json",
        forgetting=tmp_path / "f.json",
        mlflow_cfg={"enabled": False},
    )
    c1 = table[table["claim"] == "C1"]
    assert len(c1) == 6 and (c1["verdict"] == "supported").all()  # 3 comparisons x 2 rankings, all clear
    c2 = table[table["claim"] == "C2"].set_index("comparison")
    assert len(c2) == 8  # 2 recipes x 2 spaces x (stepwise, pooled)
    row = c2[c2["metric"].str.startswith("stepwise")].loc["eNTK - lpNTK (plain recipe, logit space)"]
    assert row["verdict"] == "supported" and row["paper_effect"] == pytest.approx(89.96 - 49.54)
    assert (
        table.loc[table["comparison"].str.contains("probability"), "verdict"]
        .str.startswith(("supported", "contradicted", "inconclusive"))
        .all()
    )
    md = open(outs["md"]).read()
    assert "**C1**" in md and "| C2 " in md and "seeds to resolve" in md
    summary = json.loads(open(outs["summary"]).read())
    assert sum(summary["verdicts"].values()) == len(table)

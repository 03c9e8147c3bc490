"""The paper's claims, tested: an effect size with its 95 % interval, a test, and a verdict for each.

Every claim compares two arms that share their seeds (or runs): the same initialisation and data order, so the
differences d_i = a_i - b_i are paired, oriented so that d > 0 is what the paper claims. For n pairs with mean
d_bar and standard deviation s_d:

* **Superiority** (:func:`paired_effect`, paired t-test): the 95 % interval d_bar +- t_{0.975, n-1} s_d / sqrt(n);
  *supported* when it lies above 0, *contradicted* when it lies below 0, else *inconclusive at n = ...*. The t-test
  because the differences are of averages (accuracy over a test set, an area under a curve over epochs and targets,
  F1 over a window) and the interval is the effect size a reader wants; the Wilcoxon signed-rank test cannot reject
  anything below n = 6 (its smallest two-sided p at n = 5 is 1/16), and a sign test wastes the magnitudes.
* **Non-inferiority** (:func:`noninferiority`): d = kept - full with margin m > 0 (stated with each row, e.g. one
  standard deviation of the full set's accuracy over seeds); the one-sided 5 % test is the two-sided 90 % interval:
  *supported* (non-inferior) when its lower end is above -m, *contradicted* (inferior) when its upper end is below
  -m, else inconclusive.
* **Correlations** (:func:`bootstrap_interval`): the percentile interval of a statistic over resampled rows.

Where the slides give the paper's difference delta, :func:`seeds_to_resolve` gives the number of seeds a paired
t-test needs to detect delta with 80 % power at our measured spread s_d: the smallest n whose power
P(|T| > t_{0.975, n-1}), T ~ noncentral t(n - 1, delta sqrt(n) / s_d), reaches 0.80.

The claims (from the slides, ``docs/reference/seed-slides.txt``), one :class:`Claim` row per claim, dataset and
comparison: C1 a target is easier to learn (lower area under its L2-error curve) with more interchangeable company
than with median company, with median than with the least similar, and harder with contradictory company than with
its label-matched control (:func:`difficulty_claims`); C2 eNTK predicts forgetting events better than lpNTK
(:func:`forgetting_claims`); C3a removing lpNTK-redundant samples does not hurt, C3b at the same kept fraction lpNTK
beats EL2N, GraNd, forgetting and random (:func:`pruning_claims`); C4 with 1 % / 5 % of the data, removing the
samples of small lpNTK clusters beats removing as many random ones (:func:`small_cluster_claims`); C5 learning
difficulty agrees less across training sets the more they differ in size (:func:`ld_size_claims`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

__all__ = [
    "Effect",
    "Claim",
    "paired_effect",
    "noninferiority",
    "bootstrap_interval",
    "verdict",
    "seeds_to_resolve",
    "difficulty_claims",
    "forgetting_claims",
    "pruning_claims",
    "small_cluster_claims",
    "ld_size_claims",
    "CLAIM_TEXT",
]

SUPPORTED, CONTRADICTED = "supported", "contradicted"
NOT_MEASURED = "not measured"  # a comparison the config asks for whose arm could not be built (the note says why)

#: One sentence per claim.
CLAIM_TEXT = {
    "C1": "A target sample is easier to learn with more interchangeable company, harder with contradictory company.",
    "C2": "eNTK predicts forgetting events better than lpNTK.",
    "C3a": "Removing lpNTK-redundant samples does not hurt test accuracy.",
    "C3b": "At the same kept fraction, lpNTK pruning beats EL2N, GraNd, forgetting scores and random pruning.",
    "C4": "With 1 % / 5 % of the data, removing small lpNTK clusters beats removing as many random samples.",
    "C5": "A sample's learning difficulty agrees less across training sets the more they differ in size.",
}


@dataclass
class Effect:
    """A paired effect: the mean difference, its interval, the pair count and spread, the test's p-value."""

    mean: float
    low: float
    high: float
    n: int
    sd: float
    p: float
    test: str
    level: float = 0.95


@dataclass
class Claim:
    """One row of the claims table."""

    claim: str  # C1, C2, ...
    dataset: str
    comparison: str  # what against what, e.g. "median - easy (lpNTK ranking)"
    metric: str  # what is measured and its unit, e.g. "area under the targets' L2 curve"
    effect: float
    low: float
    high: float
    n: int
    test: str
    p: float
    verdict: str
    margin: float | None = None
    paper_effect: float | None = None
    seeds_to_resolve: int | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    def row(self) -> dict:
        out = asdict(self)
        out.pop("extra")
        out["statement"] = CLAIM_TEXT.get(self.claim, "")
        return {**out, **self.extra}


def _pairs(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples differ in shape: {a.shape} vs {b.shape}")
    d = a - b
    return d[np.isfinite(d)]


def paired_effect(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Effect:
    """Mean of d = a - b over the pairs with its ``level`` t-interval and the two-sided paired t-test's p-value.

    One pair: no spread, the interval is infinite. All differences equal (s_d = 0): the interval is that value and p
    is 0 (or 1 when it is 0)."""
    d = _pairs(a, b)
    n = len(d)
    if n == 0:
        return Effect(math.nan, math.nan, math.nan, 0, math.nan, math.nan, "paired t-test", level)
    mean = float(d.mean())
    if n == 1:
        return Effect(mean, -math.inf, math.inf, 1, math.nan, math.nan, "paired t-test", level)
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return Effect(mean, mean, mean, n, 0.0, 1.0 if mean == 0 else 0.0, "paired t-test", level)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    p = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    return Effect(mean, mean - half, mean + half, n, sd, p, "paired t-test", level)


def verdict(low: float, high: float, n: int, threshold: float = 0.0) -> str:
    """``supported`` when the interval lies above ``threshold``, ``contradicted`` when below, else inconclusive."""
    if low > threshold:
        return SUPPORTED
    if high < threshold:
        return CONTRADICTED
    return f"inconclusive at n = {n}"


def noninferiority(kept: Sequence[float], full: Sequence[float], margin: float) -> tuple[Effect, str]:
    """Is ``kept`` no worse than ``full`` by more than ``margin``? One-sided 5 % test via the 90 % interval."""
    eff = paired_effect(kept, full, level=0.90)
    eff.test = "paired t, one-sided 5 % non-inferiority"
    if not np.isfinite(margin) or margin <= 0:
        return eff, f"inconclusive at n = {eff.n} (no margin: fewer than 2 seeds of the full set)"
    return eff, verdict(eff.low, eff.high, eff.n, threshold=-margin)


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float], rows: np.ndarray, *, level: float = 0.95, draws: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """The statistic of ``rows`` and its percentile bootstrap interval over ``draws`` resamplings of the rows."""
    rows = np.asarray(rows)
    rng = np.random.default_rng(seed)
    value = float(statistic(rows))
    boot = np.array([statistic(rows[rng.integers(0, len(rows), len(rows))]) for _ in range(draws)])
    boot = boot[np.isfinite(boot)]
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]) if boot.size else (math.nan, math.nan)
    return value, float(lo), float(hi)


def seeds_to_resolve(
    delta: float | None, sd: float, power: float = 0.80, alpha: float = 0.05, limit: int = 100_000
) -> int | None:
    """Seeds a two-sided paired t-test at ``alpha`` needs to detect a true difference ``delta`` with ``power``, at
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

    n = 2
    while n <= 10_000:
        if reached(n):
            return n
        n += 1
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)  # huge n: the normal approximation is exact enough
    n = math.ceil((z / ratio) ** 2)
    return n if n <= limit else limit + 1


def _claim(
    cid: str,
    dataset: str,
    comparison: str,
    metric: str,
    eff: Effect,
    *,
    paper: float | None = None,
    note: str = "",
    decided: str | None = None,
    margin: float | None = None,
    **extra,
) -> Claim:
    return Claim(
        claim=cid,
        dataset=dataset,
        comparison=comparison,
        metric=metric,
        effect=eff.mean,
        low=eff.low,
        high=eff.high,
        n=eff.n,
        test=eff.test,
        p=eff.p,
        verdict=decided if decided is not None else verdict(eff.low, eff.high, eff.n),
        margin=margin,
        paper_effect=paper,
        seeds_to_resolve=seeds_to_resolve(paper, eff.sd),
        note=note,
        extra=extra,
    )


# ---------------------------------------------------------------------------------------------- the claims


def difficulty_claims(dataset: str, summary: Mapping) -> list[Claim]:
    """C1 from the difficulty stage's summary: per ranking, median - easy and hard - median (areas per run: lower is
    easier, so d > 0 supports), contradictory - control (the label-matched control)."""
    areas = {k: np.asarray(v, dtype=np.float64) for k, v in summary["auc_per_run"].items()}
    purity = summary.get("label_purity", {})
    metric = f"area under the targets' L2-error curve ({summary.get('l2_pass', 'train')} pass), per run"
    out = []
    for ranking in summary["rankings"]:
        name = "raw lpNTK" if ranking == "lpntk" else "lpNTK cosine"
        for hi, lo in (("median", "easy"), ("hard", "median"), ("contradictory", "control")):
            a, b = areas.get(f"{ranking}/{hi}"), areas.get(f"{ranking}/{lo}")
            skipped = str(summary.get("contradictory", ""))
            if hi == "contradictory" and a is None and skipped.startswith("contradictory set skipped"):
                # asked for but not built (too few negative-lpNTK samples): a row that says so, not a silent gap
                nothing = Effect(math.nan, math.nan, math.nan, 0, math.nan, math.nan, "-")
                comparison = f"{hi} - {lo} ({name} ranking)"
                out.append(_claim("C1", dataset, comparison, metric, nothing, note=skipped, decided=NOT_MEASURED))
            if a is None or b is None:
                continue
            note = ""
            if hi == "contradictory":
                note = (
                    f"label purity {purity.get(f'{ranking}/{hi}', math.nan):.0%} for both arms (the control "
                    "matches the contradictory arm's labels)"
                )
            out.append(_claim("C1", dataset, f"{hi} - {lo} ({name} ranking)", metric, paired_effect(a, b), note=note))
    return out


def forgetting_claims(
    dataset: str, runs: Sequence[Mapping], paper: Mapping | None, recipe: str = "", space: str = "logit"
) -> list[Claim]:
    """C2 from the forgetting runs' per-seed summaries: F1(eNTK) - F1(lpNTK) in % points, paired over seeds, with the
    official per-step averaging (the slides') and pooled over the window, judged in ``space`` (logit, or the
    official code's probability space: the summaries' keys with ``_prob``)."""
    sfx = "_prob" if space == "probability" else ""
    delta = None
    if paper and "entk" in paper and "lpntk" in paper:
        delta = paper["entk"]["f1"][0] - paper["lpntk"]["f1"][0]
    out = []
    for prefix, scoring in (("stepwise_", "stepwise F1 (the slides' averaging)"), ("", "pooled F1")):
        a = [100.0 * _num(r.get(f"{prefix}f1_entk{sfx}")) for r in runs]
        b = [100.0 * _num(r.get(f"{prefix}f1_lpntk{sfx}")) for r in runs]
        label = f"eNTK - lpNTK ({', '.join(x for x in (recipe and f'{recipe} recipe', f'{space} space') if x)})"
        out.append(
            _claim("C2", dataset, label, f"{scoring}, % points", paired_effect(a, b), paper=delta if prefix else None)
        )
    return out


def _num(v) -> float:
    return math.nan if v is None else float(v)


def _by_seed(runs, subset: str, metric: str) -> dict[int, float]:
    rows = runs[runs["subset"] == subset]
    return {int(s): float(v) for s, v in zip(rows["seed"], rows[metric], strict=True)}


def _paired(x: Mapping[int, float], y: Mapping[int, float]) -> tuple[list[float], list[float]]:
    seeds = sorted(set(x) & set(y))
    return [x[s] for s in seeds], [y[s] for s in seeds]


def pruning_claims(dataset: str, runs, paper: Mapping | None, metric: str = "test_acc_best_val") -> list[Claim]:
    """C3a and C3b from the retraining runs (a table with subset, method, experiment, keep, seed and ``metric`` in
    [0, 1]): per kept fraction, lpNTK vs the full set (non-inferiority, margin one standard deviation of the full set's
    accuracy over seeds) and lpNTK vs each baseline at the same fraction (superiority), in % points."""
    table = runs[runs["experiment"] == "table"]
    unit = f"{metric.replace('_', ' ')}, % points"
    full = {s: 100 * v for s, v in _by_seed(table, "full", metric).items()}
    margin = float(np.std(list(full.values()), ddof=1)) if len(full) > 1 else math.nan
    out = []
    lp = table[table["method"] == "lpntk"]
    for keep in sorted({float(k) for k in lp["keep"]}, reverse=True):
        name = lp[np.isclose(lp["keep"].astype(float), keep)]["subset"].iloc[0]
        kept = {s: 100 * v for s, v in _by_seed(table, name, metric).items()}
        a, b = _paired(kept, full)
        eff, decided = noninferiority(a, b, margin)
        paper_delta = paper["lpntk"][0] - paper["full"][0] if paper and "full" in paper else None
        out.append(
            _claim(
                "C3a",
                dataset,
                f"lpNTK keeping {keep:g} - full set",
                unit,
                eff,
                decided=decided,
                margin=margin,
                note=f"margin = one std of the full set over seeds = {margin:.3f}",
                paper=paper_delta,
                keep=keep,
            )
        )
        for base in ("el2n", "grand", "forgetting", "random"):
            rows = table[(table["method"] == base) & np.isclose(table["keep"].astype(float), keep)]
            if not len(rows):
                continue
            other = {s: 100 * v for s, v in _by_seed(table, rows["subset"].iloc[0], metric).items()}
            a, b = _paired(kept, other)
            delta = paper["lpntk"][0] - paper[base][0] if paper and base in paper else None
            out.append(
                _claim(
                    "C3b",
                    dataset,
                    f"lpNTK - {base} keeping {keep:g}",
                    unit,
                    paired_effect(a, b),
                    paper=delta,
                    keep=keep,
                )
            )
    return out


def small_cluster_claims(dataset: str, runs, metric: str = "test_acc_best_val") -> list[Claim]:
    """C4: per data fraction, removed share and kernel, removing small clusters vs removing as many random samples
    (the ``small_clusters`` and ``random_removal`` subsets of the same base), paired over seeds, in % points."""
    small = runs[runs["experiment"] == "small_clusters"]
    out = []
    for name in sorted(set(small.loc[small["method"] == "small_clusters", "subset"])):
        control = name.replace("-small-", "-random-")
        if control not in set(small["subset"]):
            continue
        row = small[small["subset"] == name].iloc[0]
        a, b = _paired(_by_seed(small, name, metric), _by_seed(small, control, metric))
        kernel = row.get("kernel", "full")
        eff = paired_effect(100 * np.asarray(a), 100 * np.asarray(b))
        out.append(
            _claim(
                "C4",
                dataset,
                f"{name} - {control}",
                f"{metric.replace('_', ' ')}, % points",
                eff,
                note=f"kernel of the {'full-data model' if kernel == 'full' else 'model trained on the subset'}",
                data_fraction=float(row["data_fraction"]),
                remove=float(row["remove"]),
            )
        )
    return out


def ld_size_claims(dataset: str, ld: np.ndarray, sizes: Sequence[int], seed: int = 0) -> list[Claim]:
    """C5 from the learning difficulty of each pool sample at each size (``ld`` (N, S), sizes descending): the
    Pearson correlation with the largest size falls from the next size to the smallest, r(s_0, s_1) - r(s_0, s_min),
    with a bootstrap interval over samples. Needs three sizes or more."""
    ld = np.asarray(ld, dtype=np.float64)
    if ld.shape[1] < 3:
        return []

    def drop(rows: np.ndarray) -> float:
        c = np.corrcoef(rows[:, [0, 1, -1]].T)
        return float(c[0, 1] - c[0, 2])

    value, lo, hi = bootstrap_interval(drop, ld, seed=seed)
    eff = Effect(value, lo, hi, len(ld), math.nan, math.nan, "bootstrap over samples (2,000 draws)")
    return [
        _claim(
            "C5",
            dataset,
            f"r(LD at {sizes[0]}, at {sizes[1]}) - r(at {sizes[0]}, at {sizes[-1]}) per class",
            "Pearson correlation of per-sample learning difficulty",
            eff,
        )
    ]

"""The family of one claim: its rows (:class:`Claim`), the declared design, and how the rows are settled --
the primary by its own test (several components: intersection-union), the secondary family by Holm, the exploratory
rows shown and never counted."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..inference import (
    NOT_MEASURED,
    PROVISIONAL,
    SUPPORTED,
    Test,
    decide,
    holm,
    intersection_union,
)

__all__ = [
    "CLAIM_TEXT",
    "CLAIM_STAGE",
    "DEFAULT_DESIGN",
    "Claim",
    "design_for",
    "make_row",
    "not_measured_row",
    "not_run_claims",
    "settle",
    "headlines",
    "check_dropped",
]

NOT_RUN = "not run: stage off"
PRIMARY, COMPONENT, SECONDARY, EXPLORATORY = "primary", "primary component", "secondary", "exploratory"

#: One sentence per claim.
CLAIM_TEXT = {
    "C1": "A target sample is easier to learn with more interchangeable company, harder with contradictory company.",
    "C2": "eNTK predicts forgetting events better than lpNTK.",
    "C3a": "Removing lpNTK-redundant samples does not hurt test accuracy.",
    "C3b": "At the same kept fraction, lpNTK pruning beats EL2N, GraNd, forgetting scores and random pruning.",
    "C4": "With little data (1 % / 5 % in the paper), removing small lpNTK clusters beats random removal of as many.",
    "C5": "A sample's learning difficulty agrees less across training sets the more they differ in size.",
}

#: The stage (config block and key) each claim needs; a claim whose stage is off gets a "not run" row.
CLAIM_STAGE = {
    "C1": "difficulty.enabled",
    "C2": "forgetting.enabled",
    "C3a": "pruning.enabled",
    "C3b": "pruning.enabled",
    "C4": "pruning.small_clusters.enabled",
    "C5": "difficulty.size.enabled",
}

#: The design when a dataset's ``claims`` block leaves a key out (the schema states the same defaults).
DEFAULT_DESIGN = {
    "alpha": 0.05,
    "min_n": 5,
    "max_dropped_share": 0.2,
    "C1": {"ranking": "lpntk"},
    "C2": {"recipe": "plain", "space": "logit", "min_events": 30},
    "C3a": {"keep": None, "margin": 0.2},  # keep None: the lpNTK fraction run nearest 0.9
    "C3b": {"keep": None},  # None: the fraction run nearest 0.5
    "C4": {"data_fraction": None, "remove": None, "kernel": "full"},
}


def design_for(cfg: Mapping | None) -> dict:
    """The declared design of one dataset block (its ``claims`` block over :data:`DEFAULT_DESIGN`)."""
    given = dict((cfg or {}).get("claims") or {})
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in DEFAULT_DESIGN.items()}
    for k, v in given.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, Mapping) else v
    return out


@dataclass
class Claim:
    """One row of the claims table."""

    claim: str  # C1, C2, ...
    dataset: str
    comparison: str  # what against what, e.g. "median - easy (lpNTK ranking)"
    metric: str  # what is measured and its unit
    effect: float
    low: float
    high: float
    n: int
    test: str
    p: float
    verdict: str = ""
    role: str = SECONDARY
    unit: str = "seed"
    p_adj: float = math.nan
    level: float = 0.95
    baseline: str = ""  # the trivial baseline beside the metric
    margin: float | None = None
    paper_effect: float | None = None
    seeds_to_resolve: int | None = None
    dropped: int = 0
    note: str = ""
    extra: dict = field(default_factory=dict)
    result: Test | None = field(default=None, repr=False)

    def row(self) -> dict:
        out = asdict(self)
        out.pop("extra")
        out.pop("result")
        extra = {k: v for k, v in self.extra.items() if k not in ("primary_label", "forced_verdict")}
        out["statement"] = CLAIM_TEXT.get(self.claim, "")
        return {**out, **extra}


def make_row(cid: str, dataset: str, comparison: str, metric: str, t: Test, *, role: str, unit: str, **kw) -> Claim:
    extra = kw.pop("extra", {})
    return Claim(
        claim=cid,
        dataset=dataset,
        comparison=comparison,
        metric=metric,
        effect=t.mean,
        low=t.low,
        high=t.high,
        n=t.n,
        test=t.test,
        p=t.p,
        role=role,
        unit=unit,
        level=t.level,
        margin=t.margin,
        dropped=t.dropped,
        result=t,
        extra=extra,
        **kw,
    )


def not_measured_row(cid: str, dataset: str, comparison: str, metric: str, note: str, role: str, unit: str) -> Claim:
    t = Test(math.nan, math.nan, math.nan, 0, math.nan, math.nan, "-", min_p=1.0)
    row = make_row(cid, dataset, comparison, metric, t, role=role, unit=unit, note=note)
    row.verdict = NOT_MEASURED
    return row


# ---------------------------------------------------------------------------------------------- settling a family


def settle(rows: Sequence[Claim], design: Mapping) -> list[Claim]:
    """Verdicts for the rows of one claim and dataset: the primary row by its own test (several components: the
    intersection-union row added before them), the secondary rows by Holm-adjusted p over the secondary family,
    exploratory rows by their raw p (shown, never counted)."""
    alpha, min_n = float(design["alpha"]), int(design["min_n"])
    rows = list(rows)
    comps = [r for r in rows if r.role == COMPONENT and r.result is not None]  # a not-measured one: n = 0
    out: list[Claim] = []
    if comps:
        verdict, p = intersection_union([r.result for r in comps], alpha=alpha, min_n=min_n)
        lead = comps[0]
        worst = min(comps, key=lambda r: r.effect if np.isfinite(r.effect) else -math.inf)
        iut = Claim(
            claim=lead.claim,
            dataset=lead.dataset,
            comparison=lead.extra.get("primary_label", " and ".join(r.comparison for r in comps)),
            metric=lead.metric + "; effect and interval of the weakest component",
            effect=worst.effect,
            low=worst.low,
            high=worst.high,
            n=min(r.n for r in comps),
            test=f"intersection-union of {len(comps)} tests ({comps[0].test}), each at {alpha:g}",
            p=p,
            verdict=verdict,
            role=PRIMARY,
            unit=lead.unit,
            level=lead.level,
            margin=lead.margin,
            baseline="the components' rows",
            note=f"supported only if every component is; contradicted if one is at {alpha:g}/{len(comps)}",
        )
        out.append(iut)
    for r in rows:
        if r.verdict in (NOT_MEASURED, NOT_RUN) or r.result is None:
            r.verdict = r.verdict or NOT_MEASURED
        elif r.role in (PRIMARY, COMPONENT, EXPLORATORY):
            r.verdict = _overruled(r, decide(r.result, alpha=alpha, min_n=min_n))
    sec = [r for r in rows if r.role == SECONDARY and r.result is not None and r.verdict not in (NOT_MEASURED,)]
    adj = holm([r.p for r in sec])
    adj_against = holm([r.result.p_against if r.result.kind == "non-inferiority" else math.nan for r in sec])
    for r, pa, pb in zip(sec, adj, adj_against, strict=True):
        r.p_adj = float(pa)
        against = pb if np.isfinite(pb) else None
        r.verdict = _overruled(r, decide(r.result, alpha=alpha, min_n=min_n, p=pa, p_against=against))
    order = {PRIMARY: 0, COMPONENT: 1, SECONDARY: 2, EXPLORATORY: 3}
    return out + sorted(rows, key=lambda r: order.get(r.role, 4))


def _overruled(row: Claim, computed: str) -> str:
    """A builder's verdict that overrules the test (C2's "too few events", C5's "no test"), except where the test
    is itself no verdict (provisional, not measured), which says more."""
    forced = row.extra.pop("forced_verdict", None)
    return computed if forced is None or computed in (PROVISIONAL, NOT_MEASURED) else forced


def headlines(rows: Sequence[Claim]) -> list[dict]:
    """One line per claim and dataset: the primary verdict and how many secondary comparisons Holm supports."""
    out = []
    keys = list(dict.fromkeys((r.claim, r.dataset) for r in rows))
    for cid, ds in keys:
        mine = [r for r in rows if r.claim == cid and r.dataset == ds]
        prim = next((r for r in mine if r.role == PRIMARY), None)
        sec = [r for r in mine if r.role == SECONDARY and r.verdict != NOT_MEASURED]
        k = sum(r.verdict == SUPPORTED for r in sec)
        out.append(
            {
                "claim": cid,
                "dataset": ds,
                "primary": prim.comparison if prim else "",
                "verdict": prim.verdict if prim else NOT_MEASURED + ": the declared primary was not run",
                "effect": prim.effect if prim else math.nan,
                "low": prim.low if prim else math.nan,
                "high": prim.high if prim else math.nan,
                "n": prim.n if prim else 0,
                "unit": prim.unit if prim else "",
                "p": prim.p if prim else math.nan,
                "secondary": f"{k} of {len(sec)} secondary comparisons supported after Holm" if sec else "",
            }
        )
    return out


def check_dropped(rows: Sequence[Claim], max_share: float) -> None:
    """Stop when a decided comparison (primary, component or secondary) lost more than ``max_share`` of its pairs
    to a non-finite value; exploratory rows only count theirs (an F1 is undefined in a window without events)."""
    for r in rows:
        if r.role == EXPLORATORY:
            continue
        total = r.n + r.dropped
        if total and r.dropped / total > max_share:
            raise ValueError(
                f"claims: {r.claim} '{r.comparison}' ({r.dataset}) dropped {r.dropped} of {total} pairs for a "
                f"non-finite value, more than claims.max_dropped_share = {max_share:g}: look at the stage outputs "
                "for NaN (a diverged run, an undefined score), or raise the share in the config"
            )


def not_run_claims(dataset: str, claims: Sequence[str]) -> list[Claim]:
    """A "not run" row for each claim whose stage is switched off, naming the key that switches it on."""
    out = []
    for cid in claims:
        row = not_measured_row(cid, dataset, "-", "-", f"set {CLAIM_STAGE[cid]} to run it", PRIMARY, "-")
        row.verdict = NOT_RUN
        row.result = None
        out.append(row)
    return out

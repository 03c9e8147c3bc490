"""C2: eNTK vs lpNTK forgetting prediction, on MCC."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..forgetting._scores import TRIVIAL_PREDICTORS
from ..inference import (
    INCONCLUSIVE,
    paired_test,
    seeds_to_resolve,
)
from ._family import EXPLORATORY, PRIMARY, SECONDARY, Claim, design_for, make_row


def _num(v) -> float:
    return math.nan if v is None else float(v)


def _trivial(runs: Sequence[Mapping], key: str) -> str:
    """The trivial predictors' mean score (x 100) over seeds on one metric key (``{key}_{none,all,random}``)."""
    parts = []
    for name in TRIVIAL_PREDICTORS:
        v = [_num(r.get(f"{key}_{name}")) for r in runs]
        v = [x for x in v if np.isfinite(x)]
        parts.append(f"{name} {100 * np.mean(v):.1f}" if v else f"{name} n/a")
    return "trivial predictors: " + ", ".join(parts)


def forgetting_claims(
    dataset: str,
    recipes: Mapping[str, Sequence[Mapping]],
    paper: Mapping | None = None,
    design: Mapping | None = None,
) -> list[Claim]:
    """C2 from the forgetting runs' per-seed summaries (``recipes[name]`` = the seeds' dicts): MCC(eNTK) - MCC(lpNTK)
    x 100 paired over seeds per recipe and decision space (the declared one primary, the others secondary), the
    pooled and the slides' stepwise F1 as exploratory rows; the trivial predictors beside each metric."""
    design = design_for({"claims": design or {}})
    c2 = design["C2"]
    min_events = int(c2["min_events"])
    delta = None
    if paper and "entk" in paper and "lpntk" in paper:
        delta = paper["entk"]["f1"][0] - paper["lpntk"]["f1"][0]
    rows: list[Claim] = []
    for recipe, runs in recipes.items():
        events = [int(_num(r.get("n_true_events"))) if np.isfinite(_num(r.get("n_true_events"))) else 0 for r in runs]
        few = [e for e in events if e < min_events]
        counts = f"true events per seed {min(events) if events else 0}-{max(events) if events else 0}"
        for space in ("logit", "probability"):
            sfx = "_prob" if space == "probability" else ""
            label = f"eNTK - lpNTK ({recipe} recipe, {space} space)"
            primary = recipe == c2["recipe"] and space == c2["space"]
            for prefix, scoring, role in (
                ("mcc", "MCC over the window's (step, candidate) pairs, x 100", PRIMARY if primary else SECONDARY),
                ("f1", "event-class F1 pooled over the window, % points", EXPLORATORY),
                ("stepwise_f1", "stepwise F1 (the slides' averaging), % points", EXPLORATORY),
            ):
                a = [100.0 * _num(r.get(f"{prefix}_entk{sfx}")) for r in runs]
                b = [100.0 * _num(r.get(f"{prefix}_lpntk{sfx}")) for r in runs]
                t = paired_test(a, b, level=1 - float(design["alpha"]))
                row = make_row(
                    "C2",
                    dataset,
                    label,
                    scoring,
                    t,
                    role=role,
                    unit="seed",
                    baseline=_trivial(runs, prefix),
                    paper_effect=delta if prefix == "stepwise_f1" else None,
                    seeds_to_resolve=seeds_to_resolve(delta, t.sd) if prefix == "stepwise_f1" else None,
                    note=counts,
                    extra={"recipe": recipe, "space": space, "min_events": min(events) if events else 0},
                )
                if few and role != EXPLORATORY:
                    row.extra["forced_verdict"] = f"{INCONCLUSIVE}: too few events"
                    row.note += f"; {len(few)} of {len(events)} seeds below the minimum of {min_events}"
                rows.append(row)
    return rows

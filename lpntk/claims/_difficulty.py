"""C1: company and learning difficulty, across targets."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..inference import (
    paired_test,
)
from ._family import COMPONENT, EXPLORATORY, SECONDARY, Claim, design_for, make_row, not_measured_row

_C1_PAIRS = (("median", "easy"), ("hard", "median"), ("contradictory", "control"))


def _ranking_name(ranking: str) -> str:
    return "raw lpNTK" if ranking == "lpntk" else "lpNTK cosine"


def difficulty_claims(dataset: str, summary: Mapping, design: Mapping | None = None) -> list[Claim]:
    """C1 from the difficulty stage's summary. Across targets (``per_target``: each target's area averaged over its
    runs; the random targets when there are any, else every target) for the decision; across the runs of the paper's
    targets (``auc_per_run``) as exploratory rows. Lower area is easier, so d = area(hi) - area(lo) > 0 supports."""
    design = design_for({"claims": design or {}})
    skipped = str(summary.get("contradictory", ""))
    metric = f"area under the target's L2-error curve ({summary.get('l2_pass', 'train')} pass)"
    rows = _per_target_rows(dataset, summary, design, metric, skipped) if summary.get("per_target") else []
    return rows + _per_run_rows(dataset, summary, metric, skipped)


def _per_target_rows(dataset: str, summary: Mapping, design: Mapping, metric: str, skipped: str) -> list[Claim]:
    """C1's decision rows: for every ranking and pair of arms, the paired test across the chosen targets (the random
    ones when there are any), each target's area averaged over its runs."""
    targets = summary["per_target"]["targets"]
    chosen = [i for i, t in enumerate(targets) if t.get("kind") == "random"] or list(range(len(targets)))
    kind = "random" if any(targets[i].get("kind") == "random" for i in chosen) else "paper's (max_self)"
    rows: list[Claim] = []
    for ranking in summary["rankings"]:
        for hi, lo in _C1_PAIRS:
            row = _per_target_row(dataset, summary, design, ranking, (hi, lo), chosen, kind, metric, skipped)
            if row is not None:
                rows.append(row)
    return rows


def _per_target_row(
    dataset: str,
    summary: Mapping,
    design: Mapping,
    ranking: str,
    arms: tuple[str, str],
    chosen: list[int],
    kind: str,
    metric: str,
    skipped: str,
) -> Claim | None:
    """One decision row: arm ``hi`` - arm ``lo`` under ``ranking`` across the ``chosen`` targets (a not-measured row
    when an arm was not built; None for the contradictory arm skipped for another reason)."""
    hi, lo = arms
    auc, purity = summary["per_target"]["auc"], summary.get("label_purity", {})
    primary_ranking = design["C1"]["ranking"]
    a, b = auc.get(f"{ranking}/{hi}"), auc.get(f"{ranking}/{lo}")
    comparison = f"{hi} - {lo} ({_ranking_name(ranking)} ranking)"
    ordering = hi != "contradictory"
    role = COMPONENT if (ranking == primary_ranking and ordering) else SECONDARY
    if a is None or b is None:
        if hi != "contradictory" or skipped.startswith("contradictory set skipped"):
            why = skipped if hi == "contradictory" else f"the {hi} or {lo} arm was not trained"
            return not_measured_row("C1", dataset, comparison, metric, why, role, "target")
        return None
    built = [i for i in chosen if a[i] is not None and b[i] is not None]  # an arm skipped for a group
    if not built:
        why = skipped or f"the {hi} arm was built for none of the {kind} targets' groups"
        return not_measured_row("C1", dataset, comparison, metric, why, role, "target")
    ma = np.array([_mean_or_nan(a[i]) for i in built])
    mb = np.array([_mean_or_nan(b[i]) for i in built])
    t = paired_test(ma, mb, level=1 - float(design["alpha"]))
    d = ma - mb
    agree = float(np.mean(d[np.isfinite(d)] > 0)) if np.isfinite(d).any() else math.nan
    note = f"{t.n} {kind} targets, each averaged over its runs; {agree:.0%} of targets agree with the claim"
    if len(built) < len(chosen):
        note += f"; {len(chosen) - len(built)} targets' groups could not build the {hi} arm"
    if hi == "contradictory":
        note += f"; label purity {purity.get(f'{ranking}/{hi}', math.nan):.0%} in both arms"
    return make_row(
        "C1",
        dataset,
        comparison,
        metric + ", mean over runs, per target",
        t,
        role=role,
        unit="target",
        baseline="0 (no effect of the company)",
        note=note,
        extra={
            "share_agree": agree,
            "primary_label": f"median - easy and hard - median ({_ranking_name(primary_ranking)} "
            "ranking): the targets' difficulty follows the ordering",
        },
    )


def _per_run_rows(dataset: str, summary: Mapping, metric: str, skipped: str) -> list[Claim]:
    """C1's exploratory rows: the paired test across runs of the mean area over the paper's targets (runs share the
    targets, so they are not independent replicates of the claim)."""
    rows: list[Claim] = []
    areas = {k: np.asarray(v, dtype=np.float64) for k, v in summary.get("auc_per_run", {}).items()}
    for ranking in summary["rankings"]:
        for hi, lo in _C1_PAIRS:
            a, b = areas.get(f"{ranking}/{hi}"), areas.get(f"{ranking}/{lo}")
            comparison = f"{hi} - {lo} ({_ranking_name(ranking)} ranking), across runs"
            if a is None or b is None:
                if (
                    hi == "contradictory"
                    and skipped.startswith("contradictory set skipped")
                    and not summary.get("per_target")
                ):
                    rows.append(not_measured_row("C1", dataset, comparison, metric, skipped, EXPLORATORY, "run"))
                continue
            rows.append(
                make_row(
                    "C1",
                    dataset,
                    comparison,
                    metric + ", mean over the paper's targets, per run",
                    paired_test(a, b),
                    role=EXPLORATORY,
                    unit="run",
                    baseline="0",
                    note="runs share the same targets: not independent replicates of the claim",
                )
            )
    return rows


def _mean_or_nan(values) -> float:
    if values is None:
        return math.nan
    v = np.asarray([math.nan if x is None else x for x in values], dtype=np.float64)
    return float(v.mean()) if v.size and np.isfinite(v).all() else math.nan

"""C3a, C3b and C4: pruning and small-cluster removal."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..inference import (
    noninferiority_test,
    paired_test,
    seeds_to_resolve,
    seeds_to_show_noninferiority,
)
from ..methods import baselines
from ._family import COMPONENT, PRIMARY, SECONDARY, Claim, design_for, make_row, not_measured_row


def _by_seed(runs, mask, metric: str) -> dict[int, float]:
    rows = runs[mask]
    return {int(s): 100.0 * float(v) for s, v in zip(rows["seed"], rows[metric], strict=True)}


def _paired(x: Mapping[int, float], y: Mapping[int, float]) -> tuple[list[float], list[float]]:
    seeds = sorted(set(x) & set(y))
    return [x[s] for s in seeds], [y[s] for s in seeds]


def _mean_pct(x: Mapping[int, float]) -> str:
    return f"{np.mean(list(x.values())):.2f}" if x else "n/a"


def _count(items: Sequence) -> str:
    """A count in words up to nine (the claims' rows read "each of the four baselines")."""
    words = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    return words[len(items)] if len(items) < len(words) else str(len(items))


def _declared(value, run: Sequence[float], target: float) -> float:
    """The declared value, else (None) the entry of ``run`` nearest ``target`` (the larger on a tie)."""
    if value is not None:
        return float(value)
    return min(sorted(run, reverse=True), key=lambda k: abs(k - target)) if run else math.nan


def pruning_claims(
    dataset: str, runs, paper: Mapping | None = None, design: Mapping | None = None, metric: str = "test_acc_best_val"
) -> list[Claim]:
    """C3a and C3b from the retraining runs (a table with method, experiment, keep, seed and ``metric`` in [0, 1]; in
    % points here): non-inferiority of lpNTK to the full set (declared margin) per kept fraction, lpNTK against each
    baseline per kept fraction; the declared kept fraction's comparisons are primary."""
    design = design_for({"claims": design or {}})
    table = runs[runs["experiment"] == "table"]
    lp_keeps = sorted({float(k) for k in table.loc[table["method"] == "lpntk", "keep"]}, reverse=True)
    bases = baselines()  # the paper's four: EL2N, GraNd, forgetting, random
    ran = [{float(k) for k in table.loc[table["method"] == b, "keep"]} for b in bases]
    base_keeps = sorted(set.intersection(*[k for k in ran if k] or [set()])) or lp_keeps  # every baseline's keeps
    margin, alpha = float(design["C3a"]["margin"]), float(design["alpha"])
    level = 1 - alpha
    keep_a = _declared(design["C3a"]["keep"], lp_keeps, 0.9)
    keep_b = _declared(design["C3b"]["keep"], base_keeps, 0.5)
    primary_label = f"lpNTK - each of the {_count(bases)} baselines keeping {keep_b:g}"
    unit_text = f"{metric.replace('_', ' ')}, % points"
    keeps_col = table["keep"].astype(float)
    full = _by_seed(table, table["method"] == "full", metric)
    out: list[Claim] = []
    for keep in lp_keeps:
        at = np.isclose(keeps_col, keep)
        kept = _by_seed(table, (table["method"] == "lpntk") & at, metric)
        a, b = _paired(kept, full)
        t = noninferiority_test(a, b, margin, alpha=alpha)
        paper_delta = paper["lpntk"][0] - paper["full"][0] if paper and "full" in paper and "lpntk" in paper else None
        out.append(
            make_row(
                "C3a",
                dataset,
                f"lpNTK keeping {keep:g} - full set",
                unit_text,
                t,
                role=PRIMARY if math.isclose(keep, keep_a) else SECONDARY,
                unit="seed",
                baseline=f"full set {_mean_pct(full)}, lpNTK {_mean_pct(kept)}",
                paper_effect=paper_delta,
                seeds_to_resolve=seeds_to_show_noninferiority(paper_delta, t.sd, margin, alpha=alpha),
                note=f"margin {margin:g} % points declared in the config (claims.C3a.margin)",
                extra={"keep": keep},
            )
        )
        for base in bases:
            other = _by_seed(table, (table["method"] == base) & at, metric)
            primary = math.isclose(keep, keep_b)
            label = f"lpNTK - {base} keeping {keep:g}"
            if not other:  # a component of the primary that was not run makes the primary not measured
                if primary:
                    why = f"{base} was not retrained at keep {keep:g} (pruning.methods)"
                    row = not_measured_row("C3b", dataset, label, unit_text, why, COMPONENT, "seed")
                    row.extra["primary_label"] = primary_label
                    out.append(row)
                continue
            a, b = _paired(kept, other)
            t = paired_test(a, b, level=level)
            delta = paper["lpntk"][0] - paper[base][0] if paper and base in paper and "lpntk" in paper else None
            out.append(
                make_row(
                    "C3b",
                    dataset,
                    label,
                    unit_text,
                    t,
                    role=COMPONENT if primary else SECONDARY,
                    unit="seed",
                    baseline=f"{base} {_mean_pct(other)}, lpNTK {_mean_pct(kept)}",
                    paper_effect=delta,
                    seeds_to_resolve=seeds_to_resolve(delta, t.sd, alpha=alpha),
                    extra={"keep": keep, "primary_label": primary_label},
                )
            )
    return out


def small_cluster_claims(dataset: str, runs, design: Mapping | None = None, metric: str = "test_acc_best_val"):
    """C4: per data fraction, removed share and kernel, removing small clusters vs removing as many random samples
    (the ``small_clusters`` and ``random_removal`` subsets of the same base), paired over seeds, in % points; the
    declared (data fraction, removal, kernel) primary -- by default the smallest fraction and removal run."""
    design = design_for({"claims": design or {}})
    c4 = design["C4"]
    small = runs[runs["experiment"] == "small_clusters"]
    names = sorted(set(small.loc[small["method"] == "small_clusters", "subset"]))
    if not names:
        return []
    removed = small[small["method"] == "small_clusters"]  # not the unpruned base rows (remove 0)
    fracs = sorted({float(f) for f in removed["data_fraction"].dropna()})
    removes = sorted({float(f) for f in removed["remove"].dropna()})
    frac0 = float(c4["data_fraction"]) if c4.get("data_fraction") is not None else fracs[0]
    remove0 = float(c4["remove"]) if c4.get("remove") is not None else removes[0]
    out = []
    for name in names:
        control = name.replace("-small-", "-random-")
        if control not in set(small["subset"]):
            continue
        row = small[small["subset"] == name].iloc[0]
        mine = _by_seed(small, small["subset"] == name, metric)
        ctrl = _by_seed(small, small["subset"] == control, metric)
        a, b = _paired(mine, ctrl)
        kernel = row.get("kernel", "full")
        kernel = "full" if not isinstance(kernel, str) else kernel
        frac, rem = float(row["data_fraction"]), float(row["remove"])
        primary = math.isclose(frac, frac0) and math.isclose(rem, remove0) and kernel == c4["kernel"]
        out.append(
            make_row(
                "C4",
                dataset,
                f"remove small clusters - remove random, {frac:.0%} of the data, removing {rem:.0%} "
                f"({'full-data' if kernel == 'full' else 'own'} kernel)",
                f"{metric.replace('_', ' ')}, % points",
                paired_test(a, b, level=1 - float(design["alpha"])),
                role=PRIMARY if primary else SECONDARY,
                unit="seed",
                baseline=f"random removal {_mean_pct(ctrl)}, small clusters {_mean_pct(mine)}",
                note=f"subsets {name} vs {control}",
                extra={"data_fraction": frac, "remove": rem, "kernel": kernel},
            )
        )
    return out

"""Stage claims: the paper's claims tested on one dataset's results -- effect, 95 % interval, test, verdict.

Reads what the enabled stages wrote (the difficulty summary's per-run areas, the forgetting summaries' per-seed
scores, the retraining runs per seed, the learning difficulty per sample and size) and writes one row per claim and
comparison (:mod:`lpntk.claims`). Numpy, scipy and pandas only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..claims import (
    CLAIM_TEXT,
    PRIMARY,
    Claim,
    check_dropped,
    design_for,
    difficulty_claims,
    forgetting_claims,
    headlines,
    ld_size_claims,
    not_run_claims,
    pruning_claims,
    settle,
    small_cluster_claims,
)
from ..io import atomic_path, load_json, save_json, save_table
from ..paper import forgetting_reference, pruning_reference
from .common import log, tracking_run

__all__ = ["collect_claims", "claims_markdown", "claims_note", "claims_stage", "count_text"]


def collect_claims(
    dataset: str, cfg: Mapping, *, difficulty=None, forgetting=None, pruning_runs=None, ld_size=None
) -> list[Claim]:
    """Every claim row the given result files support, settled per claim by the declared design (a None file: its
    stage is off, and its claims get a "not run" row)."""
    design = design_for(cfg)
    rows: list[Claim] = []
    off: list[str] = []
    if difficulty is not None:
        rows += difficulty_claims(dataset, load_json(difficulty, what="difficulty summary"), design)
    else:
        off.append("C1")
    if forgetting is not None:
        summary = load_json(forgetting, what="forgetting summary")
        recipes = {name: res["runs"] for name, res in summary["recipes"].items()}
        rows += forgetting_claims(dataset, recipes, forgetting_reference(cfg), design)
    else:
        off.append("C2")
    if pruning_runs is not None:
        runs = pd.read_csv(pruning_runs)
        rows += pruning_claims(dataset, runs, pruning_reference(cfg), design)
        small = small_cluster_claims(dataset, runs, design)
        rows += small
        if not small:
            off.append("C4")
    else:
        off += ["C3a", "C3b", "C4"]
    if ld_size is not None:
        info = load_json(ld_size["summary"], what="ld_size summary")
        table = pd.read_csv(ld_size["ld"])
        ld = np.stack([table[f"ld_size{s}"].to_numpy(float) for s in info["sizes"]], axis=1)
        labels = table["label"].to_numpy() if "label" in table else None
        rows += ld_size_claims(dataset, ld, info["sizes"], labels, level=1 - float(design["alpha"]))
    else:
        off.append("C5")
    check_dropped(rows, float(design["max_dropped_share"]))
    settled: list[Claim] = []
    for cid in CLAIM_TEXT:
        settled += settle([r for r in rows if r.claim == cid], design)
    settled += not_run_claims(dataset, off)
    order = list(CLAIM_TEXT)
    return sorted(settled, key=lambda r: order.index(r.claim))


def _interval(low: float, high: float) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "n/a"
    return f"[{low:.3g}, {high:.3g}]"


def count_text(n: int, unit: str) -> str:
    """``n`` with its unit, plural from 2 on ("10 classes", "1 seed"); "-" for none."""
    if not n:
        return "-"
    return f"{n} {unit}" if n == 1 else f"{n} {unit}es" if unit.endswith("s") else f"{n} {unit}s"


def _p(v) -> str:
    return f"{v:.2g}" if v is not None and np.isfinite(v) else ""


def headline_markdown(rows: list[Claim]) -> str:
    """One line per claim and dataset: the primary verdict, its effect and interval, n and unit, and how many
    secondary comparisons Holm supports."""
    lines = ["| claim | dataset | primary comparison | effect [interval] | n | p | verdict | secondary |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for h in headlines(rows):
        effect = f"{h['effect']:.3g} {_interval(h['low'], h['high'])}" if np.isfinite(h["effect"]) else "n/a"
        n = count_text(h["n"], h["unit"])
        lines.append(
            f"| {h['claim']} | {h['dataset']} | {h['primary']} | {effect} | {n} | {_p(h['p'])} | **{h['verdict']}** "
            f"| {h['secondary']} |"
        )
    return "\n".join(lines) + "\n"


def claims_markdown(table: pd.DataFrame, rows: list[Claim] | None = None) -> str:
    """The claims as Markdown: the headline (one line per claim), then every row -- role, comparison, effect with
    its interval, n and unit, test, raw and Holm-adjusted p, verdict, trivial baseline, the paper's difference and
    the seeds that would resolve it at our spread."""
    if not len(table):
        return "No claim is measured by the enabled stages.\n"
    show = pd.DataFrame(
        {
            "claim": table["claim"],
            "role": table["role"],
            "comparison": table["comparison"],
            "effect": [f"{v:.3g}" if np.isfinite(v) else "n/a" for v in table["effect"]],
            "interval": [
                _interval(a, b) + (f" ({lv:.0%})" if np.isfinite(a) and lv != 0.95 else "")
                for a, b, lv in zip(table["low"], table["high"], table["level"], strict=True)
            ],
            "n": [count_text(n, u) for n, u in zip(table["n"], table["unit"], strict=True)],
            "test": table["test"],
            "p": [_p(v) for v in table["p"]],
            "p (Holm)": [_p(v) for v in table["p_adj"]],
            "verdict": [f"**{v}**" for v in table["verdict"]],
            "baseline": table["baseline"],
            "paper": [f"{v:.3g}" if v is not None and np.isfinite(v) else "" for v in table["paper_effect"]],
            "seeds to resolve": [
                f"{int(v)}" if v is not None and np.isfinite(v) else "" for v in table["seeds_to_resolve"]
            ],
            "metric / note": [
                f"{m}{'; ' + n if isinstance(n, str) and n else ''}"
                f"{f'; {int(k)} pairs dropped (non-finite)' if k else ''}"
                for m, n, k in zip(table["metric"], table["note"], table["dropped"], strict=True)
            ],
        }
    )
    claims = "\n".join(f"* **{c}** {CLAIM_TEXT[c]}" for c in dict.fromkeys(table["claim"]))
    head = headline_markdown(rows) if rows is not None else ""
    return claims + "\n\n" + head + "\n" + show.to_markdown(index=False) + "\n"


def claims_note(rows: list[Claim]) -> str:
    """The headline verdicts (one line per claim): the section the claims job adds to its invocation's MLflow
    description."""
    if not rows:
        return "No claim is measured by the enabled stages."
    return headline_markdown(rows)


def claims_stage(
    *,
    dataset: str,
    cfg: Mapping,
    outputs: Mapping[str, str],
    difficulty: str | os.PathLike | None = None,
    forgetting: str | os.PathLike | None = None,
    pruning_runs: str | os.PathLike | None = None,
    ld_size: Mapping[str, str | os.PathLike] | None = None,
    mlflow_cfg: Mapping | None = None,
) -> pd.DataFrame:
    """Write ``outputs["csv"]`` (one row per claim and comparison), ``outputs["md"]`` (the display table) and
    ``outputs["summary"]`` (JSON: verdict counts and the rows). Inputs: the difficulty stage's summary.json, the
    forgetting table's summary.json, the pruning table's runs.csv, ld_size's {"ld": ld.csv, "summary":
    summary.json}; each None where its stage is disabled."""
    rows = collect_claims(
        dataset, cfg, difficulty=difficulty, forgetting=forgetting, pruning_runs=pruning_runs, ld_size=ld_size
    )
    table = pd.DataFrame([r.row() for r in rows])
    verdicts = {}
    for r in rows:
        if r.role == PRIMARY:
            key = r.verdict.split(":")[0].replace(" ", "_")
            verdicts[key] = verdicts.get(key, 0) + 1
    with tracking_run("claims", dataset, cfg, mlflow_cfg, run_name=f"claims-{dataset}", live=False) as run:
        save_table(outputs["csv"], table)
        with atomic_path(outputs["md"]) as tmp:
            tmp.write_text(claims_markdown(table, rows))
        save_json(
            outputs["summary"],
            {
                "dataset": dataset,
                "design": design_for(cfg),
                "verdicts": verdicts,
                "headline": headlines(rows),
                "claims": [r.row() for r in rows],
            },
        )
        run.log_metrics({f"claims_primary_{k}": v for k, v in verdicts.items()})
        run.log_outputs(dict(outputs))
        run.add_invocation_note("claims", claims_note(rows))  # the invocation's run of this dataset
    log.info("%s: %d claim rows; primary verdicts %s", dataset, len(rows), verdicts)
    return table

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
    Claim,
    difficulty_claims,
    forgetting_claims,
    ld_size_claims,
    pruning_claims,
    small_cluster_claims,
)
from ..io import atomic_path, load_json, save_json, save_table
from ..paper import forgetting_reference, pruning_reference
from .common import log, tracking_run

__all__ = ["collect_claims", "claims_markdown", "claims_note", "claims_stage"]


def collect_claims(
    dataset: str, cfg: Mapping, *, difficulty=None, forgetting=None, pruning_runs=None, ld_size=None
) -> list[Claim]:
    """Every claim row the given result files support (a None file: its stage is disabled)."""
    rows: list[Claim] = []
    if difficulty is not None:
        rows += difficulty_claims(dataset, load_json(difficulty, what="difficulty summary"))
    if forgetting is not None:
        summary = load_json(forgetting, what="forgetting summary")
        for recipe, res in summary["recipes"].items():
            for space in ("logit", "probability"):
                rows += forgetting_claims(dataset, res["runs"], forgetting_reference(cfg), recipe, space)
    if pruning_runs is not None:
        runs = pd.read_csv(pruning_runs)
        rows += pruning_claims(dataset, runs, pruning_reference(cfg))
        rows += small_cluster_claims(dataset, runs)
    if ld_size is not None:
        info = load_json(ld_size["summary"], what="ld_size summary")
        table = pd.read_csv(ld_size["ld"])
        ld = np.stack([table[f"ld_size{s}"].to_numpy(float) for s in info["sizes"]], axis=1)
        rows += ld_size_claims(dataset, ld, info["sizes"])
    return rows


def _interval(low: float, high: float) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "n/a"
    return f"[{low:.3g}, {high:.3g}]"


def claims_markdown(table: pd.DataFrame) -> str:
    """The claims table as Markdown: the claim, the comparison, our effect with its interval, n, test, p, verdict,
    the paper's difference and the seeds that would resolve it at our spread."""
    if not len(table):
        return "No claim is measured by the enabled stages.\n"
    show = pd.DataFrame(
        {
            "claim": table["claim"],
            "comparison": table["comparison"],
            "effect": [f"{v:.3g}" if np.isfinite(v) else "n/a" for v in table["effect"]],
            "interval": [
                _interval(a, b) + (" (90 %)" if "non-inferiority" in t else "")
                for a, b, t in zip(table["low"], table["high"], table["test"], strict=True)
            ],
            "n": table["n"],
            "test": table["test"],
            "p": [f"{v:.2g}" if np.isfinite(v) else "" for v in table["p"]],
            "verdict": [f"**{v}**" for v in table["verdict"]],
            "paper": [f"{v:.3g}" if v is not None and np.isfinite(v) else "" for v in table["paper_effect"]],
            "seeds to resolve": [
                f"{int(v)}" if v is not None and np.isfinite(v) else "" for v in table["seeds_to_resolve"]
            ],
            "metric / note": [
                f"{m}{'; ' + n if isinstance(n, str) and n else ''}"
                for m, n in zip(table["metric"], table["note"], strict=True)
            ],
        }
    )
    claims = "\n".join(f"* **{c}** {CLAIM_TEXT[c]}" for c in dict.fromkeys(table["claim"]))
    return claims + "\n\n" + show.to_markdown(index=False) + "\n"


def claims_note(table: pd.DataFrame) -> str:
    """The verdicts in short (claim, comparison, effect with its interval, verdict): the section the claims job adds
    to its invocation's MLflow description."""
    if not len(table):
        return "No claim is measured by the enabled stages."
    lines = ["| claim | comparison | effect [interval] | verdict |", "|---|---|---|---|"]
    for r in table.itertuples():
        effect = f"{r.effect:.3g}" if np.isfinite(r.effect) else "n/a"
        lines.append(f"| {r.claim} | {r.comparison} | {effect} {_interval(r.low, r.high)} | {r.verdict} |")
    return "\n".join(lines)


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
        key = r.verdict.split(" at ")[0]
        verdicts[key] = verdicts.get(key, 0) + 1
    with tracking_run("claims", dataset, cfg, mlflow_cfg, run_name=f"claims-{dataset}", live=False) as run:
        save_table(outputs["csv"], table)
        with atomic_path(outputs["md"]) as tmp:
            tmp.write_text(claims_markdown(table))
        save_json(outputs["summary"], {"dataset": dataset, "verdicts": verdicts, "claims": [r.row() for r in rows]})
        run.log_metrics({f"claims_{k}": v for k, v in verdicts.items()})
        run.log_outputs(dict(outputs))
        run.add_invocation_note("claims", claims_note(table))  # the invocation's run of this dataset
    log.info("%s: %d claim rows: %s", dataset, len(rows), verdicts)
    return table

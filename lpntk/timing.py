"""Measured time per stage beside the cost estimate: the check after a run of what ``lpntk cost`` said before it.

Snakemake writes one benchmark file per job (``results/<ds>/benchmarks/<rule>[/<wildcards>].tsv``, the job's wall
seconds in column ``s``); :func:`measured_stage_seconds` sums them per rule. :func:`estimate_vs_measured` puts them
beside the estimate's CPU seconds per stage (``lpntk cost --json``) with their ratio, measured / estimated, and flags
a stage off by more than ``tolerance`` (1.5x either way by default) and by more than ``floor_s`` device seconds (5 by
default: a stage of a few seconds -- a table, a figure -- is its jobs' start-up, whose spread on a shared machine is
of that size; its ratio says little).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path

from .paths import benchmarks_dir

__all__ = ["measured_stage_seconds", "estimate_vs_measured", "comparison_markdown", "startup_seconds_of_run"]


def measured_stage_seconds(results: str | os.PathLike, dataset: str) -> dict[str, tuple[int, float]]:
    """Per rule: (jobs, the sum of their wall seconds) from the dataset's Snakemake benchmark files."""
    root = Path(benchmarks_dir(dataset, str(results)))
    out: dict[str, tuple[int, float]] = {}
    for path in sorted(root.rglob("*.tsv")):
        rule = path.relative_to(root).parts[0].removesuffix(".tsv")
        with open(path) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        seconds = sum(float(r["s"]) for r in rows[-1:])  # the last row: Snakemake rewrites the file on a rerun
        jobs, total = out.get(rule, (0, 0.0))
        out[rule] = (jobs + 1, total + seconds)
    return out


def estimate_vs_measured(
    estimate: Mapping,
    measured: Mapping[str, tuple[int, float]],
    tolerance: float = 1.5,
    share: float = 1.0,
    floor_s: float = 5.0,
    before: Mapping | None = None,
) -> list[dict]:
    """One row per stage of the estimate (``stages`` of one dataset in ``lpntk cost --json``) or of the run: jobs
    estimated and run, the estimated device seconds (``cpu_hours``: the whole CPU's time), the measured job seconds,
    and the measured device seconds = job seconds x ``share`` (a job's threads / the CPU's cores: two 1-thread jobs
    side by side on 2 cores each hold half the device), their ratio to the estimate and whether it lies within
    ``tolerance`` or within ``floor_s`` seconds of the estimate. ``before``: an earlier estimate of the same run (the
    cost model as it was before the run, when it has been refitted since), shown beside."""
    rows = []
    est = {s["stage"]: s for s in estimate.get("stages", [])}
    old = {s["stage"]: 3600.0 * s["cpu_hours"] for s in (before or {}).get("stages", []) if s.get("cpu_hours")}
    for stage in list(est) + [s for s in measured if s not in est]:
        e = est.get(stage)
        jobs, seconds = measured.get(stage, (0, 0.0))
        estimated = 3600.0 * e["cpu_hours"] if e and e.get("cpu_hours") is not None else None
        device = seconds * share
        ratio = device / estimated if estimated else None
        rows.append(
            {
                "stage": stage,
                "jobs_estimated": e["jobs"] if e else 0,
                "jobs_run": jobs,
                "estimated_s": estimated,
                "estimated_before_s": old.get(stage),
                "measured_s": seconds,
                "device_s": device,
                "ratio": ratio,
                "within": ratio is not None
                and (1 / tolerance <= ratio <= tolerance or abs(device - estimated) <= floor_s),
            }
        )
    return rows


def comparison_markdown(rows: list[dict], tolerance: float = 1.5, floor_s: float = 5.0) -> str:
    """The comparison as a Markdown table (seconds; ratio = measured / estimated); with an earlier estimate's column
    where the rows carry one."""
    before = any(r.get("estimated_before_s") is not None for r in rows)
    head = "| stage | jobs (est. / run) | " + ("estimated before the run | " if before else "")
    lines = [
        head + "estimated device s | measured job s | measured device s | measured / est. |",
        "|---|---|" + ("---|" if before else "") + "---|---|---|---|",
    ]
    for r in rows:
        est = f"{r['estimated_s']:,.0f}" if r["estimated_s"] is not None else "-"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        if r["ratio"] is not None and not r["within"]:
            ratio += f" (outside {tolerance:g}x and {floor_s:g} s)"
        old = ""
        if before:
            old = f"{r['estimated_before_s']:,.0f} | " if r.get("estimated_before_s") is not None else "- | "
        lines.append(
            f"| {r['stage']} | {r['jobs_estimated']} / {r['jobs_run']} | {old}{est} | {r['measured_s']:,.0f} | "
            f"{r['device_s']:,.0f} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def startup_seconds_of_run(measured: Mapping[str, tuple[int, float]], startup: Mapping[str, float]) -> float:
    """The device seconds a run's jobs spent starting: per stage, its jobs x its measured start-up (``startup``:
    :func:`lpntk.cost.startup_seconds` of the device, ``*`` for a stage not measured)."""
    return sum(jobs * float(startup.get(stage, startup.get("*", 0.0))) for stage, (jobs, _) in measured.items())

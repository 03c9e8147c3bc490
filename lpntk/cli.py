"""The ``lpntk`` command: ``lpntk cost --configfile config/paper.yaml`` prints what a config will cost before it runs.

Per dataset and stage: the number of jobs and training runs, the epoch-equivalents of training (sample passes / the
training-set size), the kernel feature passes and pairs, and the estimated device-hours on the CPU and the GPU of
``benchmarks/costs.json`` (method: :mod:`lpntk.cost`). Local stages (``localrules``) run on the submitting machine
and cost seconds; they and prepare_data build no model, so their GPU hours are nil (they run on a CPU). Imports
neither torch nor mlflow: it answers in about a second.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from .config import ConfigError, load_config
from .cost import CostError, dataset_sizes, job_seconds, load_costs, model_figures, model_key, plan_jobs

__all__ = ["main", "cost_report", "format_report"]

REPO = Path(__file__).resolve().parents[1]
#: The issue's targets for the paper's scale, by torchvision dataset name: GPU-hours of all jobs.
TARGETS_GPU_HOURS = {"MNIST": 2.0, "CIFAR10": 48.0}
STAGES = (
    "prepare_data", "train", "select_reference", "kernel", "relations", "difficulty", "ld_size", "forgetting",
    "forgetting_table", "scores", "cluster", "own_clusters", "prune", "retrain", "pruning_table", "claims",
    "gallery",
)  # fmt: skip


def _find(path: str | None, default: str) -> Path:
    """``path`` as given, else ``default`` under the working directory if it exists there, else in the repository."""
    if path:
        return Path(path)
    here = Path(default)
    return here if here.exists() else REPO / default


def cost_report(config: dict, costs: dict, results: str | Path = "results") -> dict:
    """Per dataset: its sizes, per-stage rows (jobs, runs, epoch-equivalents, kernel passes and pairs, CPU and GPU
    hours) and totals; and the overall totals."""
    out = {"cpu": costs["cpu"]["name"], "gpu": costs["gpu"]["name"], "gpu_source": costs["gpu"]["source"]}
    out["cpu_source"] = costs["cpu"].get("source", "")
    datasets, total = {}, {"cpu_hours": 0.0, "gpu_hours": 0.0, "jobs": 0}
    for ds, block in config["datasets"].items():
        sizes = dataset_sizes(ds, block, results)
        key = model_key(block["model"]["name"], sizes.shape)
        what = f"datasets.{ds}.model"
        cpu, gpu = model_figures(costs["cpu"], key, what), model_figures(costs["gpu"], key, what)
        jobs = plan_jobs(ds, block, sizes, float(cpu["kernel_bytes_per_sample"]))
        rows = {}
        for job in jobs:
            row = rows.setdefault(
                job.stage,
                {"stage": job.stage, "jobs": 0, "runs": 0, "epoch_eq": 0.0, "kernel_passes": 0.0, "pairs": 0.0,
                 "cpu_hours": 0.0, "gpu_hours": 0.0, "local": job.local, "max_job_cpu_hours": 0.0,
                 "max_job_gpu_hours": 0.0},
            )  # fmt: skip
            c = job_seconds(job, cpu, costs["cpu"]["job_startup_s"]) / 3600
            g = 0.0 if job.cpu_only else job_seconds(job, gpu, costs["gpu"]["job_startup_s"]) / 3600
            row["jobs"] += 1
            row["runs"] += job.runs
            row["epoch_eq"] += job.work.train_samples / sizes.n_train
            row["kernel_passes"] += job.work.kernel_samples
            row["pairs"] += job.work.kernel_pairs
            row["cpu_hours"] += c
            row["gpu_hours"] += g
            row["max_job_cpu_hours"] = max(row["max_job_cpu_hours"], c)
            row["max_job_gpu_hours"] = max(row["max_job_gpu_hours"], g)
        ordered = [rows[s] for s in STAGES if s in rows] + [r for s, r in rows.items() if s not in STAGES]
        sums = {k: sum(r[k] for r in ordered) for k in ("jobs", "runs", "epoch_eq", "cpu_hours", "gpu_hours")}
        sums["gpu_startup_hours"] = sum(not j.cpu_only for j in jobs) * costs["gpu"]["job_startup_s"] / 3600
        datasets[ds] = {
            "model": key,
            "gpu_figures": gpu.get("source", "measured"),
            "sizes": {"train": sizes.n_train, "val": sizes.n_val, "test": sizes.n_test, "from": sizes.source},
            "stages": ordered,
            "total": sums,
            "target_gpu_hours": TARGETS_GPU_HOURS.get(block["name"]),
        }
        for k in ("cpu_hours", "gpu_hours", "jobs"):
            total[k] += sums[k]
    out["datasets"], out["total"] = datasets, total
    return out


def _num(x: float, digits: int = 0) -> str:
    if x == 0:
        return "-"
    if x >= 1e6:
        return f"{x:.3g}"
    return f"{x:,.{digits}f}"


def _hours(h: float) -> str:
    return f"{h:,.2f}" if h < 100 else f"{h:,.0f}"


def format_report(report: dict) -> str:
    """The report as a text table (what ``lpntk cost`` prints)."""
    lines = []
    for label in ("cpu", "gpu"):
        lines.append(f"{label.upper()}: {report[label]}")
        lines += textwrap.wrap(report[f"{label}_source"], 116, initial_indent="     ", subsequent_indent="     ")
    lines.append("")
    head = f"{'stage':<24}{'jobs':>6}{'runs':>8}{'epoch-eq':>11}{'kernel passes':>15}{'pairs':>10}"
    head += f"{'CPU h':>10}{'GPU h':>9}{'longest job GPU h':>19}"
    for ds, d in report["datasets"].items():
        s = d["sizes"]
        lines.append(f"{ds}: {d['model']}, train {s['train']:,} / val {s['val']:,} / test {s['test']:,} ({s['from']})")
        if d["gpu_figures"] == "estimate":
            lines.append("  (GPU hours of this model: ESTIMATE, not measured)")
        lines.append(head)
        for r in d["stages"]:
            name = r["stage"] + (" (local)" if r["local"] else "")
            lines.append(
                f"{name:<24}{r['jobs']:>6}{_num(r['runs']):>8}{_num(r['epoch_eq'], 1):>11}"
                f"{_num(r['kernel_passes']):>15}{_num(r['pairs']):>10}{_hours(r['cpu_hours']):>10}"
                f"{_hours(r['gpu_hours']):>9}{_hours(r['max_job_gpu_hours']):>19}"
            )
        t = d["total"]
        target = f"   (paper-scale target: <= {d['target_gpu_hours']:g} GPU h)" if d["target_gpu_hours"] else ""
        lines.append(
            f"{'total':<24}{t['jobs']:>6}{_num(t['runs']):>8}{_num(t['epoch_eq'], 1):>11}{'':>25}"
            f"{_hours(t['cpu_hours']):>10}{_hours(t['gpu_hours']):>9}{target}"
        )
        lines.append(
            f"{'':<24}of the GPU hours, {_hours(t['gpu_startup_hours'])} are job start-ups (imports, CUDA); jobs that "
            "share the GPU overlap them"
        )
        lines.append("")
    t = report["total"]
    lines.append(
        f"all datasets: {t['jobs']} jobs, {_hours(t['cpu_hours'])} CPU hours, {_hours(t['gpu_hours'])} GPU hours "
        "(device-hours: the sum of every job alone on the device)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lpntk", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    cost = sub.add_parser("cost", help="jobs, work and device-hours of every stage of a config, before it runs")
    cost.add_argument("--configfile", help="the workflow config (default: config/config.yaml, as the Snakefile)")
    cost.add_argument("--costs", help="per-unit cost figures (default: benchmarks/costs.json)")
    cost.add_argument("--gpu-figures", help="GPU figures of bench_gpu.py --json (default: benchmarks/gpu.json)")
    cost.add_argument("--results", default="results", help="where prepared data's sizes are read, if present")
    cost.add_argument("--json", help="also write the report as JSON to this file")
    args = ap.parse_args(argv)
    try:
        config = load_config(
            _find(args.configfile, "config/config.yaml"), _find(None, "workflow/schemas/config.schema.yaml")
        )
        costs = load_costs(_find(args.costs, "benchmarks/costs.json"), _find(args.gpu_figures, "benchmarks/gpu.json"))
        report = cost_report(config, costs, args.results)
    except (ConfigError, CostError) as err:
        print(f"lpntk cost: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

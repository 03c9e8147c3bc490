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
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from .config import ConfigError, load_config
from .cost import (
    CostError,
    dataset_sizes,
    job_seconds,
    load_costs,
    model_figures,
    model_key,
    plan_jobs,
    startup_seconds,
)
from .paths import data_file

__all__ = ["main", "cost_report", "format_report", "prepare_command", "this_machine"]

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


def prepare_command(ds: str, results: str | Path = "results", configfile: str | Path | None = None) -> str:
    """The command that prepares dataset ``ds`` (its ``info.json``) where :func:`lpntk.cost.dataset_sizes` reads it:
    the target before ``--configfile`` (which takes every word after it as a config file), ``--directory`` when
    ``results`` is not ./results (the workflow writes results/ under its working directory), ``--snakefile`` when the
    working directory holds none."""
    results = Path(results)
    cmd = ["snakemake", "--cores", "1"]
    relocated = results.name != "results" or str(results.parent) != "."
    if (relocated or not Path("Snakefile").is_file()) and (REPO / "Snakefile").is_file():
        cmd += ["--snakefile", str(REPO / "Snakefile")]
    if relocated:
        cmd += ["--directory", str(results.parent.resolve() if results.name == "results" else results.resolve())]
    cmd.append(data_file("info.json", ds))
    if configfile is not None:
        cmd += ["--configfile", str(Path(configfile).resolve() if relocated else configfile)]
    return " ".join(cmd)


def this_machine() -> str:
    """The machine ``lpntk cost`` runs on, read without torch: cores, CPU model, load average, GPUs visible."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = f" ({line.split(':', 1)[1].strip()})"
                break
    except OSError:
        pass
    try:
        load = f"load average {os.getloadavg()[0]:.2f} now"
    except OSError:
        load = "load average unknown"
    gpus = Path("/proc/driver/nvidia/gpus")
    n_gpus = len(list(gpus.iterdir())) if gpus.is_dir() else 0
    return f"{os.cpu_count()} cores{cpu}, {load}" + (f", {n_gpus} NVIDIA GPU(s)" if n_gpus else ", no NVIDIA GPU")


def _measured(fig: dict) -> str:
    """When and under what load one model's figures were measured (``bench_costs.py`` records it per model)."""
    if not fig.get("measured_on"):
        return ""
    load = fig.get("load_average") or []
    text = f"measured {fig['measured_on']}"
    if load:
        text += f" at load average {load[0]:g}" + (f" -> {load[-1]:g}" if len(load) > 1 else "")
    if fig.get("threads"):
        text += f", {fig['threads']} thread(s), {fig.get('clock', 'wall')} clock"
    return text


def cost_report(
    config: dict,
    costs: dict,
    results: str | Path = "results",
    configfile: str | Path | None = None,
    cpu_target_hours: float | None = None,
) -> dict:
    """Per dataset: its sizes, per-stage rows (jobs, runs, epoch-equivalents, kernel passes and pairs, CPU and GPU
    hours) and totals; and the overall totals. A model without GPU figures gets the CPU estimate and GPU hours of
    None (``gpu_missing`` says why); ``over_target`` marks a total above its target (the GPU-hour target of the
    paper's scale, ``cpu_target_hours`` for all datasets' CPU hours)."""
    cpu_dev = costs["cpu"]
    out = {"cpu": cpu_dev["name"], "gpu": costs["gpu"]["name"], "gpu_source": costs["gpu"]["source"]}
    out["cpu_source"] = cpu_dev.get("source", "")
    load = cpu_dev.get("load_average") or []
    out["cpu_measured"] = (
        f"load average {' -> '.join(f'{x:g}' for x in load)} while measuring ({cpu_dev.get('measured_on', '?')})"
        if load
        else ""
    )
    datasets, total = {}, {"cpu_hours": 0.0, "gpu_hours": 0.0, "jobs": 0, "gpu_missing": []}
    for ds, block in config["datasets"].items():
        try:
            sizes = dataset_sizes(ds, block, results)
        except CostError as err:  # a dataset whose size is known only once it is prepared
            raise CostError(f"{err}; prepare it first with `{prepare_command(ds, results, configfile)}`") from None
        key = model_key(block["model"]["name"], sizes.shape)
        what = f"datasets.{ds}.model"
        cpu = model_figures(cpu_dev, key, what)
        gpu, gpu_missing = costs["gpu"]["models"].get(key), None
        if gpu is None:
            name, shape = key.split("@")
            gpu_missing = (
                f"{what}: no GPU figures for {key} on {costs['gpu']['name']}; measure them on a GPU (`python "
                f"benchmarks/bench_costs.py --device cuda --models {name} --shapes {shape} --json FILE`, its models "
                "merged into benchmarks/gpu.json) or give the model a floor in costs.json's devices.gpu.estimate"
            )
            total["gpu_missing"].append(ds)
        jobs = plan_jobs(ds, block, sizes, float(cpu["kernel_bytes_per_sample"]))
        rows = {}
        for job in jobs:
            row = rows.setdefault(
                job.stage,
                {"stage": job.stage, "jobs": 0, "runs": 0, "epoch_eq": 0.0, "kernel_passes": 0.0, "pairs": 0.0,
                 "cpu_hours": 0.0, "gpu_hours": 0.0, "local": job.local, "max_job_cpu_hours": 0.0,
                 "max_job_gpu_hours": 0.0},
            )  # fmt: skip
            c = job_seconds(job, cpu, startup_seconds(cpu_dev)) / 3600
            g = 0.0 if job.cpu_only or gpu is None else job_seconds(job, gpu, startup_seconds(costs["gpu"])) / 3600
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
        if gpu is None:
            for r in ordered:
                r["gpu_hours"] = r["max_job_gpu_hours"] = None
        sums = {k: sum(r[k] for r in ordered) for k in ("jobs", "runs", "epoch_eq", "cpu_hours")}
        sums["gpu_hours"] = None if gpu is None else sum(r["gpu_hours"] for r in ordered)
        sums["gpu_startup_hours"] = sum(not j.cpu_only for j in jobs) * costs["gpu"]["job_startup_s"] / 3600
        target = TARGETS_GPU_HOURS.get(block["name"])
        datasets[ds] = {
            "model": key,
            "cpu_figures": _measured(cpu),
            "missing_figures": cpu.get("missing", []),
            "gpu_figures": "none" if gpu is None else gpu.get("source", "measured"),
            "gpu_missing": gpu_missing,
            "sizes": {"train": sizes.n_train, "val": sizes.n_val, "test": sizes.n_test, "from": sizes.source},
            "stages": ordered,
            "total": sums,
            "target_gpu_hours": target,
            "over_target": bool(target and sums["gpu_hours"] is not None and sums["gpu_hours"] > target),
        }
        for k in ("cpu_hours", "jobs"):
            total[k] += sums[k]
        total["gpu_hours"] += sums["gpu_hours"] or 0.0
    total["cpu_target_hours"] = cpu_target_hours
    total["over_target"] = bool(cpu_target_hours and total["cpu_hours"] > cpu_target_hours)
    out["datasets"], out["total"] = datasets, total
    return out


def _num(x: float, digits: int = 0) -> str:
    if x == 0:
        return "-"
    if x >= 1e6:
        return f"{x:.3g}"
    return f"{x:,.{digits}f}"


def _hours(h: float | None) -> str:
    if h is None:
        return "n/a"
    return f"{h:,.2f}" if h < 100 else f"{h:,.0f}"


def _target(hours: float, target: float, over: bool) -> str:
    return f"OVER TARGET, {hours / target:.1f}x" if over else f"within, {hours / target:.0%} of it"


def _header_lines(report: dict) -> list[str]:
    wrap = {"width": 116, "initial_indent": "     ", "subsequent_indent": "     "}
    lines = textwrap.wrap(f"CPU figures measured on: {report['cpu']}", 116, subsequent_indent="     ")
    lines += textwrap.wrap(report["cpu_source"], **wrap)
    if report.get("cpu_measured"):
        lines += textwrap.wrap(report["cpu_measured"], **wrap)
    lines.append(f"GPU: {report['gpu']}")
    lines += textwrap.wrap(report["gpu_source"], **wrap)
    if report.get("this_machine"):
        here = f"this machine: {report['this_machine']} (where lpntk cost runs; the figures are those measured above)"
        lines += textwrap.wrap(here, 116, subsequent_indent="     ")
    return lines + [""]


def _dataset_notes(ds: str, d: dict, gpu_name: str) -> list[str]:
    s = d["sizes"]
    lines = [f"{ds}: {d['model']}, train {s['train']:,} / val {s['val']:,} / test {s['test']:,} ({s['from']})"]
    if d.get("cpu_figures"):
        lines.append(f"  (CPU figures of {d['model']}: {d['cpu_figures']})")
    if d.get("missing_figures"):
        lines.append(f"  (not measured for {d['model']} on this CPU, counted 0: {', '.join(d['missing_figures'])})")
    if d["gpu_figures"] == "estimate":
        lines.append("  (GPU hours of this model: ESTIMATE, not measured)")
    if d.get("gpu_missing"):
        lines.append(f"  (GPU columns: no figures for {d['model']} on {gpu_name}, n/a; the CPU estimate stands)")
    return lines


def _dataset_total(d: dict) -> list[str]:
    t, target = d["total"], ""
    if d["target_gpu_hours"]:
        target = f"   (paper-scale target <= {d['target_gpu_hours']:g} GPU h"
        if t["gpu_hours"] is not None:
            target += ": " + _target(t["gpu_hours"], d["target_gpu_hours"], d["over_target"])
        target += ")"
    lines = [
        f"{'total':<24}{t['jobs']:>6}{_num(t['runs']):>8}{_num(t['epoch_eq'], 1):>11}{'':>25}"
        f"{_hours(t['cpu_hours']):>10}{_hours(t['gpu_hours']):>9}{target}"
    ]
    if t["gpu_hours"] is not None:
        lines.append(
            f"{'':<24}of the GPU hours, {_hours(t['gpu_startup_hours'])} are job start-ups (imports, CUDA); jobs "
            "that share the GPU overlap them"
        )
    return lines + [""]


def _stage_line(r: dict) -> str:
    name = r["stage"] + (" (local)" if r["local"] else "")
    return (
        f"{name:<24}{r['jobs']:>6}{_num(r['runs']):>8}{_num(r['epoch_eq'], 1):>11}"
        f"{_num(r['kernel_passes']):>15}{_num(r['pairs']):>10}{_hours(r['cpu_hours']):>10}"
        f"{_hours(r['gpu_hours']):>9}{_hours(r['max_job_gpu_hours']):>19}"
    )


def format_report(report: dict) -> str:
    """The report as a text table (what ``lpntk cost`` prints)."""
    lines = _header_lines(report)
    head = f"{'stage':<24}{'jobs':>6}{'runs':>8}{'epoch-eq':>11}{'kernel passes':>15}{'pairs':>10}"
    head += f"{'CPU h':>10}{'GPU h':>9}{'longest job GPU h':>19}"
    for ds, d in report["datasets"].items():
        lines += [*_dataset_notes(ds, d, report["gpu"]), head, *map(_stage_line, d["stages"]), *_dataset_total(d)]
    t = report["total"]
    gpu = f"{_hours(t['gpu_hours'])} GPU hours"
    if t.get("gpu_missing"):
        gpu += f" (without {', '.join(t['gpu_missing'])}: no GPU figures)"
    lines.append(
        f"all datasets: {t['jobs']} jobs, {_hours(t['cpu_hours'])} CPU hours, {gpu} "
        "(device-hours: the sum of every job alone on the device)"
    )
    if t.get("cpu_target_hours"):
        cpu_target = _target(t["cpu_hours"], t["cpu_target_hours"], t["over_target"])
        lines.append(f"CPU target <= {t['cpu_target_hours']:g} CPU h (all datasets): {cpu_target}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lpntk", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    cost = sub.add_parser("cost", help="jobs, work and device-hours of every stage of a config, before it runs")
    cost.add_argument("--configfile", help="the workflow config (default: config/config.yaml, as the Snakefile)")
    cost.add_argument("--costs", help="per-unit cost figures (default: benchmarks/costs.json)")
    cost.add_argument("--gpu-figures", help="GPU figures of bench_gpu.py --json (default: benchmarks/gpu.json)")
    cost.add_argument("--results", default="results", help="where prepared data's sizes are read, if present")
    cost.add_argument(
        "--cpu-target-hours", type=float, help="mark the CPU hours of all datasets OVER TARGET above this many"
    )
    cost.add_argument("--json", help="also write the report as JSON to this file")
    args = ap.parse_args(argv)
    try:
        config = load_config(
            _find(args.configfile, "config/config.yaml"), _find(None, "workflow/schemas/config.schema.yaml")
        )
        costs = load_costs(_find(args.costs, "benchmarks/costs.json"), _find(args.gpu_figures, "benchmarks/gpu.json"))
        report = cost_report(config, costs, args.results, args.configfile, args.cpu_target_hours)
    except (ConfigError, CostError) as err:
        print(f"lpntk cost: {err}", file=sys.stderr)
        return 2
    report["this_machine"] = this_machine()
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

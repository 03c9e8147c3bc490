"""Measure the per-model cost figures that `lpntk cost` reads, on this machine's CPU (or a GPU), into a JSON file.

    python benchmarks/bench_costs.py --threads 1 --clock cpu --update benchmarks/costs.json    # every model, shape
    python benchmarks/bench_costs.py --models mlp --shapes 1x28x28 --threads 1 --clock cpu --update FILE   # one
    python benchmarks/bench_costs.py --models '' --host --threads 1 --clock cpu --update benchmarks/costs.json  # host
    python benchmarks/bench_costs.py --quick --json /tmp/figures.json                           # a smoke test

Each model is measured at every input shape of the datasets the configs under config/ name that it applies to
(measure.MODELS[model]["shapes"]: digits 1x8x8, MNIST 1x28x28, CIFAR 3x32x32), or at ``--shapes``; the figures of
``mlp`` at 1x28x28 are stored as ``mlp@1x28x28``. What is measured and how: benchmarks/measure.py. ``--update FILE``
replaces, in FILE's ``devices.<cpu|gpu>`` entry, the figures of the models and shapes measured (keeping the others and
the rest of the file, e.g. the GPU assumptions); each model's figures record the day, the load average before and
after, and the command. ``--host`` also measures the device-level figures of the host's NumPy work (clustering,
relation statistics) and every job's start-up (measure.measure_host, measure.measure_startups), stored under the
device's ``host``. The figures of a busy machine are slower than an idle one's: the GEMM rate measured beside
each model says how busy it was (the cost model scales FLOP-bound work by it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from measure import (
    MODELS,
    gemm_gflops,
    measure_host,
    measure_model,
    measure_startups,
    model_key,
    parse_shape,
    use_cpu_clock,
)


def machine(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {threads} torch threads, torch {torch.__version__}"


def host_figures(device: torch.device, repeats: int, command: str) -> dict:
    """The host's figures (measure.measure_host), every job's start-up (measure.measure_startups) and, beside them,
    the GEMM gauge, load and day (the cost model brings them to the idle machine's rate as the models' figures)."""
    if device.type != "cpu":
        raise SystemExit("--host measures the host's CPU: run it with --device cpu")
    load = os.getloadavg()[0]
    gauges = [gemm_gflops(device)]
    fig = measure_host(repeats)
    fig["startup_s"] = measure_startups(Path(__file__).resolve().parents[1] / "workflow" / "scripts", repeats)
    gauges.append(gemm_gflops(device))
    fig.update(gemm_gflops=sum(gauges) / 2, gemm_gflops_range=[min(gauges), max(gauges)])
    fig.update(measured_on=time.strftime("%Y-%m-%d"), load_average=[round(load, 2), round(os.getloadavg()[0], 2)])
    return {**fig, "command": command}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--shapes", help="comma-separated input shapes, e.g. 1x28x28 (default: each model's own)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: time the process's CPU time (robust on a busy machine; use with --threads 1)",
    )
    ap.add_argument("--host", action="store_true", help="also the host's NumPy figures and the jobs' start-ups")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test; the figures are not reliable)")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--update", help="replace this costs file's entry for the device with the figures")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.clock == "cpu":
        if device.type != "cpu":
            ap.error("--clock cpu measures CPU time: only for --device cpu")
        use_cpu_clock()
    names = [m for m in args.models.split(",") if m]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        ap.error(f"--models: unknown {unknown}; choose from {list(MODELS)}")
    try:
        shapes = [parse_shape(s) for s in args.shapes.split(",") if s] if args.shapes else None
    except ValueError:
        ap.error(f"--shapes: expected shapes like 1x28x28, got {args.shapes!r}")
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    command = "python benchmarks/bench_costs.py " + " ".join(argv if argv is not None else sys.argv[1:])
    figures = {}
    for name in names:
        for shape in shapes or MODELS[name]["shapes"]:
            key = model_key(name, shape)
            print(f"# {key}", flush=True)
            load = os.getloadavg()[0]
            fig = measure_model(
                name, device, shape=shape, scale=0.125 if args.quick else 1.0, repeats=1 if args.quick else args.repeats
            )
            fig.update(
                measured_on=time.strftime("%Y-%m-%d"), load_average=[round(load, 2), round(os.getloadavg()[0], 2)]
            )
            fig.update(threads=args.threads, command=command)
            figures[key] = fig
            print(json.dumps(fig, indent=1), flush=True)
    kind = "gpu" if device.type == "cuda" else "cpu"
    host = host_figures(device, args.repeats, command) if args.host else None
    entry = {
        "name": machine(device, args.threads),
        "source": "measured: " + command,
        "measured_on": time.strftime("%Y-%m-%d"),
        "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "seconds": round(time.perf_counter() - t0, 1),
        "job_startup_s": 8.0 if kind == "cpu" else 15.0,
        "models": figures,
    }
    if host:
        entry["host"] = host
    if args.json:
        Path(args.json).write_text(json.dumps({"devices": {kind: entry}}, indent=2) + "\n")
    if args.update:
        path = Path(args.update)
        costs = json.loads(path.read_text()) if path.exists() else {"devices": {}}
        old = costs["devices"].get(kind, {})
        entry["models"] = {**old.get("models", {}), **figures}
        if old.get("models"):  # the device's description and start-up stay; each model carries its own provenance
            entry = {**entry, **{k: old[k] for k in ("name", "source", "measured_on", "load_average", "seconds",
                                                     "job_startup_s") if k in old}}  # fmt: skip
        if host:
            entry["host"] = host
        costs["devices"][kind] = {**old, **entry}
        path.write_text(json.dumps(costs, indent=2) + "\n")
        print(f"updated devices.{kind} of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

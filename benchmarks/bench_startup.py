"""The fixed cost every workflow job pays, and where a default run's time goes.

Measures, for one or more checkouts of this repository (``--repo``, default this one; give an older commit's
worktree too to compare before/after), each as the median of ``--repeat`` fresh processes:

* ``parse``: ``snakemake -n`` on the test config in an empty directory (parsing the Snakefile and its includes,
  validating the config, building the first DAG) -- what every job pays again on a cluster;
* ``import <module>``: a Python process that imports one stage module (what a job's adapter script imports);
* ``first SGD step``: the first optimizer step of a fresh process, ``torch.optim.SGD`` and ``lpntk.optim.SGD``
  (the former imports ``torch._dynamo``), timed inside the process;
* ``no-op job``: a process like Snakemake's script job -- import ``snakemake.script`` (the preamble), the adapter
  imports of a cheap stage (``lpntk.stages.common``), open and close its MLflow run inside a live invocation
  (``init_store`` done beforehand, as the Snakefile's ``onstart``), live and spooled.

``--dag`` also runs the default config (``snakemake --cores 2``) from a fresh clone of each repo and prints the wall
time and every job's benchmark time (``results/*/benchmarks``). Usage::

    python benchmarks/bench_startup.py --repeat 5
    git worktree add /tmp/lpntk-before 7886d48
    python benchmarks/bench_startup.py --repo /tmp/lpntk-before --repo . --dag
    python benchmarks/bench_startup.py --dag --skip-startup --keep /tmp/dag   # keep the run (tools/check_mlflow_ui.py)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE_MODULES = [
    "lpntk.stages.common",
    "lpntk.stages.select_reference_stage",
    "lpntk.stages.scores_stage",
    "lpntk.stages.prune_stage",
    "lpntk.stages.cluster_stage",
    "lpntk.stages.pruning_table_stage",
    "lpntk.stages.forgetting_table_stage",
    "lpntk.stages.summary_stage",
    "lpntk.stages.kernel_stage",
    "lpntk.stages.train_stage",
]

NOOP = """
import os, sys, time
t0 = time.perf_counter()
import snakemake.script  # the preamble of a Snakemake script job
from lpntk.stages.common import job_log, tracking_run
kw = {{"live": {live}}} if {new} else {{}}
with job_log(os.devnull):
    with tracking_run("noop", "bench", {{"a": 1}}, {{"enabled": True}}, **kw) as run:
        run.log_metrics({{"x": 1.0}})
print(time.perf_counter() - t0)
"""

FIRST_STEP = """
import time, torch
m = torch.nn.Linear(64, 10)
x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
t0 = time.perf_counter()
if {ours}:
    from lpntk.optim import SGD
else:
    from torch.optim import SGD
opt = SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
opt.zero_grad()
torch.nn.functional.cross_entropy(m(x), y).backward()
opt.step()
print(time.perf_counter() - t0)
"""

INIT = """
from lpntk.tracking import init_store
import json, os
init_store(["bench"])
print(os.environ["LPNTK_MLFLOW_RUNS"])
"""


def _env(repo: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LPNTK_MLFLOW_RUNS")}
    env["PYTHONPATH"] = str(repo)
    return env


def _wall(cmd: list[str], cwd: Path, env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - t0


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s (min {min(values):.2f})"


def measure(repo: Path, repeat: int) -> dict[str, str]:
    env = _env(repo)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cmd = [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(repo / "Snakefile"),
            "--directory",
            str(tmp),
            "--configfile",
            str(repo / ".test/config/config.yaml"),
            "--cores",
            "1",
            "-n",
            "-q",
        ]
        out["parse (snakemake -n)"] = _median([_wall(cmd, tmp, env) for _ in range(repeat)])
        for mod in STAGE_MODULES:
            try:
                t = [_wall([sys.executable, "-c", f"import {mod}"], tmp, env) for _ in range(repeat)]
                out[f"import {mod}"] = _median(t)
            except subprocess.CalledProcessError:
                out[f"import {mod}"] = "n/a (not in this checkout)"
        state = (
            subprocess.run([sys.executable, "-c", INIT], cwd=tmp, env=env, check=True, capture_output=True, text=True)
            .stdout.strip()
            .splitlines()[-1]
        )
        # the first optimizer step of a process (torch.optim's imports torch._dynamo; lpntk.optim does not)
        for ours in [False, True] if (repo / "lpntk" / "optim.py").is_file() else [False]:
            code = FIRST_STEP.format(ours=ours)
            runs = [subprocess.run([sys.executable, "-c", code], cwd=tmp, env=env, check=True, capture_output=True,
                                   text=True) for _ in range(repeat)]  # fmt: skip
            t = [float(r.stdout.split()[-1]) for r in runs]
            out[f"first SGD step of a process ({'lpntk.optim' if ours else 'torch.optim'})"] = _median(t)
        job_env = {**env, "LPNTK_MLFLOW_RUNS": state}
        new = (repo / "lpntk" / "tracking" / "_run.py").is_file()
        for live in [True, False] if new else [True]:
            code = NOOP.format(live=live, new=new)
            t = [_wall([sys.executable, "-c", code], tmp, job_env) for _ in range(repeat)]
            out[f"no-op job ({'live' if live else 'spooled'} MLflow run)"] = _median(t)
    return out


def run_dag(repo: Path, keep: Path | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clone = keep / repo.name if keep else Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
        env = _env(clone)
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "snakemake", "--cores", "2", "-q"],
            cwd=clone,
            env=env,
            check=True,
            capture_output=True,
        )
        wall = time.perf_counter() - t0
        print(f"\n{repo}: default DAG from a fresh clone: {wall:.1f} s wall")
        rows = []
        for tsv in sorted((clone / "results").rglob("benchmarks/**/*.tsv")):
            lines = tsv.read_text().splitlines()
            rows.append((float(lines[1].split("\t")[0]), str(tsv.relative_to(clone / "results"))))
        for s, name in sorted(rows, reverse=True):
            print(f"  {s:7.2f} s  {name}")
        print(f"  {sum(s for s, _ in rows):7.2f} s  sum over {len(rows)} jobs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", action="append", type=Path, help="checkout to measure (repeatable; default: this one)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dag", action="store_true", help="also run the default config from a fresh clone")
    ap.add_argument("--keep", type=Path, help="clone into KEEP/<repo name> and keep it (its results, its MLflow store)")
    ap.add_argument("--skip-startup", action="store_true", help="only the --dag runs")
    args = ap.parse_args()
    repos = [r.resolve() for r in (args.repo or [REPO])]
    results = {} if args.skip_startup else {r: measure(r, args.repeat) for r in repos}
    keys = list(dict.fromkeys(k for res in results.values() for k in res))
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("| measure | " + " | ".join(str(r) for r in repos) + " |")
    print("|---|" + "---|" * len(repos))
    for k in keys:
        print(f"| {k} | " + " | ".join(results[r].get(k, "") for r in repos) + " |")
    if args.dag:
        for r in repos:
            run_dag(r, args.keep)


if __name__ == "__main__":
    main()

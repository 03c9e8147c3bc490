"""Assertions after the tiny workflow ran under SLURM (tests/slurm/test_slurm.sh).

    python tests/slurm/check_run.py --workdir W --tracking-uri http://127.0.0.1:PORT --experiment lpntk-tiny \
        --artifacts-dir A --run-uuid UUID --summary SUMMARY.tsv [--killed killed.json]

* every output Snakemake knows of (``snakemake --summary``) exists;
* SLURM accounting (sacct, by the plugin's job name = the run's UUID) lists only COMPLETED jobs, except the one
  the test cancelled, which is CANCELLED and was followed by a COMPLETED retry with the same comment;
* MLflow (through the server): one FINISHED ``workflow`` parent run; every rule that ran as a SLURM job has
  FINISHED runs under that parent; no FAILED run but the cancelled job's; no run left RUNNING; the cancelled job
  (cancelled while it waited at its hold point, lpntk.stages.common.hold_point, so its run could not have finished
  first) has its run KILLED or FAILED, and its retry a FINISHED run; artifacts went through the server
  (experiment artifact location ``mlflow-artifacts:``) into --artifacts-dir;
* no SQLite store or file store was created in the working directory (no job fell back to sqlite:///mlflow.db).
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

failures: list[str] = []


def check(cond: bool, msg: str) -> None:
    print(("ok    " if cond else "FAIL  ") + msg)
    if not cond:
        failures.append(msg)


def rule_of(comment: str) -> str:
    m = re.fullmatch(r"rule_(.+?)(_wildcards_.*)?", comment)
    return m.group(1) if m else comment


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--artifacts-dir", type=Path, required=True)
    ap.add_argument("--run-uuid", required=True)
    ap.add_argument("--summary", type=Path, required=True)
    ap.add_argument("--killed", type=Path)
    args = ap.parse_args()
    killed = json.loads(args.killed.read_text()) if args.killed else None

    # ---- outputs -----------------------------------------------------------------------------------------
    rows = list(csv.DictReader(args.summary.open(), delimiter="\t"))
    check(len(rows) > 0, f"snakemake --summary lists {len(rows)} output files")
    missing = [r["output_file"] for r in rows if not (args.workdir / r["output_file"]).exists()]
    check(not missing, f"every output exists (missing: {missing[:5]})")
    not_ok = [(r["output_file"], r["status"]) for r in rows if r["status"] != "ok"]
    check(not not_ok, f"--summary status ok for all (others: {not_ok[:5]})")
    check((args.workdir / "results" / "summary.md").is_file(), "results/summary.md exists")
    # every file a job left under results/ is a declared output, log or benchmark (jobs run on other hosts and
    # only declared files are checked, cleaned before a retry, or trusted by a rerun)
    declared = {r["output_file"] for r in rows}
    declared |= {f.strip() for r in rows for f in (r.get("log-file(s)") or "").split(",") if f.strip()}
    present = {str(p.relative_to(args.workdir)) for p in (args.workdir / "results").rglob("*") if p.is_file()}
    undeclared = sorted(f for f in present - declared if "/benchmarks/" not in f)
    check(not undeclared, f"no undeclared files under results/ ({undeclared[:8]})")
    top = sorted(p.name for p in args.workdir.iterdir() if p.name not in ("results", ".snakemake", ".lpntk"))
    check(not top, f"nothing but results/, .snakemake/ and .lpntk/ in the working directory ({top})")
    # .lpntk/mlflow-spool holds the cheap jobs' runs until the invocation logs them: nothing may be left there
    spool = args.workdir / ".lpntk" / "mlflow-spool"
    left = sorted(p.name for p in spool.iterdir()) if spool.is_dir() else []
    check(not left, f"every spooled MLflow run was logged by the invocation (left: {left[:5]})")

    # ---- SLURM accounting --------------------------------------------------------------------------------
    out = subprocess.run(
        [
            "sacct",
            "-X",
            "--parsable2",
            "--noheader",
            "--starttime",
            "now-1days",
            "--name",
            args.run_uuid,
            "--format",
            "JobIDRaw,State,Comment%300,Account,Partition,AllocCPUS,ReqMem,Elapsed,ReqTRES%200",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    keys = ["id", "state", "comment", "account", "partition", "cpus", "mem", "elapsed", "tres"]
    jobs = [dict(zip(keys, line.split("|"), strict=True)) for line in out.splitlines() if line.strip()]
    check(len(jobs) > 0, f"sacct lists {len(jobs)} SLURM jobs of run {args.run_uuid}")
    print("      jobs per rule:", dict(collections.Counter(rule_of(j["comment"]) for j in jobs)))
    print("      elapsed per job:", ", ".join(f"{rule_of(j['comment'])}={j['elapsed']}" for j in jobs))
    bad = [j for j in jobs if j["state"] != "COMPLETED" and not (killed and j["id"] == killed.get("jobid"))]
    check(not bad, f"all SLURM jobs COMPLETED except the cancelled one (others: {bad[:3]})")
    for j in bad:  # a failed job's SLURM log is kept by the plugin: show its end
        for log in (args.workdir / ".snakemake" / "slurm_logs").rglob(f"{j['id']}.log"):
            print(f"      --- {log} (last 40 lines)")
            print("\n".join("      " + line for line in log.read_text(errors="replace").splitlines()[-40:]))
    gpu = [j["comment"] for j in jobs if "gpu" in j["tres"]]
    check(not gpu, f"no job asked for a GPU (device: cpu) ({gpu[:3]})")
    print(
        "      (rule, cpus, mem, account, partition):",
        sorted({(rule_of(j["comment"]), j["cpus"], j["mem"], j["account"], j["partition"]) for j in jobs}),
    )
    completed_rules = {rule_of(j["comment"]) for j in jobs if j["state"] == "COMPLETED"}

    if killed is not None:
        check("jobid" in killed, f"a job was cancelled mid-run ({killed})")
        if "jobid" in killed:
            kj = [j for j in jobs if j["id"] == killed["jobid"]]
            check(bool(kj) and kj[0]["state"].startswith("CANCELLED"), f"job {killed['jobid']} is CANCELLED in sacct")
            retry = [j for j in jobs if j["comment"] == killed["comment"] and int(j["id"]) > int(killed["jobid"])]
            check(
                any(j["state"] == "COMPLETED" for j in retry),
                f"the retry of {killed['comment']} COMPLETED (jobs {[j['id'] for j in retry]})",
            )
            logs = list((args.workdir / ".snakemake" / "slurm_logs").rglob(f"{killed['jobid']}.log"))
            check(bool(logs), f"the cancelled job's SLURM log is kept ({[str(p) for p in logs]})")

    # ---- MLflow ------------------------------------------------------------------------------------------
    from mlflow.tracking import MlflowClient

    client = MlflowClient(args.tracking_uri)
    exp = client.get_experiment_by_name(args.experiment)
    check(exp is not None, f"experiment {args.experiment} exists on {args.tracking_uri}")
    if exp is None:
        return 1
    check(
        exp.artifact_location.startswith("mlflow-artifacts:"),
        f"artifacts are proxied by the server (artifact_location={exp.artifact_location})",
    )
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    by_rule: dict[str, list] = collections.defaultdict(list)
    for r in runs:
        by_rule[r.data.tags.get("lpntk.rule", "?")].append(r)
    print(
        "      runs per rule:", {k: collections.Counter(r.info.status for r in v) for k, v in sorted(by_rule.items())}
    )
    parents = by_rule.pop("workflow", [])
    check(
        len(parents) == 1 and parents[0].info.status == "FINISHED",
        f"one FINISHED workflow parent run ({[p.info.status for p in parents]})",
    )
    parent_id = parents[0].info.run_id if parents else None
    children = [r for v in by_rule.values() for r in v]
    check(
        all(r.data.tags.get("mlflow.parentRunId") == parent_id for r in children),
        "every job run is a child of the workflow run",
    )
    finished_rules = {k for k, v in by_rule.items() if any(r.info.status == "FINISHED" for r in v)}
    check(
        completed_rules <= finished_rules,
        f"every rule that ran as a SLURM job has a FINISHED run (without: {sorted(completed_rules - finished_rules)})",
    )
    cancelled = killed.get("run_id") if killed else None
    failed = [
        (r.data.tags.get("lpntk.rule"), r.info.run_id)
        for r in children
        if r.info.status == "FAILED" and r.info.run_id != cancelled
    ]
    check(not failed, f"no FAILED run but the cancelled job's ({failed})")
    running = {r.info.run_id for r in children if r.info.status == "RUNNING"}
    check(not running, f"no run left RUNNING ({sorted(running)})")
    expected_running = {killed["run_id"]} if killed and "run_id" in killed else set()
    if expected_running:  # scancel sends SIGTERM: the job closes its own run as KILLED (lpntk.tracking.Terminated)
        check(bool(killed.get("held")), "the job was cancelled while it waited at its hold point")
        status = {r.info.run_id: r.info.status for r in children}
        killed_status = [status.get(i) for i in expected_running]
        check(
            killed_status in (["KILLED"], ["FAILED"]),
            f"the cancelled job's run ended KILLED or FAILED ({killed_status})",
        )
    if expected_running:
        seed = killed.get("seed")
        retried = [
            r
            for r in by_rule.get("train", [])
            if r.info.status == "FINISHED" and (seed is None or r.data.tags.get("lpntk.seed") == seed)
        ]
        check(bool(retried), f"the retried job logged a FINISHED run (seed {seed})")
    with_artifacts = [r for r in children if client.list_artifacts(r.info.run_id)]
    files = [p for p in args.artifacts_dir.rglob("*") if p.is_file()]
    check(
        bool(with_artifacts) and bool(files),
        f"{len(with_artifacts)} runs have artifacts, {len(files)} files under {args.artifacts_dir}",
    )

    # ---- no store on the shared filesystem ----------------------------------------------------------------
    stray = [str(p) for p in args.workdir.rglob("*") if p.suffix in (".db", ".sqlite") or p.name == "mlruns"]
    check(not stray, f"no SQLite / file MLflow store in the working directory ({stray[:5]})")

    print(f"\n{len(failures)} check(s) failed" if failures else "\nall checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

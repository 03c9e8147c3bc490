"""Cancel one running job of a rule at a point the test controls; record what was cancelled.

Used by tests/slurm/test_slurm.sh while the workflow runs under SLURM with ``LPNTK_TEST_HOLD=<file>`` in the jobs'
environment (lpntk.stages.common.hold_point: the first job of the rule stops right after opening its MLflow run,
and writes its SLURM job id and run id to <file>):

    python tests/slurm/kill_one.py --rule train --hold HOLD --tracking-uri http://127.0.0.1:PORT \
        --experiment lpntk-tiny --out killed.json --timeout 600

It waits for the hold file, checks that `squeue` lists its job RUNNING with the comment ``rule_<rule>_...`` (the
plugin's job comment) and MLflow its run RUNNING, then `scancel`s the job while it waits -- so the run cannot have
finished first -- and creates ``<hold>.release`` when it could not (a held job never waits out its timeout because
of this script). Writes {"jobid", "comment", "run_id", "seed", "held": true} to --out, or {"error": ...} when
nothing could be cancelled in time (exit status 1).

Without --hold (no hold in the jobs) it cancels the first RUNNING job of the rule whose MLflow run is RUNNING,
--settle seconds later: a race with the job's end, which the hold avoids.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path


def running_jobs(rule: str) -> list[tuple[str, str]]:
    out = subprocess.run(
        ["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k"], capture_output=True, text=True, check=False
    ).stdout
    jobs = []
    for line in out.splitlines():
        jobid, _, comment = line.partition("|")
        if re.fullmatch(rf"rule_{re.escape(rule)}(_wildcards_.*)?", comment.strip()):
            jobs.append((jobid.strip(), comment.strip()))
    return jobs


def cancel_held(hold: Path, rule: str, client, deadline: float) -> dict:
    """Wait for the job holding at ``hold``, check it in squeue and MLflow, cancel it: what was cancelled."""
    while not hold.is_file():
        if time.time() > deadline:
            return {"error": f"no {rule} job took the hold {hold} in time"}
        time.sleep(0.5)
    info = json.loads(hold.read_text())
    jobid = info.get("slurm_job_id")
    if info.get("rule") != rule or not jobid:
        return {"error": f"the hold {hold} was taken by {info}, not by a SLURM job of rule {rule}"}
    jobs = dict(running_jobs(rule))
    if jobid not in jobs:
        return {"error": f"job {jobid} holding {hold} is not RUNNING in squeue as a {rule} job ({jobs})"}
    status = client.get_run(info["run_id"]).info.status if info.get("run_id") else None
    if status != "RUNNING":
        return {"error": f"job {jobid} holds with MLflow run {info.get('run_id')} in status {status}, not RUNNING"}
    subprocess.run(["scancel", jobid], check=True)
    print(f"kill_one: cancelled SLURM job {jobid} ({jobs[jobid]}) while it held, MLflow run {info['run_id']} RUNNING")
    seed = None if info.get("seed") is None else str(info["seed"])
    return {"jobid": jobid, "comment": jobs[jobid], "run_id": info["run_id"], "seed": seed, "held": True}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rule", default="train")
    ap.add_argument("--hold", type=Path, help="the jobs' LPNTK_TEST_HOLD file (cancel the job that holds there)")
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--settle", type=float, default=2.0)
    args = ap.parse_args()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(args.tracking_uri)
    deadline = time.time() + args.timeout
    result: dict = {"error": f"no RUNNING {args.rule} job with a RUNNING MLflow run within {args.timeout:.0f}s"}
    if args.hold is not None:
        try:
            result = cancel_held(args.hold, args.rule, client, deadline)
        finally:  # a held job not cancelled goes on (a cancelled one is never released: it must not finish first)
            if "jobid" not in result:
                Path(f"{args.hold}.release").touch()
    while args.hold is None and time.time() < deadline:
        jobs = running_jobs(args.rule)
        exp = client.get_experiment_by_name(args.experiment) if jobs else None
        if exp is not None:
            runs = client.search_runs(
                [exp.experiment_id],
                filter_string=f"tags.`lpntk.rule` = '{args.rule}' and attributes.status = 'RUNNING'",
            )
            for jobid, comment in jobs:
                # the wildcards end with the seed for rules that have one (train: <ds>_<seed>)
                seed = comment.rsplit("_", 1)[-1] if "_wildcards_" in comment else None
                mine = [r for r in runs if seed is None or r.data.tags.get("lpntk.seed") == seed]
                if mine:
                    time.sleep(args.settle)
                    subprocess.run(["scancel", jobid], check=True)
                    result = {"jobid": jobid, "comment": comment, "run_id": mine[0].info.run_id, "seed": seed}
                    print(f"kill_one: cancelled SLURM job {jobid} ({comment}), MLflow run {mine[0].info.run_id}")
                    break
            if "jobid" in result:
                break
        time.sleep(1)
    with open(args.out, "w") as fh:
        json.dump(result, fh)
    if "error" in result:
        print(f"kill_one: {result['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

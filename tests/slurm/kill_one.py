"""Cancel one running job of a rule mid-run, once its MLflow run has started; record what was cancelled.

Used by tests/slurm/test_slurm.sh while the workflow runs under SLURM:

    python tests/slurm/kill_one.py --rule train --tracking-uri http://127.0.0.1:PORT --experiment lpntk-tiny \
        --out killed.json --timeout 600

It polls `squeue` for a RUNNING job whose comment is ``rule_<rule>_wildcards_<...>`` (the plugin's job comment)
and MLflow for a RUNNING run tagged ``lpntk.rule=<rule>`` that this job opened (same seed tag when the rule has a
seed), waits --settle seconds so the job is busy, then `scancel`s it. Writes {"jobid", "comment", "run_id",
"seed"} to --out, or {"error": ...} when nothing could be cancelled in time (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time


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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rule", default="train")
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
    while time.time() < deadline:
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

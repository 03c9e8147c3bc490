"""Check a workflow's MLflow store as a user sees it: serve it, screenshot its pages, and check every job has its runs.

    python tools/check_mlflow_ui.py --workdir /scratch/run1 --out ui-check/

1. serves the store (``sqlite:///<workdir>/mlflow.db``, or ``--store``) with ``mlflow ui --host 127.0.0.1 --port
   <free port>``;
2. through the REST API (``/api/2.0/mlflow/experiments/search``, ``/api/2.0/mlflow/runs/search``) checks, per
   dataset, that the experiment ``<prefix>-<dataset>`` exists and is tagged as model training
   (``mlflow.experimentKind``), and that every rule that ran -- the rules with a job log under
   ``<workdir>/results/<dataset>/logs/`` (``results/logs/`` for the rules over all datasets) -- and the invocation
   (rule ``workflow``) have at least one FINISHED run; prints a table of runs by rule and status;
3. takes headless screenshots with Chromium (``chromium`` on the PATH, or ``--chromium``) of each experiment page as
   a plain link opens it (``<experiment>-plain.png``: MLflow 3.17 shows its GenAI overview there), as the link the
   workflow prints opens it (``<experiment>-runs.png``: the runs table) and of the latest invocation's run page
   (``<experiment>-workflow-run.png``: its description lists what the invocation produced); and checks in the
   rendered page that the runs table lists the experiment's runs by name.

Exits 1 when a check fails, 0 otherwise. ``--no-browser`` skips step 3; ``--small`` also writes 1000-pixel-wide
palette copies of the screenshots (``*-small.png``, what ``docs/screenshots/`` holds). Not part of the test suite:
it needs Chromium (``apt-get install chromium``) and a finished workflow run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

from lpntk.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, experiment_url, run_url

BASE_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
    "--virtual-time-budget=15000",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expected_rules(workdir: Path) -> dict[str, set[str]]:
    """Per dataset, the rules that ran: those with a job log (``results/<ds>/logs/<rule>.log`` or
    ``results/<ds>/logs/<rule>/...``); the rules of ``results/logs/`` (summary) log a run in every dataset."""
    results = workdir / "results"
    every = {p.relative_to(results / "logs").parts[0].removesuffix(".log") for p in results.glob("logs/**/*.log")}
    out = {}
    for logs in sorted(results.glob("*/logs")):
        rules = {p.relative_to(logs).parts[0].removesuffix(".log") for p in logs.rglob("*.log")}
        out[logs.parent.name] = rules | every | {"workflow"}
    return out


def api(base: str, endpoint: str, body: dict) -> dict:
    req = urllib.request.Request(
        f"{base}/api/2.0/mlflow/{endpoint}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def search_all(base: str, endpoint: str, body: dict, key: str) -> list[dict]:
    items, token = [], None
    while True:
        page = api(base, endpoint, {**body, **({"page_token": token} if token else {})})
        items += page.get(key, [])
        token = page.get("next_page_token")
        if not token:
            return items


def serve(uri: str, port: int, log_path: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", "1"]  # one worker starts in seconds; four take minutes on a busy 2-core machine
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"mlflow ui exited with {proc.returncode}; see {log_path}")
        try:
            api(base, "experiments/search", {"max_results": 1})
            return proc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    stop(proc)
    raise SystemExit(f"mlflow ui did not answer on {base} within 300 s; see {log_path}")


def stop(proc: subprocess.Popen) -> None:
    """End the server and the workers it started (its own process group, started by this script)."""
    try:
        os.killpg(proc.pid, 15)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, 9)


def chromium(binary: str, url: str, *, screenshot: Path | None = None, timeout: float = 600) -> str:
    """Load ``url`` in a fresh headless Chromium profile; write a screenshot or return the rendered DOM."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [binary, *BASE_FLAGS, f"--user-data-dir={profile}"]
        cmd += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
        proc = subprocess.Popen(
            [*cmd, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the browser and the helpers it started
            proc.communicate()
            raise SystemExit(f"chromium did not finish loading {url} within {timeout:g} s (a busy machine?)") from None
    if screenshot is not None and not screenshot.is_file():
        raise SystemExit(f"chromium wrote no screenshot of {url}:\n{err[-2000:]}")
    return out


def small_copy(png: Path, width: int = 1000) -> Path:
    from PIL import Image

    out = png.with_name(png.stem + "-small.png")
    with Image.open(png) as im:
        im = im.convert("RGB")
        im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
        im.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
    return out


def check_runs(base: str, expected: dict[str, set[str]], prefix: str) -> tuple[list[str], dict[str, dict]]:
    """The failed checks, and per dataset its experiment and runs (REST API)."""
    failures, found = [], {}
    experiments = search_all(base, "experiments/search", {"max_results": 1000}, "experiments")
    by_name = {e["name"]: e for e in experiments}
    for ds, rules in expected.items():
        name = f"{prefix}-{ds}" if prefix else ds
        exp = by_name.get(name)
        if exp is None:
            failures.append(f"{name}: no such experiment")
            continue
        tags = {t["key"]: t["value"] for t in exp.get("tags", [])}
        if tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            failures.append(f"{name}: tag {EXPERIMENT_KIND_TAG} is {tags.get(EXPERIMENT_KIND_TAG)!r}")
        runs = search_all(base, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 1000}, "runs")
        counts: dict[str, Counter] = {}
        for r in runs:
            rtags = {t["key"]: t["value"] for t in r["data"].get("tags", [])}
            counts.setdefault(rtags.get("lpntk.rule", "?"), Counter())[r["info"]["status"]] += 1
        print(f"\n{name} (experiment {exp['experiment_id']}): {len(runs)} runs")
        print(f"  {'rule':<18} {'ran':<4} {'runs':>5}  statuses")
        for rule in sorted(set(counts) | rules):
            c = counts.get(rule, Counter())
            ok = c["FINISHED"] >= 1 or rule not in rules
            status = ", ".join(f"{n} {s}" for s, n in sorted(c.items())) or "-"
            ran, mark = "yes" if rule in rules else "no", "" if ok else "  <-"
            print(f"  {rule:<18} {ran:<4} {sum(c.values()):>5}  {status}{mark}")
            if not ok:
                failures.append(f"{name}: rule {rule} ran but has no FINISHED run ({status})")
        found[ds] = {"experiment": exp, "runs": runs}
    return failures, found


def screenshots(binary: str, base: str, found: dict[str, dict], out: Path, small: bool, prefix: str) -> list[str]:
    failures = []
    for ds, entry in found.items():
        exp_id, name = entry["experiment"]["experiment_id"], f"{prefix}-{ds}" if prefix else ds
        workflow = [
            r
            for r in entry["runs"]
            if any(t["key"] == "lpntk.rule" and t["value"] == "workflow" for t in r["data"].get("tags", []))
        ]
        latest = max(workflow, key=lambda r: int(r["info"]["start_time"]), default=None)
        pages = {
            f"{name}-plain.png": f"{base}/#/experiments/{exp_id}",
            f"{name}-runs.png": experiment_url(exp_id, base),
        }
        if latest is not None:
            pages[f"{name}-workflow-run.png"] = run_url(exp_id, latest["info"]["run_id"], base)
        for file, url in pages.items():
            chromium(binary, url, screenshot=out / file)
            print(f"  {out / file}  <- {url}")
            if small:
                small_copy(out / file)
        dom = chromium(binary, experiment_url(exp_id, base))
        names = {r["info"].get("run_name") for r in entry["runs"]} - {None, ""}
        shown = sorted(n for n in names if n in dom)
        if not shown:
            failures.append(f"{name}: the runs table at {experiment_url(exp_id, base)} shows none of its run names")
        else:
            print(f"  the runs table shows {len(shown)} of {len(names)} run names (e.g. {shown[0]!r})")
    return failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("."), help="the workflow's working directory")
    ap.add_argument("--store", help="tracking URI (default: sqlite:///<workdir>/mlflow.db)")
    ap.add_argument("--prefix", default="lpntk", help="the config's mlflow.experiment_prefix")
    ap.add_argument("--out", type=Path, default=Path("mlflow-ui-check"), help="folder for screenshots and logs")
    ap.add_argument("--port", type=int, default=0, help="port of the UI (0: a free one)")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    ap.add_argument("--no-browser", action="store_true", help="REST checks only")
    ap.add_argument("--small", action="store_true", help="also write small palette copies of the screenshots")
    args = ap.parse_args(argv)
    workdir = args.workdir.resolve()
    uri = args.store or f"sqlite:///{workdir / 'mlflow.db'}"
    expected = expected_rules(workdir)
    if not expected:
        print(f"no job logs under {workdir}/results/*/logs: is --workdir a workflow's working directory?")
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    print(f"serving {uri} on {base}")
    server = serve(uri, port, args.out / "mlflow-ui.log")
    try:
        failures, found = check_runs(base, expected, args.prefix)
        if not args.no_browser:
            print("\nscreenshots:")
            failures += screenshots(args.chromium, base, found, args.out, args.small, args.prefix)
    finally:
        stop(server)
    print()
    for f in failures:
        print(f"FAILED: {f}")
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

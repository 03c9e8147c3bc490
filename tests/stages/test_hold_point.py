"""The test-only hold point (lpntk.stages.common.hold_point, LPNTK_TEST_HOLD): the first job of a rule stops with
its MLflow run open until released, so a test cancels it at a defined point (tests/slurm/test_slurm.sh); its run
then ends KILLED; every later job of the rule (the retry) goes through."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lpntk.tracking import RUNS_ENV, init_store

_HELD = """
from lpntk.stages.common import tracking_run
from lpntk.tracking import init_store
init_store(["alpha"])
with tracking_run("train", "alpha", {}, {}, seed=1) as run:
    print("after the hold", flush=True)
"""


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("MLFLOW_TRACKING_URI", RUNS_ENV, "LPNTK_TEST_HOLD", "LPNTK_TEST_HOLD_RULE", "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_a_held_job_waits_with_its_run_open_and_ends_killed_when_cancelled(store, monkeypatch):
    from mlflow.tracking import MlflowClient

    from lpntk.stages.common import tracking_run

    hold = store / "hold.json"
    env = {**os.environ, "LPNTK_TEST_HOLD": str(hold), "SLURM_JOB_ID": "42"}
    proc = subprocess.Popen([sys.executable, "-c", _HELD], cwd=store, env=env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        while not hold.is_file() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        info = json.loads(hold.read_text())
        assert (info["rule"], info["seed"], info["slurm_job_id"], info["pid"]) == ("train", 1, "42", proc.pid)
        client = MlflowClient(f"sqlite:///{store}/mlflow.db")
        assert client.get_run(info["run_id"]).info.status == "RUNNING"  # held: the run cannot have finished
        time.sleep(1)
        assert proc.poll() is None  # still waiting
        os.kill(proc.pid, signal.SIGTERM)  # what scancel sends
        out, _ = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode != 0 and "after the hold" not in out
    assert client.get_run(info["run_id"]).info.status == "KILLED"
    # the retry: the hold is taken, it goes through; another rule is never held
    monkeypatch.setenv("LPNTK_TEST_HOLD", str(hold))
    init_store(["alpha"])
    t0 = time.monotonic()
    with tracking_run("train", "alpha", {}, {}, seed=1) as run:
        retry = run.run_id
    with tracking_run("scores", "alpha", {}, {"enabled": False}):
        pass
    assert time.monotonic() - t0 < 30 and client.get_run(retry).info.status == "FINISHED"


def test_a_hold_ends_when_released(store, monkeypatch):
    from lpntk.stages.common import hold_point

    hold = store / "hold.json"
    monkeypatch.setenv("LPNTK_TEST_HOLD", str(hold))
    monkeypatch.setenv("LPNTK_TEST_HOLD_RULE", "kernel")
    assert hold_point("train", "alpha", None) is None and not hold.exists()  # not the held rule
    (store / "hold.json.release").touch()
    assert hold_point("kernel", "alpha", None)["rule"] == "kernel" and hold.is_file()
    assert hold_point("kernel", "alpha", None) is None  # taken once
    monkeypatch.delenv("LPNTK_TEST_HOLD")
    assert hold_point("kernel", "alpha", None) is None

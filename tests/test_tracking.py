from __future__ import annotations

import json
import multiprocessing as mp
import os

import pytest

from lpntk import tracking
from lpntk.tracking import RUNS_ENV, JobRun, finish_invocation, init_store


def _writer(i: int, env: dict, barrier, cwd: str) -> None:
    os.chdir(cwd)
    os.environ.update(env)
    dataset = "alpha" if i % 2 else "beta"
    barrier.wait()  # all eight start their runs at once
    with JobRun("train", dataset, seed=i, config={"train": {"lr": 0.1, "seeds": [i]}}, params={"seed": i}) as run:
        for step in range(1, 6):
            run.log_metrics({"val_acc": step / 10, "loss": 1 / step}, step=step)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(RUNS_ENV, raising=False)
    return tmp_path


def test_eight_concurrent_writers_on_a_fresh_store(store, monkeypatch):
    from mlflow.tracking import MlflowClient

    runs = init_store(["alpha", "beta"])  # what the Snakefile's onstart does
    assert (store / "mlflow.db").is_file()
    env = {RUNS_ENV: os.environ[RUNS_ENV], "LPNTK_GIT_COMMIT": "test"}
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(8)
    procs = [ctx.Process(target=_writer, args=(i, env, barrier, str(store))) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 8
    finish_invocation("FINISHED")

    client = MlflowClient("sqlite:///mlflow.db")
    for ds, seeds in (("alpha", {1, 3, 5, 7}), ("beta", {0, 2, 4, 6})):
        exp = client.get_experiment_by_name(f"lpntk-{ds}")
        assert exp.experiment_id == runs[ds]["experiment_id"]
        found = client.search_runs([exp.experiment_id], "tags.`lpntk.rule` = 'train'")
        assert {int(r.data.tags["lpntk.seed"]) for r in found} == seeds
        for r in found:
            assert r.info.status == "FINISHED"
            assert r.data.tags["mlflow.parentRunId"] == runs[ds]["parent_run_id"]
            assert r.data.tags["lpntk.dataset"] == ds and r.data.tags["lpntk.git_commit"] == "test"
            assert "lpntk.version.torch" in r.data.tags and len(r.data.tags["lpntk.config_hash"]) == 16
            assert r.data.params["train.lr"] == "0.1"
            hist = client.get_metric_history(r.info.run_id, "val_acc")
            assert sorted(m.step for m in hist) == [1, 2, 3, 4, 5]
        parent = client.get_run(runs[ds]["parent_run_id"])
        assert parent.info.status == "FINISHED" and parent.data.tags["lpntk.rule"] == "workflow"
    default = client.get_experiment_by_name("Default")
    assert default is None or not client.search_runs([default.experiment_id])  # nothing strayed into Default


def test_uri_precedence(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == "sqlite:///mlflow.db"
    assert tracking.tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert tracking.tracking_uri("sqlite:///x.db") == "sqlite:///env.db"


def test_failed_job_marks_run_failed_and_works_without_onstart(store):
    from mlflow.tracking import MlflowClient

    with pytest.raises(RuntimeError):
        with JobRun("kernel", "gamma", seed=None, tags={"class": 3}) as run:
            run_id = run.run_id
            raise RuntimeError("boom")
    r = MlflowClient("sqlite:///mlflow.db").get_run(run_id)
    assert r.info.status == "FAILED" and r.data.tags["lpntk.class"] == "3"


def test_disabled_tracking_writes_nothing(store):
    with JobRun("train", "x", enabled=False) as run:
        run.log_metrics({"a": 1.0}, step=1)
        run.log_artifact("nothing")
    assert not (store / "mlflow.db").exists()


def test_flatten_and_hash_are_stable():
    cfg = {"b": {"c": 1, "d": [1, 2]}, "a": "x"}
    assert tracking.flatten(cfg) == {"b.c": 1, "b.d": json.dumps([1, 2]), "a": "x"}
    assert tracking.config_hash(cfg) == tracking.config_hash({"a": "x", "b": {"d": [1, 2], "c": 1}})

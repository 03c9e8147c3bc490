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

    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
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


def test_uri_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"  # relative paths are made absolute
    assert tracking.tracking_uri("sqlite:///x.db") == f"sqlite:///{tmp_path}/x.db"
    assert tracking.tracking_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri("sqlite:///x.db") == "http://127.0.0.1:5000"


def test_failed_job_marks_run_failed_and_works_without_onstart(store):
    from mlflow.tracking import MlflowClient

    with pytest.raises(RuntimeError):
        with JobRun("kernel", "gamma", seed=None, tags={"class": 3}) as run:
            run_id = run.run_id
            raise RuntimeError("boom")
    r = MlflowClient(f"sqlite:///{store}/mlflow.db").get_run(run_id)
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


def test_spooled_runs_reach_the_store_when_the_invocation_ends(store):
    from mlflow.tracking import MlflowClient

    runs = init_store(["alpha"])
    spool = store / ".lpntk" / "mlflow-spool"
    (store / "table.csv").write_text("a,b\n1,2\n")
    with JobRun("prune", "alpha", config={"pruning": {"keep": [0.5]}}, tags={"n": 3}, live=False) as run:
        run.log_metrics({"n_full": 240.0, "n_random-k0.5@seed1": 120.0}, step=0)  # "@" is no MLflow name
        run.log_metric_history([("loss", 0.5, 1), ("loss", 0.25, 2)])
        run.set_tags({"lpntk.output.table": "table.csv"})
        run.log_artifact(store / "table.csv")
        assert run.run_id is None and len(list(spool.glob("*.json"))) == 1  # a record, no store access
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    exp = runs["alpha"]["experiment_id"]
    assert not client.search_runs([exp], "tags.`lpntk.rule` = 'prune'")  # not logged until the invocation ends
    finish_invocation("FINISHED")
    (r,) = client.search_runs([exp], "tags.`lpntk.rule` = 'prune'")
    assert r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == runs["alpha"]["parent_run_id"]
    assert r.data.metrics["n_full"] == 240.0 and r.data.params["pruning.keep"] == "[0.5]"
    assert r.data.metrics["n_random-k0.5_seed1"] == 120.0
    assert [m.value for m in client.get_metric_history(r.info.run_id, "loss")] == [0.5, 0.25]
    assert r.data.tags["lpntk.n"] == "3" and r.data.tags["lpntk.output.table"] == "table.csv"
    assert [a.path for a in client.list_artifacts(r.info.run_id)] == ["table.csv"]
    assert 0 <= r.info.end_time - r.info.start_time < 60_000  # the job's own times, not the replay's
    assert not list(spool.glob("*.json"))


def test_mlflow_live_false_spools_the_runs_of_every_job(store):
    """mlflow.live: false -- a training job's run (``tracking_run`` without ``live=False``) is spooled like a cheap
    job's and reaches the store when the invocation ends; with the default (true) it is live at once."""
    from mlflow.tracking import MlflowClient

    from lpntk.stages.common import tracking_run

    runs = init_store(["alpha"])
    with tracking_run("train", "alpha", {}, {"live": False}, seed=1) as run:
        run.log_metrics({"val_acc": 0.5}, step=1)
        assert run.run_id is None and len(list((store / ".lpntk" / "mlflow-spool").glob("*.json"))) == 1
    with tracking_run("train", "alpha", {}, {}, seed=2) as run:
        assert run.run_id is not None  # live
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    exp = runs["alpha"]["experiment_id"]
    assert len(client.search_runs([exp], "tags.`lpntk.rule` = 'train'")) == 1
    finish_invocation("FINISHED")
    seeds = sorted(r.data.tags["lpntk.seed"] for r in client.search_runs([exp], "tags.`lpntk.rule` = 'train'"))
    assert seeds == ["1", "2"]


_KILLED = """
import os, signal
from lpntk.tracking import JobRun, init_store
init_store(["alpha"])
live = JobRun("train", "alpha", seed=1).__enter__()
live.log_metrics({"val_acc": 0.5}, step=1)
JobRun("scores", "alpha", live=False).__enter__()
print(live.run_id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_hard_killed_invocation_is_closed_at_the_next_start_and_a_live_one_is_not(store):
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    proc = subprocess.run([sys.executable, "-c", _KILLED], cwd=store, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    killed_job = proc.stdout.split()[-1]
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    assert client.get_run(killed_job).info.status == "RUNNING"  # what the UI showed forever before
    first = init_store(["alpha"])  # the next invocation (this process: alive)
    exp = first["alpha"]["experiment_id"]
    assert client.get_run(killed_job).info.status == "KILLED"
    parents = client.search_runs([exp], "tags.`lpntk.rule` = 'workflow'")
    status = {p.info.run_id: p.info.status for p in parents}
    assert sorted(status.values()) == ["KILLED", "RUNNING"] and status[first["alpha"]["parent_run_id"]] == "RUNNING"
    (spooled,) = client.search_runs([exp], "tags.`lpntk.rule` = 'scores'")  # replayed from the dead job's record
    assert spooled.info.status == "KILLED"
    init_store(["alpha"])  # a second invocation while the first is alive (same host): the first is left alone
    assert client.get_run(first["alpha"]["parent_run_id"]).info.status == "RUNNING"


_TERMINATED = """
import os, signal, time
from lpntk.tracking import JobRun, init_store
init_store(["alpha"])
with JobRun("retrain", "alpha", seed=3) as run:
    print(run.run_id, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # scancel, a time limit
    time.sleep(30)
"""


def test_sigterm_closes_the_jobs_run_as_killed(store):
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    proc = subprocess.run([sys.executable, "-c", _TERMINATED], cwd=store, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Terminated" in proc.stderr
    run_id = proc.stdout.split()[-1]
    assert MlflowClient(f"sqlite:///{store}/mlflow.db").get_run(run_id).info.status == "KILLED"


def test_a_file_store_is_refused_when_jobs_run_on_other_nodes():
    tracking.check_cluster_uri("http://127.0.0.1:5000", remote_jobs=True)
    tracking.check_cluster_uri("sqlite:///mlflow.db", remote_jobs=False)
    for uri in ("sqlite:////shared/mlflow.db", "file:///shared/mlruns", "/shared/mlruns"):
        with pytest.raises(ValueError, match="start an mlflow server"):
            tracking.check_cluster_uri(uri, remote_jobs=True)


def test_experiments_are_tagged_as_model_training_new_and_existing(store):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    old = client.create_experiment("lpntk-beta", tags={tracking.EXPERIMENT_KIND_TAG: "genai_development"})
    runs = init_store(["alpha", "beta"])
    assert runs["beta"]["experiment_id"] == old
    for ds in ("alpha", "beta"):
        exp = client.get_experiment(runs[ds]["experiment_id"])
        assert exp.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.EXPERIMENT_KIND == "custom_model_development"
    lines = finish_invocation("FINISHED")
    alpha = runs["alpha"]["experiment_id"]
    assert f"http://127.0.0.1:5000/#/experiments/{alpha}/runs?workflowType=machine_learning&" in "\n".join(lines)
    assert any(f"--backend-store-uri sqlite:///{store}/mlflow.db" in line for line in lines)


def test_ui_links_open_the_runs_table():
    assert tracking.experiment_url("3") == (
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
        "&orderByKey=tags.%60mlflow.runName%60&orderByAsc=true"
    )
    assert (
        tracking.run_url("3", "ab", "http://h:80/")
        == "http://h:80/#/experiments/3/runs/ab?workflowType=machine_learning"
    )
    assert tracking.ui_base("https://mlflow.example.org/") == "https://mlflow.example.org"
    assert tracking.ui_base("sqlite:////x/mlflow.db") == "http://127.0.0.1:5000"


def test_invocation_description_lists_runs_outputs_and_the_jobs_notes(store):
    from mlflow.tracking import MlflowClient

    runs = init_store(["alpha"])
    parent = runs["alpha"]["parent_run_id"]
    with JobRun("prune", "alpha", live=False) as run:  # spooled: its parent tags travel in the record
        run.set_tags({"lpntk.output.table": "results/alpha/pruning/subsets.csv"})
        assert run.add_invocation_note("claims", "| claim | verdict |\n|---|---|\n| 1 | holds |")
        assert run.set_parent_tags({"lpntk.claims_checked": 1})
    with JobRun("train", "alpha", seed=1) as run:  # live: set at once
        assert run.add_invocation_note("about", "first note")
        run.log_outputs({"summary": "results/alpha/train/seed1/summary.json"})
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    tags = client.get_run(parent).data.tags
    assert tags["lpntk.note.about"] == "first note" and "lpntk.note.claims" not in tags  # not replayed yet
    finish_invocation("FINISHED")
    tags = client.get_run(parent).data.tags
    assert tags["lpntk.claims_checked"] == "1" and tags["lpntk.note.claims"].endswith("| 1 | holds |")
    note = tags["mlflow.note.content"]
    assert "2 job run(s) (2 FINISHED)" in note
    assert "| prune | 1 | 1 FINISHED |" in note and "| train | 1 | 1 FINISHED |" in note
    assert "- **prune**: `results/alpha/pruning/subsets.csv`" in note
    assert "- **train**: `results/alpha/train/seed1/summary.json`" in note
    assert note.index("### about") < note.index("### claims") and note.rstrip().endswith("| 1 | holds |")


def test_parent_tag_names_are_made_valid_for_mlflow(store):
    """A section name MLflow would refuse as a tag key (parentheses, "@") is made valid, not lost at the replay."""
    from mlflow.tracking import MlflowClient

    runs = init_store(["alpha"])
    with JobRun("claims", "alpha", live=False) as run:
        run.add_invocation_note("claims (alpha@1)", "verdicts")
    finish_invocation("FINISHED")
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    tags = client.get_run(runs["alpha"]["parent_run_id"]).data.tags
    assert tags["lpntk.note.claims _alpha_1_"] == "verdicts"
    assert [
        r.info.status for r in client.search_runs([runs["alpha"]["experiment_id"]], "tags.`lpntk.rule` = 'claims'")
    ] == ["FINISHED"]


def test_parent_tags_without_an_invocation_are_a_no_op(store):
    with JobRun("prune", "alpha") as run:  # a stage called from Python: no parent run
        assert run.set_parent_tags({"a": 1}) is False


def test_invocation_note_fits_mlflows_tag_limit():
    from lpntk.tracking._ui import MAX_TAG_LENGTH, invocation_note

    children = [
        ("retrain", "FINISHED", {f"lpntk.output.f{i}": "results/x/" + "y" * 80 + f"{i}.json"}) for i in range(300)
    ]
    note = invocation_note(children, {"claims": "verdicts"})
    assert len(note) <= MAX_TAG_LENGTH and "and 280 more" in note and note.endswith("verdicts")
    assert invocation_note([], {}).startswith("**lpntk workflow invocation**: no job ran")


# ---------------------------------------------------------------------------------------------- metric names, units

# (a job's name, the key written by hand from the rule in lpntk.tracking.metric_key)
_NAMES = [
    ("clusters_d0.05 seed 1_k0.5", "clusters_d0.05_seed_1_k0.5"),  # the cluster stage's settings
    ("claims_primary_not measured", "claims_primary_not_measured"),  # the claims stage's verdicts
    ("claims_not measured", "claims_not_measured"),
    ("n_random-k0.5@seed1", "n_random-k0.5_seed1"),
    ("a  b\tc", "a_b_c"),  # a run of unsafe characters is one "_"
    ("share_cos, tau=0", "share_cos_tau_0"),
    ("x:y/z", "x_y_z"),  # ":" (refused on Windows) and "/" (a path to MLflow)
    ("/lead", "_lead"),
    ("trail/", "trail_"),
    ("a//b", "a_b"),
    ("..", "__"),
    (".hidden", "_hidden"),
    ("`q`'\"", "_q_"),
    ("acc_µ", "acc__"),  # the "_" before a run stays
    ("", "_"),
    (3, "3"),
    ("val_acc", "val_acc"),  # already safe: unchanged
    ("d0.05-own-small-r0.3_test_acc_max", "d0.05-own-small-r0.3_test_acc_max"),
]


@pytest.mark.parametrize(("name", "key"), _NAMES)
def test_metric_key_rule(name, key):
    assert tracking.metric_key(name) == key


@pytest.mark.parametrize("name", [n for n, _ in _NAMES] + ["x" * 300, "a" + " " * 300])
def test_metric_keys_pass_mlflows_validation_and_filters(name):
    """MLflow itself is the reference: its metric-name check (the POSIX rule and the Windows one, which refuses ":")
    passes, and a filter naming the key in backticks -- unquoted where it is letters, digits and "_" -- parses back to
    exactly that key."""
    from mlflow.utils.search_utils import SearchUtils
    from mlflow.utils.validation import _validate_metric_name, path_not_unique

    key = tracking.metric_key(name)
    _validate_metric_name(key)
    assert not path_not_unique(key) and len(key) <= 250
    assert all(c.isascii() and (c.isalnum() or c in "_.-") for c in key), key
    (clause,) = SearchUtils.parse_search_filter(f"metrics.`{key}` > 0.5")
    assert clause["key"] == key
    if key.replace("_", "").isalnum() and not key[0].isdigit():
        assert SearchUtils.parse_search_filter(f"metrics.{key} > 0.5")[0]["key"] == key


def _store_keys(store) -> set[str]:
    import sqlite3

    with sqlite3.connect(store / "mlflow.db") as db:  # what the store holds, read beside MLflow's client
        return {k for (k,) in db.execute("SELECT DISTINCT key FROM metrics")}


@pytest.mark.parametrize("live", [True, False])
def test_metric_names_with_spaces_land_normalised_in_the_spool_and_the_store(store, live):
    from mlflow.tracking import MlflowClient

    runs = init_store(["alpha"])
    spool = store / ".lpntk" / "mlflow-spool"
    logged = {"clusters_d0.05 seed 1_k0.5": 12.0, "claims_not measured": 1.0, "seconds": 0.5}
    with JobRun("cluster", "alpha", seed=1, live=live) as run:
        run.log_metrics(logged)
        run.log_metric_history([("largest_d0.05 seed 1_k0.5", 3.0, 1), ("largest_d0.05 seed 1_k0.5", 4.0, 2)])
    if not live:  # the job's record, before the invocation replays it
        (record,) = (json.loads(p.read_text()) for p in spool.glob("*.json"))
        assert [(k, v, step) for k, v, _, step in record["metrics"]] == [
            ("clusters_d0.05_seed_1_k0.5", 12.0, 0),
            ("claims_not_measured", 1.0, 0),
            ("seconds", 0.5, 0),
            ("largest_d0.05_seed_1_k0.5", 3.0, 1),
            ("largest_d0.05_seed_1_k0.5", 4.0, 2),
        ]
    finish_invocation("FINISHED")
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    exp = runs["alpha"]["experiment_id"]
    (r,) = client.search_runs([exp], "tags.`lpntk.rule` = 'cluster'")
    assert r.data.metrics == {
        "clusters_d0.05_seed_1_k0.5": 12.0,
        "claims_not_measured": 1.0,
        "seconds": 0.5,
        "largest_d0.05_seed_1_k0.5": 4.0,
    }
    assert [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, "largest_d0.05_seed_1_k0.5")] == [
        (1, 3.0),
        (2, 4.0),
    ]
    assert not any(" " in k for k in _store_keys(store))
    assert [x.info.run_id for x in client.search_runs([exp], "metrics.claims_not_measured = 1")] == [r.info.run_id]
    found = client.search_runs([exp], "metrics.`clusters_d0.05_seed_1_k0.5` > 10")
    assert [x.info.run_id for x in found] == [r.info.run_id]


def test_a_record_spooled_with_spaces_in_its_names_is_replayed_normalised(store):
    """A spool record written before the rule (raw names in its metrics) reaches the store normalised, not refused."""
    from mlflow.tracking import MlflowClient

    runs = init_store(["alpha"])
    spool = store / ".lpntk" / "mlflow-spool"
    with JobRun("claims", "alpha", live=False) as run:
        run.log_metrics({"claims_primary_holds": 2.0})
    (path,) = spool.glob("*.json")
    record = json.loads(path.read_text())
    record["metrics"] = [["claims_not measured", 1.0, ts, step] for _, _, ts, step in record["metrics"]]
    path.write_text(json.dumps(record))
    finish_invocation("FINISHED")
    assert _store_keys(store) == {"claims_not_measured"}
    assert not list(spool.glob("*.json")) and not list(spool.glob("*.failed"))
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    (r,) = client.search_runs([runs["alpha"]["experiment_id"]], "tags.`lpntk.rule` = 'claims'")
    assert r.info.status == "FINISHED" and r.data.metrics == {"claims_not_measured": 1.0}


@pytest.fixture
def spool_only(store, monkeypatch):
    """An invocation's environment without its store: ``live=False`` runs write their record and never open MLflow."""
    runs = {"alpha": {"experiment_id": "1", "parent_run_id": "p"}}
    monkeypatch.setenv(RUNS_ENV, json.dumps({"uri": "sqlite:///none.db", "runs": runs, "spool": str(store / "spool")}))
    return store / "spool"


def test_two_names_that_meet_in_one_key_are_refused(spool_only):
    with JobRun("cluster", "alpha", live=False) as run:
        run.log_metrics({"a b": 1.0})
        run.log_metrics({"a b": 2.0}, step=1)  # the same name again is fine
        with pytest.raises(ValueError, match="'a b' and 'a_b'"):
            run.log_metrics({"a_b": 3.0})
    (record,) = (json.loads(p.read_text()) for p in spool_only.glob("*.json"))
    assert [(k, v) for k, v, _, _ in record["metrics"]] == [("a_b", 1.0), ("a_b", 2.0)]


def test_an_accuracy_in_percent_warns_once_per_key(spool_only, caplog):
    def warnings():
        return [r.getMessage() for r in caplog.records if r.name == "lpntk.tracking"]

    with JobRun("pruning_table", "alpha", live=False) as run, caplog.at_level("WARNING", logger="lpntk.tracking"):
        run.log_metrics({"val_acc": 0.978, "test_acc_best_val": 1.0, "n_train": 1293.0, "accuracy_like": 5.0})
        assert not warnings()  # fractions, and names where "acc" is not a word
        run.log_metrics({"random-k0.5_test_acc_max": 97.78, "train_acc": -0.1})
        run.log_metrics({"random-k0.5_test_acc_max": 97.5}, step=1)
    (msg,) = warnings()
    assert "random-k0.5_test_acc_max=97.78" in msg and "train_acc=-0.1" in msg
    assert not (spool_only.parent / "none.db").exists()

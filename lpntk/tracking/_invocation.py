"""One workflow invocation: its parent runs, the runs it leaves behind when killed, and the spooled job runs."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path

from ._store import (
    RUNS_ENV,
    _client,
    _ensure_experiment,
    _retry,
    experiment_name,
    git_commit,
    metric_key,
    tracking_uri,
)
from ._ui import NOTE_PREFIX, NOTE_TAG, invocation_note, ui_lines

log = logging.getLogger("lpntk.tracking")


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, /proc/<pid>/stat field 22), None if gone.

    With the pid it identifies a process even after the pid is reused."""
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError, ValueError):
        return None


def _process_alive(host: str | None, pid: str | None, start: str | None) -> bool | None:
    """Whether the process recorded as (host, pid, start) still runs: None when it ran on another host."""
    if host != socket.gethostname() or not pid:
        return None
    return _process_start(int(pid)) == start


def _this_process() -> dict[str, str]:
    return {
        "lpntk.host": socket.gethostname(),
        "lpntk.pid": str(os.getpid()),
        "lpntk.pid_start": _process_start(os.getpid()) or "",
    }


def _close_children(client, parent_run_id: str, status: str = "KILLED") -> int:
    """Mark the RUNNING job runs of an invocation ``status``; returns how many."""
    run = _retry(client.get_run, parent_run_id)
    found = _retry(
        client.search_runs,
        [run.info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent_run_id}' and attributes.status = 'RUNNING'",
        max_results=10_000,
    )
    for child in found:
        _retry(client.set_terminated, child.info.run_id, status)
    return len(found)


def close_dead_invocations(client, experiment_ids: list[str]) -> list[str]:
    """Mark KILLED the RUNNING invocation (``workflow``) runs whose process is gone, and their RUNNING job runs.

    An invocation killed hard (``kill -9``, power loss) never reaches its ``onerror``; its runs would stay RUNNING in
    the UI forever. An invocation counts as gone when it ran on this host and its process (pid and start time, tags
    ``lpntk.pid`` / ``lpntk.pid_start``) no longer exists; the runs of a live invocation, or of one on another host,
    are never touched. Returns the ids of the invocations closed."""
    closed = []
    for exp_id in experiment_ids:
        found = _retry(client.search_runs, [exp_id], "tags.`lpntk.rule` = 'workflow' and attributes.status = 'RUNNING'")
        for run in found:
            tags = run.data.tags
            if _process_alive(tags.get("lpntk.host"), tags.get("lpntk.pid"), tags.get("lpntk.pid_start")) is False:
                n = _close_children(client, run.info.run_id)
                _retry(client.set_terminated, run.info.run_id, "KILLED")
                log.warning(
                    "MLflow: invocation run %s (pid %s on %s) is no longer running; marked it and %d job run(s) KILLED",
                    run.info.run_id,
                    tags.get("lpntk.pid"),
                    tags.get("lpntk.host"),
                    n,
                )
                closed.append(run.info.run_id)
    return closed


def init_store(
    datasets: list[str],
    uri: str | None = None,
    prefix: str = "lpntk",
    tags: Mapping[str, str] | None = None,
    export: bool = True,
    spool: str | os.PathLike | None = None,
) -> dict[str, dict[str, str]]:
    """Create the store, one experiment per dataset and a parent run per dataset for this invocation.

    Before that, the runs of earlier invocations killed hard are closed (:func:`close_dead_invocations`) and the
    spooled runs they left are replayed. Returns ``{dataset: {"experiment_id", "parent_run_id"}}`` and (with
    ``export``) puts it, with the URI and the spool folder (``spool``, default ``.lpntk/mlflow-spool`` in the working
    directory), in ``os.environ[RUNS_ENV]`` so that jobs started from this process inherit it.
    """
    uri = tracking_uri(uri)
    client = _client(uri)
    commit = git_commit()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    spool_dir = Path(spool or Path(".lpntk") / "mlflow-spool").absolute()
    exp_ids = {ds: _ensure_experiment(client, experiment_name(ds, prefix)) for ds in datasets}
    close_dead_invocations(client, list(exp_ids.values()))
    replay_spool(client, spool_dir, final=False)
    runs: dict[str, dict[str, str]] = {}
    for ds, exp_id in exp_ids.items():
        run_tags = {
            "lpntk.rule": "workflow",
            "lpntk.dataset": ds,
            "lpntk.git_commit": commit,
            "mlflow.runName": f"workflow {stamp}",
            **_this_process(),
            **dict(tags or {}),
        }
        run = _retry(client.create_run, exp_id, tags=run_tags)
        runs[ds] = {"experiment_id": exp_id, "parent_run_id": run.info.run_id}
    if export:
        os.environ[RUNS_ENV] = json.dumps({"uri": uri, "prefix": prefix, "runs": runs, "spool": str(spool_dir)})
        os.environ["LPNTK_GIT_COMMIT"] = commit
    return runs


def finish_invocation(status: str = "FINISHED") -> list[str]:
    """Replay this invocation's spooled job runs, mark its job runs still RUNNING as KILLED (their job was killed:
    nothing runs once the invocation ends), describe each parent run (:func:`describe_invocation`) and close it
    (``FINISHED`` or ``FAILED``). Returns the lines to print at the end of the invocation: how to serve the store and
    the link that opens each experiment's runs table (:func:`lpntk.tracking._ui.ui_lines`)."""
    raw = os.environ.get(RUNS_ENV)
    if not raw:
        return []
    state = json.loads(raw)
    client = _client(state["uri"])
    if state.get("spool"):
        replay_spool(client, Path(state["spool"]), final=True)
    for entry in state["runs"].values():
        n = _close_children(client, entry["parent_run_id"])
        if n:
            log.warning("MLflow: %d job run(s) of this invocation were still RUNNING (killed jobs); marked KILLED", n)
        describe_invocation(client, entry["parent_run_id"])
        _retry(client.set_terminated, entry["parent_run_id"], status)
    return ui_lines(state["uri"], state["runs"], state.get("prefix", "lpntk"))


def describe_invocation(client, parent_run_id: str) -> str:
    """Set the parent run's description (MLflow's ``mlflow.note.content``): the invocation's job runs by rule and
    status, the files they wrote, and the notes jobs added (parent tags ``lpntk.note.<section>``, see
    :meth:`lpntk.tracking.JobRun.add_invocation_note`). Returns the text."""
    parent = _retry(client.get_run, parent_run_id)
    children = _retry(
        client.search_runs,
        [parent.info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        max_results=10_000,
    )
    notes = {k[len(NOTE_PREFIX) :]: v for k, v in parent.data.tags.items() if k.startswith(NOTE_PREFIX)}
    rows = [(c.data.tags.get("lpntk.rule", "?"), c.info.status, c.data.tags) for c in children]
    text = invocation_note(rows, notes)
    _retry(client.set_tag, parent_run_id, NOTE_TAG, text)
    return text


# ---------------------------------------------------------------------------------------------- the spool


def replay_spool(client, spool: Path, final: bool) -> int:
    """Log the spooled job runs in ``spool`` to the store (one run each, with their own start and end times), then
    delete them. A record still RUNNING is replayed as KILLED when ``final`` (its invocation has ended) or when its
    process is gone; else (a live job) it is left for later. Metric names are normalised (:func:`metric_key`) again,
    for records spooled before the rule. Returns the number replayed."""
    if not spool.is_dir():
        return 0
    from mlflow.entities import Metric, Param, RunTag

    done = 0
    for path in sorted(spool.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):  # being written (atomic rename makes this rare) or foreign: next time
            continue
        status = rec["status"]
        if status == "RUNNING":
            alive = _process_alive(rec.get("host"), rec.get("pid"), rec.get("pid_start"))
            if not final and alive is not False:
                continue
            status = "KILLED"
        run_id = None
        try:
            run = _retry(client.create_run, rec["experiment_id"], start_time=rec["start_time"], tags=rec["tags"])
            run_id = run.info.run_id
            params = [Param(k, v) for k, v in rec["params"].items()]
            metrics = [Metric(metric_key(k), v, ts, step) for k, v, ts, step in rec["metrics"]]  # older records
            tags = [RunTag(k, v) for k, v in rec["late_tags"].items()]
            parent_tags = [RunTag(k, v) for k, v in (rec.get("parent_tags") or {}).items()]
            if parent_tags and rec["tags"].get("mlflow.parentRunId"):  # tags the job set on its invocation's run
                _retry(client.log_batch, rec["tags"]["mlflow.parentRunId"], tags=parent_tags)
            for i in range(0, max(len(params), len(metrics), len(tags)), 100):
                _retry(
                    client.log_batch,
                    run_id,
                    metrics=metrics[i : i + 100],
                    params=params[i : i + 100],
                    tags=tags[i : i + 100],
                )
            for file, artifact_path in rec["artifacts"]:
                if Path(file).is_file():
                    _retry(client.log_artifact, run_id, file, artifact_path)
            _retry(client.set_terminated, run_id, status, end_time=rec.get("end_time") or int(time.time() * 1000))
        except Exception as err:  # a record the store refuses must not lose the others, nor fail the invocation
            log.warning("MLflow: could not replay the spooled run %s (%s); kept as %s.failed", path, err, path.name)
            path.rename(path.with_suffix(".failed"))
            if run_id is not None:
                _retry(client.set_terminated, run_id, "FAILED")
            continue
        path.unlink(missing_ok=True)
        done += 1
    return done

"""One MLflow run per workflow job (:class:`JobRun`), logged live or spooled."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ._invocation import _this_process
from ._store import (
    ACCURACY_KEY,
    MAX_KEY,
    RUNS_ENV,
    _client,
    _ensure_experiment,
    _retry,
    config_hash,
    experiment_name,
    flatten,
    git_commit,
    metric_key,
    package_versions,
    tracking_uri,
)
from ._ui import NOTE_PREFIX

log = logging.getLogger("lpntk.tracking")


class _NullRun:
    """Stands in for a :class:`JobRun` when tracking is disabled."""

    run_id = None

    def __getattr__(self, name):
        return lambda *a, **k: None


class Terminated(BaseException):
    """Raised in a job that received SIGTERM (``scancel``, a SLURM time limit, ``kill``), so that its run is closed as
    KILLED and its atomic writes are cleaned up before the process goes (like KeyboardInterrupt, not an Exception)."""


def _on_sigterm(signum, frame):
    raise Terminated(f"terminated by signal {signum}")


def _key(name: Any) -> str:
    """A param or tag name MLflow accepts: characters outside [A-Za-z0-9_-. :/] become "_" (e.g. the "@" of a per-seed
    subset's name). Metric names follow the stricter :func:`lpntk.tracking.metric_key`."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", str(name))


def _now_ms() -> int:
    return int(time.time() * 1000)


class JobRun(AbstractContextManager):
    """One MLflow run for one workflow job, logged live or spooled.

    >>> with JobRun("train", "digits", seed=1, config=ds_cfg) as run:   # doctest: +SKIP
    ...     run.log_metrics({"val_acc": 0.9}, step=1)
    ...     run.log_artifact("results/digits/train/seed1/history.csv")

    ``live=True`` opens the run in the store at once and logs as it goes (for long jobs: their curves show in the UI
    while they run). ``live=False`` -- for the jobs that compute almost nothing, where importing mlflow (about 2 s)
    would be most of the job -- writes the same run to a JSON record in the invocation's spool folder instead, with
    its start and end times; the invocation (the Snakefile's ``onsuccess`` / ``onerror``, or the next ``onstart``
    after a hard kill) replays it into the store (:func:`replay_spool`). Without an invocation (no spool folder:
    a stage called from Python) every run is live.
    """

    def __init__(
        self,
        rule: str,
        dataset: str,
        *,
        seed: int | None = None,
        config: Mapping | None = None,
        params: Mapping | None = None,
        tags: Mapping[str, Any] | None = None,
        uri: str | None = None,
        prefix: str | None = None,
        enabled: bool = True,
        run_name: str | None = None,
        live: bool = True,
    ):
        self.rule, self.dataset, self.seed = rule, dataset, seed
        self.config, self.params, self.tags = dict(config or {}), dict(params or {}), dict(tags or {})
        self.enabled = enabled
        state = json.loads(os.environ.get(RUNS_ENV, "{}") or "{}")
        self.uri = state.get("uri") or tracking_uri(uri)
        self.prefix = prefix if prefix is not None else state.get("prefix", "lpntk")
        self.parent = state.get("runs", {}).get(dataset, {})
        self.spool = Path(state["spool"]) if not live and state.get("spool") and self.parent else None
        self.run_name = run_name or "-".join(
            str(p) for p in (rule, dataset, f"seed{seed}" if seed is not None else None) if p
        )
        self.client = None
        self.run_id = None
        self._record: dict[str, Any] | None = None
        self._record_path: Path | None = None
        self._metric_names: dict[str, str] = {}  # logged metric key -> the job's name for it
        self._unit_warned: set[str] = set()

    def _start_tags(self) -> dict[str, str]:
        tags = {
            "lpntk.rule": self.rule,
            "lpntk.dataset": self.dataset,
            "mlflow.runName": self.run_name,
            "lpntk.config_hash": config_hash(self.config),
            "lpntk.git_commit": git_commit(),
        }
        if self.seed is not None:
            tags["lpntk.seed"] = str(self.seed)
        if self.parent.get("parent_run_id"):
            tags["mlflow.parentRunId"] = self.parent["parent_run_id"]
        tags.update({f"lpntk.version.{k}": v for k, v in package_versions().items()})
        tags.update({k if "." in k else f"lpntk.{k}": str(v) for k, v in self.tags.items()})
        return tags

    def __enter__(self):
        if not self.enabled:
            return _NullRun()
        self._old_sigterm = None
        if threading.current_thread() is threading.main_thread():  # a job's run closes as KILLED on SIGTERM
            self._old_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)
        if self.spool is not None:
            me = _this_process()
            self._record = {
                "experiment_id": self.parent["experiment_id"],
                "start_time": _now_ms(),
                "end_time": None,
                "status": "RUNNING",
                "host": me["lpntk.host"],
                "pid": me["lpntk.pid"],
                "pid_start": me["lpntk.pid_start"],
                "tags": self._start_tags(),
                "late_tags": {},
                "parent_tags": {},
                "params": {},
                "metrics": [],
                "artifacts": [],
            }
            self._record_path = self.spool / f"{self.rule}-{self.dataset}-{uuid.uuid4().hex}.json"
            self.log_params({**flatten(self.config), **flatten(self.params)})
            self._write_record()
            return self
        self.client = _client(self.uri)
        exp_id = self.parent.get("experiment_id") or _ensure_experiment(
            self.client, experiment_name(self.dataset, self.prefix)
        )
        run = _retry(self.client.create_run, exp_id, tags=self._start_tags())
        self.run_id = run.info.run_id
        self.log_params({**flatten(self.config), **flatten(self.params)})
        return self

    def __exit__(self, exc_type, exc, tb):
        if getattr(self, "_old_sigterm", None) is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
        killed = exc_type is not None and issubclass(exc_type, Terminated | KeyboardInterrupt)
        status = "KILLED" if killed else "FAILED" if exc_type else "FINISHED"
        if self._record is not None:
            self._record.update(status=status, end_time=_now_ms())
            self._write_record()
        elif self.client is not None and self.run_id is not None:
            _retry(self.client.set_terminated, self.run_id, status)
        return False

    def _write_record(self) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        tmp = self._record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._record, default=str))
        os.replace(tmp, self._record_path)

    # -- logging -------------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        items = {_key(k)[:MAX_KEY]: str(v)[:6000] for k, v in params.items()}
        if self._record is not None:
            self._record["params"].update(items)
            return
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in items.items()]
        for i in range(0, len(items), 100):
            _retry(self.client.log_batch, self.run_id, params=items[i : i + 100])

    def _metric_key(self, name: Any) -> str:
        """``name``'s key in the store (:func:`lpntk.tracking.metric_key`); ValueError when another name of this run
        already has it (one series would hold two quantities)."""
        key = metric_key(name)
        first = self._metric_names.setdefault(key, str(name))
        if first != str(name):
            raise ValueError(f"metrics {first!r} and {str(name)!r} both normalise to the MLflow key {key!r}")
        return key

    def _check_units(self, points: list[tuple[str, float, int, int]]) -> None:
        """Warn (once per key and run) of an accuracy outside [0, 1]: accuracies are fractions in MLflow."""
        bad = {k: v for k, v, _, _ in points if ACCURACY_KEY.search(k) and not 0.0 <= v <= 1.0}
        bad = {k: v for k, v in bad.items() if k not in self._unit_warned}
        if bad:
            self._unit_warned.update(bad)
            shown = ", ".join(f"{k}={v:g}" for k, v in sorted(bad.items())[:5]) + (", ..." if len(bad) > 5 else "")
            log.warning(
                "MLflow run %s: accuracies outside [0, 1] (%s); lpntk logs accuracies as fractions "
                "(lpntk.tracking), percent belongs in the tables",
                self.run_name,
                shown,
            )

    def log_metric_history(self, items: Iterable[tuple[str, float, int]]) -> None:
        """Many (key, value, step) points at once (a call per point costs ~30 ms on SQLite); None and NaN dropped.
        Keys are normalised by :func:`lpntk.tracking.metric_key` (no spaces: ``"a b"`` is logged as ``"a_b"``)."""
        now = _now_ms()
        points = [(self._metric_key(k), float(v), now, int(step)) for k, v, step in items if v is not None and v == v]
        self._check_units(points)
        if self._record is not None:
            self._record["metrics"].extend(points)
            return
        from mlflow.entities import Metric

        metrics = [Metric(*p) for p in points]
        for i in range(0, len(metrics), 500):
            _retry(self.client.log_batch, self.run_id, metrics=metrics[i : i + 500])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        self.log_metric_history((k, v, step) for k, v in metrics.items())

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        self.log_metrics({key: value}, step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self._record is not None:
            self._record["late_tags"].update({_key(k): str(v) for k, v in tags.items()})
            return
        from mlflow.entities import RunTag

        _retry(self.client.log_batch, self.run_id, tags=[RunTag(_key(k), str(v)) for k, v in tags.items()])

    def set_parent_tags(self, tags: Mapping[str, Any]) -> bool:
        """Set ``tags`` on this job's invocation run (the parent ``workflow`` run of its dataset): at once when the
        run is live, when the invocation replays the spooled run otherwise. False (nothing set) without an
        invocation (a stage called from Python) or with tracking disabled."""
        parent_id = self.parent.get("parent_run_id")
        if not parent_id:
            return False
        items = {_key(k): str(v) for k, v in tags.items()}
        if self._record is not None:
            self._record["parent_tags"].update(items)
            self._write_record()
            return True
        if self.client is None:
            return False
        from mlflow.entities import RunTag

        _retry(self.client.log_batch, parent_id, tags=[RunTag(k, v) for k, v in items.items()])
        return True

    def add_invocation_note(self, section: str, markdown: str) -> bool:
        """Add a section to the invocation run's description: the invocation appends every section (parent tag
        ``lpntk.note.<section>``, in section order, under the heading ``section``) to the list of what it produced
        when it ends (:func:`lpntk.tracking.describe_invocation`). A later note of the same section replaces it."""
        return self.set_parent_tags({f"{NOTE_PREFIX}{section}": markdown})

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        if self._record is not None:
            self._record["artifacts"].append([str(Path(path).absolute()), artifact_path])
            return
        _retry(self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_outputs(self, outputs: Mapping[str, str | os.PathLike], attach_below: int = 2_000_000) -> None:
        """Reference every output by path (tag ``lpntk.output.<name>``); attach those under ``attach_below`` bytes."""
        self.set_tags({f"lpntk.output.{k}": str(v) for k, v in outputs.items()})
        for v in outputs.values():
            p = Path(v)
            if p.is_file() and p.stat().st_size < attach_below:
                self.log_artifact(p)

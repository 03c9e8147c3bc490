"""MLflow tracking: one experiment per dataset, one run per workflow job, a parent run per invocation.

Conventions (``design.md``):

* Tracking URI: ``$MLFLOW_TRACKING_URI`` if set, else the config's ``mlflow.tracking_uri``, else
  ``sqlite:///mlflow.db`` in the working directory. On a cluster point it at an ``mlflow server``; never
  put a SQLite file on NFS.
* :func:`init_store` (the Snakefile's ``onstart``) creates the store, one experiment per dataset and a
  parent run per dataset for this invocation, *before* any job runs: a fresh SQLite store races on schema
  creation, and ``mlflow.set_experiment`` races into the "Default" experiment under parallel jobs. The
  experiment ids and parent run ids reach the jobs through the environment variable ``LPNTK_MLFLOW_RUNS``.
* Every job opens a :class:`JobRun` with an explicit ``experiment_id``, tags ``lpntk.rule``,
  ``lpntk.dataset``, ``lpntk.seed`` (and any others), the config hash, git commit and package versions;
  its params are the job's resolved config; metrics carry their step; small outputs are attached as
  artifacts and large ones referenced by path (tags ``lpntk.output.<name>``).

All client calls are retried with back-off on SQLite's "database is locked".
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import subprocess
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "RUNS_ENV",
    "tracking_uri",
    "experiment_name",
    "init_store",
    "finish_invocation",
    "JobRun",
    "config_hash",
    "flatten",
    "package_versions",
]

RUNS_ENV = "LPNTK_MLFLOW_RUNS"
DEFAULT_URI = "sqlite:///mlflow.db"


def tracking_uri(configured: str | None = None) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or DEFAULT_URI


def experiment_name(dataset: str, prefix: str = "lpntk") -> str:
    return f"{prefix}-{dataset}" if prefix else dataset


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _retry(fn, *args, attempts: int = 10, **kwargs):
    """Call ``fn``, retrying with jittered exponential back-off while SQLite reports a lock."""
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # MlflowException wraps sqlalchemy's OperationalError
            text = str(err).lower()
            if i == attempts - 1 or not ("database is locked" in text or "database table is locked" in text):
                raise
            time.sleep(min(5.0, 0.05 * 2**i) * (0.5 + random.random()))


def _ensure_experiment(client, name: str) -> str:
    exp = _retry(client.get_experiment_by_name, name)
    if exp is not None:
        return exp.experiment_id
    try:
        return _retry(client.create_experiment, name)
    except Exception as err:  # lost a creation race: someone else made it
        exp = _retry(client.get_experiment_by_name, name)
        if exp is None:
            raise err
        return exp.experiment_id


def flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {"a.b.c": value}; lists are kept as JSON strings."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def config_hash(config: Mapping) -> str:
    """Short SHA-256 of the canonical JSON of ``config``."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("lpntk", "torch", "torchvision", "numpy", "pandas", "scikit-learn", "mlflow", "snakemake"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit(path: str | os.PathLike = ".") -> str:
    env = os.environ.get("LPNTK_GIT_COMMIT")
    if env:
        return env
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
        commit = out.stdout.strip() if out.returncode == 0 else "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return commit + ("-dirty" if dirty and commit != "unknown" else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def init_store(
    datasets: list[str],
    uri: str | None = None,
    prefix: str = "lpntk",
    tags: Mapping[str, str] | None = None,
    export: bool = True,
) -> dict[str, dict[str, str]]:
    """Create the store, one experiment per dataset and a parent run per dataset for this invocation.

    Returns ``{dataset: {"experiment_id", "parent_run_id"}}`` and (with ``export``) puts it, with the
    URI, in ``os.environ[RUNS_ENV]`` so that jobs started from this process inherit it.
    """
    uri = tracking_uri(uri)
    client = _client(uri)
    commit = git_commit()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    runs: dict[str, dict[str, str]] = {}
    for ds in datasets:
        exp_id = _ensure_experiment(client, experiment_name(ds, prefix))
        run_tags = {
            "lpntk.rule": "workflow",
            "lpntk.dataset": ds,
            "lpntk.git_commit": commit,
            "mlflow.runName": f"workflow {stamp}",
            **dict(tags or {}),
        }
        run = _retry(client.create_run, exp_id, tags=run_tags)
        runs[ds] = {"experiment_id": exp_id, "parent_run_id": run.info.run_id}
    if export:
        os.environ[RUNS_ENV] = json.dumps({"uri": uri, "prefix": prefix, "runs": runs})
        os.environ["LPNTK_GIT_COMMIT"] = commit
    return runs


def finish_invocation(status: str = "FINISHED") -> None:
    """Close the parent runs that :func:`init_store` opened in this process (``FINISHED`` or ``FAILED``)."""
    raw = os.environ.get(RUNS_ENV)
    if not raw:
        return
    state = json.loads(raw)
    client = _client(state["uri"])
    for entry in state["runs"].values():
        _retry(client.set_terminated, entry["parent_run_id"], status)


class _NullRun:
    """Stands in for a :class:`JobRun` when tracking is disabled."""

    run_id = None

    def __getattr__(self, name):
        return lambda *a, **k: None


class JobRun(AbstractContextManager):
    """One MLflow run for one workflow job.

    >>> with JobRun("train", "digits", seed=1, config=ds_cfg) as run:   # doctest: +SKIP
    ...     run.log_metrics({"val_acc": 0.9}, step=1)
    ...     run.log_artifact("results/digits/train/seed1/history.csv")
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
    ):
        self.rule, self.dataset, self.seed = rule, dataset, seed
        self.config, self.params, self.tags = dict(config or {}), dict(params or {}), dict(tags or {})
        self.enabled = enabled
        state = json.loads(os.environ.get(RUNS_ENV, "{}") or "{}")
        self.uri = state.get("uri") or tracking_uri(uri)
        self.prefix = prefix if prefix is not None else state.get("prefix", "lpntk")
        self.parent = state.get("runs", {}).get(dataset, {})
        self.run_name = run_name or "-".join(
            str(p) for p in (rule, dataset, f"seed{seed}" if seed is not None else None) if p
        )
        self.client = None
        self.run_id = None

    def __enter__(self):
        if not self.enabled:
            return _NullRun()
        self.client = _client(self.uri)
        exp_id = self.parent.get("experiment_id") or _ensure_experiment(
            self.client, experiment_name(self.dataset, self.prefix)
        )
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
        run = _retry(self.client.create_run, exp_id, tags=tags)
        self.run_id = run.info.run_id
        self.log_params({**flatten(self.config), **flatten(self.params)})
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.client is not None and self.run_id is not None:
            _retry(self.client.set_terminated, self.run_id, "FAILED" if exc_type else "FINISHED")
        return False

    # -- logging -------------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k)[:250], str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            _retry(self.client.log_batch, self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, int(step)) for k, v in metrics.items() if v is not None and v == v
        ]  # drop None and NaN
        for i in range(0, len(items), 500):
            _retry(self.client.log_batch, self.run_id, metrics=items[i : i + 500])

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        self.log_metrics({key: value}, step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        _retry(self.client.log_batch, self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        _retry(self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_outputs(self, outputs: Mapping[str, str | os.PathLike], attach_below: int = 2_000_000) -> None:
        """Reference every output by path (tag ``lpntk.output.<name>``); attach those under ``attach_below`` bytes."""
        self.set_tags({f"lpntk.output.{k}": str(v) for k, v in outputs.items()})
        for v in outputs.values():
            p = Path(v)
            if p.is_file() and p.stat().st_size < attach_below:
                self.log_artifact(p)

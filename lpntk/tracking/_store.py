"""The MLflow store: its URI, a client, retries on SQLite locks, and the values every run records."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import re
import subprocess
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from ._ui import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

# MLflow 3.17's telemetry thread sets and unsets a variable in os.environ while requests iterate it, failing jobs at
# random (KeyError '_MLFLOW_TELEMETRY_SESSION_ID', seen on the SLURM test cluster); mlflow is imported only by this
# package, after this line. A user who wants telemetry sets MLFLOW_DISABLE_TELEMETRY=false.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

RUNS_ENV = "LPNTK_MLFLOW_RUNS"
DEFAULT_URI = "sqlite:///mlflow.db"
#: longest param / metric / tag name the store takes (mlflow.utils.validation.MAX_ENTITY_KEY_LENGTH)
MAX_KEY = 250
_METRIC_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
#: a metric holding an accuracy: "acc" as a whole "_"-separated word of its key (val_acc, random-k0.5_test_acc_max)
ACCURACY_KEY = re.compile(r"(?:^|_)acc(?:_|$)")


def metric_key(name: Any) -> str:
    """The metric name a job's ``name`` is logged under: ASCII letters, digits, ``_``, ``.`` and ``-`` only.

    Every run of other characters becomes one ``_`` (``"clusters_d0.05 seed 1_k0.5"`` ->
    ``"clusters_d0.05_seed_1_k0.5"``, ``"claims_primary_not measured"`` -> ``"claims_primary_not_measured"``,
    ``"n_random-k0.5@seed1"`` -> ``"n_random-k0.5_seed1"``): spaces, ``:`` (MLflow refuses it on Windows), ``/``
    (MLflow treats names as paths and refuses ``a//b``, ``/a``, ``a/``), quotes, backticks, ``@``, operators and
    anything non-ASCII. Leading dots become ``_`` (MLflow refuses ``.``, ``..`` and ``..x``), an empty name is
    ``_``, and names are cut at 250 characters. ``.`` and ``-`` are kept: the subsets' and settings' names carry
    them (``random-k0.5``, ``d0.05``). A filter names such a key in backticks, as MLflow asks of any name that is not
    a plain identifier (``metrics.`random-k0.5_test_acc_max` > 0.9``, as ``tags.`lpntk.rule` = 'retrain'``); a key
    of letters, digits and ``_`` only needs none. The spool's records are normalised again when replayed."""
    key = _METRIC_UNSAFE.sub("_", str(name))
    key = re.sub(r"^\.+", lambda m: "_" * len(m.group()), key)
    return key[:MAX_KEY] or "_"


def tracking_uri(configured: str | None = None) -> str:
    """``$MLFLOW_TRACKING_URI``, else ``configured``, else ``sqlite:///mlflow.db``; a relative SQLite path is made
    absolute against the working directory (mlflow caches one store per URI and process, so a relative URI would
    keep pointing at the first directory it was opened in)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured or DEFAULT_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and uri != prefix + ":memory:":
        uri = prefix + str(Path(uri[len(prefix) :]).absolute())
    return uri


def check_cluster_uri(uri: str, remote_jobs: bool) -> None:
    """Refuse a file-based store when jobs run on other nodes: every node would write a SQLite file (or ``mlruns``
    folder) on the shared filesystem, which SQLite cannot lock safely there."""
    if remote_jobs and (uri.startswith(("sqlite:", "file:")) or "://" not in uri):
        raise ValueError(
            f"MLflow tracking URI {uri!r} is a local file, but the jobs run on other nodes (a cluster executor): start "
            "an mlflow server (mlflow server --backend-store-uri sqlite:///<local disk>/mlflow.db --artifacts-"
            "destination <dir> --serve-artifacts --host <host>) and export MLFLOW_TRACKING_URI=http://<host>:<port>, "
            "or set mlflow.enabled: false"
        )


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
    """The id of experiment ``name``, created if missing; either way tagged as model training
    (:data:`EXPERIMENT_KIND_TAG`, see :mod:`lpntk.tracking._ui`), so the UIs that read the tag open its runs table."""
    exp = _retry(client.get_experiment_by_name, name)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # made by an older lpntk, or switched in the UI
            _retry(client.set_experiment_tag, exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    try:
        return _retry(client.create_experiment, name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except Exception as err:  # lost a creation race: someone else made it (and tagged it)
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

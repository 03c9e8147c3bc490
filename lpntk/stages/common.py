"""Shared plumbing of the workflow's stages: job logging, MLflow runs, the prepared-data files of a job.

The stage modules of this package are what the Snakemake scripts in ``workflow/scripts`` call: each reads
a job's inputs, calls the method functions of the library, writes its outputs atomically and logs the job
to MLflow. They are plain Python, unit-tested without Snakemake, called with keyword arguments, and given the
files the rule declares. This module imports neither torch nor mlflow (a job that writes a table stays light);
:mod:`lpntk.stages.torch_setup` holds the torch side (threads, building and loading the config's model).

Test only: with ``LPNTK_TEST_HOLD`` naming a file, the first job of rule ``LPNTK_TEST_HOLD_RULE`` (default
``train``) that opens its MLflow run stops there and waits (:func:`hold_point`), so that a test can cancel a job
at a point it controls (``tests/slurm/test_slurm.sh``). Never set them otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..tracking import JobRun

__all__ = ["log", "job_log", "tracking_run", "hold_point", "prepared", "check_outputs", "PREPARED", "HOLD_ENV"]

log = logging.getLogger("lpntk")


@contextlib.contextmanager
def job_log(path: str | os.PathLike | None) -> Iterator[None]:
    """Send this job's logging, stdout and stderr to ``path`` (the rule's ``log:``), and log the outcome."""
    if path is None:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", buffering=1) as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        t0 = time.perf_counter()
        try:
            yield
        except BaseException:
            log.exception("job failed after %.1f s", time.perf_counter() - t0)
            raise
        else:
            log.info("job finished in %.1f s", time.perf_counter() - t0)
        finally:
            root.removeHandler(handler)


@contextlib.contextmanager
def tracking_run(rule: str, dataset: str, cfg: Mapping, mlflow_cfg: Mapping | None, **kwargs) -> Iterator[JobRun]:
    """The job's open :class:`JobRun`, configured from the config's ``mlflow`` block (``live=False`` for jobs that
    compute almost nothing, and for every job with ``mlflow.live: false``: their run is spooled and logged by the
    invocation, see :class:`lpntk.tracking.JobRun`); then the test-only :func:`hold_point`."""
    mlflow_cfg = dict(mlflow_cfg or {})
    live = bool(kwargs.pop("live", True)) and bool(mlflow_cfg.get("live", True))
    with JobRun(
        rule,
        dataset,
        config=cfg,
        uri=mlflow_cfg.get("tracking_uri"),
        prefix=mlflow_cfg.get("experiment_prefix", "lpntk"),
        enabled=mlflow_cfg.get("enabled", True),
        live=live,
        **kwargs,
    ) as run:
        hold_point(rule, dataset, run, kwargs.get("seed"))
        yield run


#: Test only: the file whose creation claims the hold (:func:`hold_point`); its rule is ``LPNTK_TEST_HOLD_RULE``.
HOLD_ENV = "LPNTK_TEST_HOLD"


def hold_point(rule: str, dataset: str, run, seed: int | None = None) -> dict | None:
    """Test only: stop the first job of rule ``$LPNTK_TEST_HOLD_RULE`` (default ``train``) here, with its MLflow run
    open (RUNNING), until ``$LPNTK_TEST_HOLD.release`` exists or ``$LPNTK_TEST_HOLD_TIMEOUT`` seconds (default 600)
    have passed, so that a test cancels a job at a point it controls instead of racing it.

    The job claims the hold by creating the file ``$LPNTK_TEST_HOLD`` (atomically: it holds the complete JSON
    {rule, dataset, seed, run_id, slurm_job_id, host, pid} once it exists); every later job of the rule, the
    cancelled job's retry among them, finds it there and does not stop. Nothing happens when the variable is unset.
    Returns what was written, or None."""
    path = os.environ.get(HOLD_ENV)
    if not path or rule != os.environ.get("LPNTK_TEST_HOLD_RULE", "train"):
        return None
    info = {
        "rule": rule,
        "dataset": dataset,
        "seed": seed,
        "run_id": getattr(run, "run_id", None),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    tmp = f"{path}.{os.getpid()}.tmp"
    Path(tmp).write_text(json.dumps(info))
    try:
        os.link(tmp, path)  # fails if another job holds (or held) it
    except FileExistsError:
        return None
    finally:
        os.unlink(tmp)
    log.warning("test hold (%s=%s): waiting for %s.release", HOLD_ENV, path, path)
    deadline = time.monotonic() + float(os.environ.get("LPNTK_TEST_HOLD_TIMEOUT", "600"))
    while not os.path.exists(f"{path}.release") and time.monotonic() < deadline:
        time.sleep(0.2)
    log.warning("test hold: released")
    return info


#: The prepare_data outputs a job that reads the prepared data declares as inputs (:func:`lpntk.data.load_prepared`).
PREPARED = ("info", "train", "val", "test")


def prepared(files) -> dict[str, str]:
    """The prepared-data files among a job's declared inputs (Snakemake's named ``input``, or a mapping)."""
    get = files.get if isinstance(files, Mapping) else lambda k: getattr(files, k, None)
    out = {k: get(k) for k in PREPARED}
    missing = [k for k, v in out.items() if v is None]
    if missing:
        raise ValueError(f"the job's inputs lack the prepared-data files {missing}; declare them in the rule")
    return {k: str(v) for k, v in out.items()}


def check_outputs(outputs: Mapping[str, object], names, stage: str) -> None:
    """ValueError naming the outputs a stage needs but was not given."""
    missing = set(names) - set(outputs)
    if missing:
        raise ValueError(f"{stage}: outputs lack {sorted(missing)}")

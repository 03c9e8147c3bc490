"""Shared plumbing of the workflow's stages: job logging, MLflow runs, the prepared-data files of a job.

The stage modules of this package are what the Snakemake scripts in ``workflow/scripts`` call: each reads
a job's inputs, calls the method functions of the library, writes its outputs atomically and logs the job
to MLflow. They are plain Python, unit-tested without Snakemake, called with keyword arguments, and given the
files the rule declares. This module imports neither torch nor mlflow (a job that writes a table stays light);
:mod:`lpntk.stages.model` holds the torch side (threads, building and loading the config's model).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..tracking import JobRun

__all__ = ["log", "job_log", "tracking_run", "prepared", "check_outputs", "PREPARED"]

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


def tracking_run(rule: str, dataset: str, cfg: Mapping, mlflow_cfg: Mapping | None, **kwargs) -> JobRun:
    """A :class:`JobRun` configured from the config's ``mlflow`` block (``live=False`` for jobs that compute almost
    nothing, and for every job with ``mlflow.live: false``: their run is spooled and logged by the invocation, see
    :class:`lpntk.tracking.JobRun`)."""
    mlflow_cfg = dict(mlflow_cfg or {})
    live = bool(kwargs.pop("live", True)) and bool(mlflow_cfg.get("live", True))
    return JobRun(
        rule,
        dataset,
        config=cfg,
        uri=mlflow_cfg.get("tracking_uri"),
        prefix=mlflow_cfg.get("experiment_prefix", "lpntk"),
        enabled=mlflow_cfg.get("enabled", True),
        live=live,
        **kwargs,
    )


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

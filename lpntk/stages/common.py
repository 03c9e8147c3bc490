"""Shared plumbing of the workflow's stages: job logging, threads, MLflow runs, loading the reference model.

The stage modules of this package are what the Snakemake scripts in ``workflow/scripts`` call: each reads
a job's inputs, calls the method functions of the library, writes its outputs atomically and logs the job
to MLflow. They are plain Python, unit-tested without Snakemake.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from ..models import build_model
from ..tracking import JobRun

__all__ = ["log", "job_log", "set_threads", "tracking_run", "build_from_config", "load_reference_model"]

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


def set_threads(threads: int | None) -> None:
    """Use the rule's ``threads`` for torch's intra-op pool."""
    if threads:
        torch.set_num_threads(int(threads))


def tracking_run(rule: str, dataset: str, cfg: Mapping, mlflow_cfg: Mapping | None, **kwargs) -> JobRun:
    """A :class:`JobRun` configured from the config's ``mlflow`` block."""
    mlflow_cfg = dict(mlflow_cfg or {})
    return JobRun(
        rule,
        dataset,
        config=cfg,
        uri=mlflow_cfg.get("tracking_uri"),
        prefix=mlflow_cfg.get("experiment_prefix", "lpntk"),
        enabled=mlflow_cfg.get("enabled", True),
        **kwargs,
    )


def build_from_config(cfg: Mapping, info) -> torch.nn.Module:
    """The config's model for a dataset with ``info`` (input shape, number of classes)."""
    return build_model(cfg["model"]["name"], info.input_shape, info.num_classes, **dict(cfg["model"].get("args") or {}))


def load_reference_model(
    cfg: Mapping, info, checkpoint: str | os.PathLike, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Rebuild the config's model and load a saved state dict, with a clear error if they do not match."""
    model = build_from_config(cfg, info)
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; run the train step that produces it")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(state)
    except Exception as err:
        raise ValueError(
            f"checkpoint {path} does not fit model {cfg['model']['name']!r} with args "
            f"{dict(cfg['model'].get('args') or {})}: {str(err).splitlines()[0]}; delete it and "
            f"rerun the train step"
        ) from None
    return model.to(device).eval()

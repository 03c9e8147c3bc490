"""Stage prepare_data: load a dataset once, carve its seeded splits, cache them with checksums."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..config import data_keys
from ..data import prepare_dataset, save_prepared
from .common import log, tracking_run

__all__ = ["prepare_data_stage"]


def prepare_data_stage(
    *,
    dataset: str,
    cfg: Mapping,
    outputs: Mapping[str, str | os.PathLike],
    data_dir: str | None,
    mlflow_cfg: Mapping | None = None,
) -> dict:
    """Load the dataset once, carve its seeded splits and cache them: ``outputs`` maps ``train``, ``val``, ``test``
    (npz) and ``info`` (JSON: class sizes, checksums) to paths."""
    with tracking_run("prepare_data", dataset, cfg, mlflow_cfg, live=False) as run:
        prep = prepare_dataset(dataset, dict(cfg), data_dir)
        meta = save_prepared(prep, outputs, config=data_keys(cfg))
        log.info(
            "%s: %s train / %s val / %s test samples, %d classes",
            dataset,
            meta["n"]["train"],
            meta["n"]["val"],
            meta["n"]["test"],
            meta["num_classes"],
        )
        run.log_metrics({f"n_{k}": v for k, v in meta["n"].items()})
        run.set_tags({f"lpntk.sha256.{k}": v for k, v in meta["sha256"].items()})
        run.log_artifact(outputs["info"])
    return meta

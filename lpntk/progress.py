"""Progress of a job made of many runs: a killed job reruns only the runs it had not finished.

A job that trains many models one after the other (the difficulty stage's arms x runs, the ld_size stage's quad-tree
subsets) keeps each finished run's result in a progress folder beside its output, ``.<output stem>.progress/``. A
rerun of the job -- after ``scancel``, a SLURM preemption or time limit, a power cut, or a retry of the SLURM
profile's ``retries:`` -- loads those results instead of training again, and passes the run that was in flight a
resumable-state file in the same folder (:func:`lpntk.train.train_model`'s ``resume_path``). The job deletes the
folder when it has written its outputs.

Each record carries a key: a hash of everything that defines the run (its training set, seed, recipe, model,
normalisation, ...; :func:`run_key`). A record whose key differs -- the config was edited between the kill and the
rerun -- is discarded (with a warning) and the run trained again, so a stale record never leaks into new results.
Records are npz files (arrays only, ``allow_pickle=False``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .io import load_npz, save_npz

__all__ = ["progress_folder", "run_key", "Progress"]

log = logging.getLogger(__name__)

_KEY = "_progress_key"


def progress_folder(output: str | os.PathLike) -> Path:
    """The progress folder of the job writing ``output``: ``<dir>/.<stem>.progress``."""
    output = Path(output)
    return output.with_name(f".{output.stem}.progress")


def run_key(**parts: Any) -> str:
    """SHA-256 of the JSON of ``parts`` (keys sorted; numpy arrays as lists, so pass index arrays' checksums)."""
    text = json.dumps(parts, sort_keys=True, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    return hashlib.sha256(text.encode()).hexdigest()


class Progress:
    """The finished runs of the job that writes ``output`` (module docstring)."""

    def __init__(self, output: str | os.PathLike):
        self.folder = progress_folder(output)

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.npz"

    def load(self, name: str, key: str) -> dict[str, np.ndarray] | None:
        """The arrays saved for run ``name`` if its key is ``key``; None if absent, stale or unreadable (then the
        record is removed)."""
        path = self._path(name)
        if not path.is_file():
            return None
        try:
            arrays = load_npz(path, what="progress record")
        except ValueError as err:
            log.warning("%s; training that run again", err)
            path.unlink(missing_ok=True)
            return None
        if str(arrays.pop(_KEY, "")) != key:
            log.warning("ignoring progress record %s: saved by a different run (the config changed)", path)
            path.unlink(missing_ok=True)
            return None
        log.info("run %s: already done (progress record %s)", name, path)
        return arrays

    def save(self, name: str, key: str, **arrays: Any) -> None:
        """Record run ``name`` as finished, with its result ``arrays`` (written atomically)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        save_npz(self._path(name), **{_KEY: np.asarray(key)}, **arrays)

    def resume_path(self, name: str) -> Path:
        """Where run ``name`` keeps its resumable training state while in flight."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder / f"{name}.resume.pt"

    def clear(self) -> None:
        """Remove the folder (the job has written its outputs)."""
        shutil.rmtree(self.folder, ignore_errors=True)

"""Resumable training: a run's state saved every few epochs, picked up by the same run after an interruption.

A training run (:func:`lpntk.train.train_model`, or K runs of :func:`lpntk.lockstep.train_lockstep`) with
``resume_every > 0`` saves its whole state (:class:`ResumePoint`) -- models, optimizer, scheduler, the per-sample
records so far, the random generators -- and a rerun of the *same* run continues from it with bit-identical
results. "The same run" is decided by a fingerprint (:func:`run_fingerprint`) of everything that defines it; a state
saved by another run, or one that cannot be read, is discarded with a warning.
States are loaded with ``torch.load(weights_only=True)``: they hold tensors and plain containers only (numpy arrays
are stored as tensors).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .data import Split
from .io import save_torch

log = logging.getLogger(__name__)

__all__ = ["run_fingerprint", "rng_state", "set_rng_state", "save_resume_state", "load_resume_state", "ResumePoint"]

_NUMPY = "_numpy_keys"
#: The layout of a saved state (2: lpntk.optim's optimizer and schedule states; 3: one layout for train_model and
#: train_lockstep, the records of K runs as lpntk.train.Dynamics keeps them); a state of another layout does not
#: match any fingerprint, so it is discarded with a warning and the run starts over.
STATE_FORMAT = 3


def run_fingerprint(
    spec: Mapping[str, Any], seed: int, model: nn.Module, train: Split, mean: Sequence[float], std: Sequence[float]
) -> str:
    """SHA-256 of what makes a training run: its recipe ``spec`` (without how often it saves its state), the seed,
    the model's parameter names and shapes, the normalisation and the training set's original indices and labels
    (and the state layout, :data:`STATE_FORMAT`)."""
    h = hashlib.sha256()
    h.update(f"lpntk-state-{STATE_FORMAT}".encode())
    h.update(repr((sorted(spec.items()), int(seed), [float(m) for m in mean], [float(s) for s in std])).encode())
    h.update(repr([(k, tuple(v.shape)) for k, v in model.state_dict().items()]).encode())
    h.update(train.index.numpy().astype(np.int64).tobytes())
    h.update(train.y.numpy().astype(np.int64).tobytes())
    return h.hexdigest()


def rng_state(gens: Mapping[str, torch.Generator]) -> dict:
    """The state of the run's own generators and of torch's global CPU (and CUDA) generators."""
    state = {k: g.get_state() for k, g in gens.items()}
    state["torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(gens: Mapping[str, torch.Generator], state: Mapping) -> None:
    """Restore what :func:`rng_state` saved."""
    for k, g in gens.items():
        g.set_state(state[k])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_resume_state(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Save a run's state atomically; top-level numpy arrays are stored as tensors (and restored on load)."""
    arrays = [k for k, v in state.items() if isinstance(v, np.ndarray)]
    out = {k: torch.from_numpy(np.ascontiguousarray(v)) if k in arrays else v for k, v in state.items()}
    out[_NUMPY] = arrays
    save_torch(path, out)


def load_resume_state(path: str | os.PathLike, fingerprint: str, device: torch.device) -> dict | None:
    """The state at ``path`` if it belongs to the run with ``fingerprint``, else None (a stale or unreadable state is
    removed, with a warning)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        st = torch.load(path, map_location=device, weights_only=True)  # tensors and plain containers only
    except Exception as err:  # a truncated or foreign file: start over rather than fail the job
        log.warning("ignoring unreadable resume state %s (%s); training from the start", path, err)
        path.unlink(missing_ok=True)
        return None
    if not isinstance(st, dict) or st.get("fingerprint") != fingerprint:
        log.warning(
            "ignoring resume state %s: it was saved by a different run (recipe, seed, model or data changed); "
            "training from the start",
            path,
        )
        path.unlink(missing_ok=True)
        return None
    for k in st.pop(_NUMPY, []):
        st[k] = st[k].cpu().numpy()
    log.info("resuming from %s at epoch %d", path, st["epoch"])
    return st


@dataclass(frozen=True)
class ResumePoint:
    """Where K runs save their resumable state, how often (``Recipe.resume_every`` epochs; 0: never) and the
    fingerprint of the runs it belongs to (:func:`lpntk.resume.run_fingerprint`)."""

    path: Path | None
    every: int
    fingerprint: str

    @staticmethod
    def spec(recipe) -> dict[str, Any]:
        """The recipe (:class:`lpntk.train.Recipe`) as the fingerprint sees it: how often the state is saved does not
        change the run."""
        return {k: v for k, v in asdict(recipe).items() if k != "resume_every"}

    def save_if_due(self, runner, dyn, gens: Mapping[str, torch.Generator]) -> None:
        """Save the runs' state after every ``every``-th epoch but the last: the ``runner``'s models, optimiser and
        schedule, the record ``dyn`` (:class:`lpntk.dynamics.Dynamics`) and the generators."""
        if self.path is None or not self.every or dyn.epoch % self.every or dyn.epoch >= dyn.epochs:
            return
        state = {**runner.state(), **dyn.state(), "rng": rng_state(gens), "fingerprint": self.fingerprint}
        save_resume_state(self.path, state)

    def finish(self) -> None:
        """The runs completed: their saved state is no longer needed."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)

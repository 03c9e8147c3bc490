"""The per-sample learning dynamics that training records (paper-protocols §1.7, §2.3), for one run or K in lockstep.

:class:`Dynamics` is the record of :func:`lpntk.train.train_model` (K = 1) and :func:`lpntk.lockstep.train_lockstep`
(K seeds): for every training sample at its presentation in every epoch (train mode, augmented input, before the
update) the cross-entropy ``loss``, its ``correct``-ness and the L2 error :func:`l2_error` (the EL2N /
learning-difficulty term), the batch order of every epoch, the learning rate of every step, EL2N and GraNd at the
score epochs, a history row per epoch and each run's best checkpoint; from ``correct`` it derives the forgetting
events (:func:`presentation_forgetting`, Toneva et al., 2019). It is written here once, so that a change to what a
run records is one change for both training functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .data import Split

if TYPE_CHECKING:
    from .train import Recipe

__all__ = ["Dynamics", "l2_error", "presentation_forgetting"]


def l2_error(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """EL2N / learning-difficulty term ‖softmax(z) - e_y‖₂ per sample."""
    p = torch.softmax(logits.detach().float(), dim=1)
    p[torch.arange(len(y), device=y.device), y] -= 1.0
    return p.norm(dim=1)


def presentation_forgetting(correct: np.ndarray) -> dict[str, np.ndarray]:
    """Forgetting events between consecutive presentations (Toneva et al., 2019).

    ``correct`` is (N, E): correctness of sample i at its presentation in epoch e. An event is a
    transition correct -> incorrect from epoch e-1 to e. Returns ``events`` (N, E) bool (column 0 is
    False), ``count`` (N,), ``first_learned`` (N,) (first epoch index with a correct presentation, -1 if
    never) and ``never_learned`` (N,) bool. Toneva et al. rank never-learned samples as the most forgotten.
    """
    correct = np.asarray(correct, dtype=bool)
    events = np.zeros_like(correct)
    events[:, 1:] = correct[:, :-1] & ~correct[:, 1:]
    learned = correct.any(axis=1)
    first = np.where(learned, correct.argmax(axis=1), -1)
    return {
        "events": events,
        "count": events.sum(axis=1).astype(np.int32),
        "first_learned": first.astype(np.int32),
        "never_learned": ~learned,
    }


class Dynamics:
    """The record of K runs of one recipe (module docstring): per presentation the loss, correctness and L2 error,
    per epoch the batch order and a history row, per step the learning rate, per score epoch EL2N and GraNd, and
    each run's best checkpoint so far. What a run records is decided here, for :func:`lpntk.train.train_model`
    (K = 1) and :func:`lpntk.lockstep.train_lockstep` (K seeds) alike.

    Run k's per-sample records are rows k·n ... k·n + n - 1 of (K·n, E) tables, so that a step writes all its
    presentations with one index, ``rows`` = k·n + position, whatever K (for K = 1, the positions themselves).
    """

    def __init__(self, k_runs: int, n: int, recipe: Recipe, record: bool, device: torch.device):
        self.k_runs, self.n, self.epochs, self.record, self.select = k_runs, n, recipe.epochs, record, recipe.select
        self.steps_per_epoch = math.ceil(n / recipe.batch_size)
        self.rec = {
            "loss": torch.zeros(k_runs * n, self.epochs, dtype=torch.float32, device=device),
            "correct": torch.zeros(k_runs * n, self.epochs, dtype=torch.bool, device=device),
            "l2": torch.zeros(k_runs * n, self.epochs, dtype=torch.float32, device=device),
        }
        self.batch_order = np.zeros((k_runs, self.epochs, n), dtype=np.int32)
        self.lrs = np.zeros(self.epochs * self.steps_per_epoch, dtype=np.float64)
        self.score_epochs = sorted(set(recipe.score_epochs))
        self.el2n = np.zeros((k_runs, n, len(self.score_epochs)), dtype=np.float32)
        self.grand = np.zeros((k_runs, n, len(self.score_epochs)), dtype=np.float32)
        self.histories: list[list[dict[str, float]]] = [[] for _ in range(k_runs)]
        self.bests: list[dict[str, Any]] = [{"acc": -1.0, "epoch": 0, "state": None} for _ in range(k_runs)]
        self.probe_logits: torch.Tensor | None = None  # (K, E, P, classes), allocated at the first probe
        self.epoch = 0  # epochs completed

    def record_orders(self, epoch: int, orders: Sequence[torch.Tensor]) -> None:
        """Each run's presentation order (positions) in ``epoch``."""
        for k, order in enumerate(orders):
            self.batch_order[k, epoch] = order.numpy()

    def record_step(self, step: int, lr: float, epoch: int, rows, loss, logits, y) -> None:
        """One optimiser step: its learning rate and, when recording, each presented sample's loss, correctness and
        L2 error (train mode, augmented input, before the update) at its ``rows``; ``loss`` (B,), ``logits``
        (B, classes) and ``y`` (B,) list the step's presentations of all runs."""
        self.lrs[step] = lr
        if self.record:
            with torch.no_grad():
                self.rec["loss"][rows, epoch] = loss.detach().float()
                self.rec["correct"][rows, epoch] = logits.detach().argmax(1) == y
                self.rec["l2"][rows, epoch] = l2_error(logits, y)

    def record_probe(self, epoch: int, logits: torch.Tensor) -> None:
        """The K runs' eval-mode logits (K, P, classes) of the probe inputs after ``epoch``."""
        if self.probe_logits is None:
            self.probe_logits = torch.zeros(self.k_runs, self.epochs, *logits.shape[1:])
        self.probe_logits[:, epoch] = logits

    def close_epoch(self, epoch: int, lr: float, evals: Mapping, seconds: float, state_of) -> list[dict[str, float]]:
        """Each run's history row of ``epoch`` (``evals``: split name -> (K accuracies, K losses)), and its best
        checkpoint ``state_of(k)`` when its selection metric (``Recipe.select``) improved."""
        self.epoch = epoch + 1
        rows = []
        for k in range(self.k_runs):
            row = {"epoch": epoch + 1, "lr": lr, **self._train_metrics(k, epoch)}
            for name, (acc, loss) in evals.items():
                row[f"{name}_acc"], row[f"{name}_loss"] = float(acc[k]), float(loss[k])
            row["seconds"] = seconds
            self.histories[k].append(row)
            metric = {"val": row.get("val_acc"), "test": row.get("test_acc"), "last": float(epoch)}[self.select]
            if metric is not None and metric > self.bests[k]["acc"]:
                self.bests[k] = {"acc": metric, "epoch": epoch + 1, "state": state_of(k)}
            rows.append(row)
        return rows

    def _train_metrics(self, k: int, epoch: int) -> dict[str, float]:
        """Run k's mean loss and accuracy over its presentations in ``epoch`` (NaN when not recording)."""
        if not self.record:
            return {"train_loss": float("nan"), "train_acc": float("nan")}
        rows = slice(k * self.n, (k + 1) * self.n)
        return {
            "train_loss": float(self.rec["loss"][rows, epoch].mean()),
            "train_acc": float(self.rec["correct"][rows, epoch].float().mean()),
        }

    def summary(self, k: int) -> dict[str, Any]:
        """Run k's headline accuracies: at the selected epoch (best validation accuracy when ``select="val"``), at
        the last epoch, and the max over epochs (what the official code reports)."""
        history, best_epoch = self.histories[k], self.bests[k]["epoch"]
        out: dict[str, Any] = {"best_epoch": int(best_epoch), "select": self.select, "epochs": len(history)}
        for split_name in ("val", "test"):
            accs = [h.get(f"{split_name}_acc", float("nan")) for h in history]
            if accs and not all(math.isnan(a) for a in accs):
                out[f"{split_name}_acc_selected"] = accs[best_epoch - 1]
                out[f"{split_name}_acc_last"] = accs[-1]
                out[f"{split_name}_acc_max"] = max(accs)
        return out

    def state(self) -> dict[str, Any]:
        """The record's part of a resumable state (numpy arrays at the top level: :func:`save_resume_state`)."""
        return {
            "rec": {k: v.cpu() for k, v in self.rec.items()},
            "batch_order": self.batch_order,
            "lrs": self.lrs,
            "el2n": self.el2n,
            "grand": self.grand,
            "histories": self.histories,
            "bests": self.bests,
            "probe_logits": self.probe_logits,
            "epoch": self.epoch,
        }

    def restore(self, state: Mapping[str, Any], device: torch.device) -> None:
        """Continue the record from what :meth:`state` saved."""
        self.rec = {k: state["rec"][k].to(device) for k in self.rec}
        self.batch_order, self.lrs, self.el2n, self.grand = (state[k] for k in ("batch_order", "lrs", "el2n", "grand"))
        self.histories, self.bests, self.epoch = state["histories"], state["bests"], state["epoch"]
        self.probe_logits = state.get("probe_logits")

    def result(self, k: int, train: Split) -> dict[str, np.ndarray]:
        """Run k's ``dynamics`` (:func:`train_model`), indexed by position in its training split ``train``."""
        rows = slice(k * self.n, (k + 1) * self.n)
        correct = self.rec["correct"][rows].cpu().numpy()
        forget = presentation_forgetting(correct)
        out = {
            "index": train.index.numpy().astype(np.int64),
            "y": train.y.numpy().astype(np.int64),
            "loss": self.rec["loss"][rows].cpu().numpy(),
            "correct": correct,
            "l2": self.rec["l2"][rows].cpu().numpy(),
            "forgetting_events": forget["events"],
            "forgetting_count": forget["count"],
            "first_learned": forget["first_learned"],
            "never_learned": forget["never_learned"],
            "batch_order": self.batch_order[k],
            "lr": self.lrs.copy(),
            "score_epochs": np.asarray(self.score_epochs, dtype=np.int64),
            "el2n": self.el2n[k],
            "grand": self.grand[k],
        }
        if self.probe_logits is not None:
            out["probe_logits"] = self.probe_logits[k].numpy()
        return out

"""Seeded training with per-sample learning dynamics (paper-protocols §1.7, §2.3).

:func:`train_model` runs minibatch SGD (momentum, weight decay, StepLR or cosine schedule) on a training
split held in memory, evaluates validation and test accuracy after every epoch, and records for every
training sample at its presentation in every epoch (train mode, augmented input, before the update):

* ``loss``   -- cross-entropy  L(x, y) = -log softmax(z(x))_y,
* ``correct`` -- argmax z(x) == y,
* ``l2``     -- ‖softmax(z(x)) - e_y‖₂, the per-epoch EL2N / learning-difficulty term (the official code's
  ``get_l2distance``; learning difficulty = its sum over epochs),

plus the index order of every minibatch and the learning rate of every step. From ``correct`` it derives
forgetting events between consecutive presentations (Toneva et al., 2019): sample i is forgotten at epoch
e if it was classified correctly at its presentation in epoch e-1 and incorrectly in epoch e. At the
configured ``score_epochs`` (0 = at initialisation, e = after e epochs) it also records, in eval mode on
un-augmented inputs, EL2N ‖softmax(z(x)) - e_y‖₂ and GraNd ‖∇_w L(x, y)‖₂ (Paul et al., 2021).

The checkpoint kept as "best" maximises validation accuracy (``select="val"``); ``select="test"``
reproduces the official code, which selected on the test set (paper-protocols §6 item 12).

Determinism: with the same seed on CPU the run is bit-for-bit reproducible (model initialisation, dropout,
shuffling and augmentation draw from seeded generators; deterministic algorithms are requested). A run can
save a resumable state every few epochs and continue from it after an interruption with identical results.

Precision: ``Recipe.precision`` = ``fp32`` (default, exact float32, TF32 off on CUDA), ``tf32`` or ``bf16``
(:mod:`lpntk.precision`).
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import Split, augment_batch, normalize, to_unit
from .kernel import per_sample_grad_norms
from .optim import SGD, EpochSchedule
from .precision import PRECISIONS, forward_precision, run_precision
from .resume import load_resume_state, rng_state, run_fingerprint, save_resume_state, set_rng_state

log = logging.getLogger(__name__)

__all__ = [
    "PRECISIONS",
    "Recipe",
    "TrainResult",
    "seed_everything",
    "select_device",
    "make_optimizer",
    "make_scheduler",
    "l2_error",
    "presentation_forgetting",
    "evaluate",
    "train_model",
]


@dataclass
class Recipe:
    """Hyper-parameters of one training run (a ``train`` block of the config)."""

    epochs: int
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "none"  # none | step | cosine
    step_size: int = 2  # StepLR: decay every step_size epochs ...
    gamma: float = 0.7  # ... by gamma
    t_max: int | None = None  # cosine: period in epochs (default: epochs)
    shuffle: bool = True
    select: str = "val"  # val | test | last
    score_epochs: tuple[int, ...] = ()
    crop_padding: int = 0  # augmentation: random crop with zero padding (CIFAR: 4)
    horizontal_flip: bool = False  # augmentation: random horizontal flip (CIFAR)
    eval_batch_size: int = 1024
    resume_every: int = 0  # save a resumable state every this many epochs (0: never)
    precision: str = "fp32"  # fp32 | tf32 | bf16 (module docstring)

    @classmethod
    def from_config(cls, train_cfg: Mapping[str, Any], augment_cfg: Mapping[str, Any]) -> Recipe:
        """The recipe of a resolved ``train`` block and ``augment`` block of the workflow config.

        The config schema (``workflow/schemas/config.schema.yaml``) fills in every default before this is called, so
        every key is read as given; the dataclass's own defaults (for library users) equal the schema's (a test
        checks that)."""
        sched = train_cfg["schedule"]
        return cls(
            epochs=int(train_cfg["epochs"]),
            batch_size=int(train_cfg["batch_size"]),
            lr=float(train_cfg["lr"]),
            momentum=float(train_cfg["momentum"]),
            weight_decay=float(train_cfg["weight_decay"]),
            nesterov=bool(train_cfg["nesterov"]),
            schedule=str(sched["name"]),
            step_size=int(sched["step_size"]),
            gamma=float(sched["gamma"]),
            t_max=sched["t_max"],
            shuffle=bool(train_cfg["shuffle"]),
            select=str(train_cfg["select"]),
            score_epochs=tuple(int(e) for e in train_cfg["score_epochs"]),
            crop_padding=int(augment_cfg["crop_padding"]),
            horizontal_flip=bool(augment_cfg["horizontal_flip"]),
            eval_batch_size=int(train_cfg["eval_batch_size"]),
            resume_every=int(train_cfg["resume_every"]),
            precision=str(train_cfg["precision"]),
        )

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.schedule not in ("none", "step", "cosine"):
            raise ValueError(f"schedule must be none, step or cosine, got {self.schedule!r}")
        if self.select not in ("val", "test", "last"):
            raise ValueError(f"select must be val, test or last, got {self.select!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if any(e < 0 or e > self.epochs for e in self.score_epochs):
            raise ValueError(f"score_epochs {list(self.score_epochs)} must lie in 0..epochs={self.epochs}")


@dataclass
class TrainResult:
    """What a training run produces; ``dynamics`` holds the per-sample arrays (see :func:`train_model`)."""

    model: nn.Module
    best_state: dict[str, torch.Tensor]
    last_state: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    dynamics: dict[str, np.ndarray]
    summary: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- plumbing


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) and request deterministic algorithms."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic and torch.cuda.is_available():
        # CPU kernels are deterministic already; the switch matters for CUDA (and importing what it needs costs
        # about a second of every job's start-up, so it is skipped where there is no GPU).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def select_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested (key 'device') but CUDA is not available; use 'auto' or 'cpu'")
    return dev


def make_optimizer(model: nn.Module, recipe: Recipe) -> SGD:
    """SGD with the recipe's momentum, Nesterov flag and (coupled) weight decay (:class:`lpntk.optim.SGD`)."""
    return SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        nesterov=recipe.nesterov and recipe.momentum > 0,
    )


def make_scheduler(optimizer: SGD, recipe: Recipe) -> EpochSchedule:
    """Per-epoch learning-rate schedule: constant, StepLR(step_size, gamma) or CosineAnnealingLR(t_max)
    (:class:`lpntk.optim.EpochSchedule`)."""
    name = recipe.schedule if recipe.schedule in ("step", "cosine") else "none"
    return EpochSchedule(optimizer, name, recipe.step_size, recipe.gamma, int(recipe.t_max or recipe.epochs))


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


@torch.no_grad()
def evaluate(
    model: nn.Module, split: Split, mean, std, batch_size: int = 1024, device: torch.device | None = None
) -> dict[str, Any]:
    """Eval-mode accuracy, mean loss, per-sample logits of ``split`` (un-augmented, normalised inputs)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits = []
    for s in range(0, len(split), batch_size):
        xb = normalize(to_unit(split.x[s : s + batch_size].to(device)), mean, std)
        logits.append(model(xb).float())
    model.train(was_training)
    if not logits:
        return {"acc": float("nan"), "loss": float("nan"), "logits": torch.empty(0)}
    z = torch.cat(logits)
    y = split.y.to(device)
    return {"acc": float((z.argmax(1) == y).float().mean()), "loss": float(F.cross_entropy(z, y)), "logits": z}


def _score_snapshot(model: nn.Module, split: Split, mean, std, recipe: Recipe, device) -> tuple[np.ndarray, np.ndarray]:
    """EL2N and GraNd of every training sample at the current weights (eval mode, un-augmented)."""
    ev = evaluate(model, split, mean, std, recipe.eval_batch_size, device)
    el2n = l2_error(ev["logits"], split.y.to(device)).cpu().numpy()
    x = normalize(to_unit(split.x.to(device)), mean, std)
    grand = per_sample_grad_norms(model, x, split.y.to(device)).detach().cpu().numpy()
    return el2n.astype(np.float32), grand.astype(np.float32)


# ------------------------------------------------------------------------------------------- training


def train_model(
    model: nn.Module,
    train: Split,
    recipe: Recipe,
    seed: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    val: Split | None = None,
    test: Split | None = None,
    device: str | torch.device | None = "auto",
    record: bool = True,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    resume_path: str | os.PathLike | None = None,
) -> TrainResult:
    """Train ``model`` on ``train`` with ``recipe`` from seed ``seed``; see the module docstring.

    ``model`` should be freshly built after :func:`seed_everything` (its initialisation is part of the
    run). ``on_epoch`` is called with each epoch's history row (for live metric logging). With
    ``resume_path`` set and ``recipe.resume_every > 0`` a resumable state is saved there every
    ``resume_every`` epochs and picked up by a later call; it is deleted when the run completes. A state
    saved by a different run (another recipe, seed, model, normalisation or training set:
    :func:`run_fingerprint`) or one that cannot be read is discarded with a warning and training starts over.

    ``dynamics`` (all indexed by position in ``train``; ``index`` maps positions to original indices):
    ``index``, ``y``, ``loss``/``correct``/``l2`` (N, E), ``forgetting_events`` (N, E),
    ``forgetting_count``, ``first_learned``, ``never_learned`` (N,), ``batch_order`` (E, N) positions in
    presentation order, ``lr`` (steps,), ``score_epochs`` (S,), ``el2n``/``grand`` (N, S).
    """
    device = select_device(device)
    model.to(device)
    if recipe.select == "val" and (val is None or len(val) == 0):
        raise ValueError(
            "select='val' needs a validation split; set the dataset's val_fraction > 0 "
            "or train.select to 'test' or 'last'"
        )
    n, epochs = len(train), recipe.epochs
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    gens = {"shuffle": torch.Generator().manual_seed(seed), "augment": torch.Generator().manual_seed(seed + 7919)}
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe)
    x_all, y_all = train.x.to(device), train.y.to(device)
    # normalize(x, mean, std) = (x - mean) / std per channel, applied in place to each batch's own fresh tensor
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    rec = {
        "loss": torch.zeros(n, epochs, dtype=torch.float32, device=device),
        "correct": torch.zeros(n, epochs, dtype=torch.bool, device=device),
        "l2": torch.zeros(n, epochs, dtype=torch.float32, device=device),
    }
    batch_order = np.zeros((epochs, n), dtype=np.int32)
    lrs = np.zeros(epochs * steps_per_epoch, dtype=np.float64)
    score_epochs = sorted(set(recipe.score_epochs))
    el2n = np.zeros((n, len(score_epochs)), dtype=np.float32)
    grand = np.zeros((n, len(score_epochs)), dtype=np.float32)
    history: list[dict[str, float]] = []
    best = {"acc": -1.0, "epoch": 0, "state": None}
    start_epoch = 0

    resume_path = Path(resume_path) if resume_path else None
    spec = {k: v for k, v in asdict(recipe).items() if k != "resume_every"}  # how often it saves does not matter
    fingerprint = run_fingerprint(spec, seed, model, train, mean, std)
    st = load_resume_state(resume_path, fingerprint, device) if resume_path is not None else None
    if st is not None:
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        for k in rec:
            rec[k] = st["rec"][k].to(device)
        batch_order, lrs, el2n, grand = st["batch_order"], st["lrs"], st["el2n"], st["grand"]
        history, best, start_epoch = st["history"], st["best"], st["epoch"]
        set_rng_state(gens, st["rng"])
    elif 0 in score_epochs:
        el2n[:, 0], grand[:, 0] = _score_snapshot(model, train, mean, std, recipe, device)

    with run_precision(recipe.precision):  # exact float32 unless the recipe asks for TF32
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            model.train()
            order = torch.randperm(n, generator=gens["shuffle"]) if recipe.shuffle else torch.arange(n)
            batch_order[epoch] = order.numpy()
            lr_epoch = optimizer.param_groups[0]["lr"]
            for b in range(steps_per_epoch):
                idx = order[b * recipe.batch_size : (b + 1) * recipe.batch_size].to(device)
                # index_select: the rows x_all[idx] selects, without advanced indexing's general path (benchmarks/
                # bench_mnist_cpu.py: the data path was most of the loop's per-step overhead on a CPU)
                xb = to_unit(x_all.index_select(0, idx))
                if recipe.crop_padding or recipe.horizontal_flip:
                    xb = augment_batch(xb, recipe.crop_padding, recipe.horizontal_flip, gens["augment"])
                xb = xb.sub_(mean_t).div_(std_t)  # normalize(xb, mean, std), in place: xb is this batch's own
                yb = y_all.index_select(0, idx)
                with forward_precision(recipe.precision, device):
                    logits = model(xb)
                    # the per-sample losses only where they are recorded; the mean's gradient is the same either way
                    loss_vec = F.cross_entropy(logits, yb, reduction="none" if record else "mean")
                optimizer.zero_grad(set_to_none=True)
                (loss_vec.mean() if record else loss_vec).backward()
                lrs[epoch * steps_per_epoch + b] = optimizer.param_groups[0]["lr"]
                optimizer.step()
                if record:
                    with torch.no_grad():
                        rec["loss"][idx, epoch] = loss_vec.detach().float()
                        rec["correct"][idx, epoch] = logits.detach().argmax(1) == yb
                        rec["l2"][idx, epoch] = l2_error(logits, yb)
            scheduler.step()
            row = {
                "epoch": epoch + 1,
                "lr": lr_epoch,
                "train_loss": float(rec["loss"][:, epoch].mean()) if record else float("nan"),
                "train_acc": float(rec["correct"][:, epoch].float().mean()) if record else float("nan"),
            }
            for split_name, split in (("val", val), ("test", test)):
                if split is not None and len(split):
                    ev = evaluate(model, split, mean, std, recipe.eval_batch_size, device)
                    row[f"{split_name}_acc"], row[f"{split_name}_loss"] = ev["acc"], ev["loss"]
            if epoch + 1 in score_epochs:
                j = score_epochs.index(epoch + 1)
                el2n[:, j], grand[:, j] = _score_snapshot(model, train, mean, std, recipe, device)
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            metric = {"val": row.get("val_acc"), "test": row.get("test_acc"), "last": float(epoch)}[recipe.select]
            if metric is not None and metric > best["acc"]:
                best = {
                    "acc": metric,
                    "epoch": epoch + 1,
                    "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                }
            if on_epoch is not None:
                on_epoch(row)
            if (
                resume_path is not None
                and recipe.resume_every
                and (epoch + 1) % recipe.resume_every == 0
                and epoch + 1 < epochs
            ):
                save_resume_state(
                    resume_path,
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rec": {k: v.cpu() for k, v in rec.items()},
                        "batch_order": batch_order,
                        "lrs": lrs,
                        "el2n": el2n,
                        "grand": grand,
                        "history": history,
                        "best": best,
                        "epoch": epoch + 1,
                        "rng": rng_state(gens),
                        "fingerprint": fingerprint,
                    },
                )

    last_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    correct = rec["correct"].cpu().numpy()
    forget = presentation_forgetting(correct)
    dynamics = {
        "index": train.index.numpy().astype(np.int64),
        "y": train.y.numpy().astype(np.int64),
        "loss": rec["loss"].cpu().numpy(),
        "correct": correct,
        "l2": rec["l2"].cpu().numpy(),
        "forgetting_events": forget["events"],
        "forgetting_count": forget["count"],
        "first_learned": forget["first_learned"],
        "never_learned": forget["never_learned"],
        "batch_order": batch_order,
        "lr": lrs,
        "score_epochs": np.asarray(score_epochs, dtype=np.int64),
        "el2n": el2n,
        "grand": grand,
    }
    summary = _summarise(history, best["epoch"], recipe.select)
    summary["seed"] = int(seed)
    summary["recipe"] = asdict(recipe)
    if resume_path is not None:
        resume_path.unlink(missing_ok=True)
    model.load_state_dict(best["state"])
    return TrainResult(model, best["state"], last_state, history, dynamics, summary)


def _summarise(history: list[dict[str, float]], best_epoch: int, select: str) -> dict[str, Any]:
    """Headline accuracies: at the selected epoch (best validation accuracy when ``select="val"``), at the
    last epoch, and the max over epochs (what the official code reports)."""

    def col(key):
        return [h.get(key, float("nan")) for h in history]

    out: dict[str, Any] = {"best_epoch": int(best_epoch), "select": select, "epochs": len(history)}
    for split_name in ("val", "test"):
        accs = col(f"{split_name}_acc")
        if accs and not all(math.isnan(a) for a in accs):
            out[f"{split_name}_acc_selected"] = accs[best_epoch - 1]
            out[f"{split_name}_acc_last"] = accs[-1]
            out[f"{split_name}_acc_max"] = max(accs)
    return out

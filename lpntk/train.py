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
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import Split, augment_batch, normalize, to_unit
from .io import save_torch
from .kernel import per_sample_grad_norms

log = logging.getLogger(__name__)

__all__ = [
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
    "run_fingerprint",
    "choose_reference_run",
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
    schedule: str = "step"  # none | step | cosine
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

    @classmethod
    def from_config(cls, train_cfg: dict, augment_cfg: dict | None = None) -> Recipe:
        sched = dict(train_cfg.get("schedule") or {"name": "none"})
        augment_cfg = augment_cfg or {}
        return cls(
            epochs=int(train_cfg["epochs"]),
            batch_size=int(train_cfg.get("batch_size", 128)),
            lr=float(train_cfg.get("lr", 0.1)),
            momentum=float(train_cfg.get("momentum", 0.9)),
            weight_decay=float(train_cfg.get("weight_decay", 5e-4)),
            nesterov=bool(train_cfg.get("nesterov", False)),
            schedule=str(sched.get("name", "none")),
            step_size=int(sched.get("step_size", 2)),
            gamma=float(sched.get("gamma", 0.7)),
            t_max=sched.get("t_max"),
            shuffle=bool(train_cfg.get("shuffle", True)),
            select=str(train_cfg.get("select", "val")),
            score_epochs=tuple(int(e) for e in train_cfg.get("score_epochs", ())),
            crop_padding=int(augment_cfg.get("crop_padding", 0)),
            horizontal_flip=bool(augment_cfg.get("horizontal_flip", False)),
            eval_batch_size=int(train_cfg.get("eval_batch_size", 1024)),
            resume_every=int(train_cfg.get("resume_every", 0)),
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


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD with the recipe's momentum, Nesterov flag and (coupled) weight decay."""
    return torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        nesterov=recipe.nesterov and recipe.momentum > 0,
    )


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe):
    """Per-epoch learning-rate schedule: constant, StepLR(step_size, gamma) or CosineAnnealingLR(t_max)."""
    if recipe.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.step_size, gamma=recipe.gamma)
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(recipe.t_max or recipe.epochs))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


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


def _rng_state(gens: dict[str, torch.Generator]) -> dict:
    state = {k: g.get_state() for k, g in gens.items()}
    state["torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(gens: dict[str, torch.Generator], state: dict) -> None:
    for k, g in gens.items():
        g.set_state(state[k])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def run_fingerprint(
    model: nn.Module, train: Split, recipe: Recipe, seed: int, mean: Sequence[float], std: Sequence[float]
) -> str:
    """SHA-256 of what makes a training run: the recipe (but how often it saves its state), the seed, the
    model's parameter names and shapes, the normalisation and the training set's original indices and labels.

    A resumable state is picked up only by the run with the same fingerprint."""
    h = hashlib.sha256()
    spec = {k: v for k, v in asdict(recipe).items() if k != "resume_every"}
    h.update(repr((sorted(spec.items()), int(seed), [float(m) for m in mean], [float(s) for s in std])).encode())
    h.update(repr([(k, tuple(v.shape)) for k, v in model.state_dict().items()]).encode())
    h.update(train.index.numpy().astype(np.int64).tobytes())
    h.update(train.y.numpy().astype(np.int64).tobytes())
    return h.hexdigest()


def _load_resume_state(path: Path, fingerprint: str, device: torch.device) -> dict | None:
    """The resumable state at ``path`` if it belongs to this run, else None (a stale or unreadable one is removed)."""
    if not path.is_file():
        return None
    try:
        st = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # a truncated or foreign file: start over rather than fail the job
        log.warning("ignoring unreadable resume state %s (%s); training from the start", path, err)
        path.unlink(missing_ok=True)
        return None
    if not isinstance(st, dict) or st.get("fingerprint") != fingerprint:
        log.warning(
            "ignoring resume state %s: it was saved by a different run (recipe, seed, model or data "
            "changed); training from the start",
            path,
        )
        path.unlink(missing_ok=True)
        return None
    log.info("resuming from %s at epoch %d", path, st["epoch"])
    return st


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
    fingerprint = run_fingerprint(model, train, recipe, seed, mean, std)
    st = _load_resume_state(resume_path, fingerprint, device) if resume_path is not None else None
    if st is not None:
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        for k in rec:
            rec[k] = st["rec"][k].to(device)
        batch_order, lrs, el2n, grand = st["batch_order"], st["lrs"], st["el2n"], st["grand"]
        history, best, start_epoch = st["history"], st["best"], st["epoch"]
        _set_rng_state(gens, st["rng"])
    elif 0 in score_epochs:
        el2n[:, 0], grand[:, 0] = _score_snapshot(model, train, mean, std, recipe, device)

    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=gens["shuffle"]) if recipe.shuffle else torch.arange(n)
        batch_order[epoch] = order.numpy()
        lr_epoch = optimizer.param_groups[0]["lr"]
        for b in range(steps_per_epoch):
            idx = order[b * recipe.batch_size : (b + 1) * recipe.batch_size].to(device)
            xb = to_unit(x_all[idx])
            if recipe.crop_padding or recipe.horizontal_flip:
                xb = augment_batch(xb, recipe.crop_padding, recipe.horizontal_flip, gens["augment"])
            xb = normalize(xb, mean, std)
            yb = y_all[idx]
            logits = model(xb)
            loss_vec = F.cross_entropy(logits, yb, reduction="none")
            optimizer.zero_grad(set_to_none=True)
            loss_vec.mean().backward()
            lrs[epoch * steps_per_epoch + b] = optimizer.param_groups[0]["lr"]
            optimizer.step()
            if record:
                with torch.no_grad():
                    rec["loss"][idx, epoch] = loss_vec.detach()
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
            save_torch(
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
                    "rng": _rng_state(gens),
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


def choose_reference_run(summaries: Sequence[dict[str, Any]], seed: int | None = None) -> dict[str, Any]:
    """The reference run whose checkpoint the kernel is computed at (paper-protocols §2.4).

    The official code kept the checkpoint with the highest *test* accuracy over all seeds and epochs. Here
    each run's summary already holds its selected checkpoint (best validation accuracy with
    ``select="val"``, best test accuracy with ``select="test"``); this picks the run whose selected
    checkpoint scores best on that same criterion (ties: the smallest seed), or the run of ``seed``.
    """
    if not summaries:
        raise ValueError("no training runs to choose a reference checkpoint from")
    if seed is not None:
        match = [s for s in summaries if int(s["seed"]) == int(seed)]
        if not match:
            raise ValueError(
                f"kernel.seed = {seed} is not among the trained seeds {sorted(int(s['seed']) for s in summaries)}"
            )
        return match[0]
    select = summaries[0].get("select", "val")
    key = {"val": "val_acc_selected", "test": "test_acc_selected", "last": "val_acc_last"}[select]
    return max(sorted(summaries, key=lambda s: int(s["seed"])), key=lambda s: s.get(key, float("-inf")))

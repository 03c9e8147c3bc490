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

One loop: :func:`train_model` is :func:`train_loop` with one run, and :func:`lpntk.lockstep.train_lockstep` the same
loop with K runs whose models step together. What is recorded lives in :class:`lpntk.dynamics.Dynamics` and how a run
resumes in :class:`lpntk.resume.ResumePoint` and :func:`start_runs`, once for both; a runner supplies only the models'
step, evaluation and weights.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import Split, augment_batch, normalize, to_unit
from .dynamics import Dynamics, l2_error, presentation_forgetting
from .kernel import per_sample_grad_norms
from .optim import SGD, EpochSchedule
from .precision import PRECISIONS, forward_precision, run_precision
from .resume import ResumePoint, load_resume_state, run_fingerprint, set_rng_state

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


def make_optimizer(model: nn.Module | Iterable[torch.Tensor], recipe: Recipe) -> SGD:
    """SGD with the recipe's momentum, Nesterov flag and (coupled) weight decay (:class:`lpntk.optim.SGD`) over the
    parameters of ``model`` (a module, or the tensors themselves)."""
    return SGD(
        model.parameters() if isinstance(model, nn.Module) else model,
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


# ------------------------------------------------------------------------------------------- the training loop


def run_generators(seeds: Sequence[int]) -> dict[str, torch.Generator]:
    """Run k's own shuffling and augmentation generators (``shuffle<k>``, ``augment<k>``), seeded with its seed and
    seed + 7919."""
    gens = {}
    for k, seed in enumerate(seeds):
        gens[f"shuffle{k}"] = torch.Generator().manual_seed(int(seed))
        gens[f"augment{k}"] = torch.Generator().manual_seed(int(seed) + 7919)
    return gens


def require_validation(recipe: Recipe, val: Split | None) -> None:
    """``select="val"`` picks the best epoch on the validation split, so there must be one."""
    if recipe.select == "val" and (val is None or len(val) == 0):
        raise ValueError(
            "select='val' needs a validation split; set the dataset's val_fraction > 0 "
            "or train.select to 'test' or 'last'"
        )


def start_runs(state, runner, dyn: Dynamics, gens, trains: Sequence[Split], mean, std, recipe: Recipe) -> None:
    """Continue from a resumable ``state`` (the runner's models, optimiser and schedule, the record, the generators)
    or, without one, record EL2N and GraNd at initialisation when score epoch 0 is asked for."""
    if state is not None:
        runner.load_state(state)
        dyn.restore(state, runner.device)
        set_rng_state(gens, state["rng"])
    elif 0 in dyn.score_epochs:
        _snapshot(runner, dyn, trains, mean, std, recipe, 0)


def _snapshot(runner, dyn: Dynamics, trains: Sequence[Split], mean, std, recipe: Recipe, j: int) -> None:
    """EL2N and GraNd of every run's training samples at score epoch number ``j``."""
    for k in range(dyn.k_runs):
        dyn.el2n[k, :, j], dyn.grand[k, :, j] = _score_snapshot(
            runner.model_of(k), trains[k], mean, std, recipe, runner.device
        )


def train_loop(
    runner,
    dyn: Dynamics,
    gens: Mapping[str, torch.Generator],
    trains: Sequence[Split],
    recipe: Recipe,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    val: Split | None,
    test: Split | None,
    on_epoch: Callable[[int, dict[str, float]], None] | None,
    resume: ResumePoint,
    probe: torch.Tensor | None = None,
) -> None:
    """The training loop of :func:`train_model` and :func:`lpntk.lockstep.train_lockstep`, from the epoch ``dyn``
    has reached. Every epoch: each run's shuffled order (its generator ``shuffle<k>``), the runner's minibatch steps
    (which record through ``dyn``), the schedule's step, each run's accuracy and loss on ``val`` and ``test``, the
    probe's logits, EL2N and GraNd at the score epochs, each run's history row and best checkpoint,
    ``on_epoch(k, row)``, and the resumable state when due; at the end the saved state is removed.

    ``runner`` holds the K models (``device``, ``optimizer``, ``scheduler``) and takes their steps:
    ``train_epoch(orders, epoch, dyn)``, ``evaluate(split)`` -> (K accuracies, K losses), ``logits(x)`` (eval mode,
    (K, P, classes)), ``model_of(k)``, ``state_of(k)`` (run k's weights, a CPU copy), ``model_with(k, state)``, and
    ``state()`` / ``load_state(state)`` for resuming."""
    splits = [(name, split) for name, split in (("val", val), ("test", test)) if split is not None and len(split)]
    with run_precision(recipe.precision):  # exact float32 unless the recipe asks for TF32
        for epoch in range(dyn.epoch, recipe.epochs):
            t0 = time.perf_counter()
            orders = [
                torch.randperm(dyn.n, generator=gens[f"shuffle{k}"]) if recipe.shuffle else torch.arange(dyn.n)
                for k in range(dyn.k_runs)
            ]
            dyn.record_orders(epoch, orders)
            lr_epoch = runner.optimizer.param_groups[0]["lr"]
            runner.train_epoch(orders, epoch, dyn)
            runner.scheduler.step()
            evals = {name: runner.evaluate(split) for name, split in splits}
            if probe is not None:
                dyn.record_probe(epoch, runner.logits(probe))
            if epoch + 1 in dyn.score_epochs:
                _snapshot(runner, dyn, trains, mean, std, recipe, dyn.score_epochs.index(epoch + 1))
            seconds = (time.perf_counter() - t0) / dyn.k_runs
            for k, row in enumerate(dyn.close_epoch(epoch, lr_epoch, evals, seconds, runner.state_of)):
                if on_epoch is not None:
                    on_epoch(k, row)
            resume.save_if_due(runner, dyn, gens)
    resume.finish()


def train_results(runner, dyn: Dynamics, trains: Sequence[Split], seeds: Sequence[int], recipe: Recipe):
    """One :class:`TrainResult` per run: its model at the best checkpoint, the best and last weights, its history,
    its dynamics and the summary (:meth:`Dynamics.summary`, the seed and the recipe)."""
    results = []
    for k, seed in enumerate(seeds):
        last_state = runner.state_of(k)
        best_state = dyn.bests[k]["state"]
        summary = dyn.summary(k)
        summary["seed"] = int(seed)
        summary["recipe"] = asdict(recipe)
        model = runner.model_with(k, best_state)
        results.append(TrainResult(model, best_state, last_state, dyn.histories[k], dyn.result(k, trains[k]), summary))
    return results


class _OneModel:
    """The runner of :func:`train_model` (see :func:`train_loop`): one model and its own forward pass. Its step is
    the CPU fast path: the batch's rows by ``index_select`` (without advanced indexing's general path), normalised
    in place, and the mean loss without per-sample losses when nothing is recorded (benchmarks/bench_mnist_cpu.py:
    the data path was most of the loop's per-step overhead on a CPU)."""

    def __init__(self, model: nn.Module, train: Split, recipe: Recipe, mean, std, augment_gen, device):
        self.model, self.recipe, self.mean, self.std, self.device = model, recipe, mean, std, device
        self.augment_gen = augment_gen
        self.optimizer = make_optimizer(model, recipe)
        self.scheduler = make_scheduler(self.optimizer, recipe)
        self.x, self.y = train.x.to(device), train.y.to(device)
        # normalize(x, mean, std) = (x - mean) / std per channel, applied in place to each batch's own fresh tensor
        self.mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std_t = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def train_epoch(self, orders: Sequence[torch.Tensor], epoch: int, dyn: Dynamics) -> None:
        model, optimizer, recipe, device = self.model, self.optimizer, self.recipe, self.device
        x_all, y_all, mean_t, std_t = self.x, self.y, self.mean_t, self.std_t
        order, bs, steps, record = orders[0], recipe.batch_size, dyn.steps_per_epoch, dyn.record
        augment = recipe.crop_padding or recipe.horizontal_flip
        model.train()
        for b in range(steps):
            idx = order[b * bs : (b + 1) * bs].to(device)
            xb = to_unit(x_all.index_select(0, idx))
            if augment:
                xb = augment_batch(xb, recipe.crop_padding, recipe.horizontal_flip, self.augment_gen)
            xb = xb.sub_(mean_t).div_(std_t)  # normalize(xb, mean, std), in place: xb is this batch's own
            yb = y_all.index_select(0, idx)
            with forward_precision(recipe.precision, device):
                logits = model(xb)
                # the per-sample losses only where they are recorded; the mean's gradient is the same either way
                loss_vec = F.cross_entropy(logits, yb, reduction="none" if record else "mean")
            optimizer.zero_grad(set_to_none=True)
            (loss_vec.mean() if record else loss_vec).backward()
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            dyn.record_step(epoch * steps + b, lr, epoch, idx, loss_vec, logits, yb)

    def evaluate(self, split: Split) -> tuple[list[float], list[float]]:
        ev = evaluate(self.model, split, self.mean, self.std, self.recipe.eval_batch_size, self.device)
        return [ev["acc"]], [ev["loss"]]

    def model_of(self, k: int) -> nn.Module:
        return self.model

    def state_of(self, k: int) -> dict[str, torch.Tensor]:
        return {name: v.detach().cpu().clone() for name, v in self.model.state_dict().items()}

    def model_with(self, k: int, state: Mapping[str, torch.Tensor]) -> nn.Module:
        self.model.load_state_dict(state)
        return self.model

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


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

    The run is :func:`train_loop` with one run (K = 1) and the single model's runner.
    """
    device = select_device(device)
    model.to(device)
    require_validation(recipe, val)
    gens = run_generators([seed])
    runner = _OneModel(model, train, recipe, mean, std, gens["augment0"], device)
    dyn = Dynamics(1, len(train), recipe, record, device)
    fingerprint = run_fingerprint(ResumePoint.spec(recipe), seed, model, train, mean, std)
    resume = ResumePoint(Path(resume_path) if resume_path else None, recipe.resume_every, fingerprint)
    state = load_resume_state(resume.path, fingerprint, device) if resume.path is not None else None
    start_runs(state, runner, dyn, gens, [train], mean, std, recipe)
    train_loop(
        runner, dyn, gens, [train], recipe, mean=mean, std=std, val=val, test=test,
        on_epoch=None if on_epoch is None else lambda k, row: on_epoch(row), resume=resume,
    )  # fmt: skip
    return train_results(runner, dyn, [train], [seed], recipe)[0]

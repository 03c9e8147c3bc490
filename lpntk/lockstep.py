"""Several seeds of one training recipe in lockstep: stacked parameters, one vectorised step for all of them.

:func:`train_lockstep` trains K models (one per seed, same architecture, same training set and recipe) together. The
K parameter sets are stacked along a new leading axis, w = [w_1; ...; w_K], and every step evaluates all K models at
once with ``torch.func.functional_call`` under ``torch.func.vmap`` -- one kernel launch per layer for K models, which
fills a GPU that a single small model at batch 128 leaves mostly idle. Each seed keeps everything that makes it
the run :func:`lpntk.train.train_model` would do:

* its initialisation (``seed_everything(seed)`` then ``make_model()``), its shuffling and augmentation generators
  (seeded with ``seed`` and ``seed + 7919``), hence its own minibatch B_k at every step;
* its gradient: the step minimises L(w) = sum_k mean_{i in B_k} CE(f(x_i; w_k), y_i), whose gradient with respect
  to w_k is exactly the gradient of seed k's own mean loss (the other terms do not depend on w_k);
* its update: SGD with momentum, Nesterov and coupled weight decay acts elementwise, so one optimizer over the
  stacked tensors applies to each w_k the update it would apply alone; the learning-rate schedule is per epoch and
  the same for every seed;
* its training set: one split shared by all K runs, or one split per run (``train`` a sequence of K splits of the
  same length: the per-seed subsets of a pruning draw, the quad-tree nodes of one size, the companies of one arm);
  with per-run splits a seed may repeat (the same initialisation on different data);
* its records (loss, correctness, L2 error per sample and epoch, forgetting events, batch order, EL2N / GraNd at the
  score epochs), its evaluation after every epoch, its best checkpoint and its history; with ``probe`` inputs,
  their eval-mode logits after every epoch (``dynamics["probe_logits"]``, (E, P, classes): the learning-difficulty
  curves of targets).

So with dropout off the K results equal K separate runs up to floating-point reassociation (vectorised convolutions
and reductions sum in another order; a test checks agreement to 1e-9 in float64, and identical correctness and
forgetting records). **Dropout** is the exception: under ``vmap(randomness="different")`` the K dropout masks of a
step are drawn together from the global generator, not in the order K separate runs would draw them, so a model
with active dropout gives runs that are statistically equivalent but not the same numbers. That is why lockstep
is a switch (``pruning.retrain.lockstep``, off by default) and recorded with each run (MLflow tag
``lpntk.lockstep``). Models with buffers (BatchNorm running statistics) are not supported.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from .data import Split, augment_batch, normalize, to_unit
from .dynamics import Dynamics
from .precision import forward_precision
from .resume import ResumePoint, load_resume_state, run_fingerprint
from .train import (
    Recipe,
    TrainResult,
    make_optimizer,
    make_scheduler,
    require_validation,
    run_generators,
    seed_everything,
    select_device,
    start_runs,
    train_loop,
    train_results,
)

__all__ = ["train_lockstep", "lockstep_groups"]


def lockstep_groups(pending: Sequence, lockstep: bool, max_runs: int) -> list[list]:
    """The pending runs in the groups that train together: consecutive groups of at most ``max_runs`` with
    ``lockstep``, else one run per group."""
    step = max(1, int(max_runs)) if lockstep else 1
    return [list(pending[i : i + step]) for i in range(0, len(pending), step)]


def _stack(make_model: Callable[[], nn.Module], seeds: Sequence[int], device) -> tuple[nn.Module, dict]:
    """Every seed's freshly initialised model, its parameters stacked (K, ...) as leaves; the first model is the
    template whose structure ``functional_call`` runs."""
    models = []
    for seed in seeds:
        seed_everything(int(seed))
        models.append(make_model().to(device))
    base = models[0]
    if list(base.buffers()):
        raise ValueError(
            "lockstep training needs a model without buffers (BatchNorm running statistics would be shared across "
            "seeds); set pruning.retrain.lockstep: false"
        )
    names = list(base.state_dict())
    params = {
        n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]).requires_grad_(True) for n in names
    }
    return base, params


def _forward(base: nn.Module, params: dict, x: torch.Tensor, shared: bool) -> torch.Tensor:
    """Logits (K, B, classes) of the K stacked models; ``x`` is (K, B, ...) or, ``shared``, (B, ...) for all."""
    fn = vmap(lambda p, xb: functional_call(base, p, (xb,)), in_dims=(0, None if shared else 0), randomness="different")
    return fn(params, x)


@torch.no_grad()
def _evaluate(base, params, split: Split, mean, std, batch_size: int, device) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode accuracy and mean loss of each of the K models on ``split`` (as :func:`lpntk.train.evaluate`)."""
    base.eval()
    z = torch.cat(
        [
            _forward(base, params, normalize(to_unit(split.x[s : s + batch_size].to(device)), mean, std), True).float()
            for s in range(0, len(split), batch_size)
        ],
        dim=1,
    )
    base.train()
    y = split.y.to(device)
    acc = [float((zk.argmax(1) == y).float().mean()) for zk in z]
    loss = [float(F.cross_entropy(zk, y)) for zk in z]
    return np.asarray(acc), np.asarray(loss)


def _model_of(base: nn.Module, params: dict, k: int) -> nn.Module:
    model = copy.deepcopy(base)
    model.load_state_dict({n: p[k].detach() for n, p in params.items()})
    return model


def _as_runs(train: Split | Sequence[Split], k_runs: int) -> list[Split]:
    """One training split per run: ``train`` itself K times, or the K splits given (all of one length)."""
    if isinstance(train, Split):
        return [train] * k_runs
    trains = list(train)
    if len(trains) != k_runs:
        raise ValueError(f"lockstep got {len(trains)} training splits for {k_runs} runs; give one per seed")
    lengths = sorted({len(t) for t in trains})
    if len(lengths) != 1:
        raise ValueError(f"lockstep training splits must have one length (one minibatch schedule), got {lengths}")
    return trains


class _Stacked:
    """The runner of :func:`train_lockstep` (see :func:`lpntk.train.train_loop`): K models as one template with
    stacked parameters, every step one vectorised forward and backward pass for all of them. ``per_run``: run k
    trains on its own split (``x``, ``y`` stacked (K, n, ...)), else all on one."""

    def __init__(self, make_model, trains, seeds, per_run: bool, recipe: Recipe, *, mean, std, gens, device):
        self.base, self.params = _stack(make_model, seeds, device)
        self.base.train()
        self.recipe, self.mean, self.std, self.gens, self.device = recipe, mean, std, gens, device
        self.k_runs, self.per_run = len(seeds), per_run
        self.optimizer = make_optimizer([p for p in self.params.values() if p.requires_grad], recipe)
        self.scheduler = make_scheduler(self.optimizer, recipe)
        if per_run:  # (K, n, ...): run k's own samples; a minibatch gathers x[k, idx[k]]
            self.x, self.y = (
                torch.stack([t.x for t in trains]).to(device),
                torch.stack([t.y for t in trains]).to(device),
            )
        else:
            self.x, self.y = trains[0].x.to(device), trains[0].y.to(device)
        self.arange_k = torch.arange(self.k_runs, device=device)[:, None]
        self.first_rows = self.arange_k * len(trains[0])  # run k's first row k·n of the record (lpntk.train.Dynamics)

    def _inputs(self, idx: torch.Tensor) -> torch.Tensor:
        """The K minibatches (K, B, ...) at positions ``idx`` (K, B), each augmented with its run's generator and
        normalised."""
        recipe, parts = self.recipe, []
        for k in range(self.k_runs):
            xb = to_unit(self.x[k, idx[k]] if self.per_run else self.x[idx[k]])
            if recipe.crop_padding or recipe.horizontal_flip:
                xb = augment_batch(xb, recipe.crop_padding, recipe.horizontal_flip, self.gens[f"augment{k}"])
            parts.append(normalize(xb, self.mean, self.std))
        return torch.stack(parts)

    def train_epoch(self, orders: Sequence[torch.Tensor], epoch: int, dyn: Dynamics) -> None:
        base, params, optimizer, recipe = self.base, self.params, self.optimizer, self.recipe
        orders, bs, steps, arange_k = torch.stack(orders), recipe.batch_size, dyn.steps_per_epoch, self.arange_k
        for b in range(steps):
            idx = orders[:, b * bs : (b + 1) * bs].to(self.device)  # (K, B): each seed's own minibatch
            xb, yb = self._inputs(idx), (self.y[arange_k, idx] if self.per_run else self.y[idx])
            with forward_precision(recipe.precision, self.device):
                logits = _forward(base, params, xb, False).flatten(0, 1)  # (K·B, classes)
                loss_vec = F.cross_entropy(logits, yb.flatten(), reduction="none").view(yb.shape)
            optimizer.zero_grad(set_to_none=True)
            loss_vec.mean(dim=1).sum().backward()  # d/dw_k = gradient of seed k's own mean loss
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            rows = (self.first_rows + idx).flatten() if dyn.record else None  # run k's sample i: row k·n + i
            dyn.record_step(epoch * steps + b, lr, epoch, rows, loss_vec.flatten(), logits, yb.flatten())

    def evaluate(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
        return _evaluate(self.base, self.params, split, self.mean, self.std, self.recipe.eval_batch_size, self.device)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self.base.eval()
        z = _forward(self.base, self.params, x.to(self.device), True).float().cpu()  # (K, P, classes)
        self.base.train()
        return z

    def model_of(self, k: int) -> nn.Module:
        return _model_of(self.base, self.params, k)

    def state_of(self, k: int) -> dict[str, torch.Tensor]:
        return {name: p[k].detach().cpu().clone() for name, p in self.params.items()}

    def model_with(self, k: int, state) -> nn.Module:
        model = _model_of(self.base, self.params, k)
        model.load_state_dict(state)
        return model

    def state(self) -> dict:
        return {
            "model": {name: p.detach() for name, p in self.params.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state(self, state) -> None:
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(state["model"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def train_lockstep(
    make_model: Callable[[], nn.Module],
    train: Split | Sequence[Split],
    recipe: Recipe,
    seeds: Sequence[int],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    val: Split | None = None,
    test: Split | None = None,
    device: str | torch.device | None = "auto",
    record: bool = True,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    resume_path: str | os.PathLike | None = None,
    probe: torch.Tensor | None = None,
) -> list[TrainResult]:
    """Train one model per seed of ``seeds`` on ``train`` with ``recipe``, all in lockstep (module docstring).

    Returns one :class:`lpntk.train.TrainResult` per seed, in order, as :func:`lpntk.train.train_model` would
    (``make_model`` builds a fresh model; it is called after ``seed_everything(seed)`` for each seed). ``train`` is
    one split for every run or a sequence of one split per run (all of one length; the seeds may then repeat).
    ``probe``: normalised inputs (P, ...) whose eval-mode logits after every epoch are returned in
    ``dynamics["probe_logits"]`` (E, P, classes). ``on_epoch``
    is called with (seed, history row) for each seed after every epoch. With ``resume_path`` and
    ``recipe.resume_every > 0`` the state of all K runs is saved every ``resume_every`` epochs and picked up by a
    later call with the same seeds; it is deleted when the runs complete.

    The runs are :func:`lpntk.train.train_loop` with K runs and the stacked models' runner: they record, evaluate,
    select and resume as :func:`lpntk.train.train_model` does, by the same code.
    """
    seeds = [int(s) for s in seeds]
    per_run = not isinstance(train, Split)
    if not seeds or (not per_run and len(set(seeds)) != len(seeds)):
        raise ValueError(f"lockstep seeds must be distinct (one shared training split) and at least one, got {seeds}")
    trains = _as_runs(train, len(seeds))
    device = select_device(device)
    require_validation(recipe, val)
    gens = run_generators(seeds)
    runner = _Stacked(make_model, trains, seeds, per_run, recipe, mean=mean, std=std, gens=gens, device=device)
    dyn = Dynamics(len(seeds), len(trains[0]), recipe, record, device)
    spec, base = ResumePoint.spec(recipe), runner.base
    runs = [run_fingerprint(spec, s, base, t, mean, std) for s, t in zip(seeds, trains, strict=True)] if per_run else []
    fingerprint = run_fingerprint({**spec, "lockstep_seeds": seeds, "runs": runs}, seeds[0], base, trains[0], mean, std)
    resume = ResumePoint(Path(resume_path) if resume_path else None, recipe.resume_every, fingerprint)
    state = load_resume_state(resume.path, fingerprint, device) if resume.path is not None else None
    start_runs(state, runner, dyn, gens, trains, mean, std, recipe)
    train_loop(
        runner, dyn, gens, trains, recipe, mean=mean, std=std, val=val, test=test,
        on_epoch=None if on_epoch is None else lambda k, row: on_epoch(seeds[k], row), resume=resume, probe=probe,
    )  # fmt: skip
    return train_results(runner, dyn, trains, seeds, recipe)

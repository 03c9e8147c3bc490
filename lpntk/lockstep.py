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
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from .data import Split, augment_batch, normalize, to_unit
from .optim import SGD
from .precision import forward_precision, run_precision
from .resume import load_resume_state, rng_state, run_fingerprint, save_resume_state, set_rng_state
from .train import (
    Recipe,
    TrainResult,
    _score_snapshot,
    _summarise,
    l2_error,
    make_scheduler,
    presentation_forgetting,
    seed_everything,
    select_device,
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
    """
    seeds = [int(s) for s in seeds]
    per_run = not isinstance(train, Split)
    if not seeds or (not per_run and len(set(seeds)) != len(seeds)):
        raise ValueError(f"lockstep seeds must be distinct (one shared training split) and at least one, got {seeds}")
    trains = _as_runs(train, len(seeds))
    device = select_device(device)
    if recipe.select == "val" and (val is None or len(val) == 0):
        raise ValueError("select='val' needs a validation split; set the dataset's val_fraction > 0")
    base, params = _stack(make_model, seeds, device)
    base.train()
    k_runs, n, epochs, bs = len(seeds), len(trains[0]), recipe.epochs, recipe.batch_size
    steps_per_epoch = math.ceil(n / bs)
    optimizer = SGD(
        [p for p in params.values() if p.requires_grad],
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        nesterov=recipe.nesterov and recipe.momentum > 0,
    )
    scheduler = make_scheduler(optimizer, recipe)
    gens = {}
    for k, seed in enumerate(seeds):
        gens[f"shuffle{k}"] = torch.Generator().manual_seed(seed)
        gens[f"augment{k}"] = torch.Generator().manual_seed(seed + 7919)
    if per_run:  # (K, n, ...): run k's own samples; a minibatch gathers x_all[k, idx[k]]
        x_all, y_all = torch.stack([t.x for t in trains]).to(device), torch.stack([t.y for t in trains]).to(device)
    else:
        x_all, y_all = trains[0].x.to(device), trains[0].y.to(device)
    probe_logits: torch.Tensor | None = None  # (K, E, P, classes), allocated at the first probe
    rec = {
        "loss": torch.zeros(k_runs, n, epochs, dtype=torch.float32, device=device),
        "correct": torch.zeros(k_runs, n, epochs, dtype=torch.bool, device=device),
        "l2": torch.zeros(k_runs, n, epochs, dtype=torch.float32, device=device),
    }
    batch_order = np.zeros((k_runs, epochs, n), dtype=np.int32)
    lrs = np.zeros(epochs * steps_per_epoch, dtype=np.float64)
    score_epochs = sorted(set(recipe.score_epochs))
    el2n = np.zeros((k_runs, n, len(score_epochs)), dtype=np.float32)
    grand = np.zeros((k_runs, n, len(score_epochs)), dtype=np.float32)
    histories: list[list[dict[str, float]]] = [[] for _ in seeds]
    bests = [{"acc": -1.0, "epoch": 0, "state": None} for _ in seeds]
    start_epoch = 0

    def snapshot(j: int) -> None:
        for k in range(k_runs):
            el2n[k, :, j], grand[k, :, j] = _score_snapshot(
                _model_of(base, params, k), trains[k], mean, std, recipe, device
            )

    resume_path = Path(resume_path) if resume_path else None
    spec = {k: v for k, v in asdict(recipe).items() if k != "resume_every"}
    runs = [run_fingerprint(spec, s, base, t, mean, std) for s, t in zip(seeds, trains, strict=True)] if per_run else []
    fingerprint = run_fingerprint({**spec, "lockstep_seeds": seeds, "runs": runs}, seeds[0], base, trains[0], mean, std)
    st = load_resume_state(resume_path, fingerprint, device) if resume_path is not None else None
    if st is not None:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(st["params"][name])
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        rec = {k: st["rec"][k].to(device) for k in rec}
        batch_order, lrs, el2n, grand = st["batch_order"], st["lrs"], st["el2n"], st["grand"]
        histories, bests, start_epoch = st["histories"], st["bests"], st["epoch"]
        probe_logits = st.get("probe_logits")
        set_rng_state(gens, st["rng"])
    elif 0 in score_epochs:
        snapshot(0)

    arange_k = torch.arange(k_runs, device=device)[:, None]
    with run_precision(recipe.precision):
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            orders = torch.stack(
                [
                    torch.randperm(n, generator=gens[f"shuffle{k}"]) if recipe.shuffle else torch.arange(n)
                    for k in range(k_runs)
                ]
            )
            batch_order[:, epoch] = orders.numpy()
            lr_epoch = optimizer.param_groups[0]["lr"]
            for b in range(steps_per_epoch):
                idx = orders[:, b * bs : (b + 1) * bs].to(device)  # (K, B): each seed's own minibatch
                parts = []
                for k in range(k_runs):
                    xb = to_unit(x_all[k, idx[k]] if per_run else x_all[idx[k]])
                    if recipe.crop_padding or recipe.horizontal_flip:
                        xb = augment_batch(xb, recipe.crop_padding, recipe.horizontal_flip, gens[f"augment{k}"])
                    parts.append(normalize(xb, mean, std))
                xb, yb = torch.stack(parts), (y_all[arange_k, idx] if per_run else y_all[idx])
                with forward_precision(recipe.precision, device):
                    logits = _forward(base, params, xb, False)  # (K, B, classes)
                    loss_vec = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view(yb.shape)
                optimizer.zero_grad(set_to_none=True)
                loss_vec.mean(dim=1).sum().backward()  # d/dw_k = gradient of seed k's own mean loss
                lrs[epoch * steps_per_epoch + b] = optimizer.param_groups[0]["lr"]
                optimizer.step()
                if record:
                    with torch.no_grad():
                        rec["loss"][arange_k, idx, epoch] = loss_vec.detach().float()
                        rec["correct"][arange_k, idx, epoch] = logits.detach().argmax(2) == yb
                        rec["l2"][arange_k, idx, epoch] = l2_error(logits.flatten(0, 1), yb.flatten()).view(yb.shape)
            scheduler.step()
            evals = {
                name: _evaluate(base, params, split, mean, std, recipe.eval_batch_size, device)
                for name, split in (("val", val), ("test", test))
                if split is not None and len(split)
            }
            if probe is not None:
                with torch.no_grad():
                    base.eval()
                    z = _forward(base, params, probe.to(device), True).float().cpu()  # (K, P, classes)
                    base.train()
                if probe_logits is None:
                    probe_logits = torch.zeros(k_runs, epochs, len(probe), z.shape[-1])
                probe_logits[:, epoch] = z
            if epoch + 1 in score_epochs:
                snapshot(score_epochs.index(epoch + 1))
            seconds = (time.perf_counter() - t0) / k_runs
            for k, seed in enumerate(seeds):
                row = {
                    "epoch": epoch + 1,
                    "lr": lr_epoch,
                    "train_loss": float(rec["loss"][k, :, epoch].mean()) if record else float("nan"),
                    "train_acc": float(rec["correct"][k, :, epoch].float().mean()) if record else float("nan"),
                }
                for name, (acc, loss) in evals.items():
                    row[f"{name}_acc"], row[f"{name}_loss"] = float(acc[k]), float(loss[k])
                row["seconds"] = seconds
                histories[k].append(row)
                metric = {"val": row.get("val_acc"), "test": row.get("test_acc"), "last": float(epoch)}[recipe.select]
                if metric is not None and metric > bests[k]["acc"]:
                    state = {name: p[k].detach().cpu().clone() for name, p in params.items()}
                    bests[k] = {"acc": metric, "epoch": epoch + 1, "state": state}
                if on_epoch is not None:
                    on_epoch(seed, row)
            if resume_path is not None and recipe.resume_every and (epoch + 1) % recipe.resume_every == 0:
                if epoch + 1 < epochs:
                    save_resume_state(
                        resume_path,
                        {
                            "params": {name: p.detach() for name, p in params.items()},
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "rec": {k: v.cpu() for k, v in rec.items()},
                            "batch_order": batch_order,
                            "lrs": lrs,
                            "el2n": el2n,
                            "grand": grand,
                            "histories": histories,
                            "bests": bests,
                            "probe_logits": probe_logits,
                            "epoch": epoch + 1,
                            "rng": rng_state(gens),
                            "fingerprint": fingerprint,
                        },
                    )

    results = []
    for k, seed in enumerate(seeds):
        correct = rec["correct"][k].cpu().numpy()
        forget = presentation_forgetting(correct)
        dynamics = {
            "index": trains[k].index.numpy().astype(np.int64),
            "y": trains[k].y.numpy().astype(np.int64),
            "loss": rec["loss"][k].cpu().numpy(),
            "correct": correct,
            "l2": rec["l2"][k].cpu().numpy(),
            "forgetting_events": forget["events"],
            "forgetting_count": forget["count"],
            "first_learned": forget["first_learned"],
            "never_learned": forget["never_learned"],
            "batch_order": batch_order[k],
            "lr": lrs.copy(),
            "score_epochs": np.asarray(score_epochs, dtype=np.int64),
            "el2n": el2n[k],
            "grand": grand[k],
        }
        if probe_logits is not None:
            dynamics["probe_logits"] = probe_logits[k].numpy()
        summary = _summarise(histories[k], bests[k]["epoch"], recipe.select)
        summary["seed"] = seed
        summary["recipe"] = asdict(recipe)
        last_state = {name: p[k].detach().cpu().clone() for name, p in params.items()}
        model = _model_of(base, params, k)
        model.load_state_dict(bests[k]["state"])
        results.append(TrainResult(model, bests[k]["state"], last_state, histories[k], dynamics, summary))
    if resume_path is not None:
        resume_path.unlink(missing_ok=True)
    return results

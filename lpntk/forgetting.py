"""Forgetting events and their first-order prediction with eNTK, lpNTK and pNTK (use case 2; paper Eq. 1, Table 1).

Setting (paper-protocols §1.1, §1.7, §4.3). Minibatch SGD updates w_{t-1} -> w_t on the minibatch B_t with the
learning rate eta_t. A **forgetting event** at step t is a sample x_o of the *previous* minibatch B_{t-1} that
w_{t-1} classifies correctly and w_t misclassifies:

    argmax z(x_o; w_{t-1}) = y_o   and   argmax z(x_o; w_t) != y_o.

**First-order prediction** (paper Eq. 1, logit form). For a plain SGD step w_t = w_{t-1} - eta_t grad_w L_{B_t},
with L_{B_t} = mean_{u in B_t} CE(z(x_u), y_u),

    Delta z(x_o) ~ -eta_t J(x_o) grad_w L_{B_t} = -eta_t mean_{u in B_t} K(x_o, x_u) grad_z L(x_u),

with J = dz/dw at w_{t-1}, K(x_o, x_u) = J(x_o) J(x_u)^T the K x K eNTK block and
grad_z L(x_u) = softmax(z_u) - e_{y_u}.
The eNTK predictor is computed matrix-free, as one Jacobian-vector product of the batch gradient (no block is
formed). The **lpNTK** predictor replaces each block by kappa((x_o, y_o), (x_u, y_u)) I_K with
kappa = (1/K) s(y_o)^T K(x_o, x_u) s(y_u) (the 1/K keeps kappa on the scale of K's diagonal, paper-protocols §1.4,
§7 A4); the **pNTK** predictor likewise with (1/K) 1^T K(x_o, x_u) 1. Both need only the N_o x N_u Gram.
``lpntk_raw`` and ``pntk_raw`` use the official code's kernels without the 1/K (c = 1, §1.3): K times larger
predicted changes; the constant is irrelevant to rankings but not to Eq. 1.
A fourth predictor, ``entk_update``, is the linearisation along the *actual* parameter update,
Delta z(x_o) ~ J(x_o) (w_t - w_{t-1}); for plain SGD without dropout it equals the eNTK predictor up to round-off,
with momentum / weight decay / dropout it isolates the error of linearising from the error of Eq. 1 ignoring
them (the official code ignored momentum and weight decay, paper-protocols §4.3 item 5).

A sample is **predicted forgotten** when argmax z(x_o) = y_o and argmax (z(x_o) + Delta z(x_o)) != y_o
(``space="logit"``, the default). The official code worked in probability space: q^ = q + A(x_o) Delta z with
A = diag(q) - q q^T (``space="probability"``). Both are first-order expansions of softmax(z + Delta z): for two
classes a, b the logit test is z_a - z_b + Delta z_a - Delta z_b > 0 and the probability test is
z_a - z_b + log(1 + Delta z_a - q.Delta z) - log(1 + Delta z_b - q.Delta z) > 0, the same to first order in Delta z;
they differ at second order, and the probability form breaks down when |Delta z| is not small (q^ can leave
[0, 1]). The logit form is the exact argmax of the first-order logits, so it is the default; the number of
samples on which the two forms disagree is recorded per step.

**Scores.** Per step the confusion counts TP, FP, TN, FN of the predicted against the true events over B_{t-1}.
Pooled over a window: precision = sum TP / sum (TP + FP), recall = sum TP / sum (TP + FN),
F1 = 2 sum TP / sum (2 TP + FP + FN); an empty denominator gives NaN (undefined; e.g. recall of a window without
true events). The official code's per-step averaging (labelled ``stepwise``): per step P_t = TP/(TP+FP), or 1 when
nothing is predicted; R_t = TP/(TP+FN), or 1 when nothing is forgotten; P and R are their means over the window's
steps, F1 = 2PR/(P+R).

:func:`run_forgetting` trains a model (seeded init and shuffling) and evaluates a window of steps with the
minibatches and learning rates the training used.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import Split, augment_batch, normalize, to_unit
from .kernel import cross_entropy_gradients, jvp_logits, lpntk_gram, pntk_gram

__all__ = [
    "KERNEL_PREDICTORS",
    "PREDICTORS",
    "PAPER_FORGETTING",
    "ForgettingSetup",
    "ForgettingResult",
    "predicted_logit_changes",
    "first_order_logit_change",
    "probability_change",
    "forgetting_events",
    "predicted_forgetting",
    "confusion_counts",
    "pooled_scores",
    "stepwise_scores",
    "el2n_approximation_error",
    "run_forgetting",
    "summarise_steps",
    "aggregate_scores",
    "format_table",
]

#: Eq. 1 with the eNTK block, lpNTK kappa I_K, pNTK kappa I_K (the paper's comparison and its pNTK analogue), and
#: the last two with the official code's constant c = 1 instead of 1/K (K times larger kernels).
KERNEL_PREDICTORS = ("entk", "lpntk", "pntk", "lpntk_raw", "pntk_raw")
#: plus the linearisation along the actual parameter update.
PREDICTORS = KERNEL_PREDICTORS + ("entk_update",)

#: The authors' slides (paper-protocols §5.0): mean and std over runs, in %, by torchvision dataset name.
PAPER_FORGETTING: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    "MNIST": {
        "lpntk": {"precision": (42.72, 6.55), "recall": (59.02, 7.49), "f1": (49.54, 6.99)},
        "entk": {"precision": (95.56, 8.14), "recall": (86.67, 13.67), "f1": (89.96, 7.10)},
    },
    "CIFAR10": {
        "lpntk": {"precision": (49.47, 7.06), "recall": (69.50, 7.49), "f1": (57.76, 7.36)},
        "entk": {"precision": (96.99, 3.99), "recall": (98.99, 1.61), "f1": (97.87, 2.08)},
    },
}


# ------------------------------------------------------------------------------------------- predictions


def predicted_logit_changes(
    model: nn.Module,
    x_obs: Tensor,
    y_obs: Tensor,
    x_upd: Tensor,
    y_upd: Tensor,
    lr: float,
    *,
    predictors: Sequence[str] = KERNEL_PREDICTORS,
    block_size: int = 256,
    gradient: tuple[Mapping[str, Tensor], Tensor] | None = None,
) -> dict[str, Tensor]:
    """First-order logit changes of x_obs after one plain SGD step (``lr``) on the batch (x_upd, y_upd), (N_o, K) each.

    * ``entk``:  Delta z(x_o) = -lr J(x_o) grad_w L_batch = -lr mean_u K(x_o, x_u) grad_z L(x_u)  (one JVP,
      :func:`lpntk.kernel.jvp_logits`; no block is formed),
    * ``lpntk``: Delta z(x_o) = -lr mean_u kappa_lp(o, u) grad_z L(x_u), kappa_lp = (1/K) s(y_o)^T K(x_o,x_u) s(y_u)
      (the N_o x N_u Gram of :func:`lpntk.kernel.lpntk_gram`),
    * ``pntk``:  Delta z(x_o) = -lr mean_u kappa_p(o, u) grad_z L(x_u),  kappa_p = (1/K) 1^T K(x_o, x_u) 1
      (:func:`lpntk.kernel.pntk_gram`),
    * ``lpntk_raw``, ``pntk_raw``: the same with the official code's kernels s^T K s and 1^T K 1 (no 1/K), i.e.
      K times the changes above,

    all at the model's current parameters, in eval mode, L the mean cross-entropy over the batch. ``gradient``:
    (grad_w L_batch, grad_z L per sample) if already computed (:func:`lpntk.kernel.cross_entropy_gradients`).
    """
    unknown = [p for p in predictors if p not in KERNEL_PREDICTORS]
    if unknown:
        raise ValueError(f"predictors: unknown {unknown}; choose from {list(KERNEL_PREDICTORS)}")
    if gradient is None:
        g, err, _ = cross_entropy_gradients(model, x_upd, y_upd)
    else:
        g, err = gradient
    n_u = len(x_upd)
    out: dict[str, Tensor] = {}
    if "entk" in predictors:
        out["entk"] = -lr * jvp_logits(model, x_obs, g, block_size=block_size).detach()
    k = err.shape[1]
    for name, gram in (
        ("lpntk", lambda: lpntk_gram(model, x_obs, y_obs, x2=x_upd, y2=y_upd, block_size=block_size)),
        ("pntk", lambda: pntk_gram(model, x_obs, x_upd, block_size=block_size)),
    ):
        if name in predictors or f"{name}_raw" in predictors:
            kap = gram().detach()
            dz = -lr * (kap @ err.to(kap.dtype)) / n_u
            if name in predictors:
                out[name] = dz
            if f"{name}_raw" in predictors:
                out[f"{name}_raw"] = k * dz
    return {p: out[p] for p in predictors}


def first_order_logit_change(
    model: nn.Module,
    x_obs: Tensor,
    x_upd: Tensor,
    y_upd: Tensor,
    lr: float,
    *,
    kernel: str = "entk",
    y_obs: Tensor | None = None,
    block_size: int = 256,
) -> Tensor:
    """First-order change of the logits of x_obs after one SGD step (lr) on the batch (x_upd, y_upd), (N_o, K):

    * ``"entk"``:  Delta z(x_o) = -lr * mean_u K(x_o, x_u) dL/dz(x_u) = -lr * J(x_o) grad_w L_batch, matrix-free
      (paper-protocols §1.1, 4.3).
    * ``"lpntk"``: K replaced by kappa(o, u) I_K with kappa the lpNTK (1/K scale): -lr * mean_u kappa_ou dL/dz(x_u);
      needs ``y_obs``.
    * ``"pntk"``:  the same with the pNTK.

    One predictor of :func:`lpntk.forgetting.predicted_logit_changes`, which computes several from one pass.
    """
    if kernel not in ("entk", "lpntk", "pntk"):
        raise ValueError(f"kernel: expected 'entk', 'lpntk' or 'pntk', got {kernel!r}")
    if kernel == "lpntk" and y_obs is None:
        raise ValueError("y_obs: kernel='lpntk' needs the labels of x_obs")
    return predicted_logit_changes(model, x_obs, y_obs, x_upd, y_upd, lr, predictors=[kernel], block_size=block_size)[
        kernel
    ]


def probability_change(z: Tensor, dz: Tensor) -> Tensor:
    """First-order change of softmax(z) for a logit change dz: Delta q = A dz = q * (dz - q . dz),
    A = diag(q) - q q^T (the official code's form, paper-protocols §1.1)."""
    q = torch.softmax(z, dim=1)
    return q * (dz - (q * dz).sum(dim=1, keepdim=True))


def forgetting_events(z_before: Tensor, z_after: Tensor, y: Tensor) -> Tensor:
    """True forgetting: argmax z_before = y and argmax z_after != y, (N,) bool."""
    return (z_before.argmax(1) == y) & (z_after.argmax(1) != y)


def predicted_forgetting(z_before: Tensor, dz: Tensor, y: Tensor, space: str = "logit") -> Tensor:
    """Predicted forgetting: argmax z = y and argmax (z + dz) != y (``space="logit"``), or
    argmax (softmax(z) + A dz) != y (``space="probability"``, the official code), (N,) bool."""
    if space == "logit":
        after = z_before + dz
    elif space == "probability":
        after = torch.softmax(z_before, dim=1) + probability_change(z_before, dz)
    else:
        raise ValueError(f"space: expected 'logit' or 'probability', got {space!r}")
    return (z_before.argmax(1) == y) & (after.argmax(1) != y)


def confusion_counts(true: Tensor | np.ndarray, pred: Tensor | np.ndarray) -> dict[str, int]:
    """TP, FP, TN, FN of boolean predictions ``pred`` against boolean truth ``true``."""
    t = np.asarray(true.cpu() if isinstance(true, Tensor) else true, dtype=bool)
    p = np.asarray(pred.cpu() if isinstance(pred, Tensor) else pred, dtype=bool)
    return {"tp": int((t & p).sum()), "fp": int((~t & p).sum()), "tn": int((~t & ~p).sum()), "fn": int((t & ~p).sum())}


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


def pooled_scores(tp, fp, fn) -> dict[str, float]:
    """Precision sum TP / sum (TP+FP), recall sum TP / sum (TP+FN), F1 2 sum TP / sum (2TP+FP+FN) over all steps;
    NaN where a denominator is 0 (nothing predicted / nothing forgotten / neither)."""
    tp, fp, fn = (float(np.sum(a)) for a in (tp, fp, fn))
    return {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn)}


def stepwise_scores(tp, fp, fn) -> dict[str, float]:
    """The official code's averaging: P_t = TP/(TP+FP) (1 if nothing predicted), R_t = TP/(TP+FN) (1 if nothing
    forgotten) per step; P, R their means over steps; F1 = 2PR/(P+R) (0 if P+R = 0). NaN for no steps."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    if tp.size == 0:
        return {"precision": float("nan"), "recall": float("nan"), "f1": float("nan")}
    with np.errstate(invalid="ignore", divide="ignore"):
        p_t = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
        r_t = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 1.0)
    p, r = float(p_t.mean()), float(r_t.mean())
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r > 0 else 0.0}


def el2n_approximation_error(q_pred: Tensor, q_true: Tensor, y: Tensor) -> float:
    """The official code's EL2N approximation error: mean_o | ||q^_o - e_y|| / ||q_t,o - e_y|| - 1 |
    (predicted vs actual prediction after the step; the denominator is clamped at 1e-12)."""
    e = F.one_hot(y, q_true.shape[1]).to(q_true.dtype)
    ratio = (q_pred - e).norm(dim=1) / (q_true - e).norm(dim=1).clamp_min(1e-12)
    return float((ratio - 1).abs().mean())


# ------------------------------------------------------------------------------------------- the run


@dataclass
class ForgettingSetup:
    """The training run and window of one forgetting experiment (a ``forgetting`` config block).

    Steps are numbered from 1: step t updates w_{t-1} to w_t on B_t. The window evaluates steps
    ``start_step`` .. ``start_step + steps - 1`` (``start_step >= 2``: step t is judged on B_{t-1}); the steps
    before it train without evaluation (warm-up).
    """

    batch_size: int = 128
    lr: float = 0.001
    momentum: float = 0.0
    weight_decay: float = 0.0
    dropout: bool = False
    augment: bool = False
    start_step: int = 2
    steps: int = 50
    space: str = "logit"
    dtype: str = "float32"
    block_size: int = 256

    @classmethod
    def from_config(cls, block: Mapping[str, Any]) -> ForgettingSetup:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in block.items() if k in names})

    def __post_init__(self):
        checks = [
            (isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", "a positive integer"),
            (self.lr > 0, "lr", "a positive number"),
            (0 <= self.momentum < 1, "momentum", "in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay", "non-negative"),
            (
                isinstance(self.start_step, int) and self.start_step >= 2,
                "start_step",
                "an integer >= 2 (step t is judged on the previous minibatch B_{t-1})",
            ),
            (isinstance(self.steps, int) and self.steps >= 1, "steps", "a positive integer"),
            (self.space in ("logit", "probability"), "space", "'logit' or 'probability'"),
            (self.dtype in ("float32", "float64"), "dtype", "'float32' or 'float64'"),
            (isinstance(self.block_size, int) and self.block_size >= 1, "block_size", "a positive integer"),
        ]
        for ok, key, what in checks:
            if not ok:
                raise ValueError(f"forgetting.{key}: expected {what}, got {getattr(self, key)!r}")

    @property
    def plain_sgd(self) -> bool:
        """The step is exactly w_t = w_{t-1} - lr grad_w L_{B_t} of the eval-mode network (Eq. 1's update)."""
        return self.momentum == 0 and self.weight_decay == 0 and not self.dropout

    @property
    def predictors(self) -> tuple[str, ...]:
        """Kernel predictors, plus ``entk_update`` when the update is not plain SGD (else it equals ``entk``)."""
        return KERNEL_PREDICTORS if self.plain_sgd else PREDICTORS

    @property
    def last_step(self) -> int:
        return self.start_step + self.steps - 1

    @property
    def torch_dtype(self) -> torch.dtype:
        return {"float32": torch.float32, "float64": torch.float64}[self.dtype]


@dataclass
class ForgettingResult:
    """Per evaluated step ``steps`` (one dict per step), per judged sample ``samples`` (flat arrays, one entry per
    (step, sample of B_{t-1})), and the record of every training step: ``batches`` (T, batch_size) positions in the
    training split (-1 pads a short last batch of an epoch) and ``lr`` (T,) the learning rate each step used."""

    steps: list[dict[str, float]]
    samples: dict[str, np.ndarray]
    batches: np.ndarray
    lr: np.ndarray
    setup: dict[str, Any]


def _params(model: nn.Module) -> dict[str, Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _margin(z: Tensor, y: Tensor) -> Tensor:
    """z_y - max_{k != y} z_k: positive iff the sample is classified correctly (ties aside)."""
    zy = z.gather(1, y[:, None])[:, 0]
    other = z.scatter(1, y[:, None], float("-inf")).max(dim=1).values
    return zy - other


def run_forgetting(
    model: nn.Module,
    train: Split,
    setup: ForgettingSetup,
    seed: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    augment_cfg: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> ForgettingResult:
    """Train ``model`` (freshly initialised by the caller) on ``train`` and evaluate the window of ``setup``.

    Training: SGD (``setup.lr``, ``momentum``, ``weight_decay``), minibatches of ``batch_size`` drawn by a
    per-epoch permutation from ``torch.Generator().manual_seed(seed)`` (the train stage's order), constant learning
    rate, mean cross-entropy; the step runs in eval mode unless ``setup.dropout`` (then dropout is active and the
    update is not the eval-mode gradient the kernels describe); with ``setup.augment`` the step sees augmented
    inputs (``augment_cfg``: crop_padding, horizontal_flip) and the predictions use exactly those.

    For every step t of the window, at w_{t-1}: the logits of B_{t-1} (clean inputs, eval mode) and the predicted
    changes of :func:`predicted_logit_changes` for the step's own batch B_t and learning rate (without dropout the
    step applies exactly the batch gradient these predictions use); then the step; then the true logits at w_t and,
    when the update is not plain SGD, the ``entk_update`` prediction J(x_o) (w_t - w_{t-1}) from a copy of w_{t-1}.
    Evaluation does not change the trajectory: the same seed gives the same w_t whatever the window.
    ``on_step`` receives each evaluated step's row (timings included: ``seconds_predict``, ``seconds_update``).
    """
    device = torch.device(device)
    dtype = setup.torch_dtype
    model.to(device=device, dtype=dtype)
    augment_cfg = dict(augment_cfg or {})
    crop, flip = int(augment_cfg.get("crop_padding", 0)), bool(augment_cfg.get("horizontal_flip", False))
    n = len(train)
    bs = setup.batch_size
    per_epoch = math.ceil(n / bs)
    gens = {"shuffle": torch.Generator().manual_seed(seed), "augment": torch.Generator().manual_seed(seed + 7919)}
    opt = torch.optim.SGD(model.parameters(), lr=setup.lr, momentum=setup.momentum, weight_decay=setup.weight_decay)
    x_all, y_all = train.x, train.y.long()

    def clean(pos: Tensor) -> Tensor:
        return normalize(to_unit(x_all[pos]), mean, std).to(device=device, dtype=dtype)

    def stepped(pos: Tensor) -> Tensor:
        if setup.augment and (crop or flip):
            xb = augment_batch(to_unit(x_all[pos]), crop, flip, gens["augment"])
            return normalize(xb, mean, std).to(device=device, dtype=dtype)
        return clean(pos)

    predictors = setup.predictors
    shadow = copy.deepcopy(model) if "entk_update" in predictors else None  # keeps w_{t-1} during the step
    total = setup.last_step
    batches = np.full((total, bs), -1, dtype=np.int64)
    lrs = np.zeros(total, dtype=np.float64)
    rows: list[dict[str, float]] = []
    samples: dict[str, list[np.ndarray]] = {}
    prev: tuple[Tensor, Tensor, Tensor] | None = None  # positions, clean inputs, labels of B_{t-1}
    order = torch.arange(0)
    for t in range(1, total + 1):
        b = (t - 1) % per_epoch
        if b == 0:
            order = torch.randperm(n, generator=gens["shuffle"])
        pos = order[b * bs : (b + 1) * bs]
        batches[t - 1, : len(pos)] = pos.numpy()
        lr_t = float(opt.param_groups[0]["lr"])
        lrs[t - 1] = lr_t
        x_u, y_u = stepped(pos), y_all[pos].to(device)
        evaluate = t >= setup.start_step
        t0 = time.perf_counter()
        if setup.dropout:  # the step's gradient: train mode, dropout active
            model.train()
            opt.zero_grad(set_to_none=True)
            loss_t = F.cross_entropy(model(x_u), y_u)
            loss_t.backward()
            loss = float(loss_t.detach())
            grads = None
        if evaluate or not setup.dropout:  # eval-mode gradient: Eq. 1's grad_w L_batch (and the step's, no dropout)
            g, err, loss_eval = cross_entropy_gradients(model, x_u, y_u)
            if not setup.dropout:
                loss, grads = loss_eval, g
        if evaluate:
            pos_o, x_o, y_o = prev
            model.eval()
            with torch.no_grad():
                z_before = model(x_o)
            dz = predicted_logit_changes(
                model,
                x_o,
                y_o,
                x_u,
                y_u,
                lr_t,
                predictors=KERNEL_PREDICTORS,
                block_size=setup.block_size,
                gradient=(g, err),
            )
            if shadow is not None:
                shadow.load_state_dict(model.state_dict())
        t_pred = time.perf_counter() - t0
        if grads is not None:  # the training step on B_t
            for name, p in model.named_parameters():
                if p.requires_grad:
                    p.grad = grads[name].clone()
        opt.step()
        if evaluate:
            t1 = time.perf_counter()
            model.eval()
            with torch.no_grad():
                z_after = model(x_o)
            if shadow is not None:
                w_before, w_after = _params(shadow), _params(model)
                delta = {k: w_after[k] - w_before[k] for k in w_before}
                dz["entk_update"] = jvp_logits(shadow, x_o, delta, block_size=setup.block_size).detach()
            t_upd = time.perf_counter() - t1
            row, per_sample = _judge(t, lr_t, len(pos), pos_o, y_o, z_before, z_after, dz, setup.space)
            row.update(
                {"epoch": (t - 1) // per_epoch + 1, "seconds_predict": t_pred, "seconds_update": t_upd, "loss": loss}
            )
            rows.append(row)
            for k, v in per_sample.items():
                samples.setdefault(k, []).append(v)
            if on_step is not None:
                on_step(row)
        prev = (pos, clean(pos), y_all[pos].to(device))
    return ForgettingResult(rows, {k: np.concatenate(v) for k, v in samples.items()}, batches, lrs, asdict(setup))


def _judge(
    t: int,
    lr: float,
    n_upd: int,
    pos_o: Tensor,
    y_o: Tensor,
    z_before: Tensor,
    z_after: Tensor,
    dz: Mapping[str, Tensor],
    space: str,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """One step's row (counts, errors) and per-sample arrays."""
    true = forgetting_events(z_before, z_after, y_o)
    dz_true = z_after - z_before
    q_true = torch.softmax(z_after, dim=1)
    correct = z_before.argmax(1) == y_o
    row: dict[str, float] = {
        "step": t,
        "lr": lr,
        "n_obs": len(y_o),
        "n_upd": n_upd,
        "n_correct": int(correct.sum()),
        "n_true": int(true.sum()),
        "sq_true": float((dz_true**2).sum()),
    }
    per: dict[str, np.ndarray] = {
        "step": np.full(len(y_o), t, dtype=np.int64),
        "position": pos_o.numpy().astype(np.int64),
        "label": y_o.cpu().numpy().astype(np.int64),
        "correct_before": correct.cpu().numpy(),
        "true_event": true.cpu().numpy(),
        "margin_before": _margin(z_before, y_o).cpu().double().numpy(),
        "margin_after": _margin(z_after, y_o).cpu().double().numpy(),
    }
    for p, d in dz.items():
        d = d.to(z_before.dtype)
        pred = predicted_forgetting(z_before, d, y_o, space)
        other = predicted_forgetting(z_before, d, y_o, "probability" if space == "logit" else "logit")
        row.update({f"{k}_{p}": v for k, v in confusion_counts(true, pred).items()})
        row[f"sq_err_{p}"] = float(((d - dz_true) ** 2).sum())
        q_hat = (
            torch.softmax(z_before + d, dim=1)
            if space == "logit"
            else torch.softmax(z_before, dim=1) + probability_change(z_before, d)
        )
        row[f"el2n_err_{p}"] = el2n_approximation_error(q_hat, q_true, y_o)
        row[f"disagree_{p}"] = int((pred != other).sum())
        per[f"pred_{p}"] = pred.cpu().numpy()
        per[f"margin_pred_{p}"] = _margin(z_before + d, y_o).cpu().double().numpy()
    return row, per


def summarise_steps(steps: Sequence[Mapping[str, float]], predictors: Sequence[str] | None = None) -> dict[str, float]:
    """Window totals and scores of one run from its per-step rows.

    Per predictor p: ``precision_p``/``recall_p``/``f1_p`` pooled over the window (:func:`pooled_scores`),
    ``stepwise_{precision,recall,f1}_p`` (:func:`stepwise_scores`, the official code's averaging), the totals
    ``tp_p``, ``fp_p``, ``fn_p``, ``relerr_dz_p`` = sqrt(sum ||Delta z_pred - Delta z_true||^2 / sum ||Delta z_true||^2)
    over all judged samples, ``el2n_err_p`` (mean over steps) and ``disagree_p`` (samples whose predicted event
    differs between logit and probability space). Plus ``n_true_events``, ``n_steps``, ``n_obs``, ``n_correct``.
    """
    if predictors is None:  # those the rows hold
        predictors = [p for p in PREDICTORS if steps and f"tp_{p}" in steps[0]]
    col = lambda k: np.array([r[k] for r in steps], dtype=np.float64)  # noqa: E731
    out: dict[str, float] = {
        "n_steps": len(steps),
        "n_true_events": int(col("n_true").sum()),
        "n_obs": int(col("n_obs").sum()),
        "n_correct": int(col("n_correct").sum()),
        "steps_with_events": int((col("n_true") > 0).sum()),
    }
    sq_true = col("sq_true").sum()
    for p in predictors:
        tp, fp, fn = col(f"tp_{p}"), col(f"fp_{p}"), col(f"fn_{p}")
        out.update({f"{k}_{p}": v for k, v in pooled_scores(tp, fp, fn).items()})
        out.update({f"stepwise_{k}_{p}": v for k, v in stepwise_scores(tp, fp, fn).items()})
        out.update(
            {
                f"tp_{p}": int(tp.sum()),
                "fp_" + p: int(fp.sum()),
                "fn_" + p: int(fn.sum()),
                f"n_pred_{p}": int(tp.sum() + fp.sum()),
            }
        )
        out[f"relerr_dz_{p}"] = math.sqrt(col(f"sq_err_{p}").sum() / sq_true) if sq_true > 0 else float("nan")
        out[f"el2n_err_{p}"] = float(col(f"el2n_err_{p}").mean()) if steps else float("nan")
        out[f"disagree_{p}"] = int(col(f"disagree_{p}").sum())
    return out


# ------------------------------------------------------------------------------------------- over seeds


def _num(v: Any) -> float:
    """A score read back from JSON (where NaN was written as null) as a float."""
    return float("nan") if v is None else float(v)


def _mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean and sample std (ddof = 1) over the finite values, and their count (NaN where undefined)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan"), int(v.size)


def aggregate_scores(
    runs: Sequence[Mapping[str, Any]],
    predictors: Sequence[str],
    paper: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
):
    """Mean +- std over seeds of each predictor's precision, recall and F1 (in %), pooled and stepwise.

    ``runs`` are per-seed :func:`summarise_steps` dicts. One row per (predictor, scoring) with
    ``{precision,recall,f1}_{mean,std}`` (std with ddof = 1; seeds whose score is undefined are left out and
    ``n_seeds`` counts the rest), the mean true-event and predicted-event counts per seed, the first-order errors
    (``relerr_dz``, ``el2n_err``: means over seeds) and, where ``paper`` has the predictor, the slides' mean and
    std (``paper_{metric}``, ``paper_{metric}_std``) on the stepwise row only, the averaging they were computed
    with. Returns a pandas DataFrame.
    """
    import pandas as pd

    rows = []
    true = [r["n_true_events"] for r in runs]
    for p in predictors:
        for scoring, prefix in (("pooled", ""), ("stepwise", "stepwise_")):
            row: dict[str, Any] = {"predictor": p, "scoring": scoring}
            counts = []
            for metric in ("precision", "recall", "f1"):
                mean, std, k = _mean_std([100.0 * _num(r[f"{prefix}{metric}_{p}"]) for r in runs])
                row[f"{metric}_mean"], row[f"{metric}_std"] = mean, std
                counts.append(k)
            row["n_seeds"] = min(counts)
            row["n_runs"] = len(runs)
            row["true_events_mean"] = float(np.mean(true)) if runs else float("nan")
            row["pred_events_mean"] = float(np.mean([r[f"n_pred_{p}"] for r in runs])) if runs else float("nan")
            row["relerr_dz_mean"] = _mean_std([_num(r[f"relerr_dz_{p}"]) for r in runs])[0]
            row["el2n_err_mean"] = _mean_std([_num(r[f"el2n_err_{p}"]) for r in runs])[0]
            ref = (paper or {}).get(p) if scoring == "stepwise" else None  # the slides averaged per step
            for metric in ("precision", "recall", "f1"):
                row[f"paper_{metric}"], row[f"paper_{metric}_std"] = ref[metric] if ref else (float("nan"),) * 2
            rows.append(row)
    return pd.DataFrame(rows)


def format_table(df) -> Any:
    """The aggregate as display strings: "mean ± std" in %, the slides' numbers beside ours (Markdown table)."""
    import pandas as pd

    def pm(mean, std):
        if not np.isfinite(mean):
            return "n/a"
        return f"{mean:.2f} ± {std:.2f}" if np.isfinite(std) else f"{mean:.2f}"

    def col(key: str, std_key: str) -> list[str]:
        return [pm(m, s) for m, s in zip(df[key], df[std_key], strict=True)]

    return pd.DataFrame(
        {
            "predictor": df["predictor"],
            "scoring": df["scoring"],
            "precision %": col("precision_mean", "precision_std"),
            "recall %": col("recall_mean", "recall_std"),
            "F1 %": col("f1_mean", "f1_std"),
            "paper precision %": col("paper_precision", "paper_precision_std"),
            "paper recall %": col("paper_recall", "paper_recall_std"),
            "paper F1 %": col("paper_f1", "paper_f1_std"),
            "seeds": [f"{a}/{b}" for a, b in zip(df["n_seeds"], df["n_runs"], strict=True)],
            "true events / seed": [f"{v:.1f}" for v in df["true_events_mean"]],
            "predicted / seed": [f"{v:.1f}" for v in df["pred_events_mean"]],
            "rel. err. Δz": [f"{v:.3g}" for v in df["relerr_dz_mean"]],
            "EL2N err.": [f"{v:.3g}" for v in df["el2n_err_mean"]],
        }
    )

"""The forgetting run: train a model and judge every step of a window against the first-order predictions.

Minibatch SGD updates w_{t-1} -> w_t on B_t with the learning rate eta_t (steps numbered from 1). For every step t
of the window, at w_{t-1}: the logits of B_{t-1} and the predicted changes of each predictor for the step's own
batch B_t and eta_t (:mod:`lpntk.forgetting._predictors`); then the step; then the true logits at w_t and, when
the update is not plain SGD (momentum, weight decay, dropout), the ``entk_update`` prediction
Delta z(x_o) ~ J(x_o) (w_t - w_{t-1}), the linearisation along the actual update. Each step is judged
(:mod:`lpntk.forgetting._events`): true and predicted events, their confusion counts, the squared error
||Delta z_pred - Delta z_true||^2, the EL2N approximation error, and the samples on which the logit and
probability forms disagree; every predictor is judged in both decision spaces (its name, and its name with
``_prob``). :func:`summarise_steps` gives one run's window totals and scores.
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

from ..data import Split, augment_batch, normalize, to_unit
from ..kernel import cross_entropy_gradients, jvp_logits
from ..optim import SGD
from ._events import (
    confusion_counts,
    el2n_approximation_error,
    forgetting_events,
    predicted_forgetting,
    probability_change,
)
from ._predictors import KERNEL_PREDICTORS, PREDICTORS, predicted_logit_changes
from ._scores import matthews_correlation, pooled_scores, stepwise_scores, trivial_scores

__all__ = ["PROB", "ForgettingSetup", "ForgettingResult", "run_forgetting", "summarise_steps"]

#: suffix of a predictor judged in probability space (the official code's q + A dz) rather than logit space
PROB = "_prob"

#: the count keys of a summary (integers, except the random predictor's expectations)
_COUNTS = ("tp", "fp", "fn", "n_pred")


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
    def judged(self) -> tuple[str, ...]:
        """Every predictor in both decision spaces: ``p`` (logit: argmax z + dz) and ``p_prob`` (probability:
        argmax q + A dz, the official code's form)."""
        return tuple(f"{p}{sfx}" for p in self.predictors for sfx in ("", PROB))

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
    opt = SGD(model.parameters(), lr=setup.lr, momentum=setup.momentum, weight_decay=setup.weight_decay)
    x_all, y_all = train.x, train.y.long()

    def clean(pos: Tensor) -> Tensor:
        return normalize(to_unit(x_all[pos]), mean, std).to(device=device, dtype=dtype)

    def stepped(pos: Tensor) -> Tensor:
        if setup.augment and (crop or flip):
            xb = augment_batch(to_unit(x_all[pos]), crop, flip, gens["augment"])
            return normalize(xb, mean, std).to(device=device, dtype=dtype)
        return clean(pos)

    shadow = copy.deepcopy(model) if "entk_update" in setup.predictors else None  # keeps w_{t-1} during the step
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
        loss, grads, gradient = _step_gradient(model, opt, x_u, y_u, setup.dropout, evaluate)
        if evaluate:
            pos_o, x_o, y_o = prev
            z_before, dz = _predict(model, shadow, x_o, y_o, x_u, y_u, lr_t, gradient, setup.block_size)
        t_pred = time.perf_counter() - t0
        _take_step(model, opt, grads)  # the training step on B_t
        if evaluate:
            t1 = time.perf_counter()
            z_after = _observe(model, shadow, x_o, dz, setup.block_size)
            t_upd = time.perf_counter() - t1
            row, per_sample = _judge(t, lr_t, len(pos), pos_o, y_o, z_before, z_after, dz)
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


def _step_gradient(
    model: nn.Module, opt: SGD, x_u: Tensor, y_u: Tensor, dropout: bool, evaluate: bool
) -> tuple[float, dict[str, Tensor] | None, tuple | None]:
    """The loss of the step on B_t, the gradient it applies, and the eval-mode gradient grad_w L_batch of Eq. 1 that
    the predictions use. Without dropout they are one gradient (eval mode), computed once. With dropout the step's
    gradient is taken in train mode (dropout active) and left in the parameters' ``.grad`` (returned as None), and
    the eval-mode gradient is computed only inside the window (None before it)."""
    grads, gradient = None, None
    if dropout:  # the step's gradient: train mode, dropout active
        model.train()
        opt.zero_grad(set_to_none=True)
        loss_t = F.cross_entropy(model(x_u), y_u)
        loss_t.backward()
        loss = float(loss_t.detach())
    if evaluate or not dropout:  # eval-mode gradient: Eq. 1's grad_w L_batch (and the step's, no dropout)
        g, err, loss_eval = cross_entropy_gradients(model, x_u, y_u)
        gradient = (g, err)
        if not dropout:
            loss, grads = loss_eval, g
    return loss, grads, gradient


def _predict(
    model: nn.Module,
    shadow: nn.Module | None,
    x_o: Tensor,
    y_o: Tensor,
    x_u: Tensor,
    y_u: Tensor,
    lr: float,
    gradient: tuple,
    block_size: int | None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """At w_{t-1}: the logits z of B_{t-1} (eval mode) and each kernel predictor's change of them for the step on B_t
    with learning rate ``lr`` (:func:`predicted_logit_changes`); the ``shadow`` copy, if any, keeps w_{t-1}."""
    model.eval()
    with torch.no_grad():
        z_before = model(x_o)
    dz = predicted_logit_changes(
        model, x_o, y_o, x_u, y_u, lr, predictors=KERNEL_PREDICTORS, block_size=block_size, gradient=gradient
    )
    if shadow is not None:
        shadow.load_state_dict(model.state_dict())
    return z_before, dz


def _take_step(model: nn.Module, opt: SGD, grads: Mapping[str, Tensor] | None) -> None:
    """The SGD step on B_t with the gradient ``grads`` (None: the one already in the parameters' ``.grad``)."""
    if grads is not None:
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.grad = grads[name].clone()
    opt.step()


def _observe(model: nn.Module, shadow: nn.Module | None, x_o: Tensor, dz: dict[str, Tensor], block_size) -> Tensor:
    """At w_t: the true logits of B_{t-1} (eval mode); with the ``shadow`` copy of w_{t-1}, also the ``entk_update``
    prediction J(x_o) (w_t - w_{t-1}), the linearisation along the actual update, added to ``dz``."""
    model.eval()
    with torch.no_grad():
        z_after = model(x_o)
    if shadow is not None:
        w_before, w_after = _params(shadow), _params(model)
        delta = {k: w_after[k] - w_before[k] for k in w_before}
        dz["entk_update"] = jvp_logits(shadow, x_o, delta, block_size=block_size).detach()
    return z_after


def _judge(
    t: int,
    lr: float,
    n_upd: int,
    pos_o: Tensor,
    y_o: Tensor,
    z_before: Tensor,
    z_after: Tensor,
    dz: Mapping[str, Tensor],
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """One step's row (counts, errors) and per-sample arrays, every predictor judged in both decision spaces (the
    probability space's entries carry the suffix ``_prob``)."""
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
        pred = {
            "": predicted_forgetting(z_before, d, y_o, "logit"),
            PROB: predicted_forgetting(z_before, d, y_o, "probability"),
        }
        q_hat = {
            "": torch.softmax(z_before + d, dim=1),
            PROB: torch.softmax(z_before, dim=1) + probability_change(z_before, d),
        }
        sq_err = float(((d - dz_true) ** 2).sum())
        for sfx in ("", PROB):
            row.update({f"{k}_{p}{sfx}": v for k, v in confusion_counts(true, pred[sfx]).items()})
            row[f"sq_err_{p}{sfx}"] = sq_err
            row[f"el2n_err_{p}{sfx}"] = el2n_approximation_error(q_hat[sfx], q_true, y_o)
            row[f"disagree_{p}{sfx}"] = int((pred[""] != pred[PROB]).sum())
            per[f"pred_{p}{sfx}"] = pred[sfx].cpu().numpy()
        per[f"margin_pred_{p}"] = _margin(z_before + d, y_o).cpu().double().numpy()
    return row, per


def summarise_steps(steps: Sequence[Mapping[str, float]], predictors: Sequence[str] | None = None) -> dict[str, float]:
    """Window totals and scores of one run from its per-step rows.

    The candidates of step t are the ``n_correct`` samples of B_{t-1} that w_{t-1} classifies correctly: only they
    can be forgotten or predicted forgotten, so TP, FP and FN count candidates and TN_t = n_correct_t - TP_t - FP_t
    - FN_t (the rows' ``tn`` also counts the samples wrong before the step).

    Per predictor p: ``precision_p``/``recall_p``/``f1_p`` pooled over the window (:func:`pooled_scores`),
    ``mcc_p`` the Matthews correlation over all (step, candidate) pairs of the window from the totals TP, FP, FN,
    TN (:func:`matthews_correlation`; 0 when a marginal is empty), ``stepwise_{precision,recall,f1}_p``
    (:func:`stepwise_scores`, the official code's averaging), the totals ``tp_p``, ``fp_p``, ``fn_p``, ``n_pred_p``,
    ``relerr_dz_p`` = sqrt(sum ||Delta z_pred - Delta z_true||^2 / sum ||Delta z_true||^2) over all judged samples,
    ``el2n_err_p`` (mean over steps) and ``disagree_p`` (samples whose predicted event differs between logit and
    probability space; the same count under p and p``_prob``).

    The trivial predictors ``none``, ``all`` and ``random`` (:func:`trivial_scores`; ``random``'s scores are its
    expected ones, analytic) under the same keys: ``{precision,recall,f1,mcc}_t``, ``stepwise_{precision,recall,f1}_t``,
    ``tp_t``, ``fp_t``, ``fn_t``, ``n_pred_t`` -- once, as they are the same in both decision spaces (no ``_prob``).

    Plus ``n_true_events``, ``n_candidates`` (sum of the candidates over the window, the same as ``n_correct``),
    ``base_rate`` = n_true_events / n_candidates (NaN without candidates), ``n_steps``, ``n_obs``, ``n_correct``,
    ``steps_with_events``.
    """
    if predictors is None:  # those the rows hold
        predictors = [f"{p}{sfx}" for p in PREDICTORS for sfx in ("", PROB) if steps and f"tp_{p}{sfx}" in steps[0]]
    col = lambda k: np.array([r[k] for r in steps], dtype=np.float64)  # noqa: E731
    out: dict[str, float] = {
        "n_steps": len(steps),
        "n_true_events": int(col("n_true").sum()),
        "n_obs": int(col("n_obs").sum()),
        "n_correct": int(col("n_correct").sum()),
        "steps_with_events": int((col("n_true") > 0).sum()),
    }
    candidates, events = col("n_correct"), col("n_true")
    out["n_candidates"] = int(candidates.sum())
    out["base_rate"] = float(events.sum() / candidates.sum()) if candidates.sum() > 0 else float("nan")
    sq_true = col("sq_true").sum()
    for p in predictors:
        tp, fp, fn = col(f"tp_{p}"), col(f"fp_{p}"), col(f"fn_{p}")
        out.update({f"{k}_{p}": v for k, v in pooled_scores(tp, fp, fn).items()})
        out[f"mcc_{p}"] = matthews_correlation(tp, fp, fn, candidates - tp - fp - fn)
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
    for name, scores in trivial_scores(candidates, events).items():
        out.update({f"{k}_{name}": int(v) if k in _COUNTS and name != "random" else v for k, v in scores.items()})
    return out

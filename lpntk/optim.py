"""The optimiser and learning-rate schedules of every training run, written out.

:class:`SGD` is PyTorch's ``torch.optim.SGD`` update (its single-tensor path, dampening 0), step by step. With
gradient g, weights w, weight decay lambda, momentum mu and learning rate eta, at step t::

    g_t = grad L(w_{t-1}) + lambda w_{t-1}                 (coupled weight decay)
    b_t = g_t  (t = 1),   b_t = mu b_{t-1} + g_t  (t > 1)   (momentum buffer)
    d_t = g_t + mu b_t  (Nesterov),   d_t = b_t  (otherwise; d_t = g_t without momentum)
    w_t = w_{t-1} - eta d_t

:class:`EpochSchedule` is the learning rate per epoch, as PyTorch's schedulers compute it (the same float
operations, hence the same numbers): constant; ``step`` -- StepLR, eta_e = eta_{e-1} gamma every ``step_size``
epochs; ``cosine`` -- CosineAnnealingLR's recursion towards eta_min = 0 over T_max epochs,
eta_e = (1 + cos(pi e / T)) / (1 + cos(pi (e - 1) / T)) eta_{e-1}.

Why not ``torch.optim``: its ``Optimizer.step`` imports ``torch._dynamo`` (sympy, torch.fx: about 3 s on the
development machine) the first time any process takes a step, to exclude the step from ``torch.compile``; every
training job of the workflow paid it, and lpntk never compiles. A test checks this class against
``torch.optim.SGD`` and the schedules against PyTorch's schedulers, number for number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch

__all__ = ["SGD", "EpochSchedule"]


class SGD:
    """SGD with momentum, Nesterov momentum and coupled weight decay over ``params`` (module docstring).

    ``param_groups[0]["lr"]`` is the learning rate (the attribute PyTorch's optimisers expose, read by the
    training loops and set by :class:`EpochSchedule`)."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ):
        self.params = [p for p in params if p.requires_grad]
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.param_groups = [{"lr": float(lr)}]
        self.momentum, self.weight_decay, self.nesterov = float(momentum), float(weight_decay), bool(nesterov)
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    @property
    def lr(self) -> float:
        return self.param_groups[0]["lr"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        lr, mu, wd = self.lr, self.momentum, self.weight_decay
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad
            if wd != 0:
                g = g.add(p, alpha=wd)
            if mu != 0:
                buf = self.buffers[i]
                if buf is None:
                    buf = self.buffers[i] = torch.clone(g).detach()
                else:
                    buf.mul_(mu).add_(g)
                g = g.add(buf, alpha=mu) if self.nesterov else buf
            p.add_(g, alpha=-lr)

    def state_dict(self) -> dict:
        return {"lr": self.lr, "buffers": [None if b is None else b.clone() for b in self.buffers]}

    def load_state_dict(self, state: Mapping) -> None:
        buffers = list(state["buffers"])
        if len(buffers) != len(self.params):
            raise ValueError(f"optimizer state holds {len(buffers)} buffers for {len(self.params)} parameters")
        self.param_groups[0]["lr"] = float(state["lr"])
        self.buffers = [
            None if b is None else b.to(p.device, p.dtype) for b, p in zip(buffers, self.params, strict=True)
        ]


class EpochSchedule:
    """The learning rate of ``optimizer`` (its ``param_groups[0]["lr"]``: :class:`SGD`, or a ``torch.optim``
    optimiser) per epoch: ``step()`` once after every epoch (module docstring).

    ``name``: ``none`` (constant), ``step`` (``step_size``, ``gamma``) or ``cosine`` (``t_max`` epochs)."""

    def __init__(self, optimizer, name: str = "none", step_size: int = 1, gamma: float = 1.0, t_max: int | None = None):
        if name not in ("none", "step", "cosine"):
            raise ValueError(f"unknown learning-rate schedule {name!r}; use none, step or cosine")
        if name == "cosine" and not t_max:
            raise ValueError("the cosine schedule needs t_max >= 1 epochs")
        self.optimizer, self.name = optimizer, name
        self.step_size, self.gamma, self.t_max = int(step_size), float(gamma), int(t_max or 0)
        self.base_lr, self.epoch = optimizer.param_groups[0]["lr"], 0

    def step(self) -> None:
        self.epoch += 1
        e, lr = self.epoch, self.optimizer.param_groups[0]["lr"]
        if self.name == "step" and e % self.step_size == 0:
            lr = lr * self.gamma
        elif self.name == "cosine":
            t = self.t_max
            if (e - 1 - t) % (2 * t) == 0:  # PyTorch's branch at the bottom of each period
                lr = lr + self.base_lr * (1 - math.cos(math.pi / t)) / 2
            else:
                lr = (1 + math.cos(math.pi * e / t)) / (1 + math.cos(math.pi * (e - 1) / t)) * lr
        self.optimizer.param_groups[0]["lr"] = lr

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "base_lr": self.base_lr}

    def load_state_dict(self, state: Mapping) -> None:
        self.epoch, self.base_lr = int(state["epoch"]), float(state["base_lr"])

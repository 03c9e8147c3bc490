"""Models used by the paper and by the embedded default (paper-protocols §2.1).

Every model maps a batch of images ``(N, C, H, W)`` to logits ``(N, K)`` (no softmax) and is built through
:func:`build_model` from a registry name, so that a config block names the architecture. One
:class:`ModelSpec` per name in :data:`MODELS` holds what the package asks about a model: its constructor, the input
shapes it is meant for (its datasets'; the cost figures are measured at these), its key in the cost figures
(:meth:`ModelSpec.cost_key`, ``mlp@1x28x28``) and its label in text ("MLP 784-256-10", "LeNet-5");
:func:`register_model` adds a model of one's own in one call (docs/extending.md).

* ``mnist_cnn`` -- the network the official code calls "LeNet": the PyTorch MNIST-example CNN
  (conv 32 -> conv 64 -> max-pool -> dropout 0.25 -> fc 128 -> dropout 0.5 -> fc K); 1,199,882
  parameters for 1 x 28 x 28 inputs and K = 10.
* ``resnet18_nobn`` -- the CIFAR ResNet-18 of kuangliu/pytorch-cifar with every BatchNorm removed, all
  convolutions bias-free, final linear layer with bias; 11,164,362 parameters for K = 10.
* ``mlp`` -- a fully connected ReLU network with configurable hidden widths.
* ``small_cnn`` -- a two-convolution CNN sized for 8 x 8 digits (the embedded default).
* ``lenet5`` -- LeNet-5 (LeCun et al., 1998) with ReLU and max-pooling: conv 6@5x5 (padding 2) -> pool -> conv
  16@5x5 -> pool -> fc 120 -> fc 84 -> fc K; 61,706 parameters for 1 x 28 x 28 inputs and K = 10.

``width`` scales the channel counts of the CNNs and the ResNet (1.0 gives the paper's models); it exists
so that tests can run the paper's architectures at reduced width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .cost import model_key
from .plugins import allow_choice

__all__ = [
    "MnistCNN",
    "ResNet18NoBN",
    "MLP",
    "SmallCNN",
    "LeNet5",
    "ModelSpec",
    "MODELS",
    "register_model",
    "model_label",
    "build_model",
    "count_parameters",
]


def _w(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class MnistCNN(nn.Module):
    """The official code's "LeNet" (the PyTorch MNIST example), paper-protocols §2.1.

    conv(C->32, 3x3) -> ReLU -> conv(32->64, 3x3) -> ReLU -> maxpool 2 -> dropout 0.25 -> flatten
    -> fc(->128) -> ReLU -> dropout 0.5 -> fc(128->K).
    """

    def __init__(
        self, in_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, width: float = 1.0, dropout: bool = True
    ):
        super().__init__()
        c, h, w = in_shape
        c1, c2, hidden = _w(32, width), _w(64, width), _w(128, width)
        self.conv1 = nn.Conv2d(c, c1, 3, 1)
        self.conv2 = nn.Conv2d(c1, c2, 3, 1)
        self.dropout1 = nn.Dropout(0.25 if dropout else 0.0)
        self.dropout2 = nn.Dropout(0.5 if dropout else 0.0)
        flat = c2 * ((h - 4) // 2) * ((w - 4) // 2)
        self.fc1 = nn.Linear(flat, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return self.fc2(x)


class BasicBlockNoBN(nn.Module):
    """ResNet basic block without BatchNorm: conv3x3 -> ReLU -> conv3x3 -> + shortcut -> ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = self.conv2(out)
        return F.relu(out + self.shortcut(x))


class ResNet18NoBN(nn.Module):
    """kuangliu-style CIFAR ResNet-18 with every BatchNorm removed (paper-protocols §2.1).

    conv3x3(C->64) -> ReLU -> 4 stages of 2 basic blocks (64, 128, 256, 512 channels; strides 1, 2, 2, 2)
    -> avg-pool 4 -> fc(512->K).
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        width: float = 1.0,
        blocks: Sequence[int] = (2, 2, 2, 2),
    ):
        super().__init__()
        c, h, w = in_shape
        planes = [_w(p, width) for p in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(c, planes[0], 3, stride=1, padding=1, bias=False)
        layers, in_planes = [], planes[0]
        for i, (p, n) in enumerate(zip(planes, blocks, strict=True)):
            strides = [1 if i == 0 else 2] + [1] * (n - 1)
            stage = []
            for s in strides:
                stage.append(BasicBlockNoBN(in_planes, p, s))
                in_planes = p
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.pool = max(1, h // 8)
        self.linear = nn.Linear(planes[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, self.pool)
        out = torch.flatten(out, 1)
        return self.linear(out)


class MLP(nn.Module):
    """Fully connected ReLU network: flatten -> [Linear -> ReLU] * len(hidden) -> Linear(->K)."""

    def __init__(
        self, in_shape: Sequence[int], num_classes: int = 10, hidden: Sequence[int] = (256,), dropout: float = 0.0
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = math.prod(in_shape)
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            d = h
        layers.append(nn.Linear(d, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Small CNN for 8 x 8 digits (embedded default).

    conv(C->16, 3x3, pad 1) -> ReLU -> conv(16->32, 3x3, pad 1) -> ReLU -> maxpool 2 -> flatten
    -> fc(->64) -> ReLU -> fc(64->K).
    """

    def __init__(
        self, in_shape: Sequence[int] = (1, 8, 8), num_classes: int = 10, width: float = 1.0, hidden: int = 64
    ):
        super().__init__()
        c, h, w = in_shape
        c1, c2 = _w(16, width), _w(32, width)
        self.conv1 = nn.Conv2d(c, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc1 = nn.Linear(c2 * (h // 2) * (w // 2), hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max-pooling (module docstring).

    conv(C->6, 5x5, pad 2) -> ReLU -> maxpool 2 -> conv(6->16, 5x5) -> ReLU -> maxpool 2 -> flatten
    -> fc(->120) -> ReLU -> fc(120->84) -> ReLU -> fc(84->K). The padding keeps a 28 x 28 image at 28 x 28, so
    the second convolution sees the 14 x 14 maps of the original 32 x 32 design; 32 x 32 inputs give 6 x 6 maps
    before fc 120 (576 inputs instead of 400).
    """

    def __init__(self, in_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, width: float = 1.0):
        super().__init__()
        c, h, w = in_shape
        c1, c2 = _w(6, width), _w(16, width)
        self.conv1 = nn.Conv2d(c, c1, 5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.fc1 = nn.Linear(c2 * ((h // 2 - 4) // 2) * ((w // 2 - 4) // 2), _w(120, width))
        self.fc2 = nn.Linear(_w(120, width), _w(84, width))
        self.fc3 = nn.Linear(_w(84, width), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


#: (input shape (C, H, W), classes K, the config's ``model.args``) -> the model's name in text
Label = Callable[..., str]


@dataclass(frozen=True)
class ModelSpec:
    """One registered model: ``constructor(in_shape=, num_classes=, **args)``; ``shapes``: the input shapes (C, H, W)
    it is meant for, the first its default; ``label``: its name in text, or a function of (in_shape, num_classes,
    **args) that says it (the MLP's widths)."""

    name: str
    constructor: Callable[..., nn.Module]
    shapes: tuple[tuple[int, ...], ...]
    label: str | Label

    def cost_key(self, shape: Sequence[int] | None = None) -> str:
        """The key of its figures in the cost model at input ``shape`` (default: its first): ``lenet5@1x28x28``."""
        return model_key(self.name, self.shapes[0] if shape is None else shape)

    def describe(self, in_shape: Sequence[int] | None = None, num_classes: int = 10, **args: Any) -> str:
        """Its label for inputs ``in_shape`` (default: its first shape), ``num_classes`` and constructor ``args``."""
        if isinstance(self.label, str):
            return self.label
        return self.label(tuple(in_shape or self.shapes[0]), int(num_classes), **args)


#: name -> model, in registration order
MODELS: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    constructor: Callable[..., nn.Module] | None = None,
    *,
    shapes: Sequence[Sequence[int]],
    label: str | Label,
) -> ModelSpec | Callable:
    """Register model ``name`` (replacing any earlier): its constructor, input shapes (C, H, W) and label; the
    config's ``model.name`` accepts it from then on. Without ``constructor``, a decorator for the class. Returns
    the entry (or, as a decorator, the class)."""
    if constructor is None:

        def deco(cls):
            register_model(name, cls, shapes=shapes, label=label)
            return cls

        return deco
    if not shapes or any(len(s) != 3 for s in shapes):
        raise ValueError(f"model {name!r}: shapes must list input shapes (C, H, W), got {shapes!r}")
    spec = ModelSpec(name, constructor, tuple(tuple(int(d) for d in s) for s in shapes), label)
    MODELS[name] = spec
    allow_choice("model.name", name)
    return spec


def _mlp_label(in_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (256,), **_: Any) -> str:
    """``MLP 784-256-10``: the widths of its layers."""
    return "MLP " + "-".join(str(int(d)) for d in (math.prod(in_shape), *hidden, num_classes))


DIGITS, MNIST, CIFAR = (1, 8, 8), (1, 28, 28), (3, 32, 32)
register_model("mnist_cnn", MnistCNN, shapes=[MNIST, CIFAR], label="the paper's CNN (PyTorch MNIST example)")
register_model("resnet18_nobn", ResNet18NoBN, shapes=[CIFAR], label="ResNet-18 without BatchNorm")
register_model("mlp", MLP, shapes=[DIGITS, MNIST, CIFAR], label=_mlp_label)
register_model("small_cnn", SmallCNN, shapes=[DIGITS, MNIST], label="small CNN")
register_model("lenet5", LeNet5, shapes=[MNIST, CIFAR], label="LeNet-5")


def model_label(name: str, in_shape: Sequence[int] | None = None, num_classes: int = 10, **args: Any) -> str:
    """The label of registered model ``name`` (:meth:`ModelSpec.describe`)."""
    return _spec(name).describe(in_shape, num_classes, **args)


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def build_model(name: str, in_shape: Sequence[int], num_classes: int, **kwargs) -> nn.Module:
    """Instantiate registry model ``name`` for inputs of shape ``in_shape`` (C, H, W) and ``num_classes``.

    Extra keyword arguments (``width``, ``hidden``, ``dropout`` ...) are passed to the constructor; an unknown
    name or argument raises a ``ValueError`` that lists what is accepted.
    """
    cls = _spec(name).constructor
    try:
        return cls(in_shape=tuple(in_shape), num_classes=int(num_classes), **kwargs)
    except TypeError as err:
        raise ValueError(f"model {name!r} does not accept arguments {sorted(kwargs)}: {err}") from None


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters P of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

"""Datasets: a registry of sources, seeded splits, and the prepared-tensor cache (paper-protocols §2.2).

A dataset is described by a config block, never by code::

    source: sklearn | torchvision | folder
    name: digits | MNIST | FashionMNIST | KMNIST | CIFAR10 | CIFAR100 | SVHN | <any torchvision class>
    root: null             # folder holding the files (default: the data directory)
    download: false        # let torchvision download (needs a network)
    test_fraction: 0.2     # carved from the training pool when the source has no test split
    val_fraction: 0.1      # validation split carved from the training set (seeded, stratified)
    split_seed: 0
    per_class_limit: null  # keep at most this many training samples per class (seeded)
    normalize: auto | {mean: [...], std: [...]}

:func:`prepare_dataset` loads the source once, carves the test split (if needed), the per-class limit and
the validation split, and returns three :class:`Split` objects. Images are kept as they come (``uint8`` in
0..255, or ``float32`` in [0, 1] for scikit-learn's digits); :func:`to_unit` maps either to float [0, 1].
Every sample keeps its **original index**: its position in the source's training (or test) set, so that
every later step (dynamics, kernels, subsets) can be traced back to the source data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .io import load_json, load_npz, save_json, save_npz, sha256_file
from .sources import DataCorruptError, DataNotFoundError, load_source

__all__ = [
    "Split",
    "DatasetInfo",
    "PreparedData",
    "DataNotFoundError",
    "DataCorruptError",
    "prepare_dataset",
    "save_prepared",
    "load_prepared",
    "to_unit",
    "normalize",
    "class_counts",
    "augment_batch",
]


@dataclass
class Split:
    """One split of a dataset: images ``x`` (N, C, H, W), labels ``y`` (N,), original indices ``index`` (N,)."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor

    def __post_init__(self):
        if not (len(self.x) == len(self.y) == len(self.index)):
            raise ValueError(
                f"split arrays differ in length: x {len(self.x)}, y {len(self.y)}, index {len(self.index)}"
            )

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, positions) -> Split:
        """The samples at ``positions`` (positions in this split, not original indices)."""
        pos = torch.as_tensor(np.asarray(positions), dtype=torch.long)
        return Split(self.x[pos], self.y[pos], self.index[pos])

    def select_indices(self, original_indices) -> Split:
        """The samples whose original index is in ``original_indices``, in the order given."""
        lookup = {int(i): p for p, i in enumerate(self.index.tolist())}
        try:
            pos = [lookup[int(i)] for i in np.asarray(original_indices).ravel()]
        except KeyError as err:
            raise ValueError(f"original index {err.args[0]} is not in this split") from None
        return self.subset(pos)


@dataclass
class DatasetInfo:
    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    class_names: list[str]
    mean: list[float]
    std: list[float]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreparedData:
    train: Split
    val: Split
    test: Split
    info: DatasetInfo


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Images as float32 in [0, 1]: ``uint8`` is divided by 255, floats are passed through."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x.to(torch.float32)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel, for x (N, C, H, W) in [0, 1]."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def class_counts(y, num_classes: int) -> list[int]:
    return np.bincount(np.asarray(y), minlength=num_classes).astype(int).tolist()


# --------------------------------------------------------------------------------------------- splits


def _stratified_take(y: np.ndarray, size: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of positions 0..n-1 into (rest, taken) with ``size`` taken."""
    from sklearn.model_selection import train_test_split

    pos = np.arange(len(y))
    rest, taken = train_test_split(pos, test_size=size, stratify=y, random_state=seed, shuffle=True)
    return np.sort(rest), np.sort(taken)


def _per_class_limit(y: np.ndarray, limit: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        pos = np.flatnonzero(y == c)
        keep.append(pos if len(pos) <= limit else np.sort(rng.choice(pos, size=limit, replace=False)))
    return np.sort(np.concatenate(keep))


def _channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    u = to_unit(x).to(torch.float64)
    mean = u.mean(dim=(0, 2, 3))
    std = u.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def prepare_dataset(name: str, spec: dict, data_dir: str | os.PathLike | None = None) -> PreparedData:
    """Load the source and carve the seeded splits of one dataset (see the module docstring)."""
    (x, y), test_xy, class_names = load_source(spec, data_dir)
    train_pool = Split(x, y, torch.arange(len(y)))
    test = None if test_xy is None else Split(test_xy[0], test_xy[1], torch.arange(len(test_xy[1])))
    seed = int(spec.get("split_seed", 0))
    y = train_pool.y.numpy()
    if test is None:
        rest, taken = _stratified_take(y, float(spec.get("test_fraction", 0.2)), seed)
        test, train_pool = train_pool.subset(taken), train_pool.subset(rest)
    if spec.get("per_class_limit"):
        train_pool = train_pool.subset(_per_class_limit(train_pool.y.numpy(), int(spec["per_class_limit"]), seed))
    if spec.get("test_limit"):
        test = test.subset(_per_class_limit(test.y.numpy(), int(spec["test_limit"]), seed))
    val_fraction = float(spec.get("val_fraction", 0.1))
    if val_fraction > 0:
        rest, taken = _stratified_take(train_pool.y.numpy(), val_fraction, seed + 1)
        train, val = train_pool.subset(rest), train_pool.subset(taken)
    else:
        train, val = train_pool, train_pool.subset([])
    num_classes = len(class_names)
    for split_name, split in (("train", train), ("val", val), ("test", test)):
        if len(split) and (int(split.y.min()) < 0 or int(split.y.max()) >= num_classes):
            raise ValueError(f"dataset {name!r}: {split_name} labels outside 0..{num_classes - 1}")
    norm = spec.get("normalize", "auto")
    if norm == "auto" or norm is None:
        mean, std = _channel_stats(train.x)
    else:
        mean, std = [float(v) for v in norm["mean"]], [float(v) for v in norm["std"]]
    channels = train.x.shape[1]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"dataset {name!r}: normalize.mean/std have {len(mean)}/{len(std)} values but the images "
            f"have {channels} channel(s) (key 'normalize')"
        )
    info = DatasetInfo(
        name=name,
        num_classes=num_classes,
        input_shape=tuple(int(s) for s in train.x.shape[1:]),
        class_names=class_names,
        mean=mean,
        std=std,
    )
    return PreparedData(train, val, test, info)


# --------------------------------------------------------------------------------------------- cache

SPLITS = ("train", "val", "test")


def _prepared_paths(files: str | os.PathLike | Mapping[str, str | os.PathLike]) -> dict[str, Path]:
    """The prepared-data files by name: given as a mapping (``info``, ``train``, ``val``, ``test``), or in a folder."""
    if isinstance(files, Mapping):
        return {k: Path(files[k]) for k in ("info", *SPLITS)}
    return {"info": Path(files) / "info.json", **{k: Path(files) / f"{k}.npz" for k in SPLITS}}


def save_prepared(
    prep: PreparedData,
    files: str | os.PathLike | Mapping[str, str | os.PathLike],
    config: Mapping[str, Any] | None = None,
) -> dict:
    """Write the splits (npz: ``x``, ``y``, ``index``) and the info (JSON: class sizes, checksums) to ``files``:
    a mapping ``info`` / ``train`` / ``val`` / ``test`` -> path, or a folder (``info.json``, ``<split>.npz``).
    ``config``: the data keys the splits were prepared from, recorded as the info's ``config`` (so that the config's
    validation knows whether the class sizes are those of its data: :func:`lpntk.config.prepared_sizes`)."""
    paths = _prepared_paths(files)
    checksums, sizes = {}, {}
    for split_name in SPLITS:
        split = getattr(prep, split_name)
        path = save_npz(paths[split_name], x=split.x.numpy(), y=split.y.numpy(), index=split.index.numpy())
        checksums[split_name] = sha256_file(path)
        sizes[split_name] = class_counts(split.y.numpy(), prep.info.num_classes)
    meta = {
        "name": prep.info.name,
        "num_classes": prep.info.num_classes,
        "input_shape": list(prep.info.input_shape),
        "class_names": prep.info.class_names,
        "mean": prep.info.mean,
        "std": prep.info.std,
        "class_sizes": sizes,
        "n": {s: int(sum(v)) for s, v in sizes.items()},
        "sha256": checksums,
        "dtype": str(prep.train.x.dtype).removeprefix("torch."),
    }
    if config is not None:
        meta["config"] = dict(config)
    save_json(paths["info"], meta)
    return meta


def load_prepared(files: str | os.PathLike | Mapping[str, str | os.PathLike]) -> PreparedData:
    """Read what :func:`save_prepared` wrote: from its folder, or from the files by name (``info``, ``train``,
    ``val``, ``test``: what a workflow job declares as inputs)."""
    paths = _prepared_paths(files)
    meta = load_json(paths["info"], what="prepared-data info")
    splits = {}
    for split_name in SPLITS:
        arr = load_npz(paths[split_name], what=f"prepared {split_name} split")
        splits[split_name] = Split(
            torch.from_numpy(arr["x"]), torch.from_numpy(arr["y"]).long(), torch.from_numpy(arr["index"]).long()
        )
    info = DatasetInfo(
        name=meta["name"],
        num_classes=int(meta["num_classes"]),
        input_shape=tuple(meta["input_shape"]),
        class_names=meta["class_names"],
        mean=meta["mean"],
        std=meta["std"],
    )
    return PreparedData(splits["train"], splits["val"], splits["test"], info)


def augment_batch(
    x: torch.Tensor, crop_padding: int, horizontal_flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Random crop of the original size from the zero-padded image, then random horizontal flip.

    The torchvision ``RandomCrop(size, padding)`` + ``RandomHorizontalFlip`` pair, on a batch of images in
    [0, 1] (before normalisation), with offsets and flips drawn from ``generator`` (on the CPU).
    """
    n, _, h, w = x.shape
    if crop_padding > 0:
        p = crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
        rows = dy[:, None] + torch.arange(h, device=x.device)[None, :]  # (n, h)
        cols = dx[:, None] + torch.arange(w, device=x.device)[None, :]  # (n, w)
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]
    if horizontal_flip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x

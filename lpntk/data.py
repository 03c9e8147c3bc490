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

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .io import load_json, load_npz, save_json, save_npz, sha256_file

__all__ = [
    "Split",
    "DatasetInfo",
    "PreparedData",
    "DataNotFoundError",
    "SOURCES",
    "TORCHVISION_DATASETS",
    "resolve_data_dir",
    "load_source",
    "prepare_dataset",
    "save_prepared",
    "load_prepared",
    "to_unit",
    "normalize",
    "class_counts",
    "augment_batch",
]

#: torchvision datasets known to load as (image, label) classification sets; any other torchvision class
#: with a ``train`` or ``split`` argument also works, these are the ones the tests exercise.
TORCHVISION_DATASETS = ("MNIST", "FashionMNIST", "KMNIST", "QMNIST", "CIFAR10", "CIFAR100", "SVHN", "USPS")
SKLEARN_DATASETS = ("digits",)
SOURCES = ("sklearn", "torchvision", "folder")


class DataNotFoundError(FileNotFoundError):
    """The files of a dataset are not where the config says, and downloading is off."""


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


def resolve_data_dir(configured: str | os.PathLike | None = None) -> Path:
    """Data directory: the config's value, else ``$LPNTK_DATA_DIR``, else ``./data``."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("LPNTK_DATA_DIR")
    return Path(env).expanduser() if env else Path("data")


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


# --------------------------------------------------------------------------------------------- sources


def _load_sklearn(spec: dict) -> tuple[Split, None, list[str]]:
    name = spec["name"]
    if name != "digits":
        raise ValueError(f"unknown scikit-learn dataset {name!r} (key 'name'); known: {', '.join(SKLEARN_DATASETS)}")
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)  # (1797, 1, 8, 8) in [0, 1]
    y = torch.from_numpy(d.target.astype(np.int64))
    return Split(x, y, torch.arange(len(y))), None, [str(c) for c in d.target_names]


def _torchvision_class(name: str):
    import torchvision.datasets as tvd

    cls = getattr(tvd, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, torch.utils.data.Dataset)):
        raise ValueError(
            f"unknown torchvision dataset {name!r} (key 'name'); torchvision has no such dataset "
            f"class. Known to work: {', '.join(TORCHVISION_DATASETS)}"
        )
    return cls


def _expected_files(cls, root: Path) -> str:
    """Human-readable description of where torchvision looks for ``cls``'s files under ``root``."""
    if hasattr(cls, "resources"):  # MNIST family
        names = [Path(r[0] if isinstance(r, tuple) else r).name.removesuffix(".gz") for r in cls.resources]
        return f"{root / cls.__name__ / 'raw'}/{{{', '.join(names)}}}"
    if hasattr(cls, "base_folder") and hasattr(cls, "train_list"):  # CIFAR
        names = [n for n, _ in cls.train_list + cls.test_list]
        return f"{root / cls.base_folder}/{{{', '.join(names)}}}"
    if hasattr(cls, "split_list"):  # SVHN
        names = [v[1] for v in cls.split_list.values()]
        return f"{root}/{{{', '.join(names)}}}"
    return f"the layout torchvision.datasets.{cls.__name__} expects under {root}"


def _tv_split_kwargs(cls, train: bool) -> dict:
    params = inspect.signature(cls.__init__).parameters
    if "train" in params:
        return {"train": train}
    if "split" in params:
        return {"split": "train" if train else "test"}
    raise ValueError(
        f"torchvision dataset {cls.__name__} has neither a 'train' nor a 'split' argument; use source: folder for it"
    )


def _dataset_to_tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """(x uint8 (N, C, H, W), y int64) from a torchvision dataset, using its arrays when it has them."""
    data = getattr(ds, "data", None)
    labels = getattr(ds, "targets", None)
    if labels is None:
        labels = getattr(ds, "labels", None)
    if data is not None and labels is not None:
        x = torch.as_tensor(np.asarray(data))
        if x.ndim == 3:  # (N, H, W) grey
            x = x.unsqueeze(1)
        elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # (N, H, W, C)
            x = x.permute(0, 3, 1, 2)
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        return x.contiguous().to(torch.uint8), y
    xs, ys = [], []
    for img, label in ds:  # generic path: PIL images
        a = np.asarray(img, dtype=np.uint8)
        xs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        ys.append(int(label))
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.long)


def _load_torchvision(spec: dict, root: Path) -> tuple[Split, Split, list[str]]:
    cls = _torchvision_class(spec["name"])
    download = bool(spec.get("download", False))
    kwargs = dict(spec.get("kwargs") or {})
    splits = []
    for train in (True, False):
        try:
            ds = cls(root=str(root), download=download, **_tv_split_kwargs(cls, train), **kwargs)
        except (RuntimeError, FileNotFoundError, OSError) as err:
            how = (
                "downloading failed: check the network, or copy the files there by hand"
                if download
                else "set the config's data_dir (or the environment variable LPNTK_DATA_DIR, or the dataset's "
                "'root') to the folder that holds them, or set 'download: true' on a machine with network "
                "access"
            )
            raise DataNotFoundError(
                f"dataset {spec['name']!r} (torchvision.datasets.{cls.__name__}) not found in {root}: expected "
                f"{_expected_files(cls, root)}; {how}. ({err})"
            ) from None
        x, y = _dataset_to_tensors(ds)
        splits.append(Split(x, y, torch.arange(len(y))))
    names = [str(c) for c in getattr(ds, "classes", [])] or [str(c) for c in range(int(splits[0].y.max()) + 1)]
    return splits[0], splits[1], names


def _load_folder(spec: dict, root: Path) -> tuple[Split, Split | None, list[str]]:
    from PIL import Image
    from torchvision.datasets import ImageFolder

    size = spec.get("image_size")
    mode = {1: "L", 3: "RGB"}[int(spec.get("channels", 3))]

    def load(folder: Path) -> tuple[Split, list[str]]:
        ds = ImageFolder(str(folder))
        xs = []
        for path, _ in ds.samples:
            with Image.open(path) as im:
                im = im.convert(mode)
                if size:
                    im = im.resize((int(size[1]), int(size[0])), Image.BILINEAR)
                a = np.asarray(im, dtype=np.uint8)
                xs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        shapes = {a.shape for a in xs}
        if len(shapes) != 1:
            raise ValueError(
                f"images in {folder} differ in size {sorted(shapes)[:3]}...; set 'image_size: [H, W]' "
                f"in the dataset's config block"
            )
        y = torch.tensor([t for _, t in ds.samples], dtype=torch.long)
        return Split(torch.from_numpy(np.stack(xs)), y, torch.arange(len(y))), list(ds.classes)

    train_dir = root / spec.get("train_dir", "train")
    test_dir = root / spec.get("test_dir", "test")
    if not train_dir.is_dir():
        raise DataNotFoundError(
            f"image folder dataset {spec.get('name', root.name)!r}: {train_dir} does not exist; expected "
            f"{train_dir}/<class name>/<image files> (and optionally {test_dir}/<class name>/...). Set the "
            f"dataset's 'root' (or the config's data_dir / LPNTK_DATA_DIR) to the folder that holds them"
        )
    train, names = load(train_dir)
    test = None
    if test_dir.is_dir():
        test, test_names = load(test_dir)
        if test_names != names:
            raise ValueError(f"class folders of {test_dir} {test_names} differ from those of {train_dir} {names}")
    return train, test, names


def load_source(spec: dict, data_dir: str | os.PathLike | None = None) -> tuple[Split, Split | None, list[str]]:
    """Load a dataset's source splits: (train, test or None, class names). Nothing is written."""
    source = spec.get("source")
    if source not in SOURCES:
        raise ValueError(f"unknown dataset source {source!r} (key 'source'); use one of {', '.join(SOURCES)}")
    if source == "sklearn":
        return _load_sklearn(spec)
    root = Path(spec["root"]).expanduser() if spec.get("root") else resolve_data_dir(data_dir)
    if source == "torchvision":
        return _load_torchvision(spec, root)
    return _load_folder(spec, root)


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
    train_pool, test, class_names = load_source(spec, data_dir)
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


def save_prepared(prep: PreparedData, outdir: str | os.PathLike) -> dict:
    """Write ``{train,val,test}.npz`` and ``info.json`` (class sizes, checksums) into ``outdir``."""
    outdir = Path(outdir)
    checksums, sizes = {}, {}
    for split_name in SPLITS:
        split = getattr(prep, split_name)
        path = save_npz(outdir / f"{split_name}.npz", x=split.x.numpy(), y=split.y.numpy(), index=split.index.numpy())
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
    save_json(outdir / "info.json", meta)
    return meta


def load_prepared(outdir: str | os.PathLike) -> PreparedData:
    """Read what :func:`save_prepared` wrote."""
    outdir = Path(outdir)
    meta = load_json(outdir / "info.json", what="prepared-data info")
    splits = {}
    for split_name in SPLITS:
        arr = load_npz(outdir / f"{split_name}.npz", what=f"prepared {split_name} split")
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

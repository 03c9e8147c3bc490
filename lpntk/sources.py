"""Dataset sources: scikit-learn's digits, any torchvision dataset class, or a folder of images.

:func:`load_source` loads a source's training (and, where it has one, test) split as tensors ``(x, y)``, images as
they come (``uint8`` in 0..255, or ``float32`` in [0, 1] for digits). Nothing is downloaded unless the dataset block
says ``download: true``. A file that is missing raises :class:`DataNotFoundError` naming the dataset, the folder
searched and the files expected; a file that is there but damaged raises :class:`DataCorruptError` naming the file
and what is wrong with it (its size against the size its own header describes, for the MNIST family's IDX files; its
checksum against torchvision's, for CIFAR) -- never "not found". :mod:`lpntk.data` carves the splits from these.
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DataNotFoundError",
    "DataCorruptError",
    "SOURCES",
    "TORCHVISION_DATASETS",
    "SKLEARN_DATASETS",
    "resolve_data_dir",
    "check_files",
    "load_source",
]

Loaded = tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None, list[str]]


class DataNotFoundError(FileNotFoundError):
    """The files of a dataset are not where the config says, and downloading is off."""


class DataCorruptError(ValueError):
    """A file of a dataset is there but truncated or damaged."""


#: torchvision datasets known to load as (image, label) classification sets; any other torchvision class
#: with a ``train`` or ``split`` argument also works, these are the ones the tests exercise.
TORCHVISION_DATASETS = ("MNIST", "FashionMNIST", "KMNIST", "QMNIST", "CIFAR10", "CIFAR100", "SVHN", "USPS")
SKLEARN_DATASETS = ("digits",)
SOURCES = ("sklearn", "torchvision", "folder")


def resolve_data_dir(configured: str | os.PathLike | None = None) -> Path:
    """Data directory: the config's value, else ``$LPNTK_DATA_DIR``, else ``./data``."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("LPNTK_DATA_DIR")
    return Path(env).expanduser() if env else Path("data")


def _load_sklearn(spec: dict) -> Loaded:
    name = spec["name"]
    if name != "digits":
        raise ValueError(f"unknown scikit-learn dataset {name!r} (key 'name'); known: {', '.join(SKLEARN_DATASETS)}")
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)  # (1797, 1, 8, 8) in [0, 1]
    y = torch.from_numpy(d.target.astype(np.int64))
    return (x, y), None, [str(c) for c in d.target_names]


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


def _load_torchvision(spec: dict, root: Path) -> Loaded:
    cls = _torchvision_class(spec["name"])
    download = bool(spec.get("download", False))
    kwargs = dict(spec.get("kwargs") or {})
    if not download:
        check_files(cls, root)
    splits = []
    for train in (True, False):
        try:
            ds = cls(root=str(root), download=download, **_tv_split_kwargs(cls, train), **kwargs)
        except (RuntimeError, FileNotFoundError, OSError) as err:
            check_files(cls, root)  # a damaged file is named as such, not reported as missing
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
        splits.append((x, y))
    names = [str(c) for c in getattr(ds, "classes", [])] or [str(c) for c in range(int(splits[0][1].max()) + 1)]
    return splits[0], splits[1], names


def _load_folder(spec: dict, root: Path) -> Loaded:
    from PIL import Image
    from torchvision.datasets import ImageFolder

    size = spec.get("image_size")
    mode = {1: "L", 3: "RGB"}[int(spec.get("channels", 3))]

    def load(folder: Path) -> tuple[tuple[torch.Tensor, torch.Tensor], list[str]]:
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
        return (torch.from_numpy(np.stack(xs)), y), list(ds.classes)

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


def load_source(spec: dict, data_dir: str | os.PathLike | None = None) -> Loaded:
    """Load a dataset's source splits: ((x, y) of train, (x, y) of test or None, class names). Nothing is written."""
    source = spec.get("source")
    if source not in SOURCES:
        raise ValueError(f"unknown dataset source {source!r} (key 'source'); use one of {', '.join(SOURCES)}")
    if source == "sklearn":
        return _load_sklearn(spec)
    root = Path(spec["root"]).expanduser() if spec.get("root") else resolve_data_dir(data_dir)
    if source == "torchvision":
        return _load_torchvision(spec, root)
    return _load_folder(spec, root)


# ---------------------------------------------------------------------------------------------- integrity

_IDX_ITEMSIZE = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


def _idx_problem(path: Path) -> str | None:
    """What is wrong with an IDX file (the MNIST family's raw format), or None: its header (magic 0 0 dtype ndim,
    then ndim big-endian dimensions) fixes its size at 4 + 4 ndim + prod(dims) * itemsize bytes."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(4)
        if len(head) < 4 or head[:2] != b"\x00\x00" or head[2] not in _IDX_ITEMSIZE or not 1 <= head[3] <= 4:
            return f"is not an IDX file (header {head.hex() or 'empty'}, {size:,} bytes)"
        dims = fh.read(4 * head[3])
    if len(dims) < 4 * head[3]:
        return f"is truncated: {size:,} bytes, shorter than its own header"
    shape = [int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(head[3])]
    expected = 4 + 4 * head[3] + int(np.prod(shape)) * _IDX_ITEMSIZE[head[2]]
    if size != expected:
        what = "truncated" if size < expected else "longer than its header says"
        return f"is {what}: {size:,} bytes read, {expected:,} expected for its {'x'.join(map(str, shape))} entries"
    return None


def _checksum_ok(cls, path: Path, md5: str) -> bool:
    """The MD5 check of the torchvision module that defines ``cls`` (the one its own loader applies)."""
    return bool(sys.modules[cls.__module__].check_integrity(str(path), md5))


def check_files(cls, root: str | os.PathLike) -> None:
    """Raise :class:`DataCorruptError` naming the first file of torchvision dataset ``cls`` under ``root`` that is
    present but damaged: an IDX file whose size disagrees with its header (MNIST, FashionMNIST, KMNIST, ...), a CIFAR
    batch whose MD5 differs from torchvision's. Missing files are not reported here (torchvision's loader is)."""
    root = Path(root)
    files: list[tuple[Path, str | None]] = []
    if hasattr(cls, "resources"):  # the MNIST family: raw IDX files (torchvision keeps them unzipped)
        for r in cls.resources:
            url = r[0] if isinstance(r, tuple) else r
            files.append((root / cls.__name__ / "raw" / Path(url).name.removesuffix(".gz"), None))
    elif hasattr(cls, "base_folder") and hasattr(cls, "train_list"):  # CIFAR
        files += [(root / cls.base_folder / name, md5) for name, md5 in cls.train_list + cls.test_list]
    for path, md5 in files:
        if not path.is_file():
            continue
        if md5 is None:
            problem = _idx_problem(path)
        else:
            problem = None if _checksum_ok(cls, path, md5) else "fails torchvision's MD5 checksum"
        if problem:
            raise DataCorruptError(
                f"dataset file {path} {problem}; it is damaged (an interrupted copy or download?): delete it and copy "
                f"it again from the original source, or set 'download: true' on a machine with network access"
            )

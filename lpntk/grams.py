"""Per-class lpNTK Gram files: what the kernel stage writes, and relations, difficulty and clustering read.

The experiments use, per class c, the lpNTK Gram of the class's training samples at the reference checkpoint,

    G^c_ij = kappa((x_i, c), (x_j, c)) = (1/K) s(c)^T J(x_i) J(x_j)^T s(c),   i, j in class c,

with |phi_i|^2 = G^c_ii (``sq_norm``). One file holds the Grams of one or more classes (a kernel job computes a
group of classes, ``kernel.classes_per_job``): an ``.npz`` with ``format``, ``num_classes``, ``labels`` (the classes
it holds) and per class c the members ``gram_<c>`` (n_c x n_c, float32), ``sq_norm_<c>`` (float64, the diagonal
before the float32 cast), ``index_<c>`` (original indices) and ``position_<c>`` (positions in the prepared training
split). :class:`ClassGram` is one class's entry; :func:`save_class_grams` and :func:`load_class_grams` are the only
code that knows the layout. Imports numpy only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .io import load_npz, save_npz

__all__ = ["FORMAT", "ClassGram", "save_class_grams", "iter_class_grams", "load_class_grams"]

FORMAT = "lpntk.class_grams/1"


@dataclass
class ClassGram:
    """The lpNTK Gram of the training samples of one class (see the module docstring)."""

    label: int
    gram: np.ndarray
    sq_norm: np.ndarray
    index: np.ndarray
    position: np.ndarray
    num_classes: int

    def __post_init__(self):
        n = len(self.index)
        if self.gram.shape != (n, n) or len(self.sq_norm) != n or len(self.position) != n:
            raise ValueError(
                f"class {self.label}: Gram {self.gram.shape}, sq_norm {len(self.sq_norm)}, position "
                f"{len(self.position)} for {n} samples"
            )
        if not 0 <= int(self.label) < int(self.num_classes):
            raise ValueError(f"class {self.label} is not among the {self.num_classes} classes")

    def __len__(self) -> int:
        return len(self.index)


def save_class_grams(path: str | os.PathLike, grams: Sequence[ClassGram]) -> None:
    """Write the Grams of one or more classes to ``path`` (atomically; same content, same bytes)."""
    if not grams:
        raise ValueError("no class Grams to save")
    k = {int(g.num_classes) for g in grams}
    if len(k) != 1:
        raise ValueError(f"class Grams of different models ({sorted(k)} classes) in one file")
    arrays: dict[str, np.ndarray] = {
        "format": np.asarray(FORMAT),
        "num_classes": np.int64(k.pop()),
        "labels": np.asarray([int(g.label) for g in grams], dtype=np.int64),
    }
    for g in grams:
        c = int(g.label)
        arrays[f"gram_{c}"] = np.asarray(g.gram, dtype=np.float32)
        arrays[f"sq_norm_{c}"] = np.asarray(g.sq_norm, dtype=np.float64)
        arrays[f"index_{c}"] = np.asarray(g.index, dtype=np.int64)
        arrays[f"position_{c}"] = np.asarray(g.position, dtype=np.int64)
    save_npz(path, **arrays)


def iter_class_grams(paths: Sequence[str | os.PathLike]) -> Iterator[ClassGram]:
    """The classes of the kernel files one at a time, in file order (only one class's Gram in memory at once)."""
    for path in paths:
        f = load_npz(path, what="per-class lpNTK Gram file")
        if "format" not in f or str(f["format"]) != FORMAT:
            raise ValueError(
                f"{path} is not a per-class lpNTK Gram file of this version ({FORMAT}); delete it and rerun the "
                "kernel step"
            )
        for c in np.asarray(f["labels"]).tolist():
            try:
                yield ClassGram(
                    label=int(c),
                    gram=np.asarray(f[f"gram_{c}"]),
                    sq_norm=np.asarray(f[f"sq_norm_{c}"]),
                    index=np.asarray(f[f"index_{c}"]),
                    position=np.asarray(f[f"position_{c}"]),
                    num_classes=int(f["num_classes"]),
                )
            except KeyError as err:
                raise ValueError(f"{path} lacks {err.args[0]!r}; delete it and rerun the kernel step") from None


def load_class_grams(paths: Sequence[str | os.PathLike], num_classes: int | None = None) -> list[ClassGram]:
    """Every class's Gram from the kernel files, in label order, checked: each class 0..C-1 exactly once (C =
    ``num_classes``, else the files' own), all of one model."""
    grams = sorted(iter_class_grams(paths), key=lambda g: g.label)
    labels = [g.label for g in grams]
    k = num_classes if num_classes is not None else (grams[0].num_classes if grams else 0)
    if labels != list(range(int(k))) or any(g.num_classes != int(k) for g in grams):
        raise ValueError(
            f"the kernel files {[str(p) for p in paths]} hold classes {labels}, expected each of the {k} classes once; "
            "delete them and rerun the kernel step"
        )
    return grams

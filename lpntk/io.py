"""Atomic, deterministic file output in open formats (npz, json, csv, parquet, torch state dicts).

Every writer goes through :func:`atomic_path`: the data is written to a temporary file in the target's
directory and renamed over the target only when writing succeeded, so a failed or killed job never leaves
a half-written result behind (and a rerun starts from a clean slate). Writers produce the same bytes for
the same content: json keys are sorted, npz members have a fixed order, no timestamps are embedded.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_path",
    "save_npz",
    "load_npz",
    "save_json",
    "load_json",
    "save_table",
    "save_torch",
    "sha256_file",
]


@functools.cache
def _umask() -> int:
    """The process's umask, read once (reading it means setting it, which is not thread-safe to repeat)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    The parent directory is created. On any exception the temporary file is removed and ``path`` is left
    untouched. The file gets the permissions a plain ``open`` would give it (0666 less the umask), not the
    private 0600 of the temporary file, so a group sharing a results folder can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def save_npz(path: str | os.PathLike, compress: bool = False, **arrays: Any) -> Path:
    """Write ``arrays`` to an ``.npz`` file atomically (members in the given order)."""
    path = Path(path)
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            (np.savez_compressed if compress else np.savez)(fh, **arrays)
    return path


def load_npz(path: str | os.PathLike, *, what: str = "results file") -> dict[str, np.ndarray]:
    """Load every member of an ``.npz`` file into memory, with a clear error if it is missing or broken."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; run the workflow step that produces it")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as err:  # zipfile.BadZipFile, ValueError, OSError ...
        raise ValueError(f"{what} {path} cannot be read ({err}); delete it and rerun the step") from None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as pretty, key-sorted JSON, atomically (numpy types converted, NaN/inf as null)."""
    path = Path(path)
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def load_json(path: str | os.PathLike, *, what: str = "results file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; run the workflow step that produces it")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{what} {path} cannot be read ({err}); delete it and rerun the step") from None


def save_table(path: str | os.PathLike, df) -> Path:
    """Write a pandas DataFrame atomically as CSV, Markdown or Parquet, chosen by the file suffix."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".csv":
            df.to_csv(tmp, index=False, float_format="%.10g", lineterminator="\n")
        elif path.suffix == ".md":
            tmp.write_text(df.to_markdown(index=False) + "\n")
        elif path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            raise ValueError(f"unsupported table format {path.suffix!r} for {path}; use .csv, .md or .parquet")
    return path


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` atomically (a model state dict, or a resumable training state)."""
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object, so the archive's record names do not embed the temp name
            torch.save(obj, fh)
    return path


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

import lpntk.io as io_module
from lpntk.io import atomic_path, load_json, load_npz, save_json, save_npz, save_table, save_torch


def test_writers_are_deterministic_across_paths(tmp_path):
    state = torch.nn.Linear(3, 2).state_dict()
    a, b = save_torch(tmp_path / "a.pt", state), save_torch(tmp_path / "sub" / "b.pt", state)
    assert a.read_bytes() == b.read_bytes()  # no temp-file name or timestamp inside the archive
    assert save_npz(tmp_path / "a.npz", x=[1, 2]).read_bytes() == save_npz(tmp_path / "b.npz", x=[1, 2]).read_bytes()
    assert save_json(tmp_path / "a.json", {"b": 1, "a": float("nan")}).read_text() == '{\n  "a": null,\n  "b": 1\n}\n'
    df = pd.DataFrame({"m": ["x"], "v": [0.1]})
    assert save_table(tmp_path / "t.csv", df).read_text() == "m,v\nx,0.1\n"
    assert "| m   |" in save_table(tmp_path / "t.md", df).read_text()


def test_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.npz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_unreadable_results_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz does not exist"):
        load_npz(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.npz cannot be read"):
        load_npz(tmp_path / "bad.npz")
    (tmp_path / "bad.json").write_text('{"seed": 1,')  # cut short
    with pytest.raises(ValueError, match="bad.json cannot be read"):
        load_json(tmp_path / "bad.json")


def test_written_files_get_the_umask_permissions_not_the_temporary_files(tmp_path):
    old = os.umask(0o022)
    try:
        io_module._umask.cache_clear()
        mode = save_npz(tmp_path / "a.npz", x=np.zeros(2)).stat().st_mode & 0o777
    finally:
        os.umask(old)
        io_module._umask.cache_clear()
    assert mode == 0o644  # mkstemp's 0600 would hide results from a group sharing the folder

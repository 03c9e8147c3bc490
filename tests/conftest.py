"""Shared fixtures. MNIST tests read $LPNTK_DATA_DIR (a folder holding MNIST/raw; no other place is looked at, and
.ci/run sets it where CI keeps the files); they are skipped when it is unset or the files are absent, unless
LPNTK_REQUIRE_DATA=1 (set by .ci/run), which turns the skip into a failure so CI can never pass without running
them."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(2)
    yield


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def schema_path() -> Path:
    return SCHEMA


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    root = Path(os.environ.get("LPNTK_DATA_DIR") or "").expanduser()
    if not os.environ.get("LPNTK_DATA_DIR") or not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        where = f"under {root}/MNIST/raw" if os.environ.get("LPNTK_DATA_DIR") else "(LPNTK_DATA_DIR is not set)"
        msg = f"MNIST IDX files not found {where}; set LPNTK_DATA_DIR to the folder that holds MNIST/raw"
        if os.environ.get("LPNTK_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def digits():
    from lpntk.data import prepare_dataset

    spec = {"source": "sklearn", "name": "digits", "test_fraction": 0.2, "val_fraction": 0.1, "split_seed": 0}
    return prepare_dataset("digits", spec)


SMALL_ARGS = {"width": 0.5, "hidden": 8}


def assert_sketch_of(sketched, exact, dim: int) -> None:
    """Every class's sketched Gram (kernel.mode: sketch, ``dim`` dimensions) has the exact Gram's samples and stays
    within the CountSketch's documented spread of it, 6 sqrt(2/D) |phi| |phi'| (norms from the exact Gram's
    diagonal), and is not the exact Gram itself."""
    exact = {g.label: g for g in exact}
    assert sorted(g.label for g in sketched) == sorted(exact)
    for g in sketched:
        ref = exact[g.label]
        assert np.array_equal(g.index, ref.index) and g.gram.shape == ref.gram.shape
        norms = np.sqrt(np.outer(ref.sq_norm, ref.sq_norm))
        err = np.abs(g.gram.astype(np.float64) - ref.gram)
        assert (err <= 6 * np.sqrt(2 / dim) * norms + 1e-5).all(), g.label
        assert err.max() > 1e-6 * norms.max(), g.label  # a sketch, not the exact Gram


def small_kernel_setup(root: Path, train_epochs: int = 0):
    """Prepared digits (20 per class) in ``root/data``, a small CNN reference (untrained, or trained for
    ``train_epochs``) in ``root/model.pt``, and its per-class kernel files: (prep, model, cfg, kernel paths)."""
    from lpntk.data import prepare_dataset, save_prepared
    from lpntk.models import build_model
    from lpntk.stages.kernel_stage import kernel_stage
    from lpntk.train import Recipe, seed_everything, train_model

    spec = {
        "source": "sklearn",
        "name": "digits",
        "test_fraction": 0.2,
        "val_fraction": 0.1,
        "split_seed": 0,
        "per_class_limit": 20,
    }
    prep = prepare_dataset("digits", spec)
    save_prepared(prep, root / "data")
    seed_everything(0)
    model = build_model("small_cnn", (1, 8, 8), 10, **SMALL_ARGS)
    if train_epochs:
        recipe = Recipe(epochs=train_epochs, batch_size=32, lr=0.05, schedule="none", select="last")
        model.load_state_dict(
            train_model(model, prep.train, recipe, 0, mean=prep.info.mean, std=prep.info.std, device="cpu").last_state
        )
    torch.save(model.state_dict(), root / "model.pt")
    cfg = {
        "dataset": "digits",
        "device": "cpu",
        "model": {"name": "small_cnn", "args": dict(SMALL_ARGS)},
        "kernel": {
            "checkpoint": "best",
            "seed": None,
            "mode": "exact",
            "sketch_dim": None,
            "sketch_seed": 0,
            "dtype": "float64",
            "block_size": 64,
            "max_memory_gb": 1,
        },
    }
    kernels = []
    for group in (range(0, 4), range(4, 10)):  # two kernel files, as two kernel jobs would write them
        path = root / "kernel" / f"classes{group[0]}-{group[-1]}.npz"
        kernel_stage(
            dataset="digits",
            cfg=cfg,
            classes=list(group),
            data=root / "data",
            reference=root / "model.pt",
            output=path,
            threads=1,
            mlflow_cfg={"enabled": False},
        )
        kernels.append(str(path))
    return prep, model, cfg, kernels


def snakemake(
    repo: Path, workdir: Path, *args: str, configfile: str | None = ".test/config/config.yaml", check: bool = True
) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(repo / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        *args,
    ]
    if configfile:
        cmd += ["--configfile", str(repo / configfile)]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LPNTK_MLFLOW_RUNS")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture(scope="session")
def workflow_run(tmp_path_factory):
    """The whole workflow on .test/config/config.yaml, run once per test session: (workdir, process).

    Every stage's end-to-end checks use this one run (tests/workflow/test_workflow.py and the stage test files)."""
    workdir = tmp_path_factory.mktemp("wf")
    proc = snakemake(REPO, workdir)
    return workdir, proc


# ------------------------------------------------------------------- pruning (tests/pruning/)


@pytest.fixture(scope="module")
def tiny_cfg(repo, schema_path):
    """The tiny test config's dataset block with the pruning block the pruning tests run (tests/pruning/): every
    method, two kept fractions, a curve point and the small-cluster experiment with both controls."""
    from lpntk.config import dataset_config, load_config

    cfg = dataset_config(load_config(repo / ".test" / "config" / "config.yaml", schema_path), "tiny")
    cfg["pruning"].update(
        {
            "methods": ["lpntk", "lpntk_gated", "lpntk_random", "node", "el2n", "grand", "forgetting", "random"],
            "keep": [0.7, 0.5],
            "curve_keep": [0.9],
        }
    )
    cfg["pruning"]["small_clusters"].update({"data_fractions": [0.5], "remove": [0.2], "controls": ["random", "large"]})
    return cfg


@pytest.fixture(scope="module")
def full_kernel_cfg(tiny_cfg):
    """tiny_cfg with the small-cluster experiment on the full-data kernel only (the synthetic fixture has no images
    to train a subset's own model on)."""
    cfg = copy.deepcopy(tiny_cfg)
    cfg["pruning"]["small_clusters"]["kernels"] = ["full"]
    return cfg

"""Stage functions (what the workflow scripts call), run directly on small inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lpntk.data import save_prepared
from lpntk.io import load_json, save_json
from lpntk.kernel import lpntk_gram
from lpntk.models import build_model
from lpntk.reference_run import choose_reference_run

OFF = {"enabled": False}


def test_choose_reference_run():
    runs = [
        {"seed": 3, "select": "val", "val_acc_selected": 0.9},
        {"seed": 1, "select": "val", "val_acc_selected": 0.95},
        {"seed": 2, "select": "val", "val_acc_selected": 0.95},
    ]
    assert choose_reference_run(runs)["seed"] == 1  # best, ties to the smallest seed
    assert choose_reference_run(runs, seed=3)["seed"] == 3
    with pytest.raises(ValueError, match="kernel.seed = 7"):
        choose_reference_run(runs, seed=7)
    test_sel = [
        {"seed": 1, "select": "test", "test_acc_selected": 0.8},
        {"seed": 2, "select": "test", "test_acc_selected": 0.85},
    ]
    assert choose_reference_run(test_sel)["seed"] == 2


@pytest.fixture
def small_cfg():
    return {
        "model": {"name": "small_cnn", "args": {"width": 0.5, "hidden": 8}},
        "device": "cpu",
        "kernel": {
            "checkpoint": "best",
            "seed": None,
            "mode": "exact",
            "sketch_dim": None,
            "sketch_seed": 0,
            "dtype": "float64",
            "block_size": 16,
            "max_memory_gb": 1,
        },
    }


def test_reference_and_kernel_stage_keep_original_indices(digits, tmp_path, small_cfg):
    from lpntk.data import normalize, to_unit
    from lpntk.grams import iter_class_grams
    from lpntk.stages.kernel_stage import kernel_stage
    from lpntk.stages.select_reference_stage import select_reference_stage

    save_prepared(digits, tmp_path / "data")
    summaries = []
    for seed, acc in ((1, 0.5), (2, 0.7)):
        torch.manual_seed(seed)
        model = build_model("small_cnn", (1, 8, 8), 10, width=0.5, hidden=8)
        d = tmp_path / f"seed{seed}"
        d.mkdir()
        torch.save(model.state_dict(), d / "model_best.pt")
        save_json(
            d / "summary.json", {"seed": seed, "select": "val", "val_acc_selected": acc, "best_epoch": 1, "epochs": 1}
        )
        summaries.append(str(d / "summary.json"))
    out = {"model": str(tmp_path / "ref" / "model.pt"), "info": str(tmp_path / "ref" / "reference.json")}
    checkpoints = [str(tmp_path / f"seed{s}" / "model_best.pt") for s in (1, 2)]
    args = {"dataset": "digits", "cfg": small_cfg, "summaries": summaries, "checkpoints": checkpoints, "outputs": out}
    (tmp_path / "seed2" / "model_best.pt").rename(tmp_path / "moved.pt")
    with pytest.raises(FileNotFoundError, match="seed2/model_best.pt of the chosen training run"):
        select_reference_stage(**args, mlflow_cfg=OFF)
    assert not (tmp_path / "ref").exists() or not any((tmp_path / "ref").iterdir())  # nothing half-written
    (tmp_path / "moved.pt").rename(tmp_path / "seed2" / "model_best.pt")
    info = select_reference_stage(**args, mlflow_cfg=OFF)
    assert info["seed"] == 2 and load_json(out["info"])["seed"] == 2

    kernel_stage(
        dataset="digits",
        cfg=small_cfg,
        classes=[3],
        data=tmp_path / "data",
        reference=out["model"],
        output=tmp_path / "k3.npz",
        threads=1,
        mlflow_cfg=OFF,
    )
    (k,) = iter_class_grams([tmp_path / "k3.npz"])
    pos = np.flatnonzero(digits.train.y.numpy() == 3)
    np.testing.assert_array_equal(k.position, pos)
    np.testing.assert_array_equal(k.index, digits.train.index[pos].numpy())
    assert k.label == 3 and k.gram.shape == (len(pos), len(pos)) and k.gram.dtype == np.float32
    model = build_model("small_cnn", (1, 8, 8), 10, width=0.5, hidden=8)
    model.load_state_dict(torch.load(out["model"]))
    x = normalize(to_unit(digits.train.x[pos]), digits.info.mean, digits.info.std)
    ref = lpntk_gram(model.double(), x.double(), digits.train.y[pos]).numpy()
    np.testing.assert_allclose(k.gram, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    np.testing.assert_allclose(k.sq_norm, np.diag(ref), rtol=1e-6)


def test_reference_checkpoint_that_does_not_fit_is_a_clear_error(tmp_path, digits):
    from lpntk.stages.torch_setup import load_reference_model

    torch.save(build_model("mlp", (1, 8, 8), 10).state_dict(), tmp_path / "m.pt")
    with pytest.raises(ValueError, match="does not fit model 'small_cnn'"):
        load_reference_model({"model": {"name": "small_cnn"}}, digits.info, tmp_path / "m.pt")
    with pytest.raises(FileNotFoundError, match="run the train step"):
        load_reference_model({"model": {"name": "small_cnn"}}, digits.info, tmp_path / "none.pt")


def _finished_dataset(root, ds: str, sections=("relations/shares.md",)) -> None:
    """The files the summary page reads of one dataset's finished results under ``root``."""
    from lpntk import paths

    r = str(root)
    info = {"n": {"train": 80, "val": 10, "test": 10}, "num_classes": 10, "input_shape": [1, 8, 8]}
    save_json(paths.data_file("info.json", ds, r), info)
    for seed in (1, 2):
        run = {"seed": seed, "n_params": 100, "val_acc_selected": 0.5, "test_acc_selected": 0.5, "test_acc_last": 0.4}
        save_json(paths.train_file("summary.json", ds, seed, r), run)
    save_json(paths.claims_file("summary.json", ds, r), {"verdicts": {"supported": 1}})
    for rel, text in (("claims/claims.md", f"# claims of {ds}"), *((s, f"# table {s} of {ds}") for s in sections)):
        path = root / ds / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_summary_covers_every_dataset_with_results_in_its_folder(tmp_path):
    """A run of one config into a results/ folder that holds another config's datasets keeps their sections:
    the page covers the config's datasets and, after them, every other finished dataset found there."""
    from lpntk import paths
    from lpntk.stages.summary_stage import present_results, summary_stage

    root = tmp_path / "results"
    _finished_dataset(root, "mnist", sections=("relations/shares.md", "pruning/table.md"))
    _finished_dataset(root, "digits")
    (root / "half").mkdir()  # a dataset whose run stopped before its claims: not finished, left out
    save_json(paths.data_file("info.json", "half", str(root)), {"n": {}})
    (root / "logs").mkdir()
    found = present_results(root, skip=["mnist"])
    assert list(found) == ["digits"]
    assert found["digits"]["summaries"] == [paths.train_file("summary.json", "digits", s, str(root)) for s in (1, 2)]
    assert "relations_shares" in found["digits"] and "pruning_table" not in found["digits"]
    assert "reference" not in found["digits"]  # absent: the section says nothing of it
    mnist = present_results(root)["mnist"]  # what the config's own files would be
    text = summary_stage(results={"mnist": mnist}, output=paths.summary_page(str(root)), mlflow_cfg=OFF, others=True)
    assert text.index("## mnist") < text.index("## digits") and "# table pruning/table.md of mnist" in text
    assert "digits is not in the config that wrote this page" in text and "claims of digits" in text
    alone = summary_stage(results={"mnist": mnist}, output=tmp_path / "alone.md", mlflow_cfg=OFF)
    assert "## digits" not in alone

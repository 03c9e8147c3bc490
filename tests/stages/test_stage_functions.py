"""The data, train and summary stages called directly on tiny inputs, their outputs' content checked against values
computed here from the source data, the saved arrays or literal numbers (not only that the files exist).

The stages are called with keyword arguments by their parameter names."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch

from lpntk.io import load_npz, save_json
from lpntk.models import build_model
from lpntk.stages.prepare_data_stage import prepare_data_stage
from lpntk.stages.summary_stage import summary_stage
from lpntk.stages.train_stage import train_stage

OFF = {"enabled": False}
DATA_CFG = {
    "source": "sklearn",
    "name": "digits",
    "test_fraction": 0.2,
    "val_fraction": 0.25,
    "split_seed": 0,
    "per_class_limit": 12,
}
MODEL = {"name": "small_cnn", "args": {"width": 0.5, "hidden": 8}}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("stages") / "data"
    meta = prepare_data_stage(dataset="digits", cfg=dict(DATA_CFG), outputs=_files(out), data_dir=None, mlflow_cfg=OFF)
    return out, meta


def _files(folder):
    """The prepared-data files a rule declares, by name."""
    return {"info": folder / "info.json", **{s: folder / f"{s}.npz" for s in ("train", "val", "test")}}


def test_prepare_data_stage_writes_the_source_images_in_seeded_disjoint_splits(prepared, tmp_path):
    from sklearn.datasets import load_digits

    out, meta = prepared
    info = json.loads((out / "info.json").read_text())
    assert info == json.loads(json.dumps(meta))
    # 1797 images: ceil(0.2 * 1797) = 360 for test; 12 per class kept, a quarter of them (3 per class) for validation
    assert info["n"] == {"train": 90, "val": 30, "test": 360}
    assert info["class_sizes"]["train"] == [9] * 10 and info["class_sizes"]["val"] == [3] * 10
    assert sum(info["class_sizes"]["test"]) == 360 and info["num_classes"] == 10 and info["input_shape"] == [1, 8, 8]
    source = load_digits()
    seen = set()
    for split in ("train", "val", "test"):
        arr = np.load(out / f"{split}.npz")
        idx = arr["index"]
        assert len(idx) == info["n"][split] and not seen & set(idx.tolist())
        seen |= set(idx.tolist())
        np.testing.assert_array_equal(arr["y"], source.target[idx])
        np.testing.assert_allclose(arr["x"][:, 0], source.images[idx] / 16.0, rtol=0, atol=1e-7)
        assert info["sha256"][split] == hashlib.sha256((out / f"{split}.npz").read_bytes()).hexdigest()
    # normalisation: the training split's pixel mean and (sample) standard deviation
    x = np.load(out / "train.npz")["x"].astype(np.float64)
    assert info["mean"][0] == pytest.approx(x.mean(), abs=1e-6)
    assert info["std"][0] == pytest.approx(x.std(ddof=1), abs=1e-6)
    # seeded: the same config gives the same files
    again = prepare_data_stage(
        dataset="digits", cfg=dict(DATA_CFG), outputs=_files(tmp_path), data_dir=None, mlflow_cfg=OFF
    )
    assert again["sha256"] == info["sha256"]


TRAIN = {
    "epochs": 3,
    "batch_size": 32,
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": {"name": "step", "step_size": 1, "gamma": 0.5},
    "score_epochs": [0, 3],
    "select": "val",
    "nesterov": False,
    "shuffle": True,
    "eval_batch_size": 1024,
    "resume_every": 0,
    "precision": "fp32",
}
TRAIN["schedule"]["t_max"] = None


def _train(prepared_dir, root, seed=1):
    outputs = {
        "model_best": str(root / "model_best.pt"),
        "model_last": str(root / "model_last.pt"),
        "dynamics": str(root / "dynamics.npz"),
        "history": str(root / "history.csv"),
        "summary": str(root / "summary.json"),
    }
    cfg = {
        "model": MODEL,
        "device": "cpu",
        "train": dict(TRAIN),
        "augment": {"crop_padding": 0, "horizontal_flip": False},
    }
    summary = train_stage(
        dataset="digits", cfg=cfg, seed=seed, data=_files(prepared_dir), outputs=outputs, threads=None, mlflow_cfg=OFF
    )
    return summary, outputs


def _accuracy(state_path, split_file, info) -> float:
    model = build_model(MODEL["name"], (1, 8, 8), 10, **MODEL["args"])
    model.load_state_dict(torch.load(state_path, weights_only=True))
    model.eval()
    arr = np.load(split_file)
    x = (torch.from_numpy(arr["x"]).float() - info["mean"][0]) / info["std"][0]
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    return float((pred == arr["y"]).mean())


def test_train_stage_outputs_agree_with_each_other_and_with_the_checkpoints(prepared, tmp_path):
    data_dir, meta = prepared
    summary, out = _train(data_dir, tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert not (tmp_path / "resume.pt").exists()
    dyn = load_npz(out["dynamics"])
    train = np.load(data_dir / "train.npz")
    n = meta["n"]["train"]
    np.testing.assert_array_equal(dyn["index"], train["index"])
    np.testing.assert_array_equal(dyn["y"], train["y"])
    assert dyn["correct"].shape == dyn["loss"].shape == dyn["l2"].shape == (n, 3)
    assert dyn["el2n"].shape == dyn["grand"].shape == (n, 2) and dyn["score_epochs"].tolist() == [0, 3]
    for row in dyn["batch_order"]:
        assert sorted(row.tolist()) == list(range(n))
    # forgetting counts recounted from the saved correctness: correct at e - 1, wrong at e
    c = dyn["correct"]
    events = int(sum(c[i, e - 1] and not c[i, e] for i in range(n) for e in range(1, 3)))
    never = int(sum(not c[i].any() for i in range(n)))
    assert summary["forgetting_events"] == events and summary["never_learned"] == never
    assert summary["n_train"] == n and summary["seed"] == 1 and summary["dataset"] == "digits"
    model = build_model(MODEL["name"], (1, 8, 8), 10, **MODEL["args"])
    assert summary["n_params"] == sum(p.numel() for p in model.parameters())
    # history: one row per epoch, the step schedule, the training columns are the epoch means of the records
    hist = pd.read_csv(out["history"])
    assert hist["epoch"].tolist() == [1, 2, 3] and "seconds" not in hist.columns
    np.testing.assert_allclose(hist["lr"], [0.05, 0.025, 0.0125])
    np.testing.assert_allclose(hist["train_acc"], c.mean(axis=0), atol=1e-9)
    np.testing.assert_allclose(hist["train_loss"], dyn["loss"].mean(axis=0), rtol=1e-6)
    # the selected epoch has the best validation accuracy; the checkpoints reproduce the recorded accuracies
    best = int(np.argmax(hist["val_acc"].to_numpy())) + 1
    assert summary["best_epoch"] == best
    assert summary["val_acc_selected"] == pytest.approx(hist["val_acc"][best - 1])
    assert summary["test_acc_last"] == pytest.approx(hist["test_acc"].iloc[-1])
    assert summary["test_acc_max"] == pytest.approx(hist["test_acc"].max())
    assert _accuracy(out["model_best"], data_dir / "val.npz", meta) == pytest.approx(summary["val_acc_selected"])
    assert _accuracy(out["model_best"], data_dir / "test.npz", meta) == pytest.approx(summary["test_acc_selected"])
    assert _accuracy(out["model_last"], data_dir / "test.npz", meta) == pytest.approx(summary["test_acc_last"])
    # the same seed gives the same dynamics
    _, out2 = _train(data_dir, tmp_path / "again")
    dyn2 = load_npz(out2["dynamics"])
    for k in dyn:
        np.testing.assert_array_equal(dyn2[k], dyn[k], err_msg=k)


def test_summary_stage_page_from_hand_made_results(prepared, tmp_path):
    data_dir, meta = prepared
    summaries = []
    for seed, val, test, last in ((2, 0.75, 0.9, 0.85), (1, 0.5, 0.8, 0.8)):  # given out of seed order
        s = {"seed": seed, "val_acc_selected": val, "test_acc_selected": test, "test_acc_last": last}
        s["n_params"] = 1234
        if seed == 1:
            s["test_acc_max"] = 0.95  # only one seed has it: no standard deviation
        summaries.append(str(save_json(tmp_path / f"summary{seed}.json", s)))
    reference = save_json(tmp_path / "reference.json", {"seed": 2, "epoch": 3, "checkpoint": "best", "select": "val"})
    table = tmp_path / "shares.md"
    table.write_text("# Relations of tiny\n\n| rule | interchangeable |\n|---|---|\n| cos | 0.5 |\n")
    results = {
        "tiny": {
            "info": str(data_dir / "info.json"),
            "summaries": summaries,
            "reference": str(reference),
            "relations_shares": str(table),
        }
    }
    text = summary_stage(results=results, output=tmp_path / "summary.md", mlflow_cfg=OFF)
    assert (tmp_path / "summary.md").read_text() == text
    lines = text.splitlines()
    assert lines[0] == "# lpntk results" and "## tiny" in lines
    assert (
        "90 training / 30 validation / 360 test images, 10 classes, input 1x8x8; model with 1,234 parameters; "
        "seeds 1, 2." in lines
    )
    # mean +- sample std over seeds, in %: (50, 75) -> 62.50 +- 17.68; (80, 90) -> 85.00 +- 7.07
    assert "| validation, selected epoch | 62.50 ± 17.68 | 1: 50.00, 2: 75.00 |" in lines
    assert "| test, selected epoch | 85.00 ± 7.07 | 1: 80.00, 2: 90.00 |" in lines
    assert "| test, last epoch | 82.50 ± 3.54 | 1: 80.00, 2: 85.00 |" in lines
    assert "| test, max over epochs (official metric) | 95.00 | 1: 95.00 |" in lines
    assert (
        "Reference checkpoint of use cases 1-2: seed 2, epoch 3 (best, selected on val); use case 3 selects each "
        "retraining seed's subsets from its own run's checkpoint." in lines
    )
    # the one section given, its heading and text, its table's own title demoted under it; no other section
    i = lines.index("### Use case 1 - relations between samples under lpNTK")
    assert lines[i + 2].startswith("Shares of interchangeable") and "#### Relations of tiny" in lines[i + 3 :]
    assert "| cos | 0.5 |" in lines
    for other in ("Use case 2", "Use case 3", "redundant samples per class", "controlling learning difficulty"):
        assert other not in text
    # the same inputs give the same bytes
    again = summary_stage(results=results, output=tmp_path / "again.md", mlflow_cfg=OFF)
    assert again == text

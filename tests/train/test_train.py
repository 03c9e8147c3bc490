from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from lpntk.data import augment_batch
from lpntk.models import build_model
from lpntk.train import Recipe, l2_error, presentation_forgetting, seed_everything, train_model


def _run(digits, seed=1, n=200, **recipe_kw):
    kw = dict(epochs=3, batch_size=32, lr=0.05, schedule="step", step_size=1, gamma=0.5)
    kw.update(recipe_kw)
    recipe = Recipe(**kw)
    seed_everything(seed)
    model = build_model("small_cnn", digits.info.input_shape, 10)
    return train_model(
        model,
        digits.train.subset(range(n)),
        recipe,
        seed,
        mean=digits.info.mean,
        std=digits.info.std,
        val=digits.val,
        test=digits.test,
        device="cpu",
    )


def _bytes(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def test_same_seed_same_bytes_other_seed_differs(digits):
    a, b, c = _run(digits, 1), _run(digits, 1), _run(digits, 2)
    assert _bytes(a.best_state) == _bytes(b.best_state) and _bytes(a.last_state) == _bytes(b.last_state)
    for k in a.dynamics:
        np.testing.assert_array_equal(a.dynamics[k], b.dynamics[k])
    assert a.history == [dict(h, seconds=a.history[i]["seconds"]) for i, h in enumerate(b.history)]
    assert _bytes(a.last_state) != _bytes(c.last_state)
    assert not np.array_equal(a.dynamics["batch_order"], c.dynamics["batch_order"])


def test_dynamics_shapes_order_and_learning_rates(digits):
    r = _run(digits, n=100, epochs=4, batch_size=32)
    d = r.dynamics
    assert d["loss"].shape == d["correct"].shape == d["l2"].shape == (100, 4)
    for row in d["batch_order"]:  # every epoch presents every sample exactly once
        assert sorted(row.tolist()) == list(range(100))
    steps = 4  # ceil(100 / 32)
    np.testing.assert_allclose(d["lr"], np.repeat([0.05, 0.025, 0.0125, 0.00625], steps))
    np.testing.assert_array_equal(d["index"], digits.train.index[:100].numpy())
    assert (d["l2"] >= 0).all() and (d["l2"] <= np.sqrt(2) + 1e-6).all()
    # the loss recorded at a presentation is -log softmax_y: zero loss <=> zero L2 error, and monotone-ish
    assert np.corrcoef(d["loss"].ravel(), d["l2"].ravel())[0, 1] > 0.8
    assert r.summary["best_epoch"] == int(np.argmax([h["val_acc"] for h in r.history])) + 1


def test_l2_error_by_hand():
    logits = torch.tensor([[0.0, 0.0], [np.log(3.0), 0.0]])
    y = torch.tensor([0, 1])
    # softmax = (.5, .5) -> ||(-.5, .5)|| = sqrt(.5); softmax = (.75, .25), y = 1 -> ||(.75, -.75)||
    np.testing.assert_allclose(l2_error(logits, y).numpy(), [np.sqrt(0.5), 0.75 * np.sqrt(2)], rtol=1e-6)


def test_forgetting_events_on_a_hand_made_sequence():
    correct = np.array(
        [
            [0, 1, 0, 1, 1, 0],  # learned at 1, forgotten at 2 and 5 -> 2 events
            [1, 1, 1, 1, 1, 1],  # never forgotten
            [0, 0, 0, 0, 0, 0],  # never learned
            [1, 0, 0, 1, 0, 1],  # forgotten at 1 and 4
        ],
        dtype=bool,
    )
    f = presentation_forgetting(correct)
    np.testing.assert_array_equal(f["count"], [2, 0, 0, 2])
    np.testing.assert_array_equal(f["first_learned"], [1, 0, -1, 0])
    np.testing.assert_array_equal(f["never_learned"], [False, False, True, False])
    assert f["events"][0].tolist() == [False, False, True, False, False, True]
    assert f["events"][3].tolist() == [False, True, False, False, True, False]


def test_augment_batch_crops_shifted_windows_and_flips():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) + 1
    g = torch.Generator().manual_seed(0)
    out = augment_batch(x, crop_padding=2, horizontal_flip=False, generator=g)
    assert out.shape == x.shape
    g = torch.Generator().manual_seed(0)
    dy = torch.randint(0, 5, (2,), generator=g)
    dx = torch.randint(0, 5, (2,), generator=g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        ref = padded[i, :, dy[i] : dy[i] + 4, dx[i] : dx[i] + 4]
        assert torch.equal(out[i], ref)
    flipped = augment_batch(x, 0, True, torch.Generator().manual_seed(1))
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))


def test_resume_after_interruption_gives_identical_results(digits, tmp_path):
    recipe = Recipe(
        epochs=5, batch_size=32, lr=0.05, schedule="step", step_size=2, gamma=0.5, resume_every=2, score_epochs=(0, 3)
    )
    train = digits.train.subset(range(150))

    def run(on_epoch=None):
        seed_everything(4)
        model = build_model("small_cnn", digits.info.input_shape, 10)
        return train_model(
            model,
            train,
            recipe,
            4,
            mean=digits.info.mean,
            std=digits.info.std,
            val=digits.val,
            device="cpu",
            resume_path=tmp_path / "resume.pt",
            on_epoch=on_epoch,
        )

    full = run()
    assert not (tmp_path / "resume.pt").exists()  # removed on completion

    def crash(row):
        if row["epoch"] == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        run(crash)
    assert (tmp_path / "resume.pt").exists()  # state of epoch 2 kept
    resumed = run()
    assert _bytes(resumed.last_state) == _bytes(full.last_state)
    for k in full.dynamics:
        np.testing.assert_array_equal(resumed.dynamics[k], full.dynamics[k])


def test_resume_state_of_another_run_is_discarded(digits, tmp_path, caplog):
    from dataclasses import replace

    train = digits.train.subset(range(96))
    recipe = Recipe(epochs=3, batch_size=32, lr=0.05, resume_every=1)

    def run(rec, on_epoch=None):
        seed_everything(4)
        model = build_model("small_cnn", digits.info.input_shape, 10)
        return train_model(
            model,
            train,
            rec,
            4,
            mean=digits.info.mean,
            std=digits.info.std,
            val=digits.val,
            device="cpu",
            resume_path=tmp_path / "resume.pt",
            on_epoch=on_epoch,
        )

    def crash(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt("simulated kill")

    changed = replace(recipe, lr=0.01)  # the config was edited after the interruption
    with pytest.raises(KeyboardInterrupt):
        run(recipe, crash)
    assert (tmp_path / "resume.pt").exists()
    with caplog.at_level("WARNING", logger="lpntk.train"):
        after_edit = run(changed)
    assert "saved by a different run" in caplog.text
    assert _bytes(after_edit.last_state) == _bytes(run(changed).last_state)  # as if started fresh
    assert after_edit.history[0]["lr"] == pytest.approx(0.01)

    (tmp_path / "resume.pt").write_bytes(b"truncated")  # a state cut short by a full disk
    caplog.clear()
    with caplog.at_level("WARNING", logger="lpntk.train"):
        again = run(changed)
    assert "unreadable resume state" in caplog.text and not (tmp_path / "resume.pt").exists()
    assert _bytes(again.last_state) == _bytes(after_edit.last_state)


def test_score_epochs_record_el2n_and_grand(digits):
    from lpntk.train import evaluate

    r = _run(digits, n=64, epochs=2, score_epochs=(0, 2))
    d = r.dynamics
    assert d["el2n"].shape == d["grand"].shape == (64, 2) and list(d["score_epochs"]) == [0, 2]
    # EL2N at the last epoch equals the L2 error of the eval-mode logits of the final weights
    model = build_model("small_cnn", digits.info.input_shape, 10)
    model.load_state_dict(r.last_state)
    sub = digits.train.subset(range(64))
    ev = evaluate(model, sub, digits.info.mean, digits.info.std)
    np.testing.assert_allclose(d["el2n"][:, 1], l2_error(ev["logits"], sub.y).numpy(), rtol=1e-5)
    # GraNd = per-sample gradient norm of the cross-entropy, checked by brute force on a few samples
    from lpntk.data import normalize, to_unit

    x = normalize(to_unit(sub.x), digits.info.mean, digits.info.std)
    model.eval()
    for i in (0, 7, 63):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i : i + 1]), sub.y[i : i + 1]).backward()
        norm = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters()))
        np.testing.assert_allclose(d["grand"][i, 1], float(norm), rtol=1e-4)


def test_recipe_rejects_bad_values():
    with pytest.raises(ValueError, match="epochs"):
        Recipe(epochs=0)
    with pytest.raises(ValueError, match="schedule"):
        Recipe(epochs=1, schedule="linear")
    with pytest.raises(ValueError, match="score_epochs"):
        Recipe(epochs=2, score_epochs=(3,))


def test_select_test_reproduces_official_selection(digits):
    r = _run(digits, n=120, epochs=4, select="test")
    assert r.summary["best_epoch"] == int(np.argmax([h["test_acc"] for h in r.history])) + 1
    assert r.summary["test_acc_selected"] == r.summary["test_acc_max"]


def test_precision_switch_fp32_exact_tf32_same_on_cpu_bf16_autocast(digits):
    """fp32 is the default; tf32 only changes CUDA arithmetic, so on CPU it gives fp32's bytes; bf16 autocasts the
    training forward pass (a different run that still learns); the CUDA TF32 switches are set for the run and
    restored after it."""
    from lpntk.precision import forward_precision, run_precision

    assert Recipe(epochs=1).precision == "fp32"
    fp32, tf32 = _run(digits, n=96, epochs=2), _run(digits, n=96, epochs=2, precision="tf32")
    assert _bytes(fp32.last_state) == _bytes(tf32.last_state)
    fp32, bf16 = _run(digits, n=200, epochs=4), _run(digits, n=200, epochs=4, precision="bf16")
    assert _bytes(bf16.last_state) != _bytes(fp32.last_state)
    assert np.isfinite(bf16.dynamics["loss"]).all() and bf16.dynamics["loss"].dtype == np.float32
    assert bf16.summary["recipe"]["precision"] == "bf16"
    assert bf16.history[-1]["val_acc"] > 0.4 and abs(bf16.history[-1]["val_acc"] - fp32.history[-1]["val_acc"]) < 0.1
    with forward_precision("bf16", torch.device("cpu")):
        assert torch.nn.Linear(4, 2)(torch.ones(1, 4)).dtype == torch.bfloat16
    with forward_precision("fp32", torch.device("cpu")):
        assert torch.nn.Linear(4, 2)(torch.ones(1, 4)).dtype == torch.float32

    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    for precision, inside in (("fp32", False), ("tf32", True), ("bf16", False)):
        with run_precision(precision):
            assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (inside, inside)
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == old
    with pytest.raises(ValueError, match="precision"):
        Recipe(epochs=1, precision="fp16")


_RUN_ONE = """
import sys, torch
from lpntk.data import prepare_dataset
from lpntk.io import save_npz
from lpntk.models import build_model
from lpntk.train import Recipe, seed_everything, train_model
torch.set_num_threads(1)
spec = {"source": "sklearn", "name": "digits", "test_fraction": 0.2, "val_fraction": 0.1, "split_seed": 0}
d = prepare_dataset("digits", spec)
seed_everything(5)
model = build_model("small_cnn", d.info.input_shape, 10)
recipe = Recipe(epochs=2, batch_size=32, lr=0.05, crop_padding=1, score_epochs=(0, 2))
r = train_model(model, d.train.subset(range(300)), recipe, 5, mean=d.info.mean, std=d.info.std, val=d.val,
                device="cpu")
torch.save(r.last_state, sys.argv[1] + ".pt")
save_npz(sys.argv[1] + ".npz", **r.dynamics)
"""


def test_training_processes_sharing_a_machine_give_the_bytes_of_one_alone(tmp_path, repo):
    """gpu_slots packs several jobs onto one device: each is its own process with its own seeded generators, so a run
    gives the same bytes whether it runs alone or beside another (on CPU here; deterministic algorithms on CUDA)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(repo)}
    cmd = [sys.executable, "-c", _RUN_ONE]
    for name in ("alone", "a", "b"):  # the same file names (torch.save writes the name into the archive)
        (tmp_path / name).mkdir()
    subprocess.run([*cmd, str(tmp_path / "alone" / "run")], check=True, env=env, cwd=tmp_path)
    both = [subprocess.Popen([*cmd, str(tmp_path / name / "run")], env=env, cwd=tmp_path) for name in ("a", "b")]
    assert [p.wait() for p in both] == [0, 0]
    alone = [(tmp_path / "alone" / f"run{ext}").read_bytes() for ext in (".pt", ".npz")]
    for name in ("a", "b"):
        assert [(tmp_path / name / f"run{ext}").read_bytes() for ext in (".pt", ".npz")] == alone

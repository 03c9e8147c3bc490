"""Lockstep training (lpntk.lockstep) against K separate runs of lpntk.train.train_model, the independent reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lpntk.data import Split, normalize, to_unit
from lpntk.lockstep import train_lockstep
from lpntk.models import build_model
from lpntk.train import Recipe, seed_everything, train_model

SEEDS = (3, 5, 11)


class Float64(nn.Module):
    """A model computing in float64 (inputs cast), so that agreement can be checked to a tight tolerance."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner.double()

    def forward(self, x):
        return self.inner(x.double())


def _make(digits):
    return lambda: Float64(build_model("small_cnn", digits.info.input_shape, 10, width=0.5, hidden=16))


RECIPE = Recipe(
    epochs=3,
    batch_size=24,  # 100 samples: a short last batch in every epoch
    lr=0.05,
    momentum=0.9,
    weight_decay=5e-4,
    nesterov=True,
    schedule="step",
    step_size=1,
    gamma=0.7,
    crop_padding=1,
    horizontal_flip=True,
    score_epochs=(0, 2),
)


def _separate(digits, train, recipe, seed, **kw):
    seed_everything(seed)
    model = _make(digits)()
    return train_model(
        model, train, recipe, seed, mean=digits.info.mean, std=digits.info.std, val=digits.val, test=digits.test,
        device="cpu", **kw,
    )  # fmt: skip


def _assert_same(a, b):
    assert list(a.best_state) == list(b.best_state)
    for state in ("best_state", "last_state"):
        for name in getattr(a, state):
            torch.testing.assert_close(getattr(a, state)[name], getattr(b, state)[name], rtol=1e-9, atol=1e-11)
    for key in ("correct", "forgetting_events", "forgetting_count", "first_learned", "never_learned", "batch_order"):
        np.testing.assert_array_equal(a.dynamics[key], b.dynamics[key], err_msg=key)
    for key in ("index", "y", "score_epochs", "lr"):
        np.testing.assert_array_equal(a.dynamics[key], b.dynamics[key], err_msg=key)
    for key in ("loss", "l2", "el2n", "grand"):  # float64 computation, stored as float32
        np.testing.assert_allclose(a.dynamics[key], b.dynamics[key], rtol=1e-6, atol=1e-7, err_msg=key)
    assert a.summary["best_epoch"] == b.summary["best_epoch"]
    for ra, rb in zip(a.history, b.history, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            if k != "seconds":
                assert ra[k] == pytest.approx(rb[k], rel=1e-6), k


def test_lockstep_seeds_reproduce_separate_runs_with_their_dynamics(digits):
    train = digits.train.subset(range(100))
    rows = []
    together = train_lockstep(
        _make(digits), train, RECIPE, SEEDS, mean=digits.info.mean, std=digits.info.std, val=digits.val,
        test=digits.test, device="cpu", on_epoch=lambda seed, row: rows.append((seed, row["epoch"])),
    )  # fmt: skip
    assert rows == [(s, e) for e in (1, 2, 3) for s in SEEDS]
    assert [r.summary["seed"] for r in together] == list(SEEDS)
    for seed, lock in zip(SEEDS, together, strict=True):
        _assert_same(lock, _separate(digits, train, RECIPE, seed))
    # the seeds really differ (a bug feeding one seed's batches to all would pass the shape checks)
    assert not np.array_equal(together[0].dynamics["batch_order"], together[1].dynamics["batch_order"])
    assert not torch.equal(together[0].last_state["inner.fc2.weight"], together[1].last_state["inner.fc2.weight"])


def test_lockstep_with_one_training_split_per_run_and_probe_logits_reproduces_separate_runs(digits):
    """Per-run splits (a repeated seed on other data, as the quad-tree nodes of one size) and the probe: each run
    equals train_model on its own split, and its probe logits equal an eval-mode forward pass of that separate run's
    model after every epoch (recorded here by train_model's on_epoch hook, not by lockstep code)."""
    from dataclasses import replace

    recipe = replace(RECIPE, crop_padding=0, horizontal_flip=False, score_epochs=(1,))
    trains = [digits.train.subset(range(0, 50)), digits.train.subset(range(50, 100)), digits.train.subset(range(7, 57))]
    seeds = [3, 3, 5]
    probe = normalize(to_unit(digits.val.x[:6]), digits.info.mean, digits.info.std)
    together = train_lockstep(
        _make(digits), trains, recipe, seeds, mean=digits.info.mean, std=digits.info.std, val=digits.val,
        test=digits.test, device="cpu", probe=probe,
    )  # fmt: skip
    for seed, train, lock in zip(seeds, trains, together, strict=True):
        seed_everything(seed)
        model = _make(digits)()
        probes = []

        def on_epoch(row, model=model, probes=probes):
            model.eval()
            with torch.no_grad():
                probes.append(model(probe).float().numpy())
            model.train()

        alone = train_model(
            model, train, recipe, seed, mean=digits.info.mean, std=digits.info.std, val=digits.val, test=digits.test,
            device="cpu", on_epoch=on_epoch,
        )  # fmt: skip
        _assert_same(lock, alone)
        np.testing.assert_allclose(lock.dynamics["probe_logits"], np.stack(probes), rtol=1e-6, atol=1e-6)
    # the same seed on other data is another run
    assert not np.array_equal(together[0].dynamics["index"], together[1].dynamics["index"])
    assert not torch.equal(together[0].last_state["inner.fc2.weight"], together[1].last_state["inner.fc2.weight"])


def test_train_model_and_train_lockstep_record_through_one_loop(digits):
    """train_model is the training loop with one run and train_lockstep the same loop with K (lpntk.train.train_loop,
    lpntk.train.Dynamics): in float32 their records have the same keys, dtypes and shapes, agree exactly for one seed
    wherever the numbers do not depend on summation order (positions, labels, batch order, learning rates, score
    epochs), each run's history row takes its train metrics from its own record, and without recording both keep the
    learning rates and nothing per sample."""
    from dataclasses import replace

    make = lambda: build_model("small_cnn", digits.info.input_shape, 10, width=0.5, hidden=16)  # noqa: E731
    train, kw = digits.train.subset(range(100)), {"mean": digits.info.mean, "std": digits.info.std, "device": "cpu"}
    for record in (True, False):
        recipe = replace(RECIPE, epochs=2) if record else replace(RECIPE, epochs=2, score_epochs=())
        seed_everything(SEEDS[1])
        alone = train_model(make(), train, recipe, SEEDS[1], val=digits.val, record=record, **kw)
        lock = train_lockstep(make, train, recipe, SEEDS[:2], val=digits.val, record=record, **kw)[1]
        assert lock.dynamics.keys() == alone.dynamics.keys()
        for key, value in alone.dynamics.items():
            assert (lock.dynamics[key].dtype, lock.dynamics[key].shape) == (value.dtype, value.shape), key
        for key in ("index", "y", "batch_order", "lr", "score_epochs"):
            np.testing.assert_array_equal(lock.dynamics[key], alone.dynamics[key], err_msg=key)
        assert [list(r) for r in lock.history] == [list(r) for r in alone.history]
        for run in (alone, lock):
            for e, row in enumerate(run.history):
                if record:
                    assert row["train_loss"] == float(torch.from_numpy(run.dynamics["loss"])[:, e].mean())
                    assert row["train_acc"] == float(torch.from_numpy(run.dynamics["correct"])[:, e].float().mean())
                else:
                    assert np.isnan(row["train_loss"]) and np.isnan(row["train_acc"])
            assert run.dynamics["correct"].any() == record and (run.dynamics["loss"] != 0).any() == record


def test_lockstep_rejects_per_run_splits_of_different_lengths_or_count(digits):
    kw = {"mean": digits.info.mean, "std": digits.info.std, "device": "cpu"}
    recipe = Recipe(epochs=1, select="last")
    a, b = digits.train.subset(range(20)), digits.train.subset(range(20, 41))
    with pytest.raises(ValueError, match="one length"):
        train_lockstep(_make(digits), [a, b], recipe, [1, 2], **kw)
    with pytest.raises(ValueError, match="one per seed"):
        train_lockstep(_make(digits), [a, a], recipe, [1, 2, 3], **kw)


def test_lockstep_resumes_after_a_kill_with_identical_results(digits, tmp_path):
    from dataclasses import replace

    trains = [digits.train.subset(range(60)), digits.train.subset(range(60, 120))]
    recipe = replace(RECIPE, epochs=4, resume_every=2, score_epochs=(), crop_padding=0, horizontal_flip=False)
    path = tmp_path / "resume.pt"
    probe = normalize(to_unit(digits.val.x[:4]), digits.info.mean, digits.info.std)

    def run(on_epoch=None):
        return train_lockstep(
            _make(digits), trains, recipe, SEEDS[:2], mean=digits.info.mean, std=digits.info.std, val=digits.val,
            device="cpu", resume_path=path, on_epoch=on_epoch, probe=probe,
        )  # fmt: skip

    full = run()
    assert not path.exists()

    def crash(seed, row):
        if row["epoch"] == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        run(crash)
    assert path.exists()
    resumed = run()
    for a, b in zip(full, resumed, strict=True):
        for name in a.last_state:
            assert torch.equal(a.last_state[name], b.last_state[name])
        assert set(a.dynamics) == set(b.dynamics) and "probe_logits" in a.dynamics
        for key in a.dynamics:
            np.testing.assert_array_equal(a.dynamics[key], b.dynamics[key])


def test_lockstep_rejects_models_with_buffers_and_repeated_seeds(digits):
    train = digits.train.subset(range(20))
    kw = {"mean": digits.info.mean, "std": digits.info.std, "device": "cpu"}
    recipe = Recipe(epochs=1, select="last")
    with_bn = lambda: nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64), nn.Linear(64, 10))  # noqa: E731
    with pytest.raises(ValueError, match="buffers"):
        train_lockstep(with_bn, train, recipe, [1, 2], **kw)
    with pytest.raises(ValueError, match="distinct"):
        train_lockstep(_make(digits), train, recipe, [1, 1], **kw)


def test_retraining_with_the_lockstep_switch_gives_the_separate_runs_accuracies(
    digits, tmp_path, repo, schema_path, monkeypatch
):
    """pruning.retrain.lockstep: the retrain stage trains the seeds of a subset together (a shared subset, or per-seed
    draws of one size); without dropout the accuracies and histories are those of separate runs. The switch needs
    batch_seeds (a job with several seeds)."""
    import copy

    from lpntk.config import ConfigError, dataset_config, load_config, validate_config
    from lpntk.data import save_prepared
    from lpntk.io import load_json, save_npz
    from lpntk.stages.retrain_stage import retrain_stage

    full = load_config(repo / ".test" / "config" / "config.yaml", schema_path)
    cfg = dataset_config(full, "tiny")
    cfg["pruning"].update({"methods": ["random"], "keep": [0.5], "curve_keep": [], "draws": "shared"})
    cfg["pruning"]["small_clusters"]["enabled"] = False
    cfg["pruning"]["retrain"].update({"epochs": 2, "seeds": [3, 4], "group_by": "subset"})
    save_prepared(digits, tmp_path / "data")
    chosen = np.sort(np.random.default_rng(1).choice(digits.train.index.numpy(), size=48, replace=False))
    for seed in (3, 4):  # one subsets file per seed; a shared draw: the same subset in each
        save_npz(tmp_path / f"subsets{seed}.npz", **{"full": digits.train.index.numpy(), "random-k0.5": chosen})
    args = {"dataset": "digits", "unit": "random-k0.5", "shard": "all", "data": tmp_path / "data",
            "subsets": [tmp_path / f"subsets{s}.npz" for s in (3, 4)], "threads": 1,
            "mlflow_cfg": {"enabled": False}}  # fmt: skip
    calls = []
    import lpntk.stages.retrain_stage as retrain_module

    real = retrain_module.train_lockstep
    monkeypatch.setattr(
        retrain_module,
        "train_lockstep",
        lambda make, trains, *a, **kw: (calls.append(trains), real(make, trains, *a, **kw))[1],
    )
    apart = retrain_stage(**args, cfg=cfg, output=tmp_path / "apart.json")
    together_cfg = copy.deepcopy(cfg)
    together_cfg["pruning"]["retrain"]["lockstep"] = True
    together = retrain_stage(**args, cfg=together_cfg, output=tmp_path / "together.json")
    assert not (tmp_path / ".together.progress").exists()
    a, b = apart["subsets"][0]["runs"], together["subsets"][0]["runs"]
    assert [r["seed"] for r in b] == [3, 4]
    for ra, rb in zip(a, b, strict=True):
        for key in ("test_acc_best_val", "test_acc_last", "best_epoch"):
            assert ra[key] == pytest.approx(rb[key], abs=1e-6), key
        for ha, hb in zip(ra["history"], rb["history"], strict=True):
            assert ha.keys() == hb.keys() and ha["test_acc"] == pytest.approx(hb["test_acc"], abs=1e-6)
    assert load_json(tmp_path / "together.json")["subsets"][0]["runs"][1]["seed"] == 4

    # per-seed draws of one size: each seed trains on its own subset, together; a third seed whose draw has
    # another size trains apart. Each run's accuracies are those of its separate run.
    other = np.sort(np.random.default_rng(2).choice(digits.train.index.numpy(), size=48, replace=False))
    third = np.sort(np.random.default_rng(3).choice(digits.train.index.numpy(), size=47, replace=False))
    for seed, kept in ((3, chosen), (4, other), (5, third)):
        save_npz(tmp_path / f"per_seed{seed}.npz", **{"full": digits.train.index.numpy(), "random-k0.5": kept})
    per_seed = {**args, "subsets": [tmp_path / f"per_seed{s}.npz" for s in (3, 4, 5)]}
    for c in (cfg, together_cfg):
        c["pruning"]["draws"] = "per_seed"
        c["pruning"]["retrain"]["seeds"] = [3, 4, 5]
    apart2 = retrain_stage(**per_seed, cfg=cfg, output=tmp_path / "apart2.json")
    together2 = retrain_stage(**per_seed, cfg=together_cfg, output=tmp_path / "together2.json")
    assert len(calls) == 2 and isinstance(calls[0], Split)  # the shared subset above: one split for both seeds
    assert [len(t) for t in calls[1]] == [48, 48]  # seeds 3 and 4 together, each its own draw; seed 5 alone
    assert sorted(calls[1][1].index.tolist()) == other.tolist()
    r_apart, r_together = apart2["subsets"][0]["runs"], together2["subsets"][0]["runs"]
    assert [r["index_sha256"] for r in r_together] == [r["index_sha256"] for r in r_apart]
    assert len({r["index_sha256"] for r in r_together}) == 3 and [r["n_train"] for r in r_together] == [48, 48, 47]
    for ra, rb in zip(r_apart, r_together, strict=True):
        for key in ("test_acc_best_val", "test_acc_last", "best_epoch"):
            assert ra[key] == pytest.approx(rb[key], abs=1e-6), key
        for ha, hb in zip(ra["history"], rb["history"], strict=True):
            assert ha.keys() == hb.keys() and ha["test_acc"] == pytest.approx(hb["test_acc"], abs=1e-6)

    bad = copy.deepcopy(full)
    bad["datasets"]["tiny"]["pruning"]["retrain"].update({"lockstep": True, "batch_seeds": False})
    with pytest.raises(ConfigError, match="pruning.retrain.lockstep"):
        validate_config(bad, schema_path)

"""The retrain stage trains on exactly the subset, and a killed retraining job resumes where it stopped."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest


def test_retraining_uses_exactly_the_subset(tmp_path, digits, tiny_cfg, monkeypatch):
    import lpntk.stages.retrain_stage as retrain_module
    from lpntk.data import save_prepared
    from lpntk.io import save_npz
    from lpntk.stages.retrain_stage import retrain_stage

    save_prepared(digits, tmp_path / "data")
    rng = np.random.default_rng(1)
    chosen = np.sort(rng.choice(digits.train.index.numpy(), size=40, replace=False))
    cfg = copy.deepcopy(tiny_cfg)
    cfg["pruning"].update({"methods": ["lpntk"], "keep": [0.5], "curve_keep": []})
    cfg["pruning"]["small_clusters"]["enabled"] = False
    cfg["pruning"]["retrain"].update({"epochs": 1, "seeds": [3, 4], "group_by": "subset"})
    other = np.sort(rng.choice(digits.train.index.numpy(), size=40, replace=False))
    files = []  # one subsets file per seed, each from its own training run: seed 4's lpNTK subset is another
    for seed, kept in ((3, chosen), (4, other)):
        files.append(tmp_path / f"subsets{seed}.npz")
        save_npz(files[-1], **{"full": digits.train.index.numpy(), "lpntk-k0.5": kept})
    seen = []
    real = retrain_module.train_model

    def spy(model, train, recipe, seed, **kw):
        seen.append((seed, train.index.numpy().copy(), recipe.epochs, len(kw["val"]), len(kw["test"])))
        return real(model, train, recipe, seed, **kw)

    monkeypatch.setattr(retrain_module, "train_model", spy)
    out = tmp_path / "res.json"
    retrain_stage(
        dataset="digits",
        cfg=cfg,
        unit="lpntk-k0.5",
        shard="all",
        data=tmp_path / "data",
        subsets=files,
        output=out,
        threads=1,
        mlflow_cfg={"enabled": False},
    )
    assert [s[0] for s in seen] == [3, 4]
    for (_, idx, epochs, n_val, n_test), kept in zip(seen, (chosen, other), strict=True):
        assert np.array_equal(np.sort(idx), kept) and epochs == 1
        assert (n_val, n_test) == (len(digits.val), len(digits.test))
    res = json.loads(out.read_text())
    rec = res["subsets"][0]
    assert rec["n_train"] == 40 and rec["method"] == "lpntk" and [r["seed"] for r in rec["runs"]] == [3, 4]
    for r in rec["runs"]:
        assert 0 <= r["test_acc_best_val"] <= r["test_acc_max"] <= 1 and r["best_epoch"] == 1
    with pytest.raises(ValueError, match="not in the config's plan"):
        retrain_stage(
            dataset="digits",
            cfg=cfg,
            unit="el2n-k0.3",
            shard="all",
            data=tmp_path / "data",
            subsets=files,
            output=out,
            threads=1,
            mlflow_cfg={"enabled": False},
        )
    with pytest.raises(ValueError, match=r"one subsets file per seed of shard 'all' \(\[3, 4\]\)"):
        retrain_stage(
            dataset="digits",
            cfg=cfg,
            unit="lpntk-k0.5",
            shard="all",
            data=tmp_path / "data",
            subsets=files[:1],
            output=out,
            threads=1,
            mlflow_cfg={"enabled": False},
        )


def test_killed_retraining_job_resumes_where_it_stopped(tmp_path, digits, tiny_cfg, monkeypatch):
    """A job killed after its first (subset, seed) run and rerun trains only what is missing, and writes the same
    bytes as a job that was never interrupted; the progress folder goes when the job completes."""
    import lpntk.stages.retrain_stage as retrain_module
    from lpntk.data import save_prepared
    from lpntk.io import save_npz
    from lpntk.stages.retrain_stage import retrain_stage

    save_prepared(digits, tmp_path / "data")
    cfg = copy.deepcopy(tiny_cfg)
    cfg["pruning"].update({"methods": ["lpntk"], "keep": [0.5], "curve_keep": []})
    cfg["pruning"]["small_clusters"]["enabled"] = False
    cfg["pruning"]["retrain"].update({"epochs": 2, "seeds": [3, 4], "group_by": "subset"})
    chosen = np.sort(np.random.default_rng(2).choice(digits.train.index.numpy(), size=40, replace=False))
    for seed in (3, 4):  # the seeds' own subsets (here the same)
        save_npz(tmp_path / f"subsets{seed}.npz", **{"full": digits.train.index.numpy(), "lpntk-k0.5": chosen})
    args = {
        "dataset": "digits",
        "cfg": cfg,
        "unit": "lpntk-k0.5",
        "shard": "all",
        "data": tmp_path / "data",
        "subsets": [tmp_path / "subsets3.npz", tmp_path / "subsets4.npz"],
        "threads": 1,
        "mlflow_cfg": {"enabled": False},
    }
    retrain_stage(**args, output=tmp_path / "clean" / "res.json")

    real, seen = retrain_module.train_model, []

    def killed_at_seed4(model, train, recipe, seed, **kw):
        seen.append(seed)
        if seed == 4:
            raise KeyboardInterrupt("killed")
        return real(model, train, recipe, seed, **kw)

    monkeypatch.setattr(retrain_module, "train_model", killed_at_seed4)
    out = tmp_path / "run" / "res.json"
    with pytest.raises(KeyboardInterrupt):
        retrain_stage(**args, output=out)
    assert not out.exists() and (tmp_path / "run" / ".res.progress" / "lpntk-k0.5-seed3.json").is_file()
    seen.clear()
    monkeypatch.setattr(retrain_module, "train_model", lambda *a, **k: (seen.append(a[3]), real(*a, **k))[1])
    retrain_stage(**args, output=out)
    assert seen == [4]  # seed 3 was not trained again
    assert out.read_bytes() == (tmp_path / "clean" / "res.json").read_bytes()
    assert not (tmp_path / "run" / ".res.progress").exists()

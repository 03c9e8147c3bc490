"""The difficulty and ld_size stages on a small case (prepared digits, a briefly trained small CNN, its kernels): the
sets, curves and table, both rankings and the label-matched control, the official swap and the class pool, learning
difficulty vs dataset size, and both stages in the workflow."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from difficulty_setup import OFF, _dcfg, _outputs, small_trained_setup

from lpntk.difficulty import (
    choose_target,
    learning_difficulty,
    rank_others,
    select_sets,
    target_similarity,
)
from lpntk.grams import load_class_grams


@pytest.fixture(scope="module")
def small_setup(tmp_path_factory):
    """Prepared digits (20 per class), a briefly trained small CNN as reference, its per-class kernel files."""
    return small_trained_setup(tmp_path_factory)


def test_difficulty_stage_sets_curves_table(small_setup, tmp_path):
    from lpntk.io import load_json, load_npz
    from lpntk.stages.difficulty_stage import DIFFICULTY_OUTPUTS, difficulty_stage

    root, prep, cfg, kernels = small_setup
    cfg = {**cfg, "difficulty": _dcfg()}
    out = _outputs(tmp_path, DIFFICULTY_OUTPUTS)
    summary = difficulty_stage(
        dataset="digits",
        cfg=cfg,
        kernels=kernels,
        data=root / "data",
        reference=root / "model.pt",
        outputs=out,
        threads=1,
        mlflow_cfg=OFF,
    )
    sets = pd.read_csv(out["sets"])
    names = [a["set"] for a in summary["arms"]]
    assert names[:3] == ["easy", "median", "hard"] and {a["ranking"] for a in summary["arms"]} == {"lpntk"}
    grams = load_class_grams(kernels)
    for c in range(10):
        k = grams[c]
        t = int(np.argmax(np.diag(k.gram)))
        ranked = k.position[rank_others(k.gram[t].astype(np.float64), t)]
        for s, expect in (
            ("easy", ranked[:3]),
            ("hard", ranked[-3:]),
            ("median", ranked[(len(ranked) - 3) // 2 :][:3]),
        ):
            rows = sets[(sets["set"] == s) & (sets["class"] == c)]
            assert rows.iloc[0]["role"] == "target" and rows.iloc[0]["position"] == k.position[t]
            np.testing.assert_array_equal(rows[rows["role"] == "added"]["position"], expect)
            # original indices kept
            positions = rows["position"].to_numpy().copy()
            np.testing.assert_array_equal(rows["index"], prep.train.index[positions].numpy())
    # this reference model gives every target >= 8 samples of other classes with negative lpNTK (none in its own
    # class): the contradictory set (pool "all") is built from the most negative ones
    assert names == ["easy", "median", "hard", "contradictory"] and min(summary["contradictory_candidates"]) >= 3
    added = sets[(sets["set"] == "contradictory") & (sets["role"] == "added")]
    assert (added["kappa_to_target"] < 0).all() and len(added) == 30 and added["position"].is_unique
    from lpntk.data import normalize, to_unit
    from lpntk.kernel import lpntk_gram
    from lpntk.stages.torch_setup import load_reference_model

    model = load_reference_model(cfg, prep.info, root / "model.pt")
    x = normalize(to_unit(prep.train.x), prep.info.mean, prep.info.std)
    full = lpntk_gram(model.double(), x.double(), prep.train.y, 10).detach().numpy()
    first = added[added["class"] == 0]
    t0 = int(sets[(sets["set"] == "contradictory") & (sets["class"] == 0)].iloc[0]["position"])
    np.testing.assert_allclose(first["kappa_to_target"], full[t0, first["position"]], rtol=1e-6)
    targets = set(sets[sets["role"] == "target"]["position"])
    expect = [int(j) for j in np.argsort(full[t0]) if int(j) not in targets][:3]  # class 0 is served first
    assert list(first["position"]) == expect
    curves = load_npz(out["curves"])
    assert curves["l2"].shape == (len(names), 2, 10, 3)
    np.testing.assert_array_equal(curves["l2"], curves["l2_train"])
    auc = pd.read_csv(out["auc"])
    assert list(auc["set"]) == names
    area = curves["l2"].astype(np.float64).mean(axis=2).sum(axis=2)  # (S, R)
    np.testing.assert_allclose(auc["auc_train_mean"], area.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(auc["auc_train_std"], area.std(axis=1, ddof=1), rtol=1e-5, atol=1e-9)
    assert (auc.loc[:2, "label_purity"] == 1.0).all() and (auc["n_train"] == 40).all()
    assert auc.loc[3, "label_purity"] < 1.0
    assert summary["metrics"]["ld_auc_lpntk_easy"] == pytest.approx(area[0].mean())
    assert summary["auc_per_run"]["lpntk/easy"] == pytest.approx(area[0].tolist())
    assert load_json(out["summary"])["seeds"] == [1, 2]
    assert (tmp_path / "figure.png").stat().st_size > 1000


def test_difficulty_stage_both_rankings_and_label_matched_control(small_setup, tmp_path):
    """rank_by [lpntk, cosine]: a full set of arms per ranking, the cosine sets ranked by kappa / (|phi_t| |phi_j|)
    computed here by hand; the control arm carries exactly the contradictory arm's labels, class by class."""
    from lpntk.io import load_npz
    from lpntk.stages.difficulty_stage import DIFFICULTY_OUTPUTS, difficulty_stage

    root, prep, cfg, kernels = small_setup
    cfg = {**cfg, "difficulty": _dcfg(runs=1, epochs=1, rank_by=["lpntk", "cosine"], control=True, control_seed=5)}
    out = _outputs(tmp_path, DIFFICULTY_OUTPUTS)
    summary = difficulty_stage(
        dataset="digits",
        cfg=cfg,
        kernels=kernels,
        data=root / "data",
        reference=root / "model.pt",
        outputs=out,
        threads=1,
        mlflow_cfg=OFF,
    )
    arms = [(a["ranking"], a["set"]) for a in summary["arms"]]
    sets_order = ["easy", "median", "hard", "contradictory", "control"]
    assert arms == [("lpntk", s) for s in sets_order] + [("cosine", s) for s in sets_order]
    sets = pd.read_csv(out["sets"])
    added = sets[sets["role"] == "added"]
    labels = prep.train.y.numpy()
    targets = sets[(sets["role"] == "target")].groupby("class")["position"].first()
    for c, g in enumerate(load_class_grams(kernels)):
        k = g.gram.astype(np.float64)
        t = int(np.argmax(np.diag(k)))
        cos = k[t] / np.sqrt(k[t, t] * np.diag(k))  # by hand
        others = [j for j in np.argsort(-cos, kind="stable") if j != t]
        got = added[(added["ranking"] == "cosine") & (added["set"] == "easy") & (added["class"] == c)]["position"]
        np.testing.assert_array_equal(np.sort(got), np.sort(g.position[others[:3]]))
        for ranking in ("lpntk", "cosine"):
            contra = added[(added["ranking"] == ranking) & (added["set"] == "contradictory") & (added["class"] == c)]
            ctrl = added[(added["ranking"] == ranking) & (added["set"] == "control") & (added["class"] == c)]
            assert sorted(labels[contra["position"]]) == sorted(labels[ctrl["position"]])
            assert not set(ctrl["position"]) & set(targets)
    for ranking in ("lpntk", "cosine"):
        ctrl = added[(added["ranking"] == ranking) & (added["set"] == "control")]
        assert ctrl["position"].is_unique and len(ctrl) == 30
    auc = pd.read_csv(out["auc"]).set_index(["ranking", "set"])
    for ranking in ("lpntk", "cosine"):
        assert auc.loc[(ranking, "control"), "label_purity"] == auc.loc[(ranking, "contradictory"), "label_purity"] < 1
        assert auc.loc[(ranking, "easy"), "label_purity"] == 1.0
    curves = load_npz(out["curves"])
    assert curves["l2"].shape[0] == 10 and list(curves["rankings"]) == [a[0] for a in arms]
    assert set(summary["label_purity"]) == {f"{r}/{s}" for r, s in arms}


def test_difficulty_stage_official_swap_and_class_pool(small_setup, tmp_path):
    from lpntk.stages.difficulty_stage import DIFFICULTY_OUTPUTS, difficulty_stage

    root, prep, cfg, kernels = small_setup
    base = {**cfg, "difficulty": _dcfg(runs=1, epochs=1, contradictory="none")}
    swap = {**cfg, "difficulty": _dcfg(runs=1, epochs=1, contradictory="class", official_swap=True, target="max_mean")}
    a = difficulty_stage(
        dataset="digits",
        cfg=base,
        kernels=kernels,
        data=root / "data",
        reference=root / "model.pt",
        outputs=_outputs(tmp_path / "a", DIFFICULTY_OUTPUTS),
        threads=1,
        mlflow_cfg=OFF,
    )
    b = difficulty_stage(
        dataset="digits",
        cfg=swap,
        kernels=kernels,
        data=root / "data",
        reference=root / "model.pt",
        outputs=_outputs(tmp_path / "b", DIFFICULTY_OUTPUTS),
        threads=1,
        mlflow_cfg=OFF,
    )
    assert [x["set"] for x in a["arms"]] == ["easy", "median", "hard"] and a["mapping"] == "intended"
    difficulty_stage(
        dataset="digits",
        cfg=base,
        kernels=kernels,
        data=root / "data",
        reference=root / "model.pt",
        outputs=_outputs(tmp_path / "a2", DIFFICULTY_OUTPUTS),
        threads=1,
        mlflow_cfg=OFF,
    )
    for f in sorted((tmp_path / "a").iterdir()):  # same config -> same bytes, figures and summary included
        assert f.read_bytes() == (tmp_path / "a2" / f.name).read_bytes(), f.name
    assert b["mapping"] == "official_swap" and b["target_rule"] == "max_mean"
    sa, sb = pd.read_csv(tmp_path / "a" / "sets.csv"), pd.read_csv(tmp_path / "b" / "sets.csv")
    grams = load_class_grams(kernels)
    for c in range(10):
        k = grams[c].gram.astype(np.float64)
        t = choose_target(k, "max_mean")
        sel = select_sets(target_similarity(k, t), t, 3)
        rows = sb[(sb["class"] == c) & (sb["role"] == "added")]
        pos = grams[c].position
        np.testing.assert_array_equal(rows[rows["set"] == "median"]["position"], pos[sel["hard"]])
        np.testing.assert_array_equal(rows[rows["set"] == "hard"]["position"], pos[sel["median"]])
    assert set(sa["set"]) == {"easy", "median", "hard"}
    # no target has a same-class sample with negative lpNTK: the class-pool contradictory set is skipped, and says so
    assert [x["set"] for x in b["arms"]] == ["easy", "median", "hard"] and "skipped" in b["contradictory"]
    with pytest.raises(ValueError, match="difficulty.num = 30"):
        difficulty_stage(
            dataset="digits",
            cfg={**cfg, "difficulty": _dcfg(num=30)},
            kernels=kernels,
            data=root / "data",
            reference=root / "model.pt",
            outputs=_outputs(tmp_path / "c", DIFFICULTY_OUTPUTS),
            threads=1,
            mlflow_cfg=OFF,
        )


def test_ld_size_stage(small_setup, tmp_path):
    from lpntk.stages.ld_size_stage import LD_SIZE_OUTPUTS, ld_size_stage

    root, prep, cfg, _ = small_setup
    cfg = {**cfg, "difficulty": _dcfg()}
    out = _outputs(tmp_path, LD_SIZE_OUTPUTS)
    summary = ld_size_stage(dataset="digits", cfg=cfg, data=root / "data", outputs=out, threads=1, mlflow_cfg=OFF)
    ld_size_stage(
        dataset="digits",
        cfg=cfg,
        data=root / "data",
        outputs=_outputs(tmp_path / "again", LD_SIZE_OUTPUTS),
        threads=1,
        mlflow_cfg=OFF,
    )
    for name, path in out.items():
        assert open(path, "rb").read() == (tmp_path / "again" / os.path.basename(path)).read_bytes(), name
    assert summary["sizes"] == [4, 1] and summary["runs"] == 1 + 4
    ld = pd.read_csv(out["ld"])
    assert len(ld) == 40 and (ld.groupby("label").size() == 4).all()
    assert (ld[["ld_size4", "ld_size1"]] > 0).all().all()
    np.testing.assert_array_equal(ld["index"], prep.train.index[ld["position"].to_numpy().copy()].numpy())
    corr = pd.read_csv(out["correlation"])
    pearson = corr[corr["method"] == "pearson"][["size4", "size1"]].to_numpy()
    np.testing.assert_allclose(pearson, np.corrcoef(ld[["ld_size4", "ld_size1"]].to_numpy().T), atol=1e-9)
    assert summary["metrics"]["ld_corr_4_1"] == pytest.approx(pearson[0, 1])
    # size 4: one run on the whole pool, whose LD = sum over epochs of that run's training-pass L2
    from lpntk.stages.difficulty_stage import difficulty_recipe
    from lpntk.stages.torch_setup import build_from_config

    pool = prep.train.subset(ld["position"].to_numpy().copy())
    full = learning_difficulty(
        lambda: build_from_config(cfg, prep.info),
        pool,
        difficulty_recipe(cfg["difficulty"]["size"]),
        1,
        mean=prep.info.mean,
        std=prep.info.std,
    )
    np.testing.assert_allclose(ld["ld_size4"], full, rtol=1e-5)
    with pytest.raises(ValueError, match="pool_per_class = 64"):
        ld_size_stage(
            dataset="digits",
            cfg={**cfg, "difficulty": _dcfg(size={**_dcfg()["size"], "pool_per_class": 64})},
            data=root / "data",
            outputs=_outputs(tmp_path / "x", LD_SIZE_OUTPUTS),
            threads=1,
            mlflow_cfg=OFF,
        )


@pytest.mark.slow
def test_difficulty_and_ld_size_in_workflow(workflow_run):
    from mlflow.tracking import MlflowClient

    workdir, _ = workflow_run
    res = workdir / "results" / "tiny"
    for f in (
        "sets.csv",
        "curves.npz",
        "auc.csv",
        "auc.md",
        "auc_per_class.csv",
        "curves.png",
        "curves.pdf",
        "summary.json",
    ):
        assert (res / "difficulty" / f).is_file(), f
    for f in ("ld.csv", "correlation.csv", "correlation.md", "correlation.png", "correlation.pdf", "summary.json"):
        assert (res / "ld_size" / f).is_file(), f
    curves = np.load(res / "difficulty" / "curves.npz")
    arms = [(str(r), str(s)) for r, s in zip(curves["rankings"], curves["sets"], strict=True)]
    built = "built" in json.loads((res / "difficulty" / "summary.json").read_text())["contradictory"]
    sets = ["easy", "median", "hard"] + (["contradictory", "control"] if built else [])
    assert arms == [("lpntk", s) for s in sets] + [("cosine", s) for s in sets]  # the defaults: both, and control
    assert curves["l2"].shape[1:] == (2, 10, 3)
    ld = pd.read_csv(res / "ld_size" / "ld.csv")
    assert len(ld) == 160 and {"ld_size16", "ld_size4"} <= set(ld.columns)
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lpntk-tiny")
    runs = client.search_runs([exp.experiment_id], "tags.`lpntk.rule` = 'difficulty'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    auc = pd.read_csv(res / "difficulty" / "auc.csv").set_index(["ranking", "set"])
    for i, (r, s) in enumerate(arms):
        # per run: the targets' mean L2 error summed over the epochs (unit width); the metric is its mean over runs
        per_run = curves["l2"][i].astype(np.float64).mean(axis=1).sum(axis=-1)
        assert per_run.shape == (2,) and (per_run > 0).all()
        assert runs[0].data.metrics[f"ld_auc_{r}_{s}"] == pytest.approx(per_run.mean(), rel=1e-6), (r, s)
        assert auc.loc[(r, s), "auc_train_mean"] == pytest.approx(per_run.mean(), rel=1e-6), (r, s)
    runs = client.search_runs([exp.experiment_id], "tags.`lpntk.rule` = 'ld_size'")
    assert len(runs) == 1
    # Pearson correlation of every sample's LD between the two sizes, recomputed from the saved table
    r = np.corrcoef(ld["ld_size16"].to_numpy(), ld["ld_size4"].to_numpy())[0, 1]
    assert runs[0].data.metrics["ld_corr_16_4"] == pytest.approx(r, abs=1e-6)
    assert (ld[["ld_size16", "ld_size4"]] > 0).all().all()

"""Learning-difficulty control and learning difficulty vs dataset size: target and set selection on hand-made
Grams, the L2 recording against a hand-written training loop, the stages on a small case and in the workflow."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import small_kernel_setup

import lpntk.lockstep
import lpntk.train
from lpntk.data import Split
from lpntk.difficulty import (
    choose_target,
    contradictory_sets,
    curve_area,
    learning_difficulty,
    official_swap,
    pearson_matrix,
    quad_tree_subsets,
    rank_others,
    select_sets,
    size_levels,
    target_l2_curves,
    target_similarity,
    training_set_positions,
)
from lpntk.grams import load_class_grams
from lpntk.train import Recipe

OFF = {"enabled": False}


def _hand_gram():
    # 8 samples; sample 2 has the largest self-lpNTK, sample 5 the largest mean lpNTK to the others
    g = np.array(
        [
            [4.0, 1.0, 3.0, 1.0, 1.0, 2.0, 0.5, 1.0],
            [1.0, 2.0, 0.2, 0.5, 0.7, 1.9, 0.1, 0.3],
            [3.0, 0.2, 9.0, 2.5, 1.5, 2.6, -0.5, 0.8],
            [1.0, 0.5, 2.5, 3.0, 0.6, 2.0, 0.2, 0.4],
            [1.0, 0.7, 1.5, 0.6, 2.5, 2.2, 0.3, 0.9],
            [2.0, 1.9, 2.6, 2.0, 2.2, 5.0, 1.0, 2.1],
            [0.5, 0.1, -0.5, 0.2, 0.3, 1.0, 1.0, 0.1],
            [1.0, 0.3, 0.8, 0.4, 0.9, 2.1, 0.1, 2.0],
        ]
    )
    assert np.allclose(g, g.T)
    return g


def test_choose_target_rules():
    g = _hand_gram()
    assert choose_target(g, "max_self") == 2
    assert choose_target(g, "max_mean") == 5
    with pytest.raises(ValueError, match="difficulty.target"):
        choose_target(g, "median")


def test_select_sets_on_hand_made_gram():
    g = _hand_gram()
    values = target_similarity(g, 2)  # kappa(2, j): 3.0, 0.2, [9], 2.5, 1.5, 2.6, -0.5, 0.8
    np.testing.assert_array_equal(rank_others(values, 2), [0, 5, 3, 4, 7, 1, 6])
    sets = select_sets(values, 2, 2)
    np.testing.assert_array_equal(sets["easy"], [0, 5])
    np.testing.assert_array_equal(sets["median"], [3, 4])  # 7 others, start (7 - 2) // 2 = 2 -> ranks 2, 3
    np.testing.assert_array_equal(sets["hard"], [1, 6])  # the two lowest, in descending order
    sets3 = select_sets(values, 2, 3)
    np.testing.assert_array_equal(sets3["median"], [3, 4, 7])  # start (7 - 3) // 2 = 2: ranks 2, 3, 4
    # ties: smaller position first
    np.testing.assert_array_equal(rank_others(np.array([1.0, 5.0, 1.0, 1.0]), 1), [0, 2, 3])
    # ranking by cosine changes the order: kappa / (|phi_2| |phi_j|)
    cos = target_similarity(g, 2, "cosine")
    np.testing.assert_allclose(cos, g[2] / np.sqrt(9.0 * np.diag(g)))
    np.testing.assert_array_equal(select_sets(cos, 2, 2)["easy"], rank_others(cos, 2)[:2])
    with pytest.raises(ValueError, match="difficulty.num = 8"):
        select_sets(values, 2, 8)
    # the official swap: "median" holds the least similar, "hard" the median ones
    swapped = official_swap(sets)
    np.testing.assert_array_equal(swapped["median"], sets["hard"])
    np.testing.assert_array_equal(swapped["hard"], sets["median"])
    np.testing.assert_array_equal(swapped["easy"], sets["easy"])


def test_select_sets_median_is_centred():
    values = -np.arange(12, dtype=float)  # target 0; others ranked 1..11 in order
    sets = select_sets(values, 0, 3)
    np.testing.assert_array_equal(sets["easy"], [1, 2, 3])
    np.testing.assert_array_equal(sets["median"], [5, 6, 7])  # the median of 1..11 is 6
    np.testing.assert_array_equal(sets["hard"], [9, 10, 11])


def test_contradictory_sets_most_negative_without_repeats():
    sim = np.array(
        [
            [5.0, -1.0, -3.0, 0.5, -2.0, -0.1],  # target at 0: negatives 2 (-3), 4 (-2), 5 (-0.1); 1 is a target
            [-4.0, 6.0, -0.5, -5.0, -2.5, 1.0],  # target at 1: negatives 3 (-5), 4 (-2.5), 2 (-0.5); 0 is a target
        ]
    )
    chosen, available = contradictory_sets(sim, [0, 1], 2)
    np.testing.assert_array_equal(chosen[0], [2, 4])
    np.testing.assert_array_equal(chosen[1], [3])  # 4 and 2 are taken by target 0
    assert available == [3, 1]
    chosen, available = contradictory_sets(sim, [0, 1], 2, candidates=[np.array([1, 5]), np.array([2, 3, 4])])
    np.testing.assert_array_equal(chosen[0], [5])
    np.testing.assert_array_equal(chosen[1], [3, 4])
    assert available == [1, 3]


def test_training_set_positions():
    pos, where = training_set_positions([10, 20], [np.array([1, 2]), np.array([3])])
    np.testing.assert_array_equal(pos, [10, 1, 2, 20, 3])
    np.testing.assert_array_equal(where, [0, 3])


def test_quad_tree_and_sizes():
    assert size_levels(64) == [64, 16, 4, 1]
    assert size_levels(64, 4) == [64, 16, 4]
    for bad in (48, 2, 8):
        with pytest.raises(ValueError, match="pool_per_class"):
            size_levels(bad)
    with pytest.raises(ValueError, match="min_size"):
        size_levels(16, 64)
    pool = np.random.default_rng(0).permutation(100)[:64]
    for s in (16, 4, 1):
        small, big = quad_tree_subsets(pool, s), quad_tree_subsets(pool, 4 * s)
        assert len(small) == 64 // s and all(len(n) == s for n in small)
        # nested: node k of size s lies in node k // 4 of size 4 s; the nodes of one size partition the pool
        for k, node in enumerate(small):
            assert set(node) <= set(big[k // 4])
        assert sorted(np.concatenate(small).tolist()) == sorted(pool.tolist())
    with pytest.raises(ValueError, match="divide"):
        quad_tree_subsets(pool, 5)


def test_pearson_matrix_matches_numpy():
    v = np.random.default_rng(2).normal(size=(50, 4))
    v[:, 1] += v[:, 0]
    np.testing.assert_allclose(pearson_matrix(v), np.corrcoef(v.T), atol=1e-12)
    const = np.c_[v[:, 0], np.ones(50)]
    assert np.isnan(pearson_matrix(const)[0, 1])


class _TinyMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 6)
        self.fc2 = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def _tiny_split(n=9):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 2, 2, generator=g)
    y = torch.arange(n) % 3
    return Split(x, y, torch.arange(100, 100 + n))


@pytest.mark.parametrize("lockstep", [False, True])
def test_target_l2_curves_match_a_hand_written_loop(lockstep):
    """The recorded training-pass L2 of the targets = a plain full-batch SGD loop from the same initialisation
    (run by run, and with the runs in lockstep)."""
    from lpntk.train import seed_everything

    split = _tiny_split()
    recipe = Recipe(
        epochs=4, batch_size=64, lr=0.3, momentum=0.9, weight_decay=5e-4, schedule="none", shuffle=False, select="last"
    )
    targets = np.array([0, 4])
    out = target_l2_curves(_TinyMLP, split, targets, recipe, [3, 4], mean=[0.5], std=[0.25], lockstep=lockstep)
    assert out["train"].shape == (2, 2, 4) and out["eval"].shape == (2, 2, 4)
    for r, seed in enumerate((3, 4)):
        seed_everything(seed)
        model = _TinyMLP()
        opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, weight_decay=5e-4)
        x = (split.x - 0.5) / 0.25
        for e in range(4):
            z = model(x)
            p = torch.softmax(z.detach(), 1)
            onehot = torch.nn.functional.one_hot(split.y, 3).float()
            l2 = (p - onehot).norm(dim=1)[targets].numpy()
            np.testing.assert_allclose(out["train"][r, :, e], l2, rtol=1e-5, atol=1e-6)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(z, split.y).backward()
            opt.step()
            with torch.no_grad():
                p = torch.softmax(model(x), 1)
            np.testing.assert_allclose(
                out["eval"][r, :, e], (p - onehot).norm(dim=1)[targets].numpy(), rtol=1e-5, atol=1e-6
            )
    # full batch, no dropout: the training pass of epoch e + 1 sees the weights the eval pass of epoch e saw
    np.testing.assert_allclose(out["train"][:, :, 1:], out["eval"][:, :, :-1], rtol=1e-5, atol=1e-6)
    again = target_l2_curves(_TinyMLP, split, targets, recipe, [3, 4], mean=[0.5], std=[0.25], lockstep=lockstep)
    np.testing.assert_array_equal(again["train"], out["train"])


def test_learning_difficulty_is_the_sum_of_the_training_pass_l2():
    from lpntk.train import seed_everything, train_model

    split = _tiny_split(6)
    recipe = Recipe(epochs=3, batch_size=4, lr=0.1, schedule="none", shuffle=True, select="last")
    ld = learning_difficulty(_TinyMLP, split, recipe, 7, mean=[0.5], std=[0.25])
    seed_everything(7)
    res = train_model(_TinyMLP(), split, recipe, 7, mean=[0.5], std=[0.25], device="cpu")
    np.testing.assert_allclose(ld, res.dynamics["l2"].sum(axis=1), rtol=1e-6)
    # several splits of one length: one run each from the same seed, together; row k = split k's LD
    other = Split(split.x.flip(0), split.y.flip(0), split.index.flip(0))
    both = learning_difficulty(_TinyMLP, [split, other], recipe, 7, mean=[0.5], std=[0.25])
    assert both.shape == (2, 6)
    np.testing.assert_allclose(both[0], ld, rtol=1e-5, atol=1e-6)
    seed_everything(7)
    res = train_model(_TinyMLP(), other, recipe, 7, mean=[0.5], std=[0.25], device="cpu")
    np.testing.assert_allclose(both[1], res.dynamics["l2"].sum(axis=1), rtol=1e-5, atol=1e-6)
    assert curve_area(np.ones((2, 5))).tolist() == [5.0, 5.0]


# ---------------------------------------------------------------------------------------------------- stages


@pytest.fixture(scope="module")
def small_setup(tmp_path_factory):
    """Prepared digits (20 per class), a briefly trained small CNN as reference, its per-class kernel files."""
    root = tmp_path_factory.mktemp("ld")
    prep, _, cfg, kernels = small_kernel_setup(root, train_epochs=5)
    return root, prep, cfg, kernels


def _dcfg(**kw):
    d = {
        "enabled": True,
        "target": "max_self",
        "random_targets": 0,
        "target_seed": 0,
        "rank_by": ["lpntk"],
        "num": 3,
        "runs": 2,
        "seed_offset": 0,
        "epochs": 3,
        "batch_size": 128,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": {"name": "none", "step_size": 2, "gamma": 0.7, "t_max": None},
        "shuffle": False,
        "l2_pass": "train",
        "official_swap": False,
        "contradictory": "all",
        "control": False,
        "control_seed": 0,
        "lockstep": False,  # the run-by-run path, whose runs these tests count; lockstep: the tests at the end
        "lockstep_max_runs": 64,
        "size": {
            "enabled": True,
            "pool_per_class": 4,
            "min_size": 1,
            "partition_seed": 0,
            "seed": 1,
            "epochs": 2,
            "batch_size": 128,
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "schedule": {"name": "step", "step_size": 2, "gamma": 0.7, "t_max": None},
            "shuffle": True,
            "resume_every": 0,
        },
    }
    d.update(kw)
    return d


def _outputs(root, names):
    ext = {
        "curves": "npz",
        "auc_md": "md",
        "figure": "png",
        "figure_pdf": "pdf",
        "summary": "json",
        "correlation_md": "md",
        "heatmap": "png",
        "heatmap_pdf": "pdf",
    }
    return {k: str(root / f"{k}.{ext.get(k, 'csv')}") for k in names}


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


def test_edge_cases_found_by_mutation_testing():
    """Defaults, boundaries, zero norms and messages (mutants that survived the first mutmut pass,
    docs/mutation-testing.md)."""
    import warnings

    g = _hand_gram()
    assert choose_target(g) == 2  # the default rule is the official max_self
    assert choose_target(np.array([[5.0]])) == 0 and choose_target(np.array([[5.0]]), "max_mean") == 0
    assert choose_target(np.array([[1.0, 0.5], [0.5, 2.0]]), "max_mean") == 0  # two samples: a tie, the first
    for bad in (np.zeros((2, 3)), np.zeros((0, 0)), np.zeros(3)):
        with pytest.raises(ValueError, match=r"^expected a non-empty square Gram, got shape"):
            choose_target(bad)
    with pytest.raises(ValueError, match=r"^difficulty.rank_by must be 'lpntk' or 'cosine', got 'angle'$"):
        target_similarity(g, 2, "angle")
    # sets of one sample, and a class with exactly num samples besides the target
    one = select_sets(np.array([9.0, 2.0, 1.0]), 0, 1)
    assert {k: v.tolist() for k, v in one.items()} == {"easy": [1], "median": [1], "hard": [2]}
    full = select_sets(np.array([9.0, 2.0, 1.0]), 0, 2)
    assert {k: v.tolist() for k, v in full.items()} == {"easy": [1, 2], "median": [1, 2], "hard": [1, 2]}
    with pytest.raises(ValueError, match=r"^difficulty.num must be >= 1, got 0$"):
        select_sets(np.array([9.0, 2.0, 1.0]), 0, 0)
    # cosine with zero and sub-unit norms: 0 where a norm vanishes, the plain ratio elsewhere
    z = np.array([[0.25, 0.1, 0.0], [0.1, 0.16, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(target_similarity(z, 0, "cosine"), [1.0, 0.1 / (0.5 * 0.4), 0.0], rtol=1e-12)
    # contradictory: strictly negative only (a zero similarity is unrelated, not contradictory)
    chosen, available = contradictory_sets(np.array([[0.0, -1.0, 0.0, -2.0]]), [0], 3)
    assert chosen[0].tolist() == [3, 1] and available == [2]
    # one training set: offsets accumulate over classes; the lists must pair up
    pos, where = training_set_positions([5, 9, 2], [np.array([1, 2]), np.array([3]), np.array([4, 6, 7])])
    assert pos.dtype == np.int64 and pos.tolist() == [5, 1, 2, 9, 3, 2, 4, 6, 7] and where.tolist() == [0, 3, 5]
    with pytest.raises(ValueError):
        training_set_positions([5, 9], [np.array([1])])
    # quad-tree sizes are integers; a pool of one size is one level
    assert size_levels(4, 4) == [4] and all(type(s) is int for s in size_levels(64, 1))
    # a constant column gives NaN without warnings; round-off cannot leave [-1, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = pearson_matrix(np.c_[np.arange(5.0), np.ones(5)])
    assert np.isnan(r[0, 1]) and r[0, 0] == pytest.approx(1.0)
    v = np.random.default_rng(0).normal(size=(7, 1)) * 1e8 + 3
    r = pearson_matrix(np.c_[v, 3 * v, -v])
    assert r.max() <= 1.0 and r.min() >= -1.0


def _record_resume_starts(monkeypatch, module) -> list:
    """Patch ``module.load_resume_state`` to record the epoch of every state it loads (None: none loaded)."""
    starts, real = [], module.load_resume_state
    monkeypatch.setattr(
        module, "load_resume_state", lambda *a: (lambda st: (starts.append(st and st["epoch"]), st)[1])(real(*a))
    )
    return starts


def _assert_same_bytes(out, clean):
    for name, path in out.items():
        assert open(path, "rb").read() == open(clean[name], "rb").read(), name


def _count_and_kill(monkeypatch, kill_call: int | None, kill_epoch: int | None = None):
    """Patch the training the difficulty runs use: record each run's seed and start epoch; the ``kill_call``-th run
    (1-based) raises KeyboardInterrupt (a kill) before it starts, or after epoch ``kill_epoch`` if given."""
    import lpntk.difficulty as difficulty_module

    real, calls = difficulty_module.train_model, []

    def patched(model, train, recipe, seed, **kw):
        calls.append(seed)
        if kill_call is not None and len(calls) == kill_call:
            if kill_epoch is None:
                raise KeyboardInterrupt("killed")
            inner = kw.pop("on_epoch", None)

            def on_epoch(row):
                if inner is not None:
                    inner(row)
                if row["epoch"] == kill_epoch:
                    raise KeyboardInterrupt("killed")

            return real(model, train, recipe, seed, on_epoch=on_epoch, **kw)
        return real(model, train, recipe, seed, **kw)

    monkeypatch.setattr(difficulty_module, "train_model", patched)
    return calls


def test_killed_difficulty_job_resumes_where_it_stopped(small_setup, tmp_path, monkeypatch):
    """A difficulty job killed after its first run and rerun trains only the runs that are missing and writes the
    same bytes as a job that was never interrupted; a record of another config is not reused; the progress folder
    goes when the job completes."""
    from lpntk.stages.difficulty_stage import DIFFICULTY_OUTPUTS, difficulty_stage

    root, _, cfg, kernels = small_setup
    cfg = {**cfg, "difficulty": _dcfg(control=False, contradictory="none")}
    args = {"dataset": "digits", "kernels": kernels, "data": root / "data", "reference": root / "model.pt",
            "threads": 1, "mlflow_cfg": OFF}  # fmt: skip
    clean = _outputs(tmp_path / "clean", DIFFICULTY_OUTPUTS)
    calls = _count_and_kill(monkeypatch, None)
    difficulty_stage(**args, cfg=cfg, outputs=clean)
    total = len(calls)  # 3 sets x 2 runs
    assert total == 6

    out = _outputs(tmp_path / "run", DIFFICULTY_OUTPUTS)
    calls = _count_and_kill(monkeypatch, kill_call=2)
    with pytest.raises(KeyboardInterrupt):
        difficulty_stage(**args, cfg=cfg, outputs=out)
    progress = tmp_path / "run" / ".summary.progress"
    assert len(list(progress.glob("*.npz"))) == 1 and not os.path.exists(out["summary"])
    calls = _count_and_kill(monkeypatch, None)
    difficulty_stage(**args, cfg=cfg, outputs=out)
    assert len(calls) == total - 1
    _assert_same_bytes(out, clean)
    assert not progress.exists()

    # killed again, then rerun with more epochs: the record of the 3-epoch run is not reused
    calls = _count_and_kill(monkeypatch, kill_call=2)
    with pytest.raises(KeyboardInterrupt):
        difficulty_stage(**args, cfg=cfg, outputs=out)
    calls = _count_and_kill(monkeypatch, None)
    difficulty_stage(**args, cfg={**cfg, "difficulty": {**cfg["difficulty"], "epochs": 4}}, outputs=out)
    assert len(calls) == total


def test_killed_ld_size_job_resumes_inside_its_run(small_setup, tmp_path, monkeypatch):
    """An ld_size job killed in its second run (after that run saved its state at epoch 1) and rerun loads the first
    run's record, continues the second from its saved epoch, and writes the same bytes as an uninterrupted job."""
    from lpntk.stages.ld_size_stage import LD_SIZE_OUTPUTS, ld_size_stage

    root, _, cfg, _ = small_setup
    dcfg = _dcfg()
    dcfg["size"] = {**dcfg["size"], "resume_every": 1}
    cfg = {**cfg, "difficulty": dcfg}
    args = {"dataset": "digits", "cfg": cfg, "data": root / "data", "threads": 1, "mlflow_cfg": OFF}
    clean = _outputs(tmp_path / "clean", LD_SIZE_OUTPUTS)
    calls = _count_and_kill(monkeypatch, None)
    ld_size_stage(**args, outputs=clean)
    assert len(calls) == 5  # sizes 4 and 1 per class: 1 + 4 runs

    out = _outputs(tmp_path / "run", LD_SIZE_OUTPUTS)
    _count_and_kill(monkeypatch, kill_call=2, kill_epoch=2)  # of 2 epochs: killed before the run returns
    with pytest.raises(KeyboardInterrupt):
        ld_size_stage(**args, outputs=out)
    progress = tmp_path / "run" / ".summary.progress"
    assert sorted(p.name for p in progress.iterdir()) == ["size1-node0.resume.pt", "size4-node0.npz"]
    starts = _record_resume_starts(monkeypatch, lpntk.train)
    calls = _count_and_kill(monkeypatch, None)
    ld_size_stage(**args, outputs=out)
    assert len(calls) == 4 and starts[0] == 1  # the second run continued from epoch 1
    _assert_same_bytes(out, clean)
    assert not progress.exists()


def _count_and_kill_lockstep(monkeypatch, kill_call: int | None, kill_epoch: int | None = None):
    """As :func:`_count_and_kill` for the lockstep path: record each lockstep call's seeds; the ``kill_call``-th
    call raises KeyboardInterrupt after epoch ``kill_epoch``."""
    import lpntk.difficulty as difficulty_module

    real, calls = difficulty_module.train_lockstep, []

    def patched(make_model, train, recipe, seeds, **kw):
        calls.append(list(seeds))
        if kill_call is not None and len(calls) == kill_call:

            def on_epoch(seed, row):
                if row["epoch"] == kill_epoch:
                    raise KeyboardInterrupt("killed")

            return real(make_model, train, recipe, seeds, on_epoch=on_epoch, **kw)
        return real(make_model, train, recipe, seeds, **kw)

    monkeypatch.setattr(difficulty_module, "train_lockstep", patched)
    return calls


def test_lockstep_difficulty_and_ld_size_stages_equal_the_run_by_run_stages(small_setup, tmp_path, monkeypatch):
    """difficulty.lockstep: every company set's seeds train together and every size's quad-tree nodes together
    (at most lockstep_max_runs at a time); the small CNN has no dropout, so every area and LD equals the run-by-run
    stage's up to float32 summation order."""
    from lpntk.stages.difficulty_stage import DIFFICULTY_OUTPUTS, difficulty_stage
    from lpntk.stages.ld_size_stage import LD_SIZE_OUTPUTS, ld_size_stage

    root, _, cfg, kernels = small_setup
    args = {"dataset": "digits", "data": root / "data", "threads": 1, "mlflow_cfg": OFF}
    d_args = {**args, "kernels": kernels, "reference": root / "model.pt"}
    sep_cfg = {**cfg, "difficulty": _dcfg(control=True)}
    lock_cfg = {**cfg, "difficulty": _dcfg(control=True, lockstep=True)}
    sep = difficulty_stage(**d_args, cfg=sep_cfg, outputs=_outputs(tmp_path / "sep", DIFFICULTY_OUTPUTS))
    calls = _count_and_kill_lockstep(monkeypatch, None)
    lock = difficulty_stage(**d_args, cfg=lock_cfg, outputs=_outputs(tmp_path / "lock", DIFFICULTY_OUTPUTS))
    assert calls and all(c == [1, 2] for c in calls)  # each set's two runs in one call
    assert lock["lockstep"] and not sep["lockstep"] and lock["auc_per_run"].keys() == sep["auc_per_run"].keys()
    for arm, areas in sep["auc_per_run"].items():
        np.testing.assert_allclose(lock["auc_per_run"][arm], areas, rtol=1e-4, err_msg=arm)

    ld = {}
    for name, lockstep, max_runs in (("sep", False, 64), ("lock", True, 64), ("chunked", True, 3)):
        c = {**cfg, "difficulty": _dcfg(lockstep=lockstep, lockstep_max_runs=max_runs)}
        calls = _count_and_kill_lockstep(monkeypatch, None)
        out = _outputs(tmp_path / f"ld-{name}", LD_SIZE_OUTPUTS)
        ld_size_stage(**args, cfg=c, outputs=out)
        ld[name] = pd.read_csv(out["ld"])
        # sizes 4 and 1 per class: 1 + 4 runs; in lockstep 1 call, then 4 (or 3 + 1) nodes
        assert [len(x) for x in calls] == {"sep": [], "lock": [1, 4], "chunked": [1, 3, 1]}[name]
    for name in ("lock", "chunked"):
        np.testing.assert_array_equal(ld[name]["position"], ld["sep"]["position"])
        for col in ("ld_size4", "ld_size1"):
            np.testing.assert_allclose(ld[name][col], ld["sep"][col], rtol=1e-4, err_msg=f"{name} {col}")


def test_killed_lockstep_ld_size_job_resumes_inside_its_group(small_setup, tmp_path, monkeypatch):
    """An ld_size job in lockstep killed inside its second group (4 nodes, saved at epoch 1) and rerun loads the
    first group's record, continues the second from its saved epoch and writes the same bytes as an uninterrupted
    job."""
    from lpntk.stages.ld_size_stage import LD_SIZE_OUTPUTS, ld_size_stage

    root, _, cfg, _ = small_setup
    dcfg = _dcfg(lockstep=True)
    dcfg["size"] = {**dcfg["size"], "resume_every": 1}
    args = {"dataset": "digits", "cfg": {**cfg, "difficulty": dcfg}, "data": root / "data", "threads": 1,
            "mlflow_cfg": OFF}  # fmt: skip
    clean = _outputs(tmp_path / "clean", LD_SIZE_OUTPUTS)
    ld_size_stage(**args, outputs=clean)
    out = _outputs(tmp_path / "run", LD_SIZE_OUTPUTS)
    _count_and_kill_lockstep(monkeypatch, kill_call=2, kill_epoch=2)
    with pytest.raises(KeyboardInterrupt):
        ld_size_stage(**args, outputs=out)
    progress = tmp_path / "run" / ".summary.progress"
    assert sorted(p.name for p in progress.iterdir()) == ["size1-nodes0-3.resume.pt", "size4-node0.npz"]
    starts = _record_resume_starts(monkeypatch, lpntk.lockstep)
    calls = _count_and_kill_lockstep(monkeypatch, None)
    ld_size_stage(**args, outputs=out)
    assert calls == [[1, 1, 1, 1]] and starts == [1]  # the 4-node group continued from epoch 1
    _assert_same_bytes(out, clean)
    assert not progress.exists()


# ------------------------------------------------------------------------------------ random target groups (C1)


def _fake_grams(sizes):
    """Class Grams of the given sizes (identity Grams), class c at training positions 100 c, 100 c + 1, ..."""
    from lpntk.grams import ClassGram

    return [
        ClassGram(c, np.eye(n), np.ones(n), np.arange(n) + 100 * c, np.arange(n) + 100 * c, len(sizes))
        for c, n in enumerate(sizes)
    ]


def test_draw_random_targets_is_stratified_seeded_uniform_and_never_the_rule():
    from lpntk.difficulty import draw_random_targets

    grams, rule = _fake_grams([40, 35, 50]), [2, 0, 49]
    groups = draw_random_targets(grams, 9, 3, rule)
    assert len(groups) == 3 and all(len(g) == 3 for g in groups)  # G = 9 / 3 groups, one target per class
    for c in range(3):
        picks = [g[c] for g in groups]
        assert len(set(picks)) == 3 and rule[c] not in picks and all(0 <= p < len(grams[c]) for p in picks)
    # the declared procedure, written out: one generator, class by class, G draws without replacement among the
    # class's positions other than the rule's target; group g takes the g-th draw of every class
    rng = np.random.default_rng(3)
    draws = [
        rng.choice(np.delete(np.arange(len(g)), t), size=3, replace=False) for g, t in zip(grams, rule, strict=True)
    ]
    assert groups == [[int(d[k]) for d in draws] for k in range(3)]
    assert draw_random_targets(grams, 9, 3, rule) == groups  # same seed, same targets
    assert draw_random_targets(grams, 9, 4, rule) != groups  # another seed, other targets
    assert draw_random_targets(grams, 0, 3, rule) == []
    # uniform among the class's samples other than the rule's: 2 of the 4 others drawn, each with probability 1/2
    small, counts = _fake_grams([5, 5]), np.zeros((2, 5))
    for seed in range(2000):
        for g in draw_random_targets(small, 4, seed, [2, 4]):
            counts[0, g[0]] += 1
            counts[1, g[1]] += 1
    assert counts[0, 2] == 0 and counts[1, 4] == 0
    shares = counts / 2000
    np.testing.assert_allclose(np.delete(shares[0], 2), 0.5, atol=0.05)
    np.testing.assert_allclose(np.delete(shares[1], 4), 0.5, atol=0.05)
    with pytest.raises(ValueError, match=r"^difficulty.random_targets = 4 is not a multiple of the 3 classes"):
        draw_random_targets(grams, 4, 0, rule)
    with pytest.raises(ValueError, match="lower difficulty.random_targets"):
        draw_random_targets(_fake_grams([3, 8]), 6, 0, [0, 0])  # 3 per class, but class 0 has 2 besides its target


def test_config_refuses_random_targets_that_are_not_a_multiple_of_the_classes(repo, schema_path):
    import copy

    import yaml

    from lpntk.config import ConfigError, validate_config

    base = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    assert base["datasets"]["digits"]["difficulty"]["random_targets"] == 10
    validate_config(copy.deepcopy(base), schema_path)
    bad = copy.deepcopy(base)
    bad["datasets"]["digits"]["difficulty"]["random_targets"] = 15
    with pytest.raises(ConfigError) as err:
        validate_config(bad, schema_path)
    msg = str(err.value)
    assert msg.startswith("config error at datasets.digits.difficulty.random_targets: 15 is not a multiple of the 10")
    assert "set it to a multiple of 10" in msg
    off = copy.deepcopy(bad)
    off["datasets"]["digits"]["difficulty"]["enabled"] = False  # a disabled stage draws nothing
    validate_config(off, schema_path)
    default = copy.deepcopy(base)
    del default["datasets"]["digits"]["difficulty"]["random_targets"]
    assert validate_config(default, schema_path)["datasets"]["digits"]["difficulty"]["random_targets"] == 0


def test_per_target_areas_by_hand_with_a_null_row_for_a_missing_arm():
    """Literal curves: each target's area in each run is the sum of its own curve over the epochs; group 1 lacks the
    contradictory arm (skipped), so its targets get null rows there."""
    from lpntk.difficulty import Company
    from lpntk.stages.difficulty_stage import per_target_areas

    easy = np.array([[[0.5, 0.25, 0.125], [1.0, 1.0, 0.0]], [[0.0, 0.5, 0.5], [0.75, 0.25, 0.25]]])  # (R, T, E)
    contra = easy[:, :, ::-1] * 2
    g1 = easy + 1.0
    groups = [
        {"targets_pos": [7, 3], "companies": [Company("lpntk", "easy", []), Company("lpntk", "contradictory", [])],
         "curves": {("lpntk", "easy"): {"train": easy}, ("lpntk", "contradictory"): {"train": contra}}},
        {"targets_pos": [5, 9], "companies": [Company("lpntk", "easy", [])],
         "curves": {("lpntk", "easy"): {"train": g1}}},
    ]  # fmt: skip
    index = np.arange(10) + 1000
    out = per_target_areas(groups, ["max_self", "random"], index, "train", ["lpntk"])
    assert out["targets"] == [
        {"group": 0, "kind": "max_self", "class": 0, "index": 1007},
        {"group": 0, "kind": "max_self", "class": 1, "index": 1003},
        {"group": 1, "kind": "random", "class": 0, "index": 1005},
        {"group": 1, "kind": "random", "class": 1, "index": 1009},
    ]
    assert list(out["auc"]) == ["lpntk/easy", "lpntk/contradictory"]
    assert out["auc"]["lpntk/easy"] == [[0.875, 1.0], [2.0, 1.25], [3.875, 4.0], [5.0, 4.25]]
    assert out["auc"]["lpntk/contradictory"] == [[1.75, 2.0], [4.0, 2.5], None, None]


def _skip_contradictory_after_group_0(monkeypatch):
    """Patch the stage's contradictory arm: built for target group 0 (the max_self targets), skipped with a note for
    the random groups, whatever their candidates."""
    import lpntk.stages.difficulty_stage as stage

    real, calls = stage.contradictory_companies, []

    def patched(pool, rankings, num, grams, targets, similarity):
        calls.append(list(targets))
        out, note, available = real(pool, rankings, num, grams, targets, similarity)
        if list(targets) != [choose_target(g.gram, "max_self") for g in grams]:
            return [], f"contradictory set skipped: (test) {note}", available
        return out, note, available

    monkeypatch.setattr(stage, "contradictory_companies", patched)
    return calls


def test_difficulty_stage_random_target_groups(small_setup, tmp_path, monkeypatch):
    """random_targets = 10: one group of random targets (one per class) beside the rule's; group 0 is the stage
    without random targets, key for key; each target's per-run area equals the sum over epochs of its own curve and
    a separate training of its group's set from its seeds; the group whose contradictory arm is skipped says so and
    gives null rows; lockstep gives the same areas."""
    from lpntk.io import load_json, load_npz
    from lpntk.stages.difficulty_stage import DIFFICULTY_OUTPUTS, difficulty_stage
    from lpntk.stages.torch_setup import build_from_config

    root, prep, cfg, kernels = small_setup
    args = {"dataset": "digits", "kernels": kernels, "data": root / "data", "reference": root / "model.pt",
            "threads": 1, "mlflow_cfg": OFF}  # fmt: skip
    dcfg = _dcfg(epochs=2, control=True, target_seed=4)
    plain = difficulty_stage(
        **args, cfg={**cfg, "difficulty": dcfg}, outputs=_outputs(tmp_path / "p", DIFFICULTY_OUTPUTS)
    )
    calls = _skip_contradictory_after_group_0(monkeypatch)
    out = _outputs(tmp_path / "g", DIFFICULTY_OUTPUTS)
    gcfg = {**cfg, "difficulty": {**dcfg, "random_targets": 10}}
    summary = difficulty_stage(**args, cfg=gcfg, outputs=out)
    assert len(calls) == 2
    # group 0: every key the stage wrote without random targets, the same
    for key, value in plain.items():
        if key not in ("seconds", "per_target", "groups", "random_targets"):
            assert summary[key] == value, key
    assert summary["random_targets"] == 10 and summary["target_seed"] == 4 and plain["random_targets"] == 0
    g0, g1 = summary["groups"]
    assert g0["seeds"] == [1, 2] and g1["seeds"] == [3, 4] and g1["kind"] == "random"
    assert g1["contradictory"].startswith("contradictory set skipped")
    assert g1["arms"] == ["lpntk/easy", "lpntk/median", "lpntk/hard"]
    per = summary["per_target"]
    assert load_json(out["summary"])["per_target"] == per
    targets = per["targets"]
    assert [(t["group"], t["class"]) for t in targets] == [(g, c) for g in (0, 1) for c in range(10)]
    assert [t["kind"] for t in targets] == ["max_self"] * 10 + ["random"] * 10
    assert [t["index"] for t in targets[:10]] == summary["targets"]["index"]
    labels = dict(zip(prep.train.index.tolist(), prep.train.y.tolist(), strict=True))
    assert [labels[t["index"]] for t in targets[10:]] == list(range(10))  # stratified: one per class
    assert not {t["index"] for t in targets[10:]} & set(summary["targets"]["index"])
    assert set(per["auc"]) == {"lpntk/easy", "lpntk/median", "lpntk/hard", "lpntk/contradictory", "lpntk/control"}
    for arm in ("lpntk/contradictory", "lpntk/control"):
        assert per["auc"][arm][10:] == [None] * 10 and all(len(r) == 2 for r in per["auc"][arm][:10])
    # by hand from the stored curves: each target's area = the sum over epochs of its own curve, run by run
    curves = load_npz(out["curves"])
    for k, (g, r, s) in enumerate(zip(curves["group_of"], curves["group_rankings"], curves["group_sets"], strict=True)):
        hand = curves["group_l2"][k].astype(np.float64).sum(axis=-1).T  # (T, R)
        np.testing.assert_allclose(per["auc"][f"{r}/{s}"][10 * g : 10 * (g + 1)], hand, rtol=1e-12)
    for arm, runs in summary["auc_per_run"].items():  # the mean over group 0's targets = the per-run area
        np.testing.assert_allclose(np.mean(per["auc"][arm][:10], axis=0), runs, rtol=1e-6)
    # ... and from a separate training of group 1's easy set (read from sets.csv) from group 1's seeds
    sets = pd.read_csv(out["sets"])
    rows = sets[(sets["group"] == 1) & (sets["set"] == "easy")]
    assert list(rows[rows["role"] == "target"]["index"]) == [t["index"] for t in targets[10:]]
    group1 = set(rows[rows["role"] == "target"]["position"])
    assert not group1 & set(sets[(sets["group"] == 1) & (sets["role"] == "added")]["position"])
    split = prep.train.subset(rows["position"].to_numpy().copy())
    where = np.flatnonzero(rows["role"].to_numpy() == "target")
    again = target_l2_curves(
        lambda: build_from_config(cfg, prep.info), split, where, difficulty_recipe_of(gcfg), g1["seeds"],
        mean=prep.info.mean, std=prep.info.std,
    )  # fmt: skip
    np.testing.assert_allclose(per["auc"]["lpntk/easy"][10:], again["train"].astype(np.float64).sum(-1).T, rtol=1e-6)
    auc = pd.read_csv(out["auc"])
    arms0 = ("easy", "median", "hard", "contradictory", "control")
    assert list(zip(auc["group"], auc["set"], strict=True)) == [(0, s) for s in arms0] + [(1, s) for s in arms0[:3]]
    assert set(pd.read_csv(out["auc_per_class"])["group"]) == {0, 1}
    # lockstep: the same areas up to float32 summation order
    lock = difficulty_stage(
        **args, cfg={**cfg, "difficulty": {**gcfg["difficulty"], "lockstep": True}},
        outputs=_outputs(tmp_path / "l", DIFFICULTY_OUTPUTS),
    )  # fmt: skip
    assert lock["per_target"]["targets"] == targets
    for arm, rows in per["auc"].items():
        got = lock["per_target"]["auc"][arm]
        assert [r is None for r in got] == [r is None for r in rows]
        np.testing.assert_allclose([r for r in got if r], [r for r in rows if r], rtol=1e-4, err_msg=arm)


def difficulty_recipe_of(cfg):
    from lpntk.stages.difficulty_stage import difficulty_recipe

    return difficulty_recipe(cfg["difficulty"])


def test_killed_difficulty_job_with_target_groups_resumes_where_it_stopped(small_setup, tmp_path, monkeypatch):
    """With a random target group, a job killed inside group 1 and rerun trains only the missing runs (group 0's
    and group 1's finished ones are loaded) and writes the same bytes as an uninterrupted job."""
    from lpntk.stages.difficulty_stage import DIFFICULTY_OUTPUTS, difficulty_stage

    root, _, cfg, kernels = small_setup
    cfg = {**cfg, "difficulty": _dcfg(control=False, contradictory="none", random_targets=10)}
    args = {"dataset": "digits", "kernels": kernels, "data": root / "data", "reference": root / "model.pt",
            "threads": 1, "mlflow_cfg": OFF, "cfg": cfg}  # fmt: skip
    clean = _outputs(tmp_path / "clean", DIFFICULTY_OUTPUTS)
    calls = _count_and_kill(monkeypatch, None)
    difficulty_stage(**args, outputs=clean)
    assert calls == [1, 2] * 3 + [3, 4] * 3  # 2 groups x 3 sets x 2 runs, group 1 from its own seeds
    out = _outputs(tmp_path / "run", DIFFICULTY_OUTPUTS)
    _count_and_kill(monkeypatch, kill_call=9)  # group 1's second set, first run
    with pytest.raises(KeyboardInterrupt):
        difficulty_stage(**args, outputs=out)
    calls = _count_and_kill(monkeypatch, None)
    difficulty_stage(**args, outputs=out)
    assert calls == [3, 4, 3, 4]
    _assert_same_bytes(out, clean)


def test_cost_counts_the_runs_of_every_target_group(repo, schema_path, tmp_path):
    """lpntk.cost: the difficulty job trains (G + 1) x arms x runs, G = random_targets / C, and the engine computes
    kappa of the (G + 1) C targets to every training sample."""
    import copy
    import math

    from lpntk.config import load_config
    from lpntk.workload import Work, _kernel, dataset_sizes, plan_jobs

    tiny = load_config(repo / ".test" / "config" / "config.yaml", schema_path)["datasets"]["tiny"]
    sizes = dataset_sizes("tiny", tiny, tmp_path)
    jobs = {}
    for count in (0, 30):
        block = copy.deepcopy(tiny)
        block["difficulty"]["random_targets"] = count
        jobs[count] = next(j for j in plan_jobs("tiny", block, sizes, 1000.0) if j.stage == "difficulty")
    assert jobs[0].runs == 2 * 5 * 2 and jobs[30].runs == 4 * 2 * 5 * 2  # rankings x arms x runs, x 4 groups
    d, c = tiny["difficulty"], sizes.num_classes
    m, e = c * (d["num"] + 1), d["epochs"]  # a company set: num + 1 samples per class
    # the runs of one company set train in lockstep (default): one step serves the set's runs; each epoch ends
    # with the targets' eval pass; the reference Grams read once and the figure drawn
    per_step = min(d["runs"], d["lockstep_max_runs"]) if d["lockstep"] else 1
    expect = Work(
        train_samples=80 * e * m,
        train_steps=80 / per_step * e * math.ceil(m / d["batch_size"]),
        run_epochs=80 * e,
        eval_samples=80 * e * c,
        gram_bytes_read=4.0 * sum(k * k for k in sizes.class_sizes),
        figures=1,
    )
    kernel = _kernel(4 * c, tiny["kernel"], 1000.0, cross=sizes.n_train)
    assert jobs[30].work == expect + kernel

"""The cluster, prune and own-clusters stages on a synthetic split: original indices and class balance kept, each
seed's subsets from its own training run, determinism, shared draws, a selection rule of one's own, and the
own-kernel variant clustering each draw with a model trained on it."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest


def _toy_run(tmp, index, labels, seed: int):
    """Training run ``seed`` of the synthetic split: its per-class kernels (random features) and scores."""
    from lpntk.grams import ClassGram, save_class_grams
    from lpntk.io import save_table

    rng = np.random.default_rng(seed)
    n = len(index)
    grams = []
    for c in range(10):
        pos = np.flatnonzero(labels == c)
        phi = rng.normal(size=(len(pos), 4))
        grams.append(ClassGram(c, (phi @ phi.T).astype(np.float32), (phi**2).sum(1), index[pos], pos, 10))
    kernels = [str(tmp / f"kernel{seed}" / "classes5-9.npz"), str(tmp / f"kernel{seed}" / "classes0-4.npz")]
    save_class_grams(kernels[0], grams[5:])
    save_class_grams(kernels[1], grams[:5])
    scores = pd.DataFrame(
        {
            "index": index,
            "label": labels,
            "el2n": rng.random(n),
            "grand": rng.random(n),
            "forgetting": rng.integers(0, 3, n),
            "random": np.random.default_rng(0).random(n),  # the scores stage's random_seed: the same for every run
        }
    )
    save_table(tmp / f"scores{seed}.csv", scores)
    return kernels


def _cluster_and_prune(tmp, cfg, seed: int, kernels, scores, tag: str = ""):
    """The cluster and prune stages of one retraining seed on its own run's kernels and scores: their outputs."""
    from lpntk.stages.cluster_stage import cluster_stage
    from lpntk.stages.prune_stage import prune_stage

    outs = {
        "clusters": str(tmp / f"clusters{seed}{tag}.npz"),
        "summary": str(tmp / f"cluster_summary{seed}{tag}.csv"),
        "subsets": str(tmp / f"subsets{seed}{tag}.npz"),
        "table": str(tmp / f"subsets{seed}{tag}.csv"),
    }
    off = {"enabled": False}
    cluster_outs = {k: outs[k] for k in ("clusters", "summary")}
    cluster_stage(dataset="toy", cfg=cfg, seed=seed, kernels=kernels, outputs=cluster_outs, mlflow_cfg=off)
    prune_stage(
        dataset="toy",
        cfg=cfg,
        seed=seed,
        train=tmp / "train.npz",
        clusters=outs["clusters"],
        scores=scores,
        outputs={k: outs[k] for k in ("subsets", "table")},
        mlflow_cfg=off,
    )
    return outs


@pytest.fixture(scope="module")
def pruning_inputs(tmp_path_factory, full_kernel_cfg):
    """Synthetic prepared training split, and per training run (seeds 1, 2) its per-class kernels and scores; cluster
    + prune run on them for each retraining seed: (tmp, index, labels, {seed: outputs})."""
    from lpntk.io import save_npz

    tmp = tmp_path_factory.mktemp("pruning")
    rng = np.random.default_rng(0)
    n = 60
    index = rng.permutation(np.arange(500, 500 + 3 * n))[:n]  # original indices: shuffled, not 0..N-1
    labels = np.repeat(np.arange(10), 6)
    rng.shuffle(labels)
    save_npz(tmp / "train.npz", x=np.zeros((n, 1, 2, 2), np.float32), y=labels, index=index)
    outs = {}
    for seed in (1, 2):
        kernels = _toy_run(tmp, index, labels, seed)
        outs[seed] = _cluster_and_prune(tmp, full_kernel_cfg, seed, kernels, tmp / f"scores{seed}.csv")
        outs[seed]["kernels"] = kernels
    return tmp, index, labels, outs


def test_cluster_and_prune_stages_keep_original_indices_and_class_balance(pruning_inputs):
    from lpntk.stages.cluster_stage import clusters_at_keep

    tmp, index, labels, outs = pruning_inputs
    lab = dict(zip(index.tolist(), labels.tolist(), strict=True))
    subsets = {s: np.load(outs[s]["subsets"]) for s in (1, 2)}
    for seed in (1, 2):
        cl = np.load(outs[seed]["clusters"])
        assert sorted(cl["index"].tolist()) == sorted(index.tolist()) and (np.diff(cl["label"]) >= 0).all()
        assert set(clusters_at_keep(cl, 0.5)) <= set(index)  # clusters named by their head's ORIGINAL index
        table = pd.read_csv(outs[seed]["table"]).set_index("name")
        assert (table["seed"] == seed).all() and sorted(table.index) == sorted(subsets[seed].files)
        for name in subsets[seed].files:
            kept = subsets[seed][name]
            assert set(kept) <= set(index) and len(np.unique(kept)) == len(kept) and (np.diff(kept) > 0).all(), name
            assert table.loc[name, "n"] == len(kept)
        assert np.array_equal(subsets[seed]["full"], np.sort(index))
        for keep, k in ((0.9, 5), (0.7, 4), (0.5, 3)):  # 6 per class
            for name in (f"lpntk-k{keep:g}", f"random-k{keep:g}"):
                counts = np.bincount([lab[i] for i in subsets[seed][name]], minlength=10)
                assert (counts == k).all(), (seed, name, counts)
        # heads are nested: every sample kept at 0.5 is kept at 0.7 and 0.9
        sub = subsets[seed]
        assert set(sub["lpntk-k0.5"]) <= set(sub["lpntk-k0.7"]) <= set(sub["lpntk-k0.9"])
        # lpntk heads at 0.5 are exactly the first 3 heads by rank of the seed's own FPC
        rank = dict(zip(cl["index"].tolist(), cl["head_rank"].tolist(), strict=True))
        assert all(0 <= rank[i] < 3 for i in sub["lpntk-k0.5"])
        # global ranking (default) keeps the highest el2n of the seed's own scores over the whole set
        sc = pd.read_csv(tmp / f"scores{seed}.csv")
        assert set(sub["el2n-k0.5"]) == set(sc.sort_values("el2n", ascending=False)["index"].to_numpy()[:30])
        # small-cluster experiment: nested in its base subset, the same removed count per class as the control
        base = sub["d0.5-base"]
        assert np.bincount([lab[i] for i in base], minlength=10).tolist() == [3] * 10
        for name in ("d0.5-small-r0.2", "d0.5-random-r0.2", "d0.5-large-r0.2"):
            assert set(sub[name]) <= set(base)
        small = sub["d0.5-small-r0.2"]
        removed_small = np.bincount([lab[i] for i in set(base) - set(small)], minlength=10)
        removed_rand = np.bincount([lab[i] for i in set(base) - set(sub["d0.5-random-r0.2"])], minlength=10)
        assert (removed_small >= 1).all() and np.array_equal(removed_small, removed_rand)
        heads = dict(
            zip(cl[f"small_d0.5_s{seed}_index"].tolist(), cl[f"small_d0.5_s{seed}_cluster"].tolist(), strict=True)
        )
        assert f"small_d0.5_s{3 - seed}_index" not in cl  # the other seed's draw is clustered on its own kernel
        gone = set(base) - set(small)
        assert all(heads[h] in gone for h in gone)  # whole clusters go: their heads go with them
    # every subset but the full set differs between the seeds: its own kernel, scores and random draws
    for name in subsets[1].files:
        same = np.array_equal(subsets[1][name], subsets[2][name])
        assert same == (name == "full"), name


def test_each_seeds_subsets_depend_only_on_its_own_training_run(pruning_inputs, full_kernel_cfg):
    """Retraining seed s's subsets are selected from training run s alone: changing run 2's scores (or its kernels)
    changes seed 2's score (or lpNTK) subsets and leaves every subset of seed 1 as it was."""
    tmp, index, labels, outs = pruning_inputs
    before = {s: np.load(outs[s]["subsets"]) for s in (1, 2)}
    sc = pd.read_csv(tmp / "scores2.csv")
    sc["el2n"] = sc["el2n"].to_numpy()[::-1]  # run 2's EL2N changes
    sc.to_csv(tmp / "scores2-changed.csv", index=False)
    (tmp / "other").mkdir()
    run2 = _toy_run(tmp / "other", index, labels, 7)  # run 2's kernels change
    after = {
        1: _cluster_and_prune(tmp, full_kernel_cfg, 1, outs[1]["kernels"], tmp / "scores1.csv", "-again"),
        2: _cluster_and_prune(tmp, full_kernel_cfg, 2, outs[2]["kernels"], tmp / "scores2-changed.csv", "-scores"),
    }
    new_kernel = _cluster_and_prune(tmp, full_kernel_cfg, 2, run2, tmp / "scores2.csv", "-kernel")
    assert open(after[1]["subsets"], "rb").read() == open(outs[1]["subsets"], "rb").read()  # seed 1: the same bytes
    changed = np.load(after[2]["subsets"])
    assert not np.array_equal(changed["el2n-k0.5"], before[2]["el2n-k0.5"])
    for name in ("lpntk-k0.5", "grand-k0.5", "forgetting-k0.5", "random-k0.5", "d0.5-small-r0.2"):
        assert np.array_equal(changed[name], before[2][name]), name  # what does not read EL2N stays
    rekerneled = np.load(new_kernel["subsets"])
    assert not np.array_equal(rekerneled["lpntk-k0.5"], before[2]["lpntk-k0.5"])
    assert np.array_equal(rekerneled["el2n-k0.5"], before[2]["el2n-k0.5"])  # the scores did not change


def test_prune_is_deterministic_and_checks_its_clusters(pruning_inputs, full_kernel_cfg):
    from lpntk.stages.prune_stage import prune_stage

    tmp, _, _, outs = pruning_inputs
    again = {"subsets": str(tmp / "again.npz"), "table": str(tmp / "again.csv")}
    args = {"dataset": "toy", "seed": 1, "train": tmp / "train.npz", "clusters": outs[1]["clusters"]}
    args.update(scores=tmp / "scores1.csv", outputs=again, mlflow_cfg={"enabled": False})
    prune_stage(cfg=full_kernel_cfg, **args)
    assert open(again["subsets"], "rb").read() == open(outs[1]["subsets"], "rb").read()
    own = copy.deepcopy(full_kernel_cfg)
    own["pruning"]["small_clusters"]["kernels"] = ["full", "own"]
    with pytest.raises(ValueError, match=r"no \['own_d0.5_s1_index'"):  # the own-model clusters were not given
        prune_stage(cfg=own, **args)
    cfg = copy.deepcopy(full_kernel_cfg)
    cfg["pruning"]["curve_keep"] = [0.95]  # any kept fraction: the clusters file ranks every sample (cluster stage)
    prune_stage(cfg=cfg, **args)
    assert len(np.load(again["subsets"])["lpntk-k0.95"]) > len(np.load(outs[1]["subsets"])["lpntk-k0.9"])
    shared = copy.deepcopy(full_kernel_cfg)
    shared["pruning"]["draws"] = "shared"  # the clusters hold seed 1's own draw, not the shared one
    with pytest.raises(ValueError, match=r"no \['small_d0.5_index'"):
        prune_stage(cfg=shared, **args)
    with pytest.raises(ValueError, match=r"seed 3 is not a retraining seed of the pruning experiment \[1, 2\]"):
        prune_stage(cfg=full_kernel_cfg, **{**args, "seed": 3})


def test_shared_draws_keep_one_random_subset_but_each_seeds_selection(pruning_inputs, full_kernel_cfg):
    """pruning.draws: shared -- the random choices are drawn once for every seed (the random baseline is one subset,
    the small-cluster experiment one class-balanced subset), while lpNTK and the scores stay each seed's own."""
    tmp, _, _, outs = pruning_inputs
    cfg = copy.deepcopy(full_kernel_cfg)
    cfg["pruning"]["draws"] = "shared"
    sub = {
        s: np.load(_cluster_and_prune(tmp, cfg, s, outs[s]["kernels"], tmp / f"scores{s}.csv", "-shared")["subsets"])
        for s in (1, 2)
    }
    assert np.array_equal(sub[1]["random-k0.5"], sub[2]["random-k0.5"])
    assert np.array_equal(sub[1]["d0.5-base"], sub[2]["d0.5-base"])
    assert not np.array_equal(sub[1]["lpntk-k0.5"], sub[2]["lpntk-k0.5"])
    assert not np.array_equal(sub[1]["el2n-k0.5"], sub[2]["el2n-k0.5"])
    table = pd.read_csv(tmp / "subsets1-shared.csv").set_index("name")
    assert table.loc["random-k0.5", "draw"] == "shared" and table.loc["lpntk-k0.5", "seed"] == 1


def test_a_selection_rule_of_ones_own_is_one_registered_function(pruning_inputs, full_kernel_cfg):
    from lpntk.pruning import SELECTORS, register_selector, select_subset
    from lpntk.stages.prune_stage import pruning_inputs as read_inputs

    tmp, index, labels, outs = pruning_inputs
    inputs = read_inputs(full_kernel_cfg, 1, tmp / "train.npz", outs[1]["clusters"], tmp / "scores1.csv")

    @register_selector("lowest_el2n")
    def lowest(inp, spec, seed):  # the easiest samples: the opposite of the EL2N baseline
        order = np.argsort(inp.scores["el2n"], kind="stable")
        return np.sort(inp.index[order[: int(round(spec["keep"] * len(inp.index)))]])

    try:
        kept = select_subset(inputs, {"name": "lowest_el2n-k0.5", "method": "lowest_el2n", "keep": 0.5}, 0)
        sc = pd.read_csv(tmp / "scores1.csv")
        assert set(kept) == set(sc.sort_values("el2n")["index"].to_numpy()[:30])
        with pytest.raises(ValueError, match="no selection rule"):
            select_subset(inputs, {"method": "nope"}, 0)
    finally:
        del SELECTORS["lowest_el2n"]


def test_own_clusters_cluster_each_draw_with_a_model_trained_on_it(tmp_path, digits, tiny_cfg):
    """The own-kernel variant: per retraining seed, the same class-balanced draw as the cluster stage, clustered with
    the lpNTK of a model trained on that draw alone; a rerun after a kill reuses the finished draws."""
    from lpntk.data import save_prepared
    from lpntk.plan import small_key
    from lpntk.pruning import class_balanced_subset, draw_seed
    from lpntk.stages.own_clusters_stage import own_clusters_stage

    save_prepared(digits, tmp_path / "data")
    cfg = copy.deepcopy(tiny_cfg)
    cfg["pruning"]["small_clusters"].update({"data_fractions": [0.1], "epochs": 1, "cluster_keep": 0.5})
    cfg["pruning"]["retrain"]["seeds"] = [3, 4]
    outs = {"clusters": str(tmp_path / "own.npz"), "summary": str(tmp_path / "own.csv")}
    summary = own_clusters_stage(
        dataset="digits", cfg=cfg, data=tmp_path / "data", outputs=outs, mlflow_cfg={"enabled": False}
    )
    own = np.load(outs["clusters"])
    index, labels = digits.train.index.numpy(), digits.train.y.numpy()
    for seed in (3, 4):
        key = small_key(0.1, seed, "own")
        expect = class_balanced_subset(index, labels, 0.1, draw_seed(0, seed))  # what the cluster stage draws
        np.testing.assert_array_equal(own[f"{key}_index"], np.sort(expect))
        heads = own[f"{key}_cluster"]
        assert set(heads) <= set(expect)
        lab = dict(zip(index.tolist(), labels.tolist(), strict=True))
        assert all(lab[int(h)] == lab[int(i)] for i, h in zip(own[f"{key}_index"], heads, strict=True))  # per class
        for c in range(10):  # round(cluster_keep n_c) clusters per class, each head its own member
            members = own[f"{key}_index"][[lab[int(i)] == c for i in own[f"{key}_index"]]]
            assert len(set(heads[np.isin(own[f"{key}_index"], members)])) <= max(1, int(0.5 * len(members) + 0.5))
    assert set(summary["setting"]) == {"d0.1 seed 3", "d0.1 seed 4"}
    first = open(outs["clusters"], "rb").read()
    own_clusters_stage(dataset="digits", cfg=cfg, data=tmp_path / "data", outputs=outs, mlflow_cfg={"enabled": False})
    assert open(outs["clusters"], "rb").read() == first  # same config, same bytes

"""Random target groups of the difficulty control (C1): the stratified seeded draw, the config's check, the per-target
areas by hand, the stage with target groups and its resumption, and the cost of their runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from difficulty_setup import OFF, _assert_same_bytes, _count_and_kill, _dcfg, _outputs, small_trained_setup

from lpntk.difficulty import (
    choose_target,
    target_l2_curves,
)


@pytest.fixture(scope="module")
def small_setup(tmp_path_factory):
    """Prepared digits (20 per class), a briefly trained small CNN as reference, its per-class kernel files."""
    return small_trained_setup(tmp_path_factory)


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

"""The subset plan of use case 3 (lpntk.plan): the subsets and their retraining units, the per-seed selection's
seeds, and a retraining seed outside train.seeds stopping at config validation."""

from __future__ import annotations

import copy

import pytest


def test_subset_plan_and_units(tiny_cfg):
    from lpntk.plan import retrain_settings, retrain_shards, retrain_units, subset_plan

    names = [p["name"] for p in subset_plan(tiny_cfg)]
    assert names[:4] == ["full", "lpntk-k0.9", "lpntk-k0.7", "lpntk-k0.5"]
    assert "node-c0.5" in names and "el2n-k0.9" not in names and "random-k0.9" in names
    assert names[-7:] == [
        "d0.5-base",
        "d0.5-small-r0.2",
        "d0.5-random-r0.2",
        "d0.5-large-r0.2",
        "d0.5-own-small-r0.2",
        "d0.5-own-random-r0.2",
        "d0.5-own-large-r0.2",
    ]
    specs = {p["name"]: p for p in subset_plan(tiny_cfg)}
    per_seed = {n for n, p in specs.items() if p["per_seed"]}  # pruning.draws: per_seed (the default)
    assert {
        "random-k0.5",
        "el2n-k0.5",
        "lpntk_random-k0.5",
        "node-c0.5",
        "d0.5-base",
        "d0.5-own-small-r0.2",
    } <= per_seed
    assert not {"full", "lpntk-k0.5", "lpntk_gated-k0.5"} & per_seed  # deterministic selections: one subset
    assert specs["d0.5-own-random-r0.2"]["kernel"] == "own" and specs["d0.5-random-r0.2"]["kernel"] == "full"
    shared = copy.deepcopy(tiny_cfg)
    shared["pruning"]["draws"] = "shared"
    assert not any(p["per_seed"] for p in subset_plan(shared))
    cfg = copy.deepcopy(tiny_cfg)
    for group_by, n_units in (("subset", len(names)), ("method", 10), ("all", 1)):
        cfg["pruning"]["retrain"]["group_by"] = group_by
        units = retrain_units(cfg)
        assert len(units) == n_units and sorted(sum(units.values(), [])) == sorted(names)
    assert retrain_units(cfg) == {"all": names}
    assert retrain_shards(cfg) == ["all"]
    cfg["pruning"]["retrain"].update({"batch_seeds": False, "seeds": [4, 5]})
    assert retrain_shards(cfg) == ["seed4", "seed5"]
    cfg["pruning"]["retrain"]["epochs"] = 7
    assert retrain_settings(cfg) == {"seeds": [4, 5], "epochs": 7, "small_epochs": 7}
    cfg["pruning"]["small_clusters"]["epochs"] = 11
    assert retrain_settings(cfg)["small_epochs"] == 11


def test_plan_of_the_per_seed_selection(tiny_cfg):
    """Each retraining seed selects from its own training run: the pruning seeds are the retraining seeds, the kernel
    seeds add the reference seed where it does not retrain (each kernel once), and the gallery shows one of them."""
    from lpntk.plan import check_pruning_config, gallery_seed, kernel_seeds, pruning_seeds, shard_seeds, small_draw_seed

    cfg = copy.deepcopy(tiny_cfg)  # train.seeds [1, 2]
    assert pruning_seeds(cfg) == [1, 2] and kernel_seeds(cfg) == [1, 2]
    assert kernel_seeds(cfg, reference=2) == [1, 2] and gallery_seed(cfg, 2) == 2
    assert shard_seeds(cfg, "all") == [1, 2] and shard_seeds(cfg, "seed2") == [2]
    with pytest.raises(ValueError, match=r"shard 'seed3'"):
        shard_seeds(cfg, "seed3")
    cfg["train"]["seeds"] = [1, 2, 3]
    cfg["pruning"]["retrain"]["seeds"] = [2, 1]
    check_pruning_config(cfg)
    assert pruning_seeds(cfg) == [2, 1]
    assert kernel_seeds(cfg) == [2, 1, None]  # the reference (chosen at run time) may be seed 3
    assert kernel_seeds(cfg, reference=3) == [2, 1, 3] and kernel_seeds(cfg, reference=1) == [2, 1]
    assert gallery_seed(cfg, 3) == 2 and gallery_seed(cfg, 1) == 1
    cfg["kernel"]["seed"] = 1
    assert kernel_seeds(cfg) == [2, 1]
    cfg["pruning"]["enabled"] = False
    assert pruning_seeds(cfg) == [] and kernel_seeds(cfg) == [1]  # use cases 1-2 alone: the reference's kernel
    with pytest.raises(ValueError, match="pruning is not enabled"):
        gallery_seed(cfg, 1)
    assert small_draw_seed(cfg, 4) == 4
    cfg["pruning"]["draws"] = "shared"
    assert small_draw_seed(cfg, 4) is None


def test_a_retraining_seed_outside_train_seeds_stops_at_config_validation(repo, schema_path):
    import yaml

    from lpntk.config import ConfigError, validate_config
    from lpntk.plan import check_pruning_config

    raw = yaml.safe_load((repo / ".test" / "config" / "config.yaml").read_text())
    raw["datasets"]["tiny"]["pruning"]["retrain"]["seeds"] = [1, 5]
    msg = (
        r"^config error at datasets\.tiny\.pruning\.retrain\.seeds: seed 5 is not among train\.seeds \[1, 2\]; "
        r".* add 5 to train\.seeds or remove it from pruning\.retrain\.seeds"
    )
    with pytest.raises(ConfigError, match=msg):
        validate_config(copy.deepcopy(raw), schema_path)
    raw["datasets"]["tiny"]["pruning"]["enabled"] = False  # no pruning: no check
    cfg = validate_config(copy.deepcopy(raw), schema_path)
    with pytest.raises(ValueError, match=r"^pruning\.retrain\.seeds: seed 5"):
        check_pruning_config(cfg["datasets"]["tiny"])
    raw["datasets"]["tiny"]["kernel"]["seed"] = 3  # the kernels of use cases 1-2 are a training run's own
    with pytest.raises(ConfigError, match=r"^config error at datasets\.tiny\.kernel\.seed: 3 is not among train"):
        validate_config(copy.deepcopy(raw), schema_path)

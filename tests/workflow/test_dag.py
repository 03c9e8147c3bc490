"""lpntk.dag: each job of use case 3 is given only what it reads, so a change of one kept fraction reaches only its
own jobs (tests/workflow/test_workflow.py checks the same on the workflow's dry run)."""

from __future__ import annotations

import copy

import pytest

from lpntk.dag import (
    CLUSTER_KEYS,
    OWN_CLUSTERS_KEYS,
    job_config,
    pick,
    prune_groups,
    prune_keys,
    retrain_groups,
    retrain_job,
)
from lpntk.plan import retrain_units, subset_group, subset_plan


@pytest.fixture
def cfg(repo, schema_path):
    from lpntk.config import dataset_config, load_config

    block = dataset_config(load_config(repo / ".test" / "config" / "config.yaml", schema_path), "tiny")
    block["pruning"].update(
        {"methods": ["lpntk", "node", "el2n", "random"], "keep": [0.7, 0.5], "curve_keep": [0.9], "draws": "per_seed"}
    )
    block["pruning"]["small_clusters"].update({"data_fractions": [0.5, 0.25], "remove": [0.2], "kernels": ["full"]})
    return block


def test_pick_and_job_config_keep_only_what_a_job_reads(cfg):
    assert pick(cfg, ["pruning.small_clusters.seed", "pruning.nothing", "train.seeds"]) == {
        "pruning": {"small_clusters": {"seed": cfg["pruning"]["small_clusters"]["seed"]}},
        "train": {"seeds": cfg["train"]["seeds"]},
    }
    job = job_config(cfg, ["model"], ["pruning.draws"])
    assert job["model"] == cfg["model"] and job["pruning"] == {"draws": "per_seed"}
    assert job["source"] == cfg["source"] and "train" not in job and "kernel" not in job  # data keys always
    job["pruning"]["draws"] = "shared"
    assert cfg["pruning"]["draws"] == "per_seed"  # a copy
    for keys in (CLUSTER_KEYS, OWN_CLUSTERS_KEYS):
        assert not {"pruning.keep", "pruning.curve_keep", "pruning.methods"} & set(keys)


def test_prune_groups_cut_the_plan_by_kept_fraction(cfg):
    groups = prune_groups(cfg)
    assert list(groups) == ["k0.9", "k0.7", "k0.5", "node-c0.5", "d0.25", "d0.5"]
    assert [p["name"] for p in groups["k0.9"]] == ["lpntk-k0.9", "random-k0.9"]  # the curve point: lpntk, random
    assert [p["name"] for p in groups["k0.5"]] == ["lpntk-k0.5", "el2n-k0.5", "random-k0.5"]
    assert [p["name"] for p in groups["d0.5"]] == ["d0.5-base", "d0.5-small-r0.2", "d0.5-random-r0.2"]
    names = [p["name"] for specs in groups.values() for p in specs]
    assert sorted(names) == sorted(p["name"] for p in subset_plan(cfg) if p["name"] != "full")  # full: no selection
    assert subset_group(subset_plan(cfg)[0]) is None
    off = copy.deepcopy(cfg)
    off["pruning"]["enabled"] = False
    assert prune_groups(off) == {}


def test_a_groups_params_name_only_the_keys_its_selection_reads(cfg):
    groups = prune_groups(cfg)
    assert prune_keys(groups["k0.9"]) == ["pruning.seed"]  # lpntk reads nothing, random its seed
    assert prune_keys(groups["k0.5"]) == ["pruning.ranking", "pruning.seed"]
    assert prune_keys(groups["node-c0.5"]) == ["pruning.seed", "pruning.node"]
    small = ["pruning.draws", "pruning.small_clusters.seed", "pruning.small_clusters.tie_break"]
    assert prune_keys(groups["d0.5"]) == small


def test_retrain_units_by_fraction_and_the_groups_they_read(cfg):
    cfg["pruning"]["retrain"]["group_by"] = "fraction"
    units = retrain_units(cfg)
    assert list(units) == ["full", "k0.9", "k0.7", "k0.5", "node-c0.5", "d0.25", "d0.5"]
    assert retrain_groups(cfg, "full") == [] and retrain_groups(cfg, "k0.5") == ["k0.5"]
    cfg["pruning"]["retrain"]["group_by"] = "method"
    assert retrain_groups(cfg, "lpntk") == ["k0.9", "k0.7", "k0.5"]  # a method's unit reads every fraction's group
    cfg["pruning"]["retrain"]["group_by"] = "subset"
    assert retrain_groups(cfg, "el2n-k0.7") == ["k0.7"]
    job = retrain_job(cfg, "d0.5-small-r0.2", "all")
    assert [p["name"] for p in job["subsets"]] == ["d0.5-small-r0.2"] and job["seeds"] == cfg["train"]["seeds"]
    assert job["subsets"][0]["epochs"] == cfg["pruning"]["retrain"]["epochs"] and job["lockstep"] is False
    with pytest.raises(ValueError, match="not in the config's plan"):
        retrain_job(cfg, "lpntk-k0.3", "all")


def test_changing_one_kept_fraction_changes_only_its_own_jobs_params(cfg):
    """What Snakemake compares (params, input files) for every job but those of the changed fraction is the same
    after pruning.keep [0.7, 0.5] -> [0.7, 0.6]: the full set, the curve point, 0.7, node and the small clusters."""
    cfg["pruning"]["retrain"]["group_by"] = "fraction"
    edited = copy.deepcopy(cfg)
    edited["pruning"]["keep"] = [0.7, 0.6]

    def prune_job(block, group):
        return prune_groups(block)[group], job_config(block, keys=prune_keys(prune_groups(block)[group]))

    before, after = prune_groups(cfg), prune_groups(edited)
    assert set(before) - set(after) == {"k0.5"} and set(after) - set(before) == {"k0.6"}
    for group in set(before) & set(after):
        assert prune_job(cfg, group) == prune_job(edited, group), group
    units = set(retrain_units(cfg)) & set(retrain_units(edited))
    assert units == {"full", "k0.9", "k0.7", "node-c0.5", "d0.25", "d0.5"}
    for unit in units:
        assert retrain_job(cfg, unit, "all") == retrain_job(edited, unit, "all"), unit
        assert retrain_groups(cfg, unit) == retrain_groups(edited, unit), unit
    for keys in (CLUSTER_KEYS, OWN_CLUSTERS_KEYS):
        assert job_config(cfg, keys=keys) == job_config(edited, keys=keys)

"""The work of every job (lpntk.workload, re-exported by lpntk.cost): job counts counted by hand, the work of
training, lockstep, relations and cluster jobs by hand, dataset sizes against real data preparation, and the
kernel's recomputation against the engine's own chunking."""

from __future__ import annotations

import math

import pytest
from cost_setup import FIGURES, by_stage

from lpntk.config import load_config
from lpntk.cost import CostError, Job, Work, dataset_sizes, job_seconds, plan_jobs
from lpntk.workload import _kernel


@pytest.fixture(scope="module")
def tiny(repo, schema_path):
    return load_config(repo / ".test" / "config" / "config.yaml", schema_path)


def test_job_counts_of_the_tiny_config_counted_by_hand(tiny, tmp_path):
    block = tiny["datasets"]["tiny"]
    sizes = dataset_sizes("tiny", block, tmp_path)  # nothing prepared there: estimated
    assert sizes.source == "estimated"
    jobs = by_stage(plan_jobs("tiny", block, sizes, 1000.0))
    count = {stage: len(js) for stage, js in jobs.items()}
    runs = {stage: sum(j.runs for j in js) for stage, js in jobs.items()}
    # seeds [1, 2]; 10 classes, 5 per kernel job, for each seed (its subsets come from its own kernels; the
    # reference seed's serve use cases 1-2 too); one relations, difficulty, ld_size job; both forgetting seeds in
    # one job per recipe (plain and official, the defaults); scores per seed and their mean (scores.enabled);
    # cluster per seed; prune per seed and group (k0.8, k0.5, d0.5); own_clusters (small-cluster kernels full and
    # own, the default); retrain group_by fraction, batch_seeds (default): full, k0.8, k0.5, d0.5; claims; gallery
    assert count == {
        "prepare_data": 1, "train": 2, "select_reference": 1, "kernel": 4, "relations": 1, "difficulty": 1,
        "ld_size": 1, "forgetting": 2, "scores": 3, "cluster": 2, "own_clusters": 1, "prune": 6, "retrain": 4,
        "pruning_table": 1, "forgetting_table": 1, "claims": 1, "gallery": 1,
    }  # fmt: skip
    assert [j.name for j in jobs["train"]] == ["seed1", "seed2"]
    groups = ["classes0-1-2-3-4", "classes5-6-7-8-9"]
    assert [j.name for j in jobs["kernel"]] == [f"seed{s}/{g}" for s in (1, 2) for g in groups]
    assert [j.name for j in jobs["scores"]] == ["scores", "seed1", "seed2"]
    assert [j.name for j in jobs["cluster"]] == ["seed1", "seed2"]
    assert [j.name for j in jobs["prune"]] == [f"seed{s}/{g}" for s in (1, 2) for g in ("k0.8", "k0.5", "d0.5")]
    assert [j.name for j in jobs["forgetting"]] == ["plain/seeds1-2", "official/seeds1-2"] and runs["forgetting"] == 4
    # own_clusters: one model per retraining seed (pruning.draws: per_seed, the default) for the one data fraction
    assert runs["own_clusters"] == 2
    assert [j.name for j in jobs["retrain"]] == ["full/all", "k0.8/all", "k0.5/all", "d0.5/all"]
    # difficulty: rankings lpntk and cosine (default) x (easy, median, hard, contradictory, control) x 2 runs
    assert runs["difficulty"] == 2 * 5 * 2
    # ld_size: pool 16 per class, min_size 4: sizes 16 and 4, i.e. 1 + 4 runs
    assert runs["ld_size"] == 5
    # retraining: full, lpntk and random at curve_keep 0.8, 5 methods at keep 0.5, and d0.5-base, d0.5-small-r0.25,
    # d0.5-random-r0.25 and the own-model d0.5-own-small-r0.25, d0.5-own-random-r0.25; 2 seeds each
    assert runs["retrain"] == (1 + 2 + 5 + 3 + 2) * 2


def test_kernel_jobs_of_the_pruning_seeds_and_the_reference(tiny, tmp_path):
    """Kernels for every retraining seed and, where the reference seed (chosen at run time) may retrain none, one
    set more for it; without pruning, the reference seed's alone; scores per seed only where a method reads them."""
    import copy

    block = copy.deepcopy(tiny["datasets"]["tiny"])
    sizes = dataset_sizes("tiny", block, tmp_path)

    def names(stage):
        return [j.name for j in plan_jobs("tiny", block, sizes, 1000.0) if j.stage == stage]

    block["kernel"]["classes_per_job"] = 10
    block["train"]["seeds"] = [1, 2, 3]
    block["pruning"]["retrain"]["seeds"] = [2]
    assert names("kernel") == ["seed2/classes0-1-2-3-4-5-6-7-8-9", "reference/classes0-1-2-3-4-5-6-7-8-9"]
    assert names("cluster") == ["seed2"] and names("scores") == ["scores", "seed2"]
    assert names("prune") == ["seed2/k0.8", "seed2/k0.5", "seed2/d0.5"]
    block["kernel"]["seed"] = 3
    assert names("kernel") == ["seed2/classes0-1-2-3-4-5-6-7-8-9", "seed3/classes0-1-2-3-4-5-6-7-8-9"]
    block["pruning"]["methods"] = ["lpntk"]
    block["scores"]["enabled"] = False
    assert names("scores") == []
    block["pruning"]["enabled"] = False
    assert names("kernel") == ["seed3/classes0-1-2-3-4-5-6-7-8-9"] and names("cluster") == names("prune") == []


def test_work_of_a_training_job_by_hand(tiny, tmp_path):
    block = tiny["datasets"]["tiny"]
    sizes = dataset_sizes("tiny", block, tmp_path)
    # digits: 1797 images, test carved ceil(0.2 * 1797) = 360 then limited to 10 per class; 30 per class kept, of
    # which ceil(0.2 * 300) = 60 validate
    assert (sizes.n_train, sizes.n_val, sizes.n_test, sizes.num_classes) == (240, 60, 100, 10)
    train = by_stage(plan_jobs("tiny", block, sizes, 1000.0))["train"][0].work
    # 3 epochs of 240 samples in batches of 32; per epoch val (60) and test (100), one batch each; score epochs
    # [0, 1]: two snapshots of the 240 samples (eval pass + GraNd)
    assert train == Work(
        train_samples=720,
        train_steps=24,
        run_epochs=3,
        eval_samples=3 * 160 + 2 * 240,
        eval_batches=3 * 2 + 2,
        grand_samples=480,
    )
    job = Job("train", "seed1", 1, train)
    expected = 720 * 1.0 + 24 * 10.0 + 960 * 0.1 + 8 * 2.0 + 480 * 3.0 + 3 * 0.25 + 5.0  # + run-epochs, start-up
    assert job_seconds(job, FIGURES, 5.0) == pytest.approx(expected)
    # start-up per stage, else the device's fallback ("*")
    assert job_seconds(job, FIGURES, {"train": 2.0, "*": 9.0}) == pytest.approx(expected - 3.0)
    assert job_seconds(Job("claims", "claims"), FIGURES, {"train": 2.0, "*": 9.0}) == 9.0
    kernel = Job("kernel", "x", 0, Work(kernel_samples=10, kernel_pairs=6))
    assert job_seconds(kernel, FIGURES, 0.0) == pytest.approx(10 * 5.0 + 6 * 1e9 / 4e9)


def test_work_of_the_lockstep_relations_and_cluster_jobs_by_hand(tiny, tmp_path):
    """Learning-difficulty runs in lockstep: passes and run-epochs per run, steps per group; the relations job's
    within-class and panel cross-class pairs; FPC of every class to the largest kept fraction's heads."""
    import copy

    block = copy.deepcopy(tiny["datasets"]["tiny"])
    sizes = dataset_sizes("tiny", block, tmp_path)  # 240 training samples, 24 per class
    jobs = by_stage(plan_jobs("tiny", block, sizes, 1000.0))
    b = block["difficulty"]["size"]["batch_size"]
    # ld_size, 2 epochs: size 16 per class (one run of 160 samples, alone), size 4 (4 runs of 40, one group)
    ld = jobs["ld_size"][0].work
    assert (ld.train_samples, ld.run_epochs) == (2 * 160 + 4 * 2 * 40, 2 * (1 + 4))
    assert ld.train_steps == 2 * math.ceil(160 / b) + 2 * math.ceil(40 / b)
    block["difficulty"]["lockstep"] = False  # one run at a time: a step per run
    off = by_stage(plan_jobs("tiny", block, sizes, 1000.0))["ld_size"][0].work
    assert off.train_steps == 2 * math.ceil(160 / b) + 4 * 2 * math.ceil(40 / b) and off.run_epochs == ld.run_epochs
    # difficulty: 2 runs of each of the 10 company sets (2 rankings x 5 arms), 3 epochs, 10 x (3 + 1) samples; the
    # 2 runs of a set in one lockstep group: one step per epoch per set
    diff = jobs["difficulty"][0].work
    bd = block["difficulty"]["batch_size"]
    assert diff.run_epochs == 10 * 2 * 3 and diff.train_samples == 10 * 2 * 3 * 40
    assert diff.train_steps == 10 * 3 * math.ceil(40 / bd)
    # relations: within-class pairs i <= j of the 24-sample classes; the panel of 8 per class: its cross pairs
    rel = jobs["relations"][0].work
    assert rel.relation_pairs == 10 * 24 * 25 / 2 + (80 * 80 - 10 * 64) / 2
    assert rel.gram_bytes_read == 10 * 24 * 24 * 4 and rel.figures == 1  # the reference seed's float32 Grams
    # cluster: FPC of each 24-sample class run to the end (24 heads: its history gives every kept fraction's
    # clusters), the seed's Grams read
    assert [j.work.fpc_elements for j in jobs["cluster"]] == [10 * 24 * 24] * 2
    seconds = job_seconds(jobs["cluster"][0], FIGURES, 0.0)
    assert seconds == pytest.approx(10 * 24 * 24 * FIGURES["fpc_element_s"] + 10 * 24 * 24 * 4 * 1e-7)
    # kernel jobs write their five classes' Grams
    assert [j.work.gram_bytes_written for j in jobs["kernel"]] == [5 * 24 * 24 * 4] * 4


@pytest.mark.parametrize("name", ["config.yaml", "../.test/config/config.yaml"])
def test_estimated_sizes_equal_those_of_the_prepared_data(repo, schema_path, tmp_path, name):
    """The estimate (known source size and the config's carving) against prepare_dataset itself, and info.json of
    prepared data read in place of the estimate."""
    from lpntk.data import prepare_dataset, save_prepared

    config = load_config(repo / "config" / name, schema_path)
    ds, block = next(iter(config["datasets"].items()))
    est = dataset_sizes(ds, block, tmp_path)
    prep = prepare_dataset(ds, block)
    assert (est.n_train, est.n_val, est.n_test) == (len(prep.train), len(prep.val), len(prep.test))
    assert est.shape == prep.info.input_shape and sum(est.class_sizes) == est.n_train
    save_prepared(prep, tmp_path / ds / "data")
    real = dataset_sizes(ds, block, tmp_path)
    assert real.source == "prepared" and real.class_sizes == [int((prep.train.y == c).sum()) for c in range(10)]


def test_unknown_dataset_size_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    block = {"source": "folder", "name": "mine", "test_fraction": 0.2, "val_fraction": 0.1}
    with pytest.raises(CostError, match=r"datasets\.mine: .*not known before it is prepared \(`lpntk cost` prints"):
        dataset_sizes("mine", block)


def test_kernel_recomputation_counts_the_engines_own_feature_passes():
    """Feature passes of a Gram whose factors exceed the memory budget: by hand, and as the engine does them."""
    import torch

    import lpntk.kernel._gram as gram_module
    from lpntk.kernel import lpntk_gram
    from lpntk.models import build_model

    kcfg = {"max_memory_gb": 1, "block_size": 3}
    bps = 2**30 / 6  # a chunk of floor(budget / (2 bps)) = 3 samples; 10 samples do not fit
    # chunks [3, 3, 3, 1]: each packed once for its own block, and again for every earlier chunk
    assert _kernel(10, kcfg, bps).kernel_samples == 10 + 7 + 4 + 1
    assert _kernel(10, kcfg, 2**30 / 10).kernel_samples == 10  # fits: one pass
    assert _kernel(10, kcfg, bps).kernel_pairs == 55
    assert _kernel(2, kcfg, bps, cross=10).kernel_samples == 2 + 10  # one row chunk: every column once

    torch.manual_seed(0)
    model = build_model("small_cnn", (1, 8, 8), 10, width=0.5, hidden=8).eval()
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 10, (40,))
    seen, real_factors, real_layout = [], gram_module.Engine.factors, gram_module.decide_layout
    layouts = []

    def factors(self, xb, cot, idx):
        seen.append(len(xb))
        return real_factors(self, xb, cot, idx)

    def layout(fs, pairs):
        layouts.append(real_layout(fs, pairs))
        return layouts[-1]

    gram_module.Engine.factors, gram_module.decide_layout = factors, layout
    try:
        lpntk_gram(model, x, y, 10, block_size=8)  # everything fits: learn the bytes per sample of this layout
        bps = layouts[-1].bytes_per_sample(4)
        budget = 2 * 8 * bps  # chunks of 8 samples
        seen.clear()
        lpntk_gram(model, x, y, 10, block_size=8, max_memory_bytes=budget)
    finally:
        gram_module.Engine.factors, gram_module.decide_layout = real_factors, real_layout
    assert sum(seen) == _kernel(40, {"max_memory_gb": budget / 2**30, "block_size": 8}, bps).kernel_samples == 120

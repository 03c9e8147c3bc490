"""What every job of a config computes, independently of the device: the jobs and their work (:mod:`lpntk.cost`
prices it).

**Work.** For each dataset of a resolved config, every job the workflow will run -- counted with :mod:`lpntk.plan`,
the plan the Snakefile builds its DAG from, one planner per stage (:data:`PLANNERS`) -- and the work it does
(:class:`Work`):

* training runs: sample passes (forward, backward, update), optimizer steps and run-epochs (what a run pays per
  epoch beyond its samples and steps: shuffling, recording the epoch's per-sample dynamics); per epoch an evaluation
  of the validation and test splits (eval forward passes and batches); at each score epoch an EL2N + GraNd snapshot
  of the training set (eval passes and per-sample gradient norms). Runs trained in lockstep (the
  learning-difficulty stages, ``difficulty.lockstep``) take one step per group of runs;
* kernels: feature passes (one forward and backward pass per sample, repeated when a set's packed factors exceed
  ``kernel.max_memory_gb``: the chunk pairs of :mod:`lpntk.kernel._tiling`) and kernel pairs (i <= j);
* relation statistics: every within-class pair of the stored Grams and the panel's cross-class pairs, counted and
  summarised (:mod:`lpntk.relations`);
* clustering: farthest point clustering of each class run to the end (its history gives the clusters at every kept
  fraction: :func:`lpntk.clustering.assignment_history`), n_c x n_c elements (each new head scans its class);
* the stored Grams (float32, n_c x n_c per class): bytes written by the kernel jobs, read by relations,
  difficulty, cluster and gallery; and the figures each table or figure stage draws;
* forgetting prediction: the training steps, and per evaluated step one prediction (eNTK, lpNTK, pNTK on the
  step's batch) and two eval passes of the previous batch.

Dataset sizes come from ``results/<ds>/data/info.json`` when the data has been prepared, else from the known sizes of
the source (:data:`KNOWN_SOURCES`) and the config's carving (test_fraction, per_class_limit, val_fraction), classes
taken as balanced. Retraining subsets keep round(keep n) samples, small-cluster subsets d n (1 - r); ``node``
subsets are counted at full size (an upper bound: their kept fraction is an outcome).

Imports the standard library and the plan layer (:mod:`lpntk.plan`, :mod:`lpntk.paths`, :mod:`lpntk.dag`,
:mod:`lpntk.methods`) only: the Snakefile calls it for every job's ``runtime``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from . import paths
from .dag import prune_groups
from .methods import retrained_samples
from .plan import (
    class_groups,
    kernel_seeds,
    retrain_settings,
    retrain_shards,
    retrain_units,
    seed_groups,
    small_draw_seeds,
    subset_plan,
    uses_scores,
)

__all__ = [
    "KNOWN_SOURCES",
    "LOCAL_STAGES",
    "CPU_STAGES",
    "CostError",
    "DataSizes",
    "Work",
    "Job",
    "model_key",
    "dataset_sizes",
    "plan_jobs",
    "PLANNERS",
]

#: (source, name) -> (training images, test images (0: carved from training), classes, input shape)
KNOWN_SOURCES: dict[tuple[str, str], tuple[int, int, int, tuple[int, int, int]]] = {
    ("torchvision", "MNIST"): (60000, 10000, 10, (1, 28, 28)),
    ("torchvision", "FashionMNIST"): (60000, 10000, 10, (1, 28, 28)),
    ("torchvision", "KMNIST"): (60000, 10000, 10, (1, 28, 28)),
    ("torchvision", "CIFAR10"): (50000, 10000, 10, (3, 32, 32)),
    ("torchvision", "CIFAR100"): (50000, 10000, 100, (3, 32, 32)),
    ("torchvision", "SVHN"): (73257, 26032, 10, (3, 32, 32)),
    ("sklearn", "digits"): (1797, 0, 10, (1, 8, 8)),
}

#: Stages whose jobs run on the machine that runs Snakemake (``localrules``): they read tables, compute no model.
LOCAL_STAGES = (
    "select_reference",
    "scores",
    "cluster",
    "prune",
    "forgetting_table",
    "pruning_table",
    "claims",
    "gallery",
    "summary",
)
#: Stages that never compute on a GPU (they build no model): the local ones and data preparation.
CPU_STAGES = ("prepare_data", *LOCAL_STAGES)


class CostError(ValueError):
    """The cost of a config cannot be estimated (unknown dataset size, no figures for a model)."""


@dataclass
class DataSizes:
    """Sizes of a prepared dataset: samples per split, classes, input shape, training samples per class."""

    n_train: int
    n_val: int
    n_test: int
    num_classes: int
    shape: tuple[int, ...]
    class_sizes: list[int]
    source: str  #: "prepared" (info.json) or "estimated" (known source sizes and the config's carving)


@dataclass
class Work:
    """What a job computes, independently of the device (module docstring)."""

    train_samples: float = 0.0
    train_steps: float = 0.0
    eval_samples: float = 0.0
    eval_batches: float = 0.0
    grand_samples: float = 0.0
    kernel_samples: float = 0.0
    kernel_pairs: float = 0.0
    predict_steps: float = 0.0
    predict_samples: float = 0.0
    run_epochs: float = 0.0
    fpc_elements: float = 0.0
    relation_pairs: float = 0.0
    gram_bytes_written: float = 0.0
    gram_bytes_read: float = 0.0
    figures: float = 0.0

    def __add__(self, other: Work) -> Work:
        return Work(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __mul__(self, k: float) -> Work:
        return Work(**{f.name: getattr(self, f.name) * k for f in fields(self)})


@dataclass
class Job:
    """One job of the workflow: its stage, name (the rule's wildcards), training runs and work."""

    stage: str
    name: str
    runs: int = 0
    work: Work = field(default_factory=Work)

    @property
    def local(self) -> bool:
        return self.stage in LOCAL_STAGES

    @property
    def cpu_only(self) -> bool:
        return self.stage in CPU_STAGES


def model_key(name: str, shape) -> str:
    """The key of a model's cost figures: ``mnist_cnn@1x28x28``."""
    return f"{name}@{'x'.join(str(int(s)) for s in shape)}"


# ---------------------------------------------------------------------------------------------- dataset sizes


def dataset_sizes(ds: str, block: Mapping[str, Any], results: str | os.PathLike = "results") -> DataSizes:
    """The sizes of dataset ``ds`` (its resolved config ``block``): prepared, else estimated (module docstring)."""
    info = Path(paths.data_file("info.json", ds, str(results)))
    if info.is_file():
        meta = json.loads(info.read_text())
        n = meta["n"]
        return DataSizes(
            int(n["train"]),
            int(n["val"]),
            int(n["test"]),
            int(meta["num_classes"]),
            tuple(meta["input_shape"]),
            [int(c) for c in meta["class_sizes"]["train"]],
            "prepared",
        )
    known = KNOWN_SOURCES.get((block["source"], block["name"]))
    if known is None:
        raise CostError(
            f"datasets.{ds}: the size of {block['source']} dataset {block['name']!r} is not known before it is "
            f"prepared (`lpntk cost` prints the command that prepares it; or add it to lpntk.cost.KNOWN_SOURCES)"
        )
    total, n_test, classes, shape = known
    if n_test == 0:  # carved, rounded up as scikit-learn's train_test_split does
        n_test = math.ceil(total * float(block["test_fraction"]))
        total -= n_test
    per_class = total / classes
    if block.get("per_class_limit"):
        per_class = min(per_class, int(block["per_class_limit"]))
    if block.get("test_limit"):
        n_test = min(n_test, classes * int(block["test_limit"]))
    pool = int(round(per_class * classes))
    n_val = math.ceil(pool * float(block["val_fraction"]))
    n_train = pool - n_val
    sizes = [n_train // classes + (1 if c < n_train % classes else 0) for c in range(classes)]
    return DataSizes(n_train, n_val, n_test, classes, shape, sizes, "estimated")


# ---------------------------------------------------------------------------------------------- work of a job


def _training(
    n: int, epochs: int, batch: int, *, evals: tuple[int, ...] = (), eval_batch: int = 1024, scores: int = 0
) -> Work:
    """One training run on n samples: passes, steps and epochs; after every epoch an evaluation of each split of
    ``evals`` samples (in batches of ``eval_batch``); ``scores`` EL2N + GraNd snapshots of the n samples."""
    per_epoch = sum(math.ceil(m / eval_batch) for m in evals if m)
    return Work(
        train_samples=epochs * n,
        train_steps=epochs * math.ceil(n / batch),
        run_epochs=epochs,
        eval_samples=epochs * sum(evals) + scores * n,
        eval_batches=epochs * per_epoch + scores * math.ceil(n / eval_batch),
        grand_samples=scores * n,
    )


def _lockstep(runs: int, n: int, epochs: int, batch: int, group: int | None) -> Work:
    """``runs`` training runs of n samples each, ``group`` at a time in lockstep (:mod:`lpntk.lockstep`: one step
    serves the group; None: one run at a time): passes and run-epochs per run, steps per group."""
    groups = runs if not group else math.ceil(runs / int(group))
    return Work(
        train_samples=runs * epochs * n,
        train_steps=groups * epochs * math.ceil(n / batch),
        run_epochs=runs * epochs,
    )


def _kernel(n: int, kcfg: Mapping, bytes_per_sample: float, cross: int = 0) -> Work:
    """A symmetric n x n Gram (``cross`` = 0) or an n x cross Gram: feature passes with the tiling's recomputation
    when the packed factors exceed ``kernel.max_memory_gb``, and pairs."""
    budget = float(kcfg["max_memory_gb"]) * 2**30
    chunk = max(int(kcfg["block_size"]), int(budget // (2 * max(bytes_per_sample, 1.0))))
    if cross:
        if (n + cross) * bytes_per_sample <= budget:
            return Work(kernel_samples=n + cross, kernel_pairs=n * cross)
        return Work(kernel_samples=n + math.ceil(n / chunk) * cross, kernel_pairs=n * cross)
    if n * bytes_per_sample <= budget:
        passes = n
    else:
        sizes = [min(chunk, n - s) for s in range(0, n, chunk)]
        passes = sum(size + sum(sizes[i + 1 :]) for i, size in enumerate(sizes))
    return Work(kernel_samples=passes, kernel_pairs=n * (n + 1) / 2)


def _fpc(class_sizes: list[int]) -> Work:
    """Farthest point clustering of every class run to the end: each new head scans its class once, n_c heads."""
    return Work(fpc_elements=sum(n * n for n in class_sizes))


def _gram_bytes(class_sizes: list[int]) -> float:
    """Bytes of the stored float32 Grams of these classes (each n_c x n_c, :func:`lpntk.grams.save_class_grams`)."""
    return 4.0 * sum(n * n for n in class_sizes)


@dataclass
class _Context:
    """What every stage's planner reads: the dataset, its resolved block, sizes and the kernel's bytes per sample."""

    ds: str
    block: Mapping[str, Any]
    sizes: DataSizes
    bytes_per_sample: float

    @property
    def evals(self) -> tuple[int, int]:
        return (self.sizes.n_val, self.sizes.n_test)


def _plan_train(ctx: _Context) -> list[Job]:
    tcfg, n = ctx.block["train"], ctx.sizes.n_train
    scores = len(set(tcfg["score_epochs"]))
    work = _training(
        n, tcfg["epochs"], tcfg["batch_size"], evals=ctx.evals, eval_batch=tcfg["eval_batch_size"], scores=scores
    )
    jobs = [Job("prepare_data", "prepare_data")]
    jobs += [Job("train", paths.job_name("train", seed=seed), 1, work) for seed in tcfg["seeds"]]
    return jobs + [Job("select_reference", "select_reference")]


def _plan_kernel(ctx: _Context) -> list[Job]:
    kcfg, sizes, jobs = ctx.block["kernel"], ctx.sizes, []
    for seed in kernel_seeds(ctx.block):  # every pruning seed's Grams and the reference seed's (None: at run time)
        for group, members in class_groups(sizes.num_classes, kcfg["classes_per_job"]).items():
            work = sum((_kernel(sizes.class_sizes[k], kcfg, ctx.bytes_per_sample) for k in members), Work())
            work.gram_bytes_written = _gram_bytes([sizes.class_sizes[k] for k in members])
            jobs.append(Job("kernel", paths.kernel_job_name(seed, group), 0, work))
    return jobs


def _plan_relations(ctx: _Context) -> list[Job]:
    rcfg, sizes = ctx.block["relations"], ctx.sizes
    if not rcfg["enabled"]:
        return []
    panel = [min(int(rcfg["cross_samples_per_class"]), s) for s in sizes.class_sizes]
    cross = (sum(panel) ** 2 - sum(p * p for p in panel)) / 2  # the panel's cross-class pairs
    within = sum(s * (s + 1) / 2 for s in sizes.class_sizes)  # every within-class pair of the stored Grams
    read = _gram_bytes(sizes.class_sizes)  # the reference seed's Grams
    work = _kernel(sum(panel), ctx.block["kernel"], ctx.bytes_per_sample)
    work = work + Work(relation_pairs=within + cross, gram_bytes_read=read, figures=1)
    return [Job("relations", "relations", 0, work)]


def _plan_difficulty(ctx: _Context) -> list[Job]:
    dcfg, c, n = ctx.block["difficulty"], ctx.sizes.num_classes, ctx.sizes.n_train
    if not dcfg["enabled"]:
        return []
    rankings, pool = len(set(dcfg["rank_by"])), dcfg["contradictory"]
    arms = rankings * (3 + (pool != "none") + (pool != "none" and dcfg["control"]))
    groups = 1 + int(dcfg.get("random_targets", 0)) // c  # the rule's targets + the random target groups
    m, runs = c * (int(dcfg["num"]) + 1), int(dcfg["runs"])
    group = min(runs, int(dcfg["lockstep_max_runs"])) if dcfg["lockstep"] else None  # a company set's seeds
    work = _lockstep(runs, m, dcfg["epochs"], dcfg["batch_size"], group) * (groups * arms)
    targets = Work(eval_samples=groups * arms * runs * dcfg["epochs"] * c)  # the targets' eval pass per epoch
    work = work + targets + Work(gram_bytes_read=_gram_bytes(ctx.sizes.class_sizes), figures=1)
    if pool == "all" or (dcfg["control"] and pool != "none"):
        work = work + _kernel(groups * c, ctx.block["kernel"], ctx.bytes_per_sample, cross=n)
    return [Job("difficulty", "difficulty", groups * arms * runs, work)]


def _plan_ld_size(ctx: _Context) -> list[Job]:
    dcfg, c = ctx.block["difficulty"], ctx.sizes.num_classes
    scfg = dcfg["size"]
    if not scfg["enabled"]:
        return []
    group = int(dcfg["lockstep_max_runs"]) if dcfg["lockstep"] else None  # the nodes of one size train together
    work, runs, s = Work(), 0, int(scfg["pool_per_class"])
    while s >= int(scfg["min_size"]):
        count = int(scfg["pool_per_class"]) // s
        work = work + _lockstep(count, c * s, scfg["epochs"], scfg["batch_size"], group if count > 1 else None)
        runs, s = runs + count, s // 4
    return [Job("ld_size", "ld_size", runs, work + Work(figures=1))]


def _plan_forgetting(ctx: _Context) -> list[Job]:
    fcfg, tcfg = ctx.block["forgetting"], ctx.block["train"]
    if not fcfg["enabled"]:
        return []
    b, window = int(fcfg["batch_size"]), int(fcfg["steps"])
    total = int(fcfg["start_step"]) + window - 1
    groups = seed_groups(fcfg["seeds"] or tcfg["seeds"], fcfg["seeds_per_job"])
    jobs = []
    for recipe, rcfg in fcfg["recipes"].items():  # one set of jobs per recipe: forgetting/<recipe>/<group>
        per_seed = Work(
            train_samples=total * b + (window * b if rcfg["dropout"] else 0),
            train_steps=total,
            eval_samples=2 * window * b,
            eval_batches=2 * window,
            predict_steps=window,
            predict_samples=window * b,
        )
        for group, members in groups.items():
            jobs.append(
                Job(
                    "forgetting",
                    paths.job_name("forgetting", recipe=recipe, group=group),
                    len(members),
                    per_seed * len(members),
                )
            )
    return jobs


def _plan_selection(ctx: _Context) -> list[Job]:
    """Scores, clusters (FPC of every class of each retraining seed's Grams), own clusters and subsets."""
    block, sizes = ctx.block, ctx.sizes
    pcfg, settings = block["pruning"], retrain_settings(block)
    jobs = [Job("scores", "scores")] if block["scores"]["enabled"] else []
    jobs += [
        Job("scores", paths.job_name("scores", part=f"seed{seed}")) for seed in settings["seeds"] if uses_scores(block)
    ]
    if not pcfg["enabled"]:
        return jobs
    fpc = _fpc(sizes.class_sizes)  # one run to the end, whose history gives every kept fraction's clusters
    fpc.gram_bytes_read = _gram_bytes(sizes.class_sizes)  # the seed's Grams
    jobs += [Job("cluster", paths.job_name("cluster", seed=seed), 0, fpc) for seed in settings["seeds"]]
    small = pcfg["small_clusters"]
    if small["enabled"] and "own" in small["kernels"]:
        # per data fraction and draw, a model trained on the class-balanced subset, then the Gram of each class
        work, runs, c = Work(), 0, sizes.num_classes
        for d in small["data_fractions"]:
            m = max(1, round(sizes.n_train * float(d)))
            run = _training(m, settings["small_epochs"], block["train"]["batch_size"], evals=ctx.evals)
            grams = sum(
                (_kernel(max(1, round(m / c)), block["kernel"], ctx.bytes_per_sample) for _ in range(c)), Work()
            )
            draws = len(small_draw_seeds(block))
            work, runs = work + (run + grams) * draws, runs + draws
        jobs.append(Job("own_clusters", "own_clusters", runs, work))
    groups = prune_groups(block)
    return jobs + [Job("prune", paths.job_name("prune", seed=s, group=g)) for s in settings["seeds"] for g in groups]


def _plan_retrain(ctx: _Context) -> list[Job]:
    block, n = ctx.block, ctx.sizes.n_train
    if not block["pruning"]["enabled"]:
        return []
    settings, tcfg = retrain_settings(block), block["train"]
    plan = {p["name"]: p for p in subset_plan(block)}
    jobs = []
    for unit, names in retrain_units(block).items():
        for shard in retrain_shards(block):
            seeds = len(settings["seeds"]) if shard == "all" else 1
            work = Work()
            for name in names:
                epochs = settings["small_epochs" if plan[name]["experiment"] == "small_clusters" else "epochs"]
                size = retrained_samples(plan[name], n)
                run = _training(size, epochs, tcfg["batch_size"], evals=ctx.evals, eval_batch=tcfg["eval_batch_size"])
                work = work + run * seeds
            jobs.append(Job("retrain", paths.job_name("retrain", unit=unit, shard=shard), seeds * len(names), work))
    return jobs + [Job("pruning_table", "pruning_table", 0, Work(figures=2))]  # the curve and the small clusters


def _plan_reports(ctx: _Context) -> list[Job]:
    block = ctx.block
    jobs = [Job("forgetting_table", "forgetting_table", 0, Work(figures=1))] if block["forgetting"]["enabled"] else []
    if any(block[s]["enabled"] for s in ("difficulty", "forgetting", "pruning")):
        jobs.append(Job("claims", "claims"))
    if block.get("gallery", {}).get("enabled"):
        jobs.append(Job("gallery", "gallery", 0, Work(gram_bytes_read=_gram_bytes(ctx.sizes.class_sizes), figures=1)))
    return jobs


#: The planners of a dataset's jobs, in stage order: each returns its stages' jobs (none when they are off).
PLANNERS = (
    _plan_train,
    _plan_kernel,
    _plan_relations,
    _plan_difficulty,
    _plan_ld_size,
    _plan_forgetting,
    _plan_selection,
    _plan_retrain,
    _plan_reports,
)


def plan_jobs(ds: str, block: Mapping[str, Any], sizes: DataSizes, bytes_per_sample: float = 0.0) -> list[Job]:
    """Every job of dataset ``ds`` (resolved ``block``) with its work, in stage order (:data:`PLANNERS`);
    ``bytes_per_sample``: the kernel engine's packed factors per sample of this model (for the memory tiling)."""
    ctx = _Context(ds, block, sizes, bytes_per_sample)
    return [job for planner in PLANNERS for job in planner(ctx)]

"""The cost of every stage before it runs: jobs, work and device-hours of a config (``lpntk cost``).

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
* clustering: farthest point clustering of each class to the largest kept fraction's heads, n_c x heads elements
  (each new head scans its class);
* the stored Grams (float32, n_c x n_c per class): bytes written by the kernel jobs, read by relations,
  difficulty, cluster and gallery; and the figures each table or figure stage draws;
* forgetting prediction: the training steps, and per evaluated step one prediction (eNTK, lpNTK, pNTK on the
  step's batch) and two eval passes of the previous batch.

Dataset sizes come from ``results/<ds>/data/info.json`` when the data has been prepared, else from the known sizes of
the source (:data:`KNOWN_SOURCES`) and the config's carving (test_fraction, per_class_limit, val_fraction), classes
taken as balanced. Retraining subsets keep round(keep n) samples, small-cluster subsets d n (1 - r); ``node``
subsets are counted at full size (an upper bound: their kept fraction is an outcome).

**Seconds** of a job on a device, from the device's per-unit figures (``benchmarks/costs.json``)::

    t = train_samples train_sample_s + train_steps train_step_s + run_epochs run_epoch_s
      + eval_samples eval_sample_s + eval_batches eval_batch_s + grand_samples grand_sample_s
      + kernel_samples kernel_sample_s + kernel_pairs kernel_pair_flops / (gemm_gflops 1e9)
      + predict_steps predict_step_s + predict_samples predict_sample_s
      + fpc_elements fpc_element_s + relation_pairs relation_pair_s + gram_bytes_written gram_write_byte_s
      + gram_bytes_read gram_read_byte_s + figures figure_s + startup_s[stage]

The model's figures are measured per model and input shape. The device's ``host`` figures: ``fpc_element_s``,
``relation_pair_s``, the Gram bytes' and a figure's seconds (the host's NumPy, I/O and matplotlib), and ``startup_s``
per stage (a fresh Python importing the stage's adapter: ``measure_startups`` of ``benchmarks/measure.py``); a stage
without a measured start-up takes the device's ``job_startup_s``.

Epoch-equivalents of a stage = its training sample passes / the dataset's training-set size. A GPU's figures are
the measured ones (``benchmarks/gpu.json``, written by ``benchmarks/bench_gpu.py``) where present, else estimated
from the CPU figures (:func:`gpu_figures`; CPU figures measured on a busy machine are first brought to the idle
machine's GEMM rate, :func:`at_reference_rate`): FLOP-bound per-sample and per-pair work scaled by (CPU GEMM rate
measured beside the figures / the GPU's assumed sustained float32 rate), per-step and per-batch overheads at an
assumed launch-bound floor per model -- every such figure labelled an estimate, with its assumption.

Imports the standard library and :mod:`lpntk.plan` only: the Snakefile calls it for every job's ``runtime``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .plan import (
    class_groups,
    cluster_keeps,
    kernel_seeds,
    retrain_settings,
    retrain_shards,
    retrain_units,
    seed_groups,
    small_draw_seeds,
    subset_plan,
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
    "load_costs",
    "model_figures",
    "at_reference_rate",
    "gpu_figures",
    "job_seconds",
    "startup_seconds",
    "HOST_FIGURES",
    "PLANNERS",
    "uses_cuda",
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
    info = Path(results) / ds / "data" / "info.json"
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


def _keep_count(n: int, fraction: float) -> int:
    """round(fraction n), halves up (:func:`lpntk.pruning.keep_count`, restated: this module imports no numpy)."""
    return int(min(n, max(0, math.floor(fraction * n + 0.5))))


def _fpc(class_sizes: list[int], keep: float) -> Work:
    """Farthest point clustering of every class to round(keep n_c) heads: each new head scans its class once."""
    return Work(fpc_elements=sum(n * _keep_count(n, keep) for n in class_sizes))


def _gram_bytes(class_sizes: list[int]) -> float:
    """Bytes of the stored float32 Grams of these classes (each n_c x n_c, :func:`lpntk.grams.save_class_grams`)."""
    return 4.0 * sum(n * n for n in class_sizes)


def _subset_size(spec: Mapping, n: int) -> int:
    if spec["experiment"] == "small_clusters":
        return max(1, round(n * float(spec["data_fraction"]) * (1 - float(spec["remove"]))))
    return n if spec["method"] in ("full", "node") else max(1, round(n * float(spec["keep"])))


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
    jobs += [Job("train", f"seed{seed}", 1, work) for seed in tcfg["seeds"]]
    return jobs + [Job("select_reference", "select_reference")]


def _plan_kernel(ctx: _Context) -> list[Job]:
    kcfg, sizes, jobs = ctx.block["kernel"], ctx.sizes, []
    for seed in kernel_seeds(ctx.block):  # every pruning seed's Grams and the reference seed's (None: at run time)
        for group, members in class_groups(sizes.num_classes, kcfg["classes_per_job"]).items():
            work = sum((_kernel(sizes.class_sizes[k], kcfg, ctx.bytes_per_sample) for k in members), Work())
            work.gram_bytes_written = _gram_bytes([sizes.class_sizes[k] for k in members])
            jobs.append(Job("kernel", f"{'reference' if seed is None else f'seed{seed}'}/{group}", 0, work))
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
            jobs.append(Job("forgetting", f"{recipe}/{group}", len(members), per_seed * len(members)))
    return jobs


def _plan_selection(ctx: _Context) -> list[Job]:
    """Scores, clusters (FPC of every class of each retraining seed's Grams), own clusters and subsets."""
    block, sizes = ctx.block, ctx.sizes
    pcfg, settings = block["pruning"], retrain_settings(block)
    uses_scores = pcfg["enabled"] and bool({"el2n", "grand", "forgetting", "random"} & set(pcfg["methods"]))
    jobs = [Job("scores", "scores")] if block["scores"]["enabled"] else []
    jobs += [Job("scores", f"seed{seed}") for seed in settings["seeds"] if uses_scores]
    if not pcfg["enabled"]:
        return jobs
    keeps = cluster_keeps(block)
    fpc = _fpc(sizes.class_sizes, max(keeps)) if keeps else Work()
    fpc.gram_bytes_read = _gram_bytes(sizes.class_sizes)  # the seed's Grams
    jobs += [Job("cluster", f"seed{seed}", 0, fpc) for seed in settings["seeds"]]
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
    return jobs + [Job("prune", f"seed{seed}") for seed in settings["seeds"]]


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
                size = _subset_size(plan[name], n)
                run = _training(size, epochs, tcfg["batch_size"], evals=ctx.evals, eval_batch=tcfg["eval_batch_size"])
                work = work + run * seeds
            jobs.append(Job("retrain", f"{unit}/{shard}", seeds * len(names), work))
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


# ---------------------------------------------------------------------------------------------- figures


def load_costs(path: str | os.PathLike, gpu_path: str | os.PathLike | None = None) -> dict[str, dict]:
    """The device figures of a costs file (``devices``: ``cpu``, ``gpu``), with the models of a GPU measurement file
    (``bench_gpu.py --json``) replacing the estimate where it has them."""
    if not Path(path).is_file():
        raise CostError(f"cost figures {path} not found; pass --costs or run from the repository")
    devices = json.loads(Path(path).read_text())["devices"]
    devices = {**devices, "cpu": at_reference_rate(devices["cpu"])}
    gpu = gpu_figures(devices)
    if gpu_path is not None and Path(gpu_path).is_file():
        measured = json.loads(Path(gpu_path).read_text())["devices"]["gpu"]
        models = {**gpu["models"], **{k: {**v, "source": "measured"} for k, v in measured["models"].items()}}
        gpu = {**gpu, **{k: v for k, v in measured.items() if k != "models"}, "models": models}
        gpu["source"] = f"{measured.get('source', gpu_path)} (models not measured there: {gpu['source']})"
    return {"cpu": devices["cpu"], "gpu": gpu}


def at_reference_rate(device: Mapping[str, Any]) -> dict[str, Any]:
    """The device's figures as if measured at its ``reference_gemm_gflops`` (when it names one): every time figure
    x (the GEMM rate measured beside the model's figures / the reference rate). Figures taken on a busy machine --
    slower in proportion to its GEMM gauge, roughly -- then describe the idle machine."""
    ref = device.get("reference_gemm_gflops")
    if not ref:
        return dict(device)
    models = {}
    for key, fig in device["models"].items():
        factor = float(fig["gemm_gflops"]) / float(ref)
        models[key] = {k: (v * factor if k.endswith("_s") else v) for k, v in fig.items()}
        models[key].update({"gemm_gflops": float(ref), "gemm_gflops_measured": fig["gemm_gflops"]})
    out = {**device, "models": models}
    host = device.get("host")
    if host and host.get("gemm_gflops"):
        factor = float(host["gemm_gflops"]) / float(ref)
        out["host"] = {
            k: (v * factor if k.endswith("_s") and not isinstance(v, Mapping) else v) for k, v in host.items()
        }
        out["host"]["startup_s"] = {k: v * factor for k, v in host.get("startup_s", {}).items()}
    return out


def gpu_figures(devices: Mapping[str, Any]) -> dict[str, Any]:
    """The GPU figures, estimated from the CPU's (module docstring) for each model the estimate's floors name.

    Per-sample figures and the GEMM rate: x (cpu gemm_gflops / gpu gemm_gflops) -- the share of the CPU's
    throughput the GPU's assumed rate is; per-step and per-batch figures: the model's floor (launch-bound)."""
    spec = devices["gpu"]
    est = spec.get("estimate")
    if not est:
        return dict(spec)
    cpu = devices[est["from"]]
    models = {}
    for key, floors in est["floors"].items():
        if key not in cpu["models"]:
            continue
        fig = dict(cpu["models"][key])
        ratio = fig["gemm_gflops"] / est["gemm_gflops"]
        for name in ("train_sample_s", "eval_sample_s", "grand_sample_s", "kernel_sample_s", "predict_sample_s"):
            fig[name] = fig[name] * ratio
        fig.update(floors)
        fig.update({"gemm_gflops": est["gemm_gflops"], "source": "estimate"})
        models[key] = fig
    return {
        "name": spec["name"],
        "source": f"ESTIMATE from the CPU figures: {est['assumption']}",
        "job_startup_s": spec["job_startup_s"],
        "host": {k: v for k, v in (cpu.get("host") or {}).items() if k in HOST_FIGURES},  # NumPy on the GPU's host
        "models": models,
    }


_SECONDS = {
    "train_samples": "train_sample_s",
    "train_steps": "train_step_s",
    "eval_samples": "eval_sample_s",
    "eval_batches": "eval_batch_s",
    "grand_samples": "grand_sample_s",
    "kernel_samples": "kernel_sample_s",
    "predict_steps": "predict_step_s",
    "predict_samples": "predict_sample_s",
    "run_epochs": "run_epoch_s",
    "fpc_elements": "fpc_element_s",
    "relation_pairs": "relation_pair_s",
    "gram_bytes_written": "gram_write_byte_s",
    "gram_bytes_read": "gram_read_byte_s",
    "figures": "figure_s",
}
#: The device-level figures of the host's NumPy work (``devices.<device>.host`` of the costs file).
HOST_FIGURES = ("fpc_element_s", "relation_pair_s", "gram_write_byte_s", "gram_read_byte_s", "figure_s")


def model_figures(device: Mapping[str, Any], key: str, what: str) -> dict[str, float]:
    """The figures of model ``key`` on a device, with the device's host figures beside them (``missing``: the figures
    the model or device lacks, counted 0); CostError naming ``what`` (the config key) if it has none."""
    if key not in device["models"]:
        raise CostError(
            f"{what}: no cost figures for {key} on {device['name']} (have: {', '.join(device['models'])}); measure "
            f"them with `python benchmarks/bench_costs.py --models {key.replace('@', ' --shapes ')} --threads 1 "
            "--clock cpu --update benchmarks/costs.json`"
        )
    return _with_host(device, device["models"][key])


def job_seconds(job: Job, figures: Mapping[str, float], startup_s: float | Mapping[str, float]) -> float:
    """Seconds of ``job`` on a device with per-unit ``figures`` (module docstring), plus its start-up: ``startup_s``
    one figure for every job, or per stage (:func:`startup_seconds`)."""
    work = job.work
    t = sum(getattr(work, w) * float(figures.get(f, 0.0)) for w, f in _SECONDS.items())
    t += work.kernel_pairs * float(figures["kernel_pair_flops"]) / (float(figures["gemm_gflops"]) * 1e9)
    start = startup_s.get(job.stage, startup_s.get("*", 0.0)) if isinstance(startup_s, Mapping) else startup_s
    return t + float(start)


def startup_seconds(device: Mapping[str, Any]) -> dict[str, float]:
    """Per stage, what its job's process pays before it computes (the host's measured ``startup_s``, brought to the
    reference rate); ``*``: the device's ``job_startup_s`` for a stage not measured."""
    host = device.get("host") or {}
    return {**host.get("startup_s", {}), "*": float(device["job_startup_s"])}


def _with_host(device: Mapping[str, Any], figures: Mapping[str, float]) -> dict[str, float]:
    """A model's figures with the device's host figures (NumPy work: clustering, relation statistics) beside them;
    a figure the device lacks counts 0 and is named in ``missing``."""
    host = device.get("host") or {}
    out = {**figures, **{k: host[k] for k in HOST_FIGURES if k in host}}
    out["missing"] = [k for k in (*HOST_FIGURES, "run_epoch_s") if k not in out]
    return out


# ---------------------------------------------------------------------------------------------- devices


def uses_cuda(device: str) -> bool:
    """Whether a job with the config's ``device`` will compute on CUDA, decided without importing torch: ``cuda``
    yes, ``cpu`` no, ``auto`` when this machine shows an NVIDIA GPU (``/proc/driver/nvidia/gpus``) that
    ``CUDA_VISIBLE_DEVICES`` does not hide. ``auto`` is decided on the machine that runs Snakemake: on a cluster whose
    login node has no GPU, set ``device: cuda`` to give the jobs GPUs."""
    if device in ("cuda", "cpu"):
        return device == "cuda"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())

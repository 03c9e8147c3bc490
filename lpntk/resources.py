"""Cluster resources of the workflow's jobs from the cost model: ``runtime`` (minutes), ``mem_mb``, and the GPU.

The Snakefile gives every rule ``threads``, ``mem_mb`` and ``runtime`` (what a SLURM profile turns into sbatch
``--cpus-per-task``, ``--mem`` and ``-t``), and the model-running rules ``gpu`` and ``gpu_slots`` when their jobs will
compute on CUDA (:func:`lpntk.cost.uses_cuda`):

* ``runtime`` = max(``minimum``, ``safety`` x the job's estimated minutes) x the attempt number, rounded up, from
  :mod:`lpntk.cost` on the device the job will use (GPU figures when the config's device resolves to CUDA, else the
  CPU's). A retried job (the SLURM profile's ``retries:``) gets a longer limit, and it resumes where the killed
  attempt stopped (training state and progress folders), so each attempt makes progress.
* ``mem_mb`` = a base for Python, torch and MLflow (plus a CUDA context), plus 1.5 x the data the job holds: the
  prepared splits, the per-sample records of its runs, the kernel engine's packed factors (the set's size times the
  model's bytes per sample, at most ``kernel.max_memory_gb``; on the host when the job computes on the CPU) and the
  Gram matrices it builds or reads (see :meth:`mem_mb`).
* ``gpu`` (the SLURM plugin's ``--gpus``) and ``gpu_slots`` (how many jobs share one GPU on one machine: the global
  limit is set per machine, ``profiles/gpu/config.yaml``): 1 each when the job will compute on CUDA; and
  ``gpu_mem_gb``, the GPU memory the job may take (:meth:`gpu_mem_gb`), which ``profiles/gpu`` bounds by the
  GPU's memory, so that jobs sharing the GPU never together exceed it (two kernel jobs of 64 GB fill an H200).

Where the cost cannot be estimated (a dataset whose size is unknown before it is prepared, a model without figures)
the runtime is ``fallback_minutes`` and the memory the base plus the data seen so far, with a warning.
Standard library only (called while Snakemake parses the workflow).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .cost import (
    CPU_STAGES,
    CostError,
    DataSizes,
    Job,
    dataset_sizes,
    job_seconds,
    load_costs,
    model_figures,
    model_key,
    startup_seconds,
)
from .cost import plan_jobs as _plan_jobs
from .cost import uses_cuda as _uses_cuda

__all__ = ["JobResources"]

log = logging.getLogger(__name__)

_MB = 2**20


class JobResources:
    """Runtime and memory of the jobs of a resolved workflow ``config`` (module docstring)."""

    def __init__(
        self,
        config: Mapping[str, Any],
        costs: str | os.PathLike,
        gpu_figures: str | os.PathLike | None = None,
        results: str | os.PathLike = "results",
        *,
        safety: float = 3.0,
        minimum: int = 10,
        fallback_minutes: int = 1440,
    ):
        self.config, self.results = config, Path(results)
        self.safety, self.minimum, self.fallback = float(safety), int(minimum), int(fallback_minutes)
        self.cuda = _uses_cuda(str(config.get("device", "auto")))
        self._costs_args = (costs, gpu_figures)
        self._costs: dict | None = None
        self._plans: dict[tuple[str, bool], tuple[DataSizes, dict[tuple[str, str], Job], dict] | None] = {}

    @property
    def gpu(self) -> int:
        """1 when the model-running jobs will compute on CUDA, else 0."""
        return int(self.cuda)

    def gpu_mem_gb(self, ds: str, stage: str) -> int:
        """GPU memory (GiB, rounded up) a job of ``stage`` may take: 1 for the CUDA context and the allocator's
        slack, plus for training the dataset and the per-sample records held on the device and the activations
        of a batch (6 for the ResNet-18, else 1), plus for the kernel stages (kernel, relations, difficulty's
        similarity) the packed factors (the set times the model's bytes per sample, at most ``kernel.max_memory_gb``)
        and the largest Gram (float32); 8 if unknown."""
        plan = self._plan(ds)
        if plan is None:
            return 8
        sizes = plan[0]
        block = self.config["datasets"][ds]
        n_all = sizes.n_train + sizes.n_val + sizes.n_test
        held = n_all * math.prod(sizes.shape) + sizes.n_train * int(block["train"]["epochs"]) * 9
        gb = 1.0 + held / 2**30 + (6.0 if block["model"]["name"] == "resnet18_nobn" else 1.0)
        if stage in ("kernel", "relations", "difficulty"):
            bps = float(plan[2]["cpu"][0]["kernel_bytes_per_sample"])
            n = max(sizes.class_sizes)
            if stage == "relations":
                n = sum(min(int(block["relations"]["cross_samples_per_class"]), s) for s in sizes.class_sizes)
            factors = min(
                float(block["kernel"]["max_memory_gb"]) * 2**30, (n if stage != "difficulty" else n_all) * bps
            )
            gb += (factors + (n * n * 4 if stage != "difficulty" else 0)) / 2**30
        return int(math.ceil(gb))

    def _plan(self, ds: str):
        """(sizes, jobs by (stage, name), the model's figures on the job's device) of a dataset, or None."""
        prepared = (self.results / ds / "data" / "info.json").is_file()
        key = (ds, prepared)
        if key not in self._plans:
            try:
                if self._costs is None:
                    self._costs = load_costs(*self._costs_args)
                block = self.config["datasets"][ds]
                sizes = dataset_sizes(ds, block, self.results)
                mkey = model_key(block["model"]["name"], sizes.shape)
                cpu = model_figures(self._costs["cpu"], mkey, f"datasets.{ds}.model")
                device = self._costs["gpu" if self.cuda else "cpu"]
                figures = model_figures(device, mkey, f"datasets.{ds}.model")
                jobs = {
                    (j.stage, j.name): j for j in _plan_jobs(ds, block, sizes, float(cpu["kernel_bytes_per_sample"]))
                }
                cpu_dev = self._costs["cpu"]
                self._plans[key] = (sizes, jobs, {"device": (figures, device), "cpu": (cpu, cpu_dev)})
            except (CostError, KeyError, OSError, ValueError) as err:
                log.warning("lpntk: no cost estimate for dataset %s (%s); runtime %d min", ds, err, self.fallback)
                self._plans[key] = None
        return self._plans[key]

    def minutes(self, ds: str, stage: str, name: str | None = None) -> float | None:
        """Estimated minutes of one job (None if unknown); ``name``: the job's wildcards (seed3, class0, unit/shard)."""
        plan = self._plan(ds)
        if plan is None:
            return None
        sizes, jobs, figs = plan
        job = jobs.get((stage, name or stage))
        if job is None:
            return None
        figures, device = figs["cpu"] if job.cpu_only or not self.cuda else figs["device"]
        return job_seconds(job, figures, startup_seconds(device)) / 60

    def runtime(self, ds: str, stage: str, name: str | None = None, attempt: int = 1) -> int:
        """The job's ``runtime`` in minutes: max(minimum, safety x estimate) x attempt, rounded up."""
        est = self.minutes(ds, stage, name)
        base = self.fallback if est is None else max(self.minimum, math.ceil(self.safety * est))
        return int(base * max(1, int(attempt)))

    def mem_mb(self, ds: str, stage: str, name: str | None = None) -> int:
        """The job's ``mem_mb``: base + 1.5 x the data it holds (module docstring), rounded up to 500 MB."""
        base = 3000 if self.cuda and stage not in CPU_STAGES else 2000  # a CUDA context takes about 1 GB
        plan = self._plan(ds)
        if plan is None:
            return base + 2000
        sizes, jobs, figs = plan
        block = self.config["datasets"][ds]
        pixels = math.prod(sizes.shape)
        held = (sizes.n_train + sizes.n_val + sizes.n_test) * pixels * 4  # the prepared splits (uint8 or float32)
        grams = sum(c * c for c in sizes.class_sizes) * 4  # every per-class Gram, float32
        bps = float(figs["cpu"][0]["kernel_bytes_per_sample"])
        budget = float(block["kernel"]["max_memory_gb"]) * 2**30

        def factors(n: int) -> float:  # the kernel engine's packed factors, on the host when computing on the CPU
            return 0.0 if self.cuda else min(budget, n * bps)

        if stage in ("train", "retrain", "difficulty", "ld_size", "forgetting"):
            epochs = int(block["train"]["epochs"])
            held += sizes.n_train * epochs * 13  # loss, correct, l2, batch order per sample and epoch
            held += sizes.n_train * pixels * 4  # a normalised float32 copy (score snapshots)
        if stage == "kernel":
            biggest = max(sizes.class_sizes)
            held += factors(biggest) + biggest * biggest * 16  # the Gram in float32 and float64
        if stage in ("relations", "difficulty", "cluster"):
            held += 2 * grams
        if stage == "relations":
            m = sum(min(int(block["relations"]["cross_samples_per_class"]), s) for s in sizes.class_sizes)
            held += factors(m) + m * m * 16
        if stage == "difficulty":
            held += factors(sizes.n_train + sizes.num_classes) + sizes.num_classes * sizes.n_train * 16
        return int(math.ceil((base + 1.5 * held / _MB) / 500) * 500)

"""The cost of every stage before it runs: jobs, work and device-hours of a config (``lpntk cost``).

The jobs and the work each does are :mod:`lpntk.workload`'s (re-exported here). **Seconds** of a job on a device,
from the device's per-unit figures (``benchmarks/costs.json``)::

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

Imports the standard library and :mod:`lpntk.workload` only: the Snakefile calls it for every job's ``runtime``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .workload import (
    CPU_STAGES,
    KNOWN_SOURCES,
    LOCAL_STAGES,
    PLANNERS,
    CostError,
    DataSizes,
    Job,
    Work,
    dataset_sizes,
    model_key,
    plan_jobs,
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

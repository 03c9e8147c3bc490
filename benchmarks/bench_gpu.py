"""GPU measurements for the paper's scale, in one command (a few minutes on an H200):

    python benchmarks/bench_gpu.py --json benchmarks/gpu.json     # on the GPU machine; commit benchmarks/gpu.json
    python benchmarks/bench_gpu.py --quick --device cpu             # tiny sizes on a CPU: a smoke test of the script

Sections (``--only`` picks some: epochs, packed, lockstep, precision, gram, predictor, figures):

* ``epochs``     -- seconds per epoch of lpntk.train.train_model (record=True, batch 128) for the MNIST CNN on
  MNIST-shaped random data and the BatchNorm-free ResNet-18 on CIFAR-10-shaped random data, one run alone.
* ``packed``     -- N such runs at once, each in its own process (what profiles/gpu's gpu_slots does): wall time of the
  N epochs after every process has started, and the throughput gain over one run alone.
* ``lockstep``   -- K seeds trained together by lpntk.lockstep.train_lockstep: seconds per epoch of all K, and the gain
  over K runs one after the other. (Worth switching pruning.retrain.lockstep on only if it beats ``packed``.)
* ``precision``  -- fp32, tf32 and bf16 (train.precision): seconds per epoch, and test accuracy after a few epochs on a
  learnable synthetic task (a fixed random template per class plus noise; the same seed for each precision).
* ``gram``       -- the exact per-class lpNTK Gram of 5,000 CIFAR-10-shaped samples at the ResNet-18 (one CIFAR-10 class
  holds 4,500 training images): seconds and peak GPU memory (torch.cuda.max_memory_allocated), fp32 exact.
* ``predictor``  -- one step of forgetting prediction, lpntk.forgetting.predicted_logit_changes for 128 previous x 128
  current samples (the five kernel predictors), at the MNIST CNN and the ResNet-18.
* ``figures``    -- the per-model cost figures of benchmarks/measure.py (what `lpntk cost` reads), and the job start-up.

``--json FILE`` writes ``{"devices": {"gpu": ...}}`` in the form of benchmarks/costs.json (lpntk cost reads
benchmarks/gpu.json in place of its GPU estimate) plus every raw figure under ``sections``. The table printed at the
end puts the issue's targets beside the figures: MNIST at paper scale <= 2 GPU-hours, CIFAR-10 <= 48 GPU-hours (from
the epoch times x the epoch-equivalents `lpntk cost` counts), one CIFAR-10 class's exact Gram < 1 minute.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from measure import MODELS, gemm_gflops, measure_model, model_key, random_split, sync, timed

from lpntk.data import Split
from lpntk.lockstep import train_lockstep
from lpntk.models import build_model
from lpntk.train import Recipe, evaluate, seed_everything, train_model

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"mnist_cnn": ("MNIST paper scale", 2.0), "resnet18_nobn": ("CIFAR-10 paper scale", 48.0)}


def paper_epoch_eq() -> dict[str, float]:
    """Epoch-equivalents of training in config/paper.yaml per model, as `lpntk cost` counts them (lpntk.cost)."""
    from lpntk.config import load_config
    from lpntk.cost import dataset_sizes, plan_jobs

    cfg = load_config(REPO / "config" / "paper.yaml", REPO / "workflow" / "schemas" / "config.schema.yaml")
    out = {}
    for ds, block in cfg["datasets"].items():
        sizes = dataset_sizes(ds, block, REPO / "no-results")
        jobs = plan_jobs(ds, block, sizes, 1.0)
        out[block["model"]["name"]] = sum(j.work.train_samples for j in jobs) / sizes.n_train
    return out


def _mean_std(shape):
    return [0.5] * shape[0], [0.25] * shape[0]


def _epochs(name: str, n: int, epochs: int, device: str, precision: str = "fp32", seed: int = 0) -> list[float]:
    """Seconds of each epoch of one recorded training run (batch 128) on n random samples."""
    shape = MODELS[name]["shape"]
    data = random_split(shape, n, seed=seed)
    mean, std = _mean_std(shape)
    seed_everything(seed)
    model = build_model(name, shape, 10)
    recipe = Recipe(epochs=epochs, batch_size=128, lr=0.01, select="last", precision=precision)
    res = train_model(model, data, recipe, seed, mean=mean, std=std, device=device)
    return [h["seconds"] for h in res.history]


def _worker(name, n, epochs, device, seed, barrier, queue):
    torch.set_num_threads(1)
    _epochs(name, min(n, 256), 1, device, seed=seed)  # warm-up: CUDA context, kernels, allocator
    barrier.wait()
    t0 = time.perf_counter()
    per = _epochs(name, n, epochs, device, seed=seed)
    queue.put((seed, t0, time.perf_counter(), per))


def packed(name: str, n: int, epochs: int, device: str, procs: int) -> dict:
    """N processes training at once on the device; wall time from the common start to the last end."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(name, n, epochs, device, s, barrier, queue)) for s in range(procs)]
    for w in workers:
        w.start()
    results = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    start, end = min(r[1] for r in results), max(r[2] for r in results)
    return {"procs": procs, "epochs_each": epochs, "wall_s": end - start, "epoch_s_each": [r[3] for r in results]}


def lockstep(name: str, n: int, epochs: int, device: str, k: int) -> dict:
    shape = MODELS[name]["shape"]
    data = random_split(shape, n)
    mean, std = _mean_std(shape)
    recipe = Recipe(epochs=epochs, batch_size=128, lr=0.01, select="last")
    make = lambda: build_model(name, shape, 10)  # noqa: E731
    train_lockstep(make, random_split(shape, min(n, 256)), Recipe(epochs=1, select="last"), range(k), mean=mean,
                   std=std, device=device)  # fmt: skip
    sync(torch.device(device))
    t0 = time.perf_counter()
    train_lockstep(make, data, recipe, range(k), mean=mean, std=std, device=device)
    sync(torch.device(device))
    return {"k": k, "epoch_s_all": (time.perf_counter() - t0) / epochs}


def synthetic(shape, n: int, seed: int, noise: float = 0.35) -> Split:
    """A learnable task: per class a fixed random template (seed 0), each sample its template plus noise."""
    templates = torch.rand(10, *shape, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = (templates[y] + noise * torch.randn(n, *shape, generator=g)).clamp(0, 1)
    return Split((x * 255).round().to(torch.uint8), y, torch.arange(n))


def precision(name: str, n: int, epochs: int, device: str) -> dict:
    shape = MODELS[name]["shape"]
    train, test = synthetic(shape, n, 1), synthetic(shape, max(n // 4, 64), 2)
    mean, std = _mean_std(shape)
    out = {}
    for p in ("fp32", "tf32", "bf16"):
        seed_everything(0)
        model = build_model(name, shape, 10)
        recipe = Recipe(epochs=epochs, batch_size=128, lr=0.02, select="last", precision=p)
        res = train_model(model, train, recipe, 0, mean=mean, std=std, device=device)
        acc = evaluate(res.model, test, mean, std, 1024, torch.device(device))["acc"]
        out[p] = {"epoch_s": res.history[-1]["seconds"], "test_acc": acc}
    return out


def gram(n: int, device: str, max_memory_gb: float) -> dict:
    from lpntk.kernel import lpntk_gram

    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_model("resnet18_nobn", (3, 32, 32), 10).to(dev).eval()
    x, y = torch.randn(n, 3, 32, 32, device=dev), torch.zeros(n, dtype=torch.long, device=dev)
    lpntk_gram(model, x[:8], y[:8], 10)  # warm-up
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    sync(dev)
    t0 = time.perf_counter()
    lpntk_gram(model, x, y, 10, max_memory_bytes=int(max_memory_gb * 2**30))
    sync(dev)
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    return {"n": n, "seconds": time.perf_counter() - t0, "peak_gpu_gb": peak, "max_memory_gb": max_memory_gb}


def predictor(name: str, b: int, device: str) -> dict:
    from lpntk.forgetting import predicted_logit_changes

    dev = torch.device(device)
    shape = MODELS[name]["shape"]
    torch.manual_seed(0)
    model = build_model(name, shape, 10).to(dev).eval()
    x, y = torch.randn(2 * b, *shape, device=dev), torch.randint(0, 10, (2 * b,), device=dev)
    t = timed(lambda: predicted_logit_changes(model, x[:b], y[:b], x[b:], y[b:], 0.01), dev, 3)
    return {"batch": b, "seconds": t}


def job_startup(device: str) -> float:
    """Seconds for a fresh process to import a training stage's modules and (on a GPU) start CUDA."""
    code = (
        f"import torch, lpntk.stages.train_stage, lpntk.stages.kernel_stage; "
        f"torch.zeros(1, device={device!r}).sum().item()"
    )
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test on a CPU; figures not reliable)")
    ap.add_argument("--only", default="epochs,packed,lockstep,precision,gram,predictor,figures")
    ap.add_argument("--models", default="mnist_cnn,resnet18_nobn", help="models of the training sections")
    ap.add_argument("--figure-models", default=",".join(MODELS), help="models of the figures section")
    ap.add_argument("--procs", type=int, default=4, help="processes of the packed section (profiles/gpu: 4)")
    ap.add_argument("--k", type=int, default=4, help="seeds of the lockstep section")
    ap.add_argument("--gram-n", type=int, default=5000)
    ap.add_argument("--gram-memory-gb", type=float, default=60.0, help="kernel.max_memory_gb of the gram section")
    ap.add_argument("--json", help="write the figures here (lpntk cost reads benchmarks/gpu.json)")
    return ap


def _model_sections(m: str, s: dict, only: set[str], n: int, epochs: int, device: str, procs: int, k: int, q: bool):
    """The training sections of model ``m`` that ``only`` names, into ``s``."""
    if "epochs" in only:
        s["epoch_s"] = min(_epochs(m, n, epochs, device))
        print(f"{m}: one run, {n:,} samples: {s['epoch_s']:.2f} s per epoch", flush=True)
    if "packed" in only:
        s["packed"] = packed(m, n, epochs, device, procs)
        print(f"{m}: {procs} runs at once: {s['packed']['wall_s']:.2f} s for {procs} x {epochs} epochs", flush=True)
    if "lockstep" in only:
        s["lockstep"] = lockstep(m, n, epochs, device, k)
        print(f"{m}: {k} seeds in lockstep: {s['lockstep']['epoch_s_all']:.2f} s per epoch of all", flush=True)
    if "precision" in only:
        s["precision"] = precision(m, min(n, 256 if q else 10000), 2 if q else 4, device)
        print(f"{m}: precision {json.dumps(s['precision'])}", flush=True)
    if "predictor" in only:
        s["predictor"] = predictor(m, 8 if q else 128, device)
        print(f"{m}: forgetting predictor step: {s['predictor']['seconds']:.3f} s", flush=True)


def _model_rows(m: str, s: dict, procs: int, epoch_eq: dict, unit: str) -> None:
    """Model ``m``'s rows of the summary table: seconds per epoch of one run, packed and in lockstep (scaled to the
    paper's epochs where there is a target), the precisions and the forgetting step."""
    what, hours = TARGETS.get(m, (None, None))
    runs = [("one run", s.get("epoch_s"))]
    if "packed" in s:
        runs.append((f"{s['packed']['procs']} packed", s["packed"]["wall_s"] / (procs * s["packed"]["epochs_each"])))
    if "lockstep" in s:
        runs.append((f"lockstep {s['lockstep']['k']}", s["lockstep"]["epoch_s_all"] / s["lockstep"]["k"]))
    for label, per in runs:
        if per is None:
            continue
        scale = f" -> {what}: {per * epoch_eq[m] / 3600:,.1f} {unit}" if what else ""
        print(f"| {m} epoch, {label} | {per:.2f} s per run{scale} | {f'<= {hours:g} GPU h' if what else ''} |")
    for p, r in s.get("precision", {}).items():
        print(f"| {m} {p} | {r['epoch_s']:.2f} s per epoch, synthetic test accuracy {r['test_acc']:.3f} | |")
    if "predictor" in s:
        print(f"| {m} forgetting step {s['predictor']['batch']} x {s['predictor']['batch']} | "
              f"{s['predictor']['seconds']:.3f} s | |")  # fmt: skip


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    only = set(args.only.split(","))
    names = [m for m in args.models.split(",") if m]
    device = args.device
    if device == "cpu" and not args.quick:
        print("# no GPU: run with --quick for a smoke test, or on the GPU machine", file=sys.stderr)
    q = args.quick
    n = {m: 512 if q else 10000 for m in MODELS} | {
        "mnist_cnn": 512 if q else 55000,
        "resnet18_nobn": 64 if q else 45000,
    }
    epochs = 1 if q else 2
    procs, k = (2, 2) if q else (args.procs, args.k)
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    sections: dict = {"device": name, "torch": torch.__version__, "gemm_gflops": gemm_gflops(dev)}
    print(f"# {name}, torch {torch.__version__}, fp32 GEMM {sections['gemm_gflops']:,.0f} GFLOP/s", flush=True)
    t_start = time.perf_counter()
    for m in names:
        _model_sections(m, sections.setdefault(m, {}), only, n[m], epochs, device, procs, k, q)
    if "gram" in only:
        sections["gram"] = gram(16 if q else args.gram_n, device, args.gram_memory_gb)
        print(f"gram: {json.dumps(sections['gram'])}", flush=True)
    models = {}
    if "figures" in only:
        for m in [f for f in args.figure_models.split(",") if f]:
            models[model_key(m, MODELS[m]["shape"])] = measure_model(m, dev, scale=0.0625 if q else 1.0,
                                                                     repeats=1 if q else 3)  # fmt: skip
        sections["job_startup_s"] = job_startup(device)
    sections["seconds"] = time.perf_counter() - t_start

    epoch_eq = paper_epoch_eq()
    print("\n| measurement | figure | target |\n|---|---|---|")
    unit = "GPU h" if dev.type == "cuda" else "h on this CPU"
    for m in names:
        _model_rows(m, sections[m], procs, epoch_eq, unit)
    if "gram" in sections:
        g = sections["gram"]
        peak = f", peak {g['peak_gpu_gb']:.1f} GiB" if g["peak_gpu_gb"] is not None else ""
        print(f"| ResNet-18 exact Gram of {g['n']:,} | {g['seconds']:.1f} s{peak} | < 60 s |")
    print(f"\n# {sections['seconds']:.0f} s in all")
    if args.json:
        entry = {
            "name": name,
            "source": "measured: python benchmarks/bench_gpu.py "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "measured_on": time.strftime("%Y-%m-%d"),
            "job_startup_s": sections.get("job_startup_s", 20.0),
            "models": models,
        }
        Path(args.json).write_text(json.dumps({"devices": {"gpu": entry}, "sections": sections}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

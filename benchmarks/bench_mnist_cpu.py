"""Which small network the MNIST protocol can afford on a 2-core CPU, measured: the MLP 784-256-10 and LeNet-5.

For each model (``--models``, default ``mlp,lenet5``) at batch 128 on MNIST-shaped data (random uint8 images of
shape (n, 1, 28, 28), n = 55,000 by default, 5,000 validation and 10,000 test images beside them), one torch thread
unless said otherwise:

1. **bare step** -- forward, mean cross-entropy, backward, SGD step (momentum 0.9, weight decay 5e-4) on one fixed,
   already normalised batch: the floor of what a training step costs in PyTorch; median of ``--steps`` steps.
2. **package epoch** -- one epoch of :func:`lpntk.train.train_model` over the n images, run alternately
   ``--repeats`` times each: ``record=False``; ``record=True`` (the per-sample loss, correctness and L2 error the
   reference-training stage keeps); ``record=True`` with the validation and test evaluation after the epoch (what a
   train job does each epoch); and the last at 2 threads (``--clock wall`` only). The shares of the recorded
   epoch: steps at the bare step's rate, per-step overhead of the loop (batch gather, to-float and normalisation,
   the optimiser written out in Python), recording, evaluation.
3. **FLOP rate against the GEMM floor** -- the FLOPs of one training sample counted layer by layer from the shapes a
   forward pass shows (a Linear d_in -> d_out: 2 d_in d_out multiply-add FLOPs forward, as many for the weight
   gradient, as many for the input gradient except at the first layer; a convolution: the same with
   d_in = C_in k^2 and one "row" per output position); the float32 GEMM rate of those very products (the im2col
   GEMMs of the convolutions) at batch 128, and of a 2048 x 2048 square product, measured in the same run; the
   epoch's achieved rate (FLOPs x n / recorded epoch) over each. Target: at least half the floor's rate.
4. **ten seeds of one subset** (``--seeds`` seeds, ``--subset`` images, ``--seed-epochs`` epochs, the retraining
   recipe: record off, validation and test evaluated each epoch): one after the other in one process (the
   baseline, what ``pruning.retrain.lockstep: false`` does), in lockstep (:func:`lpntk.lockstep.train_lockstep`,
   per-seed draws of one size), and each seed in a fresh process that imports ``lpntk.stages.retrain_stage`` (the job's
   start-up, timed alone beside it) and loads the data from a file.
5. **two cores** (``--two-cores``, alone; wall time, so on an idle machine): a record-off epoch in one process at one
   thread, in each of two such processes at once, and in one process at two threads.

Prints one table per section with the baseline beside each figure and the ratio; the machine's load average and
GEMM gauge are printed before and after (other processes slow every figure). Usage::

    python benchmarks/bench_mnist_cpu.py                                   # about 5 min on 2 idle cores
    python benchmarks/bench_mnist_cpu.py --quick                           # small sizes: a smoke test
    python benchmarks/bench_mnist_cpu.py --two-cores --models mlp          # how to fill 2 cores (idle machine)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lpntk.data import Split
from lpntk.lockstep import train_lockstep
from lpntk.models import build_model, count_parameters
from lpntk.optim import SGD
from lpntk.train import Recipe, seed_everything, train_model

REPO = Path(__file__).resolve().parents[1]
SHAPE = (1, 28, 28)
MEAN, STD = [0.1307], [0.3081]

CHILD = """
import sys, time
t0 = time.perf_counter()
import lpntk.stages.retrain_stage  # noqa: F401  (what a retrain job imports)
import torch
from lpntk.data import Split
from lpntk.models import build_model
from lpntk.train import Recipe, seed_everything, train_model
torch.set_num_threads(1)
d = torch.load(sys.argv[1])
seed = int(sys.argv[2])
train, val, test = (Split(*d[k]) for k in (f"train{seed}", "val", "test"))
seed_everything(seed)
model = build_model(d["model"], (1, 28, 28), 10)
train_model(model, train, Recipe(**d["recipe"]), seed, mean=d["mean"], std=d["std"], val=val, test=test,
            device="cpu", record=False)
print(time.perf_counter() - t0)
"""


def split(n: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *SHAPE), dtype=torch.uint8, generator=g)
    return Split(x, torch.randint(0, 10, (n,), generator=g), torch.arange(n))


def gauge(n: int = 2048) -> float:
    """Float32 GEMM rate (GFLOP/s) of an n x n product, best of 3."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(3))
    return 2 * n**3 / best / 1e9


#: The clock of every figure: the process's CPU time (default; with one thread it approximates an idle core's wall
#: time even while other processes load the machine) or wall time (``--clock wall``: on an idle machine only).
CLOCK = {"name": "cpu", "now": time.process_time}


def _timed(fn) -> float:
    t0 = CLOCK["now"]()
    fn()
    return CLOCK["now"]() - t0


def _children_s() -> float:
    """CPU seconds of the waited-for child processes so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _run_child(cmd: list[str], env) -> float:
    """Seconds of one child process on the clock: its CPU time, or the wall time from start to exit."""
    c0, t0 = _children_s(), time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=REPO, capture_output=True)
    return (_children_s() - c0) if CLOCK["name"] == "cpu" else (time.perf_counter() - t0)


def machine() -> str:
    return f"load average {os.getloadavg()[0]:.2f}, 2048^2 GEMM {gauge():.0f} GFLOP/s ({torch.get_num_threads()} thr)"


# ------------------------------------------------------------------------------------------------ 1. bare step


def bare_step_s(model: nn.Module, batch: int, steps: int) -> float:
    """Median seconds of forward + mean CE + backward + SGD step on one fixed normalised batch."""
    x, y = torch.randn(batch, *SHAPE), torch.randint(0, 10, (batch,))
    opt = SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model.train()

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(10):
        step()
    return statistics.median(_timed(step) for _ in range(steps))


# ------------------------------------------------------------------------------------------------ 3. FLOPs and GEMMs


def gemms(model: nn.Module, batch: int) -> list[tuple[str, int, int, int, bool]]:
    """The GEMMs of one training step, per Conv2d / Linear layer: (layer, rows M, inner K, cols N, first layer);
    forward is (M x K) @ (K x N) with M = batch (x output positions for a convolution), K = d_in (C_in k^2), N =
    d_out; the weight gradient (N x M) @ (M x K) and the input gradient (M x N) @ (N x K) have the same FLOPs."""
    out = []

    def hook(mod, inp, res):
        if isinstance(mod, nn.Conv2d):
            k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            out.append((name_of[mod], res.shape[0] * res.shape[2] * res.shape[3], k, mod.out_channels, not out))
        else:
            out.append((name_of[mod], res.shape[0], mod.in_features, mod.out_features, not out))

    name_of = {m: n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    handles = [m.register_forward_hook(hook) for m in name_of]
    with torch.no_grad():
        model(torch.randn(batch, *SHAPE))
    for h in handles:
        h.remove()
    return out


def step_flops(layers) -> float:
    """FLOPs of one training step: forward, weight gradient, and input gradient except at the first layer."""
    return sum(2 * m * k * n * (2 if first else 3) for _, m, k, n, first in layers)


def gemm_floor(layers, repeats: int = 20) -> float:
    """GFLOP/s of the step's own GEMMs (the forward, weight-gradient and input-gradient products, float32)."""
    total_flops, total_s = 0.0, 0.0
    for _, m, k, n, first in layers:
        x, w, dy = torch.randn(m, k), torch.randn(k, n), torch.randn(m, n)
        prods = [lambda x=x, w=w: x @ w, lambda x=x, dy=dy: dy.t() @ x]
        prods += [] if first else [lambda w=w, dy=dy: dy @ w.t()]
        for p in prods:
            p()
            total_s += statistics.median(_timed(p) for _ in range(repeats))
            total_flops += 2 * m * k * n
    return total_flops / total_s / 1e9


# ------------------------------------------------------------------------------------------------ 2. package epoch


def baseline_train(rev: str):
    """lpntk/train.py of git revision ``rev``, imported beside the current one (as ``lpntk._train_baseline``)."""
    text = subprocess.run(
        ["git", "show", f"{rev}:lpntk/train.py"], capture_output=True, text=True, cwd=REPO, check=True
    )
    path = Path(tempfile.mkdtemp()) / "train_baseline.py"
    path.write_text(text.stdout)
    spec = importlib.util.spec_from_file_location("lpntk._train_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def package_epochs(
    name: str, train: Split, val: Split, test: Split, repeats: int, baseline=None, rev: str = ""
) -> dict[str, float]:
    """Median seconds of one train_model epoch: record off, on, on + evaluation, on + evaluation at 2 threads; with
    a ``baseline`` module (lpntk/train.py of git revision ``rev``) its record off and on, timed alternately."""
    recipe = Recipe(epochs=1, batch_size=128, lr=0.1, select="last")

    def run(record: bool, evaluate: bool, threads: int = 1, fn=train_model):
        torch.set_num_threads(threads)
        seed_everything(0)
        model = build_model(name, SHAPE, 10)
        kw = {"val": val, "test": test} if evaluate else {}
        t = _timed(lambda: fn(model, train, recipe, 0, mean=MEAN, std=STD, device="cpu", record=record, **kw))
        torch.set_num_threads(1)
        return t

    variants = {"record off": (False, False), "record on": (True, False), "record on + eval": (True, True)}
    if CLOCK["name"] == "wall":  # a 2-thread figure means something in wall time, on an idle machine
        variants["record on + eval, 2 threads"] = (True, True, 2)
    if baseline is not None:
        variants[f"record off @{rev}"] = (False, False, 1, baseline.train_model)
        variants[f"record on @{rev}"] = (True, False, 1, baseline.train_model)
    run(True, True)  # warm-up
    times = {k: [] for k in variants}
    for _ in range(repeats):  # alternately, so that a change of load hits every variant alike
        for k, v in variants.items():
            times[k].append(run(*v))
    return {k: statistics.median(v) for k, v in times.items()}


# ------------------------------------------------------------------------------------------------ 4. ten seeds


def seeds_three_ways(name: str, subset: int, seeds: list[int], epochs: int, val: Split, test: Split) -> dict:
    """Seconds of training every seed on its own draw of ``subset`` images: one after the other, in lockstep, in
    a fresh process each; and the start-up of a process alone."""
    pool = split(2 * subset, 1)
    rng = np.random.default_rng(0)
    trains = {s: pool.subset(np.sort(rng.choice(len(pool), subset, replace=False))) for s in seeds}
    recipe = Recipe(epochs=epochs, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, select="val")
    kw = {"mean": MEAN, "std": STD, "val": val, "test": test, "device": "cpu", "record": False}
    make = lambda: build_model(name, SHAPE, 10)  # noqa: E731
    out = {}

    def one_by_one():
        res = []
        for s in seeds:
            seed_everything(s)
            res.append(train_model(make(), trains[s], recipe, s, **kw))
        return res

    one_by_one()  # warm-up: the first calls of a process (vmap, allocator) are not timed
    train_lockstep(make, [trains[s] for s in seeds[:2]], recipe, seeds[:2], **kw)
    seq, lock = [], []
    out["sequential"] = _timed(lambda: seq.extend(one_by_one()))
    out["lockstep"] = _timed(lambda: lock.extend(train_lockstep(make, [trains[s] for s in seeds], recipe, seeds, **kw)))
    out["lockstep_max_acc_diff"] = max(
        abs(a.summary["test_acc_selected"] - b.summary["test_acc_selected"]) for a, b in zip(seq, lock, strict=True)
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out["startup"] = statistics.median(
        _run_child([sys.executable, "-c", "import lpntk.stages.retrain_stage"], env) for _ in range(3)
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.pt"
        tensors = {f"train{s}": (t.x, t.y, t.index) for s, t in trains.items()}
        tensors.update(val=(val.x, val.y, val.index), test=(test.x, test.y, test.index))
        torch.save({"model": name, "mean": MEAN, "std": STD, **tensors,
                    "recipe": {"epochs": epochs, "batch_size": 128, "lr": 0.1, "momentum": 0.9,
                               "weight_decay": 5e-4, "select": "val"}}, path)  # fmt: skip
        out["processes"] = sum(_run_child([sys.executable, "-c", CHILD, str(path), str(s)], env) for s in seeds)
    return out


# ------------------------------------------------------------------------------------------------ 5. two cores

CORES_CHILD = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[2]))
from lpntk.data import Split
from lpntk.models import build_model
from lpntk.train import Recipe, seed_everything, train_model
n = int(sys.argv[3])
g = torch.Generator().manual_seed(0)
x, y = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)
recipe = Recipe(epochs=1, batch_size=128, lr=0.1, select="last")
def epoch():
    seed_everything(0)
    model = build_model(sys.argv[1], (1, 28, 28), 10)
    train_model(model, Split(x, y, torch.arange(n)), recipe, 0, mean=[0.13], std=[0.31], device="cpu", record=False)
epoch()
for _ in range(int(sys.argv[4])):
    t0 = time.perf_counter()
    epoch()
    print(time.perf_counter() - t0, flush=True)
"""


def two_cores(name: str, n: int, repeats: int) -> dict[str, float]:
    """Wall seconds of a record-off epoch (median): one process at 1 thread alone, each of 2 such processes at once,
    one process at 2 threads -- how to fill 2 cores (wall time: on an idle machine only)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def start(threads: int):
        cmd = [sys.executable, "-c", CORES_CHILD, name, str(threads), str(n), str(repeats)]
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)

    def times(proc) -> list[float]:
        out, _ = proc.communicate()
        return [float(t) for t in out.split()]

    alone = times(start(1))
    pair = [start(1), start(1)]
    both = [t for p in pair for t in times(p)]
    return {
        "1 process, 1 thread": statistics.median(alone),
        "2 processes at once, 1 thread each": statistics.median(both),
        "1 process, 2 threads": statistics.median(times(start(2))),
    }


# ------------------------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mlp,lenet5")
    ap.add_argument("--n", type=int, default=55000, help="training images of an epoch")
    ap.add_argument("--steps", type=int, default=200, help="bare steps timed (median)")
    ap.add_argument("--repeats", type=int, default=3, help="package epochs per variant (median)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--subset", type=int, default=27500, help="images per seed's subset (keep 0.5)")
    ap.add_argument("--seed-epochs", type=int, default=1)
    ap.add_argument("--baseline-train", metavar="REV", help="also time lpntk/train.py of this git revision")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="wall: only on an idle machine")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test; the figures are not reliable)")
    ap.add_argument("--json", help="write every figure to this file")
    ap.add_argument(
        "--two-cores", action="store_true", help="only section 5: 1 process at 1 thread, 2 at once, 1 at 2 threads"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # the gauge of machine() too: CPU time of one thread
    if args.two_cores:
        print(f"5. two cores: wall seconds of a record-off epoch of {args.n:,} images at batch 128; {machine()}")
        for name in [m for m in args.models.split(",") if m]:
            t = two_cores(name, args.n, args.repeats)
            one = t["1 process, 1 thread"]
            print(f"{name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items()))
            pair, threads = t["2 processes at once, 1 thread each"], t["1 process, 2 threads"]
            print(
                f"{name}: throughput vs 1 process at 1 thread: 2 processes {2 * one / pair:.2f}x, "
                f"2 threads {one / threads:.2f}x"
            )
        print(f"end: {machine()}")
        return 0
    if args.quick:
        args.n, args.steps, args.repeats, args.seeds, args.subset = 2048, 20, 1, 2, 1024
    if args.clock == "wall":
        CLOCK.update(name="wall", now=time.perf_counter)
    torch.set_num_threads(1)
    val, test = split(5000, 2), split(10000, 3)
    if args.quick:
        val, test = val.subset(range(500)), test.subset(range(1000))
    train = split(args.n, 0)
    seeds = list(range(1, args.seeds + 1))
    baseline = baseline_train(args.baseline_train) if args.baseline_train else None
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, 1 thread unless said, {CLOCK['name']} clock; start: "
          f"{machine()}", flush=True)  # fmt: skip
    results = {}
    for name in [m for m in args.models.split(",") if m]:
        torch.manual_seed(0)
        model = build_model(name, SHAPE, 10)
        layers = gemms(model, 128)
        r = {"params": count_parameters(model), "step_flops": step_flops(layers)}
        r["bare_step_s"] = bare_step_s(model, 128, args.steps)
        print(f"# {name}: {r['params']:,} parameters, bare step {1e3 * r['bare_step_s']:.2f} ms", flush=True)
        r["epochs"] = package_epochs(name, train, val, test, args.repeats, baseline, args.baseline_train)
        print(f"  package epochs: {json.dumps({k: round(v, 3) for k, v in r['epochs'].items()})}", flush=True)
        r["gemm_layers_gflops"], r["gemm_square_gflops"] = gemm_floor(layers), gauge()
        r["seeds"] = seeds_three_ways(name, args.subset, seeds, args.seed_epochs, val, test)
        print(f"  seeds: {json.dumps({k: round(v, 3) for k, v in r['seeds'].items()})}", flush=True)
        results[name] = r
    print(f"end: {machine()}\n")
    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1) + "\n")
    return 0


def _s(t: float | None) -> str:
    return "-" if t is None else f"{t:.2f}s"


def report(results: dict, args) -> None:
    steps = -(-args.n // 128)
    base = next(iter(results))
    print(f"1-2. one epoch of {args.n:,} images at batch 128 ({steps} steps), 1 thread; baseline: {base}")
    print(f"{'model':<8}{'params':>9}{'bare step':>11}{'steps x bare':>14}{'loop, rec off':>15}{'rec on':>9}"
          f"{'+ eval':>9}{'2 thr':>8}{'vs ' + base:>10}{'overhead':>10}{'recording':>11}{'eval':>7}")  # fmt: skip
    for name, r in results.items():
        e, bare = r["epochs"], r["bare_step_s"] * steps
        on = e["record on"]
        print(
            f"{name:<8}{r['params']:>9,}{1e3 * r['bare_step_s']:>9.2f}ms{bare:>13.2f}s{e['record off']:>14.2f}s"
            f"{on:>8.2f}s{e['record on + eval']:>8.2f}s{_s(e.get('record on + eval, 2 threads')):>8}"
            f"{e['record on + eval'] / results[base]['epochs']['record on + eval']:>9.1f}x"
            f"{(e['record off'] - bare) / on:>10.0%}{(on - e['record off']) / on:>11.0%}"
            f"{(e['record on + eval'] - on) / e['record on + eval']:>7.0%}"
        )
    print("   overhead and recording: shares of the recorded epoch (rec on); eval: share of the epoch with evaluation")
    if args.baseline_train:
        rev = args.baseline_train
        print(f"\n2b. the loop against lpntk/train.py of {rev} (baseline), timed alternately in this run")
        print(f"{'model':<8}{'rec off @' + rev:>18}{'now':>8}{'ratio':>8}{'rec on @' + rev:>18}{'now':>8}{'ratio':>8}")
        for name, r in results.items():
            e = r["epochs"]
            off, on = e[f"record off @{rev}"], e[f"record on @{rev}"]
            print(
                f"{name:<8}{off:>17.3f}s{e['record off']:>7.3f}s{off / e['record off']:>7.2f}x"
                f"{on:>17.3f}s{e['record on']:>7.3f}s{on / e['record on']:>7.2f}x"
            )
        print("   ratio: baseline / now (> 1: now is faster)")
    print("\n3. FLOP rate of an epoch against the GEMM floor (1 thread; target: ratio >= 0.5 with recording on)")
    print(f"{'model':<8}{'FLOP/sample':>12}{'6 x params':>11}{'rec on':>12}{'rec off':>12}{'bare':>11}"
          f"{'layer GEMMs':>13}{'ratio on':>9}{'off':>6}{'square GEMM':>13}{'ratio on':>9}")  # fmt: skip
    for name, r in results.items():
        per = r["step_flops"] / 128
        rate = per * args.n / r["epochs"]["record on"] / 1e9
        rate_off = per * args.n / r["epochs"]["record off"] / 1e9
        bare = r["step_flops"] / r["bare_step_s"] / 1e9
        floor = r["gemm_layers_gflops"]
        print(
            f"{name:<8}{per / 1e6:>10.2f} M{6 * r['params'] / 1e6:>9.2f} M{rate:>7.1f} GF/s{rate_off:>7.1f} GF/s"
            f"{bare:>6.1f} GF/s{floor:>8.1f} GF/s{rate / floor:>9.2f}{rate_off / floor:>6.2f}"
            f"{r['gemm_square_gflops']:>8.1f} GF/s{rate / r['gemm_square_gflops']:>9.2f}"
        )
    print(
        "   FLOP/sample: per layer, forward + weight gradient + input gradient (none at the first layer); layer GEMMs:"
    )
    print("   the rate of the step's own products (convolutions as im2col GEMMs) at batch 128; square: 2048 x 2048")
    print(f"\n4. {args.seeds} seeds x {args.seed_epochs} epoch(s) on their own {args.subset:,}-image draws, eval of "
          f"5,000 + 10,000 each epoch, 1 thread; baseline: one after the other in one process")  # fmt: skip
    print(f"{'model':<8}{'sequential':>12}{'lockstep':>10}{'ratio':>8}{'processes':>11}{'ratio':>8}"
          f"{'start-up':>10}{'max |d acc|':>13}")  # fmt: skip
    for name, r in results.items():
        s = r["seeds"]
        print(
            f"{name:<8}{s['sequential']:>11.2f}s{s['lockstep']:>9.2f}s{s['sequential'] / s['lockstep']:>7.2f}x"
            f"{s['processes']:>10.2f}s{s['sequential'] / s['processes']:>7.2f}x{s['startup']:>9.2f}s"
            f"{s['lockstep_max_acc_diff']:>13.1e}"
        )
    print(
        "   ratio: sequential / the other (> 1: the other is faster); start-up: `python -c 'import "
        "lpntk.stages.retrain_stage'`, median of 3"
    )


if __name__ == "__main__":
    sys.exit(main())

"""Per-model cost figures on one device, in the form `lpntk cost` reads (benchmarks/costs.json, benchmarks/gpu.json).

Shared by bench_costs.py (any device, CPU figures of costs.json) and bench_gpu.py (the GPU suite). Every figure is
the median of ``repeats`` timed calls after an untimed warm-up, on random data of the model's input shape:

* ``train_sample_s``, ``train_step_s``: one epoch of lpntk.train.train_model (record=True, no evaluation) at batch
  128 and at batch 16 over the same n samples; t(b) = n/b step + n sample, solved for step and sample.
* ``eval_sample_s``, ``eval_batch_s``: lpntk.train.evaluate at batch 1024 and 64, solved the same way.
* ``grand_sample_s``: lpntk.kernel.per_sample_grad_norms per sample (the score snapshot's GraNd part).
* ``kernel_sample_s``, ``kernel_pair_flops``, ``kernel_bytes_per_sample``: lpntk.lpntk_gram of n samples of one
  class with the per-layer layout the engine chooses for a whole class of its dataset (DATASET_SHAPES; materialised
  or factored per layer); per-pair FLOPs and bytes per sample read from that layout, the per-sample time = the measured
  time less the pairs' FLOPs at the measured GEMM rate.
* ``predict_step_s``, ``predict_sample_s``: one step of forgetting prediction (cross_entropy_gradients and
  predicted_logit_changes with the five kernel predictors, an obs batch and an update batch of b samples each) at
  two batch sizes; t(b) = step + b sample.
* ``run_epoch_s``: what one training run pays per epoch beyond its samples and steps (shuffling, recording the
  epoch's per-sample dynamics, Python per run), from lpntk.lockstep.train_lockstep of ``LOCKSTEP_RUNS`` runs of 10
  samples each (one step per epoch serves the group), as the learning-difficulty stages run them: (t - samples
  train_sample_s - steps train_step_s) / (runs epochs).
* ``gemm_gflops``: float32 GEMM throughput of the device (TF32 off), the mean of a gauge before and after the model's
  figures (``gemm_gflops_range``: both): on a busy machine every figure is slower, in proportion to it roughly.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lpntk.data import Split
from lpntk.forgetting import predicted_logit_changes
from lpntk.kernel import cross_entropy_gradients, exact_matmul, lpntk_gram, per_sample_grad_norms
from lpntk.lockstep import train_lockstep
from lpntk.models import build_model
from lpntk.train import Recipe, evaluate, seed_everything, train_model

#: The input shapes of the datasets the configs under config/ name -> the training samples of one class there (the
#: kernel's layout depends on it): digits 8x8, MNIST 28x28 (5,500 of 54,999 per class), CIFAR-10 32x32 (4,500).
DATASET_SHAPES = {(1, 8, 8): 130, (1, 28, 28): 5500, (3, 32, 32): 4500}

#: Per model: its first input shape (bench_gpu.py's), every dataset shape it applies to (``shapes``: measured by
#: default), and the sizes measured (n samples; the kernel at n samples, or at a whole class of the dataset
#: ("class"), with the layout of a class of its dataset).
MODELS = {
    "mnist_cnn": {"shape": (1, 28, 28), "shapes": [(1, 28, 28), (3, 32, 32)], "train_n": 1024, "eval_n": 2048,
                  "grand_n": 256, "kernel_n": "class", "predict_b": (16, 128)},
    "resnet18_nobn": {"shape": (3, 32, 32), "shapes": [(3, 32, 32)], "train_n": 128, "eval_n": 256, "grand_n": 32,
                      "kernel_n": 32, "predict_b": (4, 8)},
    "small_cnn": {"shape": (1, 8, 8), "shapes": [(1, 8, 8), (1, 28, 28)], "train_n": 1024, "eval_n": 2048,
                  "grand_n": 512, "kernel_n": 256, "predict_b": (16, 128)},
    "mlp": {"shape": (1, 8, 8), "shapes": [(1, 8, 8), (1, 28, 28), (3, 32, 32)], "train_n": 8192, "eval_n": 8192,
            "grand_n": 512, "kernel_n": "class", "predict_b": (16, 128)},
    "lenet5": {"shape": (1, 28, 28), "shapes": [(1, 28, 28), (3, 32, 32)], "train_n": 1024, "eval_n": 2048,
               "grand_n": 256, "kernel_n": 512, "predict_b": (16, 128)},
}  # fmt: skip


def parse_shape(text: str) -> tuple[int, ...]:
    """``1x28x28`` -> (1, 28, 28)."""
    return tuple(int(s) for s in text.lower().split("x"))


def model_key(name: str, shape) -> str:
    """The key of a model's figures: ``mnist_cnn@1x28x28`` (as lpntk.cost.model_key)."""
    return f"{name}@{'x'.join(str(int(s)) for s in shape)}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: The clock of every measurement: wall time, or (``use_cpu_clock``) the process's CPU time, which a busy machine's
#: other processes inflate far less than wall time -- with one torch thread it approximates the wall time of an idle
#: core.
CLOCK = {"now": time.perf_counter, "name": "wall"}


def use_cpu_clock() -> None:
    CLOCK.update(now=time.process_time, name="cpu")


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one untimed warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = CLOCK["now"]()
        fn()
        sync(device)
        times.append(CLOCK["now"]() - t0)
    return statistics.median(times)


def gemm_gflops(device: torch.device, n: int | None = None) -> float:
    """Float32 GEMM throughput (TF32 off) of an n x n product."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    with exact_matmul():
        t = timed(lambda: a @ b, device, 3)
    return 2 * n**3 / t / 1e9


def random_split(shape, n: int, classes: int = 10, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    return Split(x, torch.randint(0, classes, (n,), generator=g), torch.arange(n))


def _solve(t_small_batches: float, t_big_batches: float, n: int, small: int, big: int) -> tuple[float, float]:
    """(per-step, per-sample) seconds from the times of n samples at two batch sizes (t = n/b step + n sample)."""
    steps_small, steps_big = math.ceil(n / small), math.ceil(n / big)
    step = max(0.0, (t_small_batches - t_big_batches) / (steps_small - steps_big))
    return step, max(0.0, (t_big_batches - steps_big * step) / n)


def _layout_probe(target_pairs: float):
    """Patch the engine's layout choice to the one of a class of (2 target_pairs - 1) samples; returns the list the
    chosen layouts are appended to, and the undo function."""
    import lpntk.kernel._gram as gram_module

    real, seen = gram_module.decide_layout, []

    def probe(factors, pairs_per_sample):
        layout = real(factors, target_pairs)
        seen.append(layout)
        return layout

    gram_module.decide_layout = probe
    return seen, lambda: setattr(gram_module, "decide_layout", real)


def pair_flops(layout) -> float:
    """FLOPs of one kernel pair under ``layout`` (2 x the multiply-adds of lpntk.grad_sample's cost model)."""
    macs = layout.m * layout.m * layout.width
    macs += sum(t * t * (d_in + layout.m * layout.m * (d_out + 1)) for _, t, d_in, d_out, _ in layout.outer)
    return 2.0 * macs


def measure_model(
    name: str, device: torch.device, *, shape=None, scale: float = 1.0, repeats: int = 3, log=print
) -> dict[str, float | int | str]:
    """The cost figures of model ``name`` (a key of MODELS) on ``device`` for inputs of ``shape`` (default: the
    model's first); ``scale`` shrinks every size (--quick)."""
    spec = MODELS[name]
    shape = tuple(shape or spec["shape"])
    class_n = DATASET_SHAPES.get(shape, 5000)

    def size(key, floor=4):
        return max(floor, int(spec[key] * scale))

    out: dict[str, float | int | str] = {"model": name, "shape": "x".join(map(str, shape)), "device": str(device)}
    out["clock"] = CLOCK["name"]
    gauges = [gemm_gflops(device)]  # the device's GEMM rate before and after: a busy machine slows every figure
    mean, std = [0.5] * shape[0], [0.25] * shape[0]

    def fresh():
        seed_everything(0)
        return build_model(name, shape, 10).to(device)

    # training epoch at two batch sizes
    n = size("train_n", 32)
    data = random_split(shape, n)
    t = {}
    for bs in (16, 128):
        recipe = Recipe(epochs=1, batch_size=bs, lr=0.01, select="last")
        t[bs] = timed(lambda r=recipe: train_model(fresh(), data, r, 0, mean=mean, std=std, device=device), device,
                      repeats)  # fmt: skip
    out["train_step_s"], out["train_sample_s"] = _solve(t[16], t[128], n, 16, 128)
    log(f"  {name}: train epoch of {n}: {t[128]:.3f} s at batch 128, {t[16]:.3f} s at batch 16")

    # evaluation at two batch sizes
    n = size("eval_n", 64)
    data = random_split(shape, n)
    model = fresh().eval()
    te = {bs: timed(lambda b=bs: evaluate(model, data, mean, std, b, device), device, repeats) for bs in (64, 1024)}
    out["eval_batch_s"], out["eval_sample_s"] = _solve(te[64], te[1024], n, 64, 1024)

    # GraNd
    n = size("grand_n", 8)
    data = random_split(shape, n)
    x = ((data.x.float() / 255 - 0.5) / 0.25).to(device)
    out["grand_sample_s"] = timed(lambda: per_sample_grad_norms(model, x, data.y.to(device)), device, repeats) / n

    # kernel: one class's Gram with the layout of a full class, at a full class's size where the spec says "class"
    # (the per-pair and per-sample costs of a class of thousands differ from those of a few hundred: caches, memory)
    n = size("kernel_n", 8) if spec["kernel_n"] != "class" else max(8, int(class_n * scale))
    data = random_split(shape, n)
    x, y = ((data.x.float() / 255 - 0.5) / 0.25).to(device), torch.zeros(n, dtype=torch.long, device=device)
    seen, undo = _layout_probe((class_n + 1) / 2)
    try:
        tk = timed(lambda: lpntk_gram(model, x, y, 10, max_memory_bytes=2**40), device, repeats)
    finally:
        undo()
    layout = seen[-1]
    out["kernel_pair_flops"] = pair_flops(layout)
    out["kernel_bytes_per_sample"] = int(layout.bytes_per_sample(4))
    pairs_s = n * (n + 1) / 2 * out["kernel_pair_flops"] / (gauges[0] * 1e9)
    out["kernel_sample_s"] = max(tk - pairs_s, 0.5 * tk) / n
    log(f"  {name}: kernel of {n} samples {tk:.3f} s (layout of a class of {class_n})")

    # one forgetting-prediction step at two batch sizes
    tp = {}
    for b in spec["predict_b"]:
        data = random_split(shape, 2 * b)
        xb, yb = ((data.x.float() / 255 - 0.5) / 0.25).to(device), data.y.to(device)

        def step(b=b, xb=xb, yb=yb):
            g, err, _ = cross_entropy_gradients(model, xb[b:], yb[b:])
            predicted_logit_changes(model, xb[:b], yb[:b], xb[b:], yb[b:], 0.01, gradient=(g, err))

        tp[b] = timed(step, device, repeats)
    b1, b2 = spec["predict_b"]
    out["predict_sample_s"] = max(0.0, (tp[b2] - tp[b1]) / (b2 - b1))
    out["predict_step_s"] = max(0.0, tp[b1] - b1 * out["predict_sample_s"])
    log(f"  {name}: forgetting prediction step {tp[b1]:.3f} s at batch {b1}, {tp[b2]:.3f} s at batch {b2}")

    out["run_epoch_s"] = _run_epoch_s(fresh, shape, out, device, repeats, mean, std)
    gauges.append(gemm_gflops(device))
    out["gemm_gflops"] = statistics.mean(gauges)
    out["gemm_gflops_range"] = [min(gauges), max(gauges)]
    return out


#: Runs trained together in the run-epoch measurement (lpntk.lockstep), 10 samples each, for LOCKSTEP_EPOCHS.
LOCKSTEP_RUNS, LOCKSTEP_EPOCHS = 16, 3


def _run_epoch_s(fresh, shape, fig, device, repeats, mean, std) -> float:
    """``run_epoch_s`` (module docstring): the lockstep group's time less its samples' and steps' figures."""
    splits = [random_split(shape, 10, seed=k) for k in range(LOCKSTEP_RUNS)]
    recipe = Recipe(epochs=LOCKSTEP_EPOCHS, batch_size=128, lr=0.01, select="last")
    seeds = [0] * LOCKSTEP_RUNS
    t = timed(lambda: train_lockstep(fresh, splits, recipe, seeds, mean=mean, std=std, device=device), device, repeats)
    run_epochs = LOCKSTEP_RUNS * LOCKSTEP_EPOCHS
    rest = t - run_epochs * 10 * fig["train_sample_s"] - LOCKSTEP_EPOCHS * fig["train_step_s"]
    return max(rest, 0.0) / run_epochs


def measure_host(repeats: int = 3, n: int = 5000, log=print) -> dict[str, float]:
    """The figures of the host's NumPy work, independent of the model (``lpntk cost``'s device-level figures), on one
    class of n samples (5,000: about an MNIST class, so that the arrays outgrow the caches as the workflow's do):

    * ``fpc_element_s``: lpntk.stages.cluster_stage.cluster_class of a random n x n Gram (symmetrised, farthest point
      clustering run to the end with its history, self-max), per (sample, head) element scanned (n x heads);
    * ``relation_pair_s``: lpntk.relations.within_class_pairs of the class's Gram and the relations stage's three
      distributions (kappa, K kappa, cosine) of its pairs, per pair i <= j;
    * ``gram_write_byte_s``, ``gram_read_byte_s``: lpntk.grams.save_class_grams of the class to a file and
      iter_class_grams back, per byte of the float32 Gram (n^2 x 4);
    * ``figure_s``: one figure as the stages draw them (four panels of small images and a line plot, saved as PNG
      and PDF through lpntk.figures.save_figure).
    """
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lpntk.figures import save_figure
    from lpntk.grams import ClassGram, iter_class_grams, save_class_grams
    from lpntk.relations import distribution, within_class_pairs
    from lpntk.stages.cluster_stage import cluster_class

    cpu = torch.device("cpu")
    a = torch.randn(n, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gram = (a @ a.T).numpy().astype("float32")
    index = torch.arange(n).numpy()
    cls = ClassGram(0, gram, gram.diagonal().astype("float64"), index, index, 10)
    heads = n  # the cluster stage runs FPC to the end: its history gives every kept fraction's clusters
    t_fpc = timed(lambda: cluster_class(cls, [], {}), cpu, repeats)
    quantiles = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)

    def relations():
        within = within_class_pairs([cls], (0.0, 0.1), 0.1, 0.1)
        for values, scale in ((within.kappa, 1.0), (within.kappa, 10.0), (within.cos, 1.0)):
            distribution(values, quantiles, scale)

    t_rel = timed(relations, cpu, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grams.npz"
        t_write = timed(lambda: save_class_grams(path, [cls]), cpu, repeats)
        t_read = timed(lambda: [g.gram.sum() for g in iter_class_grams([path])], cpu, repeats)

        def figure():
            fig, axes = plt.subplots(1, 5, figsize=(15, 3))
            for ax in axes[:4]:
                ax.imshow(gram[:280, :280], cmap="gray")
                ax.set_axis_off()
            axes[4].plot(gram[0, :200])
            save_figure(fig, Path(tmp) / "f.png", Path(tmp) / "f.pdf")
            plt.close(fig)

        t_fig = timed(figure, cpu, repeats)
    log(
        f"  host, a class of {n}: clustering {t_fpc:.2f} s, relation statistics {t_rel:.2f} s, Gram write "
        f"{t_write:.2f} s / read {t_read:.2f} s, a figure {t_fig:.2f} s"
    )
    return {
        "fpc_element_s": t_fpc / (n * heads),
        "relation_pair_s": t_rel / (n * (n + 1) / 2),
        "gram_write_byte_s": t_write / (4 * n * n),
        "gram_read_byte_s": t_read / (4 * n * n),
        "figure_s": t_fig,
    }


def adapter_imports(script: Path) -> str:
    """The top-level imports of a workflow adapter script: what its job's process loads before it computes."""
    import ast

    tree = ast.parse(script.read_text())
    return "\n".join(ast.get_source_segment(script.read_text(), node) for node in tree.body
                     if isinstance(node, ast.Import | ast.ImportFrom))  # fmt: skip


def measure_startups(scripts: Path, repeats: int = 3, log=print) -> dict[str, float]:
    """Per rule (``workflow/scripts/<rule>.py``): the start-up of its job's process, i.e. a fresh Python that imports
    Snakemake's script preamble (``snakemake.script``) and the adapter's imports; the median CPU seconds (user +
    system) of ``repeats`` processes, robust to a busy machine as the other CPU figures are."""
    import resource
    import subprocess
    import sys

    out = {}
    for script in sorted(scripts.glob("*.py")):
        code = "import snakemake.script\n" + adapter_imports(script)
        times = []
        for _ in range(repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([sys.executable, "-c", code], check=True, cwd=scripts)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            times.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        out[script.stem] = statistics.median(times)
        log(f"  start-up of a {script.stem} job: {out[script.stem]:.2f} s")
    return out

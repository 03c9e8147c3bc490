"""The cost model's arithmetic (lpntk.cost), the `lpntk cost` command (lpntk.cli) and the rules' resources
(lpntk.resources): seconds, GPU estimates and measured figures, reference rates, runtimes and memory, the report's
header, targets and remedies. The work it prices: test_workload.py."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest
from cost_setup import FIGURES, MODEL_FIGURES

from lpntk.config import load_config
from lpntk.cost import (
    Job,
    Work,
    dataset_sizes,
    gpu_figures,
    job_seconds,
    load_costs,
    uses_cuda,
)


def test_gpu_estimate_scales_the_cpu_figures_and_measured_figures_replace_it(tmp_path):
    cpu = dict(FIGURES, gemm_gflops=100.0)
    devices = {
        "cpu": {"name": "cpu", "job_startup_s": 5.0, "models": {"m@1x2x2": cpu, "other@1x2x2": cpu}},
        "gpu": {
            "name": "gpu",
            "job_startup_s": 9.0,
            "estimate": {"from": "cpu", "gemm_gflops": 1000.0, "assumption": "ten times",
                         "floors": {"m@1x2x2": {"train_step_s": 0.5, "eval_batch_s": 0.25, "predict_step_s": 1.5}}},
        },
    }  # fmt: skip
    gpu = gpu_figures(devices)
    fig = gpu["models"]["m@1x2x2"]
    assert list(gpu["models"]) == ["m@1x2x2"] and "ESTIMATE" in gpu["source"] and fig["source"] == "estimate"
    for key in ("train_sample_s", "eval_sample_s", "grand_sample_s", "kernel_sample_s", "predict_sample_s"):
        assert fig[key] == pytest.approx(FIGURES[key] / 10)
    assert (fig["train_step_s"], fig["eval_batch_s"], fig["predict_step_s"]) == (0.5, 0.25, 1.5)
    assert fig["gemm_gflops"] == 1000.0 and fig["kernel_pair_flops"] == FIGURES["kernel_pair_flops"]

    (tmp_path / "costs.json").write_text(json.dumps({"devices": devices}))
    measured = {"name": "H200", "source": "measured: bench_gpu.py", "job_startup_s": 12.0,
                "models": {"other@1x2x2": dict(FIGURES, train_sample_s=0.001)}}  # fmt: skip
    (tmp_path / "gpu.json").write_text(json.dumps({"devices": {"gpu": measured}}))
    both = load_costs(tmp_path / "costs.json", tmp_path / "gpu.json")["gpu"]
    assert both["models"]["other@1x2x2"]["source"] == "measured"
    assert both["models"]["other@1x2x2"]["train_sample_s"] == 0.001
    assert both["models"]["m@1x2x2"]["source"] == "estimate" and both["job_startup_s"] == 12.0
    assert load_costs(tmp_path / "costs.json", tmp_path / "absent.json")["gpu"]["models"].keys() == {"m@1x2x2"}


def test_uses_cuda_from_the_config_without_torch(monkeypatch):
    assert uses_cuda("cuda") and not uses_cuda("cpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not uses_cuda("auto")  # GPUs hidden from the jobs


def test_job_resources_runtime_memory_and_gpu(repo, schema_path, tmp_path):
    from lpntk.resources import JobResources

    config = load_config(repo / "config" / "paper.yaml", schema_path)
    costs = repo / "benchmarks" / "costs.json"
    cpu = JobResources({**config, "device": "cpu"}, costs, None, tmp_path)
    gpu = JobResources({**config, "device": "cuda"}, costs, None, tmp_path)
    assert (cpu.gpu, gpu.gpu) == (0, 1)
    est = cpu.minutes("cifar10", "train", "seed1")
    assert cpu.runtime("cifar10", "train", "seed1") == max(10, math.ceil(3 * est))
    assert cpu.runtime("cifar10", "train", "seed1", attempt=2) == 2 * cpu.runtime("cifar10", "train", "seed1")
    assert gpu.minutes("cifar10", "train", "seed1") < est  # the GPU's figures
    assert gpu.runtime("mnist", "select_reference") == 10  # local, seconds: the minimum
    assert cpu.minutes("mnist", "retrain", "lpntk-k0.5/all") > 0  # batch_seeds: a subset's seeds in one job
    assert cpu.minutes("cifar10", "retrain", "lpntk-k0.5/seed3") > 0  # one job per seed
    assert cpu.minutes("mnist", "retrain", "no-such-unit/all") is None
    assert cpu.mem_mb("cifar10", "kernel", "class0") > cpu.mem_mb("mnist", "kernel", "class0") >= 2000
    assert cpu.mem_mb("mnist", "kernel", "class0") % 500 == 0
    odd = JobResources({**config, "datasets": {"x": {**config["datasets"]["mnist"], "source": "folder"}}}, costs)
    assert odd.runtime("x", "train", "seed1") == 1440  # no estimate: the fallback


def test_lpntk_cost_command_prints_every_stage_and_loads_no_torch(repo, tmp_path):
    code = (
        "import sys; from lpntk.cli import main; rc = main(sys.argv[1:]); "
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH'); sys.exit(rc)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "cost", "--configfile", str(repo / "config" / "paper.yaml"),
         "--results", str(tmp_path), "--json", str(tmp_path / "cost.json")],
        capture_output=True, text=True, cwd=repo, check=True,
    )  # fmt: skip
    assert out.stdout.strip().endswith("NO-TORCH")
    for stage in ("train", "kernel", "relations", "difficulty", "ld_size", "forgetting", "retrain", "total"):
        assert f"\n{stage} " in out.stdout
    report = json.loads((tmp_path / "cost.json").read_text())
    mnist = {r["stage"]: r for r in report["datasets"]["mnist"]["stages"]}
    # by hand: 10 seeds x 30 epochs; difficulty 1,000 runs x 50 epochs x 110 samples; ld_size 7 sizes, each covering
    # the pool of 10 x 4096 samples, x 30 epochs; on the 54,999 training images
    assert mnist["train"]["epoch_eq"] == pytest.approx(300)
    assert mnist["difficulty"]["epoch_eq"] == pytest.approx(1000 * 50 * 110 / 54999)
    assert mnist["ld_size"]["epoch_eq"] == pytest.approx(7 * 40960 * 30 / 54999)
    assert report["datasets"]["mnist"]["target_gpu_hours"] == 2.0
    assert mnist["scores"]["local"] and mnist["scores"]["gpu_hours"] == 0

    bad = tmp_path / "bad.yaml"
    default = (repo / "config" / "config.yaml").read_text()
    assert "      name: mlp " in default  # the default's model, replaced by one without figures for 8x8 inputs
    bad.write_text(default.replace("      name: mlp ", "      name: resnet18_nobn "))
    err = subprocess.run([sys.executable, "-m", "lpntk", "cost", "--configfile", str(bad), "--results", str(tmp_path)],
                         capture_output=True, text=True, cwd=repo)  # fmt: skip
    assert err.returncode == 2 and "datasets.digits.model: no cost figures for resnet18_nobn@1x8x8" in err.stderr


@pytest.mark.slow
def test_bench_gpu_quick_on_cpu_writes_figures_that_lpntk_cost_reads(repo, tmp_path):
    """benchmarks/bench_gpu.py --quick (tiny sizes, here on the CPU): every section but the ResNet-18 Gram, and a
    JSON whose GPU figures replace the estimate in lpntk cost."""
    import os

    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(repo / "benchmarks" / "bench_gpu.py"), "--quick", "--device", "cpu",
           "--only", "epochs,packed,lockstep,precision,predictor,figures", "--models", "small_cnn",
           "--figure-models", "small_cnn", "--json", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in ("small_cnn epoch, one run", "small_cnn epoch, 2 packed", "small_cnn epoch, lockstep 2",
                 "small_cnn bf16", "small_cnn forgetting step 8 x 8"):  # fmt: skip
        assert line in proc.stdout
    data = json.loads(out.read_text())
    fig = data["devices"]["gpu"]["models"]["small_cnn@1x8x8"]
    assert MODEL_FIGURES <= set(fig) and all(fig[k] >= 0 for k in MODEL_FIGURES)
    assert set(data["sections"]["small_cnn"]["precision"]) == {"fp32", "tf32", "bf16"}
    gpu = load_costs(repo / "benchmarks" / "costs.json", out)["gpu"]
    assert gpu["models"]["small_cnn@1x8x8"]["source"] == "measured"
    assert gpu["models"]["mnist_cnn@1x28x28"]["source"] == "estimate"


def test_paper_scale_page_shows_the_cost_of_the_paper_config(repo, schema_path, tmp_path):
    """docs/paper-scale.md prints what `lpntk cost --configfile config/paper.yaml` prints (before any data is
    prepared); regenerate it when benchmarks/costs.json or the config changes."""
    from lpntk.cli import cost_report, format_report

    readme = (repo / "docs" / "paper-scale.md").read_text()
    block = readme.split("$ lpntk cost --configfile config/paper.yaml\n")[1].split("\n```")[0]
    config = load_config(repo / "config" / "paper.yaml", schema_path)
    costs = load_costs(repo / "benchmarks" / "costs.json", repo / "benchmarks" / "gpu.json")
    assert block == format_report(cost_report(config, costs, tmp_path))


def test_cpu_figures_of_a_busy_machine_are_brought_to_its_reference_rate():
    from lpntk.cost import at_reference_rate

    fig = dict(FIGURES, gemm_gflops=50.0)
    device = {"name": "cpu", "job_startup_s": 5.0, "reference_gemm_gflops": 200.0, "models": {"m@1x2x2": fig}}
    out = at_reference_rate(device)["models"]["m@1x2x2"]
    assert out["train_sample_s"] == pytest.approx(0.25) and out["predict_step_s"] == pytest.approx(7.0 / 4)
    assert out["gemm_gflops"] == 200.0 and out["gemm_gflops_measured"] == 50.0
    assert out["kernel_pair_flops"] == FIGURES["kernel_pair_flops"]  # not a time
    # the pairs' seconds are FLOPs at the reference rate: a quarter of those at the measured rate
    job = Job("kernel", "k", 0, Work(kernel_pairs=8))
    assert job_seconds(job, out, 0) == pytest.approx(job_seconds(job, fig, 0) / 4)
    assert at_reference_rate({**device, "reference_gemm_gflops": None})["models"]["m@1x2x2"] == fig
    # the host's figures and start-ups: brought to the reference rate by the gauge measured beside them
    host = {"gemm_gflops": 100.0, "fpc_element_s": 4.0, "relation_pair_s": 2.0, "startup_s": {"train": 3.0}}
    scaled = at_reference_rate({**device, "host": host})["host"]
    assert (scaled["fpc_element_s"], scaled["relation_pair_s"], scaled["startup_s"]) == (2.0, 1.0, {"train": 1.5})
    assert scaled["gemm_gflops"] == 100.0  # the gauge itself is kept as measured


def test_model_figures_carry_the_hosts_and_name_what_is_missing():
    from lpntk.cost import HOST_FIGURES, model_figures, startup_seconds

    fig = {k: v for k, v in FIGURES.items() if k not in ("run_epoch_s", *HOST_FIGURES)}
    device = {"name": "cpu", "job_startup_s": 5.0, "models": {"m@1x2x2": fig}}
    assert model_figures(device, "m@1x2x2", "x")["missing"] == [*HOST_FIGURES, "run_epoch_s"]
    device["host"] = {**{k: 1.0 for k in HOST_FIGURES}, "startup_s": {"claims": 0.5}}
    out = model_figures(device, "m@1x2x2", "x")
    assert out["missing"] == ["run_epoch_s"] and out["fpc_element_s"] == 1.0
    assert startup_seconds(device) == {"claims": 0.5, "*": 5.0}


def test_gpu_memory_of_a_job_bounds_what_shares_the_gpu(repo, schema_path, tmp_path):
    """gpu_mem_gb: a CIFAR-10 kernel job takes its factor budget (64 GB in paper.yaml) and its Gram, so profiles/gpu's
    130 GB lets two run at once; a training job takes a few GB."""
    from lpntk.resources import JobResources

    config = load_config(repo / "config" / "paper.yaml", schema_path)
    res = JobResources(config, repo / "benchmarks" / "costs.json", None, tmp_path)
    kernel, train = res.gpu_mem_gb("cifar10", "kernel"), res.gpu_mem_gb("cifar10", "train")
    bps = load_costs(repo / "benchmarks" / "costs.json")["cpu"]["models"]["resnet18_nobn@3x32x32"][
        "kernel_bytes_per_sample"
    ]
    data = (60000 * 3072 + 45000 * 200 * 9) / 2**30  # the splits (uint8) and the records on the device
    assert train == math.ceil(1 + data + 6)
    assert kernel == math.ceil(1 + data + 6 + min(64 * 2**30, 4500 * bps) / 2**30 + 4500**2 * 4 / 2**30)
    assert 130 // kernel == 2 and 130 // train >= 16  # profiles/gpu: two kernel jobs at once, or many trainings
    assert res.gpu_mem_gb("mnist", "train") <= 4 and res.gpu_mem_gb("mnist", "kernel") <= 4


# ---------------------------------------------------------------------------------------------- lpntk cost: defects
# of issue "the paper's statistical power on a 2-core CPU" (item 2): (a) figures per model and dataset shape, (b) no
# GPU figures, (c) the command that prepares an unknown dataset, (d) both machines in the header, (e) over target


def _costs_file(tmp_path, cpu_models: dict, floors: dict | None = None):
    """A costs file with the given CPU figures and a GPU estimate with floors for ``floors``' models only."""
    costs = {
        "devices": {
            "cpu": {"name": "fig-machine", "source": "measured: by hand", "measured_on": "2026-12-01",
                    "load_average": [3.5, 4.25], "job_startup_s": 1.0, "models": cpu_models},
            "gpu": {"name": "GPU-X", "job_startup_s": 2.0,
                    "estimate": {"from": "cpu", "gemm_gflops": 40.0, "assumption": "ten times",
                                 "floors": floors or {}}},
        }
    }  # fmt: skip
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(costs))
    return path


def _lpntk_cost(repo, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lpntk", "cost", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or repo)  # fmt: skip


def test_every_config_model_has_cpu_figures_at_its_datasets_shape(repo, schema_path, tmp_path):
    """(a) Each model is measured at the shapes of the datasets the configs under config/ name (measure.MODELS), and
    costs.json holds CPU figures for the model and shape of every shipped config, and for the MLP and LeNet-5 at
    MNIST's shape: `lpntk cost` stops for none of them."""
    sys.path.insert(0, str(repo / "benchmarks"))
    try:
        from measure import DATASET_SHAPES, MODELS
    finally:
        sys.path.remove(str(repo / "benchmarks"))
    costs = load_costs(repo / "benchmarks" / "costs.json")
    keys = {"mlp@1x28x28", "lenet5@1x28x28"}
    for path in sorted((repo / "config").glob("*.yaml")):
        config = load_config(path, schema_path)
        for ds, block in config["datasets"].items():
            shape = dataset_sizes(ds, block, tmp_path).shape
            assert tuple(shape) in DATASET_SHAPES
            assert tuple(shape) in MODELS[block["model"]["name"]]["shapes"], (path.name, ds)
            keys.add(f"{block['model']['name']}@{'x'.join(map(str, shape))}")
    assert keys <= set(costs["cpu"]["models"])
    mlp = costs["cpu"]["models"]["mlp@1x28x28"]
    assert mlp["shape"] == "1x28x28" and mlp["measured_on"] and len(mlp["load_average"]) == 2


def test_bench_costs_measures_a_model_at_the_shapes_asked(repo, tmp_path):
    """(a) The remedy `lpntk cost` prints, `bench_costs.py --models M --shapes S`, measures M at S (here the MLP at
    MNIST's shape, tiny sizes) and --update adds it beside the figures already there, each with its provenance."""
    costs = _costs_file(tmp_path, {"keep@1x8x8": dict(FIGURES, gemm_gflops=4.0)})
    cmd = [sys.executable, str(repo / "benchmarks" / "bench_costs.py"), "--models", "mlp", "--shapes", "1x28x28",
           "--quick", "--threads", "1", "--update", str(costs)]  # fmt: skip
    env = {**__import__("os").environ, "PYTHONPATH": str(repo)}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cpu = json.loads(costs.read_text())["devices"]["cpu"]
    assert set(cpu["models"]) == {"keep@1x8x8", "mlp@1x28x28"} and cpu["name"] == "fig-machine"
    fig = cpu["models"]["mlp@1x28x28"]
    assert MODEL_FIGURES <= set(fig) and fig["shape"] == "1x28x28" and "--shapes 1x28x28" in fig["command"]
    assert fig["kernel_bytes_per_sample"] > 784 * 4  # the first layer's inputs of a 28x28 image, not an 8x8 one


def test_missing_gpu_figures_leave_the_cpu_estimate_standing(repo, tmp_path):
    """(b) A model with CPU figures but none for the GPU: the CPU hours are printed, the GPU columns say n/a."""
    config = tmp_path / "mlp.yaml"
    config.write_text((repo / "config" / "config.yaml").read_text())
    costs = _costs_file(tmp_path, {"mlp@1x8x8": dict(FIGURES, gemm_gflops=4.0)})  # no GPU floor for it
    out = _lpntk_cost(repo, "--configfile", config, "--costs", costs, "--gpu-figures", tmp_path / "none.json",
                      "--results", tmp_path, "--json", tmp_path / "r.json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "GPU columns: no figures for mlp@1x8x8 on GPU-X, n/a; the CPU estimate stands" in out.stdout
    train = next(line for line in out.stdout.splitlines() if line.startswith("train "))
    assert train.split()[-2:] == ["n/a", "n/a"] and float(train.split()[-3].replace(",", "")) > 0
    report = json.loads((tmp_path / "r.json").read_text())
    digits = report["datasets"]["digits"]
    assert digits["total"]["gpu_hours"] is None and digits["total"]["cpu_hours"] > 0
    assert "no GPU figures for mlp@1x8x8 on GPU-X; measure them on a GPU" in digits["gpu_missing"]
    assert report["total"]["gpu_missing"] == ["digits"] and "(without digits: no GPU figures)" in out.stdout
    # with a GPU floor for it, the GPU column is filled
    costs = _costs_file(tmp_path, {"mlp@1x8x8": dict(FIGURES, gemm_gflops=4.0)},
                        {"mlp@1x8x8": {"train_step_s": 0.5, "eval_batch_s": 0.25, "predict_step_s": 1.5}})  # fmt: skip
    out = _lpntk_cost(repo, "--configfile", config, "--costs", costs, "--results", tmp_path)
    assert out.returncode == 0 and "n/a" not in out.stdout and "GPU columns" not in out.stdout


def test_missing_cpu_figures_print_the_command_that_measures_them(repo, tmp_path):
    """(a) No CPU figures for the model at the dataset's shape: the remedy names the model and the shape."""
    config = tmp_path / "mlp.yaml"
    config.write_text((repo / "config" / "config.yaml").read_text())
    costs = _costs_file(tmp_path, {"mlp@1x28x28": dict(FIGURES, gemm_gflops=4.0)})
    out = _lpntk_cost(repo, "--configfile", config, "--costs", costs, "--results", tmp_path)
    assert out.returncode == 2
    assert "no cost figures for mlp@1x8x8 on fig-machine" in out.stderr
    remedy = "`python benchmarks/bench_costs.py --models mlp --shapes 1x8x8 --threads 1 --clock cpu --update"
    assert remedy in out.stderr


def test_prepare_command_puts_the_target_where_snakemake_reads_it(tmp_path, monkeypatch):
    """(c) --configfile takes every word after it as a config file: the printed command names the target first, as
    Snakemake's own parser reads it; --directory when the results are elsewhere."""
    from snakemake.cli import get_argument_parser

    from lpntk.cli import prepare_command

    monkeypatch.chdir(tmp_path)
    cmd = prepare_command("mine", "results", "my config.yaml".replace(" ", "_"))
    args = get_argument_parser().parse_args(cmd.split()[1:])
    assert args.targets == ["results/mine/data/info.json"] and [str(c) for c in args.configfile] == ["my_config.yaml"]
    assert "--snakefile" in cmd  # tmp_path holds no Snakefile: the repository's
    elsewhere = prepare_command("mine", tmp_path / "run" / "results", "c.yaml")
    args = get_argument_parser().parse_args(elsewhere.split()[1:])
    assert args.directory == tmp_path / "run" and args.configfile == [tmp_path / "c.yaml"]
    assert args.targets == ["results/mine/data/info.json"]
    assert "--configfile" not in prepare_command("mine")  # the default config, as the Snakefile's


@pytest.mark.slow
def test_the_printed_prepare_command_works(repo, tmp_path):
    """(c) End to end: an image-folder dataset (size unknown before it is prepared) stops `lpntk cost` with a command;
    that command, run as printed, prepares it; `lpntk cost` then reads its sizes."""
    import shlex

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 48), ("test", 3)):
        for c in range(10):
            folder = tmp_path / "imgs" / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    # a dataset block naming only its data (every use case on, its defaults scaled to the data at start-up)
    root = tmp_path / "imgs"
    text = f"mlflow:\n  enabled: false\ndatasets:\n  mine:\n    source: folder\n    name: mine\n    root: {root}\n"
    text += "    channels: 1\n    model: {name: mlp}\n    train: {epochs: 2}\n"
    (tmp_path / "cfg.yaml").write_text(text)
    first = _lpntk_cost(repo, "--configfile", "cfg.yaml", cwd=tmp_path)
    assert first.returncode == 2 and "is not known before it is prepared" in first.stderr
    command = first.stderr.split("prepare it first with `")[1].split("`")[0]
    argv = shlex.split(command)
    assert argv[0] == "snakemake"  # run as printed, by this interpreter's Snakemake
    proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "results" / "mine" / "data" / "info.json").is_file()
    second = _lpntk_cost(repo, "--configfile", "cfg.yaml", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    sizes = re.search(r"mine: mlp@1x8x8, train (\d+) / val (\d+) / test (\d+) \(prepared\)", second.stdout)
    assert sizes, second.stdout
    assert int(sizes[1]) + int(sizes[2]) == 480 and int(sizes[3]) == 30  # the folder's 10 x 48 and 10 x 3 images


def test_header_names_the_figures_machine_and_this_one(repo, tmp_path):
    """(d) The figures' machine with its load while measuring, and the machine lpntk cost runs on, both printed."""
    import os

    config = tmp_path / "mlp.yaml"
    config.write_text((repo / "config" / "config.yaml").read_text())
    fig = dict(FIGURES, gemm_gflops=4.0, measured_on="2026-12-02", load_average=[5.5, 6.0], threads=1, clock="cpu")
    costs = _costs_file(tmp_path, {"mlp@1x8x8": fig})
    out = _lpntk_cost(repo, "--configfile", config, "--costs", costs, "--results", tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "CPU figures measured on: fig-machine"
    assert "     load average 3.5 -> 4.25 while measuring (2026-12-01)" in lines
    here = next(line for line in lines if line.startswith("this machine: "))
    assert here.startswith(f"this machine: {os.cpu_count()} cores") and "load average" in here
    assert "  (CPU figures of mlp@1x8x8: measured 2026-12-02 at load average 5.5 -> 6, 1 thread(s), cpu clock)" in lines


def test_an_estimate_over_its_target_is_marked(repo, schema_path, tmp_path, monkeypatch):
    """(e) A dataset's GPU hours above the paper-scale target, and all CPU hours above --cpu-target-hours: OVER
    TARGET; below: within."""
    import lpntk.cli as cli

    config = load_config(repo / "config" / "config.yaml", schema_path)
    fig = dict(FIGURES, gemm_gflops=4.0)
    floors = {"mlp@1x8x8": {"train_step_s": 0.5, "eval_batch_s": 0.25, "predict_step_s": 1.5}}
    costs = load_costs(_costs_file(tmp_path, {"mlp@1x8x8": fig}, floors))
    report = cli.cost_report(config, costs, tmp_path)
    gpu_h, cpu_h = report["datasets"]["digits"]["total"]["gpu_hours"], report["total"]["cpu_hours"]
    monkeypatch.setitem(cli.TARGETS_GPU_HOURS, "digits", gpu_h / 2)
    over = cli.cost_report(config, costs, tmp_path, cpu_target_hours=cpu_h / 3)
    text = cli.format_report(over)
    assert over["datasets"]["digits"]["over_target"] and over["total"]["over_target"]
    assert f"(paper-scale target <= {gpu_h / 2:g} GPU h: OVER TARGET, 2.0x)" in text
    assert f"CPU target <= {cpu_h / 3:g} CPU h (all datasets): OVER TARGET, 3.0x" in text
    monkeypatch.setitem(cli.TARGETS_GPU_HOURS, "digits", gpu_h * 2)
    within = cli.format_report(cli.cost_report(config, costs, tmp_path, cpu_target_hours=cpu_h * 4))
    assert "OVER TARGET" not in within and "GPU h: within, 50% of it)" in within and "within, 25% of it" in within

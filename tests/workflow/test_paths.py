"""lpntk.paths: every output's location written once, for the rules (wildcard patterns) and the stages (paths)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lpntk import paths

REPO = Path(__file__).resolve().parents[2]


def test_a_key_left_out_stays_the_rules_wildcard():
    assert paths.train_file("dynamics.npz") == "results/{ds}/train/seed{seed}/dynamics.npz"
    assert paths.train_file("dynamics.npz", "digits", 3) == "results/digits/train/seed3/dynamics.npz"
    assert paths.kernel_file() == "results/{ds}/kernel/seed{seed}/{group}.npz"
    assert paths.kernel_file("mnist", 2, "class0", root="out") == "out/mnist/kernel/seed2/class0.npz"
    assert paths.subsets_file("npz", "tiny", 1, "k0.5") == "results/tiny/pruning/seed1/k0.5.npz"
    assert paths.retrain_file(unit="k0.5") == "results/{ds}/retrain/k0.5/{shard}.json"
    assert paths.fill("{a}/{b}/{a}", a=1) == "1/{b}/1" and paths.fill("{a}", a=None) == "{a}"
    assert list(paths.prepared_files("d")) == ["train", "val", "test", "info"]
    assert paths.summary_page() == "results/summary.md"


def test_job_names_are_the_log_benchmark_and_cost_names():
    assert paths.job_name("kernel", seed=3, group="class0") == "seed3/class0"
    assert paths.job_name("kernel") == "seed{seed}/{group}"
    assert paths.job_name("retrain", unit="k0.5", shard="all") == "k0.5/all"
    assert paths.job_name("claims") == "claims"  # one job per dataset: named by its rule
    assert paths.kernel_job_name(None, "class0") == "reference/class0"
    assert paths.kernel_job_name(2, "class0") == "seed2/class0"
    assert paths.log_file("prune", "tiny", seed=1, group="d0.5") == "results/tiny/logs/prune/seed1/d0.5.log"
    assert paths.benchmark_file("kernel") == "results/{ds}/benchmarks/kernel/seed{seed}/{group}.tsv"
    assert paths.log_file("claims") == "results/{ds}/logs/claims.log"
    assert paths.log_file("summary", ds=None) == "results/logs/summary.log"
    assert paths.benchmark_file("summary", ds=None).startswith(paths.benchmarks_dir(None))
    assert paths.benchmark_file("train", "d", seed=1).startswith(paths.benchmarks_dir("d") + "/train/")


def _workflow_sources() -> list[Path]:
    return [
        REPO / "Snakefile",
        *sorted((REPO / "workflow" / "rules").glob("*.smk")),
        *sorted((REPO / "workflow" / "scripts").glob("*.py")),
        *sorted((REPO / "lpntk" / "stages").glob("*.py")),
    ]


@pytest.mark.parametrize("path", _workflow_sources(), ids=lambda p: p.name)
def test_no_output_path_is_written_outside_the_path_module(path):
    """The rules, their scripts and the stages build no results path of their own: no "results/" prefix, no
    "seed<s>" folder, no benchmark or log folder (docstrings and comments aside)."""
    text = path.read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    code = re.sub(r'"""(.|\n)*?"""', "", code)  # docstrings
    pieces = ["results/", "RESULTS}", "/seed{", "seed{{", "subsets.npz", "benchmarks/", "logs/", "summary.md"]
    found = [p for p in pieces if p in code]
    assert not found, f"{path.relative_to(REPO)} builds a path of its own ({found}): use lpntk.paths"

"""End to end: the Snakemake workflow on the tiny test config, in a temporary directory."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_sketch_of, snakemake

from lpntk.grams import iter_class_grams, load_class_grams

pytestmark = pytest.mark.slow


def test_workflow_produces_models_dynamics_and_mlflow_runs(workflow_run):
    from mlflow.tracking import MlflowClient

    workdir, proc = workflow_run
    res = workdir / "results" / "tiny"
    info = json.loads((res / "data" / "info.json").read_text())
    assert info["n"]["train"] + info["n"]["val"] == 300 and info["n"]["test"] == 100
    for seed in (1, 2):
        d = res / "train" / f"seed{seed}"
        for f in ("model_best.pt", "model_last.pt", "dynamics.npz", "history.csv", "summary.json"):
            assert (d / f).is_file(), f
        dyn = np.load(d / "dynamics.npz")
        assert dyn["l2"].shape == (info["n"]["train"], 3) and dyn["grand"].shape == (info["n"]["train"], 2)
        assert (res / "logs" / "train" / f"seed{seed}.log").is_file()
        assert (res / "benchmarks" / "train" / f"seed{seed}.tsv").is_file()
    assert not list(res.rglob("*.tmp")) and not list(res.rglob("resume.pt"))
    ref = json.loads((res / "reference" / "reference.json").read_text())
    assert ref["seed"] in (1, 2)
    train_y = np.load(res / "data" / "train.npz")["y"]
    # one kernel set per training run: each retraining seed's subsets come from its own; the reference seed's serve
    # use cases 1-2 as well (no kernel computed twice)
    assert sorted(p.name for p in (res / "kernel").iterdir()) == ["seed1", "seed2"]
    grams = {}
    for seed in (1, 2):
        kernel_files = sorted(p.name for p in (res / "kernel" / f"seed{seed}").iterdir())
        assert kernel_files == ["classes0-1-2-3-4.npz", "classes5-6-7-8-9.npz"]  # kernel.classes_per_job: 5
        grams[seed] = load_class_grams([res / "kernel" / f"seed{seed}" / f for f in kernel_files], 10)
        for c, k in enumerate(grams[seed]):
            n = int((train_y == c).sum())
            assert k.gram.shape == (n, n) and np.allclose(k.gram, k.gram.T, rtol=1e-5, atol=1e-6)
            assert (train_y[k.position] == c).all()
    assert not np.allclose(grams[1][0].gram, grams[2][0].gram)  # two models, two kernels

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lpntk-tiny")
    runs = client.search_runs([exp.experiment_id])
    by_rule = {}
    for r in runs:
        by_rule.setdefault(r.data.tags["lpntk.rule"], []).append(r)
    assert {int(r.data.tags["lpntk.seed"]) for r in by_rule["train"]} == {1, 2}
    assert len(by_rule["workflow"]) == 1 and by_rule["workflow"][0].info.status == "FINISHED"
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the runs table, where the tag is read
    note = by_rule["workflow"][0].data.tags["mlflow.note.content"]  # the invocation's description: what it produced
    assert "| train | 2 | 2 FINISHED |" in note and "results/tiny/pruning/table.md" in note
    claims = json.loads((workdir / "results" / "tiny" / "claims" / "summary.json").read_text())
    assert claims["headline"] and all(
        h["verdict"] for h in claims["headline"]
    )  # one line per claim: in the description
    assert "### claims" in note and all(f"**{h['verdict']}**" in note for h in claims["headline"])
    link = f"/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"  # printed at the end
    assert link in proc.stdout + proc.stderr
    parent = by_rule["workflow"][0].info.run_id
    for r in by_rule["train"] + by_rule["prepare_data"]:
        assert r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parent
    kernels = sorted(by_rule["kernel"], key=lambda r: (int(r.data.tags["lpntk.seed"]), int(r.data.tags["lpntk.class"])))
    assert [(int(r.data.tags["lpntk.seed"]), int(r.data.tags["lpntk.class"])) for r in kernels] == [
        (seed, c) for seed in (1, 2) for c in range(10)
    ]
    assert all(float(r.data.metrics["seconds"]) > 0 and r.data.tags["lpntk.mode"] == "exact" for r in kernels)
    train_run = by_rule["train"][0]
    assert len(client.get_metric_history(train_run.info.run_id, "val_acc")) == 3
    assert train_run.data.params["train.epochs"] == "3"


def test_rerun_has_nothing_to_do(repo, workflow_run):
    workdir, _ = workflow_run
    proc = snakemake(repo, workdir, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def _jobs(proc) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run lists."""
    return re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):\n(?:    .*\n)*?    wildcards: (.*)$", proc.stdout, re.M)


def test_dry_run_shows_the_kernel_jobs_of_every_seed(repo, workflow_run):
    workdir, _ = workflow_run
    proc = snakemake(repo, workdir, "-n", "--forcerun", "kernel")
    kernels = sorted(w for rule, w in _jobs(proc) if rule == "kernel")
    assert kernels == [f"ds=tiny, seed={s}, group=classes{g}" for s in (1, 2) for g in ("0-1-2-3-4", "5-6-7-8-9")]


def test_a_seeds_selection_reads_only_its_own_training_run(repo, workflow_run):
    """Rerunning training run 2's kernel and scores reruns seed 2's clusters and subsets, and none of seed 1's."""
    workdir, _ = workflow_run
    forced = ["results/tiny/kernel/seed2/classes0-1-2-3-4.npz", "results/tiny/scores/seed2.csv"]
    jobs = _jobs(snakemake(repo, workdir, "-n", "--forcerun", *forced))
    per_seed = {(rule, w) for rule, w in jobs if rule in ("kernel", "cluster", "scores", "prune")}
    assert per_seed == {
        ("kernel", "ds=tiny, seed=2, group=classes0-1-2-3-4"),
        ("scores", "ds=tiny, part=seed2"),
        ("cluster", "ds=tiny, seed=2"),
        *(("prune", f"ds=tiny, seed=2, group={group}") for group in ("k0.8", "k0.5", "d0.5")),
    }, jobs


def test_editing_one_stage_block_reruns_only_that_stage(repo, workflow_run, tmp_path):
    workdir, _ = workflow_run
    text = (repo / ".test" / "config" / "config.yaml").read_text()
    assert "tau: 0.1" in text
    (tmp_path / "edited.yaml").write_text(text.replace("tau: 0.1", "tau: 0.25"))
    proc = snakemake(repo, workdir, "-n", "--configfile", str(tmp_path / "edited.yaml"), configfile=None)
    table = proc.stdout.split("Job stats:")[1].split("total")[0].strip().splitlines()[2:]  # after the header rows
    jobs = {line.split()[0] for line in table}
    assert jobs == {"relations", "gallery", "summary", "all"}, proc.stdout  # the gallery reads tau


def _job_counts(proc) -> dict[str, int]:
    """{rule: jobs} of a dry run's job stats."""
    table = proc.stdout.split("Job stats:")[1].split("total")[0].strip().splitlines()[2:]  # after the header rows
    return {line.split()[0]: int(line.split()[1]) for line in table}


def test_changing_one_kept_fraction_reruns_only_the_jobs_that_depend_on_it(repo, workflow_run, tmp_path):
    """pruning.keep [0.5] -> [0.6]: the prune jobs of group k0.6 (one per seed), its retraining, and the table, claims,
    gallery and summary downstream -- not the full-set retraining, the curve point 0.8, the small clusters, the
    clusters, the kernels or the training (lpntk.dag)."""
    workdir, _ = workflow_run
    text = (repo / ".test" / "config" / "config.yaml").read_text()
    assert text.count("keep: [0.5]") == 1 and "curve_keep: [0.8]" in text and "group_by: fraction" in text
    (tmp_path / "keep.yaml").write_text(text.replace("keep: [0.5]", "keep: [0.6]"))
    proc = snakemake(repo, workdir, "-n", "--configfile", str(tmp_path / "keep.yaml"), configfile=None)
    counts = _job_counts(proc)
    assert counts == {
        "prune": 2,
        "retrain": 1,
        "pruning_table": 1,
        "claims": 1,
        "gallery": 1,
        "summary": 1,
        "all": 1,
    }, proc.stdout
    jobs = {(rule, w) for rule, w in _jobs(proc) if rule in ("prune", "retrain")}
    assert jobs == {
        ("prune", "ds=tiny, seed=1, group=k0.6"),
        ("prune", "ds=tiny, seed=2, group=k0.6"),
        ("retrain", "ds=tiny, unit=k0.6, shard=all"),
    }, jobs


def test_the_workflow_runs_the_kernel_in_sketch_mode(repo, workflow_run, tmp_path):
    """kernel.mode: sketch through Snakemake (a copy of the tiny run's folder): the config passes, the dry run reruns
    the kernel jobs and what reads their Grams, not the training; the sketched Grams differ from the exact ones but
    stay within the CountSketch's spread, 6 sqrt(2/D) |phi| |phi'|."""
    import shutil

    workdir, _ = workflow_run
    copy = tmp_path / "wf"
    shutil.copytree(workdir, copy, symlinks=True)
    text = (repo / ".test" / "config" / "config.yaml").read_text()
    block = "    kernel:\n      classes_per_job: 5"
    assert text.count(block) == 1
    dim = 2048
    sketched = block + f"\n      mode: sketch\n      sketch_dim: {dim}\n      sketch_seed: 3"
    (tmp_path / "sketch.yaml").write_text(text.replace(block, sketched))
    args = ("--configfile", str(tmp_path / "sketch.yaml"))
    counts = _job_counts(snakemake(repo, copy, "-n", *args, configfile=None))
    assert counts["kernel"] == 4 and "train" not in counts and "prepare_data" not in counts, counts
    target = "results/tiny/kernel/seed2/classes0-1-2-3-4.npz"
    exact = list(iter_class_grams([copy / target]))
    snakemake(repo, copy, target, *args, configfile=None)
    assert_sketch_of(list(iter_class_grams([copy / target])), exact, dim)


def test_editing_the_mlflow_block_reruns_nothing(repo, workflow_run, tmp_path):
    workdir, _ = workflow_run
    text = (repo / ".test" / "config" / "config.yaml").read_text()
    assert "mlflow:\n  enabled: true\n" in text
    edited = text.replace("mlflow:\n  enabled: true\n", "mlflow:\n  enabled: false\n  experiment_prefix: other\n")
    (tmp_path / "edited.yaml").write_text(edited)
    proc = snakemake(repo, workdir, "-n", "--configfile", str(tmp_path / "edited.yaml"), configfile=None)
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout


def test_summary_page_gathers_every_stage(workflow_run):
    workdir, _ = workflow_run
    text = (workdir / "results" / "summary.md").read_text()
    for heading in (
        "## tiny",
        "### Reference training runs",
        "relations between samples",
        "redundant samples",
        "controlling learning difficulty",
        "predicting forgetting events",
        "pruning the training set",
    ):
        assert heading in text, heading
    assert "| test, selected epoch |" in text
    assert "\n#### Pruning the training set of tiny" in text  # a table's own title nests under its section


def test_summary_keeps_the_datasets_of_another_config_in_the_same_folder(repo, workflow_run, tmp_path):
    """Results of another config's dataset in the same results/ (here a copy of tiny's, as "other") keep their
    section when this config's summary is rewritten."""
    import shutil

    workdir, _ = workflow_run
    copy = tmp_path / "wf"
    shutil.copytree(workdir, copy, symlinks=True)
    shutil.copytree(copy / "results" / "tiny", copy / "results" / "other")
    snakemake(repo, copy, "--forcerun", "summary")
    text = (copy / "results" / "summary.md").read_text()
    assert "## tiny" in text and "## other" in text and text.index("## tiny") < text.index("## other")
    assert "other is not in the config that wrote this page" in text


def test_report_bundles_the_results_without_warnings(workflow_run, repo):
    workdir, _ = workflow_run
    proc = snakemake(repo, workdir, "--report", "report.html")
    html = (workdir / "report.html").read_text()
    # a colon in a category name used to cut the report's rst link targets short ("Duplicate explicit target name")
    messages = proc.stdout + proc.stderr  # docutils reports caption problems as "(WARNING/2)", "(ERROR/3)"
    assert "(WARNING/" not in messages and "(ERROR/" not in messages, messages
    for category in ("Use case 1 - relations", "Use case 2 - forgetting", "Use case 3 - pruning", "Samples", "Summary"):
        assert category in html, category


def test_lint_is_clean(repo, tmp_path):
    proc = snakemake(repo, tmp_path, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/paper.yaml", "config/mnist-cpu.yaml"])
def test_dry_run_of_every_shipped_config(repo, tmp_path, configfile):
    import yaml

    proc = snakemake(repo, tmp_path, "-n", configfile=configfile)
    datasets = list(yaml.safe_load((repo / configfile).read_text())["datasets"])
    rules = set(re.findall(r"^(?:rule|checkpoint) (\w+):", _workflow_text(repo), flags=re.M))
    stats = proc.stdout.split("Job stats:")[1].split("\n\n")[0].strip().splitlines()[2:]  # after the header rows
    jobs = {name: int(count) for name, count in (line.split() for line in stats)}
    assert jobs.pop("total") == sum(jobs.values()) and set(jobs) <= rules, jobs
    assert jobs["all"] == 1 and 1 <= jobs["prepare_data"] <= len(datasets), jobs  # datasets' splits come first
    planned = re.findall(r"output: (results/(\S+)/data/train\.npz, .*)", proc.stdout)
    assert len(planned) == jobs["prepare_data"]
    for outputs, ds in planned:
        assert ds in datasets
        assert outputs.split(", ")[:4] == [
            f"results/{ds}/data/{f}" for f in ("train.npz", "val.npz", "test.npz", "info.json")
        ]
    assert not (tmp_path / "results").exists()


def _workflow_text(repo) -> str:
    return "\n".join(p.read_text() for p in [repo / "Snakefile", *sorted((repo / "workflow" / "rules").glob("*.smk"))])


def test_default_config_is_found_from_another_working_directory(repo, tmp_path):
    proc = snakemake(repo, tmp_path, "-n", configfile=None)  # --directory tmp_path holds no config/
    assert "prepare_data" in proc.stdout and "digits" in proc.stdout


def test_broken_config_stops_before_any_job(repo, tmp_path):
    bad = (repo / ".test" / "config" / "config.yaml").read_text().replace("epochs: 3", "epochs: -3")
    (tmp_path / "bad.yaml").write_text(bad)
    cmd_cfg = str(tmp_path / "bad.yaml")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(repo / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--cores",
            "1",
            "--configfile",
            cmd_cfg,
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "config error at datasets.tiny.train.epochs" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "mlflow.db").exists()

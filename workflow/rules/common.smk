# Helpers shared by every stage (config validation, per-dataset parameters, targets, tracking hooks). Parsing the
# workflow imports lpntk.config, lpntk.plan and lpntk.tracking only: none of them loads torch, pandas or mlflow.

import json

from snakemake.logging import logger

from lpntk.config import check_prepared_data, dataset_config, validate_config
from lpntk.plan import (
    SCORE_METHODS,
    class_groups,
    enabled_sections,
    gallery_seed,
    kernel_seeds,
    pruning_seeds,
    reference_checkpoint_name,
    retrain_shards,
    retrain_units,
    seed_groups,
    shard_seeds,
)
from lpntk.resources import JobResources
from lpntk.tracking import check_cluster_uri, finish_invocation, init_store, tracking_uri

validate_config(config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml")

DATASETS = list(config["datasets"])
RESULTS = "results"


# Jobs that read tables and build no model run on the machine that runs Snakemake, never as cluster jobs.
localrules:
    select_reference,
    scores,
    cluster,
    prune,
    forgetting_table,
    pruning_table,
    claims,
    gallery,
    summary,


wildcard_constraints:
    ds="|".join(DATASETS),
    seed=r"\d+",


STAGE_BLOCKS = (
    "model",
    "train",
    "augment",
    "kernel",
    "relations",
    "difficulty",
    "forgetting",
    "scores",
    "pruning",
    "gallery",
    "claims",
)


def stage_cfg(*blocks):
    """``params`` function: the job's dataset block restricted to its data keys and the named ``blocks``.

    This is the config the job reads and what MLflow records as its params. Passing only these keeps Snakemake's
    params rerun trigger precise: editing one stage's block reruns that stage and what depends on its outputs,
    not everything from prepare_data on."""

    def get(wildcards):
        cfg = dataset_config(config, wildcards.ds)
        return {k: v for k, v in cfg.items() if k not in STAGE_BLOCKS or k in blocks}

    return get


def seeds(ds):
    return config["datasets"][ds]["train"]["seeds"]


def prepared_files(ds):
    """The prepare_data outputs of a dataset by name: info.json and the train / val / test splits (all of which
    lpntk.data.load_prepared reads), once the config's data checks passed on them (data_checked)."""
    data_checked(ds)
    return {
        "info": f"{RESULTS}/{ds}/data/info.json",
        "train": f"{RESULTS}/{ds}/data/train.npz",
        "val": f"{RESULTS}/{ds}/data/val.npz",
        "test": f"{RESULTS}/{ds}/data/test.npz",
    }


_DATA_CHECKED = set()


def data_checked(ds):
    """The config's checks that need the data (lpntk.config.check_prepared_data: difficulty.num, pool_per_class, kept
    and small-cluster fractions against the class sizes) on the prepared data of a dataset, before any job that reads
    it is planned: every such job's input function calls this. prepare_data is a checkpoint, so until it has run this
    defers those jobs (their input shows as <TBD> in a dry run) and Snakemake calls it again as soon as it finishes;
    a ConfigError then stops the workflow within seconds, naming the key and the limit, before any training."""
    info = checkpoints.prepare_data.get(ds=ds).output.info
    key = (ds, Path(info).stat().st_mtime_ns)
    if key not in _DATA_CHECKED:
        check_prepared_data(config, ds, info)
        _DATA_CHECKED.add(key)


def train_outputs(ds, name):
    """One output file (summary.json, dynamics.npz, model_best.pt, ...) of every training run of a dataset."""
    return expand(f"{RESULTS}/{ds}/train/seed{{seed}}/{name}", seed=seeds(ds))


def train_files(ds):
    return train_outputs(ds, "summary.json")


def reference_checkpoints(ds):
    """The checkpoints select_reference may copy: every run's best or last one (kernel.checkpoint)."""
    return train_outputs(ds, reference_checkpoint_name(config["datasets"][ds]["kernel"]))


def seed_checkpoint(wildcards):
    """The checkpoint (kernel.checkpoint: best or last) of the training run of the job's seed."""
    name = reference_checkpoint_name(config["datasets"][wildcards.ds]["kernel"])
    return f"{RESULTS}/{wildcards.ds}/train/seed{wildcards.seed}/{name}"


def reference_seed(ds):
    """The reference seed of use cases 1-2: kernel.seed, else the one select_reference chose (a checkpoint: the
    jobs that need it are planned once it has run)."""
    seed = config["datasets"][ds]["kernel"]["seed"]
    if seed is not None:
        return int(seed)
    with open(checkpoints.select_reference.get(ds=ds).output.info) as fh:
        return int(json.load(fh)["seed"])


def num_classes(ds):
    """Number of classes of a dataset, read from its prepared data (prepare_data is a checkpoint)."""
    with open(checkpoints.prepare_data.get(ds=ds).output.info) as fh:
        return json.load(fh)["num_classes"]


def kernel_groups(ds):
    """The kernel jobs' class groups (kernel.classes_per_job classes per job): {"class3": [3]} or {"classes0-1": [0, 1]}."""
    return class_groups(num_classes(ds), config["datasets"][ds]["kernel"]["classes_per_job"])


def kernel_group_classes(wildcards):
    return kernel_groups(wildcards.ds)[wildcards.group]


def kernel_files(ds, seed=None):
    """The kernel files of training run ``seed``; None: the reference seed's (use cases 1-2). Each seed's Grams are
    computed once: the reference seed's serve both use cases 1-2 and, where it retrains, its pruning."""
    seed = reference_seed(ds) if seed is None else int(seed)
    return expand(f"{RESULTS}/{ds}/kernel/seed{seed}/{{group}}.npz", group=list(kernel_groups(ds)))


def kernel_job_name(wildcards):
    """A kernel job's name in the cost plan (lpntk.cost): seed<s>/<group>, or reference/<group> for the reference
    seed's Grams where they serve use cases 1-2 only (the plan does not know which seed select_reference chooses)."""
    known = int(wildcards.seed) in kernel_seeds(config["datasets"][wildcards.ds])
    return f"seed{wildcards.seed}/{wildcards.group}" if known else f"reference/{wildcards.group}"


def stage_enabled(ds, stage):
    return config["datasets"][ds][stage]["enabled"]


# ---- cluster resources (lpntk.resources) -------------------------------------------------------------

JOB_RESOURCES = JobResources(
    config,
    Path(workflow.basedir) / "benchmarks" / "costs.json",
    Path(workflow.basedir) / "benchmarks" / "gpu.json",
    RESULTS,
)


def gpu(stage):
    """The GPU resources of a model-running rule's job when it computes on CUDA (device: cuda, or auto on a machine
    with a GPU): gpu (one device: the SLURM plugin's --gpus), gpu_slots (a share of one machine's GPU) and gpu_mem_gb
    (the GPU memory it may take), whose global limits profiles/gpu sets. Nothing on a CPU-only run."""
    if not JOB_RESOURCES.gpu:
        return {}
    return {"gpu": 1, "gpu_slots": 1, "gpu_mem_gb": lambda wc: JOB_RESOURCES.gpu_mem_gb(wc.ds, stage)}


def runtime(stage, name=None):
    """``runtime`` (minutes) of a stage's job: 3 x its estimated time (lpntk.cost), at least 10 min, x the attempt;
    ``name`` maps the job's wildcards to its name in the plan (seed3, class0, unit/shard)."""

    def get(wildcards, attempt):
        return JOB_RESOURCES.runtime(wildcards.get("ds", ""), stage, name(wildcards) if name else None, attempt)

    return get


def mem_mb(stage, name=None):
    """``mem_mb`` of a stage's job: a base plus 1.5 x the data it holds (lpntk.resources)."""

    def get(wildcards):
        return JOB_RESOURCES.mem_mb(wildcards.get("ds", ""), stage, name(wildcards) if name else None)

    return get


# ---- relations / difficulty (use case 1) -------------------------------------------------------------


def relations_targets(ds):
    if not stage_enabled(ds, "relations"):
        return []
    return [f"{RESULTS}/{ds}/relations/{f}" for f in ("shares.csv", "per_class.csv", "histogram.png")]


def difficulty_targets(ds):
    """The difficulty stage's outputs (difficulty.enabled) and the ld_size stage's (difficulty.size.enabled)."""
    targets = []
    if stage_enabled(ds, "difficulty"):
        targets += [f"{RESULTS}/{ds}/difficulty/{f}" for f in ("auc.csv", "curves.png")]
    if config["datasets"][ds]["difficulty"]["size"]["enabled"]:
        targets += [f"{RESULTS}/{ds}/ld_size/{f}" for f in ("correlation.csv", "correlation.png")]
    return targets


def difficulty_threads(wildcards):
    """Threads of the difficulty and ld_size jobs: difficulty.threads, else the global threads."""
    return config["datasets"][wildcards.ds]["difficulty"]["threads"] or config["threads"]


# ---- forgetting (use case 2) -------------------------------------------------------------------------


def forgetting_seed_groups(ds):
    """Seed groups of the forgetting jobs, by path component (seed3, seeds1-2-3): forgetting.seeds (null: the
    train seeds) in chunks of forgetting.seeds_per_job."""
    fcfg = config["datasets"][ds]["forgetting"]
    return seed_groups(fcfg["seeds"] or seeds(ds), fcfg["seeds_per_job"])


def forgetting_group_seeds(wildcards):
    return forgetting_seed_groups(wildcards.ds)[wildcards.group]


def forgetting_threads(wildcards):
    return config["datasets"][wildcards.ds]["forgetting"]["threads"] or config["threads"]


def forgetting_files(ds):
    """One summary per recipe (forgetting.recipes) and seed group."""
    return expand(
        f"{RESULTS}/{ds}/forgetting/{{recipe}}/{{group}}/summary.json",
        recipe=list(config["datasets"][ds]["forgetting"]["recipes"]),
        group=list(forgetting_seed_groups(ds)),
    )


def forgetting_targets(ds):
    if not stage_enabled(ds, "forgetting"):
        return []
    return [f"{RESULTS}/{ds}/forgetting/{name}" for name in ("table.csv", "table.md", "scores.png", "summary.json")]


# ---- scores / pruning (use case 3) -------------------------------------------------------------------


def pruning_targets(ds):
    """The scores table, the mean over scores.seeds (scores.enabled), and the pruning table and figures
    (pruning.enabled)."""
    targets = []
    if stage_enabled(ds, "scores"):
        targets += expand(f"{RESULTS}/{ds}/scores/scores.{{ext}}", ext=["csv", "json"])
    if stage_enabled(ds, "pruning"):
        targets += expand(
            f"{RESULTS}/{ds}/pruning/{{name}}",
            name=["table.csv", "table.md", "redundant_removal.png", "small_clusters.png"],
        )
    return targets


def uses_scores(ds):
    """Whether the pruning methods read the scores stage's per-seed tables (score baselines and random)."""
    return bool(set(config["datasets"][ds]["pruning"]["methods"]) & {*SCORE_METHODS, "random"})


def score_files(wildcards):
    """The training runs a scores job reads: training run s alone (scores/seed<s>), or every run (scores/scores:
    the mean over scores.seeds)."""
    ds = wildcards.ds
    if wildcards.part == "scores":
        return {"summaries": train_files(ds), "dynamics": train_outputs(ds, "dynamics.npz")}
    run = f"{RESULTS}/{ds}/train/{wildcards.part}"
    return {"summaries": [f"{run}/summary.json"], "dynamics": [f"{run}/dynamics.npz"]}


def score_seeds(wildcards):
    """``seeds`` of a scores job: [s] for scores/seed<s>, None (scores.seeds) for the mean."""
    return None if wildcards.part == "scores" else [int(wildcards.part.removeprefix("seed"))]


def prune_inputs(wildcards):
    """Inputs of the prune job of retraining seed s: the training split and training run s's own FPC clusters and
    (for the baselines) scores, and (for the small-cluster experiment with the subsets' own models) their clusters."""
    ds, seed = wildcards.ds, wildcards.seed
    inputs = {
        "train": f"{RESULTS}/{ds}/data/train.npz",
        "clusters": f"{RESULTS}/{ds}/cluster/seed{seed}/clusters.npz",
    }
    pcfg = config["datasets"][ds]["pruning"]
    if uses_scores(ds):
        inputs["scores"] = f"{RESULTS}/{ds}/scores/seed{seed}.csv"
    if pcfg["small_clusters"]["enabled"] and "own" in pcfg["small_clusters"]["kernels"]:
        inputs["own_clusters"] = f"{RESULTS}/{ds}/cluster/own.npz"
    return inputs


def retrain_subsets(wildcards):
    """The prune outputs a retraining job reads: that of each seed of its shard, in the shard's seed order."""
    seeds = shard_seeds(dataset_config(config, wildcards.ds), wildcards.shard)
    return [f"{RESULTS}/{wildcards.ds}/pruning/seed{s}/subsets.npz" for s in seeds]


def subsets_tables(ds):
    """The prune stage's table of every retraining seed."""
    return expand(f"{RESULTS}/{ds}/pruning/seed{{seed}}/subsets.csv", seed=pruning_seeds(config["datasets"][ds]))


def retrain_files(ds):
    """One result file per retraining unit (subsets grouped by pruning.retrain.group_by) and shard (seeds)."""
    cfg = dataset_config(config, ds)
    return expand(
        f"{RESULTS}/{ds}/retrain/{{unit}}/{{shard}}.json",
        unit=list(retrain_units(cfg)),
        shard=retrain_shards(cfg),
    )


def retrain_threads(wildcards):
    return config["datasets"][wildcards.ds]["pruning"]["retrain"]["threads"] or config["threads"]


# ---- claims ------------------------------------------------------------------------------------------


def claims_inputs(ds):
    """The result files the claims job reads: those of the enabled stages."""
    block = config["datasets"][ds]
    files = {}
    if stage_enabled(ds, "difficulty"):
        files["difficulty"] = f"{RESULTS}/{ds}/difficulty/summary.json"
    if block["difficulty"]["size"]["enabled"]:
        files["ld"] = f"{RESULTS}/{ds}/ld_size/ld.csv"
        files["ld_summary"] = f"{RESULTS}/{ds}/ld_size/summary.json"
    if stage_enabled(ds, "forgetting"):
        files["forgetting"] = f"{RESULTS}/{ds}/forgetting/summary.json"
    if stage_enabled(ds, "pruning"):
        files["pruning_runs"] = f"{RESULTS}/{ds}/pruning/runs.csv"
    return files


# ---- gallery (the samples behind the statistics) ---------------------------------------------------


def gallery_targets(ds):
    """The gallery figure (gallery.enabled): its panels follow the enabled stages (workflow/rules/gallery.smk)."""
    if not stage_enabled(ds, "gallery"):
        return []
    return [f"{RESULTS}/{ds}/gallery/{f}" for f in ("gallery.png", "samples.csv")]


def gallery_inputs(wildcards):
    """The gallery's inputs: training split and kernels always; the outputs of the enabled stages it draws from."""
    ds = wildcards.ds
    inputs = {"train": f"{RESULTS}/{ds}/data/train.npz", "kernels": kernel_files(ds)}
    if stage_enabled(ds, "relations"):
        inputs["cross"] = f"{RESULTS}/{ds}/relations/cross_panel.npz"
    if stage_enabled(ds, "pruning"):  # one pruning seed's clusters and subsets (lpntk.plan.gallery_seed)
        ref = reference_seed(ds)
        seed = gallery_seed(config["datasets"][ds], ref)
        inputs.update(
            clusters=f"{RESULTS}/{ds}/cluster/seed{seed}/clusters.npz",
            subsets=f"{RESULTS}/{ds}/pruning/seed{seed}/subsets.npz",
            subsets_table=f"{RESULTS}/{ds}/pruning/seed{seed}/subsets.csv",
        )
        if seed != ref:
            inputs["selection_kernels"] = kernel_files(ds, seed)
        if uses_scores(ds):
            inputs["scores"] = f"{RESULTS}/{ds}/scores/seed{seed}.csv"
    return inputs


# ---- summary and all ---------------------------------------------------------------------------------


def summary_files(ds):
    """What the summary page reads of one dataset: {"info", "summaries", "reference", <enabled tables>} (the
    tables are lpntk.plan.SECTIONS)."""
    files = {
        "info": f"{RESULTS}/{ds}/data/info.json",
        "summaries": train_files(ds),
        "reference": f"{RESULTS}/{ds}/reference/reference.json",
        "claims": f"{RESULTS}/{ds}/claims/claims.md",
        "claims_summary": f"{RESULTS}/{ds}/claims/summary.json",
    }
    for section in enabled_sections(config["datasets"][ds]):
        files[section.key] = f"{RESULTS}/{ds}/{section.file}"
    return files


def summary_inputs(wildcards):
    files = []
    for ds in DATASETS:
        for v in summary_files(ds).values():
            files += v if isinstance(v, list) else [v]
    return files


def all_outputs(wildcards):
    targets = [f"{RESULTS}/summary.md"]
    for ds in DATASETS:
        targets += train_files(ds) + kernel_files(ds)
        targets += relations_targets(ds) + difficulty_targets(ds) + forgetting_targets(ds) + pruning_targets(ds)
        targets += gallery_targets(ds)
    return targets


def start_tracking():
    if config["mlflow"]["enabled"]:
        check_cluster_uri(tracking_uri(config["mlflow"]["tracking_uri"]), workflow.non_local_exec)
        init_store(DATASETS, config["mlflow"]["tracking_uri"], config["mlflow"]["experiment_prefix"])


def finish_tracking(status):
    """Close the invocation's runs and print (and log) how to open the runs table in the MLflow UI."""
    if config["mlflow"]["enabled"]:
        for line in finish_invocation(status):
            logger.info(line)

# Config access and the helpers the rules share: each job's params (lpntk.dag), its input files, its resources, the
# targets and the tracking hooks. Every path comes from lpntk.paths, where each output's location is written once.
# Parsing the workflow imports lpntk.config, lpntk.plan, lpntk.dag, lpntk.paths and lpntk.tracking only: none of them
# loads torch, pandas or mlflow.

import json

from snakemake.logging import logger

from lpntk import paths
from lpntk.config import check_prepared_data, dataset_config, validate_config
from lpntk.dag import (
    CLUSTER_KEYS,
    OWN_CLUSTERS_KEYS,
    group_score_columns,
    job_config,
    prune_groups,
    prune_keys,
    retrain_groups,
    retrain_job,
)
from lpntk.plan import (
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


def block(ds):
    """The resolved config block of a dataset."""
    return config["datasets"][ds]


def stage_cfg(*blocks, keys=()):
    """``params`` function: the job's dataset block restricted to its data keys, the named stage ``blocks`` and the
    single dotted ``keys`` of others (lpntk.dag.job_config).

    This is the config the job reads and what MLflow records as its params. Passing only these keeps Snakemake's
    params rerun trigger precise: editing one stage's block reruns that stage and what depends on its outputs,
    not everything from prepare_data on."""

    def get(wildcards):
        return job_config(dataset_config(config, wildcards.ds), blocks, keys)

    return get


def seeds(ds):
    return block(ds)["train"]["seeds"]


def stage_enabled(ds, stage):
    return block(ds)[stage]["enabled"]


def prepared_files(ds):
    """The prepare_data outputs of a dataset by name: info.json and the train / val / test splits (all of which
    lpntk.data.load_prepared reads), once the config's data checks passed on them (data_checked)."""
    data_checked(ds)
    return paths.prepared_files(ds)


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
    return [paths.train_file(name, ds, s) for s in seeds(ds)]


def train_files(ds):
    return train_outputs(ds, "summary.json")


def reference_checkpoints(ds):
    """The checkpoints select_reference may copy: every run's best or last one (kernel.checkpoint)."""
    return train_outputs(ds, reference_checkpoint_name(block(ds)["kernel"]))


def seed_checkpoint(wildcards):
    """The checkpoint (kernel.checkpoint: best or last) of the training run of the job's seed."""
    name = reference_checkpoint_name(block(wildcards.ds)["kernel"])
    return paths.train_file(name, wildcards.ds, wildcards.seed)


def reference_seed(ds):
    """The reference seed of use cases 1-2: kernel.seed, else the one select_reference chose (a checkpoint: the
    jobs that need it are planned once it has run)."""
    seed = block(ds)["kernel"]["seed"]
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
    return class_groups(num_classes(ds), block(ds)["kernel"]["classes_per_job"])


def kernel_group_classes(wildcards):
    return kernel_groups(wildcards.ds)[wildcards.group]


def kernel_files(ds, seed=None):
    """The kernel files of training run ``seed``; None: the reference seed's (use cases 1-2). Each seed's Grams are
    computed once: the reference seed's serve both use cases 1-2 and, where it retrains, its pruning."""
    seed = reference_seed(ds) if seed is None else int(seed)
    return [paths.kernel_file(ds, seed, group) for group in kernel_groups(ds)]


def kernel_job_name(wildcards):
    """A kernel job's name in the cost plan (lpntk.cost, lpntk.paths.kernel_job_name): seed<s>/<group>, or
    reference/<group> for the reference seed's Grams where they serve use cases 1-2 only."""
    known = int(wildcards.seed) in kernel_seeds(dataset_config(config, wildcards.ds))
    return paths.kernel_job_name(int(wildcards.seed) if known else None, wildcards.group)


# ---- cluster resources (lpntk.resources) -------------------------------------------------------------

JOB_RESOURCES = JobResources(
    config,
    Path(workflow.basedir) / "benchmarks" / "costs.json",
    Path(workflow.basedir) / "benchmarks" / "gpu.json",
    paths.RESULTS,
)


def gpu(stage):
    """The GPU resources of a model-running rule's job when it computes on CUDA (device: cuda, or auto on a machine
    with a GPU): gpu (one device: the SLURM plugin's --gpus), gpu_slots (a share of one machine's GPU) and gpu_mem_gb
    (the GPU memory it may take), whose global limits profiles/gpu sets. Nothing on a CPU-only run."""
    if not JOB_RESOURCES.gpu:
        return {}
    return {"gpu": 1, "gpu_slots": 1, "gpu_mem_gb": lambda wc: JOB_RESOURCES.gpu_mem_gb(wc.ds, stage)}


def _job_name(stage, name, wildcards):
    """The job's name in the cost plan: ``name(wildcards)`` where given, else lpntk.paths.job_name."""
    if name is not None:
        return name(wildcards)
    return paths.job_name(stage, **{k: v for k, v in wildcards.items() if k != "ds"})


def runtime(stage, name=None):
    """``runtime`` (minutes) of a stage's job: 3 x its estimated time (lpntk.cost), at least 10 min, x the attempt;
    the job is looked up by its name (lpntk.paths.job_name, or ``name(wildcards)``)."""

    def get(wildcards, attempt):
        return JOB_RESOURCES.runtime(wildcards.get("ds", ""), stage, _job_name(stage, name, wildcards), attempt)

    return get


def mem_mb(stage, name=None):
    """``mem_mb`` of a stage's job: a base plus 1.5 x the data it holds (lpntk.resources)."""

    def get(wildcards):
        return JOB_RESOURCES.mem_mb(wildcards.get("ds", ""), stage, _job_name(stage, name, wildcards))

    return get


# ---- relations / difficulty (use case 1) -------------------------------------------------------------


def relations_targets(ds):
    if not stage_enabled(ds, "relations"):
        return []
    return [paths.relations_file(f, ds) for f in ("shares.csv", "per_class.csv", "histogram.png")]


def difficulty_targets(ds):
    """The difficulty stage's outputs (difficulty.enabled) and the ld_size stage's (difficulty.size.enabled)."""
    targets = []
    if stage_enabled(ds, "difficulty"):
        targets += [paths.difficulty_file(f, ds) for f in ("auc.csv", "curves.png")]
    if block(ds)["difficulty"]["size"]["enabled"]:
        targets += [paths.ld_size_file(f, ds) for f in ("correlation.csv", "correlation.png")]
    return targets


def difficulty_threads(wildcards):
    """Threads of the difficulty and ld_size jobs: difficulty.threads, else the global threads."""
    return block(wildcards.ds)["difficulty"]["threads"] or config["threads"]


# ---- forgetting (use case 2) -------------------------------------------------------------------------


def forgetting_seed_groups(ds):
    """Seed groups of the forgetting jobs, by path component (seed3, seeds1-2-3): forgetting.seeds (null: the
    train seeds) in chunks of forgetting.seeds_per_job."""
    fcfg = block(ds)["forgetting"]
    return seed_groups(fcfg["seeds"] or seeds(ds), fcfg["seeds_per_job"])


def forgetting_group_seeds(wildcards):
    return forgetting_seed_groups(wildcards.ds)[wildcards.group]


def forgetting_threads(wildcards):
    return block(wildcards.ds)["forgetting"]["threads"] or config["threads"]


def forgetting_files(ds):
    """One summary per recipe (forgetting.recipes) and seed group."""
    return [
        paths.forgetting_job_file("summary.json", ds, recipe, group)
        for recipe in block(ds)["forgetting"]["recipes"]
        for group in forgetting_seed_groups(ds)
    ]


def forgetting_targets(ds):
    if not stage_enabled(ds, "forgetting"):
        return []
    return [paths.forgetting_file(name, ds) for name in ("table.csv", "table.md", "scores.png", "summary.json")]


# ---- scores / pruning (use case 3) -------------------------------------------------------------------


def pruning_targets(ds):
    """The scores table, the mean over scores.seeds (scores.enabled), and the pruning table and figures
    (pruning.enabled)."""
    targets = []
    if stage_enabled(ds, "scores"):
        targets += [paths.scores_file(ext, ds, "scores") for ext in ("csv", "json")]
    if stage_enabled(ds, "pruning"):
        names = ["table.csv", "table.md", "redundant_removal.png", "small_clusters.png"]
        targets += [paths.pruning_file(name, ds) for name in names]
    return targets


def score_files(wildcards):
    """The training runs a scores job reads: training run s alone (scores/seed<s>), or every run (scores/scores:
    the mean over scores.seeds)."""
    ds = wildcards.ds
    if wildcards.part == "scores":
        return {"summaries": train_files(ds), "dynamics": train_outputs(ds, "dynamics.npz")}
    seed = wildcards.part.removeprefix("seed")
    return {
        "summaries": [paths.train_file("summary.json", ds, seed)],
        "dynamics": [paths.train_file("dynamics.npz", ds, seed)],
    }


def score_seeds(wildcards):
    """``seeds`` of a scores job: [s] for scores/seed<s>, None (scores.seeds) for the mean."""
    return None if wildcards.part == "scores" else [int(wildcards.part.removeprefix("seed"))]


def group_subsets(wildcards):
    """The subset specs of the prune job's group (lpntk.dag.prune_groups)."""
    return prune_groups(dataset_config(config, wildcards.ds))[wildcards.group]


def prune_cfg(wildcards):
    """The prune job's cfg: the data keys and the pruning keys its group's selection reads (lpntk.dag.prune_keys)."""
    return job_config(dataset_config(config, wildcards.ds), keys=prune_keys(group_subsets(wildcards)))


def prune_inputs(wildcards):
    """Inputs of the prune job of retraining seed s and one prune group: the training split and training run s's own
    FPC clusters, its scores where the group's methods read them, and the own_clusters stage's clusters where the
    group's small-cluster subsets are clustered with their own models."""
    ds, seed, specs = wildcards.ds, wildcards.seed, group_subsets(wildcards)
    inputs = {"train": paths.data_file("train.npz", ds), "clusters": paths.cluster_file("clusters.npz", ds, seed)}
    if group_score_columns(specs):
        inputs["scores"] = paths.scores_file("csv", ds, f"seed{seed}")
    if any(p.get("kernel") == "own" for p in specs):
        inputs["own_clusters"] = paths.own_clusters_file("npz", ds)
    return inputs


def group_files(ds, seed, groups, ext="npz"):
    return [paths.subsets_file(ext, ds, seed, group) for group in groups]


def retrain_params(wildcards):
    """What a retraining job reads of the pruning block (lpntk.dag.retrain_job): its subsets, seeds and epochs."""
    return retrain_job(dataset_config(config, wildcards.ds), wildcards.unit, wildcards.shard)


def retrain_inputs(wildcards):
    """The prepared data, and per seed of the shard (``subsets_seed<s>``) the subsets files of the prune groups of
    the unit's subsets: a change of one kept fraction reaches only the units that hold its subsets."""
    ds = wildcards.ds
    cfg = dataset_config(config, ds)
    groups = retrain_groups(cfg, wildcards.unit)
    inputs = prepared_files(ds)
    for seed in shard_seeds(cfg, wildcards.shard):
        inputs[f"subsets_seed{seed}"] = group_files(ds, seed, groups)
    return inputs


def subsets_tables(ds):
    """The prune stage's tables of every retraining seed and prune group."""
    cfg = dataset_config(config, ds)
    return [f for s in pruning_seeds(cfg) for f in group_files(ds, s, prune_groups(cfg), "csv")]


def retrain_files(ds):
    """One result file per retraining unit (subsets grouped by pruning.retrain.group_by) and shard (seeds)."""
    cfg = dataset_config(config, ds)
    return [paths.retrain_file(ds, unit, shard) for unit in retrain_units(cfg) for shard in retrain_shards(cfg)]


def retrain_threads(wildcards):
    return block(wildcards.ds)["pruning"]["retrain"]["threads"] or config["threads"]


# ---- claims ------------------------------------------------------------------------------------------


def claims_inputs(ds):
    """The result files the claims job reads: those of the enabled stages."""
    files = {}
    if stage_enabled(ds, "difficulty"):
        files["difficulty"] = paths.difficulty_file("summary.json", ds)
    if block(ds)["difficulty"]["size"]["enabled"]:
        files["ld"] = paths.ld_size_file("ld.csv", ds)
        files["ld_summary"] = paths.ld_size_file("summary.json", ds)
    if stage_enabled(ds, "forgetting"):
        files["forgetting"] = paths.forgetting_file("summary.json", ds)
    if stage_enabled(ds, "pruning"):
        files["pruning_runs"] = paths.pruning_file("runs.csv", ds)
    return files


# ---- gallery (the samples behind the statistics) ---------------------------------------------------


def gallery_targets(ds):
    """The gallery figure (gallery.enabled): its panels follow the enabled stages (workflow/rules/gallery.smk)."""
    if not stage_enabled(ds, "gallery"):
        return []
    return [paths.gallery_file(f, ds) for f in ("gallery.png", "samples.csv")]


def gallery_inputs(wildcards):
    """The gallery's inputs: training split and kernels always; the outputs of the enabled stages it draws from."""
    ds = wildcards.ds
    inputs = {"train": paths.data_file("train.npz", ds), "kernels": kernel_files(ds)}
    if stage_enabled(ds, "relations"):
        inputs["cross"] = paths.relations_file("cross_panel.npz", ds)
    if stage_enabled(ds, "pruning"):  # one pruning seed's clusters and subsets (lpntk.plan.gallery_seed)
        cfg = dataset_config(config, ds)
        ref = reference_seed(ds)
        seed = gallery_seed(cfg, ref)
        groups = prune_groups(cfg)
        inputs.update(
            clusters=paths.cluster_file("clusters.npz", ds, seed),
            subsets=group_files(ds, seed, groups),
            subsets_table=group_files(ds, seed, groups, "csv"),
        )
        if seed != ref:
            inputs["selection_kernels"] = kernel_files(ds, seed)
        if group_score_columns([p for specs in groups.values() for p in specs]):
            inputs["scores"] = paths.scores_file("csv", ds, f"seed{seed}")
    return inputs


# ---- summary and all ---------------------------------------------------------------------------------


def summary_files(ds):
    """What the summary page reads of one dataset: {"info", "summaries", "reference", <enabled tables>} (the
    tables are lpntk.plan.SECTIONS)."""
    files = {
        "info": paths.data_file("info.json", ds),
        "summaries": train_files(ds),
        "reference": paths.reference_file("reference.json", ds),
        "claims": paths.claims_file("claims.md", ds),
        "claims_summary": paths.claims_file("summary.json", ds),
    }
    for section in enabled_sections(block(ds)):
        files[section.key] = paths.dataset_file(section.file, ds)
    return files


def summary_inputs(wildcards):
    files = []
    for ds in DATASETS:
        for v in summary_files(ds).values():
            files += v if isinstance(v, list) else [v]
    return files


def all_outputs(wildcards):
    targets = [paths.summary_page()]
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

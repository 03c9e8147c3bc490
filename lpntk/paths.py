"""Where the workflow writes: the path of every output, each written once.

The Snakemake rules (``workflow/rules/*.smk``, through ``common.smk``) take their ``output:``, ``log:`` and
``benchmark:`` patterns from here, the rules' input functions build their concrete paths here, and the stages that
look for files on their own (the summary page, which gathers every dataset present under ``results/``) do the
same. Each function takes the dataset and the job's keys; a key left at its default stays the Snakemake wildcard of
that name, so one function gives both a rule's pattern and a job's path::

    >>> train_file("dynamics.npz")
    'results/{ds}/train/seed{seed}/dynamics.npz'
    >>> train_file("dynamics.npz", "digits", 3)
    'results/digits/train/seed3/dynamics.npz'

A job's *name* (:func:`job_name`: ``seed3``, ``seed3/class0``, ``k0.5/all``) is the part of its log and benchmark
paths after the rule, and the name :mod:`lpntk.cost` gives the job in its plan (``lpntk.resources`` looks a job's
runtime up by it). Paths are relative to the workflow's working directory (``root``, default ``results``).
Standard library only: parsing the workflow imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "RESULTS",
    "JOB_NAMES",
    "PREPARED",
    "fill",
    "job_name",
    "kernel_job_name",
    "dataset_dir",
    "dataset_file",
    "data_file",
    "prepared_files",
    "train_file",
    "reference_file",
    "kernel_dir",
    "kernel_file",
    "relations_file",
    "difficulty_file",
    "ld_size_file",
    "forgetting_file",
    "forgetting_job_file",
    "scores_file",
    "cluster_file",
    "own_clusters_file",
    "subsets_file",
    "pruning_file",
    "retrain_file",
    "claims_file",
    "gallery_file",
    "summary_page",
    "log_file",
    "benchmark_file",
    "benchmarks_dir",
]

#: The folder, under the workflow's working directory, that holds every output.
RESULTS = "results"

#: A job's name by rule, for the rules with more than one job per dataset (the others are named by the rule alone):
#: its log is ``logs/<rule>/<name>.log``, its benchmark ``benchmarks/<rule>/<name>.tsv``, and :mod:`lpntk.cost`
#: plans it under this name.
JOB_NAMES = {
    "train": "seed{seed}",
    "kernel": "seed{seed}/{group}",
    "forgetting": "{recipe}/{group}",
    "scores": "{part}",
    "cluster": "seed{seed}",
    "prune": "seed{seed}/{group}",
    "retrain": "{unit}/{shard}",
}

#: The prepare_data outputs by name (what :func:`lpntk.data.load_prepared` reads).
PREPARED = {"train": "train.npz", "val": "val.npz", "test": "test.npz", "info": "info.json"}


class _Wildcards(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(template: str, **keys: Any) -> str:
    """``template`` with the given keys filled in; a key not given (or None) stays the wildcard ``{key}``."""
    return template.format_map(_Wildcards({k: v for k, v in keys.items() if v is not None}))


def job_name(rule: str, **keys: Any) -> str:
    """The name of one job of ``rule`` (:data:`JOB_NAMES`; the rule itself where it has one job per dataset), with the
    given wildcards filled in: ``job_name("kernel", seed=3, group="class0")`` is ``seed3/class0``."""
    return fill(JOB_NAMES.get(rule, rule), **keys)


def kernel_job_name(seed: int | None, group: str) -> str:
    """A kernel job's name in the cost plan: ``seed<s>/<group>``, or ``reference/<group>`` for the Grams of the
    reference seed where the plan cannot know it (chosen at run time) and it computes them for use cases 1-2 only."""
    return f"reference/{group}" if seed is None else job_name("kernel", seed=seed, group=group)


def dataset_dir(ds: str = "{ds}", root: str = RESULTS) -> str:
    """``results/<ds>``: every output of one dataset."""
    return f"{root}/{ds}"


def dataset_file(rel: str, ds: str = "{ds}", root: str = RESULTS) -> str:
    """A file given relative to the dataset's folder (``relations/shares.md``: :data:`lpntk.plan.SECTIONS`)."""
    return f"{dataset_dir(ds, root)}/{rel}"


def data_file(name: str, ds: str = "{ds}", root: str = RESULTS) -> str:
    """``data/<name>``: the prepared splits (train.npz, val.npz, test.npz) and info.json."""
    return dataset_file(f"data/{name}", ds, root)


def prepared_files(ds: str = "{ds}", root: str = RESULTS) -> dict[str, str]:
    """The prepare_data outputs by name (:data:`PREPARED`)."""
    return {key: data_file(name, ds, root) for key, name in PREPARED.items()}


def train_file(name: str, ds: str = "{ds}", seed: int | str = "{seed}", root: str = RESULTS) -> str:
    """``train/seed<s>/<name>``: one output of training run ``seed`` (model_best.pt, dynamics.npz, ...)."""
    return dataset_file(f"train/seed{seed}/{name}", ds, root)


def reference_file(name: str, ds: str = "{ds}", root: str = RESULTS) -> str:
    """``reference/<name>``: the reference checkpoint of use cases 1-2 (model.pt, reference.json)."""
    return dataset_file(f"reference/{name}", ds, root)


def kernel_dir(ds: str = "{ds}", root: str = RESULTS) -> str:
    """``kernel``: every training run's lpNTK Grams."""
    return dataset_file("kernel", ds, root)


def kernel_file(ds: str = "{ds}", seed: int | str = "{seed}", group: str = "{group}", root: str = RESULTS) -> str:
    """``kernel/seed<s>/<group>.npz``: the lpNTK Grams of one class group at training run ``seed``'s checkpoint."""
    return f"{kernel_dir(ds, root)}/seed{seed}/{group}.npz"


def relations_file(name: str, ds: str = "{ds}", root: str = RESULTS) -> str:
    return dataset_file(f"relations/{name}", ds, root)


def difficulty_file(name: str, ds: str = "{ds}", root: str = RESULTS) -> str:
    return dataset_file(f"difficulty/{name}", ds, root)


def ld_size_file(name: str, ds: str = "{ds}", root: str = RESULTS) -> str:
    return dataset_file(f"ld_size/{name}", ds, root)


def forgetting_file(name: str, ds: str = "{ds}", root: str = RESULTS) -> str:
    """``forgetting/<name>``: the forgetting table's outputs."""
    return dataset_file(f"forgetting/{name}", ds, root)


def forgetting_job_file(
    name: str, ds: str = "{ds}", recipe: str = "{recipe}", group: str = "{group}", root: str = RESULTS
) -> str:
    """``forgetting/<recipe>/<seed group>/<name>``: one forgetting job's outputs."""
    return forgetting_file(f"{recipe}/{group}/{name}", ds, root)


def scores_file(ext: str, ds: str = "{ds}", part: str = "{part}", root: str = RESULTS) -> str:
    """``scores/<part>.<ext>``: training run s's scores (part ``seed<s>``) or their mean (part ``scores``)."""
    return dataset_file(f"scores/{part}.{ext}", ds, root)


def cluster_file(name: str, ds: str = "{ds}", seed: int | str = "{seed}", root: str = RESULTS) -> str:
    """``cluster/seed<s>/<name>``: FPC on training run s's Grams (clusters.npz, summary.csv)."""
    return dataset_file(f"cluster/seed{seed}/{name}", ds, root)


def own_clusters_file(ext: str, ds: str = "{ds}", root: str = RESULTS) -> str:
    """``cluster/own.<ext>``: the small-cluster experiment's clusters from the subsets' own models."""
    return dataset_file(f"cluster/own.{ext}", ds, root)


def subsets_file(
    ext: str, ds: str = "{ds}", seed: int | str = "{seed}", group: str = "{group}", root: str = RESULTS
) -> str:
    """``pruning/seed<s>/<group>.<ext>``: the subsets of one prune group (:func:`lpntk.plan.prune_groups`: every
    method at one kept fraction, or one small-cluster data fraction) selected from training run s (npz, csv)."""
    return dataset_file(f"pruning/seed{seed}/{group}.{ext}", ds, root)


def pruning_file(name: str, ds: str = "{ds}", root: str = RESULTS) -> str:
    """``pruning/<name>``: the pruning table's outputs."""
    return dataset_file(f"pruning/{name}", ds, root)


def retrain_file(ds: str = "{ds}", unit: str = "{unit}", shard: str = "{shard}", root: str = RESULTS) -> str:
    """``retrain/<unit>/<shard>.json``: the test accuracies of one retraining job."""
    return dataset_file(f"retrain/{unit}/{shard}.json", ds, root)


def claims_file(name: str, ds: str = "{ds}", root: str = RESULTS) -> str:
    return dataset_file(f"claims/{name}", ds, root)


def gallery_file(name: str, ds: str = "{ds}", root: str = RESULTS) -> str:
    return dataset_file(f"gallery/{name}", ds, root)


def summary_page(root: str = RESULTS) -> str:
    """``summary.md``: every dataset present under ``root`` on one page."""
    return f"{root}/summary.md"


def _job_path(kind: str, ext: str, rule: str, ds: str | None, root: str, keys: Mapping[str, Any]) -> str:
    base = f"{root}/{kind}" if ds is None else f"{dataset_dir(ds, root)}/{kind}"
    name = f"{rule}/{job_name(rule, **keys)}" if rule in JOB_NAMES else rule
    return f"{base}/{name}.{ext}"


def log_file(rule: str, ds: str | None = "{ds}", root: str = RESULTS, **keys: Any) -> str:
    """``logs/<rule>[/<job name>].log`` of a dataset's job (``ds=None``: a job over every dataset, ``results/logs``)."""
    return _job_path("logs", "log", rule, ds, root, keys)


def benchmark_file(rule: str, ds: str | None = "{ds}", root: str = RESULTS, **keys: Any) -> str:
    """``benchmarks/<rule>[/<job name>].tsv``: Snakemake's time and memory of the job (:mod:`lpntk.timing`)."""
    return _job_path("benchmarks", "tsv", rule, ds, root, keys)


def benchmarks_dir(ds: str | None = "{ds}", root: str = RESULTS) -> str:
    """Every benchmark file of a dataset (``ds=None``: of the jobs over every dataset)."""
    return f"{root}/benchmarks" if ds is None else f"{dataset_dir(ds, root)}/benchmarks"

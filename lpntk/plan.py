"""The workflow's plan: which jobs a config asks for, and the names of their files.

Everything the Snakefile needs to build the DAG before any job runs -- seed groups of the forgetting jobs, class
groups of the kernel jobs, the pruning experiment's subsets and retraining units, the summary's sections -- as
plain functions of the resolved config. The stage functions read the same plan at run time, so the two never
disagree. Like :mod:`lpntk.config` and :mod:`lpntk.tracking`, this module imports only the standard library:
parsing the workflow (once per job on a cluster) never loads torch, pandas or mlflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from .methods import NameView, keep_methods, method, random_methods, score_methods

__all__ = [
    "fmt",
    "group_name",
    "seed_groups",
    "class_groups",
    "kernel_group_name",
    "reference_checkpoint_name",
    "KEEP_METHODS",
    "SCORE_METHODS",
    "SMALL_CLUSTER_METHODS",
    "RANDOM_METHODS",
    "check_pruning_config",
    "uses_scores",
    "score_columns",
    "pruning_seeds",
    "kernel_seeds",
    "gallery_seed",
    "small_draw_seed",
    "small_draw_seeds",
    "small_key",
    "subset_plan",
    "retrain_settings",
    "retrain_shards",
    "shard_seeds",
    "subset_group",
    "retrain_units",
    "cluster_keeps",
    "Section",
    "SECTIONS",
    "enabled_sections",
]


def fmt(x: float) -> str:
    """A number as it appears in file and subset names: ``0.5`` -> ``0.5``, ``1.0`` -> ``1``."""
    return f"{float(x):g}"


# ---------------------------------------------------------------------------------------------- job groups


def group_name(prefix: str, members: Sequence[int]) -> str:
    """The path component of a job over ``members``: ``seed3`` for one, ``seeds1-2-3`` (``classes0-1``) for several."""
    members = [int(m) for m in members]
    if len(members) == 1:
        return f"{prefix}{members[0]}"
    plural = prefix + ("es" if prefix.endswith("s") else "s")
    return plural + "-".join(str(m) for m in members)


def _chunks(members: Sequence[int], per_job: int, what: str) -> list[list[int]]:
    members = [int(m) for m in members]
    if int(per_job) < 1:
        raise ValueError(f"{what}: expected at least 1 per job, got {per_job}")
    if len(set(members)) != len(members):
        raise ValueError(f"{what}: {members} repeats a member")
    return [members[i : i + int(per_job)] for i in range(0, len(members), int(per_job))]


def seed_groups(seeds: Sequence[int], per_job: int) -> dict[str, list[int]]:
    """The forgetting jobs' seed groups: ``seeds`` in order, in chunks of ``per_job``, keyed by :func:`group_name`
    (``{"seeds1-2": [1, 2], "seed3": [3]}`` for seeds 1-3, two per job)."""
    return {group_name("seed", c): c for c in _chunks(seeds, per_job, "forgetting.seeds_per_job")}


def class_groups(num_classes: int, per_job: int) -> dict[str, list[int]]:
    """The kernel jobs' class groups: classes 0..C-1 in chunks of ``kernel.classes_per_job``
    (``{"class0": [0], ...}`` with one class per job, ``{"classes0-1-...-9": [0, ..., 9]}`` with all in one)."""
    return {group_name("class", c): c for c in _chunks(range(int(num_classes)), per_job, "kernel.classes_per_job")}


def kernel_group_name(klass: int, num_classes: int, per_job: int) -> str:
    """The kernel file (group) that holds class ``klass``."""
    for name, members in class_groups(num_classes, per_job).items():
        if int(klass) in members:
            return name
    raise ValueError(f"class {klass} is not among the {num_classes} classes")


def reference_checkpoint_name(kernel_cfg: Mapping[str, Any]) -> str:
    """File name of the training run's checkpoint the kernels use: ``kernel.checkpoint`` best or last."""
    return "model_best.pt" if kernel_cfg["checkpoint"] == "best" else "model_last.pt"


# ---------------------------------------------------------------------------------------------- pruning

#: methods selecting a kept fraction of the training set (one subset per keep fraction; :mod:`lpntk.methods`)
KEEP_METHODS = NameView(keep_methods)
#: methods ranking by a score of the scores stage (the random baseline aside)
SCORE_METHODS = NameView(score_methods)
#: the small-cluster experiment's removal rule and its controls, by their config name
SMALL_CLUSTER_METHODS = {"small": "small_clusters", "random": "random_removal", "large": "large_clusters"}


def check_pruning_config(cfg: Mapping[str, Any]) -> None:
    """Kept and removed fractions lie in (0, 1), and every retraining seed is a training seed (its subsets are
    selected from that seed's own reference run); ValueError naming the key otherwise."""
    pcfg = cfg["pruning"]
    for key in ("keep", "curve_keep"):
        bad = [k for k in pcfg.get(key) or [] if not 0 < float(k) < 1]
        if bad:
            raise ValueError(f"pruning.{key}: kept fractions must lie in (0, 1), got {bad}")
    scfg = pcfg["small_clusters"]
    if scfg["enabled"]:
        bad = [r for r in scfg["remove"] if not 0 < float(r) < 1]
        if bad:
            raise ValueError(f"pruning.small_clusters.remove: fractions must lie in (0, 1), got {bad}")
    train_seeds = [int(s) for s in cfg["train"]["seeds"]]
    for seed in pcfg["retrain"].get("seeds") or []:
        if int(seed) not in train_seeds:
            raise ValueError(
                f"pruning.retrain.seeds: seed {seed} is not among train.seeds {train_seeds}; retraining seed s trains "
                f"on the subsets selected from training run s (its kernel, its scores), so add {seed} to train.seeds "
                f"or remove it from pruning.retrain.seeds (null: every training seed)"
            )


def pruning_seeds(cfg: Mapping[str, Any]) -> list[int]:
    """The seeds whose training runs select pruning subsets: the retraining seeds (``pruning.retrain.seeds``, else
    ``train.seeds``) when ``pruning.enabled``, else none. Retraining seed s trains on the subsets selected from
    training run s alone -- lpNTK from the lpNTK Gram at its checkpoint, the score baselines from its dynamics."""
    return list(retrain_settings(cfg)["seeds"]) if cfg["pruning"]["enabled"] else []


def kernel_seeds(cfg: Mapping[str, Any], reference: int | None = None) -> list[int | None]:
    """The training runs whose checkpoint (``kernel.checkpoint``) gets per-class lpNTK Grams (``kernel/seed<s>/``):
    every seed of :func:`pruning_seeds`, and the reference seed of use cases 1-2 (relations, difficulty, forgetting,
    gallery) -- each computed once: when the reference seed is a pruning seed, its Grams serve both.

    ``reference``: the seed select_reference chose; without it, ``kernel.seed`` where set, else ``None`` stands for
    the reference seed (chosen at run time) where it may lie outside the pruning seeds."""
    seeds = pruning_seeds(cfg)
    ref = reference if reference is not None else cfg["kernel"].get("seed")
    if ref is not None:
        return seeds if int(ref) in seeds else [*seeds, int(ref)]
    return seeds if {int(s) for s in cfg["train"]["seeds"]} <= set(seeds) else [*seeds, None]


def gallery_seed(cfg: Mapping[str, Any], reference: int) -> int:
    """The pruning seed whose clusters and subsets the gallery shows: the reference seed where it is a pruning seed
    (its Grams are those of the gallery's relations panel), else the first pruning seed."""
    seeds = pruning_seeds(cfg)
    if not seeds:
        raise ValueError("pruning is not enabled: no pruning seed to show")
    return int(reference) if int(reference) in seeds else seeds[0]


#: methods whose subset depends on a random draw (a random score, tie-break, member or subset): drawn per retraining
#: seed with ``pruning.draws: per_seed``
RANDOM_METHODS = NameView(random_methods)


def uses_scores(cfg: Mapping[str, Any]) -> bool:
    """Whether the pruning experiment reads the scores stage's per-seed tables (a method with a ``score``)."""
    return bool(cfg["pruning"]["enabled"] and score_columns(cfg))


def score_columns(cfg: Mapping[str, Any]) -> list[str]:
    """The scores-table columns the configured pruning methods keep the highest of, in table order (with
    ``random``, the tie-breaks of the shared draws, whenever one is read); empty when none ranks by a score."""
    cols = [method(m).score for m in cfg["pruning"]["methods"] if method(m).score is not None]
    return list(dict.fromkeys([*cols, "random"])) if cols else []


def subset_plan(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every training subset the config asks for, in a fixed order: name, method, experiment and parameters.

    ``full``; ``<method>-k<keep>`` for every method of ``pruning.methods`` that keeps a fraction (lpntk and
    random also at ``pruning.curve_keep``); ``node-c<cluster_keep>``; and for the small-cluster experiment
    ``d<fraction>-base`` (the class-balanced subset itself) and ``d<fraction>-[own-]<small|random|large>-r<remove>``
    (clusters from the kernel of the full-data model, or, with ``own-``, of a model trained on the subset itself).
    Every subset but ``full`` is selected for each retraining seed s from training run s alone (its lpNTK Grams,
    its scores: :func:`pruning_seeds`). ``per_seed``: its random draw, too, is made anew for every retraining seed
    (``pruning.draws: per_seed``, the default: the random baseline, the score baselines' random tie-breaks, the random
    members of lpntk_random and node, and the small-cluster experiment's class-balanced subsets); otherwise one draw
    serves every seed (``shared``). Either way the spread over seeds includes the selection's.
    """
    pcfg = cfg["pruning"]
    plan: list[dict[str, Any]] = [{"name": "full", "method": "full", "experiment": "table", "keep": 1.0}]
    for name in pcfg["methods"]:
        m = method(name)
        if m.experiment != "table":
            raise ValueError(f"pruning.methods: {name!r} is not a method of the pruning table")
        if not m.keep:  # its own parameters (node: cluster_keep); its kept fraction is an outcome
            plan += [{**spec, "method": name, "experiment": "table"} for spec in m.subsets(pcfg)]
            continue
        keeps = [float(k) for k in pcfg["keep"]]
        if m.curve:
            keeps += [float(k) for k in pcfg.get("curve_keep") or []]
        for keep in sorted(set(keeps), reverse=True):
            plan.append({"name": f"{name}-k{fmt(keep)}", "method": name, "experiment": "table", "keep": keep})
    if pcfg["small_clusters"]["enabled"]:
        plan += _small_cluster_subsets(pcfg["small_clusters"])
    per_seed = pcfg["draws"] == "per_seed"
    for p in plan:
        p["per_seed"] = per_seed and method(p["method"]).random
    names = [p["name"] for p in plan]
    if len(set(names)) != len(names):
        raise ValueError(f"pruning: subset names repeat ({names}); check pruning.methods for duplicates")
    return plan


def _small_cluster_subsets(scfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The small-cluster experiment's subsets (a ``pruning.small_clusters`` block), in :func:`subset_plan`'s order: per
    data fraction its class-balanced base, then per kernel, removed fraction and arm (small clusters, then the
    controls) ``d<fraction>-[own-]<arm>-r<remove>``."""
    subsets: list[dict[str, Any]] = []
    for d in sorted({float(x) for x in scfg["data_fractions"]}):
        base = {"experiment": "small_clusters", "data_fraction": d}
        subsets.append(
            {"name": f"d{fmt(d)}-base", "method": "base", **base, "remove": 0.0, "keep": 1.0, "kernel": "full"}
        )
        for kernel in scfg["kernels"]:
            prefix = "" if kernel == "full" else f"{kernel}-"
            for r in sorted({float(x) for x in scfg["remove"]}):
                for m in ["small", *scfg["controls"]]:
                    name = f"d{fmt(d)}-{prefix}{m}-r{fmt(r)}"
                    subsets.append(
                        {
                            "name": name,
                            "method": SMALL_CLUSTER_METHODS[m],
                            **base,
                            "remove": r,
                            "keep": 1.0 - r,
                            "kernel": kernel,
                        }
                    )
    return subsets


def small_draw_seed(cfg: Mapping[str, Any], seed: int) -> int | None:
    """The draw of the small-cluster experiment's class-balanced subsets that retraining seed ``seed`` uses: its own
    (``pruning.draws: per_seed``) or None, the one draw shared by every seed (``shared``)."""
    return int(seed) if cfg["pruning"]["draws"] == "per_seed" else None


def small_draw_seeds(cfg: Mapping[str, Any]) -> list[int | None]:
    """Every draw of the small-cluster experiment's class-balanced subsets: one per retraining seed, or ``[None]``
    (one draw shared by every seed, ``pruning.draws: shared``)."""
    return list(dict.fromkeys(small_draw_seed(cfg, s) for s in retrain_settings(cfg)["seeds"]))


def small_key(data_fraction: float, seed: int | None, kernel: str = "full") -> str:
    """The clusters file's prefix of one small-cluster draw: ``small_d<d>`` (the kernel of the full-data model: in
    the retraining seed's own clusters file) or ``own_d<d>`` (the subset's own model), with ``_s<seed>`` for a
    per-seed draw (:func:`small_draw_seed`); its members are ``<prefix>_index`` and ``<prefix>_cluster``."""
    prefix = "small" if kernel == "full" else kernel
    return f"{prefix}_d{fmt(data_fraction)}" + ("" if seed is None else f"_s{int(seed)}")


def retrain_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Seeds and epochs of the retraining runs: ``pruning.retrain`` overrides, else the ``train`` block;
    ``small_epochs``: ``pruning.small_clusters.epochs``, else the same epochs."""
    rcfg = cfg["pruning"]["retrain"]
    seeds = [int(s) for s in (rcfg.get("seeds") or cfg["train"]["seeds"])]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"pruning.retrain.seeds repeat: {seeds}")
    epochs = int(rcfg.get("epochs") or cfg["train"]["epochs"])
    small = cfg["pruning"]["small_clusters"].get("epochs")
    return {"seeds": seeds, "epochs": epochs, "small_epochs": int(small or epochs)}


def retrain_shards(cfg: Mapping[str, Any]) -> list[str]:
    """``["all"]`` (every seed in one job) or ``["seed1", "seed2", ...]`` (``pruning.retrain.batch_seeds: false``)."""
    if cfg["pruning"]["retrain"]["batch_seeds"]:
        return ["all"]
    return [f"seed{s}" for s in retrain_settings(cfg)["seeds"]]


def shard_seeds(cfg: Mapping[str, Any], shard: str) -> list[int]:
    """The retraining seeds of one shard of :func:`retrain_shards`: every seed (``all``) or ``seed<s>``'s."""
    seeds = retrain_settings(cfg)["seeds"]
    if shard == "all":
        return list(seeds)
    if shard.startswith("seed") and shard[4:].isdigit() and int(shard[4:]) in seeds:
        return [int(shard[4:])]
    raise ValueError(f"shard {shard!r}: expected 'all' or seed<n> with n in {list(seeds)}")


def subset_group(spec: Mapping[str, Any]) -> str | None:
    """The prune group of a subset of :func:`subset_plan` (one prune job per retraining seed and group, one subsets
    file each): ``k<keep>`` for every method at one kept fraction, ``d<fraction>`` for the small-cluster experiment
    at one data fraction, the subset's own name for a method whose kept fraction is an outcome (``node-c0.5``); None
    for the full training set, which needs no selection."""
    if spec["method"] == "full":
        return None
    if spec["experiment"] == "small_clusters":
        return f"d{fmt(spec['data_fraction'])}"
    return spec["name"] if spec.get("keep") is None else f"k{fmt(spec['keep'])}"


def retrain_units(cfg: Mapping[str, Any]) -> dict[str, list[str]]:
    """The retraining jobs' units: {unit name: subset names}, after ``pruning.retrain.group_by``.

    ``subset``: one unit per subset (unit = subset name); ``fraction``: one unit per prune group
    (:func:`subset_group`: every method at one kept fraction, ``k<keep>``; every subset of one small-cluster data
    fraction, ``d<fraction>``) and ``full``; ``method``: one unit per method of the table (all its kept fractions)
    and one per data fraction of the small-cluster experiment (``d<fraction>``); ``all``: a single unit ``all``.
    Grouping only saves per-job start-up time; the runs and their seeds are the same. A unit reruns whole: with
    ``subset`` or ``fraction`` a changed kept fraction reruns only its own subsets' training, with ``method`` every
    fraction of the methods concerned, with ``all`` everything.
    """
    group_by = cfg["pruning"]["retrain"]["group_by"]
    units: dict[str, list[str]] = {}
    for p in subset_plan(cfg):
        if group_by == "subset":
            unit = p["name"]
        elif group_by == "fraction":
            unit = subset_group(p) or "full"
        elif group_by == "method":
            unit = p["method"] if p["experiment"] == "table" else f"d{fmt(p['data_fraction'])}"
        else:
            unit = "all"
        units.setdefault(unit, []).append(p["name"])
    return units


def cluster_keeps(cfg: Mapping[str, Any]) -> list[float]:
    """Kept fractions at which the cluster stage records the FPC assignment (all keeps, node's cluster_keep)."""
    pcfg = cfg["pruning"]
    keeps = {float(k) for k in pcfg["keep"]} | {float(k) for k in pcfg.get("curve_keep") or []}
    for name in pcfg["methods"]:
        if not method(name).keep:
            keeps |= {float(s["cluster_keep"]) for s in method(name).subsets(pcfg) if "cluster_keep" in s}
    return sorted(keeps, reverse=True)


# ---------------------------------------------------------------------------------------------- summary


class Section(NamedTuple):
    """One stage table of the summary page (the workflow's summary rule reads the same entries for its inputs)."""

    key: str  #: key of the table's file in a dataset's input mapping
    flag: tuple[str, ...]  #: path in the dataset block of the block whose ``enabled`` turns the table on
    file: str  #: the table's file under ``results/<dataset>/``
    heading: str
    text: str  #: what the table shows


#: The stage tables in page order.
SECTIONS: tuple[Section, ...] = (
    Section(
        "relations_shares",
        ("relations",),
        "relations/shares.md",
        "Use case 1 - relations between samples under lpNTK",
        "Shares of interchangeable / unrelated / contradictory pairs (cosine rule at tau = 0 and the configured "
        "tau, and the official code's raw-value rule beside its MNIST numbers).",
    ),
    Section(
        "relations_per_class",
        ("relations",),
        "relations/per_class.md",
        "Use case 1 - redundant samples per class",
        "Redundant: some other sample x' of the class has kappa(x, x') > kappa(x, x) (the slides' definition); "
        "share_selfmax_larger_index is the official code's self-max test (against later samples only) applied "
        "within each class; the official code tested against later samples of every class and found 46.9 % "
        "self-max samples on MNIST, so the within-class rate runs higher and is not directly comparable.",
    ),
    Section(
        "difficulty_auc",
        ("difficulty",),
        "difficulty/auc.md",
        "Use case 1 - controlling learning difficulty",
        "Area under the targets' L2-error curves when the training set adds the samples most interchangeable "
        "with them (easy), around the median, the least similar (hard), and with negative lpNTK "
        "(contradictory).",
    ),
    Section(
        "ld_size_correlation",
        ("difficulty", "size"),
        "ld_size/correlation.md",
        "Use case 1 - learning difficulty vs dataset size",
        "Correlation of per-sample learning difficulty between nested training sets of different sizes.",
    ),
    Section(
        "forgetting_table",
        ("forgetting",),
        "forgetting/table.md",
        "Use case 2 - predicting forgetting events",
        "First-order prediction of forgetting events with eNTK blocks, lpNTK and pNTK; the slides' numbers "
        "beside the stepwise rows (the official code's per-step averaging).",
    ),
    Section(
        "pruning_table",
        ("pruning",),
        "pruning/table.md",
        "Use case 3 - pruning the training set",
        "Test accuracy after retraining on the kept subsets; the slides' numbers beside ours.",
    ),
)


def enabled_sections(block: Mapping[str, Any]) -> list[Section]:
    """The sections whose stage a dataset's config ``block`` enables, in page order."""
    out = []
    for section in SECTIONS:
        node = block
        for part in section.flag:
            node = node[part]
        if node["enabled"]:
            out.append(section)
    return out

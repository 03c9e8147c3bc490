"""Configuration: validation against the workflow's JSON schema, defaults, and checks the schema cannot do.

:func:`validate_config` is called by the Snakefile before any job is scheduled. It fills in the schema's
defaults, then reports the *first* problem as one :class:`ConfigError` whose message names the key (as a
dotted path), the offending value, and what is allowed -- e.g.::

    config error at datasets.digits.train: unknown key 'epochz' (allowed: batch_size, epochs, ...)
    config error at datasets.digits.train.epochs: -3 is less than the minimum of 1 -- number of epochs

Every config check lives here or in the schema (``workflow/schemas/*.schema.yaml``); the stages trust a validated
config. Three layers, run in this order at start-up:

1. the schema: types, ranges, enums, unknown keys, and its defaults;
2. the defaults that depend on other keys or on the data (:func:`resolve_defaults`: ``train.score_epochs``,
   ``difficulty.size.pool_per_class``, ``pruning.small_clusters.data_fractions``), then the cross-key checks;
3. the checks that need the data's class sizes (:func:`check_data`: ``difficulty.num``, ``random_targets``,
   ``pool_per_class``, kept fractions, small-cluster fractions), with the sizes known at start-up -- the prepared
   data's (``results/<ds>/data/info.json``, when prepared from the same data keys), else a known source's size or an
   image folder's files. The workflow runs them again on the prepared data (:func:`check_prepared_data`) as soon
   as prepare_data has run and before any job that reads the data is planned, so a value the data cannot serve
   fails within seconds, naming the key and the limit, not after training.

Longer than 450 lines because the validation is one module: the schema's errors, the defaults it leaves to the
data, the cross-key checks and the data checks, each naming the key.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .cost import KNOWN_SOURCES, dataset_sizes
from .plan import check_pruning_config, uses_scores
from .plugins import load_plugins, widen_enums

__all__ = [
    "ConfigError",
    "ClassSizes",
    "STAGE_BLOCKS",
    "load_schema",
    "validate_config",
    "load_config",
    "dataset_config",
    "data_keys",
    "resolve_defaults",
    "prepared_sizes",
    "estimated_sizes",
    "check_data",
    "check_prepared_data",
]


class ConfigError(ValueError):
    """A config value is missing, misspelt, of the wrong type or out of range."""


def load_schema(path: str | os.PathLike) -> dict:
    """The config schema at ``path``, with the ``$defs`` of every other ``*.schema.yaml`` beside it merged in.

    Each workflow stage describes its config block in its own file (``workflow/schemas/<stage>.schema.yaml``,
    holding ``$defs: {<stage>: ...}``); the main schema refers to it as ``{$ref: "#/$defs/<stage>"}``.
    """
    path = Path(path)
    with open(path) as fh:
        schema = yaml.safe_load(fh)
    for other in sorted(path.parent.glob("*.schema.yaml")):
        if other.resolve() == path.resolve():
            continue
        with open(other) as fh:
            defs = (yaml.safe_load(fh) or {}).get("$defs", {})
        clash = set(defs) & set(schema.setdefault("$defs", {}))
        if clash:
            raise ConfigError(f"schema {other} redefines {sorted(clash)}")
        schema["$defs"].update(defs)
    return schema


def _path(parts) -> str:
    return ".".join(str(p) for p in parts) or "<top level>"


def _subschema(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), ref
        node = root
        for part in ref[2:].split("/"):
            node = node[part]
        schema = node
    return schema


def _message(err, root: dict) -> str:
    where = _path(err.absolute_path)
    sub = _subschema(err.schema, root) if isinstance(err.schema, dict) else {}
    if err.validator == "additionalProperties":
        allowed = sorted(sub.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed)) if isinstance(err.instance, dict) else []
        names = ", ".join(repr(e) for e in extra)
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"config error at {where}: unknown key {names}{hint}; check its spelling"
    if err.validator == "required":
        return f"config error at {where}: {err.message}"
    desc = sub.get("description", "")
    return f"config error at {where}: {err.message}" + (f" -- {desc}" if desc else "")


def _set_defaults_validator(root: dict):
    """A Draft 2020-12 validator class that fills in defaults (resolving local ``$ref``s against ``root``)."""
    from jsonschema import Draft202012Validator, validators

    validate_properties = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if prop in instance:
                    continue
                resolved = _subschema(sub, root)
                if "default" in sub or "default" in resolved:
                    instance[prop] = copy.deepcopy(sub.get("default", resolved.get("default")))
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(Draft202012Validator, {"properties": set_defaults})


def validate_config(
    config: dict, schema_path: str | os.PathLike, results: str | os.PathLike | None = "results"
) -> dict:
    """Validate ``config`` in place against the schema at ``schema_path``, fill defaults, check semantics.

    Then, per dataset, the defaults that depend on other keys or on the data (:func:`resolve_defaults`) and the checks
    that need the class sizes (:func:`check_data`), with the sizes known now: the prepared data's under ``results``
    (``<results>/<ds>/data/info.json``, if prepared from the same data keys), else those known before preparing
    (:func:`estimated_sizes`); the workflow repeats the data checks on the prepared data before any job reads them.
    ``results`` None: no prepared data is read. Raises :class:`ConfigError` naming the first offending key.
    Returns ``config``.
    """
    plugins = config.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ConfigError(f"config error at plugins: expected a list of Python files or modules, got {plugins!r}")
    try:  # a plugin registers pruning methods, scores or models of one's own: before the schema's enums are read
        load_plugins(plugins, export=True)
    except (ImportError, OSError) as err:
        raise ConfigError(f"config error at plugins: {err}") from err
    schema = widen_enums(load_schema(schema_path))
    validator = _set_defaults_validator(schema)(schema)
    errors = list(validator.iter_errors(config))
    if errors:
        err = max(errors, key=lambda e: len(e.absolute_path))  # the deepest names the most specific key
        raise ConfigError(_message(err, schema))
    for name, block in config["datasets"].items():
        _check_source(block, f"datasets.{name}")
        resolve_defaults(block, f"datasets.{name}", name, results or os.devnull)
    _check_semantics(config)
    for name, block in config["datasets"].items():
        sizes = (prepared_sizes(name, block, results) if results else None) or estimated_sizes(name, block)
        if sizes is not None:
            check_data(block, f"datasets.{name}", sizes)
    return config


#: torchvision dataset classes known to exist; any other name is looked up in torchvision (a 2-10 s import that
#: parsing the workflow otherwise never pays)
_KNOWN_TORCHVISION = (
    "MNIST",
    "FashionMNIST",
    "KMNIST",
    "QMNIST",
    "EMNIST",
    "CIFAR10",
    "CIFAR100",
    "SVHN",
    "USPS",
    "STL10",
)


def _torchvision_has(name: str) -> bool:
    import torchvision.datasets as tvd  # deferred: heavy, and needed only for an uncommon dataset name

    return hasattr(tvd, name)


def _check_source(ds: Mapping, where: str) -> None:
    """The dataset's source names a dataset it has (before anything is read from it)."""
    if ds["source"] == "torchvision" and ds["name"] not in _KNOWN_TORCHVISION and not _torchvision_has(ds["name"]):
        raise ConfigError(
            f"config error at {where}.name: unknown torchvision dataset {ds['name']!r}; "
            f"use a class name of torchvision.datasets such as MNIST, FashionMNIST, "
            f"KMNIST, CIFAR10, CIFAR100, SVHN"
        )
    if ds["source"] == "folder" and not ds.get("root"):
        raise ConfigError(f"config error at {where}.root: an image-folder dataset needs 'root'")


def _check_semantics(config: dict) -> None:
    for name, ds in config["datasets"].items():
        where = f"datasets.{name}"
        train = ds["train"]
        if train["select"] == "val" and not ds["val_fraction"] > 0:
            raise ConfigError(
                f"config error at {where}.train.select: 'val' needs val_fraction > 0 "
                f"(got {ds['val_fraction']}); set val_fraction or select 'test'"
            )
        bad = [e for e in train["score_epochs"] if e > train["epochs"]]
        if bad:
            raise ConfigError(
                f"config error at {where}.train.score_epochs: epochs {bad} exceed train.epochs = {train['epochs']}"
            )
        if len(set(train["seeds"])) != len(train["seeds"]):
            raise ConfigError(f"config error at {where}.train.seeds: seeds repeat: {train['seeds']}")
        if ds["kernel"]["mode"] == "sketch" and not ds["kernel"]["sketch_dim"]:
            raise ConfigError(f"config error at {where}.kernel.sketch_dim: mode 'sketch' needs sketch_dim")
        if ds["kernel"]["seed"] is not None and ds["kernel"]["seed"] not in train["seeds"]:
            raise ConfigError(
                f"config error at {where}.kernel.seed: {ds['kernel']['seed']} is not among train.seeds "
                f"{train['seeds']}; name one of them, or null (the best-validation run)"
            )
        _check_stage_semantics(ds, where)
        norm = ds["normalize"]
        if isinstance(norm, Mapping) and len(norm["mean"]) != len(norm["std"]):
            raise ConfigError(f"config error at {where}.normalize: mean and std differ in length")


def _check_stage_semantics(ds: Mapping, where: str) -> None:
    """Cross-key checks of the stage blocks (those the per-stage schemas cannot express)."""
    train = ds["train"]
    scores, pruning = ds["scores"], ds["pruning"]
    # the scores stage runs when enabled or when pruning ranks by any score (the workflow's prune inputs), and
    # it always computes EL2N and GraNd beside the forgetting, random and any registered scores
    runs_scores = scores["enabled"] or uses_scores(ds)
    for score in ("el2n", "grand"):
        epoch = scores[f"{score}_epoch"]
        if not runs_scores:
            continue
        if epoch is None and not train["score_epochs"]:
            raise ConfigError(
                f"config error at {where}.train.score_epochs: the scores stage runs (scores.enabled "
                f"or a score-based pruning method) and computes {score.upper()} at a recorded score "
                f"epoch, but none is recorded; add one, e.g. [0, 2]"
            )
        if epoch is not None and epoch not in train["score_epochs"]:
            raise ConfigError(
                f"config error at {where}.scores.{score}_epoch: epoch {epoch} is not recorded by "
                f"training (train.score_epochs = {train['score_epochs']}); add it there"
            )
    if scores["seeds"] is not None and not set(scores["seeds"]) <= set(train["seeds"]):
        raise ConfigError(
            f"config error at {where}.scores.seeds: {sorted(set(scores['seeds']) - set(train['seeds']))} "
            f"are not among train.seeds {train['seeds']}"
        )
    if pruning["enabled"]:
        try:
            check_pruning_config(ds)
        except ValueError as err:
            raise ConfigError(f"config error at {where}.{err}") from None
    if pruning["enabled"] and not ds["val_fraction"] > 0:
        raise ConfigError(
            f"config error at {where}.pruning.enabled: retraining selects on a validation split; set val_fraction > 0"
        )
    if pruning["retrain"]["lockstep"] and not pruning["retrain"]["batch_seeds"]:
        raise ConfigError(
            f"config error at {where}.pruning.retrain.lockstep: true trains the seeds of a job together, but "
            f"batch_seeds: false gives each seed its own job; set batch_seeds: true or lockstep: false"
        )
    size = ds["difficulty"]["size"]
    if size["enabled"] and size["min_size"] >= size["pool_per_class"]:
        raise ConfigError(
            f"config error at {where}.difficulty.size.min_size: {size['min_size']} is not below "
            f"pool_per_class = {size['pool_per_class']} (learning difficulty is compared across at least two "
            f"sizes, pool_per_class, pool_per_class / 4, ..., min_size); lower it"
        )
    _check_claims_design(ds, where)
    aug = ds["augment"]
    augments = aug["crop_padding"] or aug["horizontal_flip"]
    if ds["forgetting"]["enabled"] and ds["forgetting"]["augment"] and not augments:
        raise ConfigError(
            f"config error at {where}.forgetting.augment: true, but the dataset's augment block "
            f"augments nothing; set augment.crop_padding / horizontal_flip or forgetting.augment: false"
        )


def _check_claims_design(ds: Mapping, where: str) -> None:
    """The declared primary comparisons must be ones the run makes (claims.C2.recipe, C3a.keep, C3b.keep,
    C4.data_fraction / remove): a primary that is never measured would leave the claim without a verdict."""
    claims, pruning, forgetting = ds["claims"], ds["pruning"], ds["forgetting"]
    recipes = list(forgetting["recipes"]) if isinstance(forgetting["recipes"], Mapping) else forgetting["recipes"]
    if forgetting["enabled"] and claims["C2"]["recipe"] not in recipes:
        raise ConfigError(
            f"config error at {where}.claims.C2.recipe: {claims['C2']['recipe']!r} is not among forgetting.recipes "
            f"{recipes}; name one of them"
        )
    if not pruning["enabled"]:
        return
    if "lpntk" in pruning["methods"]:
        lp_keeps = list(pruning["keep"]) + list(pruning.get("curve_keep") or [])
        for cid, keeps in (("C3a", lp_keeps), ("C3b", pruning["keep"])):
            keep = claims[cid]["keep"]
            if keep is not None and not any(abs(keep - k) < 1e-9 for k in keeps):
                raise ConfigError(
                    f"config error at {where}.claims.{cid}.keep: {keep} is not among the kept fractions the run "
                    f"retrains for it ({sorted(keeps)}); name one of them, or add it to pruning.keep"
                )
    small = pruning["small_clusters"]
    if not small["enabled"]:
        return
    for key, runs in (("data_fraction", small["data_fractions"]), ("remove", small["remove"])):
        value = claims["C4"][key]
        if value is not None and runs and not any(abs(value - r) < 1e-9 for r in runs):
            plural = "data_fractions" if key == "data_fraction" else "remove"
            raise ConfigError(
                f"config error at {where}.claims.C4.{key}: {value} is not among pruning.small_clusters.{plural} "
                f"{runs}; name one of them or null (the smallest)"
            )


def load_config(config_path: str | os.PathLike, schema_path: str | os.PathLike) -> dict:
    """Read a YAML config and validate it (for use outside Snakemake: notebooks, tests)."""
    config_path = Path(config_path)
    if not config_path.is_file():
        raise ConfigError(f"config file {config_path} does not exist")
    with open(config_path) as fh:
        config = yaml.safe_load(fh) or {}
    return validate_config(config, schema_path)


def dataset_config(config: Mapping, dataset: str) -> dict[str, Any]:
    """The resolved block of one dataset, with the global keys a job needs (what MLflow records as params)."""
    if dataset not in config["datasets"]:
        raise ConfigError(f"dataset {dataset!r} is not in the config (datasets: {', '.join(config['datasets'])})")
    return {"dataset": dataset, "device": config["device"], **copy.deepcopy(dict(config["datasets"][dataset]))}


# ---------------------------------------------------------------------------------------------- defaults and the data

#: The blocks of a dataset that configure a stage; every other key of the block describes its data (what prepare_data
#: reads, and records in ``results/<ds>/data/info.json`` under ``config``).
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

#: ``train.score_epochs: null`` when the scores stage runs: initialisation and an early epoch (capped at train.epochs)
DEFAULT_SCORE_EPOCHS = (0, 2)
#: ``difficulty.size.pool_per_class: null``: the largest power of 4 that every class holds, at most the paper's 4096
MAX_POOL_PER_CLASS = 4096
#: ``pruning.small_clusters.data_fractions: null``: the slides' 1 % (and 5 times it), or the first of these at which
#: the smallest removal share removes a sample of the smallest class's subset
DATA_FRACTION_LADDER = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
#: image files an image folder's class holds (torchvision's ImageFolder extensions)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def data_keys(block: Mapping) -> dict[str, Any]:
    """The keys of a dataset block (or of a job's config) that describe its data: not a stage's block, nor the job's
    dataset name and device."""
    return {k: v for k, v in block.items() if k not in STAGE_BLOCKS and k not in ("dataset", "device")}


@dataclass(frozen=True)
class ClassSizes:
    """Training samples per class of a dataset (after its test and validation carving), and where they come from."""

    train: tuple[int, ...]
    source: str  #: for messages: "results/<ds>/data/info.json", "estimated from ..."

    @property
    def smallest(self) -> tuple[int, int]:
        """(class, training samples) of the smallest class."""
        c = min(range(len(self.train)), key=lambda i: self.train[i])
        return c, self.train[c]


def _count(n: int, fraction: float) -> int:
    """round(fraction * n), halves rounded up: how lpntk.pruning counts a kept or removed share (keep_count)."""
    return int(min(n, max(0, math.floor(fraction * n + 0.5))))


def prepared_sizes(ds: str, block: Mapping, results: str | os.PathLike = "results") -> ClassSizes | None:
    """The class sizes in ``<results>/<ds>/data/info.json`` when it was prepared from the data keys ``block`` has now
    (it records them under ``config``); None when absent or prepared from other keys (prepare_data will rerun)."""
    path = Path(results) / ds / "data" / "info.json"
    if not path.is_file():
        return None
    meta = json.loads(path.read_text())
    recorded = meta.get("config")
    now = json.loads(json.dumps(data_keys(block)))
    if recorded is None or any(now.get(k) != v for k, v in recorded.items()):
        return None
    return ClassSizes(tuple(int(n) for n in meta["class_sizes"]["train"]), str(path))


def estimated_sizes(ds: str, block: Mapping) -> ClassSizes | None:
    """The class sizes known before the data are prepared: a source of :data:`lpntk.cost.KNOWN_SOURCES` (classes
    taken as balanced, the config's carving applied), or an image folder's files counted per class (the carving
    applied per class); None for any other source."""
    if (block["source"], block["name"]) in KNOWN_SOURCES:
        # os.devnull: a results folder that holds no info.json, so that dataset_sizes estimates
        sizes = dataset_sizes(ds, block, results=os.devnull)
        return ClassSizes(tuple(sizes.class_sizes), f"estimated from the known size of {block['name']} and the carving")
    if block["source"] != "folder" or not block.get("root"):
        return None
    train_dir = Path(block["root"]).expanduser() / block["train_dir"]
    if not train_dir.is_dir():
        return None
    counts = [
        sum(1 for f in d.rglob("*") if f.suffix.lower() in _IMAGE_SUFFIXES)
        for d in sorted(p for p in train_dir.iterdir() if p.is_dir())
    ]
    carve_test = not (Path(block["root"]).expanduser() / block["test_dir"]).is_dir()
    sizes = []
    for n in counts:
        n -= math.ceil(n * block["test_fraction"]) if carve_test else 0
        n = min(n, block["per_class_limit"] or n)
        sizes.append(n - math.ceil(n * block["val_fraction"]))
    return ClassSizes(tuple(sizes), f"estimated from the image files under {train_dir}") if sizes else None


def resolve_defaults(block: dict, where: str, ds: str, results: str | os.PathLike = "results") -> dict:
    """Fill in place the defaults that depend on other keys or on the data (each documented in its schema):

    * ``train.score_epochs`` null: [0, 2] (capped at train.epochs) when the scores stage runs, else [];
    * ``difficulty.size.pool_per_class`` null: the largest power of 4 that the smallest class holds, at most 4096;
    * ``pruning.small_clusters.data_fractions`` null: [d, 5 d] with d the slides' 1 %, or the first of
      :data:`DATA_FRACTION_LADDER` at which the smallest removal share removes a sample per class.

    The class sizes are those known before any job runs (:func:`estimated_sizes`, else :func:`prepared_sizes`), the
    same in every invocation; ConfigError naming the key when they are unknown or too small for the stage."""
    train = block["train"]
    if train["score_epochs"] is None:
        runs_scores = block["scores"]["enabled"] or uses_scores(block)
        train["score_epochs"] = sorted({min(e, train["epochs"]) for e in DEFAULT_SCORE_EPOCHS}) if runs_scores else []
    size, small = block["difficulty"]["size"], block["pruning"]["small_clusters"]
    scaled = []
    if size["enabled"] and size["pool_per_class"] is None:
        scaled.append("difficulty.size.pool_per_class")
    if block["pruning"]["enabled"] and small["enabled"] and small["data_fractions"] is None:
        scaled.append("pruning.small_clusters.data_fractions")
    if not scaled:
        return block
    sizes = estimated_sizes(ds, block) or prepared_sizes(ds, block, results)
    if sizes is None:
        raise ConfigError(
            f"config error at {where}.{scaled[0]}: null scales it to the class sizes of {block['source']} dataset "
            f"{block['name']!r}, which are not known before it is prepared; set it explicitly (the schema's "
            f"description says how), or add the dataset's size to lpntk.cost.KNOWN_SOURCES"
        )
    c, n = sizes.smallest
    if "difficulty.size.pool_per_class" in scaled:
        pool, floor = 1, 4 * int(size["min_size"])
        while pool * 4 <= min(n, MAX_POOL_PER_CLASS):
            pool *= 4
        if pool < floor:
            raise ConfigError(
                f"config error at {where}.difficulty.size.pool_per_class: null scales the pool to the smallest class "
                f"(class {c}: {n} training samples, {sizes.source}), too few for two subset sizes of at least "
                f"min_size = {size['min_size']}; lower difficulty.size.min_size or set difficulty.size.enabled: false"
            )
        size["pool_per_class"] = pool
    if "pruning.small_clusters.data_fractions" in scaled:
        r = min(float(x) for x in small["remove"])
        fits = [d for d in DATA_FRACTION_LADDER if _count(max(1, _count(n, d)), r) >= 1]
        if not fits:
            raise ConfigError(
                f"config error at {where}.pruning.small_clusters.data_fractions: null scales them to the smallest "
                f"class (class {c}: {n} training samples, {sizes.source}), but even "
                f"{DATA_FRACTION_LADDER[-1]:g} of it leaves a subset from which the smallest removal share "
                f"(remove = {r:g}) removes no sample; raise pruning.small_clusters.remove or set "
                f"pruning.small_clusters.enabled: false"
            )
        small["data_fractions"] = sorted({fits[0], min(1.0, round(5 * fits[0], 6))})
    return block


def check_data(block: Mapping, where: str, sizes: ClassSizes) -> None:
    """The checks that need the data's class sizes: ConfigError naming the key, its value and the limit.

    Run at start-up with the sizes known then (:func:`validate_config`), and again on the prepared data before any
    job reads them (:func:`check_prepared_data`)."""
    c, n = sizes.smallest
    num_classes = len(sizes.train)
    whose = f"class {c} has {n} training samples ({sizes.source})"
    diff, size, pruning = block["difficulty"], block["difficulty"]["size"], block["pruning"]
    if diff["enabled"]:
        if diff["num"] > n - 1:
            raise ConfigError(
                f"config error at {where}.difficulty.num: {diff['num']} samples per company set, but {whose}, "
                f"{n - 1} besides its target; set difficulty.num to at most {n - 1}"
            )
        count = diff["random_targets"]
        if count % num_classes:
            k = num_classes
            raise ConfigError(
                f"config error at {where}.difficulty.random_targets: {count} is not a multiple of the {k} classes "
                f"(the random targets are drawn stratified, random_targets / {k} per class); set it to a multiple of "
                f"{k}, e.g. {k * max(1, count // k)}"
            )
        if count // num_classes > n - 1:
            raise ConfigError(
                f"config error at {where}.difficulty.random_targets: {count} draws {count // num_classes} targets "
                f"per class, but {whose}, {n - 1} besides its rule's target; set it to at most {num_classes * (n - 1)}"
            )
    if size["enabled"] and size["pool_per_class"] > n:
        fits = 4 ** int(math.log(max(n, 1), 4) + 1e-9)
        raise ConfigError(
            f"config error at {where}.difficulty.size.pool_per_class: {size['pool_per_class']} per class, but {whose}; "
            f"set it to a power of 4 of at most {n} (e.g. {fits}), or null (scaled to the data)"
        )
    if not pruning["enabled"]:
        return
    for key in ("keep", "curve_keep"):
        empty = [k for k in pruning[key] or [] if _count(n, float(k)) < 1]
        if empty:
            raise ConfigError(
                f"config error at {where}.pruning.{key}: kept fractions {empty} keep no sample of class {c} "
                f"({n} training samples, {sizes.source}); raise them to at least {0.5 / n:.3g}"
            )
    small = pruning["small_clusters"]
    if small["enabled"]:
        r = min(float(x) for x in small["remove"])
        for d in small["data_fractions"]:
            m = max(1, _count(n, float(d)))
            if _count(m, r) < 1:
                raise ConfigError(
                    f"config error at {where}.pruning.small_clusters.data_fractions: {d:g} of class {c}'s {n} "
                    f"training samples ({sizes.source}) is a subset of {m}, from which the smallest removal share "
                    f"(pruning.small_clusters.remove {r:g}) removes no sample; raise the fraction, or null (scaled "
                    f"to the data)"
                )


def check_prepared_data(config: Mapping, ds: str, info: str | os.PathLike) -> None:
    """:func:`check_data` on the prepared data's class sizes (``info``: the prepare_data job's info.json). The
    workflow calls it once prepare_data has run and before any job that reads the data is planned."""
    meta = json.loads(Path(info).read_text())
    sizes = ClassSizes(tuple(int(n) for n in meta["class_sizes"]["train"]), str(info))
    check_data(config["datasets"][ds], f"datasets.{ds}", sizes)

"""Configuration: validation against the workflow's JSON schema, defaults, and checks the schema cannot do.

:func:`validate_config` is called by the Snakefile before any job is scheduled. It fills in the schema's
defaults, then reports the *first* problem as one :class:`ConfigError` whose message names the key (as a
dotted path), the offending value, and what is allowed -- e.g.::

    config error at datasets.digits.train: unknown key 'epochz' (allowed: batch_size, epochs, ...)
    config error at datasets.digits.train.epochs: -3 is less than the minimum of 1 -- number of epochs
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .cost import KNOWN_SOURCES
from .plan import check_pruning_config, uses_scores

__all__ = ["ConfigError", "load_schema", "validate_config", "load_config", "dataset_config"]


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


def validate_config(config: dict, schema_path: str | os.PathLike) -> dict:
    """Validate ``config`` in place against the schema at ``schema_path``, fill defaults, check semantics.

    Raises :class:`ConfigError` naming the first offending key. Returns ``config``.
    """
    schema = load_schema(schema_path)
    validator = _set_defaults_validator(schema)(schema)
    errors = list(validator.iter_errors(config))
    if errors:
        err = max(errors, key=lambda e: len(e.absolute_path))  # the deepest names the most specific key
        raise ConfigError(_message(err, schema))
    _check_semantics(config)
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


def _check_semantics(config: dict) -> None:
    for name, ds in config["datasets"].items():
        where = f"datasets.{name}"
        if ds["source"] == "torchvision" and ds["name"] not in _KNOWN_TORCHVISION and not _torchvision_has(ds["name"]):
            raise ConfigError(
                f"config error at {where}.name: unknown torchvision dataset {ds['name']!r}; "
                f"use a class name of torchvision.datasets such as MNIST, FashionMNIST, "
                f"KMNIST, CIFAR10, CIFAR100, SVHN"
            )
        if ds["source"] == "folder" and not ds.get("root"):
            raise ConfigError(f"config error at {where}.root: an image-folder dataset needs 'root'")
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
    _check_random_targets(ds, where)
    size = ds["difficulty"]["size"]
    if size["enabled"] and size["min_size"] > size["pool_per_class"]:
        raise ConfigError(
            f"config error at {where}.difficulty.size.min_size: {size['min_size']} exceeds "
            f"pool_per_class = {size['pool_per_class']}"
        )
    _check_claims_design(ds, where)
    aug = ds["augment"]
    augments = aug["crop_padding"] or aug["horizontal_flip"]
    if ds["forgetting"]["enabled"] and ds["forgetting"]["augment"] and not augments:
        raise ConfigError(
            f"config error at {where}.forgetting.augment: true, but the dataset's augment block "
            f"augments nothing; set augment.crop_padding / horizontal_flip or forgetting.augment: false"
        )


def _check_random_targets(ds: Mapping, where: str) -> None:
    """difficulty.random_targets is drawn stratified by class, so it must be a multiple of the number of classes
    (known here for the sources of :data:`lpntk.cost.KNOWN_SOURCES`; the stage checks the others)."""
    dcfg, known = ds["difficulty"], KNOWN_SOURCES.get((ds["source"], ds["name"]))
    count = dcfg["random_targets"]
    if dcfg["enabled"] and known is not None and count % known[2]:
        c = known[2]
        raise ConfigError(
            f"config error at {where}.difficulty.random_targets: {count} is not a multiple of the {c} classes of "
            f"{ds['name']} (the random targets are drawn stratified, random_targets / {c} per class); set it to a "
            f"multiple of {c}, e.g. {c * max(1, count // c)}"
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

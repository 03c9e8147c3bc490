from __future__ import annotations

import copy

import pytest
import yaml

from lpntk.config import ConfigError, load_config, validate_config


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml", "mnist-cpu.yaml"])
def test_shipped_configs_validate(repo, schema_path, name):
    cfg = load_config(repo / "config" / name, schema_path)
    for ds in cfg["datasets"].values():
        assert ds["train"]["epochs"] >= 1 and ds["train"]["seeds"]


def test_defaults_are_filled(schema_path):
    cfg = validate_config(
        {
            "datasets": {
                "d": {"source": "sklearn", "name": "digits", "model": {"name": "small_cnn"}, "train": {"epochs": 2}}
            }
        },
        schema_path,
    )
    ds = cfg["datasets"]["d"]
    assert cfg["device"] == "auto" and cfg["mlflow"]["enabled"] is True
    assert ds["val_fraction"] == 0.1 and ds["train"]["batch_size"] == 128 and ds["train"]["select"] == "val"
    assert ds["train"]["schedule"]["name"] == "none" and ds["augment"]["crop_padding"] == 0


@pytest.fixture
def base(repo):
    return yaml.safe_load((repo / "config" / "config.yaml").read_text())


@pytest.mark.parametrize(
    "mutate,where,what",
    [
        (lambda c: c["datasets"]["digits"]["train"].update(epochz=3), "datasets.digits.train", "unknown key 'epochz'"),
        (lambda c: c["datasets"]["digits"]["train"].update(epochs=-2), "datasets.digits.train.epochs", "minimum of 1"),
        (
            lambda c: c["datasets"]["digits"].update(source="torchvision", name="MNISTT"),
            "datasets.digits.name",
            "unknown torchvision dataset 'MNISTT'",
        ),
        (lambda c: c["datasets"]["digits"].update(source="kaggle"), "datasets.digits.source", "kaggle"),
        (lambda c: c["datasets"]["digits"]["model"].update(name="lenet"), "datasets.digits.model.name", "lenet"),
        (lambda c: c.update(mlfow={}), "<top level>", "unknown key 'mlfow'"),
        (lambda c: c["datasets"]["digits"].update(val_fraction=0.0), "datasets.digits.train.select", "val_fraction"),
        (
            lambda c: c["datasets"]["digits"]["train"].update(score_epochs=[99]),
            "datasets.digits.train.score_epochs",
            "exceed",
        ),
        (
            lambda c: c["datasets"]["digits"]["scores"].update(el2n_epoch=7),
            "datasets.digits.scores.el2n_epoch",
            "not recorded",
        ),
        (
            lambda c: c["datasets"]["digits"]["train"].update(score_epochs=[]),
            "datasets.digits.train.score_epochs",
            "none is recorded",
        ),
        # no EL2N / GraNd pruning, scores stage off: the forgetting and random baselines still run the scores stage
        (
            lambda c: (
                c["datasets"]["digits"]["train"].update(score_epochs=[]),
                c["datasets"]["digits"]["scores"].update(enabled=False),
                c["datasets"]["digits"]["pruning"].update(methods=["lpntk", "forgetting", "random"]),
            ),
            "datasets.digits.train.score_epochs",
            "none is recorded",
        ),
        (lambda c: c["datasets"]["digits"]["scores"].update(seeds=[1, 9]), "datasets.digits.scores.seeds", "[9]"),
        (
            lambda c: c["datasets"]["digits"]["forgetting"].update(augment=True),
            "datasets.digits.forgetting.augment",
            "augments nothing",
        ),
        (
            lambda c: c["datasets"]["digits"]["difficulty"].update(
                size={"enabled": True, "pool_per_class": 4, "min_size": 16}
            ),
            "datasets.digits.difficulty.size.min_size",
            "is not below",
        ),
    ],
)
def test_broken_configs_name_the_key(base, schema_path, mutate, where, what):
    cfg = copy.deepcopy(base)
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, schema_path)
    assert f"config error at {where}" in str(err.value)
    assert what in str(err.value)


def test_recipe_defaults_are_the_schemas(schema_path):
    """The schema is the source of the workflow's defaults; the Recipe dataclass keeps defaults for library users.
    Both must agree, key by key (the train block, its schedule, the augment block), but for score_epochs, whose
    schema default (null) lpntk.config resolves from the other blocks (tests/workflow/test_config_data.py)."""
    import dataclasses

    from lpntk.config import load_schema
    from lpntk.train import Recipe

    defs = load_schema(schema_path)["$defs"]
    train = {k: v["default"] for k, v in defs["train"]["properties"].items() if "default" in v}
    schedule = {k: v["default"] for k, v in defs["schedule"]["properties"].items()}
    augment = {k: v["default"] for k, v in defs["dataset"]["properties"]["augment"]["properties"].items()}
    assert train.pop("score_epochs") is None
    expected = {**{k: v for k, v in train.items() if k != "seeds"}, **augment, **schedule}
    expected["schedule"] = expected.pop("name")
    fields = {f.name: f.default for f in dataclasses.fields(Recipe) if f.default is not dataclasses.MISSING}
    fields.pop("score_epochs")
    assert set(fields) == set(expected), set(fields) ^ set(expected)
    for key, value in expected.items():
        got = fields[key]
        assert (tuple(got) if isinstance(got, tuple) else got) == (
            tuple(value) if isinstance(value, list) else value
        ), key


def test_recipe_from_config_reads_every_key_of_a_resolved_block(schema_path):
    """No silent fallbacks: a resolved block is read as given, and a block missing a key is an error."""
    from lpntk.config import validate_config
    from lpntk.train import Recipe

    cfg = validate_config(
        {
            "datasets": {
                "d": {
                    "source": "sklearn",
                    "name": "digits",
                    "model": {"name": "mlp"},
                    "train": {"epochs": 4, "lr": 0.3},
                }
            }
        },
        schema_path,
    )
    block = cfg["datasets"]["d"]
    r = Recipe.from_config(block["train"], block["augment"])
    assert (r.epochs, r.lr, r.schedule, r.batch_size) == (4, 0.3, "none", 128)
    with pytest.raises(KeyError, match="momentum"):
        Recipe.from_config({k: v for k, v in block["train"].items() if k != "momentum"}, block["augment"])


@pytest.mark.parametrize(
    "claims,where",
    [
        ({"C3b": {"keep": 0.3}}, "claims.C3b.keep: 0.3 is not among"),
        ({"C3a": {"keep": 0.9}}, "claims.C3a.keep: 0.9 is not among"),
        ({"C2": {"recipe": "adam"}}, "claims.C2.recipe: 'adam' is not among forgetting.recipes"),
        ({"C4": {"data_fraction": 0.5}}, "claims.C4.data_fraction: 0.5 is not among"),
        ({"C3a": {"margin": 0}}, "claims.C3a.margin"),
        ({"min_n": 1}, "claims.min_n"),
    ],
)
def test_claims_design_names_the_key(base, schema_path, claims, where):
    cfg = copy.deepcopy(base)
    cfg["datasets"]["digits"]["claims"] = claims
    with pytest.raises(ConfigError, match=where.replace(".", r"\.").replace("(", r"\(")):
        validate_config(cfg, schema_path)

"""The config's defaults that depend on the data, and the checks that need the data (lpntk.config): a dataset block
naming only its data gets every use case, scaled to its class sizes; a value the data cannot serve fails before
any training, naming the key and the limit."""

from __future__ import annotations

import json
import re

import pytest
from conftest import snakemake

from lpntk.config import (
    STAGE_BLOCKS,
    ClassSizes,
    ConfigError,
    check_data,
    check_prepared_data,
    dataset_config,
    validate_config,
)

#: the use-case stages and the claims each one measures
CLAIM_STAGES = {
    "difficulty": "C1",
    "forgetting": "C2",
    "retrain": "C3a, C3b, C4",
    "ld_size": "C5",
}
#: digits' training classes at the default carving (test 0.2, validation 0.1, split seed 0)
DIGITS_TRAIN = [128, 131, 128, 131, 130, 131, 130, 129, 125, 130]


def _block(**extra) -> dict:
    """A dataset block that names only its data (and the model and epochs every block needs)."""
    return {"source": "sklearn", "name": "digits", "model": {"name": "mlp"}, "train": {"epochs": 2}, **extra}


def _validate(block: dict, schema_path, results=None) -> dict:
    cfg = validate_config({"mlflow": {"enabled": False}, "datasets": {"d": block}}, schema_path, results)
    return cfg["datasets"]["d"]


def _prepare(config: dict, results) -> str:
    """results/d/data/ as prepare_data writes it (the data keys recorded in info.json)."""
    from lpntk.stages.prepare_data_stage import prepare_data_stage

    cfg = {k: v for k, v in dataset_config(config, "d").items() if k not in STAGE_BLOCKS}
    out = {k: str(results / "d" / "data" / f"{k}.{'json' if k == 'info' else 'npz'}") for k in ("info", *SPLITS)}
    prepare_data_stage(dataset="d", cfg=cfg, outputs=out, data_dir=None, mlflow_cfg={"enabled": False})
    return out["info"]


SPLITS = ("train", "val", "test")


def test_a_block_naming_only_its_data_gets_every_use_case_scaled_to_it(schema_path):
    ds = _validate(_block(), schema_path)
    for stage in ("relations", "difficulty", "forgetting", "scores", "pruning", "gallery"):
        assert ds[stage]["enabled"], stage
    assert ds["difficulty"]["size"]["enabled"] and ds["pruning"]["small_clusters"]["enabled"]
    # scaled to digits' ~129 training samples per class: the largest power of 4 they hold, and the first small-data
    # fraction at which removing 5 % of a class's subset removes a sample
    assert ds["difficulty"]["size"]["pool_per_class"] == 64
    assert ds["pruning"]["small_clusters"]["data_fractions"] == [0.1, 0.5]
    assert ds["train"]["score_epochs"] == [0, 2]  # the scores stage runs: EL2N / GraNd recorded early
    one_epoch = _validate(_block(train={"epochs": 1}), schema_path)
    assert one_epoch["train"]["score_epochs"] == [0, 1]


def test_the_paper_datasets_get_the_papers_values(schema_path):
    ds = _validate(_block(source="torchvision", name="MNIST"), schema_path)
    assert ds["difficulty"]["size"]["pool_per_class"] == 4096
    assert ds["pruning"]["small_clusters"]["data_fractions"] == [0.01, 0.05]


def test_explicit_values_and_disabled_stages_are_kept(schema_path):
    ds = _validate(
        _block(
            train={"epochs": 3, "score_epochs": [1]},
            difficulty={"size": {"pool_per_class": 16}},
            pruning={"small_clusters": {"data_fractions": [0.2]}},
        ),
        schema_path,
    )
    assert ds["train"]["score_epochs"] == [1] and ds["difficulty"]["size"]["pool_per_class"] == 16
    assert ds["pruning"]["small_clusters"]["data_fractions"] == [0.2]
    off = _validate(_block(scores={"enabled": False}, pruning={"enabled": False}), schema_path)
    assert off["train"]["score_epochs"] == []  # nothing reads EL2N / GraNd: none recorded


def test_a_dataset_too_small_for_a_default_fails_naming_the_key(schema_path):
    with pytest.raises(ConfigError, match=r"datasets\.d\.pruning\.small_clusters\.data_fractions: null scales"):
        _validate(_block(per_class_limit=12), schema_path)
    with pytest.raises(ConfigError, match=r"datasets\.d\.difficulty\.size\.pool_per_class: null scales the pool"):
        _validate(_block(per_class_limit=3, pruning={"enabled": False}), schema_path)
    # turned off, a stage asks nothing of the data
    block = _block(per_class_limit=3, pruning={"enabled": False}, difficulty={"num": 1, "size": {"enabled": False}})
    assert _validate(block, schema_path)["difficulty"]["size"]["pool_per_class"] is None


def test_a_source_of_unknown_size_asks_for_the_scaled_keys(schema_path, tmp_path):
    block = _block(source="folder", name="mine", root=str(tmp_path / "nowhere"))
    with pytest.raises(
        ConfigError, match=r"datasets\.d\.difficulty\.size\.pool_per_class: null scales it .* not known"
    ):
        _validate(block, schema_path)
    # an image folder's files are counted: 30 images in each of two classes
    for c in ("a", "b"):
        (tmp_path / "imgs" / "train" / c).mkdir(parents=True)
        for i in range(30):
            (tmp_path / "imgs" / "train" / c / f"{i}.png").touch()
    ds = _validate(_block(source="folder", name="mine", root=str(tmp_path / "imgs")), schema_path)
    assert ds["difficulty"]["size"]["pool_per_class"] == 16  # 30 - 6 test - 3 validation = 21 per class


@pytest.mark.parametrize(
    "change,key,limit",
    [
        ({"difficulty": {"num": 500}}, "difficulty.num", "at most 124"),
        ({"difficulty": {"random_targets": 15}}, "difficulty.random_targets", "multiple of 10"),
        ({"difficulty": {"random_targets": 1300}}, "difficulty.random_targets", "at most 1240"),
        ({"difficulty": {"size": {"pool_per_class": 256}}}, "difficulty.size.pool_per_class", "at most 125"),
        ({"pruning": {"keep": [0.003, 0.5]}}, "pruning.keep", "[0.003]"),
        (
            {"pruning": {"small_clusters": {"data_fractions": [0.01, 0.05]}}},
            "pruning.small_clusters.data_fractions",
            "0.01",
        ),
    ],
)
def test_data_checks_name_the_key_and_the_limit(schema_path, change, key, limit):
    """On the prepared data's class sizes (digits' smallest class: 125)."""

    def update(d: dict, u: dict) -> None:
        for k, v in u.items():
            update(d[k], v) if isinstance(v, dict) else d.__setitem__(k, v)

    ds = _validate(_block(), schema_path)
    update(ds, change)
    with pytest.raises(ConfigError) as err:
        check_data(ds, "datasets.d", ClassSizes(tuple(DIGITS_TRAIN), "results/d/data/info.json"))
    assert f"config error at datasets.d.{key}" in str(err.value) and limit in str(err.value), str(err.value)
    if key != "difficulty.random_targets":  # at start-up, with digits' size known before preparing (129 per class)
        with pytest.raises(ConfigError, match=f"config error at datasets.d.{re.escape(key)}"):
            _validate(_block(**change), schema_path)


def test_start_up_reads_the_prepared_class_sizes_when_they_are_current(schema_path, tmp_path):
    """difficulty.num = 126 fits digits' size known before preparing (129 per class, classes taken as balanced) but
    not its smallest prepared class (125): with info.json present and prepared from the same data keys, the start-up
    validation reads it; prepared from other keys, it is ignored (prepare_data will rerun)."""
    config = {"mlflow": {"enabled": False}, "datasets": {"d": _block(difficulty={"num": 126})}}
    validate_config(config, schema_path, results=None)  # nothing prepared: passes
    info = _prepare(config, tmp_path)
    assert json.loads(open(info).read())["class_sizes"]["train"] == DIGITS_TRAIN
    with pytest.raises(ConfigError, match=r"datasets\.d\.difficulty\.num: 126 .* class 8 has 125 training samples"):
        validate_config({"datasets": {"d": _block(difficulty={"num": 126})}}, schema_path, results=tmp_path)
    with pytest.raises(ConfigError, match=r"datasets\.d\.difficulty\.num: 126 .* at most 124"):
        check_prepared_data(config, "d", info)
    other = _block(difficulty={"num": 126}, split_seed=5)  # other data keys: the prepared sizes are not its own
    validate_config({"datasets": {"d": other}}, schema_path, results=tmp_path)


def test_count_rule_is_the_pruning_selections():
    from lpntk.config import _count
    from lpntk.pruning import keep_count

    for n in (1, 2, 7, 10, 125):
        for f in (0.01, 0.05, 0.1, 0.25, 0.5, 1.0):
            assert _count(n, f) == keep_count(n, f), (n, f)


# ---------------------------------------------------------------------------------------------- in the workflow


def _config_file(tmp_path, block: dict) -> str:
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"device": "cpu", "mlflow": {"enabled": False}, "datasets": {"d": block}}))
    return str(path)


def _planned(stdout: str) -> dict[str, list[list[str]]]:
    """{rule: [outputs of each planned job]} from a dry run's job listing."""
    jobs: dict[str, list[list[str]]] = {}
    for rule, outputs in re.findall(
        r"^(?:local)?(?:rule|checkpoint) (\w+):\n(?:    .*\n)*?    output: (.*)$", stdout, re.M
    ):
        jobs.setdefault(rule, []).append(outputs.split(", "))
    return jobs


def _job_stats(stdout: str) -> dict[str, int]:
    stats = stdout.split("Job stats:")[1].split("\n\n")[0].strip().splitlines()[2:]
    return {name: int(count) for name, count in (line.split() for line in stats)}


@pytest.mark.slow
def test_a_block_naming_only_its_data_plans_every_claims_stage(repo, tmp_path):
    """The README's dataset example -- a block with its data keys, model and epochs -- measures every claim: once the
    data are prepared and the reference runs trained (faked here: the checkpoints' outputs planned by a first dry
    run), the dry run plans every use-case stage, whose outputs the claims job reads."""
    block = _block()
    configfile = _config_file(tmp_path, block)
    first = snakemake(repo, tmp_path, "-n", configfile=configfile)
    planned = _planned(first.stdout)
    assert set(planned) >= {"prepare_data", "train", "select_reference"}, planned
    schema = repo / "workflow" / "schemas" / "config.schema.yaml"
    config = validate_config({"mlflow": {"enabled": False}, "datasets": {"d": _block()}}, schema, results=None)
    (info_path,) = [f for f in planned["prepare_data"][0] if f.endswith("info.json")]
    prepared = _prepare(config, tmp_path / info_path.split("/d/")[0])
    assert prepared == str(tmp_path / info_path)
    for outputs in planned["train"] + planned["select_reference"]:  # trained reference runs, the reference seed 1
        for f in outputs:
            (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / f).write_text(json.dumps({"seed": 1}) if f.endswith(".json") else "")
    second = snakemake(repo, tmp_path, "-n", configfile=configfile)
    jobs = _job_stats(second.stdout)
    for stage, claims in CLAIM_STAGES.items():
        assert jobs.get(stage, 0) >= 1, f"{stage} ({claims}) not planned: {jobs}"
    for stage in ("relations", "scores", "prune", "pruning_table", "forgetting_table", "gallery", "claims", "summary"):
        assert jobs.get(stage, 0) >= 1, f"{stage} not planned: {jobs}"
    assert "train" not in jobs and "prepare_data" not in jobs  # the faked runs stand


@pytest.mark.slow
def test_a_value_the_data_cannot_serve_stops_before_any_training(repo, tmp_path):
    """difficulty.num = 126 passes the start-up checks (digits' size known before preparing: 129 per class) but not
    the prepared data (class 8: 125): the workflow stops right after prepare_data, naming the key, with no training
    job started; a value beyond the known size stops it at start-up, before any job."""
    proc = snakemake(repo, tmp_path, configfile=_config_file(tmp_path, _block(difficulty={"num": 126})), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "config error at datasets.d.difficulty.num: 126" in out, out[-3000:]
    assert "at most 124" in out
    assert (tmp_path / "results" / "d" / "data" / "info.json").is_file()  # prepare_data ran ...
    assert not list((tmp_path / "results").rglob("summary.json"))  # ... no training job ran, none was scheduled
    assert not re.search(r"^(local)?rule train:", out, re.M)
    # now prepared: the same config stops at start-up
    again = snakemake(repo, tmp_path, configfile=_config_file(tmp_path, _block(difficulty={"num": 126})), check=False)
    assert again.returncode != 0 and "config error at datasets.d.difficulty.num: 126" in again.stdout + again.stderr
    assert "Select jobs to execute" not in again.stdout + again.stderr
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    big = snakemake(repo, fresh, configfile=_config_file(fresh, _block(difficulty={"num": 500})), check=False)
    assert big.returncode != 0 and "config error at datasets.d.difficulty.num: 500" in big.stdout + big.stderr
    assert not (fresh / "results").exists()

"""The pruning-method registry (lpntk.methods.METHODS): one contract, checked for every method against what its rule
actually does, and against references outside the registry (the schema, the claim's statement, the figure's legend,
the cost formula).

Each table method's declared needs are checked on synthetic inputs: it selects with nothing but what it declares
(kernel: FPC heads and clusters; score: that column and the random tie-breaks), its selection changes when what it
declares changes, and it depends on the retraining seed exactly when it declares a random draw. A planted wrong
entry (an undeclared need, a random draw that is not declared, a label or colour the figure does not show) fails one
of them.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import pytest
import yaml

from lpntk import methods as registry
from lpntk.methods import METHODS, PruningMethod, config_methods, method, retrained_samples
from lpntk.plan import KEEP_METHODS, RANDOM_METHODS, SCORE_METHODS, subset_plan
from lpntk.pruning import SELECTORS, PruningInputs, register_method, select_subset
from lpntk.scores import SCORE_NAMES, SCORES

TABLE = [n for n, m in METHODS.items() if m.experiment == "table"]
N, CLASSES = 40, 2


@pytest.fixture
def restore_registries():
    """Undo every registration a test makes (the registries are module state)."""
    saved = dict(METHODS), dict(SELECTORS), dict(SCORES)
    yield
    for live, before in zip((METHODS, SELECTORS, SCORES), saved, strict=True):
        live.clear()
        live.update(before)


def _inputs(seed: int = 0, **change) -> PruningInputs:
    """Two classes of 20: FPC ranks a permutation per class, clusters of two, scores with ties (so that a random
    tie-break shows), the random column of a shared draw."""
    rng = np.random.default_rng(seed)
    index = 100 + rng.permutation(N)
    labels = np.repeat(np.arange(CLASSES), N // CLASSES)
    rank = np.concatenate([rng.permutation(N // CLASSES) for _ in range(CLASSES)])
    heads = index[np.argsort(rank, kind="stable")]
    clusters = np.empty(N, np.int64)
    for c in range(CLASSES):
        pos = np.flatnonzero(labels == c)
        order = pos[np.argsort(rank[pos])]
        clusters[order] = np.repeat(index[order[: len(order) // 2]], 2)  # 10 clusters of 2 per class
    scores = {name: rng.integers(0, 3, N).astype(float) for name in SCORE_NAMES if name != "random"}
    scores["random"] = rng.random(N)
    inputs = PruningInputs(
        index=index,
        labels=labels,
        head_rank=rank,
        self_max=rng.random(N) < 0.5,
        clusters={0.5: clusters},
        scores=scores,
        node_fraction=0.5,
        seed=3,
    )
    assert len(set(heads)) == N
    return dataclasses.replace(inputs, **change)


def _spec(name: str) -> dict:
    pcfg = {"node": {"cluster_keep": 0.5}}
    m = method(name)
    return {**(m.subsets(pcfg)[0] if m.subsets else {"name": f"{name}-k0.5", "keep": 0.5}), "method": name}


def _only_declared(name: str, seed: int = 0) -> PruningInputs:
    """Inputs holding only what method ``name`` declares it needs."""
    m, full = method(name), _inputs(seed)
    kernel = {} if m.kernel else {"head_rank": None, "self_max": None, "clusters": {}}
    scores = {k: v for k, v in full.scores.items() if k in (m.score, "random")} if m.score else {}
    return dataclasses.replace(full, scores=scores, **kernel)


def test_the_schema_enum_is_the_registry(repo):
    schema = yaml.safe_load((repo / "workflow" / "schemas" / "pruning.schema.yaml").read_text())
    prop = schema["$defs"]["pruning"]["properties"]["methods"]
    assert prop["items"]["enum"] == list(config_methods())
    assert set(prop["default"]) <= set(config_methods())
    # the table's methods besides full keep a fraction, except node (its kept fraction is an outcome)
    assert [n for n in config_methods() if n not in KEEP_METHODS] == ["node"]


def test_every_method_has_a_rule_and_every_score_a_function():
    assert set(METHODS) == set(SELECTORS)
    for name, m in METHODS.items():
        assert m.score is None or m.score in SCORE_NAMES, name
    assert set(SCORE_NAMES) == {*SCORES, "random"}


def test_views_follow_the_registry(restore_registries):
    assert KEEP_METHODS == ("lpntk", "lpntk_gated", "lpntk_random", "el2n", "grand", "forgetting", "random")
    assert SCORE_METHODS == ("el2n", "grand", "forgetting") and "random" not in SCORE_METHODS
    assert {*RANDOM_METHODS} >= {"random", "el2n", "grand", "forgetting", "lpntk_random", "node"}
    assert len(KEEP_METHODS) == 7 and KEEP_METHODS[0] == "lpntk" and list(KEEP_METHODS)[-1] == "random"
    register_method("mine", lambda inp, spec, seed: np.sort(inp.index), label="mine")
    assert KEEP_METHODS[-1] == "mine" and "mine" in KEEP_METHODS and "mine" not in RANDOM_METHODS


@pytest.mark.parametrize("name", TABLE)
def test_a_method_selects_from_what_it_declares_alone(name):
    kept = select_subset(_only_declared(name), _spec(name), 1)
    assert 0 < len(kept) < N


@pytest.mark.parametrize("name", TABLE)
def test_a_method_depends_on_what_it_declares(name):
    m, spec = method(name), _spec(name)
    base = select_subset(_inputs(), spec, 1)
    if m.kernel:  # other FPC ranks and clusters (of seed 1's inputs), the rest unchanged
        other = _inputs(1)
        moved = dataclasses.replace(
            _inputs(), head_rank=other.head_rank, self_max=other.self_max, clusters=other.clusters
        )
        assert not np.array_equal(select_subset(moved, spec, 1), base), name
    if m.score is not None:  # its column reversed (the shared draw: random reads the scores stage's column)
        scores = dict(_inputs().scores)
        scores[m.score] = scores[m.score].max() - scores[m.score]
        shared = select_subset(_inputs(), spec, None)
        assert not np.array_equal(select_subset(_inputs(scores=scores), spec, None), shared), name


@pytest.mark.parametrize("name", TABLE)
def test_a_method_depends_on_the_seed_exactly_when_it_declares_a_random_draw(name):
    inputs, spec = _inputs(), _spec(name)
    draws = {tuple(select_subset(inputs, spec, seed)) for seed in range(1, 6)}
    assert (len(draws) > 1) == method(name).random, name
    assert tuple(select_subset(inputs, spec, None)) == tuple(select_subset(inputs, spec, None))  # the shared draw


@pytest.mark.parametrize("name", TABLE)
def test_the_cost_counts_the_retrained_samples(name):
    """retrained_samples bounds the subset's size: round(keep N) up to per-class rounding (the gated heads keep
    fewer), or N where the kept fraction is an outcome."""
    spec = _spec(name)
    kept = len(select_subset(_inputs(), spec, 1))
    counted = retrained_samples(spec, N)
    if method(name).cost == "keep":
        assert kept <= counted + CLASSES and counted == round(0.5 * N), (kept, counted)
    else:
        assert kept <= counted == N


def test_the_cost_of_every_subset_of_a_plan(repo, schema_path):
    """The formula lpntk cost used before the registry: n for full and node, d n (1 - r) in the small-cluster
    experiment, else round(keep n)."""
    from lpntk.config import dataset_config, load_config

    cfg = dataset_config(load_config(repo / ".test" / "config" / "config.yaml", schema_path), "tiny")
    cfg["pruning"].update({"enabled": True, "methods": list(config_methods()), "keep": [0.7, 0.5]})
    cfg["pruning"]["small_clusters"].update({"enabled": True, "data_fractions": [0.5], "remove": [0.2]})
    n = 1000
    for spec in subset_plan(cfg):
        if spec["experiment"] == "small_clusters":
            expected = round(n * spec["data_fraction"] * (1 - spec["remove"]))
        elif spec["method"] in ("full", "node"):
            expected = n
        else:
            expected = round(n * spec["keep"])
        assert retrained_samples(spec, n) == expected, spec["name"]
        assert spec["per_seed"] == (cfg["pruning"]["draws"] == "per_seed" and method(spec["method"]).random)


def test_the_claims_baselines_are_those_of_the_claims_statement():
    from lpntk.claims._family import CLAIM_TEXT

    words = set(re.findall(r"[A-Za-z0-9]+", CLAIM_TEXT["C3b"]))
    assert [method(b).short for b in registry.baselines()] == ["EL2N", "GraNd", "forgetting", "random"]
    assert all(method(b).short in words for b in registry.baselines())
    assert not any(method(b).kernel for b in registry.baselines())  # lpNTK's own variants are no baseline


def test_the_figures_show_the_registrys_labels_and_colours(tmp_path, monkeypatch):
    import pandas as pd
    from matplotlib.colors import to_hex

    from lpntk.figures.pruning_figures import plot_redundant_removal

    rows = [{"method": "full", "keep": 1.0, "realised_keep": 1.0}]
    rows += [{"method": m, "keep": 0.5, "realised_keep": 0.5} for m in config_methods() if m != "node"]
    df = pd.DataFrame(rows).assign(experiment="table", n_seeds=2)
    for metric in ("test_acc_best_val", "test_acc_max"):
        df[f"{metric}_mean"], df[f"{metric}_std"] = 90.0, 1.0

    def legend(fig):
        box = fig.legends[0]
        return [(t.get_text(), to_hex(h.get_color())) for t, h in zip(box.texts, box.legend_handles, strict=True)]

    shown = legend(plot_redundant_removal(df, "toy", tmp_path / "r.png"))
    assert [t for t, _ in shown] == [
        "lpNTK FPC heads (redundant removed)",
        "lpNTK heads, official self-max gate",
        "lpNTK one random member per cluster",
        "random (class-balanced)",
    ]
    assert len({c for _, c in shown}) == len(shown)  # one colour each
    planted = dataclasses.replace(METHODS["random"], label="planted", color="#123456")
    monkeypatch.setitem(METHODS, "random", planted)
    assert legend(plot_redundant_removal(df, "toy", tmp_path / "r2.png"))[-1] == ("planted", "#123456")


def test_colours_and_labels_tell_the_methods_apart():
    for group in (
        [n for n, m in METHODS.items() if m.figure],
        [n for n, m in METHODS.items() if m.experiment == "small_clusters" and n != "base"],
        list(config_methods()),
    ):
        assert len({method(n).label for n in group}) == len(group), group
        assert len({method(n).short for n in group}) == len(group), group
    figure = [method(n).color for n, m in METHODS.items() if m.figure]
    assert len(set(figure)) == len(figure)


def test_a_registration_is_checked(restore_registries):
    with pytest.raises(ValueError, match="identifier"):
        PruningMethod("my-method", "x")
    with pytest.raises(ValueError, match="unknown cost"):
        register_method("mine", lambda *a: None, label="x", cost="cheap")
    with pytest.raises(ValueError, match="subsets function"):
        register_method("mine", lambda *a: None, label="x", keep=False)
    assert "mine" not in METHODS and "mine" not in SELECTORS  # nothing registered by a failed call
    with pytest.raises(ValueError, match="unknown pruning method 'nope'.*register_method"):
        method("nope")

    @register_method("mine", label="mine", kernel=True)
    def mine(inp, spec, seed):
        return np.sort(inp.index[inp.head_rank < 5])

    assert SELECTORS["mine"] is mine and METHODS["mine"].kernel and not METHODS["mine"].random
    assert METHODS["mine"].short == "mine" and METHODS["mine"].tag == ""


def test_a_score_method_is_its_score_alone(restore_registries):
    """register_method with score_fn: the scores table gets the column, the rule keeps its highest like EL2N's."""
    from lpntk.scores import score_table

    def loss_area(dynamics, settings):
        return np.asarray(dynamics["loss"]).sum(axis=1)

    spec = register_method("loss_area", score_fn=loss_area, label="area under the loss curve", short="loss area")
    assert spec.score == "loss_area" and spec.random and spec.keep and spec.tag == "loss area"
    assert SCORES["loss_area"] is loss_area and "loss_area" in SCORE_NAMES and "loss_area" in SCORE_METHODS
    rng = np.random.default_rng(0)
    runs = []
    for _ in range(2):
        runs.append(
            {
                "index": np.arange(6),
                "y": np.array([0, 0, 0, 1, 1, 1]),
                "loss": rng.random((6, 3)),
                "correct": np.ones((6, 3), bool),
                "forgetting_count": np.zeros(6, int),
                "never_learned": np.zeros(6, bool),
                "score_epochs": np.array([0]),
                "el2n": rng.random((6, 1)),
                "grand": rng.random((6, 1)),
            }
        )
    table = score_table(runs, el2n_epoch=0, grand_epoch=0, random_seed=0)
    expected = np.mean([r["loss"].sum(1) for r in runs], axis=0)
    np.testing.assert_allclose(table["loss_area"], expected)
    np.testing.assert_allclose(table["loss_area_std"], np.std([r["loss"].sum(1) for r in runs], axis=0))
    inputs = _inputs(scores={"loss_area": np.arange(N, dtype=float), "random": np.zeros(N)})
    kept = select_subset(inputs, {"method": "loss_area", "keep": 0.25}, 1)
    assert set(kept) == set(inputs.index[-10:])  # the 10 highest


def test_a_plugin_file_registers_a_method_the_config_may_name(tmp_path, repo, schema_path, restore_registries):
    from lpntk.config import ConfigError, load_config
    from lpntk.plugins import ENV, load_plugins

    raw = yaml.safe_load((repo / ".test" / "config" / "config.yaml").read_text())
    block = next(iter(raw["datasets"].values()))
    block.setdefault("pruning", {})["methods"] = ["lpntk", "half"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="pruning.methods"):
        load_config(path, schema_path)
    plugin = tmp_path / "half.py"
    plugin.write_text(
        "import numpy as np\nimport lpntk\n\n"
        "lpntk.register_method('half', lambda inp, spec, seed: np.sort(inp.index[::2]), label='every other sample')\n"
    )
    raw["plugins"] = [str(plugin)]
    path.write_text(yaml.safe_dump(raw))
    env = dict(os.environ)
    try:
        cfg = load_config(path, schema_path)
        assert cfg["plugins"] == [str(plugin)] and method("half").label == "every other sample"
        assert str(plugin.resolve()) in os.environ[ENV].split(os.pathsep)
        assert load_plugins([str(plugin)]) == [str(plugin.resolve())]  # loaded once
        raw["plugins"] = [str(tmp_path / "missing.py")]
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError, match="config error at plugins: .*missing.py"):
            load_config(path, schema_path)
    finally:
        os.environ.clear()
        os.environ.update(env)

"""docs/extending.md cannot go stale: it shows the example files as they are, and each example, registered through
the public API by its one file, runs -- the pruning method through the plan, the scores, the cluster and prune stages
and the pruning table on the tiny test config; the model through build_model, a config and the kernel against its
closed form; the dataset block through the config's validation.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd
import pytest
import yaml

DOC = "docs/extending.md"
METHOD_FILE = "docs/examples/least_confidence.py"
MODEL_FILE = "docs/examples/softmax_regression.py"


@pytest.fixture
def registries():
    """Undo what the examples register (module state), and the plugins the config hands on to jobs."""
    from lpntk import plugins
    from lpntk.methods import METHODS
    from lpntk.models import MODELS
    from lpntk.pruning import SELECTORS
    from lpntk.scores import SCORES

    live = (METHODS, SELECTORS, SCORES, MODELS, plugins._LOADED, plugins._CHOICES)
    saved = [dict(d) for d in live]
    env = os.environ.get(plugins.ENV)
    yield
    for d, before in zip(live, saved, strict=True):
        d.clear()
        d.update(before)
    if env is None:
        os.environ.pop(plugins.ENV, None)
    else:
        os.environ[plugins.ENV] = env


def _config(repo, tmp_path, schema_path, **edit):
    """The tiny test config (dataset ``tiny``) with ``edit`` applied to its raw YAML, validated and resolved."""
    from lpntk.config import dataset_config, load_config

    raw = yaml.safe_load((repo / ".test" / "config" / "config.yaml").read_text())
    for key, fn in edit.items():
        fn(raw if key == "top" else raw["datasets"]["tiny"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return dataset_config(load_config(path, schema_path), "tiny")


def test_the_page_shows_the_example_files_as_they_are(repo):
    doc = (repo / DOC).read_text()
    blocks = re.findall(r"<!-- file: (\S+) -->\n```python\n(.*?)```", doc, flags=re.S)
    assert sorted(p for p, _ in blocks) == sorted([METHOD_FILE, MODEL_FILE])
    for path, code in blocks:
        assert code == (repo / path).read_text(), path
    readme = (repo / "README.md").read_text()
    assert f"]({DOC})" in readme


def _toy_run(tmp, seed: int, index, labels, epochs: int, score_epochs):
    """Training run ``seed`` of a synthetic split: its dynamics (random losses), summary and per-class kernels."""
    from lpntk.grams import ClassGram, save_class_grams
    from lpntk.io import save_json, save_npz

    rng = np.random.default_rng(seed)
    n = len(index)
    run = tmp / f"train{seed}"
    loss = rng.exponential(1.0, (n, epochs)).astype(np.float32)
    save_npz(
        run / "dynamics.npz",
        index=index,
        y=labels,
        loss=loss,
        correct=loss < 0.7,
        forgetting_count=rng.integers(0, 2, n),
        never_learned=np.zeros(n, bool),
        score_epochs=np.asarray(score_epochs),
        el2n=rng.random((n, len(score_epochs))).astype(np.float32),
        grand=rng.random((n, len(score_epochs))).astype(np.float32),
    )
    save_json(run / "summary.json", {"seed": seed})
    grams = []
    for c in range(10):
        pos = np.flatnonzero(labels == c)
        phi = rng.normal(size=(len(pos), 4))
        grams.append(ClassGram(c, (phi @ phi.T).astype(np.float32), (phi**2).sum(1), index[pos], pos, 10))
    save_class_grams(run / "kernel.npz", grams)
    return run, loss


def test_the_example_method_runs_through_plan_prune_and_table(tmp_path, repo, schema_path, registries):
    from lpntk.io import save_json, save_npz
    from lpntk.methods import method
    from lpntk.plan import pruning_seeds, subset_plan
    from lpntk.stages.cluster_stage import cluster_stage
    from lpntk.stages.prune_stage import prune_stage
    from lpntk.stages.pruning_table_stage import pruning_table_stage
    from lpntk.stages.scores_stage import scores_stage

    def pruning(block):
        block["pruning"].update({"methods": ["lpntk", "least_confidence", "random"], "keep": [0.5]})
        block["pruning"]["small_clusters"] = {"enabled": False}

    def plugins(raw):
        raw["plugins"] = [str(repo / METHOD_FILE)]

    cfg = _config(repo, tmp_path, schema_path, tiny=pruning, top=plugins)  # loads the plugin: the one file
    assert method("least_confidence").label == "least confidence (highest kept)"
    plan = {p["name"]: p for p in subset_plan(cfg)}
    assert plan["least_confidence-k0.5"]["per_seed"] and "least_confidence-k0.8" not in plan  # no curve point

    n = 60
    rng = np.random.default_rng(0)
    index = rng.permutation(np.arange(500, 500 + 3 * n))[:n]
    labels = np.repeat(np.arange(10), 6)
    save_npz(tmp_path / "train.npz", x=np.zeros((n, 1, 2, 2), np.float32), y=labels, index=index)
    off = {"enabled": False}
    tables, records = [], []
    for seed in pruning_seeds(cfg):
        run, loss = _toy_run(tmp_path, seed, index, labels, cfg["train"]["epochs"], cfg["train"]["score_epochs"])
        scores = tmp_path / f"scores{seed}.csv"
        scores_stage(
            dataset="toy",
            cfg=cfg,
            summaries=[run / "summary.json"],
            dynamics=[run / "dynamics.npz"],
            outputs={"table": str(scores), "info": str(tmp_path / f"scores{seed}.json")},
            seeds=[seed],
            mlflow_cfg=off,
        )
        lc = 1.0 - np.exp(-loss.astype(np.float64)).mean(axis=1)  # the formula of the docstring, written out
        np.testing.assert_allclose(pd.read_csv(scores).set_index("index").loc[index, "least_confidence"], lc)
        clusters = {"clusters": str(tmp_path / f"clusters{seed}.npz"), "summary": str(tmp_path / f"cl{seed}.csv")}
        cluster_stage(dataset="toy", cfg=cfg, seed=seed, kernels=[run / "kernel.npz"], outputs=clusters, mlflow_cfg=off)
        outs = {"subsets": str(tmp_path / f"subsets{seed}.npz"), "table": str(tmp_path / f"subsets{seed}.csv")}
        prune_stage(
            dataset="toy",
            cfg=cfg,
            seed=seed,
            train=tmp_path / "train.npz",
            clusters=clusters["clusters"],
            scores=scores,
            outputs=outs,
            mlflow_cfg=off,
        )
        kept = np.load(outs["subsets"])["least_confidence-k0.5"]
        assert set(kept) == set(index[np.argsort(-lc)[: n // 2]])  # the least confident half (ranking: global)
        tables.append(outs["table"])
        sizes = pd.read_csv(outs["table"]).set_index("name")["n"]
        for name in ("full", "lpntk-k0.5", "least_confidence-k0.5", "random-k0.5"):
            spec = plan[name]
            acc = 0.9 - 0.01 * len(name) + 0.001 * seed
            run_rec = {"seed": seed, "n_train": int(sizes.get(name, n)), "epochs": 2, "history": [], "best_epoch": 1}
            run_rec.update(test_acc_best_val=acc, test_acc_last=acc, test_acc_max=acc, val_acc_best=acc)
            keys = {k: spec.get(k) for k in ("method", "experiment", "keep", "per_seed")}
            records.append({"subset": name, **keys, "n_train": run_rec["n_train"], "epochs": 2, "runs": [run_rec]})
    runs = [str(save_json(tmp_path / "retrain.json", {"subsets": records}))]
    outs = {
        k: str(tmp_path / v)
        for k, v in (
            ("csv", "t.csv"),
            ("md", "t.md"),
            ("runs", "runs.csv"),
            ("fig_redundant", "r.png"),
            ("fig_redundant_pdf", "r.pdf"),
            ("fig_small", "s.png"),
            ("fig_small_pdf", "s.pdf"),
        )
    }
    pruning_table_stage(dataset="toy", cfg=cfg, runs=runs, subsets_table=tables, outputs=outs, mlflow_cfg=off)
    table = pd.read_csv(outs["csv"]).set_index("subset")
    assert table.loc["least_confidence-k0.5", "method"] == "least_confidence"
    assert table.loc["least_confidence-k0.5", "n_seeds"] == len(pruning_seeds(cfg))
    md = open(outs["md"]).read()
    assert re.search(r"^\| least_confidence +\|", md, flags=re.M)


def test_the_example_model_builds_and_has_the_closed_form_kernel(tmp_path, repo, schema_path, registries):
    import torch

    import lpntk
    from lpntk.cost import model_key
    from lpntk.models import MODELS

    def model(block):
        block["model"] = {"name": "softmax_regression"}

    def plugins(raw):
        raw["plugins"] = [str(repo / MODEL_FILE)]

    cfg = _config(repo, tmp_path, schema_path, tiny=model, top=plugins)
    assert cfg["model"]["name"] == "softmax_regression"
    spec = MODELS["softmax_regression"]
    assert spec.cost_key((1, 28, 28)) == model_key("softmax_regression", (1, 28, 28)) == "softmax_regression@1x28x28"
    assert spec.describe() == "softmax regression"
    net = lpntk.build_model("softmax_regression", (1, 8, 8), 10).double()
    x, y = torch.randn(5, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 3, 3, 9, 1])
    s = -torch.ones(5, 10, dtype=torch.float64)
    s[torch.arange(5), y] = 1.0
    flat = x.flatten(1)
    expected = (flat @ flat.T + 1) * (s @ s.T) / 10  # J J'^T = (x . x' + 1) I_K
    torch.testing.assert_close(lpntk.lpntk_gram(net, x, y), expected, rtol=1e-10, atol=1e-10)


def test_the_example_dataset_block_is_a_valid_config(tmp_path, repo, schema_path):
    from lpntk.config import load_config

    doc = (repo / DOC).read_text()
    section = doc.split("## A dataset")[1].split("\n## ")[0]
    block = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, flags=re.S).group(1))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(block))
    cfg = load_config(path, schema_path)
    assert cfg["datasets"]["fashion"]["model"]["name"] == "mlp"

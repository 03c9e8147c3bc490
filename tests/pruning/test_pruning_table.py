"""The pruning table (lpntk.stages.pruning_table_stage) with the slides' numbers, and the pruning stages end to end
on the tiny workflow run."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest


def _result(subset, method, keep, accs, n, experiment="table", **extra):
    """One subset's retraining record; ``n``: its size, or each seed's."""
    sizes = n if isinstance(n, list) else [n] * len(accs)
    runs = [
        {
            "seed": s + 1,
            "n_train": sizes[s],
            "test_acc_best_val": a,
            "test_acc_last": a - 0.01,
            "test_acc_max": a + 0.01,
            "val_acc_best": a,
            "best_epoch": 1,
            "epochs": 2,
            "history": [],
        }
        for s, a in enumerate(accs)
    ]
    return {
        "subset": subset,
        "method": method,
        "experiment": experiment,
        "keep": keep,
        "n_train": float(np.mean(sizes)),
        "epochs": 2,
        "runs": runs,
        **extra,
    }


def test_pruning_table_with_slides(tmp_path, tiny_cfg):
    from lpntk.io import save_json
    from lpntk.stages.pruning_table_stage import aggregate_runs, pruning_table_stage

    cfg = copy.deepcopy(tiny_cfg)
    cfg.update({"source": "torchvision", "name": "MNIST"})
    cfg["pruning"].update({"methods": ["lpntk", "random"], "keep": [0.5], "curve_keep": []})
    cfg["pruning"]["small_clusters"].update({"data_fractions": [0.5], "remove": [0.2], "controls": ["random"]})
    results = [
        {
            "subsets": [
                _result("full", "full", 1.0, [0.99, 0.98], 100),
                _result("lpntk-k0.5", "lpntk", 0.5, [0.97, 0.95], 50),
                _result("random-k0.5", "random", 0.5, [0.96, 0.96], 50),
            ]
        },
        {
            "subsets": [
                _result("d0.5-base", "base", 1.0, [0.8, 0.7], 50, "small_clusters", data_fraction=0.5, remove=0.0),
                _result(
                    "d0.5-small-r0.2",
                    "small_clusters",
                    0.8,
                    [0.75, 0.7],
                    [39, 41],  # whole clusters go: each seed's subset its own size
                    "small_clusters",
                    data_fraction=0.5,
                    remove=0.2,
                ),
                _result(
                    "d0.5-random-r0.2",
                    "random_removal",
                    0.8,
                    [0.6, 0.7],
                    40,
                    "small_clusters",
                    data_fraction=0.5,
                    remove=0.2,
                ),
            ]
        },
    ]
    df = aggregate_runs(results, 100)
    row = df.set_index("subset").loc["lpntk-k0.5"]
    assert row["test_acc_best_val_mean"] == pytest.approx(96.0)
    assert row["test_acc_best_val_std"] == pytest.approx(np.std([97, 95], ddof=1))
    assert row["test_acc_max_mean"] == pytest.approx(97.0) and row["realised_keep"] == 0.5
    files = []
    for i, r in enumerate(results):
        files.append(str(save_json(tmp_path / f"r{i}.json", r)))
    pd.DataFrame(
        [
            {"name": n, "n": k, "reference_n": ref}
            for n, k, ref in (
                ("full", 100, 100),
                ("lpntk-k0.5", 50, 100),
                ("random-k0.5", 50, 100),
                ("d0.5-base", 50, 50),
                ("d0.5-small-r0.2", 40, 50),
                ("d0.5-random-r0.2", 40, 50),
            )
        ]
    ).to_csv(tmp_path / "s.csv", index=False)
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
    pruning_table_stage(
        dataset="mnist",
        cfg=cfg,
        runs=files,
        subsets_table=tmp_path / "s.csv",
        outputs=outs,
        mlflow_cfg={"enabled": False},
    )
    md = open(outs["md"]).read()
    assert "99.37 ± 0.04" in md and "96.00 ± 1.41" in md and "keep not stated" in md
    assert (
        "Each retraining seed's subset is selected from its own reference seed: lpNTK from that seed's kernel, "
        "EL2N/GraNd/forgetting from that seed's training dynamics, random drawn per seed; the spread over seeds "
        "therefore includes the selection's variance." in md
    )
    cells = [line.split("|") for line in md.splitlines() if line.startswith("| d0.5")]
    sizes = {c[1].strip(): c[5].strip() for c in cells}  # the small-cluster table's n_train: sizes, not their means
    assert sizes == {"d0.5-base": "50", "d0.5-small-r0.2": "39-41", "d0.5-random-r0.2": "40"}
    long = pd.read_csv(outs["csv"])
    assert set(long["source"]) == {"ours", "slides"}
    assert long.loc[(long["source"] == "slides") & (long["method"] == "lpntk"), "reported_acc_mean"].item() == 99.37
    small = long[long["experiment"] == "small_clusters"].set_index("subset")
    assert small.loc["d0.5-small-r0.2", "realised_keep"] == pytest.approx(0.8)
    per_run = pd.read_csv(outs["runs"])  # one row per (subset, seed): what the claims pair over seeds
    lp = per_run[per_run["subset"] == "lpntk-k0.5"]
    assert list(lp["seed"]) == [1, 2] and 100 * lp["test_acc_best_val"].mean() == pytest.approx(96.0)
    for k in ("fig_redundant", "fig_redundant_pdf", "fig_small", "fig_small_pdf"):
        assert open(outs[k], "rb").read(4) in (b"\x89PNG", b"%PDF")
    png = open(outs["fig_redundant"], "rb").read()
    pruning_table_stage(
        dataset="mnist",
        cfg=cfg,
        runs=files,
        subsets_table=tmp_path / "s.csv",
        outputs=outs,
        mlflow_cfg={"enabled": False},
    )
    assert open(outs["fig_redundant"], "rb").read() == png  # reproducible bytes


# ------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_pruning_stages_end_to_end(workflow_run):
    from mlflow.tracking import MlflowClient

    workdir, _ = workflow_run
    res = workdir / "results" / "tiny"
    train = np.load(res / "data" / "train.npz")
    n = len(train["index"])
    subsets, names = {}, None
    for seed in (1, 2):  # each retraining seed's subsets, from its own training run's kernels and scores
        scores = pd.read_csv(res / "scores" / f"seed{seed}.csv")
        assert scores["index"].tolist() == train["index"].tolist() and scores["label"].tolist() == train["y"].tolist()
        assert scores[["el2n", "grand", "forgetting", "random"]].notna().all().all()
        assert json.loads((res / "scores" / f"seed{seed}.json").read_text())["seeds"] == [seed]
        assert (res / "cluster" / f"seed{seed}" / "clusters.npz").is_file()
        groups = ("k0.8", "k0.5", "d0.5")  # one prune job and file per kept fraction or small-cluster data fraction
        assert sorted(p.stem for p in (res / "pruning" / f"seed{seed}").glob("*.npz")) == sorted(groups)
        subsets[seed] = {k: v for g in groups for k, v in np.load(res / "pruning" / f"seed{seed}" / f"{g}.npz").items()}
        plan = pd.concat([pd.read_csv(res / "pruning" / f"seed{seed}" / f"{g}.csv") for g in groups])  # a row a subset
        assert sorted(plan["name"]) == sorted(subsets[seed]) and (plan["seed"] == seed).all()
        assert names is None or set(plan["name"]) == names
        names = set(plan["name"])
        for name in subsets[seed]:
            assert set(subsets[seed][name]) <= set(train["index"].tolist()), name
        assert len(subsets[seed]["lpntk-k0.5"]) == len(subsets[seed]["random-k0.5"]) == n // 2  # 12 of 24 per class
        assert set(subsets[seed]["lpntk-k0.5"]) <= set(subsets[seed]["lpntk-k0.8"])  # nested heads
    for name in ("lpntk-k0.5", "el2n-k0.5", "random-k0.5", "d0.5-small-r0.25"):  # the seeds select apart
        assert not np.array_equal(subsets[1][name], subsets[2][name]), name
    names.add("full")  # the full training set: retrained, never selected
    mean = pd.read_csv(res / "scores" / "scores.csv")  # scores.enabled: the mean over the seeds, a table of its own
    one = {s: pd.read_csv(res / "scores" / f"seed{s}.csv") for s in (1, 2)}
    assert np.allclose(mean["el2n"], (one[1]["el2n"] + one[2]["el2n"]) / 2)
    table = pd.read_csv(res / "pruning" / "table.csv")
    ours = table[table["source"] == "ours"].set_index("subset")
    assert set(ours.index) == names
    assert (ours["n_seeds"] == 2).all() and ours["test_acc_best_val_mean"].between(0, 100).all()
    assert "is selected from its own reference seed" in (res / "pruning" / "table.md").read_text()
    for f in ("table.md", "redundant_removal.png", "redundant_removal.pdf", "small_clusters.png", "small_clusters.pdf"):
        assert (res / "pruning" / f).stat().st_size > 0
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lpntk-tiny")
    runs = client.search_runs([exp.experiment_id], "tags.`lpntk.rule` = 'retrain'", max_results=1000)
    assert len(runs) == 2 * len(names)  # one run per subset and seed, on that seed's own subset
    tags = {(r.data.tags["lpntk.subset"], r.data.tags["lpntk.seed"]) for r in runs}
    assert tags == {(s, str(seed)) for s in names for seed in (1, 2)}
    for r in runs:
        assert r.info.status == "FINISHED" and {"test_acc_best_val", "test_acc_last", "test_acc_max"} <= set(
            r.data.metrics
        )
        assert r.data.tags["lpntk.method"] in {
            "full",
            "lpntk",
            "el2n",
            "grand",
            "forgetting",
            "random",
            "base",
            "small_clusters",
            "random_removal",
        }
        assert "lpntk.keep" in r.data.tags
    # per seed (+ the mean); prune: per seed and group
    for rule, count in (("scores", 3), ("cluster", 2), ("prune", 6), ("pruning_table", 1)):
        found = client.search_runs([exp.experiment_id], f"tags.`lpntk.rule` = '{rule}'")
        assert len(found) == count and all(r.info.status == "FINISHED" for r in found), rule

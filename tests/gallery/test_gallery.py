"""The gallery: which samples it shows (against hand-built Grams) and the stage's figure on a small real setup."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from conftest import small_kernel_setup

from lpntk.gallery import (
    anchor_positions,
    cluster_members,
    largest_clusters,
    min_cosines,
    relation_partners,
    removal_order,
    removed,
    spread_classes,
)
from lpntk.relations import cosine


def test_spread_classes():
    assert spread_classes(range(10), 3) == [0, 4, 9]
    assert spread_classes([7, 3, 5, 3], 2) == [3, 7]
    assert spread_classes(range(4), 9) == [0, 1, 2, 3]
    assert spread_classes(range(10), 1) == [0] and spread_classes(range(10), 0) == [] and spread_classes([], 2) == []


def test_anchors_are_the_largest_self_lpntk_of_each_class():
    labels = np.array([0, 1, 0, 1, 2, 0])
    sq = np.array([1.0, 5.0, 3.0, 5.0, 0.5, 3.0])  # class 1: tie at positions 1 and 3 -> 1; class 0: tie 2, 5 -> 2
    assert anchor_positions(labels, sq, [1, 0, 7, 2]) == [1, 2, 4]  # class 7 has no sample: skipped
    with pytest.raises(ValueError, match="shape"):
        anchor_positions(labels, sq[:3], [0])


def test_min_cosines_in_blocks_against_the_full_matrix():
    rng = np.random.default_rng(1)
    phi = rng.normal(size=(9, 3))
    phi[4] = 0.0  # a zero-norm sample: cos 0 with everyone
    gram = phi @ phi.T
    full = cosine(gram, np.diag(gram))
    np.fill_diagonal(full, np.inf)
    for block in (1, 4, 1024):
        np.testing.assert_allclose(min_cosines(gram, np.diag(gram), block=block), full.min(axis=1))
    assert min_cosines(np.ones((1, 1)), np.ones(1)).tolist() == [np.inf]
    score = -min_cosines(gram, np.diag(gram))
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert anchor_positions(labels, score, [0, 1, 2]) == [
        int(3 * c + np.argmin(full.min(1)[3 * c : 3 * c + 3])) for c in range(3)
    ]


def test_relation_partners_on_a_hand_built_gram():
    # phi vectors at known angles to the anchor phi_0 = (1, 0): cos = 0.95, 0.5, 0.05, -0.02, -0.6, -0.99, 0.5
    angles = np.arccos([1.0, 0.95, 0.5, 0.05, -0.02, -0.6, -0.99, 0.5])
    norms = np.array([2.0, 1.0, 3.0, 1.0, 0.5, 2.0, 1.0, 1.5])
    phi = norms[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    gram = phi @ phi.T
    cos = cosine(gram, np.diag(gram))[0]
    got = relation_partners(cos, 0, 2, tau=0.1)
    assert got["interchangeable"].tolist() == [1, 2]  # 0.95, then 0.5 at positions 2 and 7: the smaller position
    assert got["unrelated"].tolist() == [4, 3]  # |cos| 0.02 < 0.05
    assert got["contradictory"].tolist() == [6, 5]  # -0.99 before -0.6
    many = relation_partners(cos, 0, 10, tau=0.1)
    assert many["interchangeable"].tolist() == [1, 2, 7] and len(many["contradictory"]) == 2  # fewer than asked
    assert 0 not in np.concatenate(list(many.values()))  # never the anchor itself (cos 1)
    assert relation_partners(cos, 0, 3, tau=0.6)["unrelated"].tolist() == [4, 3, 2]  # |cos| <= tau: 0.02, 0.05, 0.5
    with pytest.raises(ValueError, match="tau"):
        relation_partners(cos, 0, 1, tau=1.0)


def test_largest_clusters_and_their_members():
    index = np.array([10, 11, 12, 13, 14, 15, 16])
    head_of = np.array([10, 10, 12, 10, 12, 15, 15])  # sizes: 10 -> 3, 12 -> 2, 15 -> 2
    assert largest_clusters(head_of, 2) == [10, 12]  # tie 12 / 15: the smaller head id
    assert largest_clusters(head_of, 5) == [10, 12, 15]
    sim = np.array([1.0, 0.2, 0.0, 0.9, 0.0, 0.0, 0.0])
    assert cluster_members(index, head_of, 10, 5, sim).tolist() == [3, 1]  # the head excluded; closest first
    assert cluster_members(index, head_of, 10, 1).tolist() == [1]  # without similarities: by id
    assert cluster_members(index, head_of, 15, 3).tolist() == [6]


def test_removal_order_follows_the_methods_ranking():
    index = np.array([30, 31, 32, 33, 34, 35])
    kept = np.array([31, 35])
    score = np.array([0.5, 0.9, 0.1, 0.5, 0.3, 0.8])
    tiebreak = np.array([0.2, 0.0, 0.0, 0.1, 0.0, 0.0])
    # removed: 30, 32, 33, 34 by score ascending (a method keeps the highest), ties by the tie-break, then id
    assert removal_order(index, kept, [score, tiebreak]).tolist() == [2, 4, 3, 0]
    assert removal_order(index, kept, [score], 2).tolist() == [2, 4]
    assert removal_order(index, kept, [np.zeros(6)]).tolist() == [0, 2, 3, 4]  # no ranking: by id
    assert removed([5, 1, 3, 9], [3, 9]).tolist() == [1, 5]


# ------------------------------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def gallery_inputs(tmp_path_factory, repo, schema_path):
    """Real digits (20 per class), a briefly trained small CNN, its kernels, the relations stage's cross panel, and
    the cluster and prune stages on them (synthetic baseline scores)."""
    from lpntk.config import dataset_config, load_config
    from lpntk.io import save_table
    from lpntk.stages.cluster_stage import cluster_stage
    from lpntk.stages.prune_stage import prune_stage
    from lpntk.stages.relations_stage import RELATIONS_OUTPUTS, relations_stage

    root = tmp_path_factory.mktemp("gallery")
    prep, _, kcfg, kernels = small_kernel_setup(root, train_epochs=2)
    cfg = dataset_config(load_config(repo / ".test" / "config" / "config.yaml", schema_path), "tiny")
    cfg.update({k: kcfg[k] for k in ("dataset", "device", "model", "kernel")})
    cfg["relations"]["cross_samples_per_class"] = 6
    cfg["pruning"]["small_clusters"]["kernels"] = ["full"]  # no own_clusters stage here
    off = {"enabled": False}
    ext = {"cross": "npz", "histogram": "png", "histogram_pdf": "pdf", "summary": "json"}
    rel = {k: str(root / "rel" / f"{k}.{ext.get(k, 'md' if k.endswith('_md') else 'csv')}") for k in RELATIONS_OUTPUTS}
    relations_stage(
        dataset="digits", cfg=cfg, kernels=kernels, data=root / "data", reference=root / "model.pt",
        outputs=rel, threads=1, mlflow_cfg=off,
    )  # fmt: skip
    index, labels = prep.train.index.numpy(), prep.train.y.numpy()
    rng = np.random.default_rng(0)
    scores = pd.DataFrame({"index": index, "label": labels, "random": rng.random(len(index))})
    for m in ("el2n", "grand", "forgetting"):
        scores[m] = rng.random(len(index))
    save_table(root / "scores.csv", scores)
    files = {
        "train": str(root / "data" / "train.npz"),
        "kernels": kernels,
        "cross": rel["cross"],
        "clusters": str(root / "clusters.npz"),
        "subsets": str(root / "subsets.npz"),
        "subsets_table": str(root / "subsets.csv"),
        "scores": str(root / "scores.csv"),
    }
    cluster_stage(
        dataset="digits", cfg=cfg, seed=1, kernels=kernels,
        outputs={"clusters": files["clusters"], "summary": str(root / "cluster.csv")}, mlflow_cfg=off,
    )  # fmt: skip
    prune_stage(
        dataset="digits", cfg=cfg, seed=1, train=files["train"], clusters=files["clusters"], scores=files["scores"],
        outputs={"subsets": files["subsets"], "table": files["subsets_table"]}, mlflow_cfg=off,
    )  # fmt: skip
    return root, cfg, files


def _run(tmp, cfg, files, **drop):
    from lpntk.stages.gallery_stage import gallery_stage

    out = {"figure": str(tmp / "g.png"), "figure_pdf": str(tmp / "g.pdf"), "samples": str(tmp / "g.csv")}
    inputs = {k: v for k, v in files.items() if k not in drop}
    table = gallery_stage(dataset="digits", cfg=cfg, outputs=out, mlflow_cfg={"enabled": False}, **inputs)
    return table, out


def test_gallery_stage_draws_every_panel_deterministically(gallery_inputs, tmp_path):
    from lpntk.io import load_npz

    root, cfg, files = gallery_inputs
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    table, out = _run(a, cfg, files)
    _, out_b = _run(b, cfg, files)
    png = open(out["figure"], "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000  # a real figure, not an empty canvas
    for k in out:
        assert (
            hashlib.sha256(open(out[k], "rb").read()).digest() == hashlib.sha256(open(out_b[k], "rb").read()).digest()
        ), k
    assert set(table["panel"]) == {"relations", "clusters", "pruning", "small_clusters"}

    # (a) anchors: classes 0, 4, 9, each its class's most contradicted sample inside the cross panel
    panel = load_npz(files["cross"])
    anchors = table[(table["panel"] == "relations") & (table["group"] == "anchor")]
    assert anchors["label"].tolist() == [0, 4, 9]
    lowest = min_cosines(panel["gram"], panel["sq_norm"])
    for _, r in anchors.iterrows():
        in_class = panel["label"] == r["label"]
        assert r["position"] == panel["position"][in_class][np.argmin(lowest[in_class])]
    rel = table[table["panel"] == "relations"]
    inter, contra = rel[rel["group"] == "interchangeable"], rel[rel["group"] == "contradictory"]
    assert (inter["cos"] > 0.1).all() and (contra["cos"] < 0).all()
    for row, part in inter.groupby("row"):  # interchangeable partners come from the anchor's own class
        assert (part["label"] == int(row.split()[1])).all()
    assert (rel[rel["group"] == "unrelated"]["cos"].abs() <= 0.1).all()
    # (c) what a score method removes first: the lowest scores among the samples its smallest subset leaves out
    kept = load_npz(files["subsets"])["el2n-k0.5"]  # seed 1's subsets
    scores = pd.read_csv(files["scores"]).set_index("index")
    el2n = table[(table["panel"] == "pruning") & (table["group"] == "el2n")]
    assert not set(el2n["index"]) & set(kept.tolist())
    gone = scores.loc[~scores.index.isin(kept), "el2n"].sort_values()
    assert el2n["index"].tolist() == gone.index[: len(el2n)].tolist()
    # (d) small clusters: removed from the base subset, not kept
    small = table[table["panel"] == "small_clusters"]
    sub = load_npz(files["subsets"])
    assert set(small["index"]) <= set(sub["d0.5-base"].tolist()) - set(sub["d0.5-small-r0.25"].tolist())
    # the clusters of a pruning seed that is not the reference seed come with its own Grams (selection_kernels): read
    # in a pass of their own, here the same Grams, so the same gallery
    c = tmp_path / "c"
    c.mkdir()
    again, _ = _run(c, cfg, {**files, "selection_kernels": files["kernels"]})
    pd.testing.assert_frame_equal(again, table)


def test_gallery_stage_without_the_relations_and_pruning_stages(gallery_inputs, tmp_path):
    root, cfg, files = gallery_inputs
    table, out = _run(tmp_path, cfg, files, cross=1, clusters=1, subsets=1, subsets_table=1, scores=1)
    assert set(table["panel"]) == {"relations"}  # the within-class fallback; the other panels say they are skipped
    for row, part in table.groupby("row"):  # without the cross panel every partner comes from the class Gram
        assert (part["label"] == int(row.split()[1])).all()
    assert open(out["figure"], "rb").read()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_gallery_in_workflow(workflow_run):
    from mlflow.tracking import MlflowClient

    workdir, _ = workflow_run
    res = workdir / "results" / "tiny" / "gallery"
    for f in ("gallery.png", "gallery.pdf", "samples.csv"):
        assert (res / f).is_file(), f
    table = pd.read_csv(res / "samples.csv")
    assert set(table["panel"]) == {"relations", "clusters", "pruning", "small_clusters"}  # every stage is enabled
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lpntk-tiny")
    (run,) = client.search_runs([exp.experiment_id], "tags.`lpntk.rule` = 'gallery'")
    assert run.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"gallery.png", "gallery.pdf", "samples.csv"}

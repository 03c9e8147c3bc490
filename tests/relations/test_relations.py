"""Relations under lpNTK: shares on constructed Grams with known answers, redundant / self-max samples, the stage
against a brute-force full Gram, and the stage in the end-to-end workflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_kernel_setup

from lpntk.relations import (
    cosine,
    cross_redundant_mask,
    official_value_counts,
    official_value_shares,
    redundant_mask,
    relation_counts,
    relation_shares,
    selfmax_larger_index_mask,
    stratified_shares,
    upper_triangle,
)

OFF = {"enabled": False}


def _gram_from_angles(angles_deg, norms):
    rad = np.radians(angles_deg)
    phi = np.stack([np.cos(rad), np.sin(rad)], axis=1) * np.asarray(norms)[:, None]
    return phi @ phi.T


def test_shares_on_constructed_gram_with_known_angles():
    # 4 vectors at 0, 60, 91, 180 degrees, various norms: pairwise angles (i<j):
    # (0,1) 60 -> cos .5; (0,2) 91 -> -0.01745; (0,3) 180 -> -1; (1,2) 31 -> .857; (1,3) 120 -> -.5; (2,3) 89 -> .01745
    g = _gram_from_angles([0, 60, 91, 180], [1.0, 2.0, 3.0, 0.5])
    cos = upper_triangle(cosine(g, np.diag(g)))
    expected = np.cos(np.radians([60, 91, 180, 31, 120, 89]))
    np.testing.assert_allclose(cos, expected, atol=1e-12)
    assert relation_counts(cos, 0.0) == {"interchangeable": 3, "unrelated": 0, "contradictory": 3}
    assert relation_counts(cos, 0.1) == {"interchangeable": 2, "unrelated": 2, "contradictory": 2}
    assert relation_shares(cos, 0.6) == {"interchangeable": 1 / 6, "unrelated": 4 / 6, "contradictory": 1 / 6}
    # tau = 0: an exactly orthogonal pair is unrelated
    assert relation_counts(np.array([0.0, 1e-9, -1e-9]), 0.0) == {
        "interchangeable": 1,
        "unrelated": 1,
        "contradictory": 1,
    }
    with pytest.raises(ValueError, match="tau"):
        relation_counts(cos, 1.0)


def test_cosine_zero_norm_and_cross_shapes():
    g = np.array([[4.0, 0.0, 2.0], [0.0, 0.0, 0.0], [2.0, 0.0, 1.0]])
    c = cosine(g, np.diag(g))
    assert c[0, 1] == 0.0 and c[1, 1] == 0.0 and c[0, 2] == pytest.approx(1.0)
    cross = cosine(np.array([[1.0, -2.0]]), np.array([1.0]), np.array([4.0, 16.0]))
    np.testing.assert_allclose(cross, [[0.5, -0.5]])
    with pytest.raises(ValueError, match="shape"):
        cosine(np.ones((2, 3)), np.ones(2))


def test_official_raw_value_rule_boundaries():
    v = np.array([0.1, 0.0999, -0.1, -0.0999, 5.0, -3.0, 0.0, 0.2])
    s = official_value_shares(v, 0.1)
    assert s == {"positive": 3 / 8, "zero": 3 / 8, "negative": 2 / 8}


def test_redundant_mask_hand_made_and_brute_force():
    # phi_0 = (1, 0), phi_1 = (2, 0.1), phi_2 = (0, 1): kappa(0,1) = 2 > kappa(0,0) = 1 -> 0 redundant;
    # kappa(1,1) = 4.01 > every other -> 1 not; kappa(2,1) = 0.1 < 1 -> 2 not
    phi = np.array([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0]])
    g = phi @ phi.T
    np.testing.assert_array_equal(redundant_mask(g), [True, False, False])
    # an exact duplicate is not redundant (strict inequality)
    dup = np.array([[1.0, 1.0], [1.0, 1.0]])
    np.testing.assert_array_equal(redundant_mask(dup), [False, False])
    rng = np.random.default_rng(0)
    for _ in range(5):
        phi = rng.normal(size=(12, 4)) * rng.uniform(0.2, 3.0, size=(12, 1))
        g = phi @ phi.T
        brute = [any(g[i, j] > g[i, i] for j in range(12) if j != i) for i in range(12)]
        np.testing.assert_array_equal(redundant_mask(g), brute)
        # the cross variant: a larger kappa to some column
        np.testing.assert_array_equal(
            cross_redundant_mask(g[:6, 6:], np.diag(g)[:6]),
            [any(g[i, j] > g[i, i] for j in range(6, 12)) for i in range(6)],
        )


def test_selfmax_larger_index_is_the_official_upper_triangle_test():
    rng = np.random.default_rng(1)
    phi = rng.normal(size=(10, 3)) * rng.uniform(0.2, 3.0, size=(10, 1))
    g = phi @ phi.T
    order = rng.permutation(10)
    m = selfmax_larger_index_mask(g, order)
    rank = np.empty(10, dtype=int)
    rank[order] = np.arange(10)
    brute = [all(g[i, i] >= g[i, j] for j in range(10) if rank[j] > rank[i]) for i in range(10)]
    np.testing.assert_array_equal(m, brute)
    assert m[order[-1]]  # the last sample in the order is always self-max
    # not self-max among later samples => redundant (some other sample beats the self-pair)
    red = redundant_mask(g)
    assert np.all(red[~m])
    with pytest.raises(ValueError, match="permutation"):
        selfmax_larger_index_mask(g, [0, 0, 1, 2, 3, 4, 5, 6, 7, 8])


def test_stratified_shares_exact_when_enumerated():
    counts = [{"a": 3, "b": 1}, {"a": 0, "b": 6}]
    # fully enumerated strata: weighting by population = pooling the counts
    assert stratified_shares(counts, [4, 6]) == {"a": 3 / 10, "b": 7 / 10}
    # a sampled stratum scales to its population: stratum 2 has 600 pairs, sample share b = 1
    assert stratified_shares(counts, [4, 600]) == pytest.approx({"a": 3 / 604, "b": 601 / 604})


def test_edge_cases_found_by_mutation_testing():
    """Empty inputs, ties, round-off and messages (mutants that survived the first mutmut pass,
    docs/mutation-testing.md)."""
    import warnings

    nan3 = {"interchangeable": None, "unrelated": None, "contradictory": None}
    for shares in (relation_shares(np.zeros(0), 0.1), official_value_shares(np.zeros(0))):
        assert len(shares) == 3 and all(np.isnan(v) for v in shares.values()), shares
    assert set(relation_shares(np.zeros(0), 0.1)) == set(nan3)
    # cosine: integer input, float32 norms taken in float64, round-off clipped to [-1, 1], negative round-off
    # norms treated as zero without a warning
    np.testing.assert_array_equal(cosine(np.array([[4, 2], [2, 1]]), np.array([4, 1])), [[1.0, 1.0], [1.0, 1.0]])
    c = cosine(np.array([[3.0, 1.0], [1.0, 3.0]]), np.array([3.0, 3.0], dtype=np.float32))
    np.testing.assert_allclose(c, [[1.0, 1 / 3], [1 / 3, 1.0]], rtol=1e-14)
    c = cosine(np.array([[4.0, -2.0000001], [-2.0000001, 1.0 + 1e-9]]), np.array([4.0, 1.0]))
    assert c[0, 1] == -1.0 and c[1, 1] == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = cosine(np.array([[0.0, 0.0], [0.0, 0.0]]), np.array([-1e-18, 1.0]), np.array([1.0, -1e-18]))
    np.testing.assert_array_equal(c, np.zeros((2, 2)))
    np.testing.assert_allclose(cosine(np.array([[0.25]]), np.array([1.0]), np.array([0.25])), [[0.5]])
    # the official raw-value rule's default threshold is 0.1, and the shares pass their threshold on
    assert official_value_counts(np.array([0.5, -0.5, 0.05, 0.1])) == {"positive": 2, "zero": 1, "negative": 1}
    assert official_value_shares(np.array([0.5, -0.5, 0.05, 0.1])) == {"positive": 0.5, "zero": 0.25, "negative": 0.25}
    assert official_value_shares(np.array([0.5, -0.5]), 0.6) == {"positive": 0.0, "zero": 1.0, "negative": 0.0}
    # redundant samples: two samples, one sample, no sample, integer Grams; the messages
    assert redundant_mask(np.array([[1.0, 2.0], [2.0, 5.0]])).tolist() == [True, False]
    assert redundant_mask(np.array([[1, 2], [2, 5]])).tolist() == [True, False]
    one = redundant_mask(np.array([[3.0]]))
    assert one.dtype == bool and one.tolist() == [False]
    assert redundant_mask(np.zeros((0, 0))).tolist() == []
    with pytest.raises(ValueError, match=r"^expected a square Gram, got shape \(2, 3\)$"):
        redundant_mask(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"^expected a square matrix, got shape \(2, 3\)$"):
        upper_triangle(np.zeros((2, 3)))
    # against other samples: strict, one column, no column
    assert cross_redundant_mask(np.array([[2.0], [1.0]]), np.array([1.0, 1.0])).tolist() == [True, False]
    none = cross_redundant_mask(np.zeros((3, 0)), np.ones(3))
    assert none.dtype == bool and none.tolist() == [False, False, False]
    # the official self-max test: default order, ties are self-max, the very next sample counts
    g = np.array([[2.0, 3.0, 0.0], [3.0, 3.0, 1.0], [0.0, 1.0, 1.0]])
    assert selfmax_larger_index_mask(g).tolist() == [False, True, True]
    assert selfmax_larger_index_mask(g, [2, 1, 0]).tolist() == [True, True, True]
    with pytest.raises(ValueError, match=r"^order must be a permutation of the Gram's rows$"):
        selfmax_larger_index_mask(g, [0, 0, 1])
    # stratified shares: a stratum without sampled pairs or without population is skipped (not the rest), a
    # stratum of one pair or of population one counts, no strata give no keys
    one_pair = {"a": 1, "b": 0}
    assert stratified_shares([{"a": 0, "b": 0}, one_pair], [10, 1]) == {"a": 1.0, "b": 0.0}
    assert stratified_shares([one_pair, {"a": 0, "b": 2}], [0, 3]) == {"a": 0.0, "b": 1.0}
    assert stratified_shares([one_pair], [4]) == {"a": 1.0, "b": 0.0}
    assert stratified_shares([], []) == {}
    shares = stratified_shares([{"a": 0, "b": 0}], [5])
    assert list(shares) == ["a", "b"] and all(np.isnan(v) for v in shares.values())
    with pytest.raises(ValueError, match=r"^counts and population differ in length$"):
        stratified_shares([one_pair], [1, 2])


@pytest.fixture(scope="module")
def small_setup(tmp_path_factory):
    """Prepared digits (20 per class), an untrained small CNN as reference, its per-class kernel files."""
    root = tmp_path_factory.mktemp("rel")
    prep, model, cfg, kernels = small_kernel_setup(root)
    return root, prep, model, cfg, kernels


def _outputs(root):
    from lpntk.stages.relations_stage import RELATIONS_OUTPUTS

    ext = {
        "shares_md": "md",
        "distribution_md": "md",
        "per_class_md": "md",
        "cross": "npz",
        "histogram": "png",
        "histogram_pdf": "pdf",
        "summary": "json",
    }
    return {k: str(root / f"{k}.{ext.get(k, 'csv')}") for k in RELATIONS_OUTPUTS}


def test_relations_stage_matches_brute_force_full_gram(small_setup, tmp_path):
    """With every sample in the cross-class panel the stage's shares are exact: compare with the full Gram."""
    import pandas as pd

    from lpntk.data import normalize, to_unit
    from lpntk.io import load_json, load_npz
    from lpntk.kernel import lpntk_gram
    from lpntk.stages.relations_stage import relations_stage

    root, prep, model, cfg, kernels = small_setup
    cfg = {
        **cfg,
        "relations": {
            "tau": 0.1,
            "official_threshold": 0.1,
            "cross_samples_per_class": 1000,
            "seed": 0,
            "quantiles": [0.0, 0.5, 1.0],
            "bins": 20,
        },
    }
    out = _outputs(tmp_path)
    summary = relations_stage(
        dataset="digits",
        cfg=cfg,
        kernels=kernels,
        data=root / "data",
        reference=root / "model.pt",
        outputs=out,
        threads=1,
        mlflow_cfg=OFF,
    )

    x = normalize(to_unit(prep.train.x), prep.info.mean, prep.info.std)
    full = lpntk_gram(model.double(), x.double(), prep.train.y, 10).detach().numpy()
    model.float()
    y = prep.train.y.numpy()
    d = np.diag(full)
    cos = full / np.sqrt(np.outer(d, d))
    iu = np.triu(np.ones_like(full, dtype=bool), 1)
    same = y[:, None] == y[None, :]
    m = summary["metrics"]
    for scope, mask, sfx in (("within", iu & same, ""), ("cross", iu & ~same, "_cross"), ("all", iu, "_all")):
        c = cos[mask]
        assert m[f"share_interchangeable{sfx}"] == pytest.approx((c > 0.1).mean(), abs=1e-12), scope
        assert m[f"share_contradictory{sfx}"] == pytest.approx((c < -0.1).mean(), abs=1e-12), scope
        assert m[f"share_unrelated{sfx}"] == pytest.approx((np.abs(c) <= 0.1).mean(), abs=1e-12), scope
        assert m[f"share_contradictory_tau0{sfx}"] == pytest.approx((c < 0).mean(), abs=1e-12), scope
        assert m[f"share_official_negative_{scope}"] == pytest.approx((10 * full[mask] <= -0.1).mean(), abs=1e-12)
    # redundant: within class, against the brute-force Gram; cross-class: any other-class sample beats the self-pair
    red = np.array([any(full[i, j] > full[i, i] for j in np.flatnonzero(y == y[i]) if j != i) for i in range(len(y))])
    assert m["share_redundant"] == pytest.approx(red.mean())
    off = np.where(same, -np.inf, full)
    assert m["share_redundant_cross"] == pytest.approx((off.max(1) > d).mean())
    assert m["cross_check_rel_err"] < 1e-6  # the kernel files store the Gram in float32
    assert summary["pairs"].startswith("distinct pairs i < j")

    shares = pd.read_csv(out["shares"])
    assert set(shares["scope"]) >= {"within", "cross", "all"}
    row = shares[(shares["scope"] == "within") & (shares["rule"] == "cos, tau=0.1")].iloc[0]
    assert row["pairs"] == sum(k * (k - 1) // 2 for k in np.bincount(y))
    per_class = pd.read_csv(out["per_class"])
    assert list(per_class["class"].astype(str)) == [str(c) for c in range(10)] + ["all"]
    cls3 = np.flatnonzero(y == 3)
    assert per_class.loc[3, "share_redundant"] == pytest.approx(red[cls3].mean())
    dist = pd.read_csv(out["distribution"])
    within_cos = dist[(dist["scope"] == "within") & (dist["quantity"] == "cos")].iloc[0]
    assert within_cos["q0.5"] == pytest.approx(np.median(cos[iu & same]), rel=1e-5)
    panel = load_npz(out["cross"])
    assert panel["gram"].shape == (len(y), len(y)) and set(panel["label"]) == set(range(10))
    assert load_json(out["summary"])["metrics"]["share_redundant"] == pytest.approx(red.mean())
    assert (tmp_path / "histogram.png").stat().st_size > 1000 and Path(out["shares_md"]).read_text().count("|") > 20


def test_relations_stage_is_deterministic_and_samples_the_cross_panel(small_setup, tmp_path):
    from lpntk.io import load_npz
    from lpntk.stages.relations_stage import relations_stage

    root, prep, model, cfg, kernels = small_setup
    cfg = {
        **cfg,
        "relations": {
            "tau": 0.2,
            "official_threshold": 0.1,
            "cross_samples_per_class": 5,
            "seed": 3,
            "quantiles": [0.5],
            "bins": 10,
        },
    }
    a, b = tmp_path / "a", tmp_path / "b"
    sa = relations_stage(
        dataset="digits",
        cfg=cfg,
        kernels=kernels,
        data=root / "data",
        reference=root / "model.pt",
        outputs=_outputs(a),
        threads=1,
        mlflow_cfg=OFF,
    )
    relations_stage(
        dataset="digits",
        cfg=cfg,
        kernels=kernels,
        data=root / "data",
        reference=root / "model.pt",
        outputs=_outputs(b),
        threads=1,
        mlflow_cfg=OFF,
    )
    for name in (
        "shares.csv",
        "shares_md.md",
        "per_class.csv",
        "distribution.csv",
        "cross.npz",
        "histogram.png",
        "histogram_pdf.pdf",
        "summary.json",
    ):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    panel = load_npz(a / "cross.npz")
    assert len(panel["index"]) == 50 and np.bincount(panel["label"]).tolist() == [5] * 10
    assert sa["metrics"]["pairs_cross_sampled"] == 45 * 25
    # every panel sample keeps its original index
    np.testing.assert_array_equal(panel["index"], prep.train.index[panel["position"]].numpy())


def test_relations_stage_rejects_stale_kernels(small_setup, tmp_path):
    from lpntk.models import build_model
    from lpntk.stages.relations_stage import relations_stage

    root, prep, model, cfg, kernels = small_setup
    torch.manual_seed(99)
    other = build_model("small_cnn", (1, 8, 8), 10, width=0.5, hidden=8)
    torch.save(other.state_dict(), tmp_path / "other.pt")
    cfg = {
        **cfg,
        "relations": {
            "tau": 0.1,
            "official_threshold": 0.1,
            "cross_samples_per_class": 3,
            "seed": 0,
            "quantiles": [0.5],
            "bins": 10,
        },
    }
    with pytest.raises(ValueError, match="stale"):
        relations_stage(
            dataset="digits",
            cfg=cfg,
            kernels=kernels,
            data=root / "data",
            reference=tmp_path / "other.pt",
            outputs=_outputs(tmp_path),
            threads=1,
            mlflow_cfg=OFF,
        )
    assert not (tmp_path / "shares.csv").exists()


@pytest.mark.slow
def test_relations_in_workflow(workflow_run):
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from lpntk.grams import load_class_grams

    workdir, _ = workflow_run
    res = workdir / "results" / "tiny" / "relations"
    for f in (
        "shares.csv",
        "shares.md",
        "distribution.csv",
        "per_class.csv",
        "cross_panel.npz",
        "histogram.png",
        "histogram.pdf",
        "summary.json",
    ):
        assert (res / f).is_file(), f
    shares = pd.read_csv(res / "shares.csv")
    within = shares[(shares["scope"] == "within") & (shares["rule"] == "cos, tau=0.1")].iloc[0]
    within0 = shares[(shares["scope"] == "within") & (shares["rule"] == "cos, tau=0")].iloc[0]
    cross = shares[(shares["scope"] == "cross") & (shares["rule"] == "cos, tau=0.1")].iloc[0]
    assert within["pairs"] == 10 * 24 * 23 // 2
    # recount from the saved per-class Grams: every pair i < j, cos = kappa / (|phi_i| |phi_j|)
    counts = {0.1: np.zeros(3), 0.0: np.zeros(3)}
    redundant = n_samples = 0
    kappas, cosines = [], []
    ref = json.loads((workdir / "results" / "tiny" / "reference" / "reference.json").read_text())["seed"]
    kernels = sorted((workdir / "results" / "tiny" / "kernel" / f"seed{ref}").glob("*.npz"))  # 5 classes a file
    assert [p.name for p in kernels] == ["classes0-1-2-3-4.npz", "classes5-6-7-8-9.npz"]
    for k in load_class_grams(kernels, 10):
        g = k.gram.astype(np.float64)
        norm = np.sqrt(k.sq_norm.astype(np.float64))
        i, j = np.triu_indices(len(g), 1)
        cos = g[i, j] / (norm[i] * norm[j])
        for tau in counts:
            counts[tau] += [(cos > tau).sum(), (np.abs(cos) <= tau).sum(), (cos < -tau).sum()]
        redundant += sum(any(g[a, b] > g[a, a] for b in range(len(g)) if b != a) for a in range(len(g)))
        n_samples += len(g)
        kappas.append(g[i, j])
        cosines.append(cos)
    for row, tau in ((within, 0.1), (within0, 0.0)):
        assert counts[tau].sum() == within["pairs"]
        np.testing.assert_allclose(
            row[["interchangeable", "unrelated", "contradictory"]].to_numpy(float), counts[tau] / within["pairs"]
        )
    # the within-class distribution (the shares can all fall in one type for this small model; these cannot)
    dist = pd.read_csv(res / "distribution.csv").set_index(["scope", "quantity"])
    kappas, cosines = np.concatenate(kappas), np.concatenate(cosines)
    for quantity, values in (("kappa", kappas), ("K*kappa (official scale)", 10 * kappas), ("cos", cosines)):
        row = dist.loc[("within", quantity)]
        assert row["pairs"] == len(values)
        np.testing.assert_allclose(row[["mean", "std"]].to_numpy(float), [values.mean(), values.std()], rtol=1e-5)
        for q in (0.0, 0.05, 0.5, 0.95, 1.0):
            assert row[f"q{q:g}"] == pytest.approx(np.quantile(values, q), rel=1e-5, abs=1e-6), (quantity, q)
    assert kappas.std() > 0 and cosines.min() < cosines.max()
    # across classes: the saved panel (8 per class, equal class sizes, so the stratified estimate is the pooled share)
    panel = np.load(res / "cross_panel.npz")
    norm = np.sqrt(panel["sq_norm"].astype(np.float64))
    i, j = np.triu_indices(len(panel["label"]), 1)
    other = panel["label"][i] != panel["label"][j]
    i, j = i[other], j[other]
    cos = panel["gram"].astype(np.float64)[i, j] / (norm[i] * norm[j])
    recount = np.array([(cos > 0.1).sum(), (np.abs(cos) <= 0.1).sum(), (cos < -0.1).sum()]) / len(cos)
    assert cross["pairs_evaluated"] == len(cos) == 45 * 8 * 8
    np.testing.assert_allclose(
        cross[["interchangeable", "unrelated", "contradictory"]].to_numpy(float), recount, atol=1.5 / len(cos)
    )
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lpntk-tiny")
    runs = client.search_runs([exp.experiment_id], "tags.`lpntk.rule` = 'relations'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    metrics = runs[0].data.metrics
    for scope, row in (("", within), ("_cross", cross)):
        kinds = [f"share_{k}{scope}" for k in ("interchangeable", "unrelated", "contradictory")]
        assert sum(metrics[k] for k in kinds) == pytest.approx(1.0, abs=1e-12), scope
        for k, v in zip(kinds, row[["interchangeable", "unrelated", "contradictory"]], strict=True):
            assert metrics[k] == pytest.approx(v, abs=1e-9), k
    for k in ("interchangeable", "unrelated", "contradictory"):
        assert metrics[f"share_{k}_tau0"] == pytest.approx(within0[k], abs=1e-9), k
    assert metrics["share_redundant"] == pytest.approx(redundant / n_samples, abs=1e-12)

"""Baseline scores (EL2N, GraNd, forgetting, random) on hand-made dynamics, and the scores stage."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from lpntk.io import save_json, save_npz
from lpntk.pruning import select_top
from lpntk.scores import (
    el2n_scores,
    forgetting_scores,
    grand_scores,
    random_scores,
    score_column,
    score_table,
)
from lpntk.train import presentation_forgetting

INDEX = np.array([107, 3, 55, 12])  # original indices, deliberately not 0..N-1 nor sorted
Y = np.array([0, 1, 0, 1])


def _dynamics(correct: list[list[int]], el2n: list[list[float]], grand: list[list[float]], score_epochs=(0, 2)):
    correct = np.asarray(correct, dtype=bool)
    f = presentation_forgetting(correct)
    return {
        "index": INDEX,
        "y": Y,
        "correct": correct,
        "forgetting_count": f["count"],
        "never_learned": f["never_learned"],
        "score_epochs": np.asarray(score_epochs),
        "el2n": np.asarray(el2n, dtype=np.float32),
        "grand": np.asarray(grand, dtype=np.float32),
    }


# correctness at the presentations of 4 epochs; sample 3 is never learned
RUN1 = _dynamics(
    [[1, 1, 1, 1], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 0, 0]],
    [[0.9, 0.1], [0.8, 0.5], [0.7, 0.2], [0.6, 1.2]],
    [[3.0, 1.0], [2.0, 4.0], [1.0, 2.0], [0.5, 6.0]],
)
RUN2 = _dynamics(
    [[1, 1, 1, 1], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 0, 0]],
    [[0.9, 0.3], [0.8, 0.7], [0.7, 0.2], [0.6, 1.0]],
    [[3.0, 3.0], [2.0, 2.0], [1.0, 0.0], [0.5, 4.0]],
)


def test_hand_made_scores():
    assert RUN1["forgetting_count"].tolist() == [0, 2, 1, 0] and RUN1["never_learned"].tolist() == [0, 0, 0, 1]
    t = score_table([RUN1, RUN2], el2n_epoch=2, grand_epoch=2, random_seed=0)
    assert np.allclose(t["el2n"], [0.2, 0.6, 0.2, 1.1])
    assert np.allclose(t["grand"], [2.0, 3.0, 1.0, 5.0])
    # forgetting: run 1 [0, 2, 1, E=4], run 2 [0, 1, 0, 4]
    assert np.allclose(t["forgetting"], [0.0, 1.5, 0.5, 4.0])
    assert np.allclose(t["forgetting_std"], [0.0, 0.5, 0.5, 0.0])
    assert t["never_learned"].tolist() == [0, 0, 0, 1]
    assert t["index"].tolist() == INDEX.tolist() and t["label"].tolist() == Y.tolist()
    # at initialisation instead
    t0 = score_table([RUN1, RUN2], el2n_epoch=0, grand_epoch=0, random_seed=0)
    assert np.allclose(t0["el2n"], [0.9, 0.8, 0.7, 0.6]) and np.allclose(t0["grand"], [3.0, 2.0, 1.0, 0.5])
    # the random column: seeded uniform scores in [0, 1), one per sample, another draw for another seed
    assert t["random"].shape == (4,) and ((t["random"] >= 0) & (t["random"] < 1)).all()
    assert np.array_equal(t["random"], t0["random"])
    assert not np.array_equal(
        t["random"], score_table([RUN1, RUN2], el2n_epoch=2, grand_epoch=2, random_seed=1)["random"]
    )
    with pytest.raises(ValueError, match="^no training runs to compute scores from$"):
        score_table([], el2n_epoch=2, grand_epoch=2, random_seed=0)


def test_never_learned_ranks_as_most_forgotten_and_baselines_keep_the_highest():
    t = score_table([RUN1], el2n_epoch=2, grand_epoch=2, random_seed=0)
    # sample 3 was never learned: kept first although it has no forgetting event; then sample 1 (2 events)
    assert select_top(t["index"], t["label"], t["forgetting"], 0.5).tolist() == sorted([INDEX[3], INDEX[1]])
    assert select_top(t["index"], t["label"], t["el2n"], 0.25).tolist() == [INDEX[3]]
    # a never-learned sample outranks the most-forgetful learned one (max floor(E/2) events)
    assert forgetting_scores(np.array([[2, 0]]), np.array([[False, True]]), 4).tolist() == [2.0, 4.0]


def test_means_over_seeds():
    assert np.allclose(el2n_scores([[1.0, 2.0], [3.0, 4.0]]), [2.0, 3.0])
    assert np.allclose(grand_scores([[1.0], [2.0], [6.0]]), [3.0])
    r = random_scores(5, 7)
    assert np.array_equal(r, random_scores(5, 7)) and not np.array_equal(r, random_scores(5, 8))
    assert ((r >= 0) & (r < 1)).all()


def test_missing_score_epoch_names_the_key():
    with pytest.raises(ValueError, match=r"train\.score_epochs = \[0, 2\]"):
        score_column(RUN1, "el2n", 5)
    other = {**RUN2, "index": INDEX[::-1].copy()}
    with pytest.raises(ValueError, match="different training split"):
        score_table([RUN1, other], el2n_epoch=2, grand_epoch=2, random_seed=0)


def test_score_table_spreads_dtypes_and_messages_name_the_runs():
    t = score_table([RUN1, RUN2], el2n_epoch=2, grand_epoch=2, random_seed=0)
    # standard deviations over the two seeds (ddof 0 = half the difference): EL2N (0.1, 0.5, 0.2, 1.2) vs
    # (0.3, 0.7, 0.2, 1.0); GraNd (1, 4, 2, 6) vs (3, 2, 0, 4)
    assert t["el2n_std"].shape == t["grand_std"].shape == (4,)
    np.testing.assert_allclose(t["el2n_std"], [0.1, 0.1, 0.0, 0.1], atol=1e-7)
    np.testing.assert_allclose(t["grand_std"], [1.0, 1.0, 1.0, 1.0])
    # original indices and labels come out as int64 whatever they were stored as
    narrow = [{**r, "index": r["index"].astype(np.int32), "y": r["y"].astype(np.int32)} for r in (RUN1, RUN2)]
    t32 = score_table(narrow, el2n_epoch=2, grand_epoch=2, random_seed=0)
    assert t32["index"].dtype == np.int64 and t32["label"].dtype == np.int64
    # the means over seeds are taken in float64 (float32 records, e.g. 0.1f + 0.3f, are not averaged in float32)
    rec = np.array([[0.1], [0.3], [0.7]], dtype=np.float32)
    for fn in (el2n_scores, grand_scores):
        assert fn(rec).dtype == np.float64
        np.testing.assert_allclose(fn(rec), rec.astype(np.float64).mean(axis=0), rtol=1e-15)
    # messages name the run and the key
    with pytest.raises(ValueError, match="no training runs"):
        score_table([], el2n_epoch=2, grand_epoch=2, random_seed=0)
    with pytest.raises(ValueError, match="not recorded in dynamics"):
        score_column(RUN1, "el2n", 5)
    for key, epochs in (("el2n", (5, 2)), ("grand", (2, 5))):
        with pytest.raises(ValueError, match=f"{key} at epoch 5 was not recorded in seed A"):
            score_table(
                [RUN1, RUN2], el2n_epoch=epochs[0], grand_epoch=epochs[1], random_seed=0, sources=["seed A", "B"]
            )
    other = {**RUN2, "y": Y[::-1].copy()}
    with pytest.raises(ValueError, match=r"seed B covers a different training split \(index/y differ from seed A\)"):
        score_table([RUN1, other], el2n_epoch=2, grand_epoch=2, random_seed=0, sources=["seed A", "seed B"])
    with pytest.raises(ValueError, match=r"counts \(1, 2\) and never_learned \(1, 3\) differ in shape"):
        forgetting_scores(np.zeros((1, 2)), np.zeros((1, 3), dtype=bool), 4)


def _cfg(**scores):
    return {
        "dataset": "toy",
        "device": "cpu",
        "train": {"seeds": [1, 2], "epochs": 4, "score_epochs": [0, 2]},
        "scores": {"enabled": True, "el2n_epoch": None, "grand_epoch": None, "seeds": None, "random_seed": 0, **scores},
    }


def test_scores_stage_writes_table_keyed_by_original_index(tmp_path):
    from lpntk.stages.scores_stage import score_settings, scores_stage

    summaries, dynamics = [], []
    for seed, run in ((2, RUN2), (1, RUN1)):  # the files say which seed they hold, whatever their names and order
        d = tmp_path / "train" / f"run{3 - seed}"
        save_npz(d / "dyn.npz", **run)
        save_json(d / "summary.json", {"seed": seed})
        summaries.append(str(d / "summary.json"))
        dynamics.append(str(d / "dyn.npz"))
    out = {"table": str(tmp_path / "scores" / "scores.csv"), "info": str(tmp_path / "scores" / "scores.json")}
    scores_stage(
        dataset="toy", cfg=_cfg(), summaries=summaries, dynamics=dynamics, outputs=out, mlflow_cfg={"enabled": False}
    )
    table = pd.read_csv(out["table"])
    assert table["index"].tolist() == INDEX.tolist() and table["position"].tolist() == [0, 1, 2, 3]
    assert np.allclose(table["el2n"], [0.2, 0.6, 0.2, 1.1]) and np.allclose(table["forgetting"], [0, 1.5, 0.5, 4])
    first = open(out["table"], "rb").read()
    scores_stage(
        dataset="toy", cfg=_cfg(), summaries=summaries, dynamics=dynamics, outputs=out, mlflow_cfg={"enabled": False}
    )
    assert open(out["table"], "rb").read() == first  # byte-identical rerun
    only1 = copy.deepcopy(_cfg(seeds=[1], el2n_epoch=0))
    assert score_settings(only1) == {"el2n_epoch": 0, "grand_epoch": 2, "seeds": [1], "random_seed": 0}
    scores_stage(
        dataset="toy", cfg=only1, summaries=summaries, dynamics=dynamics, outputs=out, mlflow_cfg={"enabled": False}
    )
    assert np.allclose(pd.read_csv(out["table"])["el2n"], [0.9, 0.8, 0.7, 0.6])

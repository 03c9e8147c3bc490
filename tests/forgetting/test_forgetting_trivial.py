"""The forgetting scores' floor: the Matthews correlation over the window's (step, candidate) pairs against sklearn,
the trivial predictors (no event, every candidate, random at the base rate) scoring what they must by construction
(exact enumeration and a seeded simulation for the random one), and the table printing their rows."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, matthews_corrcoef, precision_score, recall_score

from lpntk.forgetting import (
    TRIVIAL_PREDICTORS,
    aggregate_scores,
    confusion_counts,
    format_table,
    matthews_correlation,
    stepwise_scores,
    summarise_steps,
    trivial_scores,
)


def _window(seed: int, steps: int = 15, n_obs: int = 24, quiet: tuple[int, ...] = (2, 7)):
    """Per step: the candidates (correct before), true events and one predictor's predictions among them, and the
    step's row as ``_judge`` writes it (counts over all of B_{t-1}: the rows' tn includes the non-candidates)."""
    rng = np.random.default_rng(seed)
    steps_out = []
    for t in range(steps):
        cand = rng.random(n_obs) < 0.7
        true = cand & (rng.random(n_obs) < (0.0 if t in quiet else 0.15))
        pred = cand & (rng.random(n_obs) < 0.5 * true + 0.08)  # informative, with false alarms
        row = {
            "step": t + 2,
            "n_obs": n_obs,
            "n_correct": int(cand.sum()),
            "n_true": int(true.sum()),
            "sq_true": 1.0,
            "sq_err_entk": 0.5,
            "el2n_err_entk": 0.1,
            "disagree_entk": 0,
            **{f"{k}_entk": v for k, v in confusion_counts(true, pred).items()},
        }
        steps_out.append((cand, true, pred, row))
    return steps_out


# ------------------------------------------------------------------------------------------- MCC


def test_mcc_by_hand_and_its_empty_marginal_convention():
    # TP 3, FP 2, FN 1, TN 4: (12 - 2) / sqrt(5 * 4 * 6 * 5)
    assert matthews_correlation(3, 2, 1, 4) == pytest.approx(10 / math.sqrt(600), rel=1e-12)
    assert matthews_correlation([1, 2], [2, 0], [0, 1], [3, 1]) == pytest.approx(10 / math.sqrt(600), rel=1e-12)
    # perfect, inverted, and every empty marginal: 0 (as sklearn)
    assert matthews_correlation(2, 0, 0, 5) == 1.0 and matthews_correlation(0, 2, 5, 0) == -1.0
    for tp, fp, fn, tn in ((0, 0, 3, 5), (3, 5, 0, 0), (0, 3, 0, 5), (3, 0, 5, 0), (0, 0, 0, 0)):
        t = np.r_[np.ones(tp + fn, bool), np.zeros(fp + tn, bool)]
        p = np.r_[np.ones(tp, bool), np.zeros(fn, bool), np.ones(fp, bool), np.zeros(tn, bool)]
        ref = matthews_corrcoef(t, p) if t.size else 0.0
        assert matthews_correlation(tp, fp, fn, tn) == 0.0 == ref


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_summary_mcc_matches_sklearn_on_the_candidates(seed):
    window = _window(seed)
    summary = summarise_steps([w[3] for w in window], ["entk"])
    t_all = np.concatenate([true[cand] for cand, true, _, _ in window])
    p_all = np.concatenate([pred[cand] for cand, _, pred, _ in window])
    assert summary["n_candidates"] == t_all.size == summary["n_correct"]
    assert summary["base_rate"] == pytest.approx(t_all.mean(), rel=1e-12)
    assert summary["mcc_entk"] == pytest.approx(matthews_corrcoef(t_all, p_all), rel=1e-12, abs=1e-15)
    assert summary["f1_entk"] == pytest.approx(f1_score(t_all, p_all), rel=1e-12)
    # counting the samples wrong before the step as true negatives would give another number: the test can tell
    t_obs = np.concatenate([true for _, true, _, _ in window])
    p_obs = np.concatenate([pred for _, _, pred, _ in window])
    assert abs(matthews_corrcoef(t_obs, p_obs) - summary["mcc_entk"]) > 1e-3


# ------------------------------------------------------------------------------------------- trivial predictors


def test_trivial_predictors_score_what_they_must_by_construction():
    window = _window(3)
    summary = summarise_steps([w[3] for w in window], ["entk"])
    c = np.array([w[3]["n_correct"] for w in window])
    e = np.array([w[3]["n_true"] for w in window])
    b = e.sum() / c.sum()
    assert 0 < b < 1 and summary["base_rate"] == pytest.approx(b)
    # none: nothing predicted -- pooled precision undefined, recall, F1 and MCC 0
    assert math.isnan(summary["precision_none"])
    assert summary["recall_none"] == 0 and summary["f1_none"] == 0 and summary["mcc_none"] == 0
    assert summary["n_pred_none"] == 0 and summary["fn_none"] == e.sum()
    # all: every candidate -- recall 1, precision b, F1 2b / (1 + b), MCC 0
    assert summary["recall_all"] == 1 and summary["precision_all"] == pytest.approx(b, rel=1e-12)
    assert summary["f1_all"] == pytest.approx(2 * b / (1 + b), rel=1e-12) and summary["mcc_all"] == 0
    assert summary["n_pred_all"] == c.sum() and summary["tp_all"] == e.sum()
    # random at the base rate: the scores of its expected counts
    for k in ("precision", "recall", "f1"):
        assert summary[f"{k}_random"] == pytest.approx(b, rel=1e-12)
    assert summary["mcc_random"] == 0 and summary["n_pred_random"] == pytest.approx(e.sum(), rel=1e-12)
    # stepwise, against sklearn per step with the official conventions (zero_division = 1)
    for name, predict in (("none", np.zeros_like), ("all", np.ones_like)):
        p_t = [precision_score(t[m], predict(t[m]), zero_division=1.0) for m, t, _, _ in window]
        r_t = [recall_score(t[m], predict(t[m]), zero_division=1.0) for m, t, _, _ in window]
        p, r = np.mean(p_t), np.mean(r_t)
        assert summary[f"stepwise_precision_{name}"] == pytest.approx(p, rel=1e-12)
        assert summary[f"stepwise_recall_{name}"] == pytest.approx(r, rel=1e-12)
        assert summary[f"stepwise_f1_{name}"] == pytest.approx(2 * p * r / (p + r), rel=1e-12)
    # no event: P = 1, R = the share of steps without events, F1 = 2R / (1 + R) -- the stepwise floor
    quiet = np.mean(e == 0)
    assert summary["stepwise_f1_none"] == pytest.approx(2 * quiet / (1 + quiet), rel=1e-12)
    # the same in both decision spaces: one set of keys, no _prob variant
    keys = ("precision", "recall", "f1", "mcc", "stepwise_precision", "stepwise_recall", "stepwise_f1", "n_pred")
    for name in TRIVIAL_PREDICTORS:
        assert all(f"{k}_{name}" in summary for k in keys) and f"f1_{name}_prob" not in summary
    assert all(type(summary[f"{k}_{n}"]) is int for k in ("tp", "fp", "fn", "n_pred") for n in ("none", "all"))


def test_random_predictor_stepwise_expectation_by_enumeration():
    """E[P_t], E[R_t] of Bernoulli(b) predictions over the candidates, by enumerating every prediction vector."""
    candidates, events = [3, 4, 0, 2], [1, 0, 0, 2]
    b = sum(events) / sum(candidates)
    p_t, r_t = [], []
    for c, e in zip(candidates, events, strict=True):
        truth = np.arange(c) < e
        ep = er = 0.0
        for bits in itertools.product([False, True], repeat=c):
            pred = np.array(bits, dtype=bool)
            w = b ** pred.sum() * (1 - b) ** (c - pred.sum())
            ep += w * precision_score(truth, pred, zero_division=1.0) if c else w
            er += w * recall_score(truth, pred, zero_division=1.0) if c else w
        p_t.append(ep)
        r_t.append(er)
    p, r = np.mean(p_t), np.mean(r_t)
    got = trivial_scores(candidates, events)["random"]
    assert got["stepwise_precision"] == pytest.approx(p, rel=1e-12)
    assert got["stepwise_recall"] == pytest.approx(r, rel=1e-12)
    assert got["stepwise_f1"] == pytest.approx(2 * p * r / (p + r), rel=1e-12)


def test_random_predictor_expectation_against_a_seeded_simulation():
    rng = np.random.default_rng(7)
    candidates = rng.integers(60, 120, size=30)
    events = np.where(rng.random(30) < 0.4, 0, rng.binomial(candidates, 0.05))
    got = trivial_scores(candidates, events)["random"]
    b = events.sum() / candidates.sum()
    draws = 4000
    tp, fp, fn, sw_p, sw_r, mcc = (np.zeros(draws) for _ in range(6))
    for i in range(draws):
        counts = []
        for c, e in zip(candidates, events, strict=True):
            pred = rng.random(c) < b
            counts.append(confusion_counts(np.arange(c) < e, pred))
        ctp, cfp, cfn, ctn = (np.array([x[k] for x in counts]) for k in ("tp", "fp", "fn", "tn"))
        tp[i], fp[i], fn[i] = ctp.sum(), cfp.sum(), cfn.sum()
        sw = stepwise_scores(ctp, cfp, cfn)
        sw_p[i], sw_r[i] = sw["precision"], sw["recall"]
        mcc[i] = matthews_correlation(ctp, cfp, cfn, ctn)
    se = lambda v: 4 * v.std() / math.sqrt(draws)  # noqa: E731
    assert abs(tp.mean() - got["tp"]) < se(tp) and abs(fp.mean() - got["fp"]) < se(fp)
    assert abs(fn.mean() - got["fn"]) < se(fn)
    assert abs(sw_p.mean() - got["stepwise_precision"]) < se(sw_p)
    assert abs(sw_r.mean() - got["stepwise_recall"]) < se(sw_r)
    assert abs(mcc.mean()) < se(mcc) and got["mcc"] == 0
    # the pooled scores are those of the expected counts (ratio of expectations): b
    assert got["precision"] == got["recall"] == got["f1"] == pytest.approx(b, rel=1e-12)
    assert abs(np.mean(tp / (tp + fp)) - b) < 0.01 * b + se(tp / (tp + fp))


def test_trivial_scores_edge_cases():
    quiet = trivial_scores([5, 3], [0, 0])  # no event in the window
    assert all(math.isnan(quiet["random"][k]) for k in ("precision", "recall", "f1"))
    assert quiet["random"]["stepwise_f1"] == 1.0 and quiet["none"]["stepwise_f1"] == 1.0
    assert math.isnan(quiet["none"]["f1"]) and quiet["none"]["mcc"] == quiet["all"]["mcc"] == 0.0
    assert quiet["all"]["precision"] == 0.0 and math.isnan(quiet["all"]["recall"])
    empty = trivial_scores([], [])
    assert all(math.isnan(empty[n]["stepwise_f1"]) for n in TRIVIAL_PREDICTORS)
    with pytest.raises(ValueError, match="events <= candidates"):
        trivial_scores([2], [3])


# ------------------------------------------------------------------------------------------- the table


def test_table_prints_the_trivial_rows_mcc_and_the_events_per_seed():
    runs = []
    for seed, events in ((0, 12), (1, 30), (2, 21)):
        window = _window(seed, quiet=(1, 4, 9))
        s = summarise_steps([w[3] for w in window], ["entk"])
        s["n_true_events"] = events  # the events column: min / mean / max over seeds
        runs.append(s)
    paper = {"entk": {"precision": (95.56, 8.14), "recall": (86.67, 13.67), "f1": (89.96, 7.10)}}
    table = aggregate_scores(runs, ["entk"], paper)
    assert list(table["predictor"]) == ["entk", "entk", "none", "none", "all", "all", "random", "random"]
    assert set(table.loc[table.predictor.isin(TRIVIAL_PREDICTORS), "space"]) == {"both"}
    pooled = table[table.scoring == "pooled"].set_index("predictor")
    assert pooled.loc["entk", "mcc_mean"] == pytest.approx(100 * np.mean([r["mcc_entk"] for r in runs]))
    assert pooled.loc["none", "mcc_mean"] == pooled.loc["all", "mcc_mean"] == pooled.loc["random", "mcc_mean"] == 0
    assert pooled.loc["none", "f1_mean"] == 0 and math.isnan(pooled.loc["none", "precision_mean"])
    assert pooled.loc["none", "n_seeds"] == 3  # the undefined precision does not make it 0 seeds
    stepwise = table[table.scoring == "stepwise"].set_index("predictor")
    assert stepwise.loc["none", "f1_mean"] == pytest.approx(100 * np.mean([r["stepwise_f1_none"] for r in runs]))
    assert stepwise["mcc_mean"].isna().all()  # the per-step averaging has no MCC
    assert stepwise.loc["entk", "paper_f1"] == 89.96 and stepwise.loc[["none", "all"], "paper_f1"].isna().all()
    assert (table["true_events_min"] == 12).all() and (table["true_events_max"] == 30).all()
    md = format_table(table).to_markdown(index=False)
    for text in ("MCC × 100", "| none ", "| all ", "| random ", "12 / 21.0 / 30", "89.96 ± 7.10", "base rate %"):
        assert text in md, text
    # summaries written before the trivial predictors existed: no trivial rows, the table still forms
    old = [{k: v for k, v in r.items() if not k.endswith(TRIVIAL_PREDICTORS)} for r in runs]
    assert set(aggregate_scores(old, ["entk"])["predictor"]) == {"entk"}


def test_figure_draws_the_floor_and_says_why_a_slot_is_empty(tmp_path):
    from lpntk.figures.forgetting_figures import plot_forgetting_scores

    runs = []
    for seed in (0, 1):
        window = _window(seed)
        for row in (w[3] for w in window):  # entk_update judged under the official recipe only
            row.update({k.replace("entk", "entk_update"): v for k, v in list(row.items()) if k.endswith("_entk")})
        runs.append(summarise_steps([w[3] for w in window], ["entk", "entk_update"]))
    plain = aggregate_scores(runs, ["entk"])
    official = aggregate_scores(runs, ["entk", "entk_update"])
    plain.insert(0, "recipe", "plain")
    official.insert(0, "recipe", "official")
    fig = plot_forgetting_scores(pd.concat([plain, official], ignore_index=True), tmp_path / "f.png")
    texts = [[t.get_text() for t in ax.texts] for ax in fig.axes[:4]]
    # the plain panels say why eNTK's actual-update slot is empty; the official panels have its bars
    assert all(any("plain SGD" in t for t in ts) for ts in texts[:2])
    assert not any("plain SGD" in t for ts in texts[2:] for t in ts)
    # the trivial predictors' bars, their F1 written above (the stepwise floor of no event among them)
    none_sw = 100 * np.mean([r["stepwise_f1_none"] for r in runs])
    assert f"{none_sw:.1f}" in texts[1] and "0.0" in texts[0]
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[-3:] == ["no\nevent", "every\ncandidate", "random at\nbase rate"]
    assert "trivial predictor (either space)" in [t.get_text() for t in fig.legends[0].get_texts()]

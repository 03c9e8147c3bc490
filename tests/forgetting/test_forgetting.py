"""Forgetting-event prediction (use case 2): hand-checked first-order predictions, agreement of the matrix-free path
with explicit eNTK blocks, metrics against sklearn, the training-run bookkeeping, the stages and the workflow."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score, precision_score, recall_score
from torch import nn

from lpntk.data import Split, save_prepared
from lpntk.forgetting import (
    ForgettingSetup,
    aggregate_scores,
    confusion_counts,
    first_order_logit_change,
    forgetting_events,
    pooled_scores,
    predicted_forgetting,
    predicted_logit_changes,
    probability_change,
    run_forgetting,
    stepwise_scores,
    summarise_steps,
)
from lpntk.kernel import cross_entropy_gradients, entk_blocks, logit_loss_gradient, loss_gradient
from lpntk.models import build_model

OFF = {"enabled": False}


# ------------------------------------------------------------------------------------------- by hand


def _linear_two_class() -> nn.Module:
    """z = W x + b with W = 0, b = (0.1, 0): logits linear in w, so Delta z of an SGD step is exactly first order."""
    lin = nn.Linear(2, 2).double()
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.copy_(torch.tensor([0.1, 0.0], dtype=torch.float64))
    return lin


def test_linear_two_class_by_hand():
    model = _linear_two_class()
    x_u = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    y_u = torch.tensor([0, 1])
    x_o = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    y_o = torch.tensor([0])
    lr = 0.5
    # by hand: q = softmax(0.1, 0) for every input; dL/dz(u1) = q - e_0, dL/dz(u2) = q - e_1
    q0 = 1.0 / (1.0 + math.exp(-0.1))
    e1 = np.array([q0 - 1.0, 1.0 - q0])
    e2 = np.array([q0, -q0])
    # eNTK block of a linear layer: K(x, x') = (x . x' + 1) I; theta(o, u1) = 2, theta(o, u2) = 3
    dz_entk = -lr * (2.0 * e1 + 3.0 * e2) / 2.0
    # lpNTK: kappa = (1/2) theta s(y_o) . s(y_u) = +theta for the same label, -theta for the other (K = 2)
    dz_lpntk = -lr * (2.0 * e1 - 3.0 * e2) / 2.0
    dz = predicted_logit_changes(model, x_o, y_o, x_u, y_u, lr)
    np.testing.assert_allclose(dz["entk"].numpy()[0], dz_entk, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dz["lpntk"].numpy()[0], dz_lpntk, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dz["pntk"].numpy()[0], dz_entk, rtol=1e-12, atol=1e-15)  # K = theta I: pNTK exact
    np.testing.assert_allclose(dz["lpntk_raw"].numpy()[0], 2 * dz_lpntk, rtol=1e-12, atol=1e-15)  # c = 1: K times
    np.testing.assert_allclose(dz["pntk_raw"].numpy()[0], 2 * dz_entk, rtol=1e-12, atol=1e-15)

    z_before = model(x_o).detach()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    nn.functional.cross_entropy(model(x_u), y_u).backward()
    opt.step()
    z_after = model(x_o).detach()
    np.testing.assert_allclose((z_after - z_before).numpy()[0], dz_entk, rtol=1e-12, atol=1e-15)  # exact
    # z_o goes from (0.1, 0) to (0.1, 0) + dz_entk = (0.1 - 0.1225.., 0.1225..): forgotten, and predicted by
    # eNTK and pNTK; lpNTK predicts the opposite change and misses it
    assert dz_entk[1] - dz_entk[0] > 0.1
    assert forgetting_events(z_before, z_after, y_o).tolist() == [True]
    assert predicted_forgetting(z_before, dz["entk"], y_o).tolist() == [True]
    assert predicted_forgetting(z_before, dz["pntk"], y_o).tolist() == [True]
    assert predicted_forgetting(z_before, dz["lpntk"], y_o).tolist() == [False]


def test_forgetting_rules_by_hand():
    y = torch.tensor([0, 0, 1, 1])
    z_before = torch.tensor([[2.0, 1.0], [2.0, 1.0], [2.0, 1.0], [0.0, 1.0]])
    z_after = torch.tensor([[0.0, 1.0], [3.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    # sample 0: correct -> wrong (event); 1: stays correct; 2: wrong -> right (no event); 3: correct -> wrong (event)
    assert forgetting_events(z_before, z_after, y).tolist() == [True, False, False, True]
    dz = z_after - z_before
    assert predicted_forgetting(z_before, dz, y).tolist() == [True, False, False, True]
    c = confusion_counts(torch.tensor([True, False, False, True]), torch.tensor([True, True, False, False]))
    assert c == {"tp": 1, "fp": 1, "tn": 1, "fn": 1}


def test_probability_change_is_softmax_jacobian_and_first_order_agrees():
    torch.manual_seed(0)
    z = torch.randn(50, 5, dtype=torch.float64)
    dz = torch.randn(50, 5, dtype=torch.float64)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: torch.softmax(v, 0), z[i])
        torch.testing.assert_close(probability_change(z[i : i + 1], dz[i : i + 1])[0], jac @ dz[i])
    y = z.argmax(1)  # all correct before
    small = 1e-6 * dz
    # the logit and probability forms agree to first order; with dz small they agree unless a tie is within O(dz^2)
    logit = predicted_forgetting(z, small, y, "logit")
    prob = predicted_forgetting(z, small, y, "probability")
    assert torch.equal(logit, prob)
    with pytest.raises(ValueError, match="space"):
        predicted_forgetting(z, dz, y, "prob")


def test_el2n_approximation_error_and_edge_cases_by_hand():
    from lpntk.forgetting import el2n_approximation_error

    # | ||q^ - e_y|| / ||q - e_y|| - 1 |: sample 0 (y 0) 0.2 sqrt 2 / 0.4 sqrt 2 = 0.5 -> 0.5; sample 1 (y 1)
    # 0.9 sqrt 2 / 0.5 sqrt 2 = 1.8 -> 0.8; the mean 0.65
    y = torch.tensor([0, 1])
    q_true = torch.tensor([[0.6, 0.4], [0.5, 0.5]], dtype=torch.float64)
    q_pred = torch.tensor([[0.8, 0.2], [0.9, 0.1]], dtype=torch.float64)
    assert el2n_approximation_error(q_pred, q_true, y) == pytest.approx(0.65, rel=1e-12)
    # a prediction exactly on the label: the denominator is clamped at 1e-12
    e0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    off = torch.tensor([[1.0, 1e-13]], dtype=torch.float64)  # ||off - e_0|| = 1e-13: the ratio 0.1
    assert el2n_approximation_error(off, e0, y[:1]) == pytest.approx(0.9, rel=1e-9)
    assert el2n_approximation_error(e0, e0, y[:1]) == 1.0

    # two classes, z = (1, 0), label 0: the logit rule forgets when dz_1 - dz_0 > z_0 - z_1 = 1; the probability
    # rule when q_0 q_1 (dz_1 - dz_0) > (q_0 - q_1) / 2, i.e. dz_1 - dz_0 > (q_0 - q_1) / (2 q_0 q_1) = 1.1752..
    q0 = 1 / (1 + math.exp(-1.0))
    bound = (2 * q0 - 1) / (2 * q0 * (1 - q0))
    assert 1.17 < bound < 1.18
    z = torch.tensor([[1.0, 0.0]] * 3, dtype=torch.float64)
    dz = torch.tensor([[0.0, 0.9], [0.0, 1.1], [0.0, 1.2]], dtype=torch.float64)
    label = torch.tensor([0, 0, 0])
    assert predicted_forgetting(z, dz, label).tolist() == [False, True, True]
    assert predicted_forgetting(z, dz, label, space="logit").tolist() == [False, True, True]
    assert predicted_forgetting(z, dz, label, space="probability").tolist() == [False, False, True]
    # A dz for K = 2 by hand: (q_0 q_1 (dz_0 - dz_1), -q_0 q_1 (dz_0 - dz_1))
    dq = probability_change(z[1:2], dz[1:2])[0]
    assert dq.tolist() == pytest.approx([-q0 * (1 - q0) * 1.1, q0 * (1 - q0) * 1.1], rel=1e-12)
    # a sample already wrong is neither forgotten nor predicted to be
    assert predicted_forgetting(z, dz, torch.tensor([1, 1, 1]), space="probability").tolist() == [False] * 3
    assert forgetting_events(z, z + dz, torch.tensor([1, 1, 1])).tolist() == [False] * 3

    # counts from numpy arrays (boolean or 0/1 integers) and from tensors, every cell a different count
    t = np.array([1, 1, 1, 0, 0, 1, 0, 0, 0, 0])
    p = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    want = {"tp": 3, "fp": 2, "tn": 4, "fn": 1}
    assert confusion_counts(t, p) == want == confusion_counts(t.astype(bool), p.astype(bool))
    assert confusion_counts(torch.from_numpy(t).bool(), torch.from_numpy(p).bool()) == want
    assert all(type(v) is int for v in confusion_counts(t, p).values())
    # pooled over steps: P = 3 / 5, R = 3 / 7, F1 = 6 / 12; stepwise: P_t = (1, 1/3), R_t = (1/5, 1 (nothing
    # forgotten)): P = 2/3, R = 3/5, F1 = 2 P R / (P + R) = 12/19
    pooled = pooled_scores([1, 2], [0, 2], [4, 0])
    assert pooled == pytest.approx({"precision": 3 / 5, "recall": 3 / 7, "f1": 0.5}, rel=1e-12)
    assert stepwise_scores([1, 0], [0, 2], [4, 0]) == pytest.approx(
        {"precision": 1 / 2, "recall": 3 / 5, "f1": 2 * 0.5 * 0.6 / 1.1}, rel=1e-12
    )
    assert stepwise_scores([1, 1], [0, 2], [4, 0]) == pytest.approx(
        {"precision": 2 / 3, "recall": 3 / 5, "f1": 12 / 19}, rel=1e-12
    )
    # nothing right: P = R = 0, F1 0 (not NaN); one-sided empties
    assert stepwise_scores([0], [1], [1]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert pooled_scores([0], [0], [2]) == pytest.approx({"precision": math.nan, "recall": 0.0, "f1": 0.0}, nan_ok=True)
    assert pooled_scores([2], [0], [0]) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert pooled_scores([1], [0], [0]) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}  # denominators of 1
    no_steps = stepwise_scores([], [], [])
    assert list(no_steps) == ["precision", "recall", "f1"] and all(math.isnan(v) for v in no_steps.values())


# ------------------------------------------------------------------------------------------- vs explicit blocks


def _small_model(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("small_cnn", (1, 8, 8), 10, width=0.5, hidden=8).double().eval()


def test_matrix_free_path_matches_explicit_blocks():
    model = _small_model()
    g = torch.Generator().manual_seed(1)
    x_o, x_u = (
        torch.randn(7, 1, 8, 8, generator=g, dtype=torch.float64),
        torch.randn(9, 1, 8, 8, generator=g, dtype=torch.float64),
    )
    y_o, y_u = torch.randint(0, 10, (7,), generator=g), torch.randint(0, 10, (9,), generator=g)
    lr = 0.3
    dz = predicted_logit_changes(model, x_o, y_o, x_u, y_u, lr)
    blocks = entk_blocks(model, x_o, x_u)  # (7, 9, 10, 10)
    err = logit_loss_gradient(model, x_u, y_u)
    ref_entk = -lr * torch.einsum("ouab,ub->oa", blocks, err) / 9
    s_o, s_u = 2 * F.one_hot(y_o, 10).double() - 1, 2 * F.one_hot(y_u, 10).double() - 1  # s(y) by hand
    k_lp = torch.einsum("oa,ouab,ub->ou", s_o, blocks, s_u) / 10
    k_p = blocks.sum((2, 3)) / 10
    torch.testing.assert_close(dz["entk"], ref_entk, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(dz["lpntk"], -lr * k_lp @ err / 9, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(dz["pntk"], -lr * k_p @ err / 9, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(dz["lpntk_raw"], -lr * 10 * k_lp @ err / 9, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(dz["pntk_raw"], -lr * 10 * k_p @ err / 9, rtol=1e-10, atol=1e-13)
    # lpntk.first_order_logit_change is the one-predictor entry point to the same computation
    for kernel in ("entk", "lpntk", "pntk"):
        ref = first_order_logit_change(model, x_o, x_u, y_u, lr, kernel=kernel, y_obs=y_o)
        torch.testing.assert_close(dz[kernel], ref.detach(), rtol=1e-10, atol=1e-13)
    assert set(predicted_logit_changes(model, x_o, y_o, x_u, y_u, lr, predictors=["pntk"])) == {"pntk"}
    with pytest.raises(ValueError, match="predictors"):
        predicted_logit_changes(model, x_o, y_o, x_u, y_u, lr, predictors=["ntk"])


def test_cross_entropy_gradients_against_autograd():
    """grad_w L, softmax(z) - e_y and L from one pass, against plain autograd of the mean cross-entropy."""
    model = _small_model(3)
    model.train()  # eval mode is used regardless, and the mode is restored
    x = torch.randn(11, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 10, (11,))
    g, err, loss = cross_entropy_gradients(model, x, y)
    assert model.training
    model.eval()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    z = model(x)
    ref_loss = F.cross_entropy(z, y)
    ref = dict(zip(params, torch.autograd.grad(ref_loss, list(params.values())), strict=True))
    ref_err = torch.softmax(z.detach(), 1) - F.one_hot(y, 10).double()
    assert set(g) == set(ref)
    for k in g:
        torch.testing.assert_close(g[k], ref[k], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(err, ref_err, rtol=1e-12, atol=1e-15)
    assert loss == pytest.approx(float(ref_loss.detach()), rel=1e-12)
    # in blocks, summed, or without the backward pass: the same quantities
    gb, errb, lossb = cross_entropy_gradients(model, x, y, block_size=4)
    gs, _, losss = cross_entropy_gradients(model, x, y, reduction="sum", block_size=5)
    for k in g:
        torch.testing.assert_close(gb[k], ref[k], rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(gs[k], 11 * ref[k], rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(errb, ref_err, rtol=1e-12, atol=1e-15)
    assert lossb == pytest.approx(loss, rel=1e-12) and losss == pytest.approx(11 * loss, rel=1e-12)
    only = cross_entropy_gradients(model, x, y, with_params=False)
    assert only.params == {} and torch.equal(only.logits, err)
    # lpntk.kernel.loss_gradient and logit_loss_gradient are its two parts
    lg = loss_gradient(model, x, y)
    for k in g:
        torch.testing.assert_close(lg[k], ref[k], rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(logit_loss_gradient(model, x, y), ref_err, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------------------------------- metrics


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    steps = 12
    truth = [rng.random(20) < 0.2 for _ in range(steps)]
    pred = [rng.random(20) < 0.25 for _ in range(steps)]
    truth[3][:] = False  # a step without events: stepwise recall 1
    pred[5][:] = False  # a step without predictions: stepwise precision 1
    counts = [confusion_counts(t, p) for t, p in zip(truth, pred, strict=True)]
    tp, fp, fn = (np.array([c[k] for c in counts]) for k in ("tp", "fp", "fn"))
    t_all, p_all = np.concatenate(truth), np.concatenate(pred)
    pooled = pooled_scores(tp, fp, fn)
    assert pooled["precision"] == pytest.approx(precision_score(t_all, p_all))
    assert pooled["recall"] == pytest.approx(recall_score(t_all, p_all))
    assert pooled["f1"] == pytest.approx(f1_score(t_all, p_all))
    sw = stepwise_scores(tp, fp, fn)
    p_ref = np.mean([precision_score(t, p, zero_division=1.0) for t, p in zip(truth, pred, strict=True)])
    r_ref = np.mean([recall_score(t, p, zero_division=1.0) for t, p in zip(truth, pred, strict=True)])
    assert sw["precision"] == pytest.approx(p_ref)
    assert sw["recall"] == pytest.approx(r_ref)
    assert sw["f1"] == pytest.approx(2 * p_ref * r_ref / (p_ref + r_ref))
    # empty denominators: NaN pooled (sklearn's zero_division=nan), 1 per step
    none = np.zeros(20, dtype=bool)
    empty = pooled_scores([0], [0], [0])
    assert all(math.isnan(v) for v in empty.values())
    assert math.isnan(precision_score(none, none, zero_division=np.nan))
    only_fp = pooled_scores([0], [3], [0])
    assert only_fp["precision"] == 0.0 and math.isnan(only_fp["recall"]) and only_fp["f1"] == 0.0
    assert stepwise_scores([0], [0], [0]) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert all(math.isnan(v) for v in stepwise_scores([], [], []).values())


def test_aggregate_scores_mean_std_and_paper_columns():
    def run(p, r, f, n):
        out = {"n_true_events": n}
        for pred in ("entk", "lpntk"):
            out.update(
                {
                    f"precision_{pred}": p,
                    f"recall_{pred}": r,
                    f"f1_{pred}": f,
                    f"stepwise_precision_{pred}": 1.0,
                    f"stepwise_recall_{pred}": 1.0,
                    f"stepwise_f1_{pred}": 1.0,
                    f"n_pred_{pred}": 3,
                    f"relerr_dz_{pred}": 0.1,
                    f"el2n_err_{pred}": 0.01,
                }
            )
        return out

    runs = [run(0.5, 1.0, 0.6, 10), run(0.7, float("nan"), 0.8, 20)]
    paper = {"entk": {"precision": (95.56, 8.14), "recall": (86.67, 13.67), "f1": (89.96, 7.10)}}
    table = aggregate_scores(runs, ["entk", "lpntk"], paper)
    row = table[(table.predictor == "entk") & (table.scoring == "pooled")].iloc[0]
    assert row["precision_mean"] == pytest.approx(60.0)
    assert row["precision_std"] == pytest.approx(np.std([50.0, 70.0], ddof=1))
    assert row["recall_mean"] == pytest.approx(100.0) and math.isnan(row["recall_std"])  # one defined seed
    assert row["n_seeds"] == 1 and row["n_runs"] == 2 and row["true_events_mean"] == 15
    assert math.isnan(row["paper_f1"])  # the slides' numbers stand beside the stepwise row, their averaging
    stepwise = table[(table.predictor == "entk") & (table.scoring == "stepwise")].iloc[0]
    assert stepwise["paper_f1"] == 89.96 and stepwise["paper_f1_std"] == 7.10
    assert math.isnan(table[table.predictor == "lpntk"].iloc[0]["paper_f1"])
    assert len(table) == 4


def test_forgetting_figure_marks_the_slides_in_the_stepwise_panel(tmp_path):
    from lpntk.figures.forgetting_figures import plot_forgetting_scores

    run = {"n_true_events": 4}
    for pred in ("entk", "lpntk"):
        for prefix in ("", "stepwise_"):
            run.update({f"{prefix}precision_{pred}": 0.5, f"{prefix}recall_{pred}": 0.5, f"{prefix}f1_{pred}": 0.5})
        run.update({f"n_pred_{pred}": 4, f"relerr_dz_{pred}": 0.1, f"el2n_err_{pred}": 0.01})
    paper = {"entk": {"precision": (95.56, 8.14), "recall": (86.67, 13.67), "f1": (89.96, 7.10)}}
    fig = plot_forgetting_scores(aggregate_scores([run, run], ["entk", "lpntk"], paper), tmp_path / "f.png")
    pooled, stepwise = fig.axes[:2]
    assert "slides" not in pooled.get_legend_handles_labels()[1]
    assert "slides" in stepwise.get_legend_handles_labels()[1]
    assert "slides" in [t.get_text() for t in fig.legends[0].get_texts()] and (tmp_path / "f.png").stat().st_size


# ------------------------------------------------------------------------------------------- the run


def _linear_data(n=48, seed=0) -> Split:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 1, 2, generator=g, dtype=torch.float64)
    y = (x[:, 0, 0, 0] + 0.3 * torch.randn(n, generator=g, dtype=torch.float64) > 0.5).long()
    return Split(x.float(), y, torch.arange(100, 100 + n))


def test_run_on_linear_model_is_exact_and_uses_the_training_batches():
    train = _linear_data()
    setup = ForgettingSetup(batch_size=8, lr=2.0, start_step=2, steps=10, dtype="float64")
    torch.manual_seed(0)
    model = build_model("mlp", (1, 1, 2), 2, hidden=[])  # logits linear in w
    res = run_forgetting(model, train, setup, seed=5, mean=[0.5], std=[0.25])
    summary = summarise_steps(res.steps)
    assert summary["n_steps"] == 10 and list(setup.predictors) == ["entk", "lpntk", "pntk", "lpntk_raw", "pntk_raw"]
    assert summary["n_true_events"] > 0  # the large lr makes events on this toy problem
    # plain SGD on logits linear in w: Eq. 1 is exact, and so is pNTK (K = (x.x' + 1) I)
    assert summary["relerr_dz_entk"] < 1e-12 and summary["relerr_dz_pntk"] < 1e-12
    assert summary["fp_entk"] == 0 and summary["fn_entk"] == 0 and summary["precision_entk"] == 1.0
    # both decision spaces are judged: the probability form is first-order too, exact here only where it agrees
    assert summary["tp_entk_prob"] + summary["fn_entk_prob"] == summary["n_true_events"]
    assert summary["disagree_entk"] == summary["disagree_entk_prob"]
    # the recorded minibatches are the seeded per-epoch permutation, and step t is judged on B_{t-1}
    gen = torch.Generator().manual_seed(5)
    perm = [torch.randperm(48, generator=gen).numpy() for _ in range(2)]
    expected = np.concatenate(perm).reshape(-1, 8)[:11]
    np.testing.assert_array_equal(res.batches, expected)
    np.testing.assert_array_equal(res.lr, np.full(11, 2.0))
    for t in range(2, 12):
        np.testing.assert_array_equal(res.samples["position"][res.samples["step"] == t], res.batches[t - 2])
    assert [r["epoch"] for r in res.steps] == [1] * 5 + [2] * 5


def test_window_does_not_change_the_training_trajectory():
    train = _linear_data(40, seed=1)
    kw = dict(batch_size=6, lr=1.5, dtype="float64")
    runs = []
    for start, steps in ((2, 8), (6, 4)):
        torch.manual_seed(0)
        model = build_model("mlp", (1, 1, 2), 2, hidden=[4])
        runs.append(
            run_forgetting(
                model, train, ForgettingSetup(start_step=start, steps=steps, **kw), seed=2, mean=[0.5], std=[0.25]
            )
        )
    a = pd.DataFrame(runs[0].steps).set_index("step").loc[6:9]
    b = pd.DataFrame(runs[1].steps).set_index("step")
    cols = ["n_correct", "n_true", "sq_true", "tp_entk", "fp_entk", "sq_err_lpntk"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


def test_momentum_adds_the_actual_update_predictor():
    train = _linear_data(40, seed=2)
    setup = ForgettingSetup(
        batch_size=8, lr=1.0, momentum=0.9, weight_decay=0.01, start_step=3, steps=6, dtype="float64"
    )
    torch.manual_seed(0)
    model = build_model("mlp", (1, 1, 2), 2, hidden=[])
    res = run_forgetting(model, train, setup, seed=1, mean=[0.5], std=[0.25])
    summary = summarise_steps(res.steps)
    assert setup.predictors[-1] == "entk_update" and "f1_entk_update" in summary
    # linear logits: the actual update is linearised exactly, while Eq. 1 misses the momentum and weight decay
    assert summary["relerr_dz_entk_update"] < 1e-12
    assert summary["relerr_dz_entk"] > 1e-3


def test_setup_validation_names_the_key():
    with pytest.raises(ValueError, match="forgetting.start_step"):
        ForgettingSetup(start_step=1)
    with pytest.raises(ValueError, match="forgetting.dtype"):
        ForgettingSetup(dtype="float16")
    with pytest.raises(ValueError, match="forgetting.momentum"):
        ForgettingSetup(momentum=1.0)


# ------------------------------------------------------------------------------------------- stages


@pytest.fixture
def forgetting_cfg():
    return {
        "source": "sklearn",
        "name": "digits",
        "device": "cpu",
        "model": {"name": "small_cnn", "args": {"width": 0.5, "hidden": 8}},
        "forgetting": {
            "enabled": True,
            "seeds": None,
            "seeds_per_job": 2,
            "batch_size": 64,
            "lr": 0.1,
            "recipes": {
                "plain": {"lr": None, "momentum": 0.0, "weight_decay": 0.0, "dropout": False},
                "official": {"lr": None, "momentum": 0.9, "weight_decay": 5e-4, "dropout": False},
            },
            "augment": False,
            "start_step": 3,
            "steps": 4,
            "dtype": "float32",
            "block_size": 256,
        },
    }


def test_forgetting_stages(digits, tmp_path, forgetting_cfg):
    from lpntk.io import load_json, load_npz
    from lpntk.paper import forgetting_reference as paper_reference
    from lpntk.plan import group_name
    from lpntk.stages.forgetting_stage import forgetting_stage
    from lpntk.stages.forgetting_table_stage import forgetting_table_stage

    def seed_group_name(seeds):
        return group_name("seed", seeds)

    save_prepared(digits, tmp_path / "data")
    summaries = []
    for recipe in ("plain", "official"):
        for seeds in ([1, 2], [3]):
            d = tmp_path / recipe / seed_group_name(seeds)
            out = {"steps": str(d / "steps.csv"), "samples": str(d / "samples.npz"), "summary": str(d / "summary.json")}
            forgetting_stage(
                dataset="digits",
                cfg=forgetting_cfg,
                recipe=recipe,
                seeds=seeds,
                data=tmp_path / "data",
                outputs=out,
                threads=1,
                mlflow_cfg=OFF,
            )
            summaries.append(out["summary"])
    assert seed_group_name([1, 2]) == "seeds1-2" and seed_group_name([3]) == "seed3"
    steps = pd.read_csv(tmp_path / "plain" / "seeds1-2" / "steps.csv")
    assert steps["seed"].tolist() == [1] * 4 + [2] * 4 and steps["step"].tolist() == [3, 4, 5, 6] * 2
    assert {"tp_entk", "fp_lpntk", "tn_pntk", "fn_entk", "tp_entk_prob", "fn_lpntk_raw_prob"} <= set(steps.columns)
    assert "tp_entk_update" not in steps.columns  # plain SGD: entk_update is entk
    official = pd.read_csv(tmp_path / "official" / "seeds1-2" / "steps.csv")
    assert "tp_entk_update" in official.columns and np.allclose(official["lr"], 0.01)  # 0.1 (1 - 0.9)
    s = load_npz(tmp_path / "plain" / "seeds1-2" / "samples.npz")
    assert s["batch_positions"].shape == (2, 6, 64) and s["lr"].shape == (2, 6)
    np.testing.assert_array_equal(s["index"], digits.train.index.numpy()[s["position"]])  # original indices
    summ = load_json(summaries[0])
    assert [r["seed"] for r in summ["runs"]] == [1, 2]
    assert summ["runs"][0]["n_true_events"] == int(steps[steps.seed == 1]["n_true"].sum())

    outs = {
        k: str(tmp_path / "table" / f)
        for k, f in (
            ("table_csv", "table.csv"),
            ("table_md", "table.md"),
            ("figure_png", "scores.png"),
            ("figure_pdf", "scores.pdf"),
            ("summary", "summary.json"),
        )
    }
    table = forgetting_table_stage(
        dataset="digits", cfg=forgetting_cfg, summaries=summaries, outputs=outs, mlflow_cfg=OFF
    )
    # plain: 5 kernel predictors, official: 6 (entk_update), each in 2 spaces and 2 scorings; the 3 trivial
    # predictors once per recipe (the same in both spaces) in 2 scorings
    assert len(table) == (5 + 6) * 2 * 2 + 2 * 3 * 2 and set(table["n_runs"]) == {3}
    assert set(table["space"]) == {"logit", "probability", "both"} and list(dict.fromkeys(table["recipe"])) == [
        "plain",
        "official",
    ]
    assert table["paper_f1"].isna().all()  # digits: no paper column
    md = (tmp_path / "table" / "table.md").read_text()
    assert "lpntk" in md and "paper F1 %" in md and "MCC × 100" in md and "| none " in md
    assert (tmp_path / "table" / "scores.png").stat().st_size > 1000
    agg = load_json(outs["summary"])["aggregate"]
    assert agg["plain_n_seeds"] == 3 and "plain_f1_lpntk" in agg and "official_stepwise_precision_entk_prob" in agg
    assert {"plain_mcc_entk", "official_mcc_lpntk_prob", "plain_stepwise_f1_none", "official_mcc_random"} <= set(agg)
    # determinism: the same group again gives the same bytes
    d = tmp_path / "again"
    out = {"steps": str(d / "steps.csv"), "samples": str(d / "samples.npz"), "summary": str(d / "summary.json")}
    forgetting_stage(
        dataset="digits",
        cfg=forgetting_cfg,
        recipe="plain",
        seeds=[3],
        data=tmp_path / "data",
        outputs=out,
        threads=1,
        mlflow_cfg=OFF,
    )
    for name in ("steps.csv", "samples.npz", "summary.json"):
        assert (d / name).read_bytes() == (tmp_path / "plain" / "seed3" / name).read_bytes()
    # the slides' numbers go to torchvision MNIST / CIFAR10 only
    assert paper_reference({"source": "torchvision", "name": "MNIST"})["lpntk"]["f1"] == (49.54, 6.99)
    assert paper_reference({"source": "torchvision", "name": "CIFAR10"})["entk"]["f1"] == (97.87, 2.08)
    assert paper_reference({"source": "sklearn", "name": "digits"}) is None


# ------------------------------------------------------------------------------------------- workflow


@pytest.mark.slow
def test_workflow_forgetting(workflow_run):
    from mlflow.tracking import MlflowClient

    workdir, _ = workflow_run
    root = workdir / "results" / "tiny" / "forgetting"
    table = pd.read_csv(root / "table.csv")
    trivial = {"none", "all", "random"}
    assert set(table["predictor"]) == {"entk", "lpntk", "pntk", "lpntk_raw", "pntk_raw", "entk_update"} | trivial
    assert set(table[table["recipe"] == "plain"]["predictor"]) == {"entk", "lpntk", "pntk", "lpntk_raw", "pntk_raw"} | (
        trivial
    )
    assert set(table["scoring"]) == {"pooled", "stepwise"} and set(table["space"]) == {"logit", "probability", "both"}
    assert (table["n_runs"] == 2).all()
    for recipe in ("plain", "official"):  # the schema's default recipes, side by side
        steps = pd.read_csv(root / recipe / "seeds1-2" / "steps.csv")
        assert sorted(steps["seed"].unique()) == [1, 2]
        assert (workdir / "results" / "tiny" / "benchmarks" / "forgetting" / recipe / "seeds1-2.tsv").is_file()
    assert (root / "scores.png").is_file() and (root / "table.md").is_file()
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lpntk-tiny")
    runs = client.search_runs([exp.experiment_id], "tags.`lpntk.rule` = 'forgetting'")
    assert sorted((r.data.tags["lpntk.recipe"], r.data.tags["lpntk.seed"]) for r in runs) == [
        ("official", "1"),
        ("official", "2"),
        ("plain", "1"),
        ("plain", "2"),
    ]
    for r in runs:
        assert "n_true_events" in r.data.metrics and r.info.status == "FINISHED"
        # the plain recipe's window holds true events (3 and 5); the official recipe's slower steps in this tiny
        # window may hold none, and then precision and recall are undefined (NaN) and not logged
        if r.data.tags["lpntk.recipe"] == "plain":
            assert r.data.metrics["n_true_events"] > 0
            assert {"precision_entk", "recall_lpntk", "f1_entk_prob"} <= set(r.data.metrics)
            assert {"mcc_entk", "mcc_lpntk_prob", "n_candidates", "stepwise_f1_none", "f1_all"} <= set(r.data.metrics)
    agg = client.search_runs([exp.experiment_id], "tags.`lpntk.rule` = 'forgetting_table'")
    assert len(agg) == 1 and "plain_n_true_events" in agg[0].data.metrics


def test_seed_groups_chunk_the_seeds_in_order_under_their_path_names():
    from lpntk.plan import group_name, seed_groups

    def seed_group_name(seeds):
        return group_name("seed", seeds)

    assert seed_groups([1, 2, 3], 2) == {"seeds1-2": [1, 2], "seed3": [3]}
    assert seed_groups([5, 3], 1) == {"seed5": [5], "seed3": [3]}
    assert seed_groups(["4", 7], 10) == {"seeds4-7": [4, 7]}
    assert all(seed_group_name(v) == k for k, v in seed_groups(range(1, 8), 3).items())
    with pytest.raises(ValueError, match="seeds_per_job"):
        seed_groups([1, 2], 0)
    with pytest.raises(ValueError, match="repeats"):
        seed_groups([1, 2, 1], 1)


def test_kernel_class_groups_cover_every_class_once_in_order():
    from lpntk.plan import class_groups, kernel_group_name

    assert class_groups(10, 1)["class7"] == [7] and len(class_groups(10, 1)) == 10
    assert class_groups(10, 4) == {"classes0-1-2-3": [0, 1, 2, 3], "classes4-5-6-7": [4, 5, 6, 7], "classes8-9": [8, 9]}
    assert class_groups(3, 10) == {"classes0-1-2": [0, 1, 2]}
    assert kernel_group_name(9, 10, 4) == "classes8-9"
    with pytest.raises(ValueError, match="classes_per_job"):
        class_groups(10, 0)

"""The two decision spaces are judged separately: the probability space's keys (``_prob``) hold the probability-space
prediction (argmax q + A dz), not the logit space's, in the step rows, the per-sample arrays and the summary.

Written for a suspected defect (the MNIST official recipe's logit- and probability-space rows were identical to every
digit): a by-hand step where the two forms disagree, and a training run whose every step is re-judged by an
independent implementation (the softmax Jacobian as an explicit K x K matrix)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lpntk.data import Split
from lpntk.forgetting import ForgettingSetup, run_forgetting, summarise_steps
from lpntk.forgetting import _run as run_module
from lpntk.models import build_model


def test_judge_keeps_the_spaces_apart_by_hand():
    # two classes, z = (1, 0), label 0: the logit rule forgets when dz_1 - dz_0 > 1, the probability rule when
    # dz_1 - dz_0 > (q_0 - q_1) / (2 q_0 q_1) = 1.1752..; sample 3 is wrong before the step (not a candidate)
    z = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]], dtype=torch.float64)
    dz = torch.tensor([[0.0, 0.9], [0.0, 1.1], [0.0, 1.2], [0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 0])
    row, per = run_module._judge(5, 0.1, 4, torch.arange(4), y, z, z + dz, {"entk": dz})
    # true events (the change is dz exactly): samples 1, 2; logit predicts 1, 2; probability predicts 2 only
    assert per["true_event"].tolist() == [False, True, True, False]
    assert per["pred_entk"].tolist() == [False, True, True, False]
    assert per["pred_entk_prob"].tolist() == [False, False, True, False]
    assert (row["tp_entk"], row["fp_entk"], row["fn_entk"], row["tn_entk"]) == (2, 0, 0, 2)
    assert (row["tp_entk_prob"], row["fp_entk_prob"], row["fn_entk_prob"], row["tn_entk_prob"]) == (1, 0, 1, 2)
    assert row["disagree_entk"] == row["disagree_entk_prob"] == 1 and row["n_correct"] == 3
    s = summarise_steps([row], ["entk", "entk_prob"])
    # candidates 3: logit TP 2, TN 1 -> MCC 1; probability TP 1, FN 1, TN 1 -> 1 / sqrt(1 * 2 * 1 * 2) = 0.5
    assert s["mcc_entk"] == 1.0 and s["mcc_entk_prob"] == pytest.approx(0.5, rel=1e-12)
    assert s["f1_entk"] == 1.0 and s["f1_entk_prob"] == pytest.approx(2 / 3, rel=1e-12)


def _independent_prediction(z: torch.Tensor, dz: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    """Both rules per sample with the softmax Jacobian formed explicitly: A = diag(q) - q q^T, q^ = q + A dz."""
    z, dz = z.double().numpy(), dz.double().numpy()
    y = y.numpy()
    out = {"": [], "_prob": []}
    for zi, di, yi in zip(z, dz, y, strict=True):
        q = np.exp(zi - zi.max())
        q /= q.sum()
        a = np.diag(q) - np.outer(q, q)
        correct = zi.argmax() == yi
        out[""].append(bool(correct and (zi + di).argmax() != yi))
        out["_prob"].append(bool(correct and (q + a @ di).argmax() != yi))
    return {k: np.array(v, dtype=bool) for k, v in out.items()}


def test_run_judges_each_space_with_its_own_prediction(monkeypatch):
    """lr 1 on a small MLP: the two forms disagree on some samples; every step's rows, per-sample arrays and the
    summary must follow an independent re-judging of the same (z_before, z_after, dz)."""
    seen = []
    judge = run_module._judge

    def recording(t, lr, n_upd, pos_o, y_o, z_before, z_after, dz):
        seen.append((t, y_o.clone(), z_before.clone(), z_after.clone(), {k: v.clone() for k, v in dz.items()}))
        return judge(t, lr, n_upd, pos_o, y_o, z_before, z_after, dz)

    monkeypatch.setattr(run_module, "_judge", recording)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(60, 1, 1, 2, generator=g, dtype=torch.float64)
    y = (x[:, 0, 0, 0] + 0.3 * torch.randn(60, generator=g, dtype=torch.float64) > 0.5).long()
    setup = ForgettingSetup(batch_size=10, lr=1.0, start_step=2, steps=12, dtype="float64")
    torch.manual_seed(0)
    model = build_model("mlp", (1, 1, 2), 2, hidden=[4])
    res = run_forgetting(model, Split(x.float(), y, torch.arange(60)), setup, seed=1, mean=[0.5], std=[0.25])
    assert len(seen) == len(res.steps) == 12
    summary = summarise_steps(res.steps)
    disagreements = 0
    for (t, y_o, z_b, z_a, dz), row in zip(seen, res.steps, strict=True):
        assert row["step"] == t
        true = (z_b.argmax(1) == y_o).numpy() & (z_a.argmax(1) != y_o).numpy()
        at = res.samples["step"] == t
        np.testing.assert_array_equal(res.samples["true_event"][at], true)
        for p, d in dz.items():
            ref = _independent_prediction(z_b, d, y_o)
            for sfx in ("", "_prob"):
                pred = ref[sfx]
                np.testing.assert_array_equal(res.samples[f"pred_{p}{sfx}"][at], pred, err_msg=f"step {t} {p}{sfx}")
                counts = (int((true & pred).sum()), int((~true & pred).sum()), int((true & ~pred).sum()))
                assert (row[f"tp_{p}{sfx}"], row[f"fp_{p}{sfx}"], row[f"fn_{p}{sfx}"]) == counts, (t, p, sfx)
            n_diff = int((ref[""] != ref["_prob"]).sum())
            assert row[f"disagree_{p}"] == row[f"disagree_{p}_prob"] == n_diff
            disagreements += n_diff
    assert disagreements > 0  # the test can tell the spaces apart on this run
    assert summary["disagree_entk"] > 0 and summary["tp_entk"] != summary["tp_entk_prob"]
    assert not math.isclose(summary["f1_entk"], summary["f1_entk_prob"])

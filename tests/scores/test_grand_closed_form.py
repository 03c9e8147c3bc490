"""GraNd against its closed form on a linear softmax model.

For logits z = W x + b, p = softmax(z) and the one-hot label e_y, the cross-entropy's gradient is
(p - e_y) x^T for W and p - e_y for b, so

    GraNd(x, y) = ||grad_W||_F^2 + ||grad_b||^2 under the root = ||p - e_y|| sqrt(||x||^2 + 1)

(||u x^T||_F = ||u|| ||x||); without a bias, or with the bias frozen (lpntk counts trainable parameters only,
``requires_grad``), ||p - e_y|| ||x||. Checked for lpntk.kernel.per_sample_grad_norms and for what training records
(lpntk.train.train_model at its score epochs, read back by lpntk.scores.grand_of_run). The reference is numpy on
the weights, not the code under test."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from lpntk.data import Split
from lpntk.kernel import per_sample_grad_norms
from lpntk.scores import grand_of_run
from lpntk.train import Recipe, train_model

K, D, N = 4, 6, 9


def closed_form(w: np.ndarray, b: np.ndarray | None, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """||p - e_y|| sqrt(||x||^2 + [bias]) per row of x, with numpy in float64."""
    w, x = np.asarray(w, dtype=np.float64), np.asarray(x, dtype=np.float64)
    z = x @ w.T + (0.0 if b is None else np.asarray(b, dtype=np.float64))
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return np.linalg.norm(p, axis=1) * np.sqrt((x**2).sum(axis=1) + (0.0 if b is None else 1.0))


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g, dtype=torch.float64) * 2.0
    y = torch.randint(0, K, (N,), generator=g)
    return x, y


@pytest.mark.parametrize("bias", ["trainable", "none", "frozen"])
def test_per_sample_grad_norms_closed_form(bias):
    torch.manual_seed(1)
    model = nn.Linear(D, K, bias=bias != "none").double()
    if bias == "frozen":
        model.bias.requires_grad_(False)
    with torch.no_grad():  # large enough weights that p is far from uniform
        model.weight.mul_(3.0)
    x, y = _data()
    w = model.weight.detach().numpy()
    b = model.bias.detach().numpy() if bias != "none" else None
    # a frozen bias still shifts the logits, but contributes no gradient: the norm is ||p - e_y|| ||x||
    ref = closed_form(w, b, x.numpy(), y.numpy())
    if bias == "frozen":
        ref = ref / np.sqrt((x.numpy() ** 2).sum(axis=1) + 1.0) * np.linalg.norm(x.numpy(), axis=1)
    got = per_sample_grad_norms(model, x, y, block_size=4)
    assert got.shape == (N,) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)


def test_per_sample_grad_norms_correct_and_confident_samples():
    # hand-set weights: W = 10 I (K = D = 2), b = 0; x = (1, 0), label 0 -> p ~ (1, 0): GraNd ~ 0 (learned);
    # label 1 -> ||p - e_1|| ~ sqrt 2, times sqrt(1 + 1) -> ~2 (confidently wrong: the largest gradient)
    model = nn.Linear(2, 2).double()
    with torch.no_grad():
        model.weight.copy_(10.0 * torch.eye(2, dtype=torch.float64))
        model.bias.zero_()
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    got = per_sample_grad_norms(model, x, y).numpy()
    q = 1.0 / (1.0 + np.exp(-10.0))  # softmax of (10, 0) in class 0
    np.testing.assert_allclose(got, [np.sqrt(2) * (1 - q) * np.sqrt(2), np.sqrt(2) * q * np.sqrt(2)], rtol=1e-12)


def test_recorded_grand_closed_form():
    """GraNd as training records it: at initialisation (score epoch 0) and after the last epoch, on the
    normalised, un-augmented training inputs, in eval mode."""
    g = torch.Generator().manual_seed(3)
    n, side = 12, 3
    train = Split(
        torch.rand(n, 1, side, side, generator=g), torch.randint(0, K, (n,), generator=g), torch.arange(100, 100 + n)
    )
    mean, std = [0.4], [0.3]
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(side * side, K))
    init = copy.deepcopy(model.state_dict())
    recipe = Recipe(epochs=2, batch_size=4, lr=0.5, momentum=0.0, weight_decay=0.0, select="last", score_epochs=(0, 2))
    res = train_model(model, train, recipe, seed=0, mean=mean, std=std, device="cpu")
    x = ((train.x.numpy().reshape(n, -1).astype(np.float64)) - mean[0]) / std[0]
    y = train.y.numpy()
    for j, state in ((0, init), (1, res.last_state)):
        ref = closed_form(state["1.weight"].numpy(), state["1.bias"].numpy(), x, y)
        np.testing.assert_allclose(res.dynamics["grand"][:, j], ref, rtol=2e-5)
    # training moved the weights, so the two snapshots differ
    assert not np.allclose(res.dynamics["grand"][:, 0], res.dynamics["grand"][:, 1], rtol=1e-3)
    # the score of the run at epoch 2 is that column
    np.testing.assert_array_equal(grand_of_run(res.dynamics, {"grand_epoch": 2}), res.dynamics["grand"][:, 1])

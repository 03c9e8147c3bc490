"""The targets' L2 error as the difficulty runs record it, against a hand-written training loop (run by run and in
lockstep), and the learning difficulty as the sum of the training pass's L2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lpntk.data import Split
from lpntk.difficulty import (
    curve_area,
    learning_difficulty,
    target_l2_curves,
)
from lpntk.train import Recipe


class _TinyMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 6)
        self.fc2 = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def _tiny_split(n=9):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 2, 2, generator=g)
    y = torch.arange(n) % 3
    return Split(x, y, torch.arange(100, 100 + n))


@pytest.mark.parametrize("lockstep", [False, True])
def test_target_l2_curves_match_a_hand_written_loop(lockstep):
    """The recorded training-pass L2 of the targets = a plain full-batch SGD loop from the same initialisation
    (run by run, and with the runs in lockstep)."""
    from lpntk.train import seed_everything

    split = _tiny_split()
    recipe = Recipe(
        epochs=4, batch_size=64, lr=0.3, momentum=0.9, weight_decay=5e-4, schedule="none", shuffle=False, select="last"
    )
    targets = np.array([0, 4])
    out = target_l2_curves(_TinyMLP, split, targets, recipe, [3, 4], mean=[0.5], std=[0.25], lockstep=lockstep)
    assert out["train"].shape == (2, 2, 4) and out["eval"].shape == (2, 2, 4)
    for r, seed in enumerate((3, 4)):
        seed_everything(seed)
        model = _TinyMLP()
        opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, weight_decay=5e-4)
        x = (split.x - 0.5) / 0.25
        for e in range(4):
            z = model(x)
            p = torch.softmax(z.detach(), 1)
            onehot = torch.nn.functional.one_hot(split.y, 3).float()
            l2 = (p - onehot).norm(dim=1)[targets].numpy()
            np.testing.assert_allclose(out["train"][r, :, e], l2, rtol=1e-5, atol=1e-6)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(z, split.y).backward()
            opt.step()
            with torch.no_grad():
                p = torch.softmax(model(x), 1)
            np.testing.assert_allclose(
                out["eval"][r, :, e], (p - onehot).norm(dim=1)[targets].numpy(), rtol=1e-5, atol=1e-6
            )
    # full batch, no dropout: the training pass of epoch e + 1 sees the weights the eval pass of epoch e saw
    np.testing.assert_allclose(out["train"][:, :, 1:], out["eval"][:, :, :-1], rtol=1e-5, atol=1e-6)
    again = target_l2_curves(_TinyMLP, split, targets, recipe, [3, 4], mean=[0.5], std=[0.25], lockstep=lockstep)
    np.testing.assert_array_equal(again["train"], out["train"])


def test_learning_difficulty_is_the_sum_of_the_training_pass_l2():
    from lpntk.train import seed_everything, train_model

    split = _tiny_split(6)
    recipe = Recipe(epochs=3, batch_size=4, lr=0.1, schedule="none", shuffle=True, select="last")
    ld = learning_difficulty(_TinyMLP, split, recipe, 7, mean=[0.5], std=[0.25])
    seed_everything(7)
    res = train_model(_TinyMLP(), split, recipe, 7, mean=[0.5], std=[0.25], device="cpu")
    np.testing.assert_allclose(ld, res.dynamics["l2"].sum(axis=1), rtol=1e-6)
    # several splits of one length: one run each from the same seed, together; row k = split k's LD
    other = Split(split.x.flip(0), split.y.flip(0), split.index.flip(0))
    both = learning_difficulty(_TinyMLP, [split, other], recipe, 7, mean=[0.5], std=[0.25])
    assert both.shape == (2, 6)
    np.testing.assert_allclose(both[0], ld, rtol=1e-5, atol=1e-6)
    seed_everything(7)
    res = train_model(_TinyMLP(), other, recipe, 7, mean=[0.5], std=[0.25], device="cpu")
    np.testing.assert_allclose(both[1], res.dynamics["l2"].sum(axis=1), rtol=1e-5, atol=1e-6)
    assert curve_area(np.ones((2, 5))).tolist() == [5.0, 5.0]

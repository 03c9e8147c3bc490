"""Smoke test on real MNIST (a few hundred samples from $LPNTK_DATA_DIR) with the paper's CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lpntk.data import prepare_dataset
from lpntk.models import build_model, count_parameters
from lpntk.train import Recipe, seed_everything, train_model

pytestmark = pytest.mark.slow  # dataset-scale: reads MNIST and trains the paper's CNN


def test_mnist_prepare_and_train_a_few_hundred_samples(mnist_dir):
    import torchvision

    spec = {
        "source": "torchvision",
        "name": "MNIST",
        "per_class_limit": 40,
        "test_limit": 20,
        "val_fraction": 0.25,
        "normalize": {"mean": [0.1307], "std": [0.3081]},
    }
    p = prepare_dataset("mnist", spec, mnist_dir)
    assert p.train.x.shape[1:] == (1, 28, 28) and p.train.x.dtype == torch.uint8
    assert len(p.train) == 300 and len(p.val) == 100 and len(p.test) == 200
    raw = torchvision.datasets.MNIST(str(mnist_dir), train=True, download=False)
    # original indices point into the 60,000 MNIST training images
    assert torch.equal(raw.data[p.train.index].unsqueeze(1), p.train.x)
    assert torch.equal(raw.targets[p.train.index], p.train.y)

    seed_everything(1)
    model = build_model("mnist_cnn", (1, 28, 28), 10)
    assert count_parameters(model) == 1_199_882
    recipe = Recipe(epochs=2, batch_size=64, lr=0.05, schedule="step", step_size=2, gamma=0.7, score_epochs=(1,))
    r = train_model(model, p.train, recipe, 1, mean=p.info.mean, std=p.info.std, val=p.val, test=p.test, device="cpu")
    assert r.dynamics["l2"].shape == (300, 2) and np.isfinite(r.dynamics["grand"]).all()
    assert r.summary["test_acc_selected"] > 0.5  # 300 images, 2 epochs: well above chance

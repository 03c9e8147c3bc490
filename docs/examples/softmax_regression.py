"""A model of one's own in one file: softmax regression, z = W vec(x) + b.

Its eNTK is closed-form, J(x) J(x')^T = (x . x' + 1) I_K, so its lpNTK is (x . x' + 1) s(y) . s(y') / K: a model
whose kernel one can check by hand.
"""

import math

from torch import nn

import lpntk


class SoftmaxRegression(nn.Module):
    """Logits z = W vec(x) + b of an (N, C, H, W) batch."""

    def __init__(self, in_shape=(1, 28, 28), num_classes=10):
        super().__init__()
        self.linear = nn.Linear(math.prod(in_shape), num_classes)

    def forward(self, x):
        return self.linear(x.flatten(1))


lpntk.register_model(
    "softmax_regression", SoftmaxRegression, shapes=[(1, 8, 8), (1, 28, 28)], label="softmax regression"
)

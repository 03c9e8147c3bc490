"""A pruning method of one's own in one file: keep the training samples the model was least confident about.

The least-confidence score of a sample (x, y) from one training run's recorded dynamics is one minus the mean
probability the model gave its label over the E epochs,

    LC(x, y) = 1 - (1/E) sum_e p_e(y | x),    p_e(y | x) = exp(-loss_e(x, y)),

where loss_e is the sample's cross-entropy at its presentation in epoch e (``dynamics["loss"]``, (N, E)); the mean
confidence is that of Swayamdipta et al.'s data maps (EMNLP 2020). Like EL2N, the method keeps the highest scores
(the hardest samples): per class with ``pruning.ranking: per_class``, ties broken by a random draw of its own.
"""

import numpy as np

import lpntk


def least_confidence(dynamics, settings):
    """LC of every training sample of one run: 1 - the mean over epochs of exp(-loss)."""
    return 1.0 - np.exp(-np.asarray(dynamics["loss"], dtype=np.float64)).mean(axis=1)


lpntk.register_method(
    "least_confidence",
    score_fn=least_confidence,
    label="least confidence (highest kept)",
    short="least conf.",
    color="C9",
    marker="D",
)

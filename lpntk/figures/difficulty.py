"""Figures of use case 1: the targets' L2-error curves per set ("Control Learning Difficulty"), and the correlation
of learning difficulty between dataset sizes."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from . import save_figure

__all__ = ["plot_difficulty_curves", "plot_ld_correlation"]

_STYLE = {
    "easy": ("more interchangeable (highest lpNTK)", "C2"),
    "median": ("median lpNTK", "C0"),
    "hard": ("least similar (lowest lpNTK)", "C1"),
    "contradictory": ("contradictory (negative lpNTK)", "C3"),
}


def plot_difficulty_curves(
    l2: np.ndarray,
    sets: Sequence[str],
    dataset: str,
    png: str | os.PathLike,
    pdf: str | os.PathLike | None = None,
    l2_pass: str = "train",
    mapping: str = "intended",
) -> Figure:
    """Mean +- std over runs of the targets' mean L2 error ‖softmax - onehot‖ per epoch, one curve per set.

    ``l2`` is (S, R, T, E): set x run x target x epoch. Left: averaged over the targets (all classes), mean +- std
    over runs; right: the means on a log scale, where late-epoch differences are visible.
    """
    l2 = np.asarray(l2, dtype=np.float64)
    per_run = l2.mean(axis=2)  # (S, R, E)
    epochs = np.arange(1, l2.shape[-1] + 1)
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for ax, log in zip(axes, (False, True), strict=True):
        for i, s in enumerate(sets):
            label, color = _STYLE.get(s, (s, None))
            if mapping == "official_swap" and s in ("median", "hard"):
                label = f"{s} (official swap: {'least similar' if s == 'median' else 'median lpNTK'})"
            mean = per_run[i].mean(axis=0)
            std = per_run[i].std(axis=0, ddof=1) if per_run.shape[1] > 1 else np.zeros_like(mean)
            ax.plot(epochs, mean, color=color, lw=1.5, label=label)
            if not log:  # a +-std band is meaningless on a log axis where it crosses zero
                ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2, lw=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"targets' L2 error ({l2_pass} pass)")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"{dataset}: controlling learning difficulty (mean ± std over {l2.shape[1]} runs, {l2.shape[2]} targets)"
    )
    fig.tight_layout()
    save_figure(fig, png, pdf)
    return fig


def plot_ld_correlation(
    pearson: np.ndarray,
    sizes: Sequence[int],
    dataset: str,
    png: str | os.PathLike,
    pdf: str | os.PathLike | None = None,
    n_samples: int | None = None,
) -> Figure:
    """Heat map of the Pearson correlation of learning difficulty between training-set sizes (samples per class)."""
    pearson = np.asarray(pearson, dtype=np.float64)
    fig = Figure(figsize=(1.2 * len(sizes) + 2.5, 1.0 * len(sizes) + 1.8))
    ax = fig.subplots()
    im = ax.imshow(pearson, vmin=-1.0, vmax=1.0, cmap="RdBu_r")
    ticks = [str(s) for s in sizes]
    ax.set_xticks(range(len(sizes)), ticks)
    ax.set_yticks(range(len(sizes)), ticks)
    ax.set_xlabel("samples per class in the training set")
    ax.set_ylabel("samples per class in the training set")
    for i in range(len(sizes)):
        for j in range(len(sizes)):
            v = pearson[i, j]
            ax.text(
                j,
                i,
                "nan" if np.isnan(v) else f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if abs(v) > 0.6 else "black",
            )
    fig.colorbar(im, ax=ax, label="Pearson r of learning difficulty")
    extra = f", {n_samples} samples" if n_samples else ""
    ax.set_title(f"{dataset}: learning difficulty vs dataset size{extra}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, png, pdf)
    return fig

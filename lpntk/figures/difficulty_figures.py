"""Figures of use case 1: the targets' L2-error curves per set ("Control Learning Difficulty"), and the correlation
of learning difficulty between dataset sizes."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from . import save_figure

__all__ = ["plot_difficulty_curves", "plot_ld_correlation"]

_STYLE = {
    "easy": ("more interchangeable (highest)", "C2"),
    "median": ("median", "C0"),
    "hard": ("least similar (lowest)", "C1"),
    "contradictory": ("contradictory (negative)", "C3"),
    "control": ("label-matched random control", "C7"),
}


def plot_difficulty_curves(
    curves: Mapping[tuple[str, str], np.ndarray],
    purity: Mapping[tuple[str, str], float],
    dataset: str,
    png: str | os.PathLike,
    pdf: str | os.PathLike | None = None,
    l2_pass: str = "train",
    mapping: str = "intended",
) -> Figure:
    """Mean +- std over runs of the targets' mean L2 error ‖softmax - onehot‖ per epoch, one curve per arm.

    ``curves[(ranking, set)]`` is (R, T, E): run x target x epoch; ``purity`` the label purity of each arm's added
    samples (in the legend: the contradictory company mostly carries other labels). One row per ranking (lpNTK,
    cosine); left: averaged over the targets, mean +- std over runs; right: the means on a log scale.
    """
    rankings = list(dict.fromkeys(r for r, _ in curves))
    fig = Figure(figsize=(11, 3.6 * len(rankings)))
    axes = np.atleast_2d(fig.subplots(len(rankings), 2))
    n_runs = n_targets = 0
    for row, ranking in zip(axes, rankings, strict=True):
        for ax, log in zip(row, (False, True), strict=True):
            for (rk, s), c in curves.items():
                if rk != ranking:
                    continue
                per_run = np.asarray(c, dtype=np.float64).mean(axis=1)  # (R, E)
                n_runs, n_targets = c.shape[0], c.shape[1]
                epochs = np.arange(1, per_run.shape[1] + 1)
                label, color = _STYLE.get(s, (s, None))
                if mapping == "official_swap" and s in ("median", "hard"):
                    label = f"{s} (official swap: {'least similar' if s == 'median' else 'median'})"
                label = f"{label}, label purity {purity[rk, s]:.0%}"
                mean = per_run.mean(axis=0)
                std = per_run.std(axis=0, ddof=1) if per_run.shape[0] > 1 else np.zeros_like(mean)
                ax.plot(epochs, mean, color=color, lw=1.5, label=label)
                if not log:  # a +-std band is meaningless on a log axis where it crosses zero
                    ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2, lw=0)
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"targets' L2 error ({l2_pass} pass)")
            ax.set_title(f"company ranked by {'raw lpNTK' if ranking == 'lpntk' else 'lpNTK cosine'}", fontsize=9)
            if log:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7)
    fig.suptitle(f"{dataset}: controlling learning difficulty (mean ± std over {n_runs} runs, {n_targets} targets)")
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

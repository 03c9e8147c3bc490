"""Figures of use case 3: accuracy after removing redundant samples, and after removing small clusters.

Both take the per-subset aggregate of :func:`lpntk.stages.pruning_table_stage.aggregate_runs` (accuracies in %, mean
and std over seeds) and write a PNG and a PDF with reproducible bytes. Their panels share one legend, below them
(the figure grows by its rows), so that it covers no axis label, point or error bar.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..methods import METHODS, method
from . import save_figure

__all__ = ["plot_redundant_removal", "plot_small_clusters", "method_style"]


def method_style(name: str) -> dict[str, str]:
    """The legend label, colour and marker of pruning method ``name`` (its :data:`lpntk.methods.METHODS` entry)."""
    m = method(name)
    return {"label": m.label, "color": m.color, "marker": m.marker}


_METRICS = (
    ("test_acc_best_val", "test accuracy at best-val epoch (%)"),
    ("test_acc_max", "max test accuracy over epochs (%)\n(official code's metric)"),
)


def _errorline(ax, x, mean, std, style: dict) -> None:
    order = np.argsort(x)
    x, mean, std = np.asarray(x)[order], np.asarray(mean)[order], np.nan_to_num(np.asarray(std)[order])
    ax.errorbar(x, mean, yerr=std, capsize=3, lw=1.5, ms=5, **style)


def _legend_below(fig: Figure, axes: Sequence, height: float, ncol: int) -> None:
    """One legend for every panel of ``fig`` (each label once, in the order first drawn), outside the axes below
    them, in at most ``ncol`` columns (filled column by column); the figure, ``height`` inches without the legend,
    grows by its rows. Needs a constrained layout, which makes room for it."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if not entries:
        return
    ncol = max(1, min(ncol, len(entries)))
    fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncol=ncol, fontsize=8)
    fig.set_size_inches(fig.get_size_inches()[0], height + 0.2 * math.ceil(len(entries) / ncol) + 0.15)


def plot_redundant_removal(
    df: pd.DataFrame, dataset: str, png: str | os.PathLike, pdf: str | os.PathLike | None = None
) -> Figure:
    """Test accuracy vs share of training samples removed (1 - realised kept fraction), lpNTK heads vs random.

    Every curve starts at the full training set (0 % removed). The slides' "Removing Redundant Samples".
    """
    table = df[df["experiment"] == "table"]
    full = table[table["method"] == "full"]
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    n_seeds = int(table["n_seeds"].max()) if len(table) else 0
    for ax, (metric, ylabel) in zip(axes, _METRICS, strict=True):
        for name in (n for n, m in METHODS.items() if m.figure):  # lpNTK's variants and random, in table order
            rows = table[(table["method"] == name) & table["keep"].notna()]
            if not len(rows):
                continue
            pts = pd.concat([full, rows])
            _errorline(
                ax,
                100.0 * (1.0 - pts["realised_keep"].to_numpy(float)),
                pts[f"{metric}_mean"],
                pts[f"{metric}_std"],
                method_style(name),
            )
        ax.set_xlabel("training samples removed (%)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    _legend_below(fig, axes, height=4, ncol=2)
    fig.suptitle(f"{dataset}: removing redundant samples (mean ± std over {n_seeds} seeds)")
    save_figure(fig, png, pdf)
    return fig


def plot_small_clusters(
    df: pd.DataFrame, dataset: str, png: str | os.PathLike, pdf: str | os.PathLike | None = None
) -> Figure:
    """Per data fraction: test accuracy vs share of the subset removed, smallest lpNTK clusters vs random."""
    small = df[df["experiment"] == "small_clusters"]
    fractions = sorted(small["data_fraction"].dropna().unique().tolist())
    fig = Figure(figsize=(5 * len(fractions) if len(fractions) > 1 else 7, 4), layout="constrained")  # the title
    axes = np.atleast_1d(fig.subplots(1, max(1, len(fractions))))
    if not fractions:
        axes[0].text(
            0.5,
            0.5,
            "small-cluster experiment not configured\n(pruning.small_clusters.enabled: false)",
            ha="center",
            va="center",
            transform=axes[0].transAxes,
        )
        axes[0].set_axis_off()
    for ax, d in zip(axes, fractions, strict=False):
        part = small[np.isclose(small["data_fraction"].astype(float), d)]
        base = part[part["method"] == "base"]
        kernels = part["kernel"].fillna("full") if "kernel" in part else pd.Series("full", index=part.index)
        for kernel in ("full", "own"):
            for name in (n for n, m in METHODS.items() if m.experiment == "small_clusters" and n != "base"):
                rows = part[(part["method"] == name) & (kernels == kernel)]
                if not len(rows):
                    continue
                pts = pd.concat([base, rows])
                style = method_style(name)
                if kernel == "own":  # clusters from a model trained on the subset itself: dashed, open markers
                    style.update(label=style["label"] + " (subset's own model)", linestyle="--", mfc="white")
                _errorline(
                    ax,
                    100.0 * (1.0 - pts["realised_keep"].to_numpy(float)),
                    pts["test_acc_best_val_mean"],
                    pts["test_acc_best_val_std"],
                    style,
                )
        n = int(base["n_train"].iloc[0]) if len(base) else 0
        ax.set_title(f"{100 * d:g} % of the training data ({n} samples)")
        ax.set_xlabel("share of the subset removed (%)")
        ax.set_ylabel("test accuracy at best-val epoch (%)")
        ax.grid(alpha=0.3)
    # a column per kernel (its entries drawn in a row), side by side where two panels leave room for them
    n_kernels = small["kernel"].fillna("full").nunique() if "kernel" in small else 1
    _legend_below(fig, axes, height=4, ncol=n_kernels if len(fractions) > 1 else 1)
    fig.suptitle(f"{dataset}: removing small lpNTK clusters (mean ± std over seeds)")
    save_figure(fig, png, pdf)
    return fig

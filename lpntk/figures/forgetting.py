"""Figure of the forgetting stage: precision, recall and F1 of each forgetting predictor (mean +- std over seeds)."""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

from . import save_figure

__all__ = ["plot_forgetting_scores"]

_LABELS = {
    "entk": "eNTK",
    "lpntk": "lpNTK",
    "pntk": "pNTK",
    "lpntk_raw": "lpNTK\nc = 1",
    "pntk_raw": "pNTK\nc = 1",
    "entk_update": "eNTK\nactual Δw",
}
_METRICS = (("precision", "precision"), ("recall", "recall"), ("f1", "F1"))


def plot_forgetting_scores(
    table, png: str | os.PathLike, pdf: str | os.PathLike | None = None, title: str = ""
) -> Figure:
    """Grouped bars of precision / recall / F1 (%) per predictor, mean with std error bars over seeds, one panel per
    scoring (pooled over the window; the official code's per-step average); the slides' numbers as black markers
    in the per-step panel, the averaging they were computed with.

    ``table`` is the DataFrame of :func:`lpntk.forgetting.aggregate_scores`.
    """
    scorings = [s for s in ("pooled", "stepwise") if (table["scoring"] == s).any()]
    n_pred = len(table) // len(scorings)
    fig = Figure(figsize=(len(scorings) * (1.1 * n_pred + 1.0), 4.4))
    axes = np.atleast_1d(fig.subplots(1, len(scorings), sharey=True))
    width = 0.8 / len(_METRICS)
    for ax, scoring in zip(axes, scorings, strict=True):
        sub = table[table["scoring"] == scoring].reset_index(drop=True)
        x = np.arange(len(sub))
        for j, (key, label) in enumerate(_METRICS):
            mean = sub[f"{key}_mean"].to_numpy(dtype=float)
            std = np.nan_to_num(sub[f"{key}_std"].to_numpy(dtype=float))
            pos = x + (j - 1) * width
            ax.bar(pos, np.nan_to_num(mean), width, yerr=std, capsize=3, color=f"C{j}", label=label)
            paper = sub[f"paper_{key}"].to_numpy(dtype=float)
            ok = np.isfinite(paper)
            if ok.any():
                ax.plot(pos[ok], paper[ok], "kx", ms=8, mew=2, label="slides" if j == 0 else None)
        ax.set_xticks(x, [_LABELS.get(p, p) for p in sub["predictor"]])
        ax.set_ylim(0, 105)
        ax.set_title("pooled over the window" if scoring == "pooled" else "per-step average (official code)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("% (mean ± std over seeds)")
    legend = {}  # the slides' markers stand in the stepwise panel only
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    labels, handles = list(legend), list(legend.values())
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save_figure(fig, png, pdf)
    return fig

"""Figure of the forgetting stage: F1 of each forgetting predictor in both decision spaces, per recipe and scoring."""

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
_SPACES = (("logit", "logit space: argmax z + Δz", None), ("probability", "probability space: argmax q + AΔz", "//"))


def plot_forgetting_scores(
    table, png: str | os.PathLike, pdf: str | os.PathLike | None = None, title: str = ""
) -> Figure:
    """F1 (%) per predictor, mean with std error bars over seeds; one row of panels per recipe, one column per scoring
    (pooled over the window; the official code's per-step average), two bars per predictor (logit and probability
    space); the slides' F1 as black markers in the per-step panels, the averaging they were computed with.

    ``table`` is the DataFrame of :func:`lpntk.forgetting.aggregate_scores` with a ``recipe`` column.
    """
    recipes = list(dict.fromkeys(table["recipe"])) if "recipe" in table else [""]
    scorings = [s for s in ("pooled", "stepwise") if (table["scoring"] == s).any()]
    preds = list(dict.fromkeys(table["predictor"]))
    fig = Figure(figsize=(len(scorings) * (0.9 * len(preds) + 1.2), 3.6 * len(recipes)))
    axes = np.atleast_2d(fig.subplots(len(recipes), len(scorings), sharey=True, squeeze=False))
    width = 0.38
    x = np.arange(len(preds))
    for row, recipe in zip(axes, recipes, strict=True):
        for ax, scoring in zip(row, scorings, strict=True):
            sub = table[(table["scoring"] == scoring) & ((table["recipe"] == recipe) if recipe else True)]
            marked = "probability" if (sub["space"] == "probability").any() else "logit"  # the official code's space
            for j, (space, label, hatch) in enumerate(_SPACES):
                s = sub[sub["space"] == space].set_index("predictor").reindex(preds)
                mean = s["f1_mean"].to_numpy(dtype=float)
                std = np.nan_to_num(s["f1_std"].to_numpy(dtype=float))
                pos = x + (j - 0.5) * width
                ax.bar(
                    pos,
                    np.nan_to_num(mean),
                    width,
                    yerr=std,
                    capsize=2,
                    color=["C0", "C1"][j],
                    hatch=hatch,
                    label=label,
                )
                paper = s["paper_f1"].to_numpy(dtype=float)
                ok = np.isfinite(paper)
                if ok.any() and space == marked:
                    ax.plot(pos[ok], paper[ok], "kx", ms=8, mew=2, label="slides")
            ax.set_xticks(x, [_LABELS.get(p, p) for p in preds], fontsize=8)
            ax.set_ylim(0, 105)
            scoring_label = "pooled over the window" if scoring == "pooled" else "per-step average (official code)"
            ax.set_title(f"{recipe + ' recipe, ' if recipe else ''}{scoring_label}", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
        row[0].set_ylabel("F1 % (mean ± std over seeds)")
    legend = {}
    for ax in axes.ravel():
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=len(legend), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07 / len(recipes) ** 0.5, 1, 1))
    save_figure(fig, png, pdf)
    return fig

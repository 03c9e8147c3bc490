"""Figure of the forgetting stage: F1 of each forgetting predictor in both decision spaces, per recipe and scoring,
beside the trivial predictors' F1 (the floor of the metric on these runs)."""

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
    "none": "no\nevent",
    "all": "every\ncandidate",
    "random": "random at\nbase rate",
}
_SPACES = (("logit", "logit space: argmax z + Δz", None), ("probability", "probability space: argmax q + AΔz", "//"))
#: the space of the trivial predictors' rows (:func:`lpntk.forgetting.aggregate_scores`): one bar, both spaces
_BOTH = ("both", "trivial predictor (either space)", "..")
#: why a predictor has no row in a recipe: the run judges ``entk_update`` only when the update is not plain SGD
_ABSENT = {"entk_update": "not judged:\nplain SGD,\nthe actual Δw\nis Eq. 1's\n(= eNTK)"}


def plot_forgetting_scores(
    table, png: str | os.PathLike, pdf: str | os.PathLike | None = None, title: str = ""
) -> Figure:
    """F1 (%) per predictor, mean with std error bars over seeds; one row of panels per recipe, one column per scoring
    (pooled over the window; the official code's per-step average), two bars per predictor (logit and probability
    space) and one grey bar per trivial predictor (no event, every candidate, random at the base rate; the same in
    both spaces; its value written above it), the floor each scoring has on these runs; the slides' F1 as black
    markers in the per-step panels, the averaging they were computed with. A slot without a bar says why in the
    panel: the predictor was not judged under that recipe (``entk_update`` under plain SGD, where it equals eNTK),
    or its F1 is undefined in every seed ("n/a", e.g. a window without true events).

    ``table`` is the DataFrame of :func:`lpntk.forgetting.aggregate_scores` with a ``recipe`` column.
    """
    recipes = list(dict.fromkeys(table["recipe"])) if "recipe" in table else [""]
    scorings = [s for s in ("pooled", "stepwise") if (table["scoring"] == s).any()]
    trivial = list(dict.fromkeys(table.loc[table["space"] == _BOTH[0], "predictor"]))
    preds = [p for p in dict.fromkeys(table["predictor"]) if p not in trivial] + trivial
    fig = Figure(figsize=(len(scorings) * (0.9 * len(preds) + 1.2), 3.6 * len(recipes)))
    axes = np.atleast_2d(fig.subplots(len(recipes), len(scorings), sharey=True, squeeze=False))
    for row, recipe in zip(axes, recipes, strict=True):
        for ax, scoring in zip(row, scorings, strict=True):
            sub = table[(table["scoring"] == scoring) & ((table["recipe"] == recipe) if recipe else True)]
            scoring_label = "pooled over the window" if scoring == "pooled" else "per-step average (official code)"
            _panel(ax, sub, preds, trivial, f"{recipe + ' recipe, ' if recipe else ''}{scoring_label}")
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


def _panel(ax, sub, preds: list[str], trivial: list[str], title: str) -> None:
    """One recipe's panel of one scoring: the bars of each decision space and of the trivial predictors, and in each
    slot without a bar why it is empty."""
    marked = "probability" if (sub["space"] == "probability").any() else "logit"  # the official code's space
    drawn = np.zeros(len(preds), dtype=bool)
    for j, (space, label, hatch) in enumerate((*_SPACES, _BOTH)):
        drawn |= _space_bars(ax, sub, preds, j, (space, label, hatch), marked)
    present = set(sub["predictor"])
    for i, p in enumerate(preds):  # an empty slot says why
        if not drawn[i]:
            why = "n/a:\nF1 undefined\nin every seed" if p in present else _ABSENT.get(p, "not judged")
            ax.text(i, 3, why, ha="center", va="bottom", fontsize=7, color="0.35", linespacing=1.1)
    if trivial:
        ax.axvline(len(preds) - len(trivial) - 0.5, color="0.5", lw=0.8, ls=":")
    ax.set_xticks(np.arange(len(preds)), [_LABELS.get(p, p) for p in preds], fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def _space_bars(ax, sub, preds: list[str], j: int, space_style: tuple, marked: str) -> np.ndarray:
    """The bars (mean F1, std error bars) of the ``j``-th space of the panel, the floor's values above the trivial
    predictors' bars, the slides' markers in the ``marked`` space; returns which slots got a bar."""
    space, label, hatch = space_style
    width = 0.38
    x = np.arange(len(preds))
    s = sub[sub["space"] == space].set_index("predictor").reindex(preds)
    mean = s["f1_mean"].to_numpy(dtype=float)
    ok = np.isfinite(mean)
    if not ok.any():
        return ok
    std = np.nan_to_num(s["f1_std"].to_numpy(dtype=float))
    pos = x + (j - 0.5) * width if space != _BOTH[0] else x.astype(float)
    ax.bar(pos[ok], mean[ok], width, yerr=std[ok], capsize=2, color=["C0", "C1", "0.6"][j], hatch=hatch, label=label)
    if space == _BOTH[0]:  # the floor's value, readable where the bar is (near) 0
        for i in np.flatnonzero(ok):
            ax.text(pos[i], mean[i] + std[i] + 1.5, f"{mean[i]:.1f}", ha="center", fontsize=7)
    paper = s["paper_f1"].to_numpy(dtype=float)
    marks = np.isfinite(paper)
    if marks.any() and space == marked:
        ax.plot(pos[marks], paper[marks], "kx", ms=8, mew=2, label="slides")
    return ok

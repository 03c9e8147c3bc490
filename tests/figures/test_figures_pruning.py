"""The pruning figures: one legend below the panels that covers no axes (labels, ticks, points), reproducible bytes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lpntk.figures.pruning_figures import plot_redundant_removal, plot_small_clusters
from lpntk.plan import subset_plan
from lpntk.stages.pruning_table_stage import aggregate_runs

N_FULL = 1293


def _frame(small_clusters: dict) -> pd.DataFrame:
    """The pruning table's per-subset aggregate of a default-like plan (digits sizes, 3 seeds, made-up accuracies),
    with the small-cluster rows' realised keep relative to their class-balanced subset, as the stage computes it."""
    cfg = {
        "pruning": {
            "methods": ["lpntk", "el2n", "random"],
            "keep": [0.5],
            "curve_keep": [0.8],
            "draws": "per_seed",
            "node": {"cluster_keep": 0.5},
            "small_clusters": {"enabled": True, "controls": ["random"], "kernels": ["full", "own"], **small_clusters},
        }
    }
    rng = np.random.default_rng(0)
    subsets = []
    for p in subset_plan(cfg):
        base = round(N_FULL * p["data_fraction"]) if p["experiment"] == "small_clusters" else N_FULL
        n = round(base * (p["keep"] if p["keep"] is not None else 1.0)) if p["method"] != "full" else N_FULL
        acc = 0.97 - 0.02 * (1 - (p["keep"] or 1.0)) - (0.15 if p["experiment"] == "small_clusters" else 0)
        runs = [
            {"seed": s, "n_train": n, **{m: acc + rng.normal(0, 0.01) for m in ("test_acc_best_val", "test_acc_last")}}
            for s in (1, 2, 3)
        ]
        for r in runs:
            r["test_acc_max"] = r["test_acc_best_val"] + 0.003
        subsets.append({"subset": p["name"], **{k: v for k, v in p.items() if k != "name"}, "runs": runs})
        subsets[-1]["base_n"] = base
    df = aggregate_runs([{"subsets": subsets}], N_FULL)
    small = df["experiment"] == "small_clusters"
    base_n = {s["subset"]: s["base_n"] for s in subsets}
    df.loc[small, "realised_keep"] = df.loc[small, "n_train"] / df.loc[small, "subset"].map(base_n)
    return df


def _boxes(fig):
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    return r, [ax.get_tightbbox(r) for ax in fig.axes]


def _check_legend(fig, labels: set[str]) -> None:
    assert not any(ax.get_legend() for ax in fig.axes)  # no legend inside a panel
    (legend,) = fig.legends
    assert {t.get_text() for t in legend.get_texts()} == labels
    renderer, axes = _boxes(fig)
    box = legend.get_window_extent(renderer)
    w, h = fig.bbox.width, fig.bbox.height
    assert 0 <= box.x0 and box.x1 <= w and 0 <= box.y0 and box.y1 <= h  # all of it on the figure
    for ax in axes:  # each panel with its title, tick and axis labels
        assert not box.overlaps(ax) and box.y1 <= ax.y0
        assert 0 <= ax.x0 and ax.x1 <= w  # the axis labels are not cut off
    title = fig._suptitle.get_window_extent(renderer)
    assert 0 <= title.x0 and title.x1 <= w


_SMALL = {
    "remove smallest lpNTK clusters",
    "remove random samples (same count per class)",
    "remove smallest lpNTK clusters (subset's own model)",
    "remove random samples (same count per class) (subset's own model)",
}


@pytest.mark.parametrize(
    ("fractions", "remove", "controls"),
    [
        ([0.05, 0.2], [0.3], ["random"]),
        ([0.05], [0.3], ["random"]),
        ([0.01, 0.05, 0.2], [0.1, 0.2], ["random", "large"]),
    ],
)
def test_small_cluster_legend_covers_nothing(tmp_path, fractions, remove, controls):
    df = _frame({"data_fractions": fractions, "remove": remove, "controls": controls})
    fig = plot_small_clusters(df, "digits", tmp_path / "s.png", tmp_path / "s.pdf")
    assert len(fig.axes) == len(fractions)
    large = {
        "remove from largest clusters (same count)",
        "remove from largest clusters (same count) (subset's own model)",
    }
    _check_legend(fig, _SMALL | (large if "large" in controls else set()))
    height = fig.get_size_inches()[1]
    assert height > 4  # the legend's rows were added to the panels' height


def test_redundant_removal_legend_covers_nothing(tmp_path):
    df = _frame({"data_fractions": [0.05], "remove": [0.3]})
    fig = plot_redundant_removal(df, "digits", tmp_path / "r.png", tmp_path / "r.pdf")
    _check_legend(fig, {"lpNTK FPC heads (redundant removed)", "random (class-balanced)"})


def test_small_cluster_figure_without_the_experiment(tmp_path):
    df = _frame({"data_fractions": [0.05], "remove": [0.3]})
    fig = plot_small_clusters(df[df["experiment"] != "small_clusters"], "digits", tmp_path / "s.png")
    assert not fig.legends and not fig.axes[0].axison
    renderer, _ = _boxes(fig)
    title = fig._suptitle.get_window_extent(renderer)
    assert 0 <= title.x0 and title.x1 <= fig.bbox.width


def test_pruning_figures_have_reproducible_bytes(tmp_path):
    df = _frame({"data_fractions": [0.05, 0.2], "remove": [0.3]})
    for i in (1, 2):
        plot_small_clusters(df, "digits", tmp_path / f"s{i}.png", tmp_path / f"s{i}.pdf")
        plot_redundant_removal(df, "digits", tmp_path / f"r{i}.png", tmp_path / f"r{i}.pdf")
    for name in ("s", "r"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"{name}1.{ext}").read_bytes() == (tmp_path / f"{name}2.{ext}").read_bytes()

"""Figure of the relations stage: distribution of raw lpNTK values and of their cosines, within vs across classes."""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

from . import save_figure

__all__ = ["plot_relation_histograms"]


def _histogram(values: np.ndarray, edges: np.ndarray, chunk: int = 1 << 23) -> np.ndarray:
    """np.histogram counts, accumulated over chunks (bounded temporaries for 10^8+ values)."""
    counts = np.zeros(len(edges) - 1, dtype=np.int64)
    for s in range(0, values.size, chunk):
        counts += np.histogram(values[s : s + chunk], bins=edges)[0]
    return counts


def _hist(
    ax, within: np.ndarray, cross: np.ndarray, bins: int, xlabel: str, lo: float | None = None, hi: float | None = None
) -> None:
    both = [v for v in (within, cross) if v.size]
    if not both:
        ax.text(0.5, 0.5, "no pairs", ha="center", va="center", transform=ax.transAxes)
        return
    lo = min(float(v.min()) for v in both) if lo is None else lo
    hi = max(float(v.max()) for v in both) if hi is None else hi
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    for values, label, color in ((within, "within class", "C0"), (cross, "across classes (sampled)", "C3")):
        if values.size:
            counts = _histogram(values, edges)
            ax.stairs(counts / values.size, edges, color=color, lw=1.5, label=f"{label}, {values.size:,} pairs")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of pairs per bin")
    ax.grid(alpha=0.3)


def plot_relation_histograms(
    within_kappa: np.ndarray,
    cross_kappa: np.ndarray,
    within_cos: np.ndarray,
    cross_cos: np.ndarray,
    tau: float,
    dataset: str,
    png: str | os.PathLike,
    pdf: str | os.PathLike | None = None,
    bins: int = 100,
) -> Figure:
    """Two panels: raw lpNTK kappa (with the paper's 1/K) and cos = kappa / (|phi| |phi'|), pairs i < j, within
    classes (all pairs) and across classes (the seeded sample), as shares of pairs per bin (log scale); the
    cosine panel marks 0 and +-tau, the thresholds of the relation types."""
    within_kappa, cross_kappa = np.asarray(within_kappa).ravel(), np.asarray(cross_kappa).ravel()
    within_cos, cross_cos = np.asarray(within_cos).ravel(), np.asarray(cross_cos).ravel()
    fig = Figure(figsize=(11, 4))
    ax_k, ax_c = fig.subplots(1, 2)
    _hist(ax_k, within_kappa, cross_kappa, bins, r"lpNTK $\kappa$ (with 1/K)")
    ax_k.axvline(0.0, color="k", lw=0.8)
    _hist(ax_c, within_cos, cross_cos, bins, r"cosine $\kappa / (|\phi|\,|\phi'|)$", -1.0, 1.0)
    for x, style in ((0.0, "-"), (tau, "--"), (-tau, "--")):
        ax_c.axvline(x, color="k", lw=0.8, ls=style)
    ax_c.text(
        0.02,
        0.97,
        f"interchangeable: cos > {tau:g}\nunrelated: |cos| <= {tau:g}\ncontradictory: cos < -{tau:g}",
        transform=ax_c.transAxes,
        ha="left",
        va="top",
        fontsize=8,
    )
    ax_k.legend(fontsize=8, loc="upper right")
    fig.suptitle(f"{dataset}: lpNTK between training samples (pairs i < j)")
    fig.tight_layout()
    save_figure(fig, png, pdf)
    return fig

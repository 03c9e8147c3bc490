"""Plotting functions of the workflow's figures, one module per stage (matplotlib Agg, reproducible bytes)."""

from __future__ import annotations

import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..io import atomic_path

__all__ = ["save_figure"]


def save_figure(fig: Figure, png: str | os.PathLike, pdf: str | os.PathLike | None = None) -> None:
    """Write ``fig`` atomically as PNG (and PDF) with no timestamp or version string, so the bytes are reproducible."""
    FigureCanvasAgg(fig)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=150, metadata={"Software": None})
    if pdf is not None:
        with atomic_path(pdf) as tmp:
            fig.savefig(tmp, format="pdf", metadata={"CreationDate": None, "Producer": None, "Creator": None})

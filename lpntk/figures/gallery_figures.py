"""Figure of the gallery stage: training images in panels of rows, each row groups of captioned tiles.

The layout is computed in inches (no tight_layout): every tile is ``tile`` inches square whatever the image size, so
8 x 8 digits and 32 x 32 CIFAR images read alike, with the caption (label, kappa, cos, score) below each tile and a
coloured frame and heading per group (anchor, interchangeable, unrelated, contradictory, ...).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib.figure import Figure

from . import save_figure

__all__ = ["Tile", "Group", "Row", "Panel", "GROUP_COLORS", "to_display", "plot_gallery"]

#: Frame and heading colour of a group, by its kind.
GROUP_COLORS = {
    "anchor": "black",
    "interchangeable": "tab:green",
    "unrelated": "tab:gray",
    "contradictory": "tab:red",
    "head": "black",
    "members": "tab:blue",
    "removed": "tab:orange",
}


@dataclass
class Tile:
    position: int  #: the sample's position in the training split (row of the images array)
    caption: str  #: one or two short lines under the image


@dataclass
class Group:
    heading: str
    kind: str  #: a key of GROUP_COLORS
    tiles: list[Tile] = field(default_factory=list)
    empty: str = "none"  #: shown instead of tiles when there are none


@dataclass
class Row:
    label: str  #: at the left of the row
    groups: list[Group]


@dataclass
class Panel:
    title: str
    rows: list[Row] = field(default_factory=list)
    note: str = ""  #: a line under the title (what the panel shows, or why it is skipped)


def to_display(x: np.ndarray) -> np.ndarray:
    """Images (N, C, H, W), uint8 or float in [0, 1], as float (N, H, W) or (N, H, W, 3) in [0, 1]."""
    x = np.asarray(x)
    x = x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)
    if x.ndim != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {x.shape}")
    x = np.clip(x, 0.0, 1.0)
    return x[:, 0] if x.shape[1] == 1 else np.moveaxis(x[:, :3], 1, -1)


_TILE, _GAP, _GROUP_GAP = 0.78, 0.1, 0.32  # inches
_LEFT, _RIGHT, _CAPTION, _HEADING, _ROW_GAP = 1.45, 0.25, 0.36, 0.2, 0.12
_TITLE, _NOTE = 0.34, 0.17


def _group_width(group: Group) -> float:
    """Inches a group takes: its tiles, or room for its 'none' text (two tiles) when it has none."""
    return max(len(group.tiles), 0 if group.tiles else 2) * (_TILE + _GAP) - _GAP


def _row_width(row: Row) -> float:
    return sum(_group_width(g) for g in row.groups) + _GROUP_GAP * (len(row.groups) - 1)


def _wrap(text: str, width_in: float, points: float) -> list[str]:
    """``text`` in lines that fit ``width_in`` inches at ``points`` (about half an em per character)."""
    return textwrap.wrap(text, max(20, int(width_in * 72 / (0.5 * points)))) if text else []


def plot_gallery(
    images: np.ndarray,
    panels: Sequence[Panel],
    title: str,
    png: str | os.PathLike,
    pdf: str | os.PathLike | None = None,
) -> Figure:
    """Draw ``panels`` of training images (``images``: the training split's x, (N, C, H, W)) and save PNG / PDF."""
    img = to_display(images)
    width = _LEFT + max([_row_width(r) for p in panels for r in p.rows] + [6.0]) + _RIGHT
    row_h = _HEADING + _TILE + _CAPTION + _ROW_GAP
    notes = [_wrap(p.note, width - 0.6, 8) for p in panels]
    height = 0.55 + sum(
        _TITLE + _NOTE * len(n) + len(p.rows) * row_h + 0.15 for p, n in zip(panels, notes, strict=True)
    )
    fig = Figure(figsize=(width, height))
    inch = fig.dpi_scale_trans

    def text(x, y_top, s, **kw):  # y measured from the top, in inches
        fig.text(x, height - y_top, s, transform=inch, **kw)

    gray = img.ndim == 3
    text(width / 2, 0.3, title, ha="center", va="center", fontsize=13, weight="bold")
    y = 0.55
    for panel, note in zip(panels, notes, strict=True):
        text(0.15, y + _TITLE / 2, panel.title, ha="left", va="center", fontsize=11, weight="bold")
        y += _TITLE
        for line in note:
            text(0.3, y + _NOTE / 2, line, ha="left", va="center", fontsize=8, style="italic", color="0.3")
            y += _NOTE
        for row in panel.rows:
            tile_top = y + _HEADING
            text(_LEFT - 0.12, tile_top + _TILE / 2, row.label, ha="right", va="center", fontsize=8.5)
            x = _LEFT
            for group in row.groups:
                color = GROUP_COLORS.get(group.kind, "black")
                span = _group_width(group)
                text(x + span / 2, y + _HEADING / 2, group.heading, ha="center", va="center", fontsize=7.5, color=color)
                if not group.tiles:
                    text(x + span / 2, tile_top + _TILE / 2, group.empty, ha="center", va="center", fontsize=7)
                for t in group.tiles:
                    ax = fig.add_axes((x / width, (height - tile_top - _TILE) / height, _TILE / width, _TILE / height))
                    ax.imshow(
                        img[t.position], cmap="gray_r" if gray else None, vmin=0.0, vmax=1.0, interpolation="nearest"
                    )
                    ax.set_xticks([])
                    ax.set_yticks([])
                    for spine in ax.spines.values():
                        spine.set_edgecolor(color)
                        spine.set_linewidth(2.0 if group.kind in ("anchor", "head") else 1.2)
                    cap_y = tile_top + _TILE + 0.03
                    text(x + _TILE / 2, cap_y, t.caption, ha="center", va="top", fontsize=6.5, linespacing=1.1)
                    x += _TILE + _GAP
                x += (span + _GAP if not group.tiles else 0) - _GAP + _GROUP_GAP
            y += row_h
        y += 0.15
    save_figure(fig, png, pdf)
    return fig

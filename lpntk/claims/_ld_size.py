"""C5: learning difficulty against training-set size, per class."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..inference import (
    Test,
    bootstrap_interval,
    paired_test,
)
from ._family import EXPLORATORY, PRIMARY, Claim, make_row


def ld_size_claims(
    dataset: str,
    ld: np.ndarray,
    sizes: Sequence[int],
    labels: Sequence[int] | None = None,
    seed: int = 0,
    level: float = 0.95,
) -> list[Claim]:
    """C5 from the learning difficulty of each pool sample at each size (``ld`` (N, S), sizes descending) and the
    samples' classes: per class the drop r(s_0, s_1) - r(s_0, s_min) in Pearson correlation, paired t across classes
    (primary); the pooled drop with a bootstrap interval over samples (exploratory). Needs three sizes or more."""
    ld = np.asarray(ld, dtype=np.float64)
    if ld.shape[1] < 3:
        return []
    comparison = f"r(LD at {sizes[0]}, at {sizes[1]}) - r(at {sizes[0]}, at {sizes[-1]})"
    metric = "Pearson correlation of per-sample learning difficulty"
    out = []
    if labels is not None:
        labels = np.asarray(labels)
        near, far = [], []
        for c in np.unique(labels):
            rows = ld[labels == c]
            corr = np.corrcoef(rows[:, [0, 1, -1]].T) if len(rows) > 2 else np.full((3, 3), np.nan)
            near.append(corr[0, 1])
            far.append(corr[0, 2])
        out.append(
            make_row(
                "C5",
                dataset,
                comparison + ", per class",
                metric + ", within a class",
                paired_test(near, far, level=level),
                role=PRIMARY,
                unit="class",
                baseline="0 (agreement independent of the size gap)",
                note=f"{len(near)} classes, {len(ld) // max(1, len(near))} pool samples per class",
            )
        )

    def drop(rows: np.ndarray) -> float:
        c = np.corrcoef(rows[:, [0, 1, -1]].T)
        return float(c[0, 1] - c[0, 2])

    value, lo, hi = bootstrap_interval(drop, ld, seed=seed, level=level)
    t = Test(value, lo, hi, len(ld), math.nan, math.nan, "bootstrap over samples (2,000 draws), no p", min_p=0.0)
    row = make_row(
        "C5",
        dataset,
        comparison + ", pooled over classes",
        metric,
        t,
        role=EXPLORATORY if labels is not None else PRIMARY,
        unit="sample",
        baseline="0",
        note="no p: outside the family, shown only",
    )
    lo_ok, hi_ok = np.isfinite(lo) and lo > 0, np.isfinite(hi) and hi < 0
    row.extra["forced_verdict"] = f"{'above 0' if lo_ok else 'below 0' if hi_ok else 'interval spans 0'} (no test)"
    out.append(row)
    return out

"""The reference run: which training run's checkpoint the kernels are computed at (paper-protocols §2.4).

Plain Python over the training runs' summaries (``summary.json``); imports nothing heavy, so that the
select_reference job stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["choose_reference_run"]


def choose_reference_run(summaries: Sequence[dict[str, Any]], seed: int | None = None) -> dict[str, Any]:
    """The reference run whose checkpoint the kernel is computed at (paper-protocols §2.4).

    The official code kept the checkpoint with the highest *test* accuracy over all seeds and epochs. Here
    each run's summary already holds its selected checkpoint (best validation accuracy with
    ``select="val"``, best test accuracy with ``select="test"``); this picks the run whose selected
    checkpoint scores best on that same criterion (ties: the smallest seed), or the run of ``seed``.
    """
    if not summaries:
        raise ValueError("no training runs to choose a reference checkpoint from")
    if seed is not None:
        match = [s for s in summaries if int(s["seed"]) == int(seed)]
        if not match:
            raise ValueError(
                f"kernel.seed = {seed} is not among the trained seeds {sorted(int(s['seed']) for s in summaries)}"
            )
        return match[0]
    select = summaries[0].get("select", "val")
    key = {"val": "val_acc_selected", "test": "test_acc_selected", "last": "val_acc_last"}[select]
    return max(sorted(summaries, key=lambda s: int(s["seed"])), key=lambda s: s.get(key, float("-inf")))

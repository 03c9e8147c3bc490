"""The hand-made split the pruning selection tests share (test_selection_rules.py, test_selector_registry.py); the
tiny config with the pruning block the stage tests run is a fixture of tests/conftest.py (``tiny_cfg``)."""

from __future__ import annotations

import numpy as np

# 12 samples of 2 classes with original indices that are neither contiguous nor sorted
INDEX = np.array([50, 7, 31, 90, 12, 66, 3, 44, 81, 25, 18, 70])
LABELS = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])

"""Training-subset selection for use case 3 (paper-protocols §1.6, §4.4-4.6, §7 A6-A9, A11).

``_select`` holds the selection functions over parallel arrays (index, labels, a per-sample quantity), ``_registry``
the rules by method name (:data:`SELECTORS`, :func:`register_selector`, :func:`select_subset`) over one
:class:`PruningInputs`, and :func:`register_method`, which adds a method of one's own -- its entry in
:data:`lpntk.methods.METHODS` (needs, label, colour, cost), its rule and its score -- in one call. Numpy only.
"""

from ._registry import (
    SELECTORS,
    PruningInputs,
    Selector,
    draw_seed,
    register_method,
    register_selector,
    select_subset,
)
from ._select import (
    accuracy_summary,
    class_balanced_subset,
    class_counts_of,
    keep_count,
    remove_large_clusters,
    remove_random,
    remove_small_clusters,
    select_cluster_random,
    select_gated_heads,
    select_heads,
    select_node,
    select_top,
)

__all__ = [
    "keep_count",
    "select_top",
    "select_heads",
    "select_gated_heads",
    "select_cluster_random",
    "select_node",
    "class_balanced_subset",
    "remove_small_clusters",
    "remove_random",
    "remove_large_clusters",
    "class_counts_of",
    "accuracy_summary",
    "PruningInputs",
    "Selector",
    "SELECTORS",
    "register_selector",
    "register_method",
    "select_subset",
    "draw_seed",
]

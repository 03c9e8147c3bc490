"""The selection rules by name: one registry from a method name to one function.

:data:`SELECTORS` maps each method name of the config (``pruning.methods``, and the small-cluster experiment's
``base`` / ``small_clusters`` / ``random_removal`` / ``large_clusters``) to one function ``(inputs, spec, seed) ->
kept original indices``, over one :class:`PruningInputs` that holds every per-sample quantity the rules read;
:func:`select_subset` applies one. What the rest of the package asks about a method (its needs, label, colour, cost)
is its entry in :data:`lpntk.methods.METHODS`; :func:`register_method` adds a method of one's own in one call --
entry, rule and, for a score method, its per-run score (:data:`lpntk.scores.SCORES`) -- and
:func:`register_selector` a rule alone.

``seed`` is the retraining seed the subset is drawn for, or None for one draw shared by every seed
(``pruning.draws``). A rule's random draws take their seed from :func:`draw_seed`: the configured base seed alone
when shared (the old behaviour), else the base seed and the retraining seed combined, so that every seed's subset is
an independent draw.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..methods import PruningMethod, declare_method
from ..scores import ScoreFn, register_score
from ._select import (
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
    "PruningInputs",
    "Selector",
    "SELECTORS",
    "register_selector",
    "register_method",
    "select_subset",
    "draw_seed",
]


def draw_seed(base: int, seed: int | None) -> int:
    """The seed of one draw: ``base`` when shared by every retraining seed (``seed`` None), else a 32-bit seed
    derived from (base, seed) by NumPy's SeedSequence (independent streams for different seeds)."""
    if seed is None:
        return int(base)
    return int(np.random.SeedSequence([int(base), int(seed)]).generate_state(1)[0])


@dataclass
class PruningInputs:
    """Every per-sample quantity the selection rules read, aligned with ``index`` (ORIGINAL indices): those of one
    retraining seed's own training run (FPC on its lpNTK Grams, its scores;
    :func:`lpntk.stages.prune_stage.pruning_inputs`).

    ``head_rank`` / ``self_max``: FPC head creation rank within the class (-1 for non-heads) and the official
    self-max flag; ``clusters[keep]``: cluster id (its head's original index) of each sample with round(keep N_c)
    clusters per class; ``scores[name]``: el2n, grand, forgetting and (for shared draws) random scores;
    ``per_class``: score methods keep the top fraction per class (else globally); ``node_fraction``: the share of the
    largest cluster ``node`` keeps; ``seed``: the base seed of the random draws (``pruning.seed``). For the
    small-cluster experiment, ``small[(d, kernel, seed)]`` = (the class-balanced subset's original indices, the head
    of each member) at data fraction d with clusters from the ``kernel`` ("full" | "own") for the retraining ``seed``
    (None: shared), ``small_seed`` its base seed, ``sq_norm`` |phi|^2 per sample and ``tie_break`` ("random" |
    "head_norm").
    """

    index: np.ndarray
    labels: np.ndarray
    head_rank: np.ndarray | None = None
    self_max: np.ndarray | None = None
    clusters: Mapping[float, np.ndarray] = field(default_factory=dict)
    scores: Mapping[str, np.ndarray] = field(default_factory=dict)
    per_class: bool = False
    node_fraction: float = 0.5
    seed: int = 0
    small: Mapping[tuple, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    small_seed: int = 0
    sq_norm: np.ndarray | None = None
    tie_break: str = "random"

    def random_scores(self, seed: int | None, stream: str = "random") -> np.ndarray:
        """Uniform random scores of the samples: the scores table's (shared draw: every use reads it), or a draw per
        retraining seed and ``stream`` -- the random baseline's ("random"), and one per score method for its tie-breaks
        (its name), independent of each other: a score that ties most samples (forgetting counts on MNIST: zero
        events) must not inherit the random baseline's subset through a shared tie-break."""
        if seed is None:
            return self.scores["random"]
        base = draw_seed(self.seed, seed)
        key = base if stream == "random" else [base, zlib.crc32(stream.encode())]
        return np.random.default_rng(key).random(len(self.index))


#: (inputs, subset spec of :func:`lpntk.plan.subset_plan`, retraining seed or None) -> kept original indices, sorted
Selector = Callable[[PruningInputs, Mapping, "int | None"], np.ndarray]
SELECTORS: dict[str, Selector] = {}


def register_selector(name: str) -> Callable[[Selector], Selector]:
    """Decorator: register ``fn`` as the selection rule of method ``name`` (replacing any earlier one)."""

    def deco(fn: Selector) -> Selector:
        SELECTORS[name] = fn
        return fn

    return deco


def register_method(
    name: str, selector: Selector | None = None, *, score_fn: ScoreFn | None = None, **info: Any
) -> PruningMethod | Callable[[Selector], Selector]:
    """Register pruning method ``name`` in one call: its entry ``PruningMethod(name, **info)`` in
    :data:`lpntk.methods.METHODS` (label, colour, needs, cost: see :class:`lpntk.methods.PruningMethod`), its
    selection rule in :data:`SELECTORS` and, given ``score_fn``, its per-run score in :data:`lpntk.scores.SCORES`.

    A score method needs no rule of its own: with ``score_fn`` (one training run's dynamics and the scores settings ->
    a score per sample; its column is ``info["score"]``, default ``name``) and no ``selector``, the rule keeps the
    highest scores like EL2N's -- per class with ``pruning.ranking: per_class``, ties broken by a random draw of its
    own. Without ``selector`` and score, returns a decorator that registers the function it decorates as the rule.
    Returns the method's entry. Replaces an earlier registration of ``name``.
    """
    if score_fn is not None:
        info.setdefault("score", name)
        info.setdefault("random", True)  # the tie-breaks
    spec = PruningMethod(name, **info)  # checks the fields before anything is registered
    if score_fn is not None:
        register_score(spec.score)(score_fn)
    if selector is None and spec.score is not None:
        selector = _score_selector(name, spec.score)
    if selector is None:

        def deco(fn: Selector) -> Selector:
            register_method(name, fn, **info)
            return fn

        return deco
    declare_method(spec)
    SELECTORS[name] = selector
    return spec


def select_subset(inputs: PruningInputs, spec: Mapping, seed: int | None = None) -> np.ndarray:
    """The subset of ``spec["method"]`` for retraining seed ``seed`` (None: the shared draw), checked to be a
    duplicate-free subset of the training samples."""
    method = spec["method"]
    if method not in SELECTORS:
        raise ValueError(f"pruning method {method!r} has no selection rule; known: {', '.join(sorted(SELECTORS))}")
    kept = np.asarray(SELECTORS[method](inputs, spec, seed), dtype=np.int64)
    if not np.isin(kept, inputs.index).all() or len(np.unique(kept)) != len(kept):
        raise AssertionError(f"subset {spec.get('name', method)} is not a subset of the training split")
    return kept


@register_selector("full")
def _full(inp: PruningInputs, spec: Mapping, seed: int | None) -> np.ndarray:
    return np.sort(inp.index)


@register_selector("lpntk")
def _lpntk(inp: PruningInputs, spec: Mapping, seed: int | None) -> np.ndarray:
    return select_heads(inp.index, inp.labels, inp.head_rank, spec["keep"])


@register_selector("lpntk_gated")
def _lpntk_gated(inp: PruningInputs, spec: Mapping, seed: int | None) -> np.ndarray:
    return select_gated_heads(inp.index, inp.labels, inp.head_rank, inp.self_max, spec["keep"])


@register_selector("lpntk_random")
def _lpntk_random(inp: PruningInputs, spec: Mapping, seed: int | None) -> np.ndarray:
    return select_cluster_random(inp.index, inp.labels, inp.clusters[spec["keep"]], draw_seed(inp.seed, seed))


@register_selector("node")
def _node(inp: PruningInputs, spec: Mapping, seed: int | None) -> np.ndarray:
    clusters = inp.clusters[spec["cluster_keep"]]
    return select_node(inp.index, inp.labels, clusters, draw_seed(inp.seed, seed), inp.node_fraction)


def _score_selector(name: str, column: str | None = None) -> Selector:
    column = column or name

    def select(inp: PruningInputs, spec: Mapping, seed: int | None) -> np.ndarray:
        return select_top(
            inp.index,
            inp.labels,
            inp.scores[column],
            spec["keep"],
            per_class=inp.per_class,
            tiebreak=inp.random_scores(seed, name),
        )

    select.__doc__ = f"Keep the highest {column} scores (ties: the higher random score, its own draw per seed)."
    return select


for _name in ("el2n", "grand", "forgetting"):
    register_selector(_name)(_score_selector(_name))


@register_selector("random")
def _random(inp: PruningInputs, spec: Mapping, seed: int | None) -> np.ndarray:
    """Class-balanced uniform: per class the top fraction of seeded uniform scores."""
    return select_top(inp.index, inp.labels, inp.random_scores(seed), spec["keep"], per_class=True)


def _small_parts(inp: PruningInputs, spec: Mapping, seed: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    key = (spec["data_fraction"], spec.get("kernel", "full"), seed)
    if key not in inp.small:
        raise ValueError(
            f"no clusters of the small-cluster subset {key} (data fraction, kernel, seed); rerun the cluster step"
        )
    sub, head = inp.small[key]
    lookup = dict(zip(inp.index.tolist(), inp.labels.tolist(), strict=True))
    return sub, np.asarray([lookup[int(i)] for i in sub], dtype=np.int64), head


def _small_removed(inp: PruningInputs, spec: Mapping, seed: int | None) -> tuple[np.ndarray, dict[int, int]]:
    sub, sub_labels, head = _small_parts(inp, spec, seed)
    norms = dict(zip(inp.index.tolist(), inp.sq_norm.tolist(), strict=True)) if inp.sq_norm is not None else {}
    head_norm = {int(h): norms[int(h)] for h in head} if inp.tie_break == "head_norm" else None
    return remove_small_clusters(
        sub,
        sub_labels,
        head,
        spec["remove"],
        tie_break=inp.tie_break,
        seed=draw_seed(inp.small_seed, seed),
        head_sq_norm=head_norm,
    )


@register_selector("base")
def _base(inp: PruningInputs, spec: Mapping, seed: int | None) -> np.ndarray:
    return np.sort(_small_parts(inp, spec, seed)[0])


@register_selector("small_clusters")
def _small_clusters(inp: PruningInputs, spec: Mapping, seed: int | None) -> np.ndarray:
    return _small_removed(inp, spec, seed)[0]


@register_selector("random_removal")
def _random_removal(inp: PruningInputs, spec: Mapping, seed: int | None) -> np.ndarray:
    sub, sub_labels, _ = _small_parts(inp, spec, seed)
    return remove_random(sub, sub_labels, _small_removed(inp, spec, seed)[1], draw_seed(inp.small_seed, seed))


@register_selector("large_clusters")
def _large_clusters(inp: PruningInputs, spec: Mapping, seed: int | None) -> np.ndarray:
    sub, sub_labels, head = _small_parts(inp, spec, seed)
    counts = _small_removed(inp, spec, seed)[1]
    return remove_large_clusters(sub, sub_labels, head, counts, draw_seed(inp.small_seed, seed))

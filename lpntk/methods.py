"""The pruning methods by name: everything the rest of the package asks about one (use case 3).

One :class:`PruningMethod` per name in :data:`METHODS` says what a method needs and how it is shown and counted:

* **what it selects** -- ``experiment``: ``table`` (a name of the config's ``pruning.methods``), ``full`` (the full
  training set, always retrained) or ``small_clusters`` (the small-cluster experiment's rule and controls);
  ``keep``: one subset per kept fraction of ``pruning.keep`` (and of ``pruning.curve_keep`` with ``curve``), else
  the subsets its ``subsets`` function makes from the pruning block (``node``: one per ``node.cluster_keep``);
* **what it needs** -- ``kernel``: the FPC clusters of the retraining seed's lpNTK Grams; ``score``: the column of
  the retraining seed's scores table it keeps the highest of (computed by the scores stage from that seed's training
  dynamics); ``random``: a random draw, made anew for every retraining seed with ``pruning.draws: per_seed``;
  :attr:`PruningMethod.reference_run`: whether it reads training run s at all (its Grams or its dynamics);
* **how it is shown** -- ``label`` (figure legends), ``short`` (the gallery's row titles), ``tag`` (the gallery's
  tile captions of a score), ``color`` and ``marker`` (matplotlib); ``figure``: drawn in the redundant-removal
  figure; ``baseline``: one of the paper's four baselines, against which claim C3b compares lpNTK;
* **how its cost is counted** -- ``cost``: a retraining run on round(keep N) samples (``keep``; an upper bound, up
  to per-class rounding, where a gate keeps fewer: ``lpntk_gated``), on N (``all``: the full set, and methods whose
  kept fraction is an outcome, an upper bound), or on round(d N (1 - r)) (``subset``: the small-cluster experiment)
  -- :func:`retrained_samples`.

The selection rule itself (numpy) is registered under the same name in :data:`lpntk.pruning.SELECTORS`, and a score
method's per-run score in :data:`lpntk.scores.SCORES`; :func:`lpntk.pruning.register_method` adds all three in one
call. The plan, the config checks, the cost model, the scores, the prune stage, the figures, the gallery and the
claims read this table; :data:`lpntk.plan.KEEP_METHODS`, :data:`lpntk.scores.SCORE_NAMES` and the schema's
``pruning.methods`` enum (a test keeps it equal) follow from it. Standard library only: the Snakefile reads it when
it builds the DAG.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "PruningMethod",
    "METHODS",
    "declare_method",
    "method",
    "NameView",
    "config_methods",
    "keep_methods",
    "score_methods",
    "random_methods",
    "baselines",
    "retrained_samples",
]

#: the pruning block -> the subset specs of a method that is not one per kept fraction (name, keep, its parameters)
SubsetsFn = Callable[[Mapping[str, Any]], list[dict[str, Any]]]


@dataclass(frozen=True)
class PruningMethod:
    """One pruning method: what it selects and needs, how it is shown and how its cost is counted (module doc)."""

    name: str
    label: str
    short: str = ""
    tag: str | None = None
    color: str = "C9"
    marker: str = "o"
    experiment: Literal["table", "full", "small_clusters"] = "table"
    keep: bool = True
    curve: bool = False
    subsets: SubsetsFn | None = None
    kernel: bool = False
    score: str | None = None
    random: bool = False
    figure: bool = False
    baseline: bool = False
    cost: Literal["keep", "all", "subset"] = "keep"

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"pruning method {self.name!r}: the name must be an identifier (it names files and runs)")
        if self.experiment not in ("table", "full", "small_clusters"):
            raise ValueError(f"pruning method {self.name!r}: unknown experiment {self.experiment!r}")
        if self.cost not in ("keep", "all", "subset"):
            raise ValueError(f"pruning method {self.name!r}: unknown cost {self.cost!r} (keep, all or subset)")
        if self.experiment == "table" and not self.keep and self.subsets is None:
            raise ValueError(f"pruning method {self.name!r}: keep=False needs a subsets function")
        if not self.short:
            object.__setattr__(self, "short", self.label)
        if self.tag is None:
            object.__setattr__(self, "tag", self.short.replace("\n", " ") if self.score else "")

    @property
    def reference_run(self) -> bool:
        """Whether the method reads the retraining seed's training run: its lpNTK Grams or its dynamics' scores."""
        return self.kernel or (self.score is not None and self.score != "random")


#: name -> method, in the order the tables, figures and gallery list them
METHODS: dict[str, PruningMethod] = {}


def declare_method(spec: PruningMethod) -> PruningMethod:
    """Add (or replace) ``spec`` in :data:`METHODS`. Its selection rule is registered separately
    (:func:`lpntk.pruning.register_method` does both)."""
    METHODS[spec.name] = spec
    return spec


def method(name: str) -> PruningMethod:
    """The registered method ``name``; a ValueError naming the known ones (and how to add one) otherwise."""
    if name not in METHODS:
        raise ValueError(
            f"unknown pruning method {name!r}; known: {', '.join(config_methods())}. A method of one's own is "
            f"registered with lpntk.register_method in a file listed under the config's plugins"
        )
    return METHODS[name]


class NameView(Sequence[str]):
    """A live, read-only tuple of the names ``names()`` returns (e.g. :func:`keep_methods`): it follows the
    registrations made after it was created."""

    def __init__(self, names: Callable[[], Sequence[str]]):
        self._source = names

    def _names(self) -> tuple[str, ...]:
        return tuple(self._source())

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


def config_methods() -> tuple[str, ...]:
    """The names ``pruning.methods`` accepts (the schema's enum, with any registered since)."""
    return tuple(n for n, m in METHODS.items() if m.experiment == "table")


def keep_methods() -> tuple[str, ...]:
    """The config's methods that select a kept fraction of the training set (one subset per kept fraction)."""
    return tuple(n for n, m in METHODS.items() if m.experiment == "table" and m.keep)


def score_methods() -> tuple[str, ...]:
    """The config's methods that keep the highest scores of the scores stage (the random baseline aside)."""
    return tuple(n for n, m in METHODS.items() if m.experiment == "table" and m.score not in (None, "random"))


def random_methods() -> tuple[str, ...]:
    """Every method whose subset depends on a random draw (a random score, tie-break, member or subset)."""
    return tuple(n for n, m in METHODS.items() if m.random)


def baselines() -> tuple[str, ...]:
    """The paper's baselines, against which claim C3b compares lpNTK, in table order."""
    return tuple(n for n, m in METHODS.items() if m.baseline)


def retrained_samples(spec: Mapping[str, Any], n: int) -> int:
    """The training samples of a retraining run on subset ``spec`` (:func:`lpntk.plan.subset_plan`) of a training
    set of ``n``: round(keep n), n (``cost="all"``: an upper bound where the kept fraction is an outcome) or
    round(d n (1 - r)) for the small-cluster experiment's subsets; at least 1."""
    how = method(spec["method"]).cost
    if how == "all":
        return int(n)
    if how == "subset":
        return max(1, round(n * float(spec["data_fraction"]) * (1 - float(spec["remove"]))))
    return max(1, round(n * float(spec["keep"])))


def _node_subsets(pcfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """node: one subset at ``node.cluster_keep`` (its kept fraction is an outcome)."""
    ck = float(pcfg["node"]["cluster_keep"])
    return [{"name": f"node-c{ck:g}", "keep": None, "cluster_keep": ck}]


for _spec in (
    PruningMethod("full", "full training set", color="k", marker="*", experiment="full", keep=False, cost="all"),
    PruningMethod(
        "lpntk",
        "lpNTK FPC heads (redundant removed)",
        short="lpNTK heads",
        color="C0",
        marker="o",
        curve=True,
        kernel=True,
        figure=True,
    ),
    PruningMethod(
        "lpntk_gated",
        "lpNTK heads, official self-max gate",
        short="lpNTK heads,\nofficial gate",
        color="C4",
        marker="v",
        kernel=True,
        figure=True,
    ),
    PruningMethod(
        "lpntk_random",
        "lpNTK one random member per cluster",
        short="lpNTK random\nmember",
        color="C5",
        marker="^",
        kernel=True,
        random=True,
        figure=True,
    ),
    PruningMethod(
        "node",
        "node: a random share of each class's largest FPC cluster removed",
        short="node",
        color="C6",
        marker="P",
        keep=False,
        subsets=_node_subsets,
        kernel=True,
        random=True,
        cost="all",
    ),
    PruningMethod(
        "el2n", "EL2N (highest kept)", short="EL2N", color="C1", marker="x", score="el2n", random=True, baseline=True
    ),
    PruningMethod(
        "grand",
        "GraNd (highest kept)",
        short="GraNd",
        color="C2",
        marker="+",
        score="grand",
        random=True,
        baseline=True,
    ),
    PruningMethod(
        "forgetting",
        "forgetting score (highest kept)",
        short="forgetting",
        tag="forg.",
        color="C8",
        marker="d",
        score="forgetting",
        random=True,
        baseline=True,
    ),
    PruningMethod(
        "random",
        "random (class-balanced)",
        short="random",
        tag="",
        color="C7",
        marker="s",
        curve=True,
        score="random",
        random=True,
        figure=True,
        baseline=True,
    ),
    PruningMethod(
        "base",
        "class-balanced subset",
        color="k",
        marker="*",
        experiment="small_clusters",
        kernel=True,
        random=True,
        cost="subset",
    ),
    PruningMethod(
        "small_clusters",
        "remove smallest lpNTK clusters",
        color="C0",
        marker="o",
        experiment="small_clusters",
        kernel=True,
        random=True,
        cost="subset",
    ),
    PruningMethod(
        "random_removal",
        "remove random samples (same count per class)",
        color="C7",
        marker="s",
        experiment="small_clusters",
        kernel=True,
        random=True,
        cost="subset",
    ),
    PruningMethod(
        "large_clusters",
        "remove from largest clusters (same count)",
        color="C3",
        marker="D",
        experiment="small_clusters",
        kernel=True,
        random=True,
        cost="subset",
    ),
):
    declare_method(_spec)

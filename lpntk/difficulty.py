"""Learning difficulty and the rest of the dataset (paper-protocols §1.7, §4.1, §4.2; slides "Use Case 1").

Learning difficulty of a sample in a training run: its L2 error ``‖softmax(z(x)) - e_y‖₂`` per epoch, and
LD = the sum over epochs, taken from the training forward pass (train mode, before the update; the official
``get_l2distance``), as :func:`lpntk.train.train_model` records it.

**Controlling a target's difficulty (§4.2).** Per class c, a target sample t_c (:func:`choose_target`: the
official code took the largest self-lpNTK kappa(t, t) = |phi_t|^2; ``max_mean`` takes the most typical sample,
the largest mean lpNTK to the other samples of its class). The other samples j of the class are ranked by
kappa(t_c, j) (or by its cosine) and three sets of ``num`` samples are taken (:func:`select_sets`):

* ``easy``   -- the ``num`` highest (most interchangeable with the target),
* ``median`` -- ``num`` consecutive samples centred on the median of the ranking,
* ``hard``   -- the ``num`` lowest (least similar; same class, so usually still kappa > 0).

A training set is the union over classes of [t_c + its num samples]. The official code returns (easy, mid, hard) but
unpacks them as (easy, hard, mid), so its "hard" file holds the median samples and its "mid" file the least similar
ones (:func:`official_swap` reproduces that on request; the default is the intended mapping). A fourth set,
``contradictory``, holds samples with kappa(t_c, j) < 0 (contradictory in the paper's sense, §1.5), the most negative
first (:func:`contradictory_sets`), drawn from the target's class or from the whole training set.

**Targets as replicates.** Every run of an arm trains on the same C targets, so runs are not independent replicates
of a claim about targets. :func:`draw_random_targets` adds G groups of C random targets (one per class; seeded,
stratified, never the rule's target); each group gets every arm built for its own targets and its own runs, so a
claim can be tested across targets, group 0 (the rule's targets) staying what the paper did.

**The arms** (:class:`Company`). The company sets are built per ranking of the class's samples -- by the raw
kappa (the official code; it mixes |phi_j| with the angle) and by its cosine (the slides define the relations by
angle) -- :func:`ranked_companies`. Drawn from the whole training set the contradictory set mostly carries other
labels, which changes the training set's label mix as well as its lpNTK; :func:`control_companies` draws, as its
control, random samples with the same labels (:func:`label_matched_sets`), and :func:`label_purity` reports each
arm's share of same-label company.

**Difficulty vs dataset size (§4.1).** Per class a random pool of 4^m samples is cut into a quad-tree: 4 disjoint
quarters, each into 4, ... down to single samples (:func:`quad_tree_subsets`). For each size s the subsets at the
same tree position in every class form one training set; one model per training set, and each sample's LD at each
size. Pearson correlations of LD between sizes (:func:`pearson_matrix`) show how much a sample's difficulty depends
on the other samples it is trained with.

Longer than 450 lines because it holds both experiments of use case 1 (§4.1 and §4.2) with the arms and targets of
§4.2, which read as one method section.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .data import Split, normalize, to_unit
from .grams import ClassGram
from .lockstep import train_lockstep
from .train import Recipe, l2_error, seed_everything, train_model

__all__ = [
    "SETS",
    "TARGET_RULES",
    "choose_target",
    "target_similarity",
    "rank_others",
    "select_sets",
    "official_swap",
    "contradictory_sets",
    "label_matched_sets",
    "label_purity",
    "training_set_positions",
    "target_l2_curves",
    "curve_area",
    "size_levels",
    "quad_tree_subsets",
    "learning_difficulty",
    "pearson_matrix",
    "Company",
    "choose_targets",
    "draw_random_targets",
    "ranked_companies",
    "contradictory_companies",
    "control_companies",
]

log = logging.getLogger(__name__)

SETS = ("easy", "median", "hard", "contradictory")
TARGET_RULES = ("max_self", "max_mean")


def choose_target(gram: np.ndarray, rule: str = "max_self") -> int:
    """The target of one class from its Gram: ``max_self`` = argmax_i kappa_ii (the official choice, the largest
    |phi|), ``max_mean`` = argmax_i mean_{j != i} kappa_ij (the most typical sample). Ties: the first position."""
    g = np.asarray(gram, dtype=np.float64)
    if g.ndim != 2 or g.shape[0] != g.shape[1] or len(g) == 0:
        raise ValueError(f"expected a non-empty square Gram, got shape {g.shape}")
    if rule == "max_self":
        return int(np.argmax(np.diag(g)))
    if rule == "max_mean":
        n = len(g)
        if n == 1:
            return 0
        return int(np.argmax((g.sum(axis=1) - np.diag(g)) / (n - 1)))
    raise ValueError(f"difficulty.target must be one of {TARGET_RULES}, got {rule!r}")


def target_similarity(gram: np.ndarray, target: int, rank_by: str = "lpntk") -> np.ndarray:
    """Similarity of every sample of the class to the target: kappa(t, j) (``lpntk``) or kappa(t, j)/(|phi_t||phi_j|)
    (``cosine``; 0 where a norm vanishes)."""
    g = np.asarray(gram, dtype=np.float64)
    row = g[target].copy()
    if rank_by == "lpntk":
        return row
    if rank_by == "cosine":
        d = np.sqrt(np.clip(np.diag(g), 0.0, None))
        denom = d[target] * d
        out = np.zeros_like(row)
        np.divide(row, denom, out=out, where=denom > 0)
        return out
    raise ValueError(f"difficulty.rank_by must be 'lpntk' or 'cosine', got {rank_by!r}")


def rank_others(values: np.ndarray, exclude: int | Sequence[int]) -> np.ndarray:
    """Positions other than ``exclude``, by ``values`` descending (ties: smaller position first)."""
    values = np.asarray(values, dtype=np.float64)
    keep = np.ones(len(values), dtype=bool)
    keep[np.atleast_1d(np.asarray(exclude, dtype=np.int64))] = False
    pos = np.flatnonzero(keep)
    return pos[np.lexsort((pos, -values[pos]))]


def select_sets(values: np.ndarray, target: int, num: int) -> dict[str, np.ndarray]:
    """The easy / median / hard sets of one class (positions within the class), from the similarities ``values`` of
    every class sample to the target (:func:`target_similarity`).

    With the other n - 1 samples ranked descending as r_0 .. r_{n-2}: easy = r_0 .. r_{num-1}; median =
    r_s .. r_{s+num-1} with s = floor((n - 1 - num) / 2) (centred on the median); hard = the last num. Needs
    n - 1 >= num; the sets overlap when n - 1 < 3 num.
    """
    if num < 1:
        raise ValueError(f"difficulty.num must be >= 1, got {num}")
    ranked = rank_others(values, target)
    m = len(ranked)
    if m < num:
        raise ValueError(f"difficulty.num = {num} but the class has only {m} samples besides its target")
    start = (m - num) // 2
    return {"easy": ranked[:num], "median": ranked[start : start + num], "hard": ranked[m - num :]}


def official_swap(sets: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The official exp7.2 mapping: the set labelled "median" holds the least similar samples and "hard" the median
    ones (its caller unpacks (easy, mid, hard) as (easy, hard, mid); paper-protocols §4.2 item 3)."""
    out = dict(sets)
    out["median"], out["hard"] = sets["hard"], sets["median"]
    return out


def contradictory_sets(
    similarity: np.ndarray, targets: Sequence[int], num: int, candidates: Sequence[np.ndarray] | None = None
) -> tuple[list[np.ndarray], list[int]]:
    """Per target c, the ``num`` candidates j with the most negative kappa(t_c, j) < 0, without repeats.

    ``similarity`` is (C, N): row c holds kappa(t_c, j) for the N samples of the pool (a class, or the whole training
    set); ``targets`` are the targets' positions in that pool (never chosen); ``candidates[c]`` restricts target c to
    some pool positions (default: all). Targets are served in order; a sample already taken by an earlier target is
    skipped. Returns the chosen positions per target (fewer than ``num`` where fewer negatives exist) and the number
    of negative candidates each target had.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    taken = np.zeros(sim.shape[1], dtype=bool)
    taken[np.asarray(targets, dtype=np.int64)] = True
    chosen, available = [], []
    for c in range(sim.shape[0]):
        pool = np.arange(sim.shape[1]) if candidates is None else np.asarray(candidates[c], dtype=np.int64)
        neg = pool[(sim[c, pool] < 0) & ~taken[pool]]
        available.append(int(len(neg)))
        neg = neg[np.lexsort((neg, sim[c, neg]))][:num]
        taken[neg] = True
        chosen.append(neg)
    return chosen, available


def label_matched_sets(
    labels: np.ndarray, company: Sequence[np.ndarray], exclude: Sequence[int], seed: int
) -> list[np.ndarray]:
    """A control for a company that changes the training set's label mix: per target, random training samples
    with the same labels, as many of each label as in its company (e.g. the contradictory set, drawn from the
    whole training set, mostly carries other labels than its target).

    ``labels`` (N,) are the training labels, ``company[c]`` the positions of target c's company, ``exclude`` the
    positions never drawn (the targets). Draws are without replacement across all targets (no sample serves two),
    uniform among the remaining samples of each label, from ``numpy.random.default_rng(seed)``; per target the
    labels are served in ascending order. Returns the drawn positions per target (sorted)."""
    labels = np.asarray(labels, dtype=np.int64)
    taken = np.zeros(len(labels), dtype=bool)
    taken[np.asarray(exclude, dtype=np.int64)] = True
    rng = np.random.default_rng(seed)
    out = []
    for comp in company:
        picks = []
        wanted = np.bincount(labels[np.asarray(comp, dtype=np.int64)], minlength=int(labels.max()) + 1)
        for lab in np.flatnonzero(wanted):
            pool = np.flatnonzero((labels == lab) & ~taken)
            if len(pool) < wanted[lab]:
                raise ValueError(f"label {lab}: only {len(pool)} samples left for a control of {wanted[lab]}")
            got = rng.choice(pool, size=int(wanted[lab]), replace=False)
            taken[got] = True
            picks.append(got)
        out.append(np.sort(np.concatenate(picks)) if picks else np.zeros(0, dtype=np.int64))
    return out


def label_purity(labels: np.ndarray, company: Sequence[np.ndarray], target_labels: Sequence[int]) -> float:
    """Share of the company's samples that carry their target's label (1 for the same-class sets)."""
    labels = np.asarray(labels, dtype=np.int64)
    same = [labels[np.asarray(c, dtype=np.int64)] == int(t) for c, t in zip(company, target_labels, strict=True)]
    n = sum(len(s) for s in same)
    return float(sum(int(s.sum()) for s in same) / n) if n else float("nan")


def training_set_positions(targets: Sequence[int], added: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One training set: the concatenation over classes of [t_c, its added samples] (positions in the training
    split), and where the targets sit in it."""
    parts, where, off = [], [], 0
    for t, a in zip(targets, added, strict=True):
        parts.append(np.concatenate([[int(t)], np.asarray(a, dtype=np.int64)]))
        where.append(off)
        off += len(parts[-1])
    return np.concatenate(parts).astype(np.int64), np.asarray(where, dtype=np.int64)


def target_l2_curves(
    make_model: Callable[[], nn.Module],
    train: Split,
    targets: np.ndarray,
    recipe: Recipe,
    seeds: Sequence[int],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    device: str | torch.device = "cpu",
    lockstep: bool = False,
) -> dict[str, np.ndarray]:
    """L2 error ‖softmax(z(x_t)) - e_{y_t}‖₂ of the targets per epoch, over independent runs.

    For each seed r: :func:`lpntk.train.seed_everything` (r), a fresh ``make_model()``, then
    :func:`lpntk.train.train_model` on ``train`` with seed r (the same r for every training set: paired runs).
    ``targets`` are positions in ``train``. Returns ``train`` (R, T, E): the training forward pass of epoch e (train
    mode, before that minibatch's update; the official record), and ``eval`` (R, T, E): an eval-mode pass after
    epoch e's updates. ``lockstep``: the R runs train together (:func:`lpntk.lockstep.train_lockstep`; the same runs
    up to floating-point summation order, except dropout masks, which are drawn in another order).
    """
    targets = np.asarray(targets, dtype=np.int64)
    xt = normalize(to_unit(train.x[targets]), mean, std)
    yt = train.y[targets]
    if lockstep:
        runs = train_lockstep(
            make_model, train, recipe, [int(s) for s in seeds], mean=mean, std=std, device=device, probe=xt
        )
        curves = []
        for r in runs:
            z = torch.from_numpy(r.dynamics["probe_logits"])  # (E, T, classes)
            curves.append(l2_error(z.flatten(0, 1), yt.repeat(len(z))).view(len(z), len(yt)).T.numpy())
        return {
            "train": np.stack([r.dynamics["l2"][targets] for r in runs]).astype(np.float32),
            "eval": np.stack(curves).astype(np.float32),
        }
    out_train, out_eval = [], []
    for seed in seeds:
        seed_everything(int(seed))
        model = make_model()
        model.to(device)
        evals: list[np.ndarray] = []

        def record_eval(row, model=model, evals=evals):
            was = model.training
            model.eval()
            with torch.no_grad():
                evals.append(l2_error(model(xt.to(device)), yt.to(device)).cpu().numpy())
            model.train(was)

        res = train_model(
            model, train, recipe, int(seed), mean=mean, std=std, device=device, record=True, on_epoch=record_eval
        )
        out_train.append(res.dynamics["l2"][targets])
        out_eval.append(np.stack(evals, axis=1))
    return {"train": np.stack(out_train).astype(np.float32), "eval": np.stack(out_eval).astype(np.float32)}


def curve_area(curves: np.ndarray) -> np.ndarray:
    """Area under L2-error curves with unit epoch width: the sum over the last axis (epochs), i.e. the learning
    difficulty LD of §1.7 of whatever the curve describes."""
    return np.asarray(curves, dtype=np.float64).sum(axis=-1)


def size_levels(pool_per_class: int, min_size: int = 1) -> list[int]:
    """Subset sizes of the quad-tree: pool, pool/4, ..., min_size (each a power of 4)."""

    def power_of_4(n):
        return n >= 1 and (n & (n - 1)) == 0 and (n.bit_length() - 1) % 2 == 0

    if not power_of_4(pool_per_class):
        raise ValueError(f"difficulty.size.pool_per_class must be a power of 4, got {pool_per_class}")
    if not power_of_4(min_size) or min_size > pool_per_class:
        raise ValueError(f"difficulty.size.min_size must be a power of 4 <= pool_per_class, got {min_size}")
    sizes, s = [], pool_per_class
    while s >= min_size:
        sizes.append(s)
        s //= 4
    return sizes


def quad_tree_subsets(pool: np.ndarray, size: int) -> list[np.ndarray]:
    """The quad-tree nodes of size ``size`` over ``pool`` (already in random order): consecutive blocks
    pool[k s:(k+1) s], k = 0 .. len(pool)/s - 1. Nodes of size s are the disjoint union of 4 nodes of size s/4."""
    pool = np.asarray(pool)
    if size < 1 or len(pool) % size:
        raise ValueError(f"size {size} does not divide the pool of {len(pool)}")
    return [pool[k * size : (k + 1) * size] for k in range(len(pool) // size)]


def learning_difficulty(
    make_model: Callable[[], nn.Module],
    train: Split | Sequence[Split],
    recipe: Recipe,
    seed: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    device: str | torch.device = "cpu",
    resume_path: str | os.PathLike | None = None,
) -> np.ndarray:
    """LD of every sample of ``train`` in one run from ``seed``: sum over epochs of the training-pass L2 error.
    ``resume_path``: where the run keeps a resumable state every ``recipe.resume_every`` epochs
    (:func:`lpntk.train.train_model`).

    ``train`` a sequence of K splits of one length: K runs from the same ``seed``, one per split, trained together
    (:func:`lpntk.lockstep.train_lockstep`); returns (K, n), row k the LD of split k's samples."""
    if not isinstance(train, Split):
        runs = train_lockstep(
            make_model, list(train), recipe, [int(seed)] * len(train), mean=mean, std=std, device=device,
            resume_path=resume_path,
        )  # fmt: skip
        return np.stack([curve_area(r.dynamics["l2"]) for r in runs])
    seed_everything(int(seed))
    model = make_model()
    res = train_model(
        model, train, recipe, int(seed), mean=mean, std=std, device=device, record=True, resume_path=resume_path
    )
    return curve_area(res.dynamics["l2"])


def pearson_matrix(values: np.ndarray) -> np.ndarray:
    """Pearson correlation between the columns of ``values`` (N, S); NaN where a column is constant."""
    v = np.asarray(values, dtype=np.float64)
    c = v - v.mean(axis=0)
    norm = np.sqrt((c * c).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (c.T @ c) / np.outer(norm, norm)
    r[~np.isfinite(r)] = np.nan
    return np.clip(r, -1.0, 1.0)


# ---------------------------------------------------------------------------------------------- the arms


@dataclass
class Company:
    """One arm: the samples added to each class's target (positions in the training split), by ranking and set."""

    ranking: str  # lpntk | cosine
    set: str  # easy | median | hard | contradictory | control
    picks: list[np.ndarray]

    @property
    def key(self) -> tuple[str, str]:
        return self.ranking, self.set


def choose_targets(grams: Sequence[ClassGram], rule: str, num: int) -> list[int]:
    """Per class the target's position within the class (:func:`lpntk.difficulty.choose_target`)."""
    targets = []
    for g in grams:
        if len(g) - 1 < num:
            raise ValueError(
                f"difficulty.num = {num} but class {g.label} has only {len(g)} training samples; lower difficulty.num"
            )
        if 3 * num > len(g) - 1:
            log.warning(
                "class %d: %d samples besides the target < 3 num = %d: the sets overlap", g.label, len(g) - 1, 3 * num
            )
        targets.append(choose_target(g.gram.astype(np.float64), rule))
    return targets


def draw_random_targets(grams: Sequence[ClassGram], count: int, seed: int, exclude: Sequence[int]) -> list[list[int]]:
    """Random targets for replication across targets: ``count`` targets stratified by class, G = count / C of each
    of the C classes, in G groups of one target per class (positions within the class).

    From ``numpy.random.default_rng(seed)``, class by class in label order: G samples drawn uniformly without
    replacement among the class's training samples other than ``exclude[c]`` (the rule's target, group 0 of the
    stage); group g takes the g-th draw of every class. ``count`` must be a multiple of C and G at most the class's
    size - 1. ``count`` = 0: no group.
    """
    c = len(grams)
    if count < 0 or (c and count % c):
        raise ValueError(
            f"difficulty.random_targets = {count} is not a multiple of the {c} classes (the random targets are drawn "
            f"stratified, random_targets / {c} per class); set it to a multiple of {c}, e.g. {c * max(1, count // c)}"
        )
    per_class = count // c if c else 0
    rng = np.random.default_rng(seed)
    draws = []
    for g, t in zip(grams, exclude, strict=True):
        pool = np.delete(np.arange(len(g)), int(t))
        if len(pool) < per_class:
            raise ValueError(
                f"difficulty.random_targets = {count} draws {per_class} targets per class, but class {g.label} has "
                f"only {len(pool)} samples besides its rule's target; lower difficulty.random_targets"
            )
        draws.append(rng.choice(pool, size=per_class, replace=False))
    return [[int(d[k]) for d in draws] for k in range(per_class)]


def ranked_companies(
    grams: Sequence[ClassGram], targets: Sequence[int], rankings: Sequence[str], num: int, swap: bool
) -> list[Company]:
    """The easy / median / hard sets of every class for each ranking (``swap``: the official exp7.2 mapping)."""
    out = []
    for ranking in rankings:
        chosen = {s: [] for s in ("easy", "median", "hard")}
        for g, t in zip(grams, targets, strict=True):
            sets = select_sets(target_similarity(g.gram.astype(np.float64), t, ranking), t, num)
            for s in chosen:
                chosen[s].append(g.position[sets[s]])
        if swap:
            chosen = official_swap(chosen)
        out += [Company(ranking, s, chosen[s]) for s in ("easy", "median", "hard")]
    return out


def contradictory_companies(
    pool: str,
    rankings: Sequence[str],
    num: int,
    grams: Sequence[ClassGram],
    targets: Sequence[int],
    similarity: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[list[Company], str, list[int]]:
    """The contradictory set per ranking (negative similarity, most negative first), from the whole training set
    (``similarity`` = (kappa, cos) of every target to every training sample) or the target's class; a note saying
    what was built, and the number of candidates per class."""
    if pool == "none":
        return [], "contradictory set not requested (difficulty.contradictory = none)", []
    out, available = [], []
    for ranking in rankings:
        if pool == "class":
            picks, available = [], []
            for g, t in zip(grams, targets, strict=True):
                values = target_similarity(g.gram.astype(np.float64), t, ranking)
                got, avail = contradictory_sets(values[None, :], [t], num)
                picks.append(g.position[got[0]])
                available += avail
        else:
            kappa, cos = similarity
            targets_pos = [int(g.position[t]) for g, t in zip(grams, targets, strict=True)]
            picks, available = contradictory_sets(cos if ranking == "cosine" else kappa, targets_pos, num)
        short = [c for c, a in enumerate(available) if a < num]
        if short:
            note = (
                f"contradictory set skipped: the targets of classes {short} have fewer than num = {num} samples "
                f"with negative lpNTK (pool: {pool}; candidates per class: {available})"
            )
            return [], note, available
        out.append(Company(ranking, "contradictory", picks))
    return out, f"contradictory set built from pool '{pool}' (candidates per class: {available})", available


def control_companies(
    contradictory: Sequence[Company], labels: np.ndarray, targets_pos: Sequence[int], seed: int
) -> list[Company]:
    """Per contradictory arm, the label-matched random control (:func:`lpntk.difficulty.label_matched_sets`)."""
    return [
        Company(c.ranking, "control", label_matched_sets(labels, c.picks, targets_pos, seed)) for c in contradictory
    ]

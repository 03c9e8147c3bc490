"""Data-pruning scores of the baselines (paper-protocols §4.5, §7 A11), from the reference runs' dynamics.

The official code has none of them (only the lpNTK clustering was released); they follow their papers:

* **EL2N** (Paul et al., NeurIPS 2021): EL2N(x, y) = E_seeds ‖softmax(z(x; w_t)) - e_y‖₂ at an early epoch t
  (eval mode, un-augmented input), the mean over independent training runs.
* **GraNd** (Paul et al., 2021): GraNd(x, y) = E_seeds ‖∇_w L(x, y; w_t)‖₂, the per-sample cross-entropy
  gradient norm over all parameters at epoch t (computed during training by
  :func:`lpntk.kernel.per_sample_grad_norms`), mean over runs.
* **Forgetting score** (Toneva et al., ICLR 2019): the number of forgetting events of a sample over training
  (correct at one presentation, incorrect at the next), mean over runs. A sample never classified correctly
  at any presentation counts as the most forgotten: it scores E, the number of recorded epochs, more than the
  at most floor(E/2) events of any learned sample.
* **Random**: seeded uniform scores in [0, 1); the top-k per class of them is the class-balanced uniform
  subset (the official code's "uniform" method).

Paul et al. average EL2N and GraNd over runs; here the pruning of retraining seed s reads the scores of training
run s alone (the functions below over that one run), as lpNTK's subsets come from run s's kernel, so that the spread
over seeds includes the selection's; the mean over runs is the scores stage's table of its own (``scores.seeds``).

All baselines keep the samples with the *highest* scores. Every array here is indexed by position in the
training split; the stage writes them keyed by original index.

The per-run scores are a dispatch table, :data:`SCORES` (name -> one run's dynamics and the score settings -> a
score per sample): :func:`score_table` computes every registered score, so a score of one's own
(:func:`register_score`, or :func:`lpntk.pruning.register_method` with ``score_fn``) becomes a column of the scores
stage's tables without further changes; :data:`SCORE_NAMES` lists the columns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .methods import NameView

__all__ = [
    "SCORE_NAMES",
    "SCORES",
    "ScoreFn",
    "register_score",
    "score_column",
    "el2n_scores",
    "grand_scores",
    "forgetting_scores",
    "random_scores",
    "el2n_of_run",
    "grand_of_run",
    "forgetting_of_run",
    "score_table",
]

#: (one training run's dynamics (:func:`lpntk.train.train_model`), the resolved score settings: ``el2n_epoch``,
#: ``grand_epoch``, ...) -> (N,) score of each training sample (the methods keep the highest)
ScoreFn = Callable[[Mapping[str, np.ndarray], Mapping[str, Any]], np.ndarray]
#: score name -> its per-run score; the scores table holds the mean over runs of each, and its std (``<name>_std``)
SCORES: dict[str, ScoreFn] = {}


def register_score(name: str) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator: register ``fn`` as the per-run score ``name`` (a column of the scores table; replaces any earlier)."""

    def deco(fn: ScoreFn) -> ScoreFn:
        SCORES[name] = fn
        return fn

    return deco


#: the scores table's score columns: every registered score, then ``random`` (a live view: it follows registrations)
SCORE_NAMES = NameView(lambda: (*SCORES, "random"))


def score_column(dynamics: Mapping[str, np.ndarray], key: str, epoch: int, *, source: str = "dynamics") -> np.ndarray:
    """The (N,) column of ``dynamics[key]`` (N, S) recorded after ``epoch`` (an entry of ``score_epochs``).

    Raises a ValueError naming ``train.score_epochs`` when the epoch was not recorded.
    """
    recorded = [int(e) for e in np.asarray(dynamics["score_epochs"]).ravel()]
    if int(epoch) not in recorded:
        raise ValueError(
            f"{key} at epoch {epoch} was not recorded in {source}: train.score_epochs = {recorded}. "
            f"Add {epoch} to train.score_epochs (and rerun training) or choose a recorded epoch"
        )
    return np.asarray(dynamics[key])[:, recorded.index(int(epoch))].astype(np.float64)


def el2n_scores(l2_per_seed: np.ndarray) -> np.ndarray:
    """EL2N = mean over seeds of ‖softmax(z(x)) - e_y‖₂; ``l2_per_seed`` is (seeds, N)."""
    return np.asarray(l2_per_seed, dtype=np.float64).mean(axis=0)


def grand_scores(grad_norm_per_seed: np.ndarray) -> np.ndarray:
    """GraNd = mean over seeds of ‖∇_w L(x, y)‖₂; ``grad_norm_per_seed`` is (seeds, N)."""
    return np.asarray(grad_norm_per_seed, dtype=np.float64).mean(axis=0)


def forgetting_scores(counts: np.ndarray, never_learned: np.ndarray, n_epochs: int | Sequence[int]) -> np.ndarray:
    """Forgetting score = mean over seeds of f_s(i), f_s(i) = forgetting events, or E_s if never learned.

    ``counts`` and ``never_learned`` are (seeds, N); ``n_epochs`` is E (per seed or shared). E exceeds the
    floor(E/2) events any learned sample can have, so never-learned samples rank as the most forgotten
    (Toneva et al. assign them infinitely many events; a finite value keeps the mean over seeds defined).
    """
    counts = np.asarray(counts, dtype=np.float64)
    never = np.asarray(never_learned, dtype=bool)
    if counts.shape != never.shape:
        raise ValueError(f"counts {counts.shape} and never_learned {never.shape} differ in shape")
    e = np.broadcast_to(np.asarray(n_epochs, dtype=np.float64).reshape(-1, 1), counts.shape)
    return np.where(never, e, counts).mean(axis=0)


@register_score("el2n")
def el2n_of_run(dynamics: Mapping[str, np.ndarray], settings: Mapping[str, Any]) -> np.ndarray:
    """EL2N of one run: ‖softmax(z(x)) - e_y‖₂ recorded after epoch ``settings["el2n_epoch"]``."""
    return score_column(dynamics, "el2n", settings["el2n_epoch"], source=settings.get("source", "dynamics"))


@register_score("grand")
def grand_of_run(dynamics: Mapping[str, np.ndarray], settings: Mapping[str, Any]) -> np.ndarray:
    """GraNd of one run: ‖∇_w L(x, y)‖₂ recorded after epoch ``settings["grand_epoch"]``."""
    return score_column(dynamics, "grand", settings["grand_epoch"], source=settings.get("source", "dynamics"))


@register_score("forgetting")
def forgetting_of_run(dynamics: Mapping[str, np.ndarray], settings: Mapping[str, Any]) -> np.ndarray:
    """f(i) of one run: its forgetting events, or E (the run's recorded epochs) if it was never learned."""
    e = float(np.asarray(dynamics["correct"]).shape[1])
    counts = np.asarray(dynamics["forgetting_count"], dtype=np.float64)
    return np.where(np.asarray(dynamics["never_learned"], dtype=bool), e, counts)


def random_scores(n: int, seed: int) -> np.ndarray:
    """Seeded uniform scores in [0, 1) (numpy PCG64 from ``seed``)."""
    return np.random.default_rng(int(seed)).random(int(n))


def score_table(
    dynamics: Sequence[Mapping[str, np.ndarray]],
    *,
    el2n_epoch: int,
    grand_epoch: int,
    random_seed: int,
    sources: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Every baseline score of every training sample from the dynamics of several seeds.

    Returns columns (N,) indexed by position in the training split: ``index`` (original), ``label``, every score
    of :data:`SCORES` (``el2n``, ``grand``, ``forgetting``, ...: the mean over runs), ``random``, the scores'
    standard deviations over seeds (``*_std``) and ``never_learned`` (share of seeds in which the sample was never
    learned). The runs must cover the same training split in the same order.
    """
    if not dynamics:
        raise ValueError("no training runs to compute scores from")
    sources = list(sources or [f"run {i}" for i in range(len(dynamics))])
    index, label = np.asarray(dynamics[0]["index"]), np.asarray(dynamics[0]["y"])
    for d, src in zip(dynamics[1:], sources[1:], strict=True):
        if not (np.array_equal(d["index"], index) and np.array_equal(d["y"], label)):
            raise ValueError(
                f"{src} covers a different training split (index/y differ from {sources[0]}); "
                f"rerun its training on the current prepared data"
            )
    per_run = {}  # score name -> (runs, N)
    for name, fn in SCORES.items():
        rows = []
        for d, src in zip(dynamics, sources, strict=True):
            settings = {"el2n_epoch": el2n_epoch, "grand_epoch": grand_epoch, "source": src}
            rows.append(np.asarray(fn(d, settings), dtype=np.float64).reshape(-1))
            if len(rows[-1]) != len(index):
                raise ValueError(f"score {name!r} of {src}: {len(rows[-1])} values for {len(index)} samples")
        per_run[name] = np.stack(rows)
    never = np.stack([np.asarray(d["never_learned"], dtype=bool) for d in dynamics])
    return {
        "index": index.astype(np.int64),
        "label": label.astype(np.int64),
        **{name: runs.mean(axis=0) for name, runs in per_run.items()},
        "random": random_scores(len(index), random_seed),
        **{f"{name}_std": runs.std(axis=0) for name, runs in per_run.items()},
        "never_learned": never.mean(axis=0),
    }

"""The paper's claims, tested by a design declared before the run: per claim and dataset one primary comparison,
a secondary family under Holm, and exploratory rows that never count in the headline (``docs/statistics.md``).

The claims (from the slides, ``docs/paper/seed-slides.txt``):

* **C1** a target is easier to learn (lower area under its L2-error curve) with more interchangeable company. Unit:
  the *target* (targets drawn at random, stratified by class, besides the paper's ``max_self`` ones); per target the
  mean over runs of the arm's area, d_t = area(median) - area(easy) and area(hard) - area(median). Primary: both
  orderings under the declared ranking, intersection-union of two paired t-tests across targets. Secondary (Holm):
  the other ranking's orderings, contradictory - control under each ranking. Exploratory: the same comparisons
  across the runs of the paper's targets (runs share their targets: not independent replicates).
* **C2** eNTK predicts forgetting events better than lpNTK. Unit: the seed. Metric: the Matthews correlation over the
  window's (step, candidate) pairs, whose trivial predictors (no event, every candidate, random at the base rate)
  all score 0. Primary: MCC(eNTK) - MCC(lpNTK) in the declared recipe and decision space; a seed with fewer than
  ``min_events`` true events makes the row inconclusive. Secondary: the other recipes and spaces. Exploratory: the
  pooled and the slides' stepwise F1 (a metric the no-event predictor scores up to 98 on).
* **C3a** removing lpNTK-redundant samples does not hurt: non-inferiority of lpNTK at the declared kept fraction to
  the full set, margin declared in % points of test accuracy. Unit: the retraining seed. Secondary: the other kept
  fractions (Holm on the non-inferiority p).
* **C3b** at the same kept fraction lpNTK beats EL2N, GraNd, forgetting and random. Primary: lpNTK against all four at
  the declared kept fraction, intersection-union. Secondary: every other (kept fraction, baseline) pair, Holm.
* **C4** with little data, removing the samples of small lpNTK clusters beats removing as many random ones. Primary:
  the declared data fraction, removed share and kernel. Secondary: the others, Holm.
* **C5** a sample's learning difficulty agrees less across training sets the more they differ in size. Unit: the
  class; per class the drop r(LD at s0, at s1) - r(at s0, at s_min) in Pearson correlation; primary: paired t across
  classes. Exploratory: the pooled drop with a bootstrap interval over samples.

Every row says its unit, test, role, raw and (secondary) Holm-adjusted p, and the trivial baseline beside the metric.
"""

from ..inference import CONTRADICTED, INCONCLUSIVE, NOT_MEASURED, PROVISIONAL, SUPPORTED
from ._difficulty import difficulty_claims
from ._family import (
    CLAIM_STAGE,
    CLAIM_TEXT,
    COMPONENT,
    DEFAULT_DESIGN,
    EXPLORATORY,
    NOT_RUN,
    PRIMARY,
    SECONDARY,
    Claim,
    check_dropped,
    design_for,
    headlines,
    not_run_claims,
    settle,
)
from ._forgetting import forgetting_claims
from ._ld_size import ld_size_claims
from ._pruning import pruning_claims, small_cluster_claims

__all__ = [
    "CLAIM_TEXT",
    "CLAIM_STAGE",
    "DEFAULT_DESIGN",
    "Claim",
    "design_for",
    "difficulty_claims",
    "forgetting_claims",
    "pruning_claims",
    "small_cluster_claims",
    "ld_size_claims",
    "not_run_claims",
    "settle",
    "headlines",
    "check_dropped",
    "PRIMARY",
    "COMPONENT",
    "SECONDARY",
    "EXPLORATORY",
    "SUPPORTED",
    "CONTRADICTED",
    "INCONCLUSIVE",
    "PROVISIONAL",
    "NOT_MEASURED",
    "NOT_RUN",
]

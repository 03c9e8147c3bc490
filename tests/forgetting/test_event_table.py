"""The forgetting event table from correctness sequences, with all four transitions: correct -> correct,
correct -> incorrect (a forgetting event), incorrect -> correct (a learning event, not a forgetting one),
incorrect -> incorrect. The per-presentation table (lpntk.dynamics.presentation_forgetting, what training records
and the forgetting score reads) and the per-step rule on logits (lpntk.forgetting.forgetting_events) against
tallies written out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lpntk.dynamics import presentation_forgetting
from lpntk.forgetting import confusion_counts, forgetting_events
from lpntk.scores import forgetting_of_run

# correctness at the presentations of E = 8 epochs, one row per sample
CORRECT = np.array(
    [
        [1, 1, 0, 0, 1, 0, 1, 1],  # every transition
        [0, 0, 1, 1, 1, 0, 0, 1],  # learned late, forgotten once, relearned
        [0, 0, 0, 0, 0, 0, 0, 0],  # never learned
        [1, 1, 1, 1, 1, 1, 1, 1],  # always right
        [1, 0, 1, 0, 1, 0, 1, 0],  # the most events a learned sample can have: floor(E / 2) = 4
        [0, 1, 0, 1, 0, 1, 0, 1],  # alternating from wrong: 3
        [0, 0, 0, 0, 0, 0, 0, 1],  # learned at the last presentation
    ],
    dtype=bool,
)
# transitions e-1 -> e, tallied by hand: (c->c, c->i, i->c, i->i); each row sums to E - 1 = 7
TRANSITIONS = [
    (2, 2, 2, 1),  # cc, ci, ii, ic, ci, ic, cc
    (2, 1, 2, 2),  # ii, ic, cc, cc, ci, ii, ic
    (0, 0, 0, 7),
    (7, 0, 0, 0),
    (0, 4, 3, 0),
    (0, 3, 4, 0),
    (0, 0, 1, 6),
]
# the epochs at which each forgetting event (c->i) happens, by hand
EVENT_EPOCHS = [[2, 5], [5], [], [], [1, 3, 5, 7], [2, 4, 6], []]
FIRST_LEARNED = [0, 2, -1, 0, 0, 1, 7]


def test_hand_tallies_cover_every_transition():
    # the hand tallies themselves: every kind of transition occurs, and each row accounts for its 7 transitions
    assert all(sum(t) == CORRECT.shape[1] - 1 for t in TRANSITIONS)
    assert all(sum(t[k] for t in TRANSITIONS) > 0 for k in range(4))
    assert [len(e) for e in EVENT_EPOCHS] == [t[1] for t in TRANSITIONS]


def test_presentation_table_by_hand():
    f = presentation_forgetting(CORRECT)
    assert f["events"].shape == CORRECT.shape and f["events"].dtype == bool
    assert [np.flatnonzero(row).tolist() for row in f["events"]] == EVENT_EPOCHS
    assert not f["events"][:, 0].any()  # nothing precedes the first presentation
    # only c->i counts: neither learning (i->c) nor staying wrong (i->i) is forgetting
    assert f["count"].tolist() == [t[1] for t in TRANSITIONS]
    assert f["first_learned"].tolist() == FIRST_LEARNED
    assert f["never_learned"].tolist() == [False, False, True, False, False, False, False]


def test_forgetting_score_of_the_table():
    # the score of one run: the events, or E = 8 for the never-learned sample (above the 4 of any learned one)
    f = presentation_forgetting(CORRECT)
    dyn = {"correct": CORRECT, "forgetting_count": f["count"], "never_learned": f["never_learned"]}
    np.testing.assert_array_equal(forgetting_of_run(dyn, {}), [2, 1, 8, 0, 4, 3, 0])


K = 3


def _logits(label: int, correct: bool) -> torch.Tensor:
    """Logits whose argmax is ``label`` when correct, another class otherwise (no ties)."""
    z = torch.zeros(K, dtype=torch.float64)
    z[label if correct else (label + 1) % K] = 2.0
    return z


def test_step_rule_on_logits_all_four_transitions():
    y = torch.tensor([0, 0, 0, 0, 1, 2])
    z_before = torch.tensor([[2, 0, 0], [2, 0, 0], [0, 2, 0], [0, 2, 0], [0, 3, 1], [1, 0, 3]], dtype=torch.float64)
    z_after = torch.tensor(
        [
            [1, 0, 0],  # c -> c (the margin shrinks, the argmax stays)
            [0, 1, 0],  # c -> i: forgotten
            [2, 0, 0],  # i -> c: learned, not forgotten
            [0, 0, 2],  # i -> i, to another wrong class: not forgotten
            [0, 1, 3],  # c -> i: forgotten
            [0, 0, 3],  # c -> c
        ],
        dtype=torch.float64,
    )
    got = forgetting_events(z_before, z_after, y)
    assert got.tolist() == [False, True, False, False, True, False]
    # scored against a prediction flagging samples 1 and 2: TP {1}, FP {2}, FN {4}, TN {0, 3, 5}
    pred = torch.tensor([False, True, True, False, False, False])
    assert confusion_counts(got, pred) == {"tp": 1, "fp": 1, "tn": 3, "fn": 1}


@pytest.mark.parametrize("row", range(len(CORRECT)))
def test_step_rule_reproduces_the_table(row):
    # the same correctness sequence as logits, step by step: the step rule finds the table's events
    label = row % K
    y = torch.tensor([label])
    zs = [_logits(label, bool(c)).unsqueeze(0) for c in CORRECT[row]]
    steps = [bool(forgetting_events(zs[e - 1], zs[e], y)[0]) for e in range(1, len(zs))]
    assert [e for e, hit in enumerate(steps, start=1) if hit] == EVENT_EPOCHS[row]

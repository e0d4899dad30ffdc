"""SafeDrug metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrx.medrx.metrics import average_precision, ddi_matrix, evaluate, visit_scores


def test_visit_scores_hand_computed():
    assert visit_scores({0, 1}, {0, 2}) == pytest.approx((1 / 3, 1 / 2, 1 / 2, 1 / 2))
    assert visit_scores({2}, {2, 3}) == pytest.approx((1 / 2, 1 / 2, 1.0, 2 / 3))
    assert visit_scores({1, 3}, set()) == (0.0, 0.0, 0.0, 0.0)
    assert visit_scores(set(), set()) == (0.0, 0.0, 0.0, 0.0)


def test_average_precision_hand_computed():
    # ranking: 0 (T), 2 (F), 1 (T), 3 (F): AP = 0.5*1 + 0.5*(2/3)
    assert average_precision(np.array([1, 1, 0, 0]), np.array([0.9, 0.2, 0.6, 0.1])) == (
        pytest.approx(0.5 + 1 / 3)
    )
    # all scores tied: one threshold, precision 1/2 at recall 1
    assert average_precision(np.array([0, 1, 0, 1]), np.zeros(4)) == pytest.approx(0.5)
    assert average_precision(np.array([0, 0, 0]), np.array([0.3, 0.2, 0.1])) == 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 10_000)), min_size=1, max_size=30,
                unique_by=lambda t: t[1]))
def test_average_precision_matches_rank_definition_without_ties(items):
    y = np.array([t for t, _ in items], dtype=int)
    s = np.array([v for _, v in items], dtype=float)
    if y.sum() == 0:
        assert average_precision(y, s) == 0.0
        return
    order = np.argsort(-s)
    hits, precisions = 0, []
    for rank, i in enumerate(order, 1):
        if y[i]:
            hits += 1
            precisions.append(hits / rank)
    assert average_precision(y, s) == pytest.approx(np.mean(precisions))


def test_evaluate_patient_then_global_average_and_pooled_ddi():
    a_true = np.array([[1, 1, 0, 0], [0, 0, 1, 0]])
    a_prob = np.array([[0.9, 0.2, 0.6, 0.1], [0.1, 0.1, 0.7, 0.8]])
    b_true = np.array([[0, 1, 0, 1]])
    b_prob = np.zeros((1, 4))
    ddi = ddi_matrix(["A", "B", "C", "D"], {frozenset(("A", "C"))})
    m = evaluate([(a_true, a_prob), (b_true, b_prob)], ddi)
    # patient A: J (1/3, 1/2), AP (5/6, 1/2), F1 (1/2, 2/3), P (1/2, 1/2), R (1/2, 1)
    # patient B: J 0, AP 1/2, F1 0, P 0, R 0
    assert m.jaccard == pytest.approx((5 / 12 + 0) / 2)
    assert m.prauc == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m.f1 == pytest.approx((7 / 12 + 0) / 2)
    assert m.precision == pytest.approx(1 / 4)
    assert m.recall == pytest.approx(3 / 8)
    # predicted sets {A,C} (1 pair, interacting), {C,D} (1 pair), {}: pooled 1/2
    assert m.ddi_rate == pytest.approx(0.5)
    assert m.avg_meds == pytest.approx(4 / 3)
    assert (m.patients, m.visits) == (2, 3)


def test_patient_average_differs_from_visit_average():
    # one patient with 3 perfect visits, one with 1 wrong visit: patient mean 0.5, visit mean 0.75
    good = (np.eye(3), np.eye(3))
    bad = (np.array([[1, 0, 0]]), np.array([[0, 1, 0]]))
    assert evaluate([good, bad]).jaccard == pytest.approx(0.5)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError):
        evaluate([(np.zeros((2, 3)), np.zeros((2, 4)))])

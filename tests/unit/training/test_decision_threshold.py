"""training.metrics.decision_threshold: the confidence cut chosen on validation, used by abstain."""

from __future__ import annotations

import numpy as np

from training.metrics import decision_threshold, softmax


def test_the_cut_keeps_the_most_texts_that_are_right_often_enough() -> None:
    # Top probabilities 0.95, 0.9, 0.8, 0.7, 0.6, 0.55 (labels 0/1); the 0.7 and 0.55 rows are wrong.
    top = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.55])
    probs = np.stack([top, 1 - top], axis=1)
    truth = np.array([0, 0, 0, 1, 0, 1])
    # Kept above 0.8: 3/3 right; above 0.7: 3/4; above 0.6: 4/5; above 0.55: 4/6.
    assert decision_threshold(truth, probs, target_accuracy=0.8) == 0.6
    assert decision_threshold(truth, probs, target_accuracy=0.9) == 0.8
    assert decision_threshold(truth, probs, target_accuracy=0.5) == 0.55  # every row kept


def test_no_cut_when_even_the_most_confident_text_is_wrong() -> None:
    probs = np.array([[0.1, 0.9], [0.6, 0.4]])
    assert decision_threshold(np.array([0, 1]), probs) is None
    assert decision_threshold(np.array([], dtype=int), np.zeros((0, 2))) is None


def test_a_cut_never_splits_texts_of_equal_confidence() -> None:
    # Two rows at 0.7, one right and one wrong: keeping only the right one is not a cut a threshold makes.
    probs = np.array([[0.9, 0.1], [0.7, 0.3], [0.3, 0.7]])
    truth = np.array([0, 0, 0])
    assert decision_threshold(truth, probs, target_accuracy=0.9) == 0.9


def test_softmax_rows_sum_to_one_for_large_logits() -> None:
    probs = softmax(np.array([[1000.0, 1001.0], [0.0, 0.0]]))
    assert np.allclose(probs.sum(axis=1), 1.0) and probs[0, 1] > probs[0, 0] and np.isclose(probs[1, 0], 0.5)

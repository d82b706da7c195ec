import numpy as np
import pytest

from fastdup_ray.actions.evaluate import (
    pair_metrics,
    precision_recall_at,
    precision_recall_curve,
)


def test_perfect_ranking():
    m = pair_metrics(np.array([0.9, 0.8, 0.3, 0.2]), np.array([1, 1, 0, 0]))
    assert m.average_precision == pytest.approx(1.0)
    assert m.best_f1 == pytest.approx(1.0) and m.best_f1_threshold == pytest.approx(0.8)
    assert m.recall_at_precision == 1.0


def test_hand_computed_average_precision():
    # ranks: P, N, P, N -> AP = (1/1 + 2/3) / 2
    m = pair_metrics(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0]))
    assert m.average_precision == pytest.approx((1 + 2 / 3) / 2)


def test_unscored_positives_lower_recall():
    _, precision, recall = precision_recall_curve(np.array([0.9]), np.array([1]), total_positives=4)
    assert precision[-1] == 1.0 and recall[-1] == 0.25


def test_ties_enter_together():
    thresholds, precision, _ = precision_recall_curve(np.array([0.5, 0.5]), np.array([1, 0]))
    assert list(thresholds) == [0.5] and precision[0] == 0.5


def test_precision_recall_at_threshold():
    assert precision_recall_at(np.array([0.9, 0.8, 0.1]), np.array([1, 0, 1]), 0.5) == (0.5, 0.5)


def test_component_purity():
    from fastdup_ray.actions.evaluate import component_purity

    labels = np.array([0, 0, 0, 3, 3, 5])
    groups = np.array([1, 1, 2, 7, 7, 9])
    assert component_purity(labels, groups) == pytest.approx(5 / 6)

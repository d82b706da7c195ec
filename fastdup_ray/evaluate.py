"""Evaluation against ground truth: how well do scored pairs separate true duplicates?

Plain functions on arrays of pair scores and labels, the way imagededup reports
near-duplicate retrieval: average precision, best F1, recall at a precision floor,
precision/recall at a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairMetrics:
    average_precision: float
    best_f1: float
    best_f1_threshold: float
    recall_at_precision: float  # best recall with precision >= the floor asked for
    threshold_at_precision: float  # the lowest threshold that keeps that precision


def precision_recall_curve(scores: np.ndarray, is_duplicate: np.ndarray, total_positives: int | None = None):
    """Precision and recall of "score >= t" for every distinct score t, thresholds descending.

    ``total_positives`` counts true pairs that were never scored too (they lower recall).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(is_duplicate, dtype=bool)
    total = int(labels.sum()) if total_positives is None else int(total_positives)
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    true_pos = np.cumsum(labels)
    # Evaluate only at the last position of each run of equal scores: ties go in together.
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    thresholds = scores[last_of_tie]
    tp = true_pos[last_of_tie]
    kept = np.flatnonzero(last_of_tie) + 1
    precision = tp / kept
    recall = tp / total if total else np.zeros_like(precision)
    return thresholds, precision, recall


def pair_metrics(scores: np.ndarray, is_duplicate: np.ndarray, total_positives: int | None = None, precision_floor: float = 0.95) -> PairMetrics:
    thresholds, precision, recall = precision_recall_curve(scores, is_duplicate, total_positives)
    if len(thresholds) == 0:
        return PairMetrics(0.0, 0.0, 1.0, 0.0, 1.0)
    # Step-wise AP: sum of precision at each threshold times the recall it adds.
    recall_gain = np.diff(np.r_[0.0, recall])
    average_precision = float(np.sum(precision * recall_gain))
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=(precision + recall) > 0)
    best = int(np.argmax(f1))
    meets = precision >= precision_floor
    if meets.any():
        candidates = np.flatnonzero(meets)
        pick = candidates[np.argmax(recall[candidates])]
        recall_at, threshold_at = float(recall[pick]), float(thresholds[pick])
    else:
        recall_at, threshold_at = 0.0, 1.0
    return PairMetrics(average_precision, float(f1[best]), float(thresholds[best]), recall_at, threshold_at)


def precision_recall_at(scores: np.ndarray, is_duplicate: np.ndarray, threshold: float, total_positives: int | None = None) -> tuple[float, float]:
    """Precision and recall of the pairs scoring >= threshold."""
    labels = np.asarray(is_duplicate, dtype=bool)
    total = int(labels.sum()) if total_positives is None else int(total_positives)
    chosen = np.asarray(scores) >= threshold
    found = int(labels[chosen].sum())
    precision = found / int(chosen.sum()) if chosen.any() else 1.0
    recall = found / total if total else 0.0
    return precision, recall

"""Evaluation against ground truth: how well do scored pairs separate true duplicates?

Plain functions on arrays of pair scores and labels, the way imagededup reports
near-duplicate retrieval: average precision, best F1, recall at a precision floor,
precision/recall at a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastdup_ray.errors import InputError
from fastdup_ray.rundir import layout, results


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
    if len(scores) == 0:  # no pair scored (one image): no threshold to evaluate
        return scores, scores.copy(), scores.copy()
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


def pair_metrics(
    scores: np.ndarray,
    is_duplicate: np.ndarray,
    total_positives: int | None = None,
    precision_floor: float = 0.95,
) -> PairMetrics:
    thresholds, precision, recall = precision_recall_curve(scores, is_duplicate, total_positives)
    if len(thresholds) == 0:
        return PairMetrics(0.0, 0.0, 1.0, 0.0, 1.0)
    # Step-wise AP: sum of precision at each threshold times the recall it adds.
    recall_gain = np.diff(np.r_[0.0, recall])
    average_precision = float(np.sum(precision * recall_gain))
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(precision),
        where=(precision + recall) > 0,
    )
    best = int(np.argmax(f1))
    meets = precision >= precision_floor
    if meets.any():
        candidates = np.flatnonzero(meets)
        pick = candidates[np.argmax(recall[candidates])]
        recall_at, threshold_at = float(recall[pick]), float(thresholds[pick])
    else:
        recall_at, threshold_at = 0.0, 1.0
    return PairMetrics(average_precision, float(f1[best]), float(thresholds[best]), recall_at, threshold_at)


def precision_recall_at(
    scores: np.ndarray, is_duplicate: np.ndarray, threshold: float, total_positives: int | None = None
) -> tuple[float, float]:
    """Precision and recall of the pairs scoring >= threshold."""
    labels = np.asarray(is_duplicate, dtype=bool)
    total = int(labels.sum()) if total_positives is None else int(total_positives)
    chosen = np.asarray(scores) >= threshold
    found = int(labels[chosen].sum())
    precision = found / int(chosen.sum()) if chosen.any() else 1.0
    recall = found / total if total else 0.0
    return precision, recall


def same_group_pairs(groups: np.ndarray) -> int:
    """How many pairs of images share a group: the true pairs of a ground truth."""
    _, sizes = np.unique(groups, return_counts=True)
    return int((sizes * (sizes - 1) // 2).sum())


def component_purity(labels: np.ndarray, groups: np.ndarray) -> float:
    """Share of images whose component's most common ground-truth group is their own
    (size-weighted purity; singletons are trivially pure)."""
    if len(labels) == 0:
        return 1.0
    pure = 0
    order = np.lexsort((groups, labels))
    labels, groups = labels[order], groups[order]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    for start, stop in zip(starts, np.r_[starts[1:], len(labels)]):
        _, counts = np.unique(groups[start:stop], return_counts=True)
        pure += counts.max()
    return pure / len(labels)


def read_ground_truth(path: str) -> dict[str, str]:
    """filename -> group of a ground-truth CSV (columns ``filename,group``)."""
    import polars as pl

    try:
        truth = pl.read_csv(path, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise InputError(f"cannot read the ground truth {path}: {reason}") from None
    if not {"filename", "group"} <= set(truth.columns):
        raise InputError(f"{path} needs columns filename,group (has {','.join(truth.columns)})")
    return dict(zip(truth["filename"], truth["group"]))


def require_run_outputs(work: Path) -> dict:
    """The run's config.json, once the files evaluation reads are known to be there."""
    if not work.is_dir():
        raise InputError(f"no finished run in {work}: no such folder")
    missing = [] if results.has_config(str(work)) else [layout.CONFIG_FILE]
    # The tables may be CSVs or, for a big run, Parquet parts: results.py knows both.
    missing += [
        name
        for name in (layout.SIMILARITY_FILE, layout.CONNECTED_COMPONENTS_FILE)
        if not results.has_table(str(work), name)
    ]
    if missing:
        raise InputError(
            f"no finished run in {work}: {', '.join(missing)} missing (run_mode 0 or 2 writes them)"
        )
    return results.read_config(str(work))


def evaluate_run(work_dir: str, ground_truth_csv: str) -> dict[str, float]:
    """Score a finished run against ground-truth groups (CSV with ``filename`` and
    ``group`` columns; images alone in their group may be left out).

    Returns precision, recall and F1 of similarity.csv at the run's threshold, average
    precision over every kNN pair of the run's features (true pairs never scored count as
    misses), and the purity of connected components.
    """
    from fastdup_ray.reduce.index import knn_edges
    from fastdup_ray.reduce.outputs import unique_pairs
    from fastdup_ray.rundir.shards import load_binary_features

    work = Path(work_dir)
    config = require_run_outputs(work)
    group_of = read_ground_truth(ground_truth_csv)
    names, features = load_binary_features(work)
    # Images without a listed group are groups of their own.
    groups = np.array([group_of.get(name, f"__alone__{i}") for i, name in enumerate(names)], dtype=object)
    _, group_ids = np.unique(groups.astype(str), return_inverse=True)
    total_positives = same_group_pairs(group_ids)

    src, dst, sim = knn_edges(features, config["nearest_neighbors_k"])
    a, b, sim = unique_pairs(src, dst, sim)
    same = group_ids[a] == group_ids[b]
    metrics = pair_metrics(sim, same, total_positives)

    similarity = results.read_table(str(work), layout.SIMILARITY_FILE, ("from", "to"))
    index = {name: i for i, name in enumerate(names)}
    unknown = set(similarity["from"]).union(similarity["to"]).difference(index)
    if unknown:
        raise InputError(
            f"{work / layout.SIMILARITY_FILE} names {len(unknown)} images that are not in the run's "
            f"features (e.g. {min(unknown)})"
        )
    found = np.array(
        [group_ids[index[f]] == group_ids[index[t]] for f, t in zip(similarity["from"], similarity["to"])],
        dtype=bool,
    )
    precision = float(found.mean()) if len(found) else 1.0
    recall = float(found.sum()) / total_positives if total_positives else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    # Parts of a big run need not come in __id order; labels must line up with the names.
    labels = (
        results.read_table(str(work), layout.CONNECTED_COMPONENTS_FILE, ("__id", "component_id"))
        .sort("__id")["component_id"]
        .to_numpy()
    )
    return {
        "threshold": float(config["threshold"]),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "average_precision": metrics.average_precision,
        "best_f1": metrics.best_f1,
        "component_purity": component_purity(labels, group_ids),
        "true_pairs": total_positives,
    }

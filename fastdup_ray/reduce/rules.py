"""The reduce's rule book: each rule written once, called by the in-memory and the
distributed reduce alike (and by run modes 3/4 and the benchmarks).

Every table has a total order. A pair's similarity is what similarity.csv writes: the
cosine of the two unit vectors computed in float64 and rounded to
``SIMILARITY_DECIMALS`` (then clipped to [0, 1] where a table shows it). Neighbours are
ranked, pairs selected and outliers cut on that value, ties broken by row id, so which of
several equally similar neighbours makes the top-k never depends on the engine, the
strategy or a float32 kernel's summation order.
"""

from __future__ import annotations

import math

import numpy as np

SIMILARITY_DECIMALS = 6
# How far a float32 score (faiss, a float32 matrix product) may stray from the float64
# cosine of unit vectors: float32 sums err by about sqrt(d) * 2**-24, 3e-6 at d=2048.
# Candidates within this of the k-th best float32 score are rescored before the cut.
FLOAT32_SLACK = 1e-5
# Rows of (candidates x d) float64 rescored at once: memory stays near 32 MiB.
RESCORE_BUDGET = 1 << 22

# Pagerank in GraphLab/Turi's convention (graph.pagerank). A component iterates until
# its largest change is below the tolerance: tight enough that two runs stopping one
# iteration apart still agree to 1e-6.
PAGERANK_RESET = 0.15
PAGERANK_TOLERANCE = 1e-7
PAGERANK_MAX_ITERATIONS = 200

# Table sort orders (columns, descending), as both reduces write them. similarity.csv's
# ties go by row ids, carried in the distributed parts as from_id/to_id.
SIMILARITY_ORDER = (["distance", "from_id", "to_id"], [True, False, False])
COMPONENT_INFO_ORDER = (["Count", "component_id"], [True, False])
ROW_ORDER = (["__id"], [False])


def rounded(sim: np.ndarray) -> np.ndarray:
    """Similarities rounded as similarity.csv writes them, in float32 (which holds each
    such value closely enough to round back to it). Not clipped: negative cosines keep
    their order, so a search that stops early never hides a better one."""
    return np.round(np.asarray(sim, dtype=np.float64), SIMILARITY_DECIMALS).astype(np.float32)


def csv_values(sim: np.ndarray) -> np.ndarray:
    """The float64 decimals a similarity column is written (and compared) as: clipped to
    [0, 1], the range of fastdup's ``distance``."""
    values = np.clip(np.asarray(sim, dtype=np.float32).astype(np.float64), 0.0, 1.0)
    return np.round(values, SIMILARITY_DECIMALS)


def at_least(sim: np.ndarray, threshold: float) -> np.ndarray:
    """Which similarities pass ``threshold`` as the CSV shows them (0.9 passes 0.9, though
    float32 holds it as 0.8999999762)."""
    return csv_values(sim) >= threshold


def pair_similarity(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The rule's similarity of each query (m x d) with each of its candidates
    (m x c x d): the float64 cosine, rounded."""
    exact = np.einsum("rcd,rd->rc", candidates, queries, dtype=np.float64)
    return rounded(exact)


def joined_threshold(threshold: float, ccthreshold: float) -> float:
    """The run guide builds components from similarity.csv's pairs: an edge joins two
    images only when it is at or above both threshold and ccthreshold."""
    return max(threshold, ccthreshold)


def outlier_count(lower_threshold: float, edges: int, images: int) -> int:
    """outliers.csv's rows: the lower_threshold fraction of the kNN edges computed, at
    most one per image that has a neighbour."""
    return min(images, math.ceil(lower_threshold * edges))


def best_first(sims: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's best k (similarity descending, then smaller id; -1 ids last), as
    (sims, ids) of width min(k, columns)."""
    if sims.shape[1] == 0:
        return sims.astype(np.float32), ids
    order = np.lexsort((np.where(ids >= 0, ids, np.iinfo(np.int64).max), -sims), axis=1)[:, :k]
    return np.take_along_axis(sims, order, axis=1).astype(np.float32), np.take_along_axis(ids, order, axis=1)


def top_k_rescored(
    approx: np.ndarray, ids: np.ndarray, vectors_of, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The rule's top-k of each row from float32 scores of its candidates.

    ``approx`` (m x c): float32 scores, -inf where a candidate is unusable (missing, the
    query itself); ``ids`` (m x c) their ids; ``vectors_of(rows, cols)`` the candidates'
    unit vectors (len x d). Every candidate within FLOAT32_SLACK of the row's k-th best
    score is rescored by pair_similarity, so none that the rule would rank in the top k
    is cut by a float32 rounding. Returns (sims, ids), m x k, -inf / -1 where fewer."""
    m, c = approx.shape
    out_sims = np.full((m, k), -np.inf, dtype=np.float32)
    out_ids = np.full((m, k), -1, dtype=np.int64)
    if m == 0 or c == 0 or k == 0:
        return out_sims, out_ids
    width = min(k, c)
    if width < c:
        # One partition gives the best k and the next one: a row whose k+1-th best ties
        # its k-th within the slack (copies of one image; rare) is cut again, wider.
        part = np.argpartition(-approx, width, axis=1)[:, : width + 1]
        values = np.take_along_axis(approx, part, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        top = np.take_along_axis(part, order[:, :width], axis=1)
        kth = np.take_along_axis(values, order[:, width - 1 : width], axis=1)[:, 0]
        after = np.take_along_axis(values, order[:, width:], axis=1)[:, 0]
        wide = np.isfinite(after) & (after >= kth - FLOAT32_SLACK)
    else:
        top = np.broadcast_to(np.arange(c), (m, c))
        wide = np.zeros(m, dtype=bool)
    groups = [(np.flatnonzero(~wide), top[~wide])]
    if wide.any():
        rows = np.flatnonzero(wide)
        kth = kth[rows]
        window = approx[rows] >= (kth - FLOAT32_SLACK)[:, None]
        size = int(window.sum(axis=1).max())
        cols = (
            np.argpartition(-np.where(window, approx[rows], -np.inf), size - 1, axis=1)[:, :size]
            if size < c
            else np.broadcast_to(np.arange(c), (len(rows), c))
        )
        groups.append((rows, cols))
    for rows, cols in groups:
        _rescore_rows(approx, ids, vectors_of, queries, k, rows, cols, out_sims, out_ids)
    return out_sims, out_ids


def _rescore_rows(approx, ids, vectors_of, queries, k, rows, cols, out_sims, out_ids) -> None:
    """Rescore candidates ``cols`` of ``rows`` by the rule and write each row's top k."""
    d = queries.shape[1]
    step = max(1, RESCORE_BUDGET // max(1, cols.shape[1] * d))
    for start in range(0, len(rows), step):
        here, picked = rows[start : start + step], cols[start : start + step]
        usable = np.isfinite(np.take_along_axis(approx[here], picked, axis=1))
        cand = np.where(usable, np.take_along_axis(ids[here], picked, axis=1), -1)
        row_of = np.broadcast_to(here[:, None], picked.shape)
        vectors = vectors_of(row_of.ravel(), picked.ravel()).reshape(len(here), picked.shape[1], d)
        sims = np.where(usable, pair_similarity(queries[here], vectors), -np.inf)
        top_sims, top_ids = best_first(sims, cand, k)
        out_sims[here, : top_sims.shape[1]] = top_sims
        out_ids[here, : top_ids.shape[1]] = np.where(np.isfinite(top_sims), top_ids, -1)


def may_hide_more(approx_last: np.ndarray, kth_sims: np.ndarray) -> np.ndarray:
    """For a search that returned only its best candidates: whether a candidate it left
    out (float32 score at most ``approx_last``) could still tie or beat the rule's k-th
    similarity ``kth_sims`` (-inf while fewer than k were found)."""
    return ~np.isfinite(kth_sims) | (
        approx_last.astype(np.float64) + FLOAT32_SLACK
        >= kth_sims.astype(np.float64) - 10.0**-SIMILARITY_DECIMALS
    )

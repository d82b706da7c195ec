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


def best_rescored(
    queries: np.ndarray, ids: np.ndarray, at: np.ndarray, vectors: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The rule's best k of each query's candidates: ``ids`` (m x c) their ids, -1 where
    unusable; ``at`` (m x c) their rows in ``vectors``. Every candidate is rescored by
    pair_similarity, in blocks of rows so memory stays near RESCORE_BUDGET. Returns
    (sims, ids), m x k, -inf / -1 where fewer."""
    m, c = ids.shape
    out_sims = np.full((m, k), -np.inf, dtype=np.float32)
    out_ids = np.full((m, k), -1, dtype=np.int64)
    if m == 0 or c == 0 or k == 0:
        return out_sims, out_ids
    step = max(1, RESCORE_BUDGET // (c * queries.shape[1]))
    for start in range(0, m, step):
        rows = slice(start, start + step)
        cand = ids[rows]
        sims = np.where(cand >= 0, pair_similarity(queries[rows], vectors[at[rows]]), -np.inf)
        top_sims, top_ids = best_first(sims, cand, k)
        width = top_sims.shape[1]
        out_sims[rows, :width] = top_sims
        out_ids[rows, :width] = np.where(np.isfinite(top_sims), top_ids, -1)
    return out_sims, out_ids


def largest(approx: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``count`` largest finite scores, largest first (ties in any order), and
    their columns; -inf / -1 past a row's finite scores. One pass of a faiss heap per row,
    several times faster than a partition of the whole row."""
    import faiss  # the reduce's dependency (index.import_faiss says so where it is missing)

    approx = np.ascontiguousarray(approx, dtype=np.float32)
    m, c = approx.shape
    # Empty heaps as faiss makes them (its own heapify and reorder are parallel regions
    # whose thread start costs more than these few values).
    values = np.full((m, count), np.finfo(np.float32).min, dtype=np.float32)
    cols = np.full((m, count), -1, dtype=np.int64)
    heaps = faiss.float_minheap_array_t()
    heaps.k, heaps.nh = count, m
    heaps.val, heaps.ids = faiss.swig_ptr(values), faiss.swig_ptr(cols)
    heaps.addn(c, faiss.swig_ptr(approx), 0, 0, m)
    values[cols < 0] = -np.inf
    order = np.argsort(-values, axis=1)
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(cols, order, axis=1)


def top_k_rescored(
    approx: np.ndarray, column_ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The rule's top-k of each row from float32 scores of its candidates.

    ``approx`` (m x c): float32 scores of the queries (m x d) against ``vectors`` (c x d),
    whose ids are ``column_ids``; -inf where a candidate is unusable (the query itself).
    Every candidate within FLOAT32_SLACK of the row's k-th best score is rescored by
    pair_similarity, so none that the rule would rank in the top k is cut by a float32
    rounding. Returns (sims, ids), m x k, -inf / -1 where fewer."""
    m, c = approx.shape
    if m == 0 or c == 0 or k == 0:
        return best_rescored(
            queries, np.zeros((m, 0), dtype=np.int64), np.zeros((m, 0), dtype=np.int64), vectors, k
        )
    width = min(k, c)
    if width < c:
        # The best k and the next one: a row whose k+1-th best ties its k-th within the
        # slack (copies of one image; rare) is cut again, wider, below.
        values, cols = largest(approx, width + 1)
        kth, after = values[:, width - 1], values[:, width]
        wide = np.isfinite(after) & (after >= kth - FLOAT32_SLACK)
        cols = cols[:, :width]
    else:
        cols = np.where(np.isfinite(approx), np.arange(c), -1)
        wide = np.zeros(m, dtype=bool)
    sims, ids = best_rescored(
        queries, np.where(cols >= 0, column_ids[cols], -1), np.maximum(cols, 0), vectors, k
    )
    if wide.any():
        rows = np.flatnonzero(wide)
        scores = approx[rows]
        window = scores >= (kth[rows] - FLOAT32_SLACK)[:, None]
        size = int(window.sum(axis=1).max())
        cols = (
            np.argpartition(-np.where(window, scores, -np.inf), size - 1, axis=1)[:, :size]
            if size < c
            else np.broadcast_to(np.arange(c), (len(rows), c))
        )
        usable = np.isfinite(np.take_along_axis(scores, cols, axis=1))
        sims[rows], ids[rows] = best_rescored(
            queries[rows], np.where(usable, column_ids[cols], -1), cols, vectors, k
        )
    return sims, ids


def may_hide_more(approx_last: np.ndarray, kth_sims: np.ndarray) -> np.ndarray:
    """For a search that returned only its best candidates: whether a candidate it left
    out (float32 score at most ``approx_last``) could still tie or beat the rule's k-th
    similarity ``kth_sims`` (-inf while fewer than k were found)."""
    return ~np.isfinite(kth_sims) | (
        approx_last.astype(np.float64) + FLOAT32_SLACK
        >= kth_sims.astype(np.float64) - 10.0**-SIMILARITY_DECIMALS
    )

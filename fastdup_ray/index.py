"""Index stage: exact k-nearest neighbours by cosine similarity with faiss.

Plain functions, numpy in and numpy out. Vectors are unit length, so the inner
product is the cosine similarity.
"""

from __future__ import annotations

import numpy as np

from fastdup_ray.errors import MissingDependencyError


def _faiss():
    try:
        import faiss
    except ImportError:
        raise MissingDependencyError("faiss is needed for nearest neighbours: pip install faiss-cpu") from None
    return faiss


def knn_search(features: np.ndarray, k: int, batch_rows: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest other rows: (similarities, indices), both n x k, best first.

    The query itself is removed from its own list even when exact copies tie with it
    (faiss may rank an identical vector before the query). Missing neighbours (n <= k)
    are marked with index -1 and similarity -inf.
    """
    faiss = _faiss()
    features = np.ascontiguousarray(features, dtype=np.float32)
    n, d = features.shape
    index = faiss.IndexFlatIP(d)
    index.add(features)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    ids = np.full((n, k), -1, dtype=np.int64)
    for start in range(0, n, batch_rows):
        stop = min(n, start + batch_rows)
        found_sims, found_ids = index.search(features[start:stop], min(k + 1, n))
        rows = np.arange(start, stop)[:, None]
        keep = found_ids != rows
        # A row whose own index was not returned (ties) drops its last hit instead.
        no_self = keep.all(axis=1)
        keep[no_self, -1] = False
        keep &= found_ids >= 0
        for offset, (row_keep, row_sims, row_ids) in enumerate(zip(keep, found_sims, found_ids)):
            chosen = row_ids[row_keep][:k]
            sims[start + offset, : len(chosen)] = row_sims[row_keep][:k]
            ids[start + offset, : len(chosen)] = chosen
    return sims, ids


def knn_edges(features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """kNN as an edge list (src, dst, similarity), one edge per (query, neighbour)."""
    sims, ids = knn_search(features, k)
    src = np.repeat(np.arange(len(features), dtype=np.int64), ids.shape[1])
    dst = ids.ravel()
    valid = dst >= 0
    return src[valid], dst[valid], sims.ravel()[valid]

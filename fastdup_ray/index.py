"""Index stage: k-nearest neighbours by cosine similarity with faiss.

Plain functions, numpy in and numpy out. Vectors are unit length, so the inner
product is the cosine similarity. Whatever index finds the candidates (exact or
approximate), the similarity reported for a pair is recomputed exactly from the two
vectors: an approximate index can miss an edge but never invents one.

fastdup's index names map onto faiss factory strings:

- ``nn_provider='nnf'``: ``nnf_mode`` is a faiss factory string as fastdup's nnf takes it
  ('Flat', 'HNSW32', 'IVF4096,Flat', 'IVF16384,PQ64', ...).
- ``nn_provider='turi'``: ``nnmodel`` 'brute_force' -> 'Flat' (exact), 'ball_tree' -> 'HNSW32'
  (a graph index standing in for a tree), 'lsh' -> 'LSH' (random-projection codes).
"""

from __future__ import annotations

import logging
import re

import numpy as np

from fastdup_ray.errors import ConfigError, MissingDependencyError

log = logging.getLogger("fastdup_ray")

TURI_MODELS = {"brute_force": "Flat", "ball_tree": "HNSW32", "lsh": "LSH"}


def _faiss():
    try:
        import faiss
    except ImportError:
        raise MissingDependencyError("faiss is needed for nearest neighbours: pip install faiss-cpu") from None
    return faiss


def factory_string(nn_provider: str, nnf_mode: str, nnmodel: str) -> str:
    """The faiss factory string for fastdup's index parameters."""
    if nn_provider == "nnf":
        return nnf_mode
    if nn_provider == "turi":
        if nnmodel not in TURI_MODELS:
            raise ConfigError(f"nnmodel must be one of {sorted(TURI_MODELS)}, got {nnmodel!r}")
        return TURI_MODELS[nnmodel]
    raise ConfigError(f"nn_provider must be 'nnf' or 'turi', got {nn_provider!r}")


def fit_to_size(spec: str, n: int) -> str:
    """Shrink an IVF list count that the data cannot train (faiss wants ~39 points per list)."""
    match = re.search(r"IVF(\d+)", spec)
    if match and int(match.group(1)) * 39 > n:
        lists = max(1, n // 39)
        log.info("%d vectors are too few to train %s; using IVF%d", n, spec, lists)
        return spec.replace(match.group(0), f"IVF{lists}", 1)
    return spec


def build_index(features: np.ndarray, spec: str = "Flat", train_size: int = 200_000, seed: int = 0):
    """A faiss index of ``spec`` over ``features`` (trained on a sample when it needs training)."""
    faiss = _faiss()
    features = np.ascontiguousarray(features, dtype=np.float32)
    n, d = features.shape
    spec = fit_to_size(spec, n)
    metric = faiss.METRIC_L2 if spec.startswith("LSH") else faiss.METRIC_INNER_PRODUCT
    try:
        index = faiss.index_factory(d, spec, metric)
    except RuntimeError as exc:
        raise ConfigError(f"faiss cannot build index {spec!r} for d={d}: {str(exc).splitlines()[-1]}") from None
    if not index.is_trained:
        rows = np.random.default_rng(seed).choice(n, size=min(n, train_size), replace=False)
        index.train(features[np.sort(rows)])
    index.add(features)
    set_search_effort(index)
    return index


def set_search_effort(index, nprobe: int = 32, ef_search: int = 128) -> None:
    """Search parameters that favour recall: probe more IVF lists, walk more HNSW nodes
    (through faiss's ParameterSpace, which reaches inside PCA/OPQ wrappers too)."""
    faiss = _faiss()
    space = faiss.ParameterSpace()
    for name, value in (("nprobe", nprobe), ("efSearch", ef_search)):
        try:
            space.set_index_parameter(index, name, value)
        except RuntimeError:
            pass  # the index has no such parameter


def is_exact(index) -> bool:
    return type(index).__name__ in ("IndexFlat", "IndexFlatIP", "IndexFlatL2")


def candidates_to_fetch(index, size: int, k: int, queries_in_index: bool = True) -> int:
    """How many candidates to ask the index for: k (+1 for the query itself when it is in
    the index) from an exact index; 2k (at least k+10) from an approximate one, since they
    are rescored exactly and the best k kept."""
    wanted = k + queries_in_index if is_exact(index) else max(2 * k, k + 10)
    return min(size, wanted)


def exact_topk(features: np.ndarray, queries: np.ndarray, query_ids: np.ndarray, candidates: np.ndarray, k: int, block_rows: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Rescore candidate ids with the exact cosine, drop the query itself, keep the best k
    (ties by smaller id). Returns (sims, ids), -inf / -1 where fewer than k remain.
    Vectorised in blocks of rows, so memory stays at block_rows x candidates x d."""
    m = len(queries)
    sims = np.full((m, k), -np.inf, dtype=np.float32)
    ids = np.full((m, k), -1, dtype=np.int64)
    for start in range(0, m, block_rows):
        stop = min(m, start + block_rows)
        cand = candidates[start:stop]
        usable = (cand >= 0) & (cand != query_ids[start:stop, None])
        safe = np.where(usable, cand, 0)
        scores = np.einsum("rcd,rd->rc", features[safe], queries[start:stop], dtype=np.float32)
        scores = np.where(usable, scores, -np.inf).astype(np.float32)
        order = np.lexsort((np.where(usable, cand, np.iinfo(np.int64).max), -scores), axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, order, axis=1)
        top_ids = np.where(np.isfinite(top_scores), np.take_along_axis(cand, order, axis=1), -1)
        width = top_scores.shape[1]
        sims[start:stop, :width] = top_scores
        ids[start:stop, :width] = top_ids
    return sims, ids


def knn_search(features: np.ndarray, k: int, batch_rows: int = 65_536, index=None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest other rows: (similarities, indices), both n x k, best first.

    Exact by default (faiss IndexFlatIP); pass a built ``index`` to search approximately,
    in which case 2k candidates are fetched and rescored exactly. The query itself is
    removed even when exact copies tie with it. Missing neighbours (n <= k) are marked
    with index -1 and similarity -inf.
    """
    features = np.ascontiguousarray(features, dtype=np.float32)
    n = len(features)
    if index is None:
        index = build_index(features, "Flat")
    fetch = candidates_to_fetch(index, n, k)
    sims = np.empty((n, k), dtype=np.float32)
    ids = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, batch_rows):
        stop = min(n, start + batch_rows)
        _, found = index.search(features[start:stop], fetch)
        sims[start:stop], ids[start:stop] = exact_topk(features, features[start:stop], np.arange(start, stop), found, k)
    return sims, ids


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard top-k lists (same queries, global ids) into the global top-k."""
    sims = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    order = np.lexsort((ids, -sims), axis=1)[:, :k] if sims.size else np.zeros((len(sims), 0), dtype=np.int64)
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(ids, order, axis=1)


def sharded_knn(shards: list[np.ndarray], k: int, spec: str = "Flat", map_tasks=None) -> tuple[np.ndarray, np.ndarray]:
    """kNN over vectors split in shards, one index shard per task: every query block's
    top-k in each shard, merged into the global top-k as results arrive. With the exact
    index it equals :func:`knn_search` on the concatenation. ``map_tasks`` runs
    :func:`knn_shard_task` calls (locally by default, or as Ray tasks)."""
    offsets = np.cumsum([0] + [len(s) for s in shards])
    n = int(offsets[-1])

    def query_loader():
        for q, queries in enumerate(shards):
            yield int(offsets[q]), queries

    calls = [(shard, int(offsets[s]), query_loader, k, spec) for s, shard in enumerate(shards)]
    map_tasks = map_tasks or (lambda calls: (knn_shard_task(*call) for call in calls))
    best = (np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64))
    for blocks in map_tasks(calls):
        for first, sims, ids in blocks:
            merge_into(best, first, sims, ids, k)
    return best


def knn_edges(features: np.ndarray, k: int, index=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """kNN as an edge list (src, dst, similarity), one edge per (query, neighbour)."""
    sims, ids = knn_search(features, k, index=index)
    src = np.repeat(np.arange(len(features), dtype=np.int64), ids.shape[1])
    dst = ids.ravel()
    valid = dst >= 0
    return src[valid], dst[valid], sims.ravel()[valid]


def knn_shard_task(index_shard: np.ndarray, index_offset: int, query_loader, k: int, spec: str = "Flat", keep_index=None) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Build the index of one shard (handing it to ``keep_index`` to save, when given) and
    search it with every query block ``query_loader()`` yields (see search_index_shard)."""
    index = build_index(index_shard, spec)
    if keep_index is not None:
        keep_index(index)
    return search_index_shard(index, index_shard, index_offset, query_loader, k)


def search_index_shard(index, vectors: np.ndarray, index_offset: int, query_loader, k: int, queries_in_index: bool = True) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """One index shard (``index`` over ``vectors``, global rows from ``index_offset``)
    against every query block ``query_loader()`` yields as (first global id, vectors):
    per block, the exact top-k with global ids. With ``queries_in_index`` the query ids
    share the index's id space and a query never finds itself; without, they are test
    queries scored against the index."""
    fetch = candidates_to_fetch(index, len(vectors), k, queries_in_index)
    results = []
    for first, queries in query_loader():
        _, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), fetch)
        if queries_in_index:
            local_self = np.arange(first, first + len(queries)) - index_offset  # a query's own row here, if it is here
        else:
            local_self = np.full(len(queries), -1)
        sims, ids = exact_topk(vectors, queries, local_self, found, k)
        results.append((first, sims, np.where(ids >= 0, ids + index_offset, -1)))
    return results


def merge_into(best: tuple[np.ndarray, np.ndarray], first: int, sims: np.ndarray, ids: np.ndarray, k: int) -> None:
    """Fold one block's top-k into the running global top-k, in place."""
    rows = slice(first, first + len(sims))
    merged_sims, merged_ids = merge_topk([(best[0][rows], best[1][rows]), (sims, ids)], k)
    best[0][rows], best[1][rows] = merged_sims, merged_ids

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

The all-pairs kNN over IVF lists searched blockwise, and the routed kNN's pieces, are
in lists.py.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from fastdup_ray.errors import ConfigError, MissingDependencyError
from fastdup_ray.reduce import rules

log = logging.getLogger("fastdup_ray")

TURI_MODELS = {"brute_force": "Flat", "ball_tree": "HNSW32", "lsh": "LSH"}


def import_faiss():
    try:
        import faiss
    except ImportError:
        raise MissingDependencyError(
            "faiss is needed for nearest neighbours: pip install faiss-cpu"
        ) from None
    return faiss


def use_threads(count: int) -> None:
    """faiss's searches and training in this process on ``count`` threads."""
    import_faiss().omp_set_num_threads(count)


@contextmanager
def threads_while(count: int) -> Iterator[None]:
    """faiss (OpenMP) and the BLAS numpy and faiss call on ``count`` threads inside the
    block, as they were after it: a worker started on one thread (engine workers are) runs
    a task given a node's cores on all of them, then its next one-core task on one."""
    from threadpoolctl import threadpool_limits

    import_faiss()  # its OpenMP runtime must be loaded for the limit to reach it
    with threadpool_limits(limits=count):
        yield


def factory_string(nn_provider: str, nnf_mode: str, nnmodel: str) -> str:
    """The faiss factory string for fastdup's index parameters."""
    if nn_provider == "nnf":
        return nnf_mode
    if nn_provider == "turi":
        if nnmodel not in TURI_MODELS:
            raise ConfigError(f"nnmodel must be one of {sorted(TURI_MODELS)}, got {nnmodel!r}")
        return TURI_MODELS[nnmodel]
    raise ConfigError(f"nn_provider must be 'nnf' or 'turi', got {nn_provider!r}")


def check_index_spec(spec: str, d: int, parameter: str = "nnf_mode") -> None:
    """Refuse a factory string faiss cannot build for d, before any work is done
    (an untrained index of the spec costs nothing to make)."""
    faiss = import_faiss()
    metric = faiss.METRIC_L2 if spec.startswith("LSH") else faiss.METRIC_INNER_PRODUCT
    try:
        faiss.index_factory(d, spec, metric)
    except RuntimeError as exc:
        raise ConfigError(
            f"{parameter} {spec!r} is not an index faiss can build for d={d}: "
            f"{str(exc).strip().splitlines()[-1]}"
        ) from None


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
    faiss = import_faiss()
    features = np.ascontiguousarray(features, dtype=np.float32)
    n, d = features.shape
    spec = fit_to_size(spec, n)
    metric = faiss.METRIC_L2 if spec.startswith("LSH") else faiss.METRIC_INNER_PRODUCT
    try:
        index = faiss.index_factory(d, spec, metric)
    except RuntimeError as exc:
        raise ConfigError(
            f"faiss cannot build index {spec!r} for d={d}: {str(exc).splitlines()[-1]}"
        ) from None
    if not index.is_trained:
        without_polysemous_training(index)
        rows = np.random.default_rng(seed).choice(n, size=min(n, train_size), replace=False)
        index.train(features[np.sort(rows)])
    index.add(features)
    set_search_effort(index)
    return index


def coded_index(index):
    """The index that holds the codes: an IVF inside its wrappers, or what a PCA/OPQ
    pre-transform wraps."""
    faiss = import_faiss()
    inner = faiss.try_extract_index_ivf(index)
    if inner is None:
        inner = faiss.downcast_index(index)
        while isinstance(inner, faiss.IndexPreTransform):
            inner = faiss.downcast_index(inner.index)
    return faiss.downcast_index(inner)


def without_polysemous_training(index) -> None:
    """faiss's factory turns on polysemous training for its PQ indexes: a reordering of the
    codes that serves only Hamming-filtered search (``polysemous_ht``), never switched on
    here, so the neighbours are the same without it; it is most of a small build's time."""
    inner = coded_index(index)
    if getattr(inner, "do_polysemous_training", False):
        inner.do_polysemous_training = False


def set_search_effort(index, nprobe: int = 32, ef_search: int = 128) -> None:
    """Search parameters that favour recall: probe more IVF lists, walk more HNSW nodes
    (through faiss's ParameterSpace, which reaches inside PCA/OPQ wrappers too)."""
    faiss = import_faiss()
    space = faiss.ParameterSpace()
    for name, value in (("nprobe", nprobe), ("efSearch", ef_search)):
        try:
            space.set_index_parameter(index, name, value)
        except RuntimeError:
            pass  # the index has no such parameter


def is_exact(index) -> bool:
    return type(index).__name__ in (
        "IndexFlat",
        "IndexFlatIP",
        "IndexFlatL2",
        "GpuIndexFlat",
        "GpuIndexFlatIP",
        "GpuIndexFlatL2",
    )


def searcher_for(index, compute: str):
    """The index to search with: with compute='gpu', a copy on every GPU when faiss has
    GPU support (faiss-gpu, the gpu extra); otherwise the index itself, after one log line
    saying why. The CPU index is still the one saved as nnf.index."""
    if compute != "gpu" or index is None:
        return index
    faiss = import_faiss()
    if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
        log.warning(
            "compute='gpu' but faiss sees no GPU "
            "(install fastdup_ray[gpu] on a machine with a CUDA GPU); searching on CPU"
        )
        return index
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except RuntimeError as exc:  # an index type with no GPU version (HNSW, LSH)
        log.warning(
            "faiss cannot move %s to the GPU (%s); searching on CPU",
            type(index).__name__,
            str(exc).splitlines()[-1],
        )
        return index


def candidates_to_fetch(index, size: int, k: int, queries_in_index: bool = True) -> int:
    """How many candidates to ask the index for: k + 1 (+1 for the query itself when it
    is in the index) from an exact index, the one past the k-th showing whether a left-out
    candidate could still tie (search_topk asks again only then); 2k (at least k+10) from
    an approximate one, since they are rescored exactly and the best k kept."""
    wanted = k + 1 + queries_in_index if is_exact(index) else max(2 * k, k + 10)
    return min(size, wanted)


def exact_topk(
    features: np.ndarray, queries: np.ndarray, query_ids: np.ndarray, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rescore candidate ids by the rule's similarity (rules.pair_similarity), drop the
    query itself, keep the best k (ties by smaller id). Returns (sims, ids), -inf / -1
    where fewer than k remain. In blocks of rows, so memory stays near RESCORE_BUDGET."""
    usable = (candidates >= 0) & (candidates != query_ids[:, None])
    return rules.best_rescored(
        queries, np.where(usable, candidates, -1), np.where(usable, candidates, 0), features, k
    )


def search_topk(
    index,
    vectors: np.ndarray,
    queries: np.ndarray,
    query_ids: np.ndarray,
    k: int,
    queries_in_index: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's top-k under the rule (rules.py) among the vectors of ``index``:
    (sims, ids into ``vectors``). ``query_ids``: each query's own row in ``vectors``
    (-1 when it has none), never its own neighbour. An exact index is asked again, for
    twice the candidates, while a left-out candidate could tie the k-th (copies of one
    image), so the answer does not depend on how faiss breaks ties; an approximate index
    gives its candidates once, each rescored exactly."""
    size = len(vectors)
    fetch = candidates_to_fetch(index, size, k, queries_in_index)
    sims, ids = empty_topk(len(queries), k)
    pending = np.arange(len(queries))
    while len(pending) and fetch > 0:
        scores, found = index.search(np.ascontiguousarray(queries[pending], dtype=np.float32), fetch)
        top_sims, top_ids = exact_topk(vectors, queries[pending], query_ids[pending], found, k)
        sims[pending], ids[pending] = top_sims, top_ids
        if not is_exact(index) or fetch >= size:
            break
        pending = pending[(found[:, -1] >= 0) & rules.may_hide_more(scores[:, -1], top_sims[:, -1])]
        fetch = min(size, 2 * fetch)
    return sims, ids


def knn_search(
    features: np.ndarray, k: int, batch_rows: int = 65_536, index=None
) -> tuple[np.ndarray, np.ndarray]:
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
    sims = np.empty((n, k), dtype=np.float32)
    ids = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, batch_rows):
        stop = min(n, start + batch_rows)
        rows = np.arange(start, stop)
        sims[start:stop], ids[start:stop] = search_topk(index, features, features[start:stop], rows, k)
    return sims, ids


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard top-k lists (same queries, global ids) into the global top-k."""
    sims = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    order = np.lexsort((ids, -sims), axis=1)[:, :k] if sims.size else np.zeros((len(sims), 0), dtype=np.int64)
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(ids, order, axis=1)


def knn_edges(features: np.ndarray, k: int, index=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """kNN as an edge list (src, dst, similarity), one edge per (query, neighbour)."""
    return topk_edges(*knn_search(features, k, index=index))


def topk_edges(sims: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-query top-k (n x k, -1 where missing) as an edge list (src, dst, similarity)."""
    src = np.repeat(np.arange(len(ids), dtype=np.int64), ids.shape[1])
    dst = ids.ravel()
    valid = dst >= 0
    return src[valid], dst[valid], sims.ravel()[valid]


def search_index_shard(
    index, vectors: np.ndarray, index_offset: int, query_loader, k: int, queries_in_index: bool = True
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """One index shard (``index`` over ``vectors``, global rows from ``index_offset``)
    against every query block ``query_loader()`` yields as (first global id, vectors):
    per block, the exact top-k with global ids. With ``queries_in_index`` the query ids
    share the index's id space and a query never finds itself; without, they are test
    queries scored against the index."""
    results = []
    for first, queries in query_loader():
        if queries_in_index:
            local_self = (
                np.arange(first, first + len(queries)) - index_offset
            )  # a query's own row here, if it is here
        else:
            local_self = np.full(len(queries), -1)
        sims, ids = search_topk(index, vectors, queries, local_self, k, queries_in_index)
        results.append((first, sims, np.where(ids >= 0, ids + index_offset, -1)))
    return results


def empty_topk(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A running top-k for n queries with nothing found yet: -inf similarities, -1 ids."""
    return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)


def merge_into(
    best: tuple[np.ndarray, np.ndarray], first: int, sims: np.ndarray, ids: np.ndarray, k: int
) -> None:
    """Fold one block's top-k into the running global top-k, in place."""
    rows = slice(first, first + len(sims))
    merged_sims, merged_ids = merge_topk([(best[0][rows], best[1][rows]), (sims, ids)], k)
    best[0][rows], best[1][rows] = merged_sims, merged_ids

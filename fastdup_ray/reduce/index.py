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

import contextlib
import logging
import re

import numpy as np

from fastdup_ray.errors import ConfigError, MissingDependencyError
from fastdup_ray.reduce import rules

log = logging.getLogger("fastdup_ray")

TURI_MODELS = {"brute_force": "Flat", "ball_tree": "HNSW32", "lsh": "LSH"}


def _faiss():
    try:
        import faiss
    except ImportError:
        raise MissingDependencyError(
            "faiss is needed for nearest neighbours: pip install faiss-cpu"
        ) from None
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


def check_index_spec(spec: str, d: int, parameter: str = "nnf_mode") -> None:
    """Refuse a factory string faiss cannot build for d, before any work is done
    (an untrained index of the spec costs nothing to make)."""
    faiss = _faiss()
    metric = faiss.METRIC_L2 if spec.startswith("LSH") else faiss.METRIC_INNER_PRODUCT
    try:
        faiss.index_factory(d, spec, metric)
    except RuntimeError as exc:
        raise ConfigError(
            f"{parameter} {spec!r} is not an index faiss can build for d={d}: {str(exc).strip().splitlines()[-1]}"
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
    faiss = _faiss()
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
    faiss = _faiss()
    if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
        log.warning(
            "compute='gpu' but faiss sees no GPU (install fastdup_ray[gpu] on a machine with a CUDA GPU); searching on CPU"
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
    """How many candidates to ask the index for: k (+1 for the query itself when it is in
    the index) from an exact index; 2k (at least k+10) from an approximate one, since they
    are rescored exactly and the best k kept."""
    wanted = k + queries_in_index if is_exact(index) else max(2 * k, k + 10)
    return min(size, wanted)


def exact_topk(
    features: np.ndarray, queries: np.ndarray, query_ids: np.ndarray, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rescore candidate ids by the rule's similarity (rules.pair_similarity), drop the
    query itself, keep the best k (ties by smaller id). Returns (sims, ids), -inf / -1
    where fewer than k remain. In blocks of rows, so memory stays near RESCORE_BUDGET."""
    m = len(queries)
    sims, ids = empty_topk(m, k)
    step = max(1, rules.RESCORE_BUDGET // max(1, candidates.shape[1] * features.shape[1]))
    for start in range(0, m, step):
        stop = min(m, start + step)
        cand = candidates[start:stop]
        usable = (cand >= 0) & (cand != query_ids[start:stop, None])
        scores = np.where(
            usable, rules.pair_similarity(queries[start:stop], features[np.where(usable, cand, 0)]), -np.inf
        )
        top_scores, top_ids = rules.best_first(scores, np.where(usable, cand, -1), k)
        width = top_scores.shape[1]
        sims[start:stop, :width] = top_scores
        ids[start:stop, :width] = np.where(np.isfinite(top_scores), top_ids, -1)
    return sims, ids


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


# --- IVF lists searched block by block with BLAS: the all-pairs kNN at scale -----------------
#
# For kNN of every vector against all the others, a faiss IVF search scans each probed
# list once per query, which is memory-bound at d=1280. Grouping the work by list turns it
# into matrix products: every vector probing list l is scored against all of l's members
# in one GEMM. The lists are faiss k-means cells (trained on a sample, spherical), each
# vector is stored once (in its nearest list) and probes its ``nprobe`` nearest lists, so
# the candidates are exactly those an IVF search with that nprobe would scan, and every
# similarity is the exact inner product of the two vectors.

_IVF_FLAT = re.compile(r"^IVF(\d+),Flat$")


def ivf_flat_lists(spec: str) -> int | None:
    """The list count of a plain 'IVF<n>,Flat' spec (searched blockwise), else None."""
    match = _IVF_FLAT.match(spec.replace(" ", ""))
    return int(match.group(1)) if match else None


def train_lists(sample: np.ndarray, nlist: int, seed: int = 0, niter: int = 10) -> np.ndarray:
    """Spherical k-means centroids (nlist x d) of a sample of the vectors (at most one
    list per 39 sample points, faiss's advice)."""
    faiss = _faiss()
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    nlist = max(1, min(nlist, len(sample) // 39 or 1))
    kmeans = faiss.Kmeans(
        sample.shape[1], nlist, niter=niter, spherical=True, seed=seed, max_points_per_centroid=len(sample)
    )
    kmeans.train(sample)
    return kmeans.centroids


class ListedVectors:
    """The vectors in a faiss IndexIVFFlat, one copy, in list order: filled shard by shard
    (each vector into its nearest list), then read back as zero-copy numpy views of the
    lists for the blockwise search. The same index is what nnf.index saves."""

    def __init__(self, centroids: np.ndarray) -> None:
        faiss = _faiss()
        self.d = centroids.shape[1]
        self.nlist = len(centroids)
        self.quantizer = faiss.IndexFlatIP(self.d)
        self.quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
        self.index = faiss.IndexIVFFlat(self.quantizer, self.d, self.nlist, faiss.METRIC_INNER_PRODUCT)
        self.index.is_trained = True
        self._views: list[tuple[np.ndarray, np.ndarray]] | None = None  # per list, once filled
        self._where: np.ndarray | None = None  # each global id's row inside its list

    def add(self, first: int, vectors: np.ndarray, home: np.ndarray) -> None:
        faiss = _faiss()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.arange(first, first + len(vectors), dtype=np.int64)
        home = np.ascontiguousarray(home, dtype=np.int64)
        self.index.add_core(len(vectors), faiss.swig_ptr(vectors), faiss.swig_ptr(ids), faiss.swig_ptr(home))

    def members(self, lst: int) -> tuple[np.ndarray, np.ndarray]:
        """(global ids, vectors) of list ``lst``: views into the index, not copies."""
        if self._views is None:
            faiss = _faiss()
            lists = self.index.invlists
            self._views = []
            for number in range(self.nlist):
                size = lists.list_size(number)
                if size == 0:
                    self._views.append((np.zeros(0, dtype=np.int64), np.zeros((0, self.d), dtype=np.float32)))
                    continue
                ids = faiss.rev_swig_ptr(lists.get_ids(number), size).view(np.int64)
                codes = faiss.rev_swig_ptr(lists.get_codes(number), size * self.d * 4)
                self._views.append((ids, codes.view(np.float32).reshape(size, self.d)))
        return self._views[lst]

    def probe(self, vectors: np.ndarray, nprobe: int) -> np.ndarray:
        """Each vector's ``nprobe`` nearest lists, nearest first (n x nprobe), from the
        index's own quantizer."""
        _, probes = self.quantizer.search(
            np.ascontiguousarray(vectors, dtype=np.float32), min(nprobe, self.nlist)
        )
        return probes

    def gather(self, ids: np.ndarray, home: np.ndarray) -> np.ndarray:
        """Vectors of the given global ids, whose lists are ``home``."""
        if self._where is None:
            self._where = np.empty(self.index.ntotal, dtype=np.int64)
            for number in range(self.nlist):
                member_ids, _ = self.members(number)
                self._where[member_ids] = np.arange(len(member_ids))
        out = np.empty((len(ids), self.d), dtype=np.float32)
        order = np.argsort(home, kind="stable")
        bounds = np.flatnonzero(np.diff(home[order])) + 1
        for group in np.split(order, bounds):
            if len(group):
                out[group] = self.members(int(home[group[0]]))[1][self._where[ids[group]]]
        return out


def blocked_ivf_knn(
    listed: ListedVectors,
    probes: np.ndarray,
    k: int,
    query_vectors=None,
    query_ids: np.ndarray | None = None,
    max_block: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k nearest vectors among the members of its probed lists, never
    itself: (similarities, global ids), one row per row of ``probes``, best first, ties by
    smaller id, -inf / -1 where fewer than k candidates exist. One GEMM per (list, block
    of queries probing it). By default the queries are the listed vectors themselves
    (row i = global id i); ``query_vectors(rows)`` and ``query_ids`` give other queries."""
    m = len(probes)
    if query_vectors is None:
        home = probes[:, 0]
        query_vectors = lambda rows: listed.gather(rows, home[rows])  # noqa: E731
        query_ids = np.arange(m, dtype=np.int64)
    best = empty_topk(m, k)
    # Group (query, probed list) pairs by list once, so each list gathers its queries in one go.
    query_of = np.repeat(np.arange(m, dtype=np.int64), probes.shape[1])
    probed = probes.ravel()
    keep = probed >= 0
    query_of, probed = query_of[keep], probed[keep]
    order = np.argsort(probed, kind="stable")
    query_of, probed = query_of[order], probed[order]
    bounds = np.searchsorted(probed, np.arange(listed.nlist + 1))
    for lst in range(listed.nlist):
        member_ids, members = listed.members(lst)
        if len(member_ids) == 0:
            continue
        queries_here = query_of[bounds[lst] : bounds[lst + 1]]
        for start in range(0, len(queries_here), max_block):
            block = queries_here[start : start + max_block]
            queries = query_vectors(block)
            scores = queries @ members.T
            scores[query_ids[block][:, None] == member_ids[None, :]] = -np.inf  # never a query's own row
            sims, ids = top_k_of_list(scores, member_ids, members, queries, k)
            merged = merge_topk([(best[0][block], best[1][block]), (sims, ids)], k)
            best[0][block], best[1][block] = merged
    return best


def top_k_of_list(
    scores: np.ndarray, member_ids: np.ndarray, members: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best k members of one list under the rule, from the list's float32
    matrix product ``scores`` (queries x members, -inf for a query's own row)."""
    ids = np.broadcast_to(member_ids, scores.shape)
    return rules.top_k_rescored(scores, ids, lambda rows, cols: members[cols], queries, k)


def list_vectors(
    load_shard,
    rows: list[int],
    nlist: int,
    nprobe: int,
    first_id: int = 0,
    train_size: int = 65_536,
    seed: int = 0,
):
    """Train IVF lists on a sample of every shard, then stream the shards into them.

    ``load_shard(i)`` returns shard i's vectors (rows[i] x d); shards are read three
    times (a training sample from each, probes, then into the lists), so the vectors are
    held once, in a faiss IndexIVFFlat (``listed.index``, ready to save); global ids
    start at ``first_id``. Returns (listed, probes: each vector's nprobe nearest lists,
    centroids)."""
    n = sum(rows)
    offsets = np.cumsum([0] + list(rows))
    rng = np.random.default_rng(seed)
    share = min(1.0, train_size / max(1, n))
    sample = []
    for i, count in enumerate(rows):
        if count:
            take = np.flatnonzero(rng.random(count) < share)
            sample.append(np.asarray(load_shard(i))[take])
    centroids = train_lists(np.concatenate(sample), nlist, seed=seed)
    del sample
    listed = ListedVectors(centroids)
    probes = np.empty((n, min(nprobe, len(centroids))), dtype=np.int64)
    for i, count in enumerate(rows):
        if count:
            probes[offsets[i] : offsets[i + 1]] = listed.probe(load_shard(i), nprobe)
    for i, count in enumerate(rows):
        if count:
            listed.add(first_id + int(offsets[i]), load_shard(i), probes[offsets[i] : offsets[i + 1], 0])
    set_search_effort(listed.index)
    return listed, probes, centroids


def ivf_knn(
    load_shard,
    rows: list[int],
    d: int,
    k: int,
    nlist: int,
    nprobe: int = 2,
    train_size: int = 65_536,
    seed: int = 0,
    phase=None,
):
    """All-pairs kNN over feature shards with IVF lists searched blockwise (see
    list_vectors). ``phase(name)``, a context manager, times "index" (train, probe, list)
    and "knn". Returns (sims, ids, listed, centroids). With nprobe equal to the list
    count the result is the exact kNN."""
    phase = phase or (lambda name: contextlib.nullcontext())
    with phase("index"):
        listed, probes, centroids = list_vectors(
            load_shard, rows, nlist, nprobe, train_size=train_size, seed=seed
        )
    with phase("knn"):
        sims, ids = blocked_ivf_knn(listed, probes, k)
    return sims, ids, listed, centroids


# --- Routed kNN: the pure cores of the distributed reduce ------------------------------------
#
# At scale the vectors never meet in one process. Each vector is routed to its nprobe
# nearest lists (its nearest, "home", list holds it as a member; the others only see it
# as a query), each list is scored in one matrix product (its queries against its
# members), and each query's candidates from its nprobe lists are merged into its top-k.
# The candidates are those of an IVF search with that nprobe, scored exactly.


def route(vectors: np.ndarray, centroids: np.ndarray, nprobe: int) -> np.ndarray:
    """Each vector's ``nprobe`` nearest lists (by inner product with the centroids),
    nearest (its home list) first: n x min(nprobe, lists)."""
    faiss = _faiss()
    quantizer = faiss.IndexFlatIP(centroids.shape[1])
    quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, probes = quantizer.search(np.ascontiguousarray(vectors, dtype=np.float32), min(nprobe, len(centroids)))
    return probes.astype(np.int64)


def score_lists(
    ids: np.ndarray,
    lists: np.ndarray,
    is_member: np.ndarray,
    vectors: np.ndarray,
    k: int,
    is_query: np.ndarray | None = None,
    max_block: int = 4096,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates of one group of lists: every routed entry (global id, list, whether the
    list is its home, vector) is a query of its list (unless ``is_query`` says not: the
    saved members searched by test vectors) and, when at home, a member. Per query and
    list, its best k members other than itself. Returns flat (query id, candidate id,
    similarity) arrays."""
    is_query = np.ones(len(ids), dtype=bool) if is_query is None else is_query
    order = np.argsort(lists, kind="stable")
    ids, lists, is_member, is_query, vectors = (
        ids[order],
        lists[order],
        is_member[order],
        is_query[order],
        vectors[order],
    )
    bounds = np.flatnonzero(np.diff(lists)) + 1
    found_q, found_c, found_s = [], [], []
    for entries in np.split(np.arange(len(ids)), bounds):
        members = entries[is_member[entries]]
        rows = entries[is_query[entries]]
        if len(rows) == 0 or len(members) == 0:
            continue
        member_ids = ids[members]
        member_vectors = vectors[members]
        for start in range(0, len(rows), max_block):
            block = rows[start : start + max_block]
            scores = vectors[block] @ member_vectors.T
            scores[ids[block][:, None] == member_ids[None, :]] = -np.inf
            sims, cands = top_k_of_list(scores, member_ids, member_vectors, vectors[block], k)
            valid = cands >= 0
            found_q.append(np.broadcast_to(ids[block][:, None], cands.shape)[valid])
            found_c.append(cands[valid])
            found_s.append(sims[valid])
    if not found_q:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    return np.concatenate(found_q), np.concatenate(found_c), np.concatenate(found_s)


def merge_candidates(
    query: np.ndarray, candidate: np.ndarray, sim: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each query's best k candidates (ties by smaller id), as edges (src, dst,
    similarity) sorted by src, best first. A candidate reaches a query at most once: it
    is a member of one list only (routed) or of one index shard only (exact)."""
    order = np.lexsort((candidate, -sim, query))
    query, candidate, sim = query[order], candidate[order], sim[order]
    starts = np.r_[0, np.flatnonzero(np.diff(query)) + 1] if len(query) else np.zeros(0, dtype=np.int64)
    rank = np.arange(len(query)) - np.repeat(starts, np.diff(np.r_[starts, len(query)]))
    keep = rank < k
    return query[keep], candidate[keep], sim[keep].astype(np.float32)

"""All-pairs kNN at scale: IVF lists searched block by block with BLAS, and the pure
cores of the routed (distributed) kNN.

Plain functions over numpy, as in index.py, whose faiss loading and top-k merging they
share; every similarity is the exact inner product of the two vectors, ranked under the
rule (rules.py).
"""

from __future__ import annotations

import contextlib
import re
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np

from fastdup_ray.engine import in_order
from fastdup_ray.reduce import rules
from fastdup_ray.reduce.index import empty_topk, import_faiss, merge_topk, set_search_effort

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
    faiss = import_faiss()
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
        faiss = import_faiss()
        self.d = centroids.shape[1]
        self.nlist = len(centroids)
        self.quantizer = faiss.IndexFlatIP(self.d)
        self.quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
        self.index = faiss.IndexIVFFlat(self.quantizer, self.d, self.nlist, faiss.METRIC_INNER_PRODUCT)
        self.index.is_trained = True
        self._views: list[tuple[np.ndarray, np.ndarray]] | None = None  # per list, once filled
        self._where: np.ndarray | None = None  # each global id's row inside its list

    def add(self, first: int, vectors: np.ndarray, home: np.ndarray) -> None:
        faiss = import_faiss()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.arange(first, first + len(vectors), dtype=np.int64)
        home = np.ascontiguousarray(home, dtype=np.int64)
        self.index.add_core(len(vectors), faiss.swig_ptr(vectors), faiss.swig_ptr(ids), faiss.swig_ptr(home))

    def members(self, lst: int) -> tuple[np.ndarray, np.ndarray]:
        """(global ids, vectors) of list ``lst``: views into the index, not copies."""
        if self._views is None:
            faiss = import_faiss()
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

    def rows_in_lists(self) -> np.ndarray:
        """Each global id's row inside its list, built on the first call (before threads
        share it: blocked_ivf_knn asks first)."""
        if self._where is None:
            self._where = np.empty(self.index.ntotal, dtype=np.int64)
            for number in range(self.nlist):
                member_ids, _ = self.members(number)
                self._where[member_ids] = np.arange(len(member_ids))
        return self._where

    def gather(self, ids: np.ndarray, home: np.ndarray) -> np.ndarray:
        """Vectors of the given global ids, whose lists are ``home``."""
        where = self.rows_in_lists()
        out = np.empty((len(ids), self.d), dtype=np.float32)
        order = np.argsort(home, kind="stable")
        bounds = np.flatnonzero(np.diff(home[order])) + 1
        for group in np.split(order, bounds):
            if len(group):
                out[group] = self.members(int(home[group[0]]))[1][where[ids[group]]]
        return out


def blocked_ivf_knn(
    listed: ListedVectors,
    probes: np.ndarray,
    k: int,
    query_vectors=None,
    query_ids: np.ndarray | None = None,
    max_block: int = 4096,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k nearest vectors among the members of its probed lists, never
    itself: (similarities, global ids), one row per row of ``probes``, best first, ties by
    smaller id, -inf / -1 where fewer than k candidates exist. One GEMM per (list, block
    of queries probing it). By default the queries are the listed vectors themselves
    (row i = global id i); ``query_vectors(rows)`` and ``query_ids`` give other queries.

    The (list, block) products run on ``threads`` threads (default: faiss's, the cores
    this process searches on), each GEMM on one BLAS thread (small_products). Results are
    merged in list order, as one thread would, so the answer does not depend on the count
    (docs/scaling.md has the figures)."""
    m = len(probes)
    if query_vectors is None:
        home = probes[:, 0]
        query_vectors = lambda rows: listed.gather(rows, home[rows])  # noqa: E731
        query_ids = np.arange(m, dtype=np.int64)
        listed.rows_in_lists()  # built here, once, not by the threads below at the same time
    best = empty_topk(m, k)
    # Group (query, probed list) pairs by list once, so each list gathers its queries in one go.
    query_of = np.repeat(np.arange(m, dtype=np.int64), probes.shape[1])
    probed = probes.ravel()
    keep = probed >= 0
    query_of, probed = query_of[keep], probed[keep]
    order = np.argsort(probed, kind="stable")
    query_of, probed = query_of[order], probed[order]
    bounds = np.searchsorted(probed, np.arange(listed.nlist + 1))
    jobs = [
        (lst, start, min(bounds[lst + 1], start + max_block))
        for lst in range(listed.nlist)
        if len(listed.members(lst)[0])
        for start in range(bounds[lst], bounds[lst + 1], max_block)
    ]

    def scored(job: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lst, start, stop = job
        member_ids, members = listed.members(lst)
        block = query_of[start:stop]
        queries = query_vectors(block)
        scores = queries @ members.T
        mask_own_rows(scores, query_ids[block], member_ids)
        return (block, *top_k_of_list(scores, member_ids, members, queries, k))

    threads = threads or import_faiss().omp_get_max_threads()
    with small_products(), ThreadPoolExecutor(threads) as pool:
        for block, sims, ids in in_order(partial(pool.submit, scored), jobs, ahead=2 * threads):
            merged = merge_topk([(best[0][block], best[1][block]), (sims, ids)], k)
            best[0][block], best[1][block] = merged
    return best


def small_products():
    """BLAS on one thread inside: a list's product is a few hundred rows a side, and BLAS
    splitting each over the cores costs more than it gains."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def mask_own_rows(scores: np.ndarray, query_ids: np.ndarray, member_ids: np.ndarray) -> None:
    """-inf where a query meets itself among a list's members (queries x members), in
    place: a query is never its own neighbour. Members in id order (as lists are filled)
    are looked up by binary search, others compared in full."""
    if len(member_ids) == 0 or len(query_ids) == 0:
        return
    if np.all(member_ids[1:] > member_ids[:-1]):
        at = np.minimum(np.searchsorted(member_ids, query_ids), len(member_ids) - 1)
        own = np.flatnonzero(member_ids[at] == query_ids)
        scores[own, at[own]] = -np.inf
    else:
        scores[query_ids[:, None] == member_ids[None, :]] = -np.inf


def top_k_of_list(
    scores: np.ndarray, member_ids: np.ndarray, members: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best k members of one list under the rule, from the list's float32
    matrix product ``scores`` (queries x members, -inf for a query's own row)."""
    return rules.top_k_rescored(scores, member_ids, members, queries, k)


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
    faiss = import_faiss()
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
    with small_products():
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
                mask_own_rows(scores, ids[block], member_ids)
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

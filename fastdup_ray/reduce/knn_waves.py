"""The distributed reduce's kNN waves: routed lists (sample, train, route, score) or exact
index shards (Flat), each sending every query's candidates to the query's partition; and
run modes 3/4's search of the saved routed index.

A vector is routed to its nprobe nearest lists (its nearest, "home", list holds it as a
member; the others see it as a query), each list is scored in one matrix product, and
merge (distributed.py) keeps each query's top-k under the rule book (rules.py).
"""

from __future__ import annotations

import io

import numpy as np
import polars as pl

from fastdup_ray.reduce.index import (
    build_index,
    search_index_shard,
)
from fastdup_ray.reduce.lists import (
    merge_candidates,
    route,
    score_lists,
    train_lists,
)
from fastdup_ray.reduce.partitions import (
    ReducePlan,
    bucket_of,
    candidate_inbox,
    ids_of,
    partition_vectors,
    route_inbox,
)
from fastdup_ray.rundir.shards import shard_names, unit_rows
from fastdup_ray.rundir.workdir import WorkDir

ROUTED_INDEX_DIR = "nnf.routed"
# Vectors sampled (over all partitions) to train the routed lists: at least this many,
# and faiss's 39 a list.
TRAINING_SAMPLE = 65_536
POINTS_PER_LIST = 39


# --- Routed kNN ------------------------------------------------------------------------------


def sample_task(plan: ReducePlan, number: int, share: float, block: int = 64) -> int:
    """About ``share`` of a partition's vectors for training the lists, read as blocks of
    rows spread evenly over it (a few byte ranges, not the whole partition)."""
    part = plan.partitions[number]
    wanted = max(1, round(share * (part.stop - part.first)))
    starts = np.unique(
        np.linspace(0, max(0, part.stop - part.first - block), max(1, -(-wanted // block))).astype(np.int64)
    )
    row_bytes = plan.d * 4
    arrays, offset = [], 0
    for prefix, start, stop in part.pieces:
        for begin in starts[(starts >= offset) & (starts < offset + stop - start)]:
            first = start + int(begin) - offset
            last = min(stop, first + block)
            data = plan.work.read_range(shard_names(prefix)[0], first * row_bytes, last * row_bytes)
            arrays.append(np.frombuffer(data, dtype="<f4").reshape(last - first, plan.d))
        offset += stop - start
    sample = unit_rows(np.concatenate(arrays)) if arrays else np.zeros((0, plan.d), dtype=np.float32)
    buffer = io.BytesIO()
    np.save(buffer, sample)
    plan.scratch.sub("sample").write_bytes(f"part-{number:05d}.npy", buffer.getvalue())
    return len(sample)


def train_task(plan: ReducePlan, _: int = 0) -> int:
    """Spherical k-means lists from the partitions' samples; returns the list count."""
    folder = plan.scratch.sub("sample")
    sample = np.concatenate([np.load(io.BytesIO(folder.read_bytes(name))) for name in folder.names()])
    centroids = train_lists(sample, plan.nlist)
    buffer = io.BytesIO()
    np.save(buffer, centroids)
    plan.work.sub(ROUTED_INDEX_DIR).write_bytes("centroids.npy", buffer.getvalue())
    return len(centroids)


def bucket_file(number: int) -> str:
    """The saved routed index's file of bucket ``number``: its lists' members."""
    return f"bucket-{number:05d}.arrow"


def _centroids(plan: ReducePlan) -> np.ndarray:
    return np.load(io.BytesIO(plan.work.sub(ROUTED_INDEX_DIR).read_bytes("centroids.npy")))


def route_task(plan: ReducePlan, number: int) -> int:
    """Send each vector of a partition to the buckets of its nprobe nearest lists."""
    part = plan.partitions[number]
    vectors = partition_vectors(plan, part)
    probes = route(vectors, _centroids(plan), plan.nprobe)
    width = probes.shape[1]
    ids = np.repeat(np.arange(part.first, part.stop, dtype=np.int64), width)
    lists = probes.ravel()
    entries = pl.DataFrame(
        {
            "id": ids,
            "list": lists,
            "member": np.tile(np.arange(width) == 0, len(vectors)),
            "vector": np.repeat(vectors, width, axis=0),
        },
        schema=dict(route_inbox(plan).schema),
    )
    route_inbox(plan).send(number, plan.bucket_of(lists), entries)
    return len(ids)


def score_task(plan: ReducePlan, bucket: int) -> int:
    """Score each list of a bucket (its queries against its members, one matrix product)
    and send every candidate to its query's partition; keep the members as the saved
    routed index."""
    entries = route_inbox(plan).receive(bucket)
    ids, lists, member = ids_of(entries, "id"), ids_of(entries, "list"), entries["member"].to_numpy()
    vectors = entries["vector"].to_numpy() if entries.height else np.zeros((0, plan.d), dtype=np.float32)
    query, candidate, sim = score_lists(ids, lists, member, vectors, plan.k)
    candidate_inbox(plan).send(
        bucket, plan.partition_of(query), pl.DataFrame({"query": query, "candidate": candidate, "sim": sim})
    )
    buffer = io.BytesIO()
    entries.filter(pl.col("member")).drop("member").write_ipc(buffer)
    plan.work.sub(ROUTED_INDEX_DIR).write_bytes(bucket_file(bucket), buffer.getvalue())
    return len(query)


# --- Exact kNN (Flat): index shards against every query partition ----------------------------


def exact_shard_task(plan: ReducePlan, group: tuple[int, ...]) -> int:
    """One exact index over a group of partitions, searched with every partition; each
    query's top-k from this shard goes to the query's partition."""
    parts = [plan.partitions[i] for i in group]
    vectors = np.concatenate([partition_vectors(plan, p) for p in parts])
    index = build_index(vectors, "Flat")
    queries = lambda: ((p.first, partition_vectors(plan, p)) for p in plan.partitions)  # noqa: E731
    sent = 0
    for first, sims, ids in search_index_shard(index, vectors, parts[0].first, queries, plan.k):
        query = np.repeat(np.arange(first, first + len(ids), dtype=np.int64), ids.shape[1])
        valid = ids.ravel() >= 0
        frame = pl.DataFrame(
            {"query": query[valid], "candidate": ids.ravel()[valid], "sim": sims.ravel()[valid]}
        )
        # Each block is one query partition: one file per (index shard, query partition).
        candidate_inbox(plan).send(group[0], plan.partition_of(frame["query"].to_numpy()), frame)
        sent += frame.height
    return sent


# --- Run modes 3 and 4: test vectors against the routed index --------------------------------


def search_routed_index(
    work: WorkDir, queries: np.ndarray, k: int, nprobe: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges (query row, train row, similarity) from each test vector to its k nearest
    train vectors among the members of the lists it probes, one saved bucket of lists
    in memory at a time; only the buckets holding a probed list are read."""
    saved = work.sub(ROUTED_INDEX_DIR)
    centroids = np.load(io.BytesIO(saved.read_bytes("centroids.npy")))
    probes = route(queries, centroids, nprobe)
    width = probes.shape[1]
    # Test rows get negative ids, so no test row is ever taken for a train row of its own.
    query_ids = -1 - np.arange(len(queries), dtype=np.int64)
    buckets = sum(1 for name in saved.names() if name.startswith("bucket-"))
    found = []
    for number in np.unique(bucket_of(probes.ravel(), buckets, len(centroids))):
        members = pl.read_ipc(saved.read_bytes(bucket_file(int(number))))
        lists = ids_of(members, "list")
        wanted = np.isin(probes, np.unique(lists))
        rows, _ = np.nonzero(wanted)
        if len(rows) == 0:
            continue
        ids = np.concatenate([query_ids[rows], ids_of(members, "id")])
        vectors = np.concatenate([queries[rows], members["vector"].to_numpy()])
        is_member = np.r_[np.zeros(len(rows), dtype=bool), np.ones(members.height, dtype=bool)]
        query, candidate, sim = score_lists(
            ids, np.concatenate([probes[wanted], lists]), is_member, vectors, k, is_query=~is_member
        )
        found.append((-1 - query, candidate, sim))
    if not found or width == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    src, dst, sim = merge_candidates(*(np.concatenate(column) for column in zip(*found)), k)
    return src, dst, np.clip(sim, 0.0, 1.0)

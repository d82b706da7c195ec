"""The reduce at scale: kNN, pairs, components, pagerank and tables as waves of tasks.

Rows are split into partitions (row ranges over the run's feature shards, read by range,
so one large features.dat is read by many tasks). Each wave maps one task function over
partitions (or list buckets) on the run's engine; tasks read their inputs from the work
dir, send rows to other tasks through keyed exchanges (exchange.py) and write Parquet
parts. The driver holds the plan (per-shard metadata) and the counts tasks return,
nothing per image.

Waves: sample -> train lists -> route each vector to its nprobe nearest lists -> score
each bucket of lists exactly -> merge each query's candidates into its top-k (edges/) ->
exact copies by content hash -> pairs once each -> names and similarity/ -> components by
large-star / small-star rounds -> pagerank per component -> connected_components/,
component_info/, stats/ -> outliers/ -> the CSVs, streamed from the parts, when small.
With nnf_mode 'Flat' the candidates come from exact index shards instead of lists.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import polars as pl

from fastdup_ray import layout, outputs, results, rules
from fastdup_ray.exchange import Exchange
from fastdup_ray.features import load_names, load_stats, shard_names, unit_rows
from fastdup_ray.graph import component_pagerank, large_star, small_star, star_labels
from fastdup_ray.index import build_index, merge_candidates, route, score_lists, search_index_shard, train_lists
from fastdup_ray.workdir import WorkDir

log = logging.getLogger("fastdup_ray")

ROUTED_INDEX_DIR = "nnf.routed"
# Vectors sampled (over all partitions) to train the routed lists: at least this many,
# and faiss's 39 a list.
TRAINING_SAMPLE = 65_536
POINTS_PER_LIST = 39


@dataclass(frozen=True)
class Partition:
    """Rows first..stop-1 of the run, as (shard prefix, first row, stop row) pieces."""

    number: int
    first: int
    stop: int
    pieces: tuple[tuple[str, int, int], ...]


def plan_partitions(prefixes: list[str], rows: list[int], rows_per_partition: int) -> list[Partition]:
    """Cut the run's rows (shards in order) into ranges of at most rows_per_partition;
    a partition may span small shards and a large shard spans many partitions."""
    partitions: list[Partition] = []
    pieces: list[tuple[str, int, int]] = []
    first = taken = 0
    for prefix, count in zip(prefixes, rows):
        start = 0
        while start < count:
            size = min(count - start, rows_per_partition - taken)
            pieces.append((prefix, start, start + size))
            start += size
            taken += size
            if taken == rows_per_partition:
                partitions.append(Partition(len(partitions), first, first + taken, tuple(pieces)))
                first, taken, pieces = first + taken, 0, []
    if pieces:
        partitions.append(Partition(len(partitions), first, first + taken, tuple(pieces)))
    return partitions


@dataclass(frozen=True)
class ReducePlan:
    """What every task of the distributed reduce needs: small and picklable."""

    work: WorkDir
    d: int
    k: int
    partitions: tuple[Partition, ...]
    threshold: float
    ccthreshold: float
    nlist: int = 1
    nprobe: int = 2
    buckets: int = 1
    spec: str = "Flat"
    # Whether the rows carry content hashes (features a user brought have none): the
    # waves that find exact copies run only then.
    has_hashes: bool = True

    @property
    def scratch(self) -> WorkDir:
        return self.work.sub(layout.REDUCE_SCRATCH_DIR)

    @property
    def joined_threshold(self) -> float:
        return rules.joined_threshold(self.threshold, self.ccthreshold)

    def partition_of(self, ids: np.ndarray) -> np.ndarray:
        firsts = np.array([p.first for p in self.partitions], dtype=np.int64)
        return np.searchsorted(firsts, ids, side="right") - 1

    def bucket_of(self, lists: np.ndarray) -> np.ndarray:
        return lists * self.buckets // max(1, self.nlist)

    def exchange(self, name: str, **schema) -> Exchange:
        return Exchange(self.scratch, name, tuple(schema.items()))


# Exchanges and their columns.
def _route(plan: ReducePlan) -> Exchange:
    return plan.exchange("route", id=pl.Int64, list=pl.Int64, member=pl.Boolean, vector=pl.Array(pl.Float32, plan.d))


def _candidates(plan: ReducePlan) -> Exchange:
    return plan.exchange("candidates", query=pl.Int64, candidate=pl.Int64, sim=pl.Float32)


def _pairs(plan: ReducePlan) -> Exchange:
    return plan.exchange("pairs", a=pl.Int64, b=pl.Int64, sim=pl.Float32)


def _nearest(plan: ReducePlan) -> Exchange:
    return plan.exchange("nearest", src=pl.Int64, dst=pl.Int64, sim=pl.Float32, **{"from": pl.String})


def _hashes(plan: ReducePlan) -> Exchange:
    return plan.exchange("hashes", id=pl.Int64, hash=pl.String)


def _leaders(plan: ReducePlan) -> Exchange:
    return plan.exchange("leaders", id=pl.Int64, leader=pl.Int64)


def _resolve(plan: ReducePlan) -> Exchange:
    return plan.exchange("resolve", a=pl.Int64, b=pl.Int64, sim=pl.Float32, leader_a=pl.Int64, **{"from": pl.String})


def _joined(plan: ReducePlan) -> Exchange:
    return plan.exchange("joined", a=pl.Int64, b=pl.Int64, sim=pl.Float32)


def _large_star_inbox(plan: ReducePlan, round_number: int) -> Exchange:
    return plan.exchange(f"large-star-{round_number}", u=pl.Int64, v=pl.Int64)


def _small_star_inbox(plan: ReducePlan, round_number: int) -> Exchange:
    return plan.exchange(f"small-star-{round_number}", u=pl.Int64, v=pl.Int64)


def _component_edges(plan: ReducePlan) -> Exchange:
    return plan.exchange("component-edges", component=pl.Int64, a=pl.Int64, b=pl.Int64, sim=pl.Float32)


def _ranks(plan: ReducePlan) -> Exchange:
    return plan.exchange("ranks", node=pl.Int64, pagerank=pl.Float64, delta=pl.Float64)


# --- Reading a partition ---------------------------------------------------------------------


def partition_vectors(plan: ReducePlan, part: Partition) -> np.ndarray:
    """Unit vectors of a partition's rows, read by byte range from each shard."""
    row_bytes = plan.d * 4
    arrays = [
        np.frombuffer(plan.work.read_range(shard_names(prefix)[0], start * row_bytes, stop * row_bytes), dtype="<f4").reshape(stop - start, plan.d)
        for prefix, start, stop in part.pieces
    ]
    return unit_rows(np.concatenate(arrays)) if arrays else np.zeros((0, plan.d), dtype=np.float32)


def partition_names(plan: ReducePlan, part: Partition) -> list[str]:
    return [name for prefix, start, stop in part.pieces for name in load_names(plan.work, [prefix])[start:stop]]


def partition_stats(plan: ReducePlan, part: Partition) -> pl.DataFrame | None:
    tables = []
    for prefix, start, stop in part.pieces:
        stats = load_stats(plan.work, [prefix])
        if stats is None:
            return None
        tables.append(stats.slice(start, stop - start))
    return pl.concat(tables, how="diagonal") if tables else None


def _write_part(work: WorkDir, folder: str, number: int, table: pl.DataFrame) -> None:
    buffer = io.BytesIO()
    table.write_parquet(buffer)
    work.sub(folder).write_bytes(layout.part_name(number), buffer.getvalue())


def _ids(frame: pl.DataFrame, column: str) -> np.ndarray:
    return frame[column].to_numpy().astype(np.int64, copy=False)


# --- Routed kNN ------------------------------------------------------------------------------


def sample_task(plan: ReducePlan, number: int, share: float, block: int = 64) -> int:
    """About ``share`` of a partition's vectors for training the lists, read as blocks of
    rows spread evenly over it (a few byte ranges, not the whole partition)."""
    part = plan.partitions[number]
    wanted = max(1, round(share * (part.stop - part.first)))
    starts = np.unique(np.linspace(0, max(0, part.stop - part.first - block), max(1, -(-wanted // block))).astype(np.int64))
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
        schema=dict(_route(plan).schema),
    )
    _route(plan).send(number, plan.bucket_of(lists), entries)
    return len(ids)


def score_task(plan: ReducePlan, bucket: int) -> int:
    """Score each list of a bucket (its queries against its members, one matrix product)
    and send every candidate to its query's partition; keep the members as the saved
    routed index."""
    entries = _route(plan).receive(bucket)
    ids, lists, member = _ids(entries, "id"), _ids(entries, "list"), entries["member"].to_numpy()
    vectors = entries["vector"].to_numpy() if entries.height else np.zeros((0, plan.d), dtype=np.float32)
    query, candidate, sim = score_lists(ids, lists, member, vectors, plan.k)
    _candidates(plan).send(bucket, plan.partition_of(query), pl.DataFrame({"query": query, "candidate": candidate, "sim": sim}))
    buffer = io.BytesIO()
    entries.filter(pl.col("member")).drop("member").write_ipc(buffer)
    plan.work.sub(ROUTED_INDEX_DIR).write_bytes(f"bucket-{bucket:05d}.arrow", buffer.getvalue())
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
        frame = pl.DataFrame({"query": query[valid], "candidate": ids.ravel()[valid], "sim": sims.ravel()[valid]})
        # Each block is one query partition: one file per (index shard, query partition).
        _candidates(plan).send(group[0], plan.partition_of(frame["query"].to_numpy()), frame)
        sent += frame.height
    return sent


# --- Top-k, pairs, names ---------------------------------------------------------------------


def merge_task(plan: ReducePlan, number: int) -> int:
    """Each query's top-k from its candidates: edges/part-<n> (src, dst, similarity);
    every edge as a pair (a < b) to a's partition, each image's nearest neighbour to
    that neighbour's partition (for its name). Returns the number of edges."""
    part = plan.partitions[number]
    found = _candidates(plan).receive(number)
    src, dst, sim = merge_candidates(_ids(found, "query"), _ids(found, "candidate"), found["sim"].to_numpy(), plan.k)
    _write_part(plan.work, layout.EDGES_DIR, number, pl.DataFrame({"src": src, "dst": dst, "similarity": sim}))
    a, b = np.minimum(src, dst), np.maximum(src, dst)
    _pairs(plan).send(number, plan.partition_of(a), pl.DataFrame({"a": a, "b": b, "sim": sim}))
    first = np.r_[True, src[1:] != src[:-1]] if len(src) else np.zeros(0, dtype=bool)
    names = partition_names(plan, part)
    nearest = pl.DataFrame(
        {"src": src[first], "dst": dst[first], "sim": sim[first], "from": [names[i - part.first] for i in src[first]]},
        schema=dict(_nearest(plan).schema),
    )
    _nearest(plan).send(number, plan.partition_of(dst[first]), nearest)
    return len(src)


def hash_task(plan: ReducePlan, number: int) -> int:
    """Send each row's content hash to the task that owns that hash."""
    part = plan.partitions[number]
    stats = partition_stats(plan, part)
    if stats is None or "hash" not in stats.columns:
        return 0
    frame = pl.DataFrame({"id": np.arange(part.first, part.stop, dtype=np.int64), "hash": stats["hash"]}).filter(pl.col("hash").is_not_null() & (pl.col("hash") != ""))
    owner = (frame["hash"].hash(seed=0).to_numpy() % len(plan.partitions)).astype(np.int64)
    _hashes(plan).send(number, owner, frame)
    return frame.height


def group_task(plan: ReducePlan, number: int) -> int:
    """Byte-identical rows: a star of pairs from each group's first row to the others
    (to the pairs exchange, similarity 1.0), and each member's leader to its partition."""
    rows = _hashes(plan).receive(number)
    grouped = rows.with_columns(pl.col("id").min().over("hash").alias("leader"), pl.len().over("hash").alias("size")).filter(pl.col("size") > 1)
    ids, leaders = _ids(grouped, "id"), _ids(grouped, "leader")
    _leaders(plan).send(number, plan.partition_of(ids), pl.DataFrame({"id": ids, "leader": leaders}))
    copy = ids != leaders
    star = pl.DataFrame({"a": leaders[copy], "b": ids[copy], "sim": np.ones(int(copy.sum()), dtype=np.float32)})
    _pairs(plan).send(len(plan.partitions) + number, plan.partition_of(leaders[copy]), star)
    return int(copy.sum())


def _leader_of(plan: ReducePlan, part: Partition, ids: np.ndarray) -> np.ndarray:
    leaders = np.full(part.stop - part.first, -1, dtype=np.int64)
    known = _leaders(plan).receive(part.number)
    leaders[_ids(known, "id") - part.first] = _ids(known, "leader")
    return leaders[ids - part.first]


def pairs_task(plan: ReducePlan, number: int) -> int:
    """Each pair (a in this partition) once, at its best similarity, with a's name and
    content leader, to b's partition."""
    part = plan.partitions[number]
    pairs = _pairs(plan).receive(number).group_by("a", "b").agg(pl.col("sim").max()).sort("a", "b")
    a = _ids(pairs, "a")
    names = partition_names(plan, part)
    out = pairs.with_columns(
        pl.Series("leader_a", _leader_of(plan, part, a)),
        pl.Series("from", [names[i - part.first] for i in a], dtype=pl.String),
    )
    _resolve(plan).send(number, plan.partition_of(_ids(pairs, "b")), out.select(name for name, _ in _resolve(plan).schema))
    return pairs.height


def resolve_task(plan: ReducePlan, number: int) -> tuple[int, int]:
    """Pairs with b in this partition get b's name and their exact flag: similarity/part-<n>
    (pairs >= threshold); pairs >= max(threshold, ccthreshold) join components. The nearest
    neighbours sent here get their names too (the outliers' candidates). Returns (similar
    pairs, joined edges)."""
    part = plan.partitions[number]
    names = pl.Series("names", partition_names(plan, part), dtype=pl.String)
    pairs = _resolve(plan).receive(number)
    a, b = _ids(pairs, "a"), _ids(pairs, "b")
    leader_b = _leader_of(plan, part, b)
    exact = (leader_b >= 0) & (leader_b == _ids(pairs, "leader_a"))
    sim = np.where(exact, np.float32(1.0), np.clip(pairs["sim"].to_numpy(), 0.0, 1.0)).astype(np.float32)
    similar = rules.at_least(sim, plan.threshold)
    table = pl.DataFrame(
        {
            "from": pairs["from"].filter(pl.Series(similar)),
            "to": names.gather(b[similar] - part.first),
            "distance": rules.csv_values(sim[similar]),
            "exact": pl.Series(exact[similar], dtype=pl.Boolean),
            # The rows' ids order ties as the in-memory reduce does (rules.SIMILARITY_ORDER).
            "from_id": a[similar],
            "to_id": b[similar],
        }
    )
    _write_part(plan.work, layout.TABLE_PARTS[layout.SIMILARITY_FILE], number, table)
    joined = rules.at_least(sim, plan.joined_threshold)
    ja, jb, js = a[joined], b[joined], sim[joined]
    _joined(plan).send(number, plan.partition_of(ja), pl.DataFrame({"a": ja, "b": jb, "sim": js}))
    both = pl.DataFrame({"u": np.concatenate([ja, jb]), "v": np.concatenate([jb, ja])})
    _large_star_inbox(plan, 0).send(number, plan.partition_of(both["u"].to_numpy()), both)
    nearest = _nearest(plan).receive(number)
    nearest = nearest.with_columns(names.gather(_ids(nearest, "dst") - part.first).alias("to"))
    _write_part(plan.scratch, "nearest", number, nearest.select("src", "from", "to", pl.col("sim").clip(0.0, 1.0)))
    return int(similar.sum()), int(joined.sum())


# --- Components: large-star / small-star rounds ----------------------------------------------


def large_star_task(plan: ReducePlan, number: int, round_number: int) -> int:
    entries = _large_star_inbox(plan, round_number).receive(number)
    a, b, changed = large_star(_ids(entries, "u"), _ids(entries, "v"))
    _small_star_inbox(plan, round_number).send(number, plan.partition_of(a), pl.DataFrame({"u": a, "v": b}))
    return changed


def small_star_task(plan: ReducePlan, number: int, round_number: int) -> int:
    """Small-star on this partition's nodes; also writes their labels as the graph now
    stands (final once a round changes nothing)."""
    part = plan.partitions[number]
    entries = _small_star_inbox(plan, round_number).receive(number)
    u, v = _ids(entries, "u"), _ids(entries, "v")
    buffer = io.BytesIO()
    np.save(buffer, star_labels(part.first, part.stop, u, v))
    plan.scratch.sub("labels").write_bytes(f"part-{number:05d}.npy", buffer.getvalue())
    a, b, changed = small_star(u, v)
    both = pl.DataFrame({"u": np.concatenate([a, b]), "v": np.concatenate([b, a])})
    _large_star_inbox(plan, round_number + 1).send(number, plan.partition_of(both["u"].to_numpy()), both)
    return changed


def _labels(plan: ReducePlan, number: int) -> np.ndarray:
    return np.load(io.BytesIO(plan.scratch.sub("labels").read_bytes(f"part-{number:05d}.npy")))


# --- Pagerank per component, then the per-row tables -----------------------------------------


def component_edges_task(plan: ReducePlan, number: int) -> int:
    """Tag each joined edge (a in this partition) with its component, and send it to
    the partition of the component's id (its smallest node)."""
    part = plan.partitions[number]
    edges = _joined(plan).receive(number)
    component = _labels(plan, number)[_ids(edges, "a") - part.first]
    _component_edges(plan).send(number, plan.partition_of(component), edges.with_columns(pl.Series("component", component)).select("component", "a", "b", "sim"))
    return edges.height


def pagerank_task(plan: ReducePlan, number: int) -> int:
    """Pagerank of the components whose id is in this partition, solved together (each
    converges on its own); their sizes go to component_info/, ranks to their nodes."""
    edges = _component_edges(plan).receive(number)
    nodes, component, rank, delta = component_pagerank(_ids(edges, "a"), _ids(edges, "b"), edges["sim"].to_numpy(), _ids(edges, "component"))
    _ranks(plan).send(number, plan.partition_of(nodes), pl.DataFrame({"node": nodes, "pagerank": rank, "delta": delta}))
    ids, counts = np.unique(component, return_counts=True)
    _write_part(plan.work, layout.TABLE_PARTS[layout.COMPONENT_INFO_FILE], number, pl.DataFrame({"component_id": ids.astype(np.int64), "Count": counts.astype(np.int64)}))
    return len(ids)


def rows_task(plan: ReducePlan, number: int) -> tuple[int, int]:
    """connected_components/ (and the one-image components of component_info/) and
    stats/ for this partition's rows. Returns (one-image components, stats rows)."""
    part = plan.partitions[number]
    labels = _labels(plan, number)
    ranked = _ranks(plan).receive(number)
    rank = np.full(len(labels), rules.PAGERANK_RESET)
    delta = np.zeros(len(labels))
    local = _ids(ranked, "node") - part.first
    rank[local] = ranked["pagerank"].to_numpy()
    delta[local] = ranked["delta"].to_numpy()
    ids = np.arange(part.first, part.stop, dtype=np.int64)
    members, _ = outputs.component_tables(labels, rank, delta, partition_names(plan, part))
    members = members.with_columns(pl.Series("__id", ids))
    _write_part(plan.work, layout.TABLE_PARTS[layout.CONNECTED_COMPONENTS_FILE], number, members)
    alone = np.ones(len(labels), dtype=bool)
    alone[local] = False
    singles = ids[alone & (labels == ids)]
    _write_part(plan.work, layout.TABLE_PARTS[layout.COMPONENT_INFO_FILE], len(plan.partitions) + number, pl.DataFrame({"component_id": singles, "Count": np.ones(len(singles), dtype=np.int64)}))
    stats = partition_stats(plan, part)
    if stats is None:
        return len(singles), 0
    table = outputs.stats_table(stats).with_columns(pl.col("__id") + part.first)
    _write_part(plan.work, layout.TABLE_PARTS[layout.STATS_FILE], number, table)
    return len(singles), table.height


def _scan(work: WorkDir, folder: str) -> pl.LazyFrame:
    """The parts of a folder as one lazy frame (local copies of remote parts, so polars
    streams them)."""
    return pl.scan_parquet([work.local_copy(name) for name in results.part_names(work, folder)])


def outliers_task(plan: ReducePlan, count: int) -> int:
    """The ``count`` images whose nearest neighbour is least similar (ties by row),
    least outlying first: outliers/part-00000 (from, to, distance)."""
    lowest = _scan(plan.scratch, "nearest").sort("sim", "src").head(count).collect(engine="streaming")
    table = lowest.sort(pl.col("sim"), pl.col("src"), descending=[True, False]).select("from", "to", "sim")
    table = table.with_columns(pl.Series("sim", rules.csv_values(table["sim"].to_numpy())).alias("distance")).drop("sim")
    _write_part(plan.work, layout.TABLE_PARTS[layout.OUTLIERS_FILE], 0, table)
    return table.height


TABLE_ORDER = {
    layout.SIMILARITY_FILE: rules.SIMILARITY_ORDER,
    layout.OUTLIERS_FILE: (None, None),
    layout.CONNECTED_COMPONENTS_FILE: rules.ROW_ORDER,
    layout.COMPONENT_INFO_FILE: rules.COMPONENT_INFO_ORDER,
    layout.STATS_FILE: rules.ROW_ORDER,
}


def csv_task(plan: ReducePlan, name: str) -> int:
    """The run guide's CSV of table ``name``, streamed from its parts by polars (sorted
    as the in-memory reduce writes it), written atomically."""
    import uuid

    columns, descending = TABLE_ORDER[name]
    frame = _scan(plan.work, layout.TABLE_PARTS[name])
    if columns:
        frame = frame.sort(columns, descending=descending, maintain_order=True)
    frame = frame.drop(layout.PART_ORDER_COLUMNS, strict=False)
    local = plan.work.staging / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        frame.sink_csv(local)
        plan.work.put(local, name)
    finally:
        local.unlink(missing_ok=True)
    return 1


# --- The driver's side: waves over the engine ------------------------------------------------


def _wave(engine, function, items) -> list:
    return list(engine.map(function, list(items)))


def components_in_star_rounds(engine, plan: ReducePlan, max_rounds: int = 100) -> int:
    """Large-star then small-star until a round changes nothing; returns the rounds."""
    numbers = range(len(plan.partitions))
    for round_number in range(max_rounds):
        changed = sum(_wave(engine, partial(large_star_task, plan, round_number=round_number), numbers))
        changed += sum(_wave(engine, partial(small_star_task, plan, round_number=round_number), numbers))
        plan.scratch.remove_tree(f"large-star-{round_number}")
        plan.scratch.remove_tree(f"small-star-{round_number}")
        if changed == 0:
            plan.scratch.remove_tree(f"large-star-{round_number + 1}")
            return round_number + 1
    raise RuntimeError(f"components did not converge in {max_rounds} rounds")


def clear_outputs(work: WorkDir) -> None:
    """Remove every table (CSV and parts) and the scratch an earlier reduce left."""
    for folder in (*layout.TABLE_PARTS.values(), layout.EDGES_DIR, layout.REDUCE_SCRATCH_DIR, ROUTED_INDEX_DIR):
        work.remove_tree(folder)
    for name in layout.OUTPUT_FILES:
        work.remove(name)


def reduce_in_waves(engine, plan: ReducePlan, lower_threshold: float, csv_row_limit: int, phase) -> dict[str, int]:
    """Run every wave; returns the counts of the run summary (pairs, outliers, ...)."""
    numbers = range(len(plan.partitions))
    n = plan.partitions[-1].stop if plan.partitions else 0
    clear_outputs(plan.work)
    groups = [tuple(numbers[i : i + 4]) for i in range(0, len(plan.partitions), 4)]
    if plan.spec != "Flat":
        with phase("lists"):
            share = min(1.0, max(TRAINING_SAMPLE, POINTS_PER_LIST * plan.nlist) / max(1, n))
            _wave(engine, partial(sample_task, plan, share=share), numbers)
            nlist = _wave(engine, partial(train_task, plan), [0])[0]
            plan = replace(plan, nlist=nlist, buckets=min(plan.buckets, nlist))
        with phase("route"):
            _wave(engine, partial(route_task, plan), numbers)
    with phase("knn"):
        if plan.spec == "Flat":
            _wave(engine, partial(exact_shard_task, plan), groups)
        else:
            _wave(engine, partial(score_task, plan), range(plan.buckets))
        plan.scratch.remove_tree("route")
        edges = sum(_wave(engine, partial(merge_task, plan), numbers))
        plan.scratch.remove_tree("candidates")
    with phase("pairs"):
        if plan.has_hashes:
            _wave(engine, partial(hash_task, plan), numbers)
            _wave(engine, partial(group_task, plan), numbers)
        _wave(engine, partial(pairs_task, plan), numbers)
        resolved = _wave(engine, partial(resolve_task, plan), numbers)
    with phase("components"):
        rounds = components_in_star_rounds(engine, plan)
        _wave(engine, partial(component_edges_task, plan), numbers)
        grouped = _wave(engine, partial(pagerank_task, plan), numbers)
        singles = _wave(engine, partial(rows_task, plan), numbers)
    with phase("outputs"):
        count = rules.outlier_count(lower_threshold, edges, n)
        outlier_rows = _wave(engine, partial(outliers_task, plan), [count])[0]
        rows = {
            layout.SIMILARITY_FILE: sum(r[0] for r in resolved),
            layout.OUTLIERS_FILE: outlier_rows,
            layout.CONNECTED_COMPONENTS_FILE: n,
            layout.COMPONENT_INFO_FILE: sum(grouped) + sum(s[0] for s in singles),
            layout.STATS_FILE: sum(s[1] for s in singles),
        }
        # A table's CSV while it is small; stats.csv only when every row has statistics.
        small = [name for name, table_rows in rows.items() if table_rows <= csv_row_limit and (name != layout.STATS_FILE or table_rows == n)]
        _wave(engine, partial(csv_task, plan), small)
        plan.work.remove_tree(layout.REDUCE_SCRATCH_DIR)
    log.info("distributed reduce: %d rows in %d partitions, %d kNN edges, components in %d rounds", n, len(plan.partitions), edges, rounds)
    return {
        "similar_pairs": rows[layout.SIMILARITY_FILE],
        "outlier_rows": outlier_rows,
        "components": rows[layout.COMPONENT_INFO_FILE],
        "grouped_images": n - sum(s[0] for s in singles),
    }


# --- Run modes 3 and 4: test vectors against the routed index --------------------------------


def search_routed_index(work: WorkDir, queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges (query row, train row, similarity) from each test vector to its k nearest
    train vectors among the members of the lists it probes, one saved bucket of lists
    in memory at a time."""
    saved = work.sub(ROUTED_INDEX_DIR)
    centroids = np.load(io.BytesIO(saved.read_bytes("centroids.npy")))
    probes = route(queries, centroids, nprobe)
    width = probes.shape[1]
    # Test rows get negative ids, so no test row is ever taken for a train row of its own.
    query_ids = -1 - np.arange(len(queries), dtype=np.int64)
    found = []
    for name in saved.names():
        if not name.startswith("bucket-"):
            continue
        members = pl.read_ipc(saved.read_bytes(name))
        lists = _ids(members, "list")
        wanted = np.isin(probes, np.unique(lists))
        rows, _ = np.nonzero(wanted)
        if len(rows) == 0:
            continue
        ids = np.concatenate([query_ids[rows], _ids(members, "id")])
        vectors = np.concatenate([queries[rows], members["vector"].to_numpy()])
        is_member = np.r_[np.zeros(len(rows), dtype=bool), np.ones(members.height, dtype=bool)]
        query, candidate, sim = score_lists(ids, np.concatenate([probes[wanted], lists]), is_member, vectors, k, is_query=~is_member)
        found.append((-1 - query, candidate, sim))
    if not found or width == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    src, dst, sim = merge_candidates(*(np.concatenate(column) for column in zip(*found)), k)
    return src, dst, np.clip(sim, 0.0, 1.0)

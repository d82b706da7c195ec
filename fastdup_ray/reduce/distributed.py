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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial

import numpy as np
import polars as pl

from fastdup_ray.reduce import outputs, rules
from fastdup_ray.reduce.exchange import Exchange
from fastdup_ray.reduce.graph import (
    component_pagerank,
    large_star,
    small_star,
    star_labels,
)
from fastdup_ray.reduce.index import threads_while
from fastdup_ray.reduce.knn_waves import (
    POINTS_PER_LIST,
    ROUTED_INDEX_DIR,
    TRAINING_SAMPLE,
    exact_shard_task,
    route_task,
    sample_task,
    score_task,
    train_task,
)
from fastdup_ray.reduce.lists import merge_candidates
from fastdup_ray.reduce.partitions import (
    Partition,
    ReducePlan,
    candidate_inbox,
    ids_of,
    partition_names,
    partition_stats,
    write_part,
)
from fastdup_ray.rundir import layout, results
from fastdup_ray.rundir.workdir import WorkDir

log = logging.getLogger("fastdup_ray")


def _pairs(plan: ReducePlan) -> Exchange:
    return plan.exchange("pairs", a=pl.Int64, b=pl.Int64, sim=pl.Float32)


def _nearest(plan: ReducePlan) -> Exchange:
    return plan.exchange("nearest", src=pl.Int64, dst=pl.Int64, sim=pl.Float32, **{"from": pl.String})


def _hashes(plan: ReducePlan) -> Exchange:
    return plan.exchange("hashes", id=pl.Int64, hash=pl.String)


def _leaders(plan: ReducePlan) -> Exchange:
    return plan.exchange("leaders", id=pl.Int64, leader=pl.Int64)


def _resolve(plan: ReducePlan) -> Exchange:
    return plan.exchange(
        "resolve", a=pl.Int64, b=pl.Int64, sim=pl.Float32, leader_a=pl.Int64, **{"from": pl.String}
    )


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


# --- Top-k, pairs, names ---------------------------------------------------------------------


def merge_task(plan: ReducePlan, number: int) -> int:
    """Each query's top-k from its candidates: edges/part-<n> (src, dst, similarity);
    every edge as a pair (a < b) to a's partition, each image's nearest neighbour to
    that neighbour's partition (for its name). Returns the number of edges."""
    part = plan.partitions[number]
    found = candidate_inbox(plan).receive(number)
    src, dst, sim = merge_candidates(
        ids_of(found, "query"), ids_of(found, "candidate"), found["sim"].to_numpy(), plan.k
    )
    write_part(plan.work, layout.EDGES_DIR, number, pl.DataFrame({"src": src, "dst": dst, "similarity": sim}))
    a, b = np.minimum(src, dst), np.maximum(src, dst)
    _pairs(plan).send(number, plan.partition_of(a), pl.DataFrame({"a": a, "b": b, "sim": sim}))
    first = np.r_[True, src[1:] != src[:-1]] if len(src) else np.zeros(0, dtype=bool)
    names = partition_names(plan, part)
    nearest = pl.DataFrame(
        {
            "src": src[first],
            "dst": dst[first],
            "sim": sim[first],
            "from": [names[i - part.first] for i in src[first]],
        },
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
    frame = pl.DataFrame(
        {"id": np.arange(part.first, part.stop, dtype=np.int64), "hash": stats["hash"]}
    ).filter(pl.col("hash").is_not_null() & (pl.col("hash") != ""))
    owner = (frame["hash"].hash(seed=0).to_numpy() % len(plan.partitions)).astype(np.int64)
    _hashes(plan).send(number, owner, frame)
    return frame.height


def group_task(plan: ReducePlan, number: int) -> int:
    """Byte-identical rows: a star of pairs from each group's first row to the others
    (to the pairs exchange, similarity 1.0), and each member's leader to its partition."""
    rows = _hashes(plan).receive(number)
    grouped = rows.with_columns(
        pl.col("id").min().over("hash").alias("leader"), pl.len().over("hash").alias("size")
    ).filter(pl.col("size") > 1)
    ids, leaders = ids_of(grouped, "id"), ids_of(grouped, "leader")
    _leaders(plan).send(number, plan.partition_of(ids), pl.DataFrame({"id": ids, "leader": leaders}))
    copy = ids != leaders
    star = pl.DataFrame(
        {"a": leaders[copy], "b": ids[copy], "sim": np.ones(int(copy.sum()), dtype=np.float32)}
    )
    _pairs(plan).send(len(plan.partitions) + number, plan.partition_of(leaders[copy]), star)
    return int(copy.sum())


def _leader_of(plan: ReducePlan, part: Partition, ids: np.ndarray) -> np.ndarray:
    leaders = np.full(part.stop - part.first, -1, dtype=np.int64)
    known = _leaders(plan).receive(part.number)
    leaders[ids_of(known, "id") - part.first] = ids_of(known, "leader")
    return leaders[ids - part.first]


def pairs_task(plan: ReducePlan, number: int) -> int:
    """Each pair (a in this partition) once, at its best similarity, with a's name and
    content leader, to b's partition."""
    part = plan.partitions[number]
    pairs = _pairs(plan).receive(number).group_by("a", "b").agg(pl.col("sim").max()).sort("a", "b")
    a = ids_of(pairs, "a")
    names = partition_names(plan, part)
    out = pairs.with_columns(
        pl.Series("leader_a", _leader_of(plan, part, a)),
        pl.Series("from", [names[i - part.first] for i in a], dtype=pl.String),
    )
    _resolve(plan).send(
        number, plan.partition_of(ids_of(pairs, "b")), out.select(name for name, _ in _resolve(plan).schema)
    )
    return pairs.height


def resolve_task(plan: ReducePlan, number: int) -> tuple[int, int]:
    """Pairs with b in this partition get b's name and their exact flag: similarity/part-<n>
    (pairs >= threshold); pairs >= max(threshold, ccthreshold) join components. The nearest
    neighbours sent here get their names too (the outliers' candidates). Returns (similar
    pairs, joined edges)."""
    part = plan.partitions[number]
    names = pl.Series("names", partition_names(plan, part), dtype=pl.String)
    pairs = _resolve(plan).receive(number)
    a, b = ids_of(pairs, "a"), ids_of(pairs, "b")
    leader_b = _leader_of(plan, part, b)
    exact = (leader_b >= 0) & (leader_b == ids_of(pairs, "leader_a"))
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
    write_part(plan.work, layout.TABLE_PARTS[layout.SIMILARITY_FILE], number, table)
    joined = rules.at_least(sim, plan.joined_threshold)
    ja, jb, js = a[joined], b[joined], sim[joined]
    _joined(plan).send(number, plan.partition_of(ja), pl.DataFrame({"a": ja, "b": jb, "sim": js}))
    both = pl.DataFrame({"u": np.concatenate([ja, jb]), "v": np.concatenate([jb, ja])})
    _large_star_inbox(plan, 0).send(number, plan.partition_of(both["u"].to_numpy()), both)
    nearest = _nearest(plan).receive(number)
    nearest = nearest.with_columns(names.gather(ids_of(nearest, "dst") - part.first).alias("to"))
    write_part(
        plan.scratch, "nearest", number, nearest.select("src", "from", "to", pl.col("sim").clip(0.0, 1.0))
    )
    return int(similar.sum()), int(joined.sum())


# --- Components: large-star / small-star rounds ----------------------------------------------


def large_star_task(plan: ReducePlan, number: int, round_number: int) -> int:
    entries = _large_star_inbox(plan, round_number).receive(number)
    a, b, changed = large_star(ids_of(entries, "u"), ids_of(entries, "v"))
    _small_star_inbox(plan, round_number).send(number, plan.partition_of(a), pl.DataFrame({"u": a, "v": b}))
    return changed


def small_star_task(plan: ReducePlan, number: int, round_number: int) -> int:
    """Small-star on this partition's nodes; also writes their labels as the graph now
    stands (final once a round changes nothing)."""
    part = plan.partitions[number]
    entries = _small_star_inbox(plan, round_number).receive(number)
    u, v = ids_of(entries, "u"), ids_of(entries, "v")
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
    component = _labels(plan, number)[ids_of(edges, "a") - part.first]
    _component_edges(plan).send(
        number,
        plan.partition_of(component),
        edges.with_columns(pl.Series("component", component)).select("component", "a", "b", "sim"),
    )
    return edges.height


def pagerank_task(plan: ReducePlan, number: int) -> int:
    """Pagerank of the components whose id is in this partition, solved together (each
    converges on its own); their sizes go to component_info/, ranks to their nodes."""
    edges = _component_edges(plan).receive(number)
    nodes, component, rank, delta = component_pagerank(
        ids_of(edges, "a"), ids_of(edges, "b"), edges["sim"].to_numpy(), ids_of(edges, "component")
    )
    _ranks(plan).send(
        number, plan.partition_of(nodes), pl.DataFrame({"node": nodes, "pagerank": rank, "delta": delta})
    )
    ids, counts = np.unique(component, return_counts=True)
    write_part(
        plan.work,
        layout.TABLE_PARTS[layout.COMPONENT_INFO_FILE],
        number,
        pl.DataFrame({"component_id": ids.astype(np.int64), "Count": counts.astype(np.int64)}),
    )
    return len(ids)


def rows_task(plan: ReducePlan, number: int) -> tuple[int, int]:
    """connected_components/ (and the one-image components of component_info/) and
    stats/ for this partition's rows. Returns (one-image components, stats rows)."""
    part = plan.partitions[number]
    labels = _labels(plan, number)
    ranked = _ranks(plan).receive(number)
    rank = np.full(len(labels), rules.PAGERANK_RESET)
    delta = np.zeros(len(labels))
    local = ids_of(ranked, "node") - part.first
    rank[local] = ranked["pagerank"].to_numpy()
    delta[local] = ranked["delta"].to_numpy()
    ids = np.arange(part.first, part.stop, dtype=np.int64)
    members, _ = outputs.component_tables(labels, rank, delta, partition_names(plan, part))
    members = members.with_columns(pl.Series("__id", ids))
    write_part(plan.work, layout.TABLE_PARTS[layout.CONNECTED_COMPONENTS_FILE], number, members)
    alone = np.ones(len(labels), dtype=bool)
    alone[local] = False
    singles = ids[alone & (labels == ids)]
    write_part(
        plan.work,
        layout.TABLE_PARTS[layout.COMPONENT_INFO_FILE],
        len(plan.partitions) + number,
        pl.DataFrame({"component_id": singles, "Count": np.ones(len(singles), dtype=np.int64)}),
    )
    stats = partition_stats(plan, part)
    if stats is None:
        return len(singles), 0
    table = outputs.stats_table(stats).with_columns(pl.col("__id") + part.first)
    write_part(plan.work, layout.TABLE_PARTS[layout.STATS_FILE], number, table)
    return len(singles), table.height


@contextmanager
def _scan(work: WorkDir, folder: str) -> Iterator[pl.LazyFrame]:
    """The parts of a folder as one lazy frame, to be collected inside the block (remote
    parts are streamed by polars from local copies, removed when the block ends)."""
    with work.local_copies(results.part_names(work, folder)) as paths:
        yield pl.scan_parquet(paths)


def outliers_task(plan: ReducePlan, count: int) -> int:
    """The ``count`` images whose nearest neighbour is least similar (ties by row),
    least outlying first: outliers/part-00000 (from, to, distance)."""
    with _scan(plan.scratch, "nearest") as nearest:
        lowest = nearest.sort("sim", "src").head(count).collect(engine="streaming")
    table = lowest.sort(pl.col("sim"), pl.col("src"), descending=[True, False]).select("from", "to", "sim")
    table = table.with_columns(
        pl.Series("sim", rules.csv_values(table["sim"].to_numpy())).alias("distance")
    ).drop("sim")
    write_part(plan.work, layout.TABLE_PARTS[layout.OUTLIERS_FILE], 0, table)
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
    local = plan.work.staging / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with _scan(plan.work, layout.TABLE_PARTS[name]) as frame:
            if columns:
                frame = frame.sort(columns, descending=descending, maintain_order=True)
            frame.drop(layout.PART_ORDER_COLUMNS, strict=False).sink_csv(local)
        plan.work.put(local, name)
    finally:
        local.unlink(missing_ok=True)
    return 1


# --- The driver's side: waves over the engine ------------------------------------------------


def _wave(engine, function, items) -> list:
    """``function`` over ``items`` on the engine, each item on its share of the cores: a
    wave of fewer items than cores (the lists' k-means, a small reduce's few partitions)
    runs each on several threads instead of leaving the other cores idle. A task given
    one core sets one thread too: a Ray worker started for a task of several keeps that
    many as its default."""
    items = list(items)
    cpus = engine.cpus_per_item(len(items))
    return list(engine.map(partial(on_threads, cpus, function), items, cpus=cpus))


def on_threads(count: int, function, item):
    with threads_while(count):
        return function(item)


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
    for folder in (
        *layout.TABLE_PARTS.values(),
        layout.EDGES_DIR,
        layout.REDUCE_SCRATCH_DIR,
        ROUTED_INDEX_DIR,
    ):
        work.remove_tree(folder)
    for name in layout.OUTPUT_FILES:
        work.remove(name)


def reduce_in_waves(
    engine, plan: ReducePlan, lower_threshold: float, csv_row_limit: int, phase
) -> dict[str, int]:
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
        small = [
            name
            for name, table_rows in rows.items()
            if table_rows <= csv_row_limit and (name != layout.STATS_FILE or table_rows == n)
        ]
        _wave(engine, partial(csv_task, plan), small)
        plan.work.remove_tree(layout.REDUCE_SCRATCH_DIR)
    log.info(
        "distributed reduce: %d rows in %d partitions, %d kNN edges, components in %d rounds",
        n,
        len(plan.partitions),
        edges,
        rounds,
    )
    return {
        "similar_pairs": rows[layout.SIMILARITY_FILE],
        "outlier_rows": outlier_rows,
        "components": rows[layout.COMPONENT_INFO_FILE],
        "grouped_images": n - sum(s[0] for s in singles),
    }

"""Reduce stage: kNN over a run's feature shards, then pairs, components and the tables.

The strategy is chosen here, by size (``reduce_strategy``, 'auto' by default): while the
vectors fit ``reduce_memory_gb``, every vector in memory with a faiss index (``Flat`` and
the other factory strings) or, for ``IVF<n>,Flat``, streamed into lists and each scored
exactly against its ``nprobe`` nearest lists; above it, the distributed reduce
(distributed.py), waves of tasks on the run's engine that write every table as
Parquet parts. The index is saved for run modes 3 and 4 (saved_index.py).
"""

from __future__ import annotations

import logging
import re
from functools import partial

import numpy as np

from fastdup_ray.config import RunConfig
from fastdup_ray.engine import EngineSlot
from fastdup_ray.reduce import outputs, rules
from fastdup_ray.reduce.distributed import clear_outputs, reduce_in_waves
from fastdup_ray.reduce.graph import connected_components, pagerank
from fastdup_ray.reduce.index import (
    build_index,
    factory_string,
    knn_edges,
    searcher_for,
    topk_edges,
)
from fastdup_ray.reduce.lists import (
    ivf_flat_lists,
    ivf_knn,
)
from fastdup_ray.reduce.partitions import ReducePlan, plan_partitions
from fastdup_ray.reduce.saved_index import (
    remove_saved_index,
    save_index,
    write_index_manifest,
)
from fastdup_ray.rundir import layout
from fastdup_ray.rundir.shards import (
    load_names,
    load_shards,
    load_stats,
    read_marker,
    write_merged_bad_list,
)
from fastdup_ray.rundir.summary import RunSummary, stage_timer
from fastdup_ray.rundir.workdir import WorkDir

log = logging.getLogger("fastdup_ray")


def run_stats(work: WorkDir, prefixes: list[str], n: int):
    """The statistics of every row (with its content hash), or None when a shard has none."""
    stats = load_stats(work, prefixes)
    return stats if stats is not None and stats.height == n else None


def write_stats(work: WorkDir, stats) -> None:
    """stats.csv and stats.parquet, when every shard carries the statistics of its images."""
    import io

    if stats is None:
        return
    table = outputs.stats_table(stats)
    work.write_bytes(layout.STATS_FILE, table.write_csv().encode("utf-8"))
    buffer = io.BytesIO()
    table.write_parquet(buffer)
    work.write_bytes(layout.STATS_PARQUET, buffer.getvalue())


def rows_have_hashes(work: WorkDir, prefixes: list[str], rows: list[int]) -> bool:
    """Whether the shards carry content hashes (judged by the first shard with rows;
    features a user brought have none)."""
    first = next((p for p, r in zip(prefixes, rows) if r), None)
    stats = load_stats(work, [first]) if first is not None else None
    return stats is not None and "hash" in stats.columns


def choose_strategy(config: RunConfig, n: int, d: int) -> str:
    """'memory' while the vectors fit reduce_memory_gb, else 'distributed' (or what
    reduce_strategy names); fewer than two vectors have no neighbours to distribute."""
    if n < 2:
        return "memory"
    if config.reduce_strategy != "auto":
        return config.reduce_strategy
    return "distributed" if n * d * 4 > config.reduce_memory_gb * 2**30 else "memory"


def routed_lists(spec: str, n: int, rows_per_list: int = 1000) -> int:
    """Lists of the routed kNN: the spec's IVF<n> when it names one, else about
    rows_per_list vectors per list, so the work per vector stays the same at any n."""
    match = re.search(r"IVF(\d+)", spec)
    return int(match.group(1)) if match else max(1, n // rows_per_list)


def reduce_distributed(
    config: RunConfig,
    work: WorkDir,
    prefixes: list[str],
    rows: list[int],
    d: int,
    summary: RunSummary,
    engines: EngineSlot,
    spec: str,
) -> None:
    """The reduce as waves of tasks on the run's engine (distributed.py); the
    driver keeps the per-shard plan only."""
    n = sum(rows)
    nlist = routed_lists(spec, n)
    plan = ReducePlan(
        work=work,
        d=d,
        k=config.nearest_neighbors_k,
        partitions=tuple(plan_partitions(prefixes, rows, config.rows_per_partition)),
        threshold=config.threshold,
        ccthreshold=config.ccthreshold,
        nlist=nlist,
        nprobe=config.nprobe,
        buckets=max(1, min(nlist, -(-n * config.nprobe // config.rows_per_partition))),
        spec="Flat" if spec == "Flat" else "routed",
        has_hashes=rows_have_hashes(work, prefixes, rows),
    )
    engine = engines.get()
    log.info(
        "distributed reduce of %d vectors in %d partitions on the %s engine (%s)",
        n,
        len(plan.partitions),
        engine.name,
        "exact" if plan.spec == "Flat" else f"{nlist} lists, nprobe {config.nprobe}",
    )
    remove_saved_index(work)
    counts = reduce_in_waves(
        engine,
        plan,
        config.lower_threshold,
        config.csv_row_limit,
        phase=lambda name: stage_timer(summary, name),
    )
    if plan.spec == "Flat":
        offsets = np.cumsum([0] + rows)
        shards = [
            {"file": None, "first": int(offsets[i]), "rows": r, "prefixes": [p]}
            for i, (p, r) in enumerate(zip(prefixes, rows))
            if r
        ]
        write_index_manifest(work, "Flat", d, shards)
    # A task writes the merged bad list, so its rows pass through no driver memory either.
    list(engine.map(partial(write_merged_bad_list, work), [prefixes]))
    for name, value in counts.items():
        setattr(summary, name, value)


def reduce_shards(
    config: RunConfig,
    work: WorkDir,
    prefixes: list[str],
    summary: RunSummary,
    engines: EngineSlot,
    compute: str,
) -> None:
    """kNN over the given shards (in order), then every output table."""
    # One read of each marker serves d and the rows per shard.
    markers = [read_marker(work, p) or {} for p in prefixes]
    d = markers[0].get("d", config.d)
    rows = [m.get("good", 0) for m in markers]
    spec = factory_string(config.nn_provider, config.nnf_mode, config.nnmodel)
    k = config.nearest_neighbors_k
    if choose_strategy(config, sum(rows), d) == "distributed":
        reduce_distributed(config, work, prefixes, rows, d, summary, engines, spec)
        return
    clear_outputs(work)
    if ivf_flat_lists(spec) and sum(rows) >= 2:
        # IVF<n>,Flat: shards streamed into the index's lists (one copy of the vectors),
        # every vector scored exactly against its nprobe nearest lists, blockwise.
        with stage_timer(summary, "load"):
            filenames = load_names(work, prefixes)
        n = len(filenames)
        sims, ids, listed, _ = ivf_knn(
            lambda i: load_shards(work, [prefixes[i]], d, normalize=True)[1],
            rows,
            d,
            k,
            ivf_flat_lists(spec),
            config.nprobe,
            phase=lambda name: stage_timer(summary, name),
        )
        with stage_timer(summary, "save_index"):
            remove_saved_index(work)
            save_index(listed.index, work)
        del listed
        src, dst, knn_sim = topk_edges(sims, ids)
    else:
        with stage_timer(summary, "load"):
            filenames, features = load_shards(work, prefixes, d, normalize=True)
        n = len(filenames)
        with stage_timer(summary, "index"):
            index = build_index(features, spec) if n >= 2 else None
            if index is not None:
                remove_saved_index(work)
                save_index(index, work)
        with stage_timer(summary, "knn"):
            if n >= 2:
                src, dst, knn_sim = knn_edges(features, k, index=searcher_for(index, compute))
            else:
                src = dst = np.zeros(0, dtype=np.int64)
                knn_sim = np.zeros(0, dtype=np.float32)
    with stage_timer(summary, "pairs"):
        stats = run_stats(work, prefixes, n)
        hashes = (
            stats["hash"].fill_null("").to_numpy() if stats is not None and "hash" in stats.columns else None
        )
        a, b, sim, exact = outputs.pairs_with_exact(src, dst, knn_sim, hashes)
    with stage_timer(summary, "components"):
        joined = rules.at_least(sim, rules.joined_threshold(config.threshold, config.ccthreshold))
        labels = connected_components(n, a[joined], b[joined])
        rank, delta = pagerank(n, a[joined], b[joined], sim[joined], labels=labels)
    with stage_timer(summary, "outputs"):
        similarity = outputs.similarity_table(filenames, a, b, sim, config.threshold, exact=exact)
        outliers = outputs.outliers_table(filenames, src, dst, knn_sim, config.lower_threshold)
        components, info = outputs.component_tables(labels, rank, delta, filenames)
        for table, name in (
            (similarity, layout.SIMILARITY_FILE),
            (outliers, layout.OUTLIERS_FILE),
            (info, layout.COMPONENT_INFO_FILE),
            (components, layout.CONNECTED_COMPONENTS_FILE),
        ):
            work.write_bytes(name, table.write_csv().encode("utf-8"))
        write_stats(work, stats)
        write_merged_bad_list(work, prefixes)
    summary.similar_pairs = similarity.height
    summary.outlier_rows = outliers.height
    summary.components = info.height
    summary.grouped_images = int(info.filter(info["Count"] > 1)["Count"].sum())

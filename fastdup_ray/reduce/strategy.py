"""Reduce stage: kNN over a run's feature shards, then pairs, components and the tables.

The strategy is chosen here, by size (``reduce_strategy``, 'auto' by default): while the
vectors fit ``reduce_memory_gb``, every vector in memory with a faiss index (``Flat`` and
the other factory strings) or, for ``IVF<n>,Flat``, streamed into lists and each scored
exactly against its ``nprobe`` nearest lists; above it, the distributed reduce
(distributed.py), waves of tasks on the run's engine that write every table as
Parquet parts. The index is saved for run modes 3 and 4 (saved_index.py).

The reduce is given :class:`ReduceSettings` (derived once from the run's config, by
pipeline.py) and returns a :class:`ReduceResult`: its counts and the seconds of each phase.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import partial

import numpy as np

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
from fastdup_ray.rundir.summary import timer
from fastdup_ray.rundir.workdir import WorkDir

log = logging.getLogger("fastdup_ray")


@dataclass(frozen=True)
class ReduceSettings:
    """The run parameters of the reduce stage (params.py's ``stage='reduce'``), the width
    of shards whose marker does not say it, and where a flat index searches."""

    threshold: float
    lower_threshold: float
    nearest_neighbors_k: int
    ccthreshold: float
    nn_provider: str
    nnf_mode: str
    nnmodel: str
    nprobe: int
    reduce_strategy: str
    reduce_memory_gb: float
    rows_per_partition: int
    csv_row_limit: int
    d: int
    compute: str = "cpu"

    @property
    def spec(self) -> str:
        """The faiss factory string of the index asked for."""
        return factory_string(self.nn_provider, self.nnf_mode, self.nnmodel)


@dataclass
class ReduceResult:
    """What the reduce did: the rows of its tables and the seconds of each phase."""

    similar_pairs: int = 0
    outlier_rows: int = 0
    components: int = 0
    grouped_images: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def phase(self, name: str):
        """A timer of the phase ``name``, into ``seconds``."""
        return timer(self.seconds, name)


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


def choose_strategy(settings: ReduceSettings, n: int, d: int) -> str:
    """'memory' while the vectors fit reduce_memory_gb, else 'distributed' (or what
    reduce_strategy names); fewer than two vectors have no neighbours to distribute."""
    if n < 2:
        return "memory"
    if settings.reduce_strategy != "auto":
        return settings.reduce_strategy
    return "distributed" if n * d * 4 > settings.reduce_memory_gb * 2**30 else "memory"


def routed_lists(spec: str, n: int, rows_per_list: int = 1000) -> int:
    """Lists of the routed kNN: the spec's IVF<n> when it names one, else about
    rows_per_list vectors per list, so the work per vector stays the same at any n."""
    match = re.search(r"IVF(\d+)", spec)
    return int(match.group(1)) if match else max(1, n // rows_per_list)


def reduce_distributed(
    settings: ReduceSettings, work: WorkDir, prefixes: list[str], rows: list[int], d: int, engines: EngineSlot
) -> ReduceResult:
    """The reduce as waves of tasks on the run's engine (distributed.py); the
    driver keeps the per-shard plan only."""
    n, spec = sum(rows), settings.spec
    nlist = routed_lists(spec, n)
    plan = ReducePlan(
        work=work,
        d=d,
        k=settings.nearest_neighbors_k,
        partitions=tuple(plan_partitions(prefixes, rows, settings.rows_per_partition)),
        threshold=settings.threshold,
        ccthreshold=settings.ccthreshold,
        nlist=nlist,
        nprobe=settings.nprobe,
        buckets=max(1, min(nlist, -(-n * settings.nprobe // settings.rows_per_partition))),
        spec="Flat" if spec == "Flat" else "routed",
        has_hashes=rows_have_hashes(work, prefixes, rows),
    )
    engine = engines.get()
    log.info(
        "distributed reduce of %d vectors in %d partitions on the %s engine (%s)",
        n,
        len(plan.partitions),
        engine.name,
        "exact" if plan.spec == "Flat" else f"{nlist} lists, nprobe {settings.nprobe}",
    )
    remove_saved_index(work)
    result = ReduceResult()
    counts = reduce_in_waves(
        engine, plan, settings.lower_threshold, settings.csv_row_limit, phase=result.phase
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
    return ReduceResult(**counts, seconds=result.seconds)


def reduce_shards(
    settings: ReduceSettings, work: WorkDir, prefixes: list[str], engines: EngineSlot
) -> ReduceResult:
    """kNN over the given shards (in order), then every output table."""
    # One read of each marker serves d and the rows per shard.
    markers = [read_marker(work, p) or {} for p in prefixes]
    d = markers[0].get("d", settings.d)
    rows = [m.get("good", 0) for m in markers]
    if choose_strategy(settings, sum(rows), d) == "distributed":
        return reduce_distributed(settings, work, prefixes, rows, d, engines)
    return reduce_in_memory(settings, work, prefixes, rows, d)


def reduce_in_memory(
    settings: ReduceSettings, work: WorkDir, prefixes: list[str], rows: list[int], d: int
) -> ReduceResult:
    """Every vector in memory: kNN, pairs, components and the tables, on this process."""
    result = ReduceResult()
    clear_outputs(work)
    filenames, src, dst, knn_sim = knn_in_memory(settings, work, prefixes, rows, d, result.phase)
    write_tables(settings, work, prefixes, filenames, (src, dst, knn_sim), result)
    return result


def knn_in_memory(
    settings: ReduceSettings, work: WorkDir, prefixes: list[str], rows: list[int], d: int, phase
):
    """(names, kNN edges src, dst, similarity) of every row of the shards."""
    spec, k = settings.spec, settings.nearest_neighbors_k
    if ivf_flat_lists(spec) and sum(rows) >= 2:
        # IVF<n>,Flat: shards streamed into the index's lists (one copy of the vectors),
        # every vector scored exactly against its nprobe nearest lists, blockwise.
        with phase("load"):
            filenames = load_names(work, prefixes)
        sims, ids, listed, _ = ivf_knn(
            lambda i: load_shards(work, [prefixes[i]], d, normalize=True)[1],
            rows,
            d,
            k,
            ivf_flat_lists(spec),
            settings.nprobe,
            phase=phase,
        )
        with phase("save_index"):
            remove_saved_index(work)
            save_index(listed.index, work)
        del listed
        return (filenames, *topk_edges(sims, ids))
    with phase("load"):
        filenames, features = load_shards(work, prefixes, d, normalize=True)
    n = len(filenames)
    with phase("index"):
        index = build_index(features, spec) if n >= 2 else None
        if index is not None:
            remove_saved_index(work)
            save_index(index, work)
    with phase("knn"):
        if n < 2:
            return (
                filenames,
                np.zeros(0, dtype=np.int64),
                np.zeros(0, dtype=np.int64),
                np.zeros(0, np.float32),
            )
        return (filenames, *knn_edges(features, k, index=searcher_for(index, settings.compute)))


def write_tables(
    settings: ReduceSettings, work: WorkDir, prefixes: list[str], filenames: list[str], edges, result
) -> None:
    """Pairs (with exact copies), components and every table from the kNN ``edges``;
    their rows and seconds into ``result``."""
    src, dst, knn_sim = edges
    n, phase = len(filenames), result.phase
    with phase("pairs"):
        stats = run_stats(work, prefixes, n)
        hashes = (
            stats["hash"].fill_null("").to_numpy() if stats is not None and "hash" in stats.columns else None
        )
        a, b, sim, exact = outputs.pairs_with_exact(src, dst, knn_sim, hashes)
    with phase("components"):
        joined = rules.at_least(sim, rules.joined_threshold(settings.threshold, settings.ccthreshold))
        labels = connected_components(n, a[joined], b[joined])
        rank, delta = pagerank(n, a[joined], b[joined], sim[joined], labels=labels)
    with phase("outputs"):
        similarity = outputs.similarity_table(filenames, a, b, sim, settings.threshold, exact=exact)
        outliers = outputs.outliers_table(filenames, src, dst, knn_sim, settings.lower_threshold)
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
    result.similar_pairs, result.outlier_rows, result.components = (
        similarity.height,
        outliers.height,
        info.height,
    )
    result.grouped_images = int(info.filter(info["Count"] > 1)["Count"].sum())

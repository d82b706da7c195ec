"""The distributed reduce's plan: partitions of the run's rows, the plan every task gets,
reading a partition by byte range, and the exchanges the kNN waves send through.

Rows are split into partitions (row ranges over the run's feature shards, read by range,
so one large features.dat is read by many tasks); every wave maps one task function over
partitions or list buckets (distributed.py, knn_waves.py).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import polars as pl

from fastdup_ray.reduce import rules
from fastdup_ray.reduce.exchange import Exchange
from fastdup_ray.rundir import layout
from fastdup_ray.rundir.shards import load_names, load_stats, shard_names, unit_rows
from fastdup_ray.rundir.workdir import WorkDir


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
        return bucket_of(lists, self.buckets, self.nlist)

    def exchange(self, name: str, **schema) -> Exchange:
        return Exchange(self.scratch, name, tuple(schema.items()))


def bucket_of(lists: np.ndarray, buckets: int, nlist: int) -> np.ndarray:
    """The bucket that scores each of ``lists``: each bucket a run of consecutive lists. The
    routed index is saved a file per bucket, so a search reads only its probed lists' ones."""
    return lists * buckets // max(1, nlist)


# Exchanges and their columns.
def route_inbox(plan: ReducePlan) -> Exchange:
    return plan.exchange(
        "route", id=pl.Int64, list=pl.Int64, member=pl.Boolean, vector=pl.Array(pl.Float32, plan.d)
    )


def candidate_inbox(plan: ReducePlan) -> Exchange:
    return plan.exchange("candidates", query=pl.Int64, candidate=pl.Int64, sim=pl.Float32)


# --- Reading a partition ---------------------------------------------------------------------


def partition_vectors(plan: ReducePlan, part: Partition) -> np.ndarray:
    """Unit vectors of a partition's rows, read by byte range from each shard."""
    row_bytes = plan.d * 4
    arrays = [
        np.frombuffer(
            plan.work.read_range(shard_names(prefix)[0], start * row_bytes, stop * row_bytes), dtype="<f4"
        ).reshape(stop - start, plan.d)
        for prefix, start, stop in part.pieces
    ]
    return unit_rows(np.concatenate(arrays)) if arrays else np.zeros((0, plan.d), dtype=np.float32)


def partition_names(plan: ReducePlan, part: Partition) -> list[str]:
    return [
        name for prefix, start, stop in part.pieces for name in load_names(plan.work, [prefix])[start:stop]
    ]


def partition_stats(plan: ReducePlan, part: Partition) -> pl.DataFrame | None:
    tables = []
    for prefix, start, stop in part.pieces:
        stats = load_stats(plan.work, [prefix])
        if stats is None:
            return None
        tables.append(stats.slice(start, stop - start))
    return pl.concat(tables, how="diagonal") if tables else None


def write_part(work: WorkDir, folder: str, number: int, table: pl.DataFrame) -> None:
    buffer = io.BytesIO()
    table.write_parquet(buffer)
    work.sub(folder).write_bytes(layout.part_name(number), buffer.getvalue())


def ids_of(frame: pl.DataFrame, column: str) -> np.ndarray:
    return frame[column].to_numpy().astype(np.int64, copy=False)

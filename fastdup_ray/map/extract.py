"""Map side: work units in, one features shard per unit out, on whichever engine runs it.

The stages (:mod:`fastdup_ray.map.plan`: read + decode, embed) make batches of the record
declared in :mod:`fastdup_ray.map.record`; an engine (:mod:`fastdup_ray.engine`) decides
where they run, worker processes of this machine or Ray Data tasks and actors on a
cluster, and hands every finished batch, in order, to the :class:`ShardCollector` here:
one writer per unit on this process, committed with its marker once the unit is closed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from fastdup_ray.errors import StorageUnavailableError
from fastdup_ray.map.decode import STAT_COLUMNS
from fastdup_ray.map.plan import MapPlan
from fastdup_ray.map.record import EMBEDDED, UNCOUNTED, Batch, ends
from fastdup_ray.rundir.shards import FeatureShardWriter
from fastdup_ray.rundir.workdir import WorkDir

log = logging.getLogger("fastdup_ray")


class ShardCollector:
    """Driver side: one FeatureShardWriter per unit in flight; commits a unit once all
    the rows its end row announced have arrived, and tells ``progress`` what came in.
    A unit with a row the storage failed on (``storage_failed``) is dropped instead: its
    writer is aborted and its later rows ignored, so it has no marker and a rerun reads it."""

    def __init__(self, work: WorkDir, d: int, markers: dict[str, dict] | None = None, progress=None) -> None:
        self.work = work
        self.d = d
        self.markers = markers or {}  # unit name -> what its marker records about its inputs
        self.progress = progress
        self.writers: dict[str, FeatureShardWriter] = {}
        self.expected: dict[str, int] = {}
        self.good = 0
        self.bad = 0
        self.committed: list[str] = []
        self.failed: dict[str, tuple[str, str]] = {}  # unit -> (location, cause), in order of failure

    def gave_up(self, unit: str) -> bool:
        """Whether ``unit`` was dropped (its storage failed): an engine need not read more of it."""
        return unit in self.failed

    def add(self, batch: Batch) -> None:
        """Write an EMBEDDED batch's rows to their units' shards; commit the units it closes."""
        EMBEDDED.check(batch)
        units, lost, closing = batch["unit"], batch["storage_failed"].astype(bool), ends(batch)
        for unit in dict.fromkeys(units.tolist()):
            if unit in self.failed:
                continue  # rows still in flight when the storage failed, its end row too
            rows = units == unit
            if lost[rows].any():
                first = int(np.flatnonzero(rows & lost)[0])
                self.fail(unit, str(batch["path"][first]), str(batch["reason"][first]))
                continue
            writer = self.write_rows(unit, batch, rows & ~closing)
            if (rows & closing).any():
                announced = int(batch["unit_rows"][rows & closing][0])
                # Nobody counted the rows of a unit cut and read in parallel: the stream is in order.
                self.expected[unit] = writer.good + writer.bad if announced == UNCOUNTED else announced
            if unit in self.expected and writer.good + writer.bad == self.expected[unit]:
                self.commit(unit)

    def write_rows(self, unit: str, batch: Batch, rows: np.ndarray) -> FeatureShardWriter:
        """The input rows ``rows`` of ``batch``, all of ``unit``: good ones with their vectors,
        statistics and thumbnails, bad ones with their reasons, and their annotations."""
        if unit not in self.writers:
            self.writers[unit] = FeatureShardWriter(self.work, self.d, prefix=unit)
        writer = self.writers[unit]
        ok = batch["ok"].astype(bool)
        good, bad = rows & ok, rows & ~ok
        # stats.csv: filename, hash, then the numbers
        stats = {"hash": batch["hash"][good], **{name: batch[f"stat_{name}"][good] for name in STAT_COLUMNS}}
        thumbnails, boxed = batch["thumbnail"][good].tolist(), batch["boxed"][good].tolist()
        writer.add_good(
            batch["path"][good].tolist(),
            batch["embedding"][good],
            stats,
            thumbnails if any(thumbnails) else None,
            boxed if any(boxed) else None,
        )
        writer.add_bad(batch["path"][bad].tolist(), batch["reason"][bad].tolist())
        noted = rows & (batch["annotations"] != "")
        if noted.any():
            writer.add_annotations(batch["path"][noted].tolist(), batch["annotations"][noted].tolist())
        if self.progress is not None:
            self.progress.images(int(rows.sum()))
        return writer

    def commit(self, unit: str) -> None:
        writer = self.writers.pop(unit)
        writer.commit(**self.markers.get(unit, {}))
        self.expected.pop(unit, None)
        self.good += writer.good
        self.bad += writer.bad
        self.committed.append(unit)
        if self.progress is not None:
            self.progress.shard_done()
        log.debug("shard %r done: %d good, %d bad", unit, writer.good, writer.bad)

    def fail(self, unit: str, location: str, cause: str) -> None:
        """Drop ``unit``: the storage failed at ``location``. Nothing of it is written."""
        writer = self.writers.pop(unit, None)
        if writer is not None:
            writer.abort()
        self.expected.pop(unit, None)
        self.failed[unit] = (location, cause)
        log.warning("shard %r not finished, to be run again: %s: %s", shard_label(unit), location, cause)

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()
        self.writers.clear()

    def check_finished(self) -> None:
        if self.writers:
            names = ", ".join(repr(u) for u in self.writers)
            self.abort()
            raise RuntimeError(f"extraction ended with unfinished shards {names}: rows went missing")


@dataclass
class ExtractResult:
    """What extraction did: images good and bad, the shards it committed, its seconds,
    and the shards the storage failed under (unit -> (location, cause)), not finished."""

    good: int
    bad: int
    shards: list[str]
    seconds: float = 0.0
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)

    def raise_if_failed(self) -> None:
        """After the other shards are finished: the shards to run again, as one error."""
        if self.failed:
            raise storage_failure(self.failed)


def shard_label(unit: str) -> str:
    """A shard as the user sees it: its prefix, or features.dat for the unnamed one."""
    return unit or "features.dat"


# Shards a storage failure names at most: an outage may hit thousands of archives.
NAMED_SHARDS = 20


def storage_failure(failed: dict[str, tuple[str, str]]) -> StorageUnavailableError:
    """One line: which shards are not finished, where and why the storage failed first."""
    shards = sorted(failed)
    named = ", ".join(repr(shard_label(name)) for name in shards[:NAMED_SHARDS])
    more = f" and {len(shards) - NAMED_SHARDS} more" if len(shards) > NAMED_SHARDS else ""
    location, cause = next(iter(failed.values()))
    cause = " ".join(cause.split())  # botocore's messages may span lines
    count = f"{len(shards)} shard{'s' if len(shards) > 1 else ''}"
    return StorageUnavailableError(
        f"{count} not finished, the storage failed: {named}{more} (first at {location}: {cause}); "
        "finished shards are kept: once the storage is back, run the same command again to extract these",
        shards,
        location,
        cause,
    )


def extract_units(engine, plan: MapPlan, work: WorkDir, progress=None) -> ExtractResult:
    """Read + decode + embed the plan's units on ``engine``; one committed shard per unit,
    its marker written last. Nothing is committed for a unit that did not finish; the
    units the storage failed under are in the result's ``failed`` (the others still finish)."""
    start = time.perf_counter()
    if not plan.units:
        return ExtractResult(0, 0, [])
    markers = {u.name: u.marker_fields() for u in plan.units}
    collector = ShardCollector(work, plan.settings.embed.d, markers, progress)
    try:
        engine.extract(plan, collector)
        collector.check_finished()
    except BaseException:
        collector.abort()
        raise
    seconds = time.perf_counter() - start
    return ExtractResult(collector.good, collector.bad, collector.committed, seconds, dict(collector.failed))


def write_listing_shard(work: WorkDir, d: int, prefix: str, bad: list[tuple[str, str]]) -> None:
    """Inputs rejected while listing (names that are not UTF-8, unknown types in a list)."""
    writer = FeatureShardWriter(work, d, prefix=prefix)
    writer.add_bad([loc for loc, _ in bad], [why for _, why in bad])
    writer.commit()

"""Map side: work units in, one features shard per unit out, on whichever engine runs it.

The stage is plain functions of Items and numpy batches: :func:`decode_items` (bytes to
pixels, statistics and thumbnails, or the reason an image is bad), :class:`EmbedBatches`
(one ONNX Runtime session, reused for every batch), :func:`embed_chunk` (both, for one
cut of a unit, in whatever process runs it) and :class:`ShardCollector` (one writer per
unit on this process, committed with its marker once the unit's last row is in). An
engine (:mod:`fastdup_ray.engine`) decides where the batches are made: worker processes
of this machine, or Ray Data tasks and actors on a cluster.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from fastdup_ray.errors import StorageUnavailableError
from fastdup_ray.map.decode import (
    STAT_COLUMNS,
    BadImage,
    content_hash,
    decode_with_thumbnail,
    image_stats,
    make_thumbnail,
    resize_frame,
)
from fastdup_ray.map.embed import Embedder
from fastdup_ray.map.sources import Item, ReadSettings, WorkUnit, read_unit
from fastdup_ray.rundir.shards import FeatureShardWriter
from fastdup_ray.rundir.workdir import WorkDir

log = logging.getLogger("fastdup_ray")


def decode_items(
    unit: str, items: list[Item], size: int, first_seq: int, total: int | None = None, thumbnail_size: int = 0
) -> dict[str, np.ndarray]:
    """Decode a run of Items of one unit into a batch; with ``total`` an end row closes the unit.

    With ``thumbnail_size`` each good row also carries a JPEG thumbnail for the galleries,
    made from the pixels already decoded, so no report ever re-reads the dataset. Each
    file's bytes get a content hash (``hash``); a byte-identical copy of an earlier row of
    the batch is not decoded again (``copy_of`` names that row, else -1)."""
    rows = len(items) + (total is not None)
    pixels = np.zeros((rows, size, size, 3), dtype=np.uint8)
    ok = np.zeros(rows, dtype=bool)
    storage_failed = np.zeros(rows, dtype=bool)  # Item.storage_failed: the unit is not finished
    reasons = np.full(rows, "", dtype=object)
    paths = np.full(rows, "", dtype=object)
    thumbnails = np.full(rows, b"", dtype=object)
    hashes = np.full(rows, "", dtype=object)
    copy_of = np.full(rows, -1, dtype=np.int64)
    annotations = np.full(rows, "", dtype=object)  # JSON of Item.annotations, or ""
    stats = {name: np.zeros(rows, dtype=np.float64) for name in STAT_COLUMNS}
    first_with: dict[str, int] = {}
    for i, item in enumerate(items):
        paths[i] = item.location
        if item.annotations:
            annotations[i] = json.dumps(item.annotations, ensure_ascii=False, default=str)
        if not item.ok:
            reasons[i], storage_failed[i] = item.reason, item.storage_failed
            continue
        if item.data is not None:
            hashes[i] = content_hash(item.data)
            source = first_with.setdefault(hashes[i], i)
            if source != i:
                copy_of[i] = source
                pixels[i], ok[i], reasons[i], thumbnails[i] = (
                    pixels[source],
                    ok[source],
                    reasons[source],
                    thumbnails[source],
                )
                for values in stats.values():
                    values[i] = values[source]
                continue
        try:
            if item.pixels is not None:  # a video frame: no file of its own
                pixels[i], (width, height), file_size = (
                    resize_frame(item.pixels, size),
                    item.pixels.shape[1::-1],
                    0,
                )
                thumbnails[i] = make_thumbnail(Image.fromarray(item.pixels), thumbnail_size)
            else:
                pixels[i], (width, height), thumbnails[i] = decode_with_thumbnail(
                    item.data, size, thumbnail_size
                )
                file_size = len(item.data)
            ok[i] = True
        except BadImage as exc:
            reasons[i] = str(exc)
            continue
        # Statistics come from the pixels already decoded: no second read of the image.
        for name, value in image_stats(pixels[i], width, height, file_size).items():
            stats[name][i] = value
    end = np.zeros(rows, dtype=bool)
    unit_rows = np.zeros(rows, dtype=np.int64)
    if total is not None:
        end[-1] = True
        unit_rows[-1] = total
    return {
        "unit": np.full(rows, unit, dtype=object),
        "seq": np.arange(first_seq, first_seq + rows, dtype=np.int64),
        "path": paths,
        "ok": ok,
        "storage_failed": storage_failed,
        "reason": reasons,
        "end": end,
        "unit_rows": unit_rows,
        "pixels": pixels,
        "thumbnail": thumbnails,
        "hash": hashes,
        "copy_of": copy_of,
        "annotations": annotations,
        **{f"stat_{name}": values for name, values in stats.items()},
    }


def decode_units(
    batch: dict[str, np.ndarray],
    size: int,
    settings: ReadSettings,
    rows_per_batch: int,
    thumbnail_size: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data generator: read every unit of the batch and stream its decoded rows out."""
    for name, kind, locations in zip(batch["name"], batch["kind"], batch["locations"]):
        unit = WorkUnit(str(name), str(kind), tuple(json.loads(locations)))
        pending: list[Item] = []
        count = 0
        for item in read_unit(unit, settings):
            pending.append(item)
            if len(pending) == rows_per_batch:
                yield decode_items(unit.name, pending, size, count, thumbnail_size=thumbnail_size)
                count += len(pending)
                pending = []
        yield decode_items(
            unit.name, pending, size, count, total=count + len(pending), thumbnail_size=thumbnail_size
        )


# Vectors of recently embedded files by content hash, per process: a byte-identical copy
# in a later batch (common in web crawls) is not run through the model again. 8,192
# vectors of the shipped model's d=320 are 10 MiB (40 MiB at d=1280).
RECENT_VECTORS = 8192


class EmbedBatches:
    """Ray Data callable class: one ONNX Runtime session per actor, reused for every batch.
    Each distinct file content is embedded once: copies within a batch (``copy_of``) and
    contents embedded recently by this process take the vector already computed."""

    def __init__(self, model_path: str | None, d: int, compute: str) -> None:
        self.embedder = Embedder(model_path, d=d, compute=compute, threads=1)
        self.d = d
        self.recent: OrderedDict[str, np.ndarray] = OrderedDict()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = batch["ok"].astype(bool)
        hashes = batch.get("hash", np.full(len(ok), "", dtype=object))
        copy_of = batch.get("copy_of", np.full(len(ok), -1, dtype=np.int64))
        vectors = np.zeros((len(ok), self.d), dtype=np.float32)
        known = np.array([bool(h) and h in self.recent for h in hashes], dtype=bool)
        for i in np.flatnonzero(ok & known):
            vectors[i] = self.recent[hashes[i]]
        fresh = ok & ~known & (copy_of < 0)
        if fresh.any():
            vectors[fresh] = self.embedder.embed(batch["pixels"][fresh])
            self.remember(hashes[fresh], vectors[fresh])
        copies = np.flatnonzero(ok & ~known & (copy_of >= 0))
        vectors[copies] = vectors[copy_of[copies]]
        out = {key: value for key, value in batch.items() if key != "pixels"}
        out["embedding"] = vectors
        return out

    def remember(self, hashes: np.ndarray, vectors: np.ndarray) -> None:
        for content, vector in zip(hashes, vectors):
            if content:
                self.recent[content] = vector
                self.recent.move_to_end(content)
        while len(self.recent) > RECENT_VECTORS:
            self.recent.popitem(last=False)


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

    def add(self, batch: dict[str, np.ndarray]) -> None:
        units = batch["unit"]
        lost = batch.get("storage_failed", np.zeros(len(units), bool)).astype(bool)
        for unit in dict.fromkeys(units.tolist()):
            if unit in self.failed:
                continue  # rows still in flight when the storage failed, its end row too
            rows = units == unit
            if lost[rows].any():
                first = int(np.flatnonzero(rows & lost)[0])
                self.fail(unit, str(batch["path"][first]), str(batch["reason"][first]))
                continue
            if unit not in self.writers:
                self.writers[unit] = FeatureShardWriter(self.work, self.d, prefix=unit)
            writer = self.writers[unit]
            end = batch["end"][rows].astype(bool)
            ok = batch["ok"][rows].astype(bool) & ~end
            bad = ~batch["ok"][rows].astype(bool) & ~end
            paths = batch["path"][rows]
            stats = {
                name: batch[f"stat_{name}"][rows][ok] for name in STAT_COLUMNS if f"stat_{name}" in batch
            }
            if stats and "hash" in batch:
                stats = {
                    "hash": batch["hash"][rows][ok],
                    **stats,
                }  # stats.csv: filename, hash, then the numbers
            thumbnails = batch["thumbnail"][rows][ok].tolist() if "thumbnail" in batch else []
            writer.add_good(
                paths[ok].tolist(),
                batch["embedding"][rows][ok],
                stats or None,
                thumbnails if any(thumbnails) else None,
            )
            writer.add_bad(paths[bad].tolist(), batch["reason"][rows][bad].tolist())
            if "annotations" in batch:
                notes = batch["annotations"][rows]
                noted = ~end & (notes != "")
                if noted.any():
                    writer.add_annotations(paths[noted].tolist(), notes[noted].tolist())
            if self.progress is not None:
                self.progress.images(int(ok.sum() + bad.sum()))
            if end.any():
                self.expected[unit] = int(batch["unit_rows"][rows][end][0])
            if unit in self.expected and writer.good + writer.bad == self.expected[unit]:
                self.commit(unit)

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


@dataclass(frozen=True)
class ExtractJob:
    """The settings extraction needs, derived once from the run's config (picklable: it
    travels to worker processes and Ray tasks)."""

    model_file: str
    d: int
    compute: str  # "cpu" or "gpu", decided once for the run
    image_size: int
    thumbnail_size: int = 0
    batch_size: int = 64
    read: ReadSettings = field(default_factory=ReadSettings)
    verbose: bool = False


# Sessions of this process, one per (model, d, compute): a worker loads its model once.
_sessions: dict[tuple[str, int, str], "EmbedBatches"] = {}


def session_for(job: ExtractJob) -> "EmbedBatches":
    key = (job.model_file, job.d, job.compute)
    if key not in _sessions:
        _sessions[key] = EmbedBatches(job.model_file, job.d, job.compute)
    return _sessions[key]


def embed_chunk(
    unit: str, chunk: WorkUnit | list[Item], first_seq: int, job: ExtractJob
) -> dict[str, np.ndarray]:
    """Read (loose files), decode and embed one cut of a unit: a batch ready for the
    collector. Runs in whatever process the engine gives it."""
    items = list(read_unit(chunk, job.read)) if isinstance(chunk, WorkUnit) else chunk
    decoded = decode_items(unit, items, job.image_size, first_seq, thumbnail_size=job.thumbnail_size)
    return session_for(job)(decoded)


def extract_units(
    engine, units: list[WorkUnit], job: ExtractJob, work: WorkDir, progress=None
) -> ExtractResult:
    """Read + decode + embed ``units`` on ``engine``; one committed shard per unit, its
    marker written last. Nothing is committed for a unit that did not finish; the units
    the storage failed under are in the result's ``failed`` (the others still finish)."""
    start = time.perf_counter()
    if not units:
        return ExtractResult(0, 0, [])
    collector = ShardCollector(work, job.d, {u.name: u.marker_fields() for u in units}, progress)
    try:
        engine.extract(units, job, collector)
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


def rows_per_batch(batch_size: int, units: list[WorkUnit], parts: int) -> int:
    """``batch_size``, but a run of one unit is cut into at least ``parts`` batches:
    small runs get smaller batches, so that every worker has work from the start."""
    if len(units) != 1:
        return batch_size
    return max(1, min(batch_size, -(-len(units[0].locations) // parts)))


def unit_chunks(
    unit: WorkUnit, settings: ReadSettings, rows_per_batch: int
) -> Iterator[WorkUnit | list[Item]]:
    """A unit cut into batches for the local executor: loose files as sub-units that the
    worker thread reads itself (reads run in parallel), archive members as Items read
    here in order (an archive is one stream)."""
    if unit.kind == "files":
        for start in range(0, len(unit.locations), rows_per_batch):
            yield WorkUnit(unit.name, unit.kind, unit.locations[start : start + rows_per_batch])
        return
    pending: list[Item] = []
    for item in read_unit(unit, settings):
        pending.append(item)
        if len(pending) == rows_per_batch:
            yield pending
            pending = []
    if pending:
        yield pending


def closing_row(unit: str, total: int, d: int) -> dict[str, np.ndarray]:
    """The end row that tells the collector a unit has ``total`` rows (already embedded)."""
    batch = decode_items(unit, [], 1, total, total=total)
    batch.pop("pixels")
    batch["embedding"] = np.zeros((1, d), dtype=np.float32)
    return batch

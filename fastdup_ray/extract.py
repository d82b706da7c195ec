"""Map side: work units in, one features shard per unit out, on one of two executors.

On Ray Data (clusters, remote inputs, GPUs)::

    units ──> read + decode (CPU tasks, one unit each, streaming batches out)
          ──> embed (actor pool, one ONNX Runtime session per actor)
          ──> ShardCollector on the driver (one writer per unit, committed when the
              unit's last row has arrived; marker written last)

Locally (one machine, no cluster given): the same batch functions on a thread pool in
this process, one ONNX Runtime session per thread. Decoding and inference release the
GIL, so threads use every core, and a small run does not pay Ray's start-up (about 7 s
of a 2-core machine before the first batch is embedded).

The batch functions are plain functions of numpy batches and Items, tested without
Ray; Ray appears only in :func:`extract_units_on_ray` and :func:`connect_ray`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from fastdup_ray.config import RunConfig
from fastdup_ray.decode import (
    STAT_COLUMNS,
    BadImage,
    decode_with_thumbnail,
    image_stats,
    make_thumbnail,
    resize_frame,
)
from fastdup_ray.embed import Embedder
from fastdup_ray.features import FeatureShardWriter
from fastdup_ray.sources import Item, ReadSettings, WorkUnit, read_unit
from fastdup_ray.workdir import WorkDir

log = logging.getLogger("fastdup_ray")


def decode_items(unit: str, items: list[Item], size: int, first_seq: int, total: int | None = None, thumbnail_size: int = 0) -> dict[str, np.ndarray]:
    """Decode a run of Items of one unit into a batch; with ``total`` an end row closes the unit.

    With ``thumbnail_size`` each good row also carries a JPEG thumbnail for the galleries,
    made from the pixels already decoded, so no report ever re-reads the dataset."""
    rows = len(items) + (total is not None)
    pixels = np.zeros((rows, size, size, 3), dtype=np.uint8)
    ok = np.zeros(rows, dtype=bool)
    reasons = np.full(rows, "", dtype=object)
    paths = np.full(rows, "", dtype=object)
    thumbnails = np.full(rows, b"", dtype=object)
    stats = {name: np.zeros(rows, dtype=np.float64) for name in STAT_COLUMNS}
    for i, item in enumerate(items):
        paths[i] = item.location
        if not item.ok:
            reasons[i] = item.reason
            continue
        try:
            if item.pixels is not None:  # a video frame: no file of its own
                pixels[i], (width, height), file_size = resize_frame(item.pixels, size), item.pixels.shape[1::-1], 0
                thumbnails[i] = make_thumbnail(Image.fromarray(item.pixels), thumbnail_size)
            else:
                pixels[i], (width, height), thumbnails[i] = decode_with_thumbnail(item.data, size, thumbnail_size)
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
        "reason": reasons,
        "end": end,
        "unit_rows": unit_rows,
        "pixels": pixels,
        "thumbnail": thumbnails,
        **{f"stat_{name}": values for name, values in stats.items()},
    }


def decode_units(batch: dict[str, np.ndarray], size: int, settings: ReadSettings, rows_per_batch: int, thumbnail_size: int = 0) -> Iterator[dict[str, np.ndarray]]:
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
        yield decode_items(unit.name, pending, size, count, total=count + len(pending), thumbnail_size=thumbnail_size)


class EmbedBatches:
    """Ray Data callable class: one ONNX Runtime session per actor, reused for every batch."""

    def __init__(self, model_path: str | None, d: int, compute: str) -> None:
        self.embedder = Embedder(model_path, d=d, compute=compute, threads=1)
        self.d = d

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = batch["ok"].astype(bool)
        vectors = np.zeros((len(ok), self.d), dtype=np.float32)
        if ok.any():
            vectors[ok] = self.embedder.embed(batch["pixels"][ok])
        out = {key: value for key, value in batch.items() if key != "pixels"}
        out["embedding"] = vectors
        return out


class ShardCollector:
    """Driver side: one FeatureShardWriter per unit in flight; commits a unit once all
    the rows its end row announced have arrived."""

    def __init__(self, work: WorkDir, d: int, markers: dict[str, dict] | None = None) -> None:
        self.work = work
        self.d = d
        self.markers = markers or {}  # unit name -> what its marker records about its inputs
        self.writers: dict[str, FeatureShardWriter] = {}
        self.expected: dict[str, int] = {}
        self.good = 0
        self.bad = 0
        self.committed: list[str] = []

    def add(self, batch: dict[str, np.ndarray]) -> None:
        units = batch["unit"]
        for unit in dict.fromkeys(units.tolist()):
            rows = units == unit
            if unit not in self.writers:
                self.writers[unit] = FeatureShardWriter(self.work, self.d, prefix=unit)
            writer = self.writers[unit]
            end = batch["end"][rows].astype(bool)
            ok = batch["ok"][rows].astype(bool) & ~end
            bad = ~batch["ok"][rows].astype(bool) & ~end
            paths = batch["path"][rows]
            stats = {name: batch[f"stat_{name}"][rows][ok] for name in STAT_COLUMNS if f"stat_{name}" in batch}
            thumbnails = batch["thumbnail"][rows][ok].tolist() if "thumbnail" in batch else []
            writer.add_good(paths[ok].tolist(), batch["embedding"][rows][ok], stats or None, thumbnails if any(thumbnails) else None)
            writer.add_bad(paths[bad].tolist(), batch["reason"][rows][bad].tolist())
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
        log.debug("shard %r done: %d good, %d bad", unit, writer.good, writer.bad)

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
    good: int
    bad: int
    shards: list[str]


def connect_ray() -> None:
    """Join the cluster named by RAY_ADDRESS, reuse a running Ray, or start a local one on all cores."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        log.info("joining the Ray cluster at %s", os.environ["RAY_ADDRESS"])
        ray.init(address=os.environ["RAY_ADDRESS"], logging_level=logging.WARNING)
    else:
        ray.init(logging_level=logging.WARNING, include_dashboard=False)


@dataclass(frozen=True)
class EmbedPlan:
    """How many embedding actors, with which resources, and how many decode tasks run at
    once with how much CPU each."""

    actors: int
    actor_cpus: float
    actor_gpus: float
    decode_cpus: float
    compute: str
    decode_tasks: int = 1


GPU_BATCH = 256
# CPUs reserved in Ray's accounting for decode tasks. Decoding (+ statistics, thumbnail)
# now takes ~0.8x the int8 model's time per image, ~44% of the work; the operating system
# shares the cores between the processes, and with two decode tasks per reserved CPU
# decoding can use up to ~55% of them. (0.27 and 0.45 timed the same on 2 cores.)
DECODE_SHARE = 0.27


def plan_embedding(config: RunConfig, cluster_cpus: float, cluster_gpus: float, nodes: int = 1) -> EmbedPlan:
    """Size the actor pool for the cluster: one single-threaded session per core on CPU,
    one actor per GPU on GPU, leaving room for the decode tasks that feed them.

    The CPUs kept for decoding are at least half a CPU per node, and a decode task asks
    for a quarter CPU, so that however Ray packs the actors onto nodes of any size, some
    node keeps room for decoding (an actor pool filling every node to the last fraction
    would wait forever for input)."""
    if config.compute == "gpu":
        if cluster_gpus >= 1:
            decode_tasks = max(1, int(cluster_cpus - cluster_gpus))
            return EmbedPlan(actors=int(cluster_gpus), actor_cpus=1.0, actor_gpus=1.0, decode_cpus=1.0, compute="gpu", decode_tasks=decode_tasks)
        log.warning("compute='gpu' but the Ray cluster has no GPU; embedding on CPU instead")
    cpus = max(1.0, cluster_cpus)
    actors = config.num_threads or max(1, int(cpus))
    kept_for_decode = min(cpus / 2, max(0.5 * nodes, DECODE_SHARE * cpus))
    actor_cpus = max(0.1, (cpus - kept_for_decode) / actors)
    decode_tasks = max(1, round(kept_for_decode / 0.5))
    return EmbedPlan(actors=actors, actor_cpus=actor_cpus, actor_gpus=0.0, decode_cpus=0.25, compute="cpu", decode_tasks=decode_tasks)


def write_listing_shard(work: WorkDir, d: int, prefix: str, bad: list[tuple[str, str]]) -> None:
    """Inputs rejected while listing (names that are not UTF-8, unknown types in a list)."""
    writer = FeatureShardWriter(work, d, prefix=prefix)
    writer.add_bad([loc for loc, _ in bad], [why for _, why in bad])
    writer.commit()


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (a
    container limited to 2 CPUs on a 64-core host must not start 64 sessions)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:  # cgroup v2: "max 100000" or "200000 100000"
        with open("/sys/fs/cgroup/cpu.max") as limits:
            quota, period = limits.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def ray_cluster_given() -> bool:
    """A cluster to join (RAY_ADDRESS, as `ray job submit` sets it) or Ray already started
    by the caller; checked without importing Ray."""
    ray = sys.modules.get("ray")
    return bool(os.environ.get("RAY_ADDRESS")) or (ray is not None and ray.is_initialized())


def choose_executor(config: RunConfig, units: list[WorkUnit]) -> str:
    """'local' unless the run asks for Ray: a cluster given (ray_cluster_given), GPU
    embedding (decode tasks feeding GPU actors), or remote inputs (read by many Ray tasks
    at once rather than one archive at a time)."""
    if config.executor != "auto":
        return config.executor
    if ray_cluster_given():
        return "ray"
    if config.compute == "gpu":
        return "ray"
    if any("://" in location for unit in units for location in unit.locations):
        return "ray"
    return "local"


def gpus_for_run(config: RunConfig, units: list[WorkUnit]) -> int:
    """GPUs the run can embed on: the Ray cluster's when it runs on Ray, else 1 when this
    process's onnxruntime has the CUDA provider (onnxruntime-gpu, the gpu extra)."""
    from fastdup_ray.embed import cuda_available

    if choose_executor(config, units) == "ray":
        if not (ray_cluster_given() or cuda_available()):
            return 0  # no cluster, and this machine cannot run CUDA sessions: no Ray start to learn that
        import ray

        connect_ray()
        return int(ray.cluster_resources().get("GPU", 0))
    return int(cuda_available())


def rows_per_batch(config: RunConfig, units: list[WorkUnit], parts: int) -> int:
    """config.batch_size, but a run of one unit is cut into at least ``parts`` batches:
    small runs get smaller batches, so that every worker has work from the start."""
    if len(units) != 1:
        return config.batch_size
    return max(1, min(config.batch_size, -(-len(units[0].locations) // parts)))


def unit_chunks(unit: WorkUnit, settings: ReadSettings, rows_per_batch: int) -> Iterator[WorkUnit | list[Item]]:
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


def extract_units_locally(config: RunConfig, units: list[WorkUnit], settings: ReadSettings, image_size: int, work: WorkDir) -> ExtractResult:
    """Read + decode + embed ``units`` on a pool of threads in this process, one
    single-threaded ONNX Runtime session per thread; one committed shard per unit.

    Batches are handed back in the order they were cut, with a bounded number in flight,
    so shards hold rows in listing order and memory does not grow with the dataset."""
    threads = config.num_threads or available_cpus()
    batch = rows_per_batch(config, units, threads)
    log.info("extracting on %d threads in this process (executor 'local')", threads)
    collector = ShardCollector(work, config.d, {u.name: u.marker_fields() for u in units})
    sessions = threading.local()
    # On a GPU the threads decode and share one CUDA session (its run() is thread-safe).
    shared = EmbedBatches(config.model_file(), config.d, "gpu") if config.compute == "gpu" else None

    def embed_chunk(unit: str, chunk: WorkUnit | list[Item], first_seq: int) -> dict[str, np.ndarray]:
        items = list(read_unit(chunk, settings)) if isinstance(chunk, WorkUnit) else chunk
        decoded = decode_items(unit, items, image_size, first_seq, thumbnail_size=config.thumbnail_size)
        if shared is not None:
            return shared(decoded)
        if not hasattr(sessions, "embed"):
            sessions.embed = EmbedBatches(config.model_file(), config.d, "cpu")
        return sessions.embed(decoded)

    rows: dict[str, int] = {}
    in_flight: deque[tuple[str, Future | None]] = deque()

    def hand_over_oldest() -> None:
        unit, future = in_flight.popleft()
        if future is None:  # every batch of the unit has been handed over: close it
            collector.add(closing_row(unit, rows.pop(unit, 0), config.d))
            return
        result = future.result()
        rows[unit] = rows.get(unit, 0) + len(result["ok"])
        collector.add(result)

    with ThreadPoolExecutor(threads, thread_name_prefix="fastdup-extract") as pool:
        try:
            for unit in units:
                seq = 0
                for chunk in unit_chunks(unit, settings, batch):
                    in_flight.append((unit.name, pool.submit(embed_chunk, unit.name, chunk, seq)))
                    seq += len(chunk.locations) if isinstance(chunk, WorkUnit) else len(chunk)
                    while len(in_flight) > 2 * threads:
                        hand_over_oldest()
                in_flight.append((unit.name, None))
            while in_flight:
                hand_over_oldest()
            collector.check_finished()
        except BaseException:
            for _, future in in_flight:
                if future is not None:
                    future.cancel()
            collector.abort()
            raise
    return ExtractResult(collector.good, collector.bad, collector.committed)


def extract_units(config: RunConfig, units: list[WorkUnit], settings: ReadSettings, image_size: int, work: WorkDir) -> ExtractResult:
    """Read + decode + embed ``units`` on the executor the run asks for (see choose_executor)."""
    if not units:
        return ExtractResult(0, 0, [])
    if choose_executor(config, units) == "local":
        return extract_units_locally(config, units, settings, image_size, work)
    return extract_units_on_ray(config, units, settings, image_size, work)


def extract_units_on_ray(config: RunConfig, units: list[WorkUnit], settings: ReadSettings, image_size: int, work: WorkDir) -> ExtractResult:
    """Run read + decode + embed over ``units`` on Ray Data; one committed shard per unit."""
    collector = ShardCollector(work, config.d, {u.name: u.marker_fields() for u in units})
    import ray
    import ray.data  # configures its loggers on import, so import before adjusting them

    connect_ray()
    # Ray Data logs every execution plan at INFO; our own log says what the run does.
    logging.getLogger("ray.data").setLevel(logging.INFO if config.verbose else logging.WARNING)
    resources = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive") and node.get("Resources", {}).get("CPU", 0) > 0)
    plan = plan_embedding(config, resources.get("CPU", 1.0), resources.get("GPU", 0.0), max(1, nodes))
    log.debug("embedding plan: %s", plan)
    context = ray.data.DataContext.get_current()
    # Keep the units' order, so shard rows come out in listing order and runs repeat exactly.
    context.execution_options.preserve_order = True
    context.enable_progress_bars = config.verbose
    largest = max(len(u.locations) for u in units)
    batch = rows_per_batch(config, units, 2 * plan.actors)
    if plan.compute == "gpu":
        # A GPU wants large batches (per-call overhead, kernel occupancy); CPU decode tasks
        # fill them, so a GPU batch is never smaller than GPU_BATCH unless a unit is.
        batch = max(batch, min(GPU_BATCH, largest))
    # Ray Data merges a generator's yields into blocks of up to 128 MiB (~850 decoded
    # images) by default; blocks of about one batch keep the pipeline streaming and the
    # embedding actors' memory flat.
    context.target_max_block_size = max(1 << 20, batch * image_size * image_size * 3 * 2)
    dataset = ray.data.from_items(
        [{"name": u.name, "kind": u.kind, "locations": json.dumps(list(u.locations))} for u in units],
        override_num_blocks=len(units),
    )
    dataset = dataset.map_batches(
        decode_units,
        fn_kwargs={"size": image_size, "settings": settings, "rows_per_batch": batch, "thumbnail_size": config.thumbnail_size},
        batch_size=1,
        num_cpus=plan.decode_cpus,
        compute=ray.data.TaskPoolStrategy(size=plan.decode_tasks),
    )
    dataset = dataset.map_batches(
        EmbedBatches,
        fn_constructor_kwargs={"model_path": config.model_file(), "d": config.d, "compute": plan.compute},
        batch_size=batch,
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        num_cpus=plan.actor_cpus,
        num_gpus=plan.actor_gpus,
    )
    try:
        for result in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            collector.add(result)
        collector.check_finished()
    except BaseException:
        collector.abort()
        raise
    return ExtractResult(collector.good, collector.bad, collector.committed)

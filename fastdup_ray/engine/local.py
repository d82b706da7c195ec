"""The local engine: worker processes on this machine, no Ray.

Extraction: this process cuts each unit into batches (loose files as lists of locations
that a worker reads itself; archive members read here, in order, since an archive is one
stream) and hands them to a pool of worker processes; each worker keeps one
single-threaded ONNX Runtime session and returns a batch of arrays (vectors, statistics,
thumbnails) in one piece. Batches come back in the order they were cut, with a bounded
number in flight, so shards hold rows in listing order, memory stays flat, and the one
shard writer stays in this process. Processes share no GIL: decode and model scale with
the cores, which threads of one process did not (about 800 img/s on 16 cores).

Workers are started with ``spawn`` (this process may already run threads: forking it
is unsafe) and load their model as soon as the engine is asked to :meth:`warm_up`.
A spawned worker would normally run the caller's script again to rebuild ``__main__``;
a driver script without an ``if __name__ == "__main__":`` guard would then start a run
in every worker. The workers need nothing from ``__main__`` (their functions live in
this package), so the script is hidden from them while they start.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager

from fastdup_ray.engine import Resources
from fastdup_ray.map.extract import (
    ExtractJob,
    ShardCollector,
    closing_row,
    embed_chunk,
    rows_per_batch,
    session_for,
    unit_chunks,
)
from fastdup_ray.map.sources import WorkUnit

log = logging.getLogger("fastdup_ray")


def _load_session(job: ExtractJob) -> None:
    session_for(job)


def _nothing() -> None:
    return None


@contextmanager
def main_script_hidden() -> Iterator[None]:
    """While workers start: no ``__main__.__file__``, so spawn does not run the caller's
    script in them (multiprocessing reads it only when a module has no import name)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    path = getattr(main, "__file__", None)
    if main is None or path is None or getattr(spec, "name", None):
        yield  # `python -m ...` (imported by name), a notebook or an interpreter: nothing to hide
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


class LocalEngine:
    name = "local"

    def __init__(self, workers: int, chunk_fn: Callable = embed_chunk) -> None:
        self.workers = max(1, workers)
        self.chunk_fn = chunk_fn  # what a worker runs on one cut of a unit (picklable)
        self._pool: ProcessPoolExecutor | None = None
        self._warming: list[Future] = []

    @property
    def resources(self) -> Resources:
        from fastdup_ray.map.embed import cuda_available

        return Resources(cpus=self.workers, gpus=int(cuda_available()))

    def cuda_problem(self) -> str | None:
        from fastdup_ray.map.embed import cuda_problem

        return cuda_problem()  # the workers are this machine's processes, with its libraries

    def _processes(self) -> ProcessPoolExecutor:
        """The pool, with every worker already started (the pool starts one per submit
        while none is idle, so one submit per worker starts them all, here)."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            with main_script_hidden():
                for _ in range(self.workers):
                    self._pool.submit(_nothing)
        return self._pool

    def warm_up(self, job: ExtractJob) -> None:
        """Start the workers and load the model in each, without waiting for them."""
        pool = self._processes()
        self._warming = [pool.submit(_load_session, job) for _ in range(self.workers)]

    def extract(self, units: list[WorkUnit], job: ExtractJob, collector: ShardCollector) -> None:
        batch = rows_per_batch(job.batch_size, units, self.workers)
        log.info("extracting in %d worker processes (executor 'local')", self.workers)
        pool = self._processes()
        for future in self._warming:
            future.result()  # a model that cannot load fails here, once
        rows: dict[str, int] = {}
        in_flight: deque[tuple[str, Future | None]] = deque()

        def hand_over_oldest() -> None:
            unit, future = in_flight.popleft()
            if future is None:  # every batch of the unit has been handed over: close it
                collector.add(closing_row(unit, rows.pop(unit, 0), job.d))
                return
            result = future.result()
            rows[unit] = rows.get(unit, 0) + len(result["ok"])
            collector.add(result)

        try:
            for unit in units:
                seq = 0
                for chunk in unit_chunks(unit, job.read, batch):
                    if unit.name in collector.failed:
                        break  # the storage failed under this unit: a rerun reads it whole
                    in_flight.append((unit.name, pool.submit(self.chunk_fn, unit.name, chunk, seq, job)))
                    seq += len(chunk.locations) if isinstance(chunk, WorkUnit) else len(chunk)
                    while len(in_flight) > 2 * self.workers:
                        hand_over_oldest()
                in_flight.append((unit.name, None))
            while in_flight:
                hand_over_oldest()
        except BaseException:
            for _, future in in_flight:
                if future is not None:
                    future.cancel()
            raise

    def map(self, fn: Callable, items: Sequence) -> Iterator:
        """Results of ``fn`` over ``items``, in order; one item runs in this process."""
        if len(items) <= 1:
            return iter([fn(item) for item in items])
        return self._processes().map(fn, items)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

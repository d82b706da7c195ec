"""The local engine: worker processes on this machine, no Ray.

Extraction: the map plan cuts each unit into pieces (:meth:`MapPlan.pieces`: loose files
as lists of locations that a worker reads itself; archive members read here, in order,
since an archive is one stream) and this engine hands them to a pool of worker processes;
each worker runs every stage the plan declares on its piece, keeping one single-threaded
ONNX Runtime session, and returns its batches of arrays (vectors, statistics, thumbnails).
Batches come back in the order they were cut, with a bounded number in flight, so shards
hold rows in listing order, memory stays flat, and the one shard writer stays in this
process. Processes share no GIL: decode and model scale with the cores, which threads of
one process did not (about 800 img/s on 16 cores).

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
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing, contextmanager
from functools import partial

from fastdup_ray.engine import Resources, in_order, share_cores
from fastdup_ray.map.plan import ACTOR, MapPlan, Sink, Stage, cuda_problem_here, gpus_here

log = logging.getLogger("fastdup_ray")

# What each stage that keeps a session runs with, per worker process: loaded once.
_opened: dict[Stage, Callable] = {}


def open_stage(stage: Stage) -> Callable:
    """The stage's batch function in this process; an actor stage's is opened once and kept."""
    if stage.placement != ACTOR:
        return stage.open()
    if stage not in _opened:
        _opened[stage] = stage.open()
    return _opened[stage]


def open_actor_stages(stages: tuple[Stage, ...]) -> None:
    for stage in stages:
        if stage.placement == ACTOR:
            open_stage(stage)


def run_stages(stages: tuple[Stage, ...], work: dict) -> list[dict]:
    """Every stage, in order, over one piece of work, in this worker: its finished batches."""
    batches = [work]
    for stage in stages:
        run = open_stage(stage)
        batches = [out for batch in batches for out in run(batch)]
    return batches


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


@contextmanager
def one_thread_each() -> Iterator[None]:
    """While workers start: OMP_NUM_THREADS=1 in their environment (OpenMP and OpenBLAS
    read it as they load), as Ray gives its one-CPU tasks, unless the caller set it. A
    worker per core, each running faiss or BLAS on every core, would put that many
    threads on each core."""
    if "OMP_NUM_THREADS" in os.environ:
        yield
        return
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        del os.environ["OMP_NUM_THREADS"]


class LocalEngine:
    name = "local"

    def __init__(self, workers: int, piece_fn: Callable = run_stages) -> None:
        self.workers = max(1, workers)
        self.piece_fn = piece_fn  # what a worker runs on one piece: (stages, work) -> batches (picklable)
        self._pool: ProcessPoolExecutor | None = None
        self._warming: list[Future] = []

    @property
    def resources(self) -> Resources:
        return Resources(cpus=self.workers, gpus=gpus_here())

    def cuda_problem(self) -> str | None:
        return cuda_problem_here()  # the workers are this machine's processes, with its libraries

    def _processes(self) -> ProcessPoolExecutor:
        """The pool, with every worker already started (the pool starts one per submit
        while none is idle, so one submit per worker starts them all, here)."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            with main_script_hidden(), one_thread_each():
                for _ in range(self.workers):
                    self._pool.submit(_nothing)
        return self._pool

    def warm_up(self, plan: MapPlan) -> None:
        """Start the workers and open the plan's sessions in each, without waiting for them."""
        pool = self._processes()
        stages = plan.stages(plan.batch_rows(self.workers))
        self._warming = [pool.submit(open_actor_stages, stages) for _ in range(self.workers)]

    def extract(self, plan: MapPlan, sink: Sink) -> None:
        """Every stage of ``plan`` over each piece in a worker; the pieces' batches go to
        ``sink`` in the order the pieces were cut, with a bounded number in flight."""
        rows = plan.batch_rows(self.workers)
        stages = plan.stages(rows)
        log.info("extracting in %d worker processes (executor 'local')", self.workers)
        pool = self._processes()
        for future in self._warming:
            future.result()  # a model that cannot load fails here, once
        works = (piece.work for piece in plan.pieces(rows, sink))
        submit = partial(pool.submit, self.piece_fn, stages)
        with closing(in_order(submit, works, ahead=2 * self.workers)) as finished:
            for batches in finished:
                for batch in batches:
                    sink.add(batch)

    def map(self, fn: Callable, items: Sequence, cpus: int = 1) -> Iterator:
        """Results of ``fn`` over ``items``, in order, in the worker processes; a wave of
        one item too (the reduce's train, outliers and tables), so the calling process
        never holds a wave's data and its peak memory stays flat as the run grows.
        ``cpus`` needs no booking here: the pool has a worker per core, and a wave whose
        items get several cores each has fewer items than workers, so the idle workers
        leave those cores free."""
        if not items:
            return iter([])
        return self._processes().map(fn, items)

    def cpus_per_item(self, items: int) -> int:
        return share_cores(self.workers, 1, items)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

"""Engines run the stages; the stages never know which one does.

An engine offers three things (datatrove's executors and img2dataset's distributor are
the models): :meth:`Engine.extract` runs the stages a map plan declares
(:mod:`fastdup_ray.map.plan`: read + decode tasks, embedding actors) over its units and
hands each finished batch, in order, to a sink on this process (the shard collector);
:meth:`Engine.map` runs a plain function over a list of items (the waves of the
distributed reduce) and returns the results in order; :attr:`Engine.resources` says what
it has. Two engines implement it:

- ``local`` (:mod:`fastdup_ray.engine.local`): worker processes on this machine, one
  single-threaded ONNX Runtime session each, no GIL between them, no Ray start-up;
- ``ray`` (:mod:`fastdup_ray.engine.ray`): Ray Data tasks and actors on a cluster. It is
  the only module that imports Ray.

The user-facing parameter ``executor`` (auto | local | ray) picks one (:func:`choose`).
"""

from __future__ import annotations

import json
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence


@dataclass(frozen=True)
class Resources:
    cpus: int
    gpus: int
    nodes: int = 1


class Engine(Protocol):
    name: str

    @property
    def resources(self) -> Resources: ...

    def cuda_problem(self) -> str | None:
        """None when the workers that would embed on a GPU can start CUDA there; else why not."""

    def warm_up(self, plan: Any) -> None:
        """Start what extraction will need (workers, models) without waiting for it."""

    def extract(self, plan: Any, sink: Any) -> None:
        """Run the stages a map plan (fastdup_ray.map.plan.MapPlan) declares over its
        units; every finished batch goes to ``sink.add`` on this process, in order."""

    def map(self, fn: Callable, items: Sequence, cpus: int = 1) -> list:
        """``[fn(item) for item in items]``, run in parallel; ``fn`` must be picklable.
        ``cpus``: the cores each item may use (cpus_per_item); the engine books them
        where it schedules by cores, and ``fn`` sets its libraries' threads."""

    def cpus_per_item(self, items: int) -> int:
        """The cores each item of a map over ``items`` may use (share_cores)."""

    def close(self) -> None: ...


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


def in_order(submit: Callable[[Any], Future], items: Iterable, ahead: int) -> Iterator:
    """The result of ``submit(item)``, a Future, for each item in the items' order, with at
    most ``ahead`` submitted beyond the one awaited: memory stays a few results however
    many items come, and the next item is read only once a result has been taken. When a
    result fails or the generator is closed early, the pending futures are cancelled."""
    pending: deque[Future] = deque()
    try:
        for item in items:
            pending.append(submit(item))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


def share_cores(cpus: int, nodes: int, items: int) -> int:
    """Cores each item of a wave of ``items`` may use: the engine's ``cpus`` shared out, no
    more than a node has. A wave of one item (the lists' k-means) gets a whole node
    rather than one core; a wave of at least as many items as cores, one core each."""
    per_node = max(1, cpus // max(1, nodes))
    return max(1, min(per_node, cpus // max(1, items)))


def ray_job_single_thread(environ=os.environ) -> bool:
    """Whether this process is a ``ray job submit`` entrypoint holding the
    OMP_NUM_THREADS=1 that Ray gives any worker asking no CPU (the job's supervisor, whose
    child the entrypoint is), not a value the job's runtime_env set. Such a driver would
    run its faiss searches (the in-memory reduce, a test set's search) on one core of the
    node. Only for the driver: a Ray task's OMP_NUM_THREADS is its CPUs, as it should be."""
    if environ.get("OMP_NUM_THREADS") != "1" or "RAY_JOB_CONFIG_JSON_ENV_VAR" not in environ:
        return False
    try:
        job = json.loads(environ["RAY_JOB_CONFIG_JSON_ENV_VAR"])
        asked = (job.get("runtime_env") or {}).get("env_vars") or {}
    except (ValueError, AttributeError):
        return False
    return "OMP_NUM_THREADS" not in asked


def ray_cluster_given() -> bool:
    """A cluster to join (RAY_ADDRESS, as `ray job submit` sets it) or Ray already started
    by the caller; checked without importing Ray."""
    ray = sys.modules.get("ray")
    return bool(os.environ.get("RAY_ADDRESS")) or (ray is not None and ray.is_initialized())


def choose(executor: str, compute: str, locations: Sequence[str]) -> str:
    """'local' unless the run asks for Ray: ``executor`` says so, a cluster is given
    (ray_cluster_given), GPU embedding (decode tasks feeding GPU actors), or remote inputs
    (read by many Ray tasks at once rather than one archive at a time)."""
    if executor != "auto":
        return executor
    if ray_cluster_given() or compute == "gpu":
        return "ray"
    if any("://" in location for location in locations):
        return "ray"
    return "local"


def open_engine(name: str, num_threads: int = 0, verbose: bool = False) -> Engine:
    """The engine called ``name``, ready to run (Ray joined or started for 'ray')."""
    if name == "ray":
        from fastdup_ray.engine.ray import RayEngine

        return RayEngine(num_threads, verbose=verbose)
    from fastdup_ray.engine.local import LocalEngine

    return LocalEngine(num_threads or available_cpus())


class EngineSlot:
    """The run's engine, opened the first time a stage needs one and kept for the rest of
    the run (its workers are started once, not per stage)."""

    def __init__(self, executor: str = "auto", num_threads: int = 0, verbose: bool = False) -> None:
        self.executor, self.num_threads, self.verbose = executor, num_threads, verbose
        self.engine: Engine | None = None

    def get(self, compute: str = "cpu", locations: Sequence[str] = ()) -> Engine:
        if self.engine is None:
            self.engine = open_engine(
                choose(self.executor, compute, locations), self.num_threads, self.verbose
            )
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()

"""The Ray engine: Ray Data tasks and actors on a cluster (the only module importing Ray).

Extraction: each stage the map plan declares is one Ray Data operator; today::

    units ──> read + decode (a TASK stage: CPU tasks, one unit each, streaming batches out)
          ──> embed (an ACTOR stage: actor pool, one ONNX Runtime session per actor, CPU or GPU)
          ──> the sink on the driver (the shard collector: one writer per unit, marker last)

``map`` runs a plain function over items as Ray tasks (the waves of the distributed reduce,
rounds), results in order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from fastdup_ray.engine import Resources
from fastdup_ray.map.plan import TASK, MapPlan, Sink, Stage, cuda_problem_here

log = logging.getLogger("fastdup_ray")


def connect_ray(verbose: bool = False) -> None:
    """Join the cluster named by RAY_ADDRESS, reuse a running Ray, or start a local one on
    all cores. Workers' own log lines reach this console only with ``verbose``."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        log.info("joining the Ray cluster at %s", os.environ["RAY_ADDRESS"])
        ray.init(address=os.environ["RAY_ADDRESS"], logging_level=logging.WARNING, log_to_driver=verbose)
    else:
        ray.init(logging_level=logging.WARNING, include_dashboard=False, log_to_driver=verbose)


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
CUDA_PROBE_SECONDS = 300
# CPUs reserved in Ray's accounting for decode tasks. Decoding (+ statistics, thumbnail)
# now takes ~0.8x the int8 model's time per image, ~44% of the work; the operating system
# shares the cores between the processes, and with two decode tasks per reserved CPU
# decoding can use up to ~55% of them. (0.27 and 0.45 timed the same on 2 cores.)
DECODE_SHARE = 0.27


def plan_embedding(
    compute: str, num_threads: int, cluster_cpus: float, cluster_gpus: float, nodes: int = 1
) -> EmbedPlan:
    """Size the actor pool for the cluster: one single-threaded session per core on CPU,
    one actor per GPU on GPU, leaving room for the decode tasks that feed them.

    The CPUs kept for decoding are at least half a CPU per node, and a decode task asks
    for a quarter CPU, so that however Ray packs the actors onto nodes of any size, some
    node keeps room for decoding (an actor pool filling every node to the last fraction
    would wait forever for input)."""
    if compute == "gpu":
        if cluster_gpus >= 1:
            decode_tasks = max(1, int(cluster_cpus - cluster_gpus))
            return EmbedPlan(
                actors=int(cluster_gpus),
                actor_cpus=1.0,
                actor_gpus=1.0,
                decode_cpus=1.0,
                compute="gpu",
                decode_tasks=decode_tasks,
            )
        log.warning("compute='gpu' but the Ray cluster has no GPU; embedding on CPU instead")
    cpus = max(1.0, cluster_cpus)
    actors = num_threads or max(1, int(cpus))
    kept_for_decode = min(cpus / 2, max(0.5 * nodes, DECODE_SHARE * cpus))
    actor_cpus = max(0.1, (cpus - kept_for_decode) / actors)
    decode_tasks = max(1, round(kept_for_decode / 0.5))
    return EmbedPlan(
        actors=actors,
        actor_cpus=actor_cpus,
        actor_gpus=0.0,
        decode_cpus=0.25,
        compute="cpu",
        decode_tasks=decode_tasks,
    )


class RayEngine:
    name = "ray"

    def __init__(self, num_threads: int = 0, verbose: bool = False) -> None:
        connect_ray(verbose)
        self.num_threads = num_threads
        self.verbose = verbose

    @property
    def resources(self) -> Resources:
        import ray

        cluster = ray.cluster_resources()
        nodes = sum(
            1 for node in ray.nodes() if node.get("Alive") and node.get("Resources", {}).get("CPU", 0) > 0
        )
        return Resources(
            cpus=int(cluster.get("CPU", 1)), gpus=int(cluster.get("GPU", 0)), nodes=max(1, nodes)
        )

    def cuda_problem(self) -> str | None:
        """Asked of a worker holding a GPU, where the actors will run: its libraries and
        environment are not the driver's."""
        import ray

        probe = ray.remote(num_gpus=1, num_cpus=0)(cuda_problem_here)
        try:
            return ray.get(probe.remote(), timeout=CUDA_PROBE_SECONDS)
        except ray.exceptions.GetTimeoutError:
            return f"no worker with a GPU answered within {CUDA_PROBE_SECONDS} s"

    def warm_up(self, plan: MapPlan) -> None:
        """Ray Data starts its actors with the pipeline; nothing to start ahead here."""

    def extract(self, plan: MapPlan, sink: Sink) -> None:
        import ray
        import ray.data  # configures its loggers on import, so import before adjusting them

        # Ray Data logs every execution plan at INFO; our own log says what the run does.
        logging.getLogger("ray.data").setLevel(logging.INFO if self.verbose else logging.WARNING)
        have = self.resources
        sizing = plan_embedding(plan.compute, self.num_threads, have.cpus, have.gpus, have.nodes)
        log.debug("embedding plan: %s", sizing)
        plan = plan.on(sizing.compute)
        context = ray.data.DataContext.get_current()
        # Keep the units' order, so shard rows come out in listing order and runs repeat exactly.
        context.execution_options.preserve_order = True
        context.enable_progress_bars = self.verbose
        batch = plan.batch_rows(2 * sizing.actors)
        if sizing.compute == "gpu":
            # A GPU wants large batches (per-call overhead, kernel occupancy); CPU decode tasks
            # fill them, so a GPU batch is never smaller than GPU_BATCH unless a unit is.
            batch = max(batch, min(GPU_BATCH, max(len(u.locations) for u in plan.units)))
        # Ray Data merges a generator's yields into blocks of up to 128 MiB (~850 decoded
        # images) by default; blocks of about one batch keep the pipeline streaming and the
        # embedding actors' memory flat.
        context.target_max_block_size = max(1 << 20, batch * plan.row_bytes * 2)
        work = plan.work_rows()
        dataset = ray.data.from_items(work, override_num_blocks=len(work))
        for stage in plan.stages(batch):
            dataset = operator(dataset, stage, sizing, batch)
        for result in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            sink.add(result)

    def map(self, fn: Callable, items: Sequence) -> Iterator:
        """Results of ``fn`` over ``items`` as Ray tasks of one CPU each, in order."""
        import ray

        task = ray.remote(num_cpus=1)(apply_to)
        pending = [task.remote(fn, item) for item in items]
        return (ray.get(ref) for ref in pending)

    def close(self) -> None:
        """Ray stays up for the caller (a driver script may run again)."""


def operator(dataset, stage: Stage, sizing: EmbedPlan, batch: int):
    """``dataset`` through ``stage``: a TASK stage as a pool of decode tasks fed one unit
    each, an ACTOR stage as the pool of actors the sizing asks for, fed ``batch`` rows."""
    import ray.data

    if stage.placement == TASK:
        return dataset.map_batches(
            run_task,
            fn_kwargs={"stage": stage},
            batch_size=1,
            num_cpus=sizing.decode_cpus,
            compute=ray.data.TaskPoolStrategy(size=sizing.decode_tasks),
        )
    return dataset.map_batches(
        StageActor,
        fn_constructor_kwargs={"stage": stage},
        batch_size=batch,
        compute=ray.data.ActorPoolStrategy(size=sizing.actors),
        num_cpus=sizing.actor_cpus,
        num_gpus=sizing.actor_gpus,
    )


def run_task(batch: dict, stage: Stage) -> Iterator[dict]:
    """A TASK stage over one batch, as a Ray Data generator."""
    yield from stage.open()(batch)


class StageActor:
    """An ACTOR stage as a Ray Data callable class: opened (its session loaded) once per actor."""

    def __init__(self, stage: Stage) -> None:
        self.run = stage.open()

    def __call__(self, batch: dict) -> Iterator[dict]:
        yield from self.run(batch)


def apply_to(fn: Callable, item):
    """``fn(item)`` as a Ray task: fn may be any picklable callable (a partial with a
    reduce plan, say), which ray.remote itself does not take."""
    return fn(item)

"""The Ray engine: Ray Data tasks and actors on a cluster (the only module importing Ray).

Extraction on GPU: each stage the map plan declares is one Ray Data operator::

    units ──> read + decode (a TASK stage: CPU tasks, one unit each, streaming batches out)
          ──> embed (an ACTOR stage: one actor per GPU, one ONNX Runtime session each)
          ──> the sink on the driver (the shard collector: one writer per unit, marker last)

On CPU, the plan's stages fused into one (``MapPlan.fused``): one actor per core reads,
decodes and embeds pieces of units (``MapPlan.work_pieces``), and its batches go to the
sink; decode and model then share every core as each image needs, with no pixels moved
between processes.

``map`` runs a plain function over items as Ray tasks (the waves of the distributed reduce,
rounds), results in order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from fastdup_ray.engine import Resources, share_cores
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


def plan_embedding(
    compute: str, num_threads: int, cluster_cpus: float, cluster_gpus: float, nodes: int = 1
) -> EmbedPlan:
    """Size the pools for the cluster. On CPU, one actor per core (or per ``num_threads``),
    each reading, decoding and embedding its pieces with a single-threaded session. On
    GPU, one embedding actor per GPU, fed by decode tasks on the other cores."""
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
    return EmbedPlan(
        actors=actors, actor_cpus=min(1.0, cpus / actors), actor_gpus=0.0, decode_cpus=0.0, compute="cpu"
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
        if sizing.compute == "cpu":
            dataset = fused_pipeline(plan, sizing, batch)
        else:
            work = plan.work_rows()
            dataset = ray.data.from_items(work, override_num_blocks=len(work))
            for stage in plan.stages(batch):
                dataset = operator(dataset, stage, sizing, batch)
        for result in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            sink.add(result)

    def map(self, fn: Callable, items: Sequence, cpus: int = 1) -> Iterator:
        """Results of ``fn`` over ``items`` as Ray tasks of ``cpus`` CPUs each, in order."""
        import ray

        task = ray.remote(num_cpus=cpus)(apply_to)
        pending = [task.remote(fn, item) for item in items]
        return (ray.get(ref) for ref in pending)

    def cpus_per_item(self, items: int) -> int:
        have = self.resources
        return share_cores(have.cpus, have.nodes, items)

    def close(self) -> None:
        """Ray stays up for the caller (a driver script may run again)."""


def fused_pipeline(plan: MapPlan, sizing: EmbedPlan, batch: int):
    """On CPU: one actor per core, each reading, decoding and embedding WORK pieces (the
    plan's Fused stage), as the local engine's worker processes do."""
    import ray.data

    work = plan.work_pieces(batch)
    # No more actors than pieces: an actor with nothing to do would still load the model
    # on a core the others need (a rerun of one or two shards is such a job).
    actors = max(1, min(sizing.actors, len(work)))
    return ray.data.from_items(work, override_num_blocks=len(work)).map_batches(
        StageActor,
        fn_constructor_kwargs={"stage": plan.fused(batch)},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=sizing.actor_cpus,
    )


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

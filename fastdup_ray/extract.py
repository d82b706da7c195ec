"""Map side on Ray Data: image locations in, features.dat / .csv / bad.csv out.

Decoding runs as CPU tasks; embedding in an actor pool that holds one ONNX Runtime
session per actor. The batch functions below are plain functions of numpy batches,
tested without Ray; Ray appears only in :func:`extract_features`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from fastdup_ray.config import RunConfig
from fastdup_ray.decode import BadImage, decode_image
from fastdup_ray.embed import Embedder
from fastdup_ray.features import FeatureShardWriter
from fastdup_ray.sources import Listing

log = logging.getLogger("fastdup_ray")


def read_bytes(location: str) -> bytes:
    with open(location, "rb") as handle:
        return handle.read()


def decode_batch(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Read and decode a batch of locations; bad ones get ok=False and a reason."""
    paths = batch["path"]
    pixels = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    reasons = np.full(len(paths), "", dtype=object)
    for i, path in enumerate(paths):
        try:
            pixels[i] = decode_image(read_bytes(path), size)
            ok[i] = True
        except BadImage as exc:
            reasons[i] = str(exc)
        except OSError as exc:
            reasons[i] = f"cannot read file: {exc.strerror or exc}"
    return {"path": paths, "ok": ok, "reason": reasons, "pixels": pixels}


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
        return {"path": batch["path"], "ok": ok, "reason": batch["reason"], "embedding": vectors}


@dataclass
class ExtractResult:
    good: int
    bad: int


def connect_ray() -> None:
    """Join the cluster named by RAY_ADDRESS, reuse a running Ray, or start a local one on all cores."""
    import ray

    if ray.is_initialized():
        return
    quiet = dict(logging_level=logging.WARNING, include_dashboard=False, configure_logging=True)
    if os.environ.get("RAY_ADDRESS"):
        log.info("joining the Ray cluster at %s", os.environ["RAY_ADDRESS"])
        ray.init(address=os.environ["RAY_ADDRESS"], logging_level=logging.WARNING)
    else:
        ray.init(**quiet)


@dataclass(frozen=True)
class EmbedPlan:
    """How many embedding actors, with which resources, and how decode tasks are sized."""

    actors: int
    actor_cpus: float
    actor_gpus: float
    decode_cpus: float
    compute: str


def plan_embedding(config: RunConfig, cluster_cpus: float, cluster_gpus: float) -> EmbedPlan:
    """Size the actor pool for the cluster: one single-threaded session per core on CPU,
    one actor per GPU on GPU, leaving room for the decode tasks that feed them."""
    if config.compute == "gpu":
        if cluster_gpus >= 1:
            return EmbedPlan(actors=int(cluster_gpus), actor_cpus=1.0, actor_gpus=1.0, decode_cpus=1.0, compute="gpu")
        log.warning("compute='gpu' but the Ray cluster has no GPU; embedding on CPU instead")
    cpus = max(1.0, cluster_cpus)
    actors = config.num_threads or max(1, int(cpus))
    decode_cpus = 0.5
    actor_cpus = max(0.1, (cpus - decode_cpus) / actors)
    return EmbedPlan(actors=actors, actor_cpus=actor_cpus, actor_gpus=0.0, decode_cpus=decode_cpus, compute="cpu")


def extract_features(config: RunConfig, listing: Listing, image_size: int) -> ExtractResult:
    """Run decode + embed over ``listing`` on Ray Data and write the features shard."""
    import ray
    import ray.data  # configures its loggers on import, so import before adjusting them

    connect_ray()
    # Ray Data logs every execution plan at INFO; our own log says what the run does.
    logging.getLogger("ray.data").setLevel(logging.INFO if config.verbose else logging.WARNING)
    resources = ray.cluster_resources()
    plan = plan_embedding(config, resources.get("CPU", 1.0), resources.get("GPU", 0.0))
    log.debug("embedding plan: %s", plan)
    context = ray.data.DataContext.get_current()
    # Keep the listing's order, so features.dat rows come out sorted and runs repeat exactly.
    context.execution_options.preserve_order = True
    context.enable_progress_bars = config.verbose

    writer = FeatureShardWriter(config.work_dir, d=config.d)
    try:
        writer.add_bad([loc for loc, _ in listing.bad], [why for _, why in listing.bad])
        if listing.locations:
            n = len(listing.locations)
            # Small runs get smaller batches, so that every actor has work from the start.
            batch = max(1, min(config.batch_size, -(-n // (2 * plan.actors))))
            dataset = ray.data.from_items(
                [{"path": location} for location in listing.locations],
                override_num_blocks=max(1, min(-(-n // batch), 4096)),
            )
            dataset = dataset.map_batches(
                decode_batch, fn_kwargs={"size": image_size}, batch_size=batch, num_cpus=plan.decode_cpus
            )
            dataset = dataset.map_batches(
                EmbedBatches,
                fn_constructor_kwargs={"model_path": config.model_path, "d": config.d, "compute": plan.compute},
                batch_size=batch,
                compute=ray.data.ActorPoolStrategy(size=plan.actors),
                num_cpus=plan.actor_cpus,
                num_gpus=plan.actor_gpus,
            )
            for result in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                ok = result["ok"].astype(bool)
                paths = result["path"]
                writer.add_good(paths[ok].tolist(), result["embedding"][ok])
                writer.add_bad(paths[~ok].tolist(), result["reason"][~ok].tolist())
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    return ExtractResult(good=writer.good, bad=writer.bad)

"""The whole job: list -> extract (Ray Data) -> kNN -> components -> output files.

Only wiring lives here; each stage is its own module.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fastdup_ray import outputs
from fastdup_ray.config import RunConfig
from fastdup_ray.embed import Embedder
from fastdup_ray.extract import extract_features
from fastdup_ray.features import load_binary_features
from fastdup_ray.graph import connected_components, pagerank
from fastdup_ray.index import knn_edges
from fastdup_ray.sources import list_inputs

log = logging.getLogger("fastdup_ray")


@dataclass
class RunSummary:
    """What a run did: counts, where the outputs are, and seconds per stage."""

    work_dir: str
    good: int = 0
    bad: int = 0
    similar_pairs: int = 0
    outlier_rows: int = 0
    components: int = 0
    grouped_images: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        timing = ", ".join(f"{stage} {secs:.1f}s" for stage, secs in self.seconds.items())
        return [
            f"images: {self.good} good, {self.bad} bad (reasons in features.bad.csv)",
            f"similar pairs: {self.similar_pairs} in similarity.csv; outlier rows: {self.outlier_rows}",
            f"components: {self.components} ({self.grouped_images} images in components of 2 or more)",
            f"time: {timing}",
            f"outputs in {self.work_dir}",
        ]


@contextmanager
def stage_timer(summary: RunSummary, stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    summary.seconds[stage] = time.perf_counter() - start
    log.debug("stage %s took %.2fs", stage, summary.seconds[stage])


def setup_logging(verbose: bool) -> None:
    """Give the package logger a console handler unless the application configured one."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("fastdup_ray: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)


def run(input_dir: str, work_dir: str, **params: Any) -> RunSummary:
    """Find duplicates, outliers and components among the images under ``input_dir``.

    Parameters use fastdup's names (threshold, lower_threshold, nearest_neighbors_k or k,
    turi_param, num_images, verbose, d, model_path, compute, ...); see RunConfig.
    Outputs are written to ``work_dir``.
    """
    return run_config(RunConfig.from_kwargs(input_dir, work_dir, **params))


def run_config(config: RunConfig) -> RunSummary:
    setup_logging(config.verbose)
    summary = RunSummary(work_dir=str(Path(config.work_dir).resolve()))
    with stage_timer(summary, "list"):
        listing = list_inputs(config.input_dir, config.num_images)
    log.info("found %d images under %s", len(listing), config.input_dir)
    # Load the model once on the driver: a wrong model_path or d fails here, before Ray starts.
    image_size = Embedder(config.model_path, d=config.d, compute="cpu").image_size
    work_dir = Path(config.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "config.json").write_text(config.to_json())
    with stage_timer(summary, "extract"):
        extracted = extract_features(config, listing, image_size)
    summary.good, summary.bad = extracted.good, extracted.bad
    reduce_features(config, summary)
    for line in summary.lines():
        log.info(line)
    return summary


def reduce_features(config: RunConfig, summary: RunSummary) -> None:
    """kNN over the stored features, then every output table."""
    work_dir = Path(config.work_dir)
    filenames, features = load_binary_features(work_dir, d=config.d)
    n = len(filenames)
    with stage_timer(summary, "knn"):
        if n >= 2:
            src, dst, knn_sim = knn_edges(features, config.nearest_neighbors_k)
        else:
            src = dst = np.zeros(0, dtype=np.int64)
            knn_sim = np.zeros(0, dtype=np.float32)
        a, b, sim = outputs.unique_pairs(src, dst, knn_sim)
    with stage_timer(summary, "components"):
        joined = sim >= config.ccthreshold
        labels = connected_components(n, a[joined], b[joined])
        rank, delta = pagerank(n, a[joined], b[joined], sim[joined])
    with stage_timer(summary, "outputs"):
        similarity = outputs.similarity_table(filenames, a, b, sim, config.threshold)
        outliers = outputs.outliers_table(filenames, src, dst, knn_sim, config.lower_threshold)
        components, info = outputs.component_tables(labels, rank, delta)
        outputs.write_csv_atomic(similarity, work_dir / outputs.SIMILARITY_FILE)
        outputs.write_csv_atomic(outliers, work_dir / outputs.OUTLIERS_FILE)
        outputs.write_csv_atomic(info, work_dir / outputs.COMPONENT_INFO_FILE)
        outputs.write_csv_atomic(components, work_dir / outputs.CONNECTED_COMPONENTS_FILE)
    summary.similar_pairs = similarity.height
    summary.outlier_rows = outliers.height
    summary.components = info.height
    summary.grouped_images = int(info.filter(info["Count"] > 1)["Count"].sum())

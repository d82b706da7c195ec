"""What a run did: counts, where its outputs are, and the seconds of each stage."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

log = logging.getLogger("fastdup_ray")


@dataclass
class RunSummary:
    """What a run did: counts, where the outputs are, and seconds per stage."""

    work_dir: str
    good: int = 0
    bad: int = 0
    shards: int = 0
    skipped_shards: int = 0
    similar_pairs: int = 0
    outlier_rows: int = 0
    components: int = 0
    grouped_images: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        timing = ", ".join(f"{stage} {secs:.1f}s" for stage, secs in self.seconds.items())
        lines = [f"images: {self.good} good, {self.bad} bad (reasons in features.bad.csv)"]
        if self.shards > 1 or self.skipped_shards:
            lines.append(f"shards: {self.shards} ({self.skipped_shards} already finished, skipped)")
        if "knn" in self.seconds:
            lines.append(
                f"similar pairs: {self.similar_pairs} in similarity.csv; outlier rows: {self.outlier_rows}"
            )
        if "components" in self.seconds:
            lines.append(
                f"components: {self.components} ({self.grouped_images} images in components of 2 or more)"
            )
        lines += [f"time: {timing}", f"outputs in {self.work_dir}"]
        return lines


def human_bytes(count: float) -> str:
    """A byte count as the summaries and captions print it: '512 B', '1.5 KB', ... '3.2 TB'
    (powers of 1000, as disks are sold)."""
    if count < 1000:
        return f"{int(count)} B"
    for unit in ("KB", "MB", "GB", "TB"):
        count /= 1000
        if count < 1000 or unit == "TB":
            break
    return f"{count:.1f} {unit}"


@contextmanager
def timer(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Time the block into ``seconds[stage]`` (a stage's result, or a run's summary)."""
    start = time.perf_counter()
    yield
    seconds[stage] = time.perf_counter() - start
    log.debug("stage %s took %.2fs", stage, seconds[stage])


def stage_timer(summary: RunSummary, stage: str):
    return timer(summary.seconds, stage)


def count_images(summary: RunSummary, markers: list[dict]) -> None:
    """Good and bad images of a run, from its shards' completion markers."""
    summary.good += sum(m.get("good", 0) for m in markers)
    summary.bad += sum(m.get("bad", 0) for m in markers)

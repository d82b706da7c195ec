"""Keyed exchange between the tasks of the distributed reduce, through the work dir.

A task sends rows to other tasks by key (``target``): rows for target t land in
``<name>/to-<t>/from-<source>.arrow`` (Arrow IPC written by polars), and the task for
target t reads its inbox whole. It is a map-side shuffle on shared storage, as Spark and
MapReduce do it: it works the same on both engines and across nodes (a cluster's work_dir
is shared storage), a retried task rewrites the same files, and nothing passes through
the driver.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import polars as pl

from fastdup_ray.rundir.workdir import WorkDir


@dataclass(frozen=True)
class Exchange:
    """One exchange: ``scratch/<name>``, with a schema so an empty inbox reads as an
    empty frame of the right columns."""

    scratch: WorkDir
    name: str
    schema: tuple[tuple[str, object], ...]

    def _inbox(self, target: int) -> WorkDir:
        return self.scratch.sub(f"{self.name}/to-{target:05d}")

    def send(self, source: int, targets: np.ndarray, rows: pl.DataFrame) -> None:
        """Rows of ``rows`` to the tasks named by ``targets`` (one per row)."""
        if rows.height == 0:
            return
        keyed = rows.with_columns(pl.Series("__target", np.asarray(targets, dtype=np.int64)))
        for (target,), part in keyed.partition_by("__target", as_dict=True, maintain_order=True).items():
            buffer = io.BytesIO()
            part.drop("__target").write_ipc(buffer)
            self._inbox(int(target)).write_bytes(f"from-{source:05d}.arrow", buffer.getvalue())

    def receive(self, target: int) -> pl.DataFrame:
        """Every row sent to ``target``, in the order of the senders' numbers."""
        inbox = self._inbox(target)
        parts = [pl.read_ipc(inbox.read_bytes(name)) for name in inbox.names() if name.endswith(".arrow")]
        if not parts:
            return pl.DataFrame(schema=dict(self.schema))
        return pl.concat(parts, how="vertical")

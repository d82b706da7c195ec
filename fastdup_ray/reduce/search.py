"""Search a finished run: the k nearest images of query vectors, from the run's saved
index loaded once (``nnf.index``, the exact-shard manifest, or the routed lists).

The pure part: query vectors checked and made unit length, and the edges the saved
index gives turned into fastdup's search frame (``from``, ``to``, ``distance``: cosine
similarity as similarity.csv writes it, 1 = identical). Images are turned into query
vectors by actions/search.py, with the map side's decode and embed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from fastdup_ray.errors import ConfigError, InputError
from fastdup_ray.reduce import rules
from fastdup_ray.reduce.knn_waves import ROUTED_INDEX_DIR, search_routed_index
from fastdup_ray.reduce.saved_index import index_shards, search_index_shards
from fastdup_ray.rundir import layout, results
from fastdup_ray.rundir.shards import list_shards, read_marker, unit_rows
from fastdup_ray.rundir.workdir import WorkDir

SEARCH_COLUMNS = ("from", "to", "distance")


def query_matrix(vectors, d: int, name: str = "vec") -> np.ndarray:
    """``vectors`` (one vector of d values, or an n x d matrix) as unit float32 rows; a
    wrong width, a wrong shape or a value that is not finite is a ConfigError naming it."""
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{name} must be a float vector of d={d} values or an n x {d} matrix: {exc}"
        ) from None
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[1] != d or matrix.shape[0] == 0:
        raise ConfigError(
            f"{name} has shape {tuple(np.shape(vectors))} but this run's features are {d}-d: give a vector "
            f"of {d} values or an n x {d} matrix"
        )
    if not np.isfinite(matrix).all():
        raise ConfigError(f"{name} holds NaN or infinite values")
    return unit_rows(matrix)


def search_frame(
    query_names: Sequence[str],
    src: np.ndarray,
    dst: np.ndarray,
    sim: np.ndarray,
    train_names: Sequence[str] | pl.Series,
    threshold: float | None = None,
    store_int: bool = False,
) -> pl.DataFrame:
    """fastdup's search frame: per query (in the order given), its neighbours most similar
    first (ties by index), ``to`` a run's file (its index with ``store_int``), only
    those at or above ``threshold`` when given."""
    src, dst, sim = np.asarray(src), np.asarray(dst), np.asarray(sim)
    if threshold is not None:
        keep = rules.at_least(sim, threshold)
        src, dst, sim = src[keep], dst[keep], sim[keep]
    shown = rules.csv_values(sim)
    order = np.lexsort((dst, -shown, src))
    src, dst, shown = src[order], dst[order], shown[order]
    names = train_names if isinstance(train_names, pl.Series) else pl.Series(train_names, dtype=pl.String)
    to = (
        pl.Series("to", dst, dtype=pl.Int64)
        if store_int
        else names.gather(dst).rename("to")
        if len(dst)
        else pl.Series("to", [], dtype=pl.String)
    )
    return pl.DataFrame(
        {
            "from": pl.Series("from", query_names, dtype=pl.String).gather(src)
            if len(src)
            else pl.Series("from", [], dtype=pl.String),
            "to": to,
            "distance": pl.Series("distance", shown, dtype=pl.Float64),
        }
    )


class SavedIndex:
    """A finished run's saved index and image names, read once: an exact or faiss index
    is held in memory; routed lists (a distributed run, too big for one machine's memory)
    are read a bucket at a time on each search, as run_mode 3 does."""

    def __init__(self, work: WorkDir, nprobe: int = 2) -> None:
        if not results.has_table(work, layout.CONNECTED_COMPONENTS_FILE):
            raise InputError(
                f"no finished run in {work.location}: {layout.CONNECTED_COMPONENTS_FILE} is missing; "
                "run fastdup_ray there first (run_mode 0 or 2)"
            )
        self.work, self.nprobe = work, nprobe
        self.prefixes = list_shards(work)
        markers = [read_marker(work, p) or {} for p in self.prefixes]
        if not self.prefixes or not any(m.get("good") for m in markers):
            raise InputError(f"no finished run in {work.location}: no feature shards with images")
        self.d = int(next(m["d"] for m in markers if m.get("good")))
        self.names = results.read_names(work, self.prefixes)
        self.name_column = pl.Series("to", self.names, dtype=pl.String)  # made once, not per search
        self.routed = work.exists(ROUTED_INDEX_DIR)
        # Loaded now, once (a run with no saved index says so here: index_shards checks it).
        self.shards = [] if self.routed else list(index_shards(work, self.prefixes, self.d))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Edges (query row, run row, similarity) from each unit query row to its k nearest."""
        if self.routed:
            return search_routed_index(self.work, queries, k, self.nprobe)
        return search_index_shards(self.shards, queries, k)

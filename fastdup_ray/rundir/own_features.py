"""fastdup v1's ``fd.run(embeddings=matrix, annotations=filenames)``: your own vectors,
one row per file, written to work_dir as a finished features shard (the format
save_binary_feature writes), so the reduce (run_mode 2) runs on them as on extracted ones."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import polars as pl

from fastdup_ray.errors import ConfigError
from fastdup_ray.rundir.shards import FeatureShardWriter, list_shards, load_shards, read_marker
from fastdup_ray.rundir.workdir import WorkDir

log = logging.getLogger("fastdup_ray")


def embedding_names(annotations: Any, rows: int) -> tuple[list[str], pl.DataFrame | None]:
    """(names, table): the file of each embedding row, from annotations given as a list
    of files or a frame with a ``filename`` column (its other columns kept as the table)."""
    if annotations is None:
        raise ConfigError(
            "fd.run(embeddings=...) needs annotations: the file of each row, as a list or a frame with a "
            "filename column"
        )
    if isinstance(annotations, (list, tuple)):
        table = pl.DataFrame(
            {"filename": [str(name) for name in annotations]}, schema={"filename": pl.String}
        )
    elif hasattr(annotations, "columns") and "filename" in annotations.columns:
        table = annotations if isinstance(annotations, pl.DataFrame) else pl.from_pandas(annotations)
        table = table.with_columns(pl.col("filename").cast(pl.String))
    else:
        raise ConfigError(
            "annotations for embeddings must be a list of files or a frame with a filename column"
        )
    if table.height != rows:
        raise ConfigError(
            f"embeddings has {rows} rows but annotations name {table.height} files: one per row"
        )
    if table["filename"].is_duplicated().any():
        repeated = table.filter(pl.col("filename").is_duplicated())["filename"][0]
        raise ConfigError(f"annotations name {repeated} more than once: one row per embedding")
    return table["filename"].to_list(), (table if table.width > 1 else None)


def embedding_matrix(embeddings: Any) -> np.ndarray:
    """``embeddings`` as an n x d float32 matrix of finite values, else a ConfigError."""
    matrix = np.asarray(embeddings)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0 or matrix.dtype.kind not in "fiu":
        raise ConfigError(
            f"embeddings must be an n x d numeric matrix (float32), got shape {matrix.shape} of "
            f"{matrix.dtype}"
        )
    matrix = matrix.astype(np.float32, copy=False)
    if not np.isfinite(matrix).all():
        raise ConfigError("embeddings hold NaN or infinite values")
    return matrix


def write_embeddings(work: WorkDir, names: list[str], matrix: np.ndarray, overwrite: bool) -> None:
    """The rows as work_dir's features shard. The same rows already there are kept (a
    rerun of the cell); another run there needs ``overwrite``, which clears it first."""
    from fastdup_ray.pipeline import clear_run

    shards = list_shards(work)
    if shards and not overwrite:
        marker = read_marker(work, "") or {}
        if shards == [""] and marker.get("d") == matrix.shape[1]:
            kept, vectors = load_shards(work, [""], matrix.shape[1])
            if kept == names and np.array_equal(vectors, matrix):
                log.info("embeddings: the same %d rows are already in %s", len(names), work.location)
                return
        raise ConfigError(
            f"work_dir {work.location} holds another run's features: fd.run(embeddings=..., overwrite=True) "
            "clears them, or use another work_dir"
        )
    if shards or overwrite:
        clear_run(work)
    with FeatureShardWriter(work, d=matrix.shape[1]) as writer:
        writer.add_good(names, matrix)


def embeddings_run(
    work_dir: str, embeddings: Any, annotations: Any, overwrite: bool, params: dict[str, Any], storage=None
) -> tuple[list[str], pl.DataFrame | None, dict[str, Any]]:
    """Write fd.run's embeddings to work_dir; returns (names, annotation table or None,
    the run's parameters with run_mode=2 and d set)."""
    matrix = embedding_matrix(embeddings)
    names, table = embedding_names(annotations, len(matrix))
    for name, value in (("run_mode", 2), ("d", matrix.shape[1])):
        if params.get(name, value) != value:
            raise ConfigError(
                f"fd.run(embeddings=...) runs with {name}={value} (the reduce over your {matrix.shape[1]}-d "
                f"vectors), not {name}={params[name]!r}"
            )
    write_embeddings(WorkDir(work_dir, storage), names, matrix, overwrite)
    return names, table, {**params, "run_mode": 2, "d": matrix.shape[1]}

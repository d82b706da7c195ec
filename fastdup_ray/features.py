"""The features.dat format: raw little-endian float32 rows, their file names, the bad list.

``features.dat`` holds n x d float32 values, row-major, no header; ``features.dat.csv``
names the rows in order (header ``filename``; fastdup 2.x's ``index,filename`` is read
too); ``features.bad.csv`` lists ``filename,error`` for inputs that gave no vector.
Writes go to temporary names and are renamed into place, so a crash never leaves a
half-written shard that looks finished.
"""

from __future__ import annotations

import csv
import os
import uuid
from pathlib import Path

import numpy as np
import polars as pl

from fastdup_ray.errors import InputError

FEATURES_FILE = "features.dat"
NAMES_SUFFIX = ".csv"
BAD_FILE = "features.bad.csv"


def shard_paths(work_dir: str | Path, prefix: str = "") -> tuple[Path, Path, Path]:
    """(features.dat, features.dat.csv, features.bad.csv) of the shard named ``prefix``."""
    work_dir = Path(work_dir)
    data = work_dir / f"{prefix}{FEATURES_FILE}"
    return data, Path(f"{data}{NAMES_SUFFIX}"), work_dir / f"{prefix}{BAD_FILE}"


class FeatureShardWriter:
    """Streams rows of one shard to temporary files; ``commit`` renames them into place.

    Memory stays flat however many rows pass through: vectors and names are appended
    to disk as they arrive.
    """

    def __init__(self, work_dir: str | Path, d: int, prefix: str = "") -> None:
        self.d = d
        self.final_paths = shard_paths(work_dir, prefix)
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex[:8]
        self.temp_paths = tuple(p.with_name(f".{p.name}.tmp-{token}") for p in self.final_paths)
        self._data = open(self.temp_paths[0], "wb")
        self._names = open(self.temp_paths[1], "w", newline="", encoding="utf-8")
        self._bad = open(self.temp_paths[2], "w", newline="", encoding="utf-8")
        self._names_csv = csv.writer(self._names)
        self._bad_csv = csv.writer(self._bad)
        self._names_csv.writerow(["filename"])
        self._bad_csv.writerow(["filename", "error"])
        self.good = 0
        self.bad = 0

    def add_good(self, filenames: list[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        if vectors.shape != (len(filenames), self.d):
            raise ValueError(f"expected {len(filenames)} x {self.d} vectors, got {vectors.shape}")
        self._data.write(vectors.tobytes())
        self._names_csv.writerows([name] for name in filenames)
        self.good += len(filenames)

    def add_bad(self, filenames: list[str], reasons: list[str]) -> None:
        self._bad_csv.writerows(zip(filenames, reasons))
        self.bad += len(filenames)

    def commit(self) -> tuple[Path, Path, Path]:
        """Flush, fsync and rename; the data file is renamed last, so its presence means done."""
        for handle in (self._data, self._names, self._bad):
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        for order in (2, 1, 0):
            os.replace(self.temp_paths[order], self.final_paths[order])
        return self.final_paths

    def abort(self) -> None:
        for handle in (self._data, self._names, self._bad):
            handle.close()
        for path in self.temp_paths:
            path.unlink(missing_ok=True)

    def __enter__(self) -> "FeatureShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def read_filenames(csv_path: str | Path) -> list[str]:
    """Row names of a features.dat.csv, ours (``filename``) or fastdup 2.x's (``index,filename``)."""
    table = pl.read_csv(csv_path, infer_schema=False)
    if "filename" not in table.columns:
        raise InputError(f"{csv_path} has no 'filename' column (columns: {table.columns})")
    return table["filename"].to_list()


def load_binary_features(path: str | Path, d: int | None = None) -> tuple[list[str], np.ndarray]:
    """Read features written by fastdup_ray or fastdup: returns (filenames, float32 array n x d).

    ``path`` is a work_dir or a features.dat file. d is inferred from the file size and
    the number of names when not given.
    """
    path = Path(path)
    data_path = path / FEATURES_FILE if path.is_dir() else path
    if path.is_dir() and not data_path.exists() and (path / "atrain_features.dat").exists():
        data_path = path / "atrain_features.dat"  # fastdup 0.x's name
    names_path = Path(f"{data_path}{NAMES_SUFFIX}")
    if not data_path.exists() or not names_path.exists():
        raise InputError(f"no features at {path}: expected {data_path.name} and {names_path.name}")
    filenames = read_filenames(names_path)
    size = data_path.stat().st_size
    n = len(filenames)
    if d is None:
        if n == 0:
            return filenames, np.zeros((0, 0), dtype=np.float32)
        if size % (4 * n):
            raise InputError(f"{data_path} holds {size} bytes, not a whole number of float32 rows for {n} names")
        d = size // (4 * n)
    if size != n * d * 4:
        raise InputError(f"{data_path} holds {size} bytes but {n} names x d={d} x 4 bytes = {n * d * 4}")
    array = np.fromfile(data_path, dtype="<f4").reshape(n, d)
    return filenames, array


def save_binary_feature(save_path: str | Path, filenames: list[str], array: np.ndarray) -> Path:
    """Write a user's own features (float32, n x d, any d) in our format, for run_mode=2."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != len(filenames):
        raise ValueError(f"array must be n x d with n = len(filenames) = {len(filenames)}, got {array.shape}")
    with FeatureShardWriter(save_path, d=array.shape[1]) as writer:
        writer.add_good([str(name) for name in filenames], array)
    return writer.final_paths[0]


def read_bad_list(work_dir: str | Path, prefix: str = "") -> pl.DataFrame:
    return pl.read_csv(shard_paths(work_dir, prefix)[2], infer_schema=False)

"""The features.dat format: raw little-endian float32 rows, their file names, the bad list.

``<prefix>features.dat`` holds n x d float32 values, row-major, no header;
``<prefix>features.dat.csv`` names the rows in order (header ``filename``; fastdup 2.x's
``index,filename`` is read too); ``<prefix>features.bad.csv`` lists ``filename,error`` for
inputs that gave no vector. ``prefix`` is the shard's name: empty for a single folder
shard, the archive's name for an archive (``00000.tarfeatures.dat``).

A shard is finished when its marker ``<prefix>features.done`` exists (written last,
atomically, with the shard's counts and the fingerprint of its inputs) *and* the data
file holds exactly rows x d x 4 bytes. Rows are streamed to temporary files and moved
into place on commit, so a crash never leaves a half-written shard that looks finished.

Inputs that come with columns of their own (a Parquet row's caption, url, ...) add
``<prefix>features.annotations.parquet``: ``filename`` (the row name, good and bad rows)
then those columns, written on commit with the rest; :func:`load_annotations` reads them.

Vectors are compared by cosine: the reduce reads them with ``normalize=True`` (unit
length), so users' own features from ``save_binary_feature`` mean what ours mean.
"""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import polars as pl

from fastdup_ray.errors import InputError
from fastdup_ray.rundir.workdir import WorkDir

FEATURES_FILE = "features.dat"
NAMES_SUFFIX = ".csv"
BAD_FILE = "features.bad.csv"
DONE_FILE = "features.done"
STATS_FILE = "features.stats.csv"
THUMBNAILS_FILE = "features.thumbnails.parquet"
ANNOTATIONS_FILE = "features.annotations.parquet"
BOXED_COLUMN = "boxed"  # thumbnails file: a crop's whole image with its box drawn (draw_bbox)
THUMBNAIL_TYPES = {"row": "int64", "filename": "string", "thumbnail": "binary", BOXED_COLUMN: "binary"}
# Every file a shard may have, after its prefix, the marker first: what removing a stale
# shard removes, in that order, so a half-removed shard never looks finished.
SHARD_SUFFIXES = (
    DONE_FILE,
    FEATURES_FILE,
    f"{FEATURES_FILE}{NAMES_SUFFIX}",
    BAD_FILE,
    STATS_FILE,
    THUMBNAILS_FILE,
    ANNOTATIONS_FILE,
)


def shard_names(prefix: str = "") -> tuple[str, str, str, str]:
    """(features.dat, features.dat.csv, features.bad.csv, features.done) of a shard."""
    data = f"{prefix}{FEATURES_FILE}"
    return data, f"{data}{NAMES_SUFFIX}", f"{prefix}{BAD_FILE}", f"{prefix}{DONE_FILE}"


def shard_paths(work_dir: str | Path, prefix: str = "") -> tuple[Path, Path, Path]:
    """Local paths of (features.dat, features.dat.csv, features.bad.csv)."""
    return tuple(Path(work_dir) / name for name in shard_names(prefix)[:3])


class FeatureShardWriter:
    """Streams the rows of one shard to local temporary files; ``commit`` moves them into
    the work dir and writes the completion marker last. Memory stays flat however many
    rows pass through."""

    def __init__(self, work_dir: str | Path | WorkDir, d: int, prefix: str = "") -> None:
        self.work = work_dir if isinstance(work_dir, WorkDir) else WorkDir(os.fspath(work_dir))
        self.d = d
        self.prefix = prefix
        self.final_names = shard_names(prefix)
        token = uuid.uuid4().hex[:8]
        self.temp_paths = tuple(self.work.staging / f".{name}.tmp-{token}" for name in self.final_names[:3])
        self._data = open(self.temp_paths[0], "wb")
        self._names = open(self.temp_paths[1], "w", newline="", encoding="utf-8")
        self._bad = open(self.temp_paths[2], "w", newline="", encoding="utf-8")
        self._names_csv = csv.writer(self._names)
        self._bad_csv = csv.writer(self._bad)
        self._names_csv.writerow(["filename"])
        self._bad_csv.writerow(["filename", "error"])
        self._stats_path = self.work.staging / f".{prefix}{STATS_FILE}.tmp-{token}"
        self._stats = None  # opened on the first image that has statistics
        self._thumbnails_path = self.work.staging / f".{prefix}{THUMBNAILS_FILE}.tmp-{token}"
        self._thumbnails = None  # a parquet writer, opened on the first thumbnail
        self._boxed = False  # whether the thumbnails file has the boxed column
        # One JSON object a line, made a Parquet table on commit (its columns' types are
        # known only once every row is in: a column may be null in the first batches).
        self._annotations_path = self.work.staging / f".{prefix}{ANNOTATIONS_FILE}.jsonl.tmp-{token}"
        self._annotations = None
        self.good = 0
        self.bad = 0

    @property
    def final_paths(self) -> tuple[Path, Path, Path]:
        return shard_paths(self.work.location, self.prefix)

    def add_good(
        self,
        filenames: list[str],
        vectors: np.ndarray,
        stats: dict[str, np.ndarray] | None = None,
        thumbnails: list[bytes] | None = None,
        boxed: list[bytes] | None = None,
    ) -> None:
        """Good rows: names, vectors, statistics, thumbnails and (crops of a run of
        bounding boxes) ``boxed``, each crop's whole image with its box drawn."""
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        if vectors.shape != (len(filenames), self.d):
            raise ValueError(f"expected {len(filenames)} x {self.d} vectors, got {vectors.shape}")
        if not filenames:
            return  # a batch of only bad rows: no header-only statistics file
        self._data.write(vectors.tobytes())
        self._names_csv.writerows([name] for name in filenames)
        if stats is not None:
            if self._stats is None:
                self._stats = open(self._stats_path, "w", newline="", encoding="utf-8")
                self._stats_csv = csv.writer(self._stats)
                self._stats_csv.writerow(["filename", *stats])
            columns = [np.asarray(v).tolist() for v in stats.values()]
            self._stats_csv.writerows([name, *values] for name, *values in zip(filenames, *columns))
        if thumbnails is not None:
            self._write_thumbnails(filenames, thumbnails, boxed)
        self.good += len(filenames)

    def _write_thumbnails(
        self, filenames: list[str], thumbnails: list[bytes], boxed: list[bytes] | None
    ) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        # Row i of the thumbnails file is row good+i of the shard, so the row is the key.
        columns = {
            "row": np.arange(self.good, self.good + len(filenames), dtype=np.int64),
            "filename": filenames,
            "thumbnail": thumbnails,
        }
        if self._thumbnails is None:
            self._boxed = boxed is not None  # the file's columns are fixed by its first rows
        if self._boxed:
            columns[BOXED_COLUMN] = boxed or [b""] * len(filenames)
        # Through polars: pyarrow's own conversion of Python lists and numpy arrays imports
        # pandas (~0.2-0.3 s of every run's driver), and nothing else in a run needs it.
        table = pl.DataFrame(columns).to_arrow()
        table = table.cast(pa.schema([(name, pa.type_for_alias(THUMBNAIL_TYPES[name])) for name in columns]))
        if self._thumbnails is None:
            # Statistics of the row column alone: a reader picks row groups by them, and
            # those of the JPEG bytes (~1.8 KB a group) would swell the footer it reads.
            self._thumbnails = pq.ParquetWriter(
                self._thumbnails_path, table.schema, compression="none", write_statistics=["row"]
            )
        self._thumbnails.write_table(table)

    def add_annotations(self, filenames: list[str], rows: list[str]) -> None:
        """Columns that came with these rows' inputs, each row a JSON object."""
        if self._annotations is None:
            self._annotations = open(self._annotations_path, "w", encoding="utf-8")
        for name, row in zip(filenames, rows):
            self._annotations.write(
                json.dumps({"filename": name, **json.loads(row)}, ensure_ascii=False) + "\n"
            )

    def _commit_annotations(self) -> None:
        self._annotations.close()
        table = pl.read_ndjson(self._annotations_path, infer_schema_length=None)
        staged = self._annotations_path.with_name(self._annotations_path.name.replace(".jsonl", ""))
        table.write_parquet(staged)
        self._annotations_path.unlink()
        self.work.put(staged, f"{self.prefix}{ANNOTATIONS_FILE}")

    def add_bad(self, filenames: list[str], reasons: list[str]) -> None:
        self._bad_csv.writerows(zip(filenames, reasons))
        self.bad += len(filenames)

    def commit(self, **stats) -> tuple[Path, Path, Path]:
        """Flush, fsync, move into place; the marker goes last, so its presence means done."""
        for handle in (self._data, self._names, self._bad):
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        if self._stats is not None:
            self._stats.close()
            self.work.put(self._stats_path, f"{self.prefix}{STATS_FILE}")
        if self._thumbnails is not None:
            self._thumbnails.close()
            self.work.put(self._thumbnails_path, f"{self.prefix}{THUMBNAILS_FILE}")
        if self._annotations is not None:
            self._commit_annotations()
        for temp, name in zip(self.temp_paths, self.final_names[:3]):
            self.work.put(temp, name)
        marker = {"good": self.good, "bad": self.bad, "d": self.d, **stats}
        self.work.write_bytes(self.final_names[3], json.dumps(marker, sort_keys=True).encode())
        return self.final_paths

    def abort(self) -> None:
        for handle in (self._data, self._names, self._bad, self._stats, self._thumbnails, self._annotations):
            if handle is not None:
                handle.close()
        for path in (*self.temp_paths, self._stats_path, self._thumbnails_path, self._annotations_path):
            path.unlink(missing_ok=True)

    def __enter__(self) -> "FeatureShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def read_marker(work: WorkDir, prefix: str) -> dict | None:
    data = work.read_if_present(shard_names(prefix)[3])
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def shard_is_complete(
    work: WorkDir, prefix: str, d: int, marker: dict | None = None, sizes: dict[str, int] | None = None
) -> bool:
    """Marker present (``marker`` when already read), same d, and the data file exactly
    rows x d x 4 bytes (``sizes``: the work dir's file sizes, when already listed).
    Whether its inputs are still the same is resume.py's question."""
    marker = marker if marker is not None else read_marker(work, prefix)
    if marker is None or marker.get("d") != d:
        return False
    present, size_of = (
        (sizes.__contains__, sizes.__getitem__) if sizes is not None else (work.exists, work.size)
    )
    data, names, bad, _ = shard_names(prefix)
    if not (present(names) and present(bad) and present(data)):
        return False
    return size_of(data) == marker["good"] * d * 4


def finished_shards(work: WorkDir, d: int) -> tuple[dict[str, dict], set[str]]:
    """Every shard with a marker (prefix -> its marker, {} when unreadable) and those of
    them that are complete: one listing and a GET per marker, whatever the shard count."""
    sizes = work.file_sizes()
    markers = {p: read_marker(work, p) or {} for p in list_shards(work, names=sizes)}
    return markers, {p for p, m in markers.items() if shard_is_complete(work, p, d, marker=m, sizes=sizes)}


def remove_shard(work: WorkDir, prefix: str) -> None:
    """Every file of a shard, the marker first: a half-removed shard never looks finished."""
    for suffix in SHARD_SUFFIXES:
        work.remove(f"{prefix}{suffix}")


def adopt_plain_features(work: WorkDir) -> list[str]:
    """A features.dat + features.dat.csv with no marker (fastdup's own, or copied in)
    becomes a finished shard: its d comes from the file size. Returns [""] or []."""
    data, names, bad, _ = shard_names("")
    if read_marker(work, "") is not None or not (work.exists(data) and work.exists(names)):
        return []
    with work.local_copies([data, names]) as (local, _):
        filenames, vectors = load_binary_features(local)
    if not work.exists(bad):
        work.write_bytes(bad, b"filename,error\n")
    work.write_bytes(
        shard_names("")[3],
        json.dumps(
            {"good": len(filenames), "bad": 0, "d": int(vectors.shape[1]) if len(filenames) else 0}
        ).encode(),
    )
    return [""]


def write_merged_bad_list(work: WorkDir, prefixes: list[str]) -> None:
    """features.bad.csv at the top of a run of named shards: every shard's bad rows, in
    shard order, so one file answers "what was skipped and why" (streamed, not parsed)."""
    if "" in prefixes:
        return  # the single unnamed shard's own list is already that file
    parts = [b"filename,error\n"]
    for prefix in prefixes:
        rows = work.read_if_present(shard_names(prefix)[2])
        if rows is not None:
            parts.append(rows.partition(b"\n")[2])  # the rows, without the header
    work.write_bytes(BAD_FILE, b"".join(parts))


def list_shards(work: WorkDir, names: Iterable[str] | None = None) -> list[str]:
    """Prefixes of every shard with a completion marker, sorted (``names``: the work dir's
    file names, when already listed)."""
    names = work.names() if names is None else names
    return sorted(name[: -len(DONE_FILE)] for name in names if name.endswith(DONE_FILE))


def _read_names_csv(source) -> list[str]:
    table = pl.read_csv(source, infer_schema=False)
    if "filename" not in table.columns:
        raise InputError(f"features csv has no 'filename' column (columns: {table.columns})")
    return table["filename"].to_list()


def read_filenames(csv_path: str | Path) -> list[str]:
    """Row names of a features.dat.csv, ours (``filename``) or fastdup 2.x's (``index,filename``)."""
    return _read_names_csv(csv_path)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero): inner products become cosines."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def load_shards(
    work: WorkDir, prefixes: list[str], d: int, normalize: bool = False
) -> tuple[list[str], np.ndarray]:
    """Names and vectors of the given shards, concatenated in the order given; with
    ``normalize`` each vector at unit length (what the reduce compares)."""
    names: list[str] = []
    arrays: list[np.ndarray] = []
    for prefix in prefixes:
        data, csv_name, _, _ = shard_names(prefix)
        shard_names_ = _read_names_csv(io.BytesIO(work.read_bytes(csv_name)))
        vectors = np.frombuffer(work.read_bytes(data), dtype="<f4")
        if vectors.size != len(shard_names_) * d:
            raise InputError(
                f"{work.path(data)} holds {vectors.size * 4} bytes "
                f"but {len(shard_names_)} names x d={d} x 4 bytes = {len(shard_names_) * d * 4}"
            )
        names.extend(shard_names_)
        arrays.append(vectors.reshape(len(shard_names_), d))
    array = np.concatenate(arrays) if arrays else np.zeros((0, d), dtype=np.float32)
    return names, unit_rows(array) if normalize else array


def load_stats(work: WorkDir, prefixes: list[str]) -> pl.DataFrame | None:
    """Per-image statistics of the given shards, in row order; None when a shard has none."""
    tables = []
    for prefix in prefixes:
        data = work.read_if_present(f"{prefix}{STATS_FILE}")
        if data is None:
            if (read_marker(work, prefix) or {}).get("good", 0):
                return None
            continue
        table = pl.read_csv(io.BytesIO(data), infer_schema=False)
        # Read as text, typed here: a shard of few rows must not infer other types than another.
        tables.append(table.with_columns(pl.exclude("filename", "hash").cast(pl.Float64)))
    # Shards written before the content hash existed have no hash column: null there.
    return pl.concat(tables, how="diagonal") if tables else None


def shard_row_ranges(work: WorkDir, prefixes: list[str]) -> list[tuple[str, int, int]]:
    """(prefix, first run-wide row, rows) of each shard, in order, from its marker."""
    ranges = []
    start = 0
    for prefix in prefixes:
        rows = (read_marker(work, prefix) or {}).get("good", 0)
        ranges.append((prefix, start, rows))
        start += rows
    return ranges


def load_rows(work: WorkDir, prefixes: list[str], ids: np.ndarray, d: int) -> np.ndarray:
    """Vectors of the given run-wide row ids, reading only the shards that hold them."""
    ids = np.asarray(ids, dtype=np.int64)
    out = np.zeros((len(ids), d), dtype=np.float32)
    for prefix, start, rows in shard_row_ranges(work, prefixes):
        inside = np.flatnonzero((ids >= start) & (ids < start + rows))
        if len(inside):
            vectors = np.frombuffer(work.read_bytes(shard_names(prefix)[0]), dtype="<f4").reshape(rows, d)
            out[inside] = vectors[ids[inside] - start]
    return out


def load_thumbnails(
    work: WorkDir, prefixes: list[str], ids: list[int] | np.ndarray, boxed: bool = False
) -> dict[int, bytes]:
    """JPEG thumbnails of the given run-wide row ids (``__id``), read only from the shards
    that hold them; ids without a thumbnail are left out. ``boxed``: a crop's whole image
    with its box drawn instead, where the shard has one (a run of bounding boxes)."""
    wanted = np.unique(np.asarray(ids, dtype=np.int64))
    columns = ("row", "thumbnail", BOXED_COLUMN) if boxed else ("row", "thumbnail")
    found: dict[int, bytes] = {}
    for prefix, start, rows in shard_row_ranges(work, prefixes):
        inside = wanted[(wanted >= start) & (wanted < start + rows)]
        if not len(inside):
            continue
        table = _thumbnail_rows(work, f"{prefix}{THUMBNAILS_FILE}", inside - start, rows, columns)
        if table is None:
            continue
        if boxed and BOXED_COLUMN in table.columns:
            table = table.with_columns(
                pl.when(pl.col(BOXED_COLUMN).bin.size() > 0)
                .then(pl.col(BOXED_COLUMN))
                .otherwise(pl.col("thumbnail"))
                .alias("thumbnail")
            )
        table = table.select("row", "thumbnail").filter(pl.col("row").is_in((inside - start).tolist()))
        for row, jpeg in table.iter_rows():
            found[int(row) + start] = jpeg
    return found


# Thumbnails wanted of more than this share of a shard's rows come in one read of the
# whole file: fewer requests than the ranges of its row groups.
WHOLE_FILE_SHARE = 0.25
# Bytes read from a Parquet file's end for its footer: a thumbnails file of 10,000 rows
# has ~160 row groups and a footer of ~44 KB (a longer one, as files written before
# 2026-12-07 have, costs a second read).
FOOTER_BYTES = 64 * 1024


def _thumbnail_rows(
    work: WorkDir, name: str, rows: np.ndarray, shard_rows: int, columns: tuple[str, ...]
) -> pl.DataFrame | None:
    """The rows of thumbnails file ``name`` (``row`` column) in ``rows``, with others of
    their row groups, and of ``columns`` those it has; None where the shard has no
    thumbnails. Galleries show a few rows of each of many shards: only the file's footer
    and the row groups that hold those rows are read (a group is one batch of the shard,
    ~64 rows), where the file is ~110 MB for 10,000 thumbnails of 256 px."""
    if len(rows) > WHOLE_FILE_SHARE * shard_rows:
        return _whole_parquet(work, name)
    import pyarrow.parquet as pq

    try:
        footer = parquet_footer(work, name)
    except FileNotFoundError:
        return None
    groups = _groups_holding(footer, rows)
    present = [column for column in columns if column in footer.schema.names]
    with work.open_with_parts(name, _chunk_ranges(footer, groups, present)) as handle:
        parquet = pq.ParquetFile(handle, metadata=footer, pre_buffer=False)
        return pl.from_arrow(parquet.read_row_groups(groups, columns=present, use_threads=False))


def parquet_footer(work: WorkDir, name: str):
    """The metadata of Parquet file ``name``, from its end alone: one read, two where
    the footer is longer than FOOTER_BYTES."""
    import pyarrow.parquet as pq

    tail = work.read_tail(name, FOOTER_BYTES)
    # A Parquet file ends with its footer, the footer's length (4 bytes) and "PAR1".
    length = int.from_bytes(tail[-8:-4], "little") + 8
    if length > len(tail):
        tail = work.read_tail(name, length)
    return pq.ParquetFile(io.BytesIO(tail)).metadata


def _groups_holding(footer, rows: np.ndarray) -> list[int]:
    """Row groups whose ``row`` column spans one of ``rows`` (by the group's min and max;
    a group without them is read)."""
    column = footer.schema.names.index("row")
    groups = []
    for group in range(footer.num_row_groups):
        stats = footer.row_group(group).column(column).statistics
        if stats is None or not stats.has_min_max or np.any((rows >= stats.min) & (rows <= stats.max)):
            groups.append(group)
    return groups


def _chunk_ranges(footer, groups: list[int], columns: list[str]) -> list[tuple[int, int]]:
    """Byte ranges (start, stop) of ``columns`` in row ``groups``: each column chunk from
    its first page (the dictionary's, where it has one) for its compressed size."""
    indices = [footer.schema.names.index(column) for column in columns]
    ranges = []
    for group in groups:
        for index in indices:
            chunk = footer.row_group(group).column(index)
            start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
            ranges.append((start, start + chunk.total_compressed_size))
    return ranges


def _whole_parquet(work: WorkDir, name: str) -> pl.DataFrame | None:
    data = work.read_if_present(name)
    # Read with polars: pyarrow's reader of a whole file, in a process that has loaded
    # polars, aborted the interpreter at exit about one run in four ("terminate called
    # without an active exception"), seen from the gallery commands.
    return None if data is None else pl.read_parquet(io.BytesIO(data))


def load_annotations(work: WorkDir, prefixes: list[str]) -> pl.DataFrame | None:
    """The columns that came with the inputs of the given shards (``filename`` first),
    in shard order; None when no shard has any. Shards with other columns (two Parquet
    files of different schemas) are joined column-wise, missing values null."""
    found = (work.read_if_present(f"{prefix}{ANNOTATIONS_FILE}") for prefix in prefixes)
    tables = [pl.read_parquet(io.BytesIO(data)) for data in found if data is not None]
    return pl.concat(tables, how="diagonal_relaxed") if tables else None


def load_names(work: WorkDir, prefixes: list[str]) -> list[str]:
    """Row names of the given shards, concatenated in order (no vectors read)."""
    return [
        name
        for prefix in prefixes
        for name in _read_names_csv(io.BytesIO(work.read_bytes(shard_names(prefix)[1])))
    ]


def load_binary_features(path: str | Path, d: int | None = None) -> tuple[list[str], np.ndarray]:
    """Read features written by fastdup_ray or fastdup: returns (filenames, float32 array n x d).

    ``path`` is a work_dir (all its finished shards, in name order, or a plain
    features.dat) or one features.dat file. d is inferred from the file size and the
    number of names when not given.
    """
    location = os.fspath(path)
    if os.path.isdir(location) or "://" in location:
        work = WorkDir(location)
        prefixes = list_shards(work)
        if prefixes:
            if d is None:
                d = read_marker(work, prefixes[0])["d"]
            return load_shards(work, prefixes, d)
        candidates = [  # atrain_features.dat: fastdup 0.x's name
            n
            for n in (FEATURES_FILE, "atrain_features.dat")
            if work.exists(n) and work.exists(n + NAMES_SUFFIX)
        ]
        if not candidates:
            raise InputError(
                f"no features at {location}: expected {FEATURES_FILE} and {FEATURES_FILE}{NAMES_SUFFIX}"
            )
        with work.local_copies([candidates[0], candidates[0] + NAMES_SUFFIX]) as (local, _):
            # Errors name the file the user gave, not the temporary copy read here.
            return _read_features_pair(Path(local), d, shown=work.path(candidates[0]))
    data_path = Path(location)
    names_path = Path(f"{data_path}{NAMES_SUFFIX}")
    if not data_path.exists() or not names_path.exists():
        raise InputError(f"no features at {path}: expected {data_path.name} and {names_path.name}")
    return _read_features_pair(data_path, d, shown=str(data_path))


def _read_features_pair(data_path: Path, d: int | None, shown: str) -> tuple[list[str], np.ndarray]:
    """A local features.dat and its names beside it; ``shown``: its name in errors."""
    filenames = read_filenames(Path(f"{data_path}{NAMES_SUFFIX}"))
    size = data_path.stat().st_size
    n = len(filenames)
    if d is None:
        if n == 0:
            return filenames, np.zeros((0, 0), dtype=np.float32)
        if size % (4 * n):
            raise InputError(f"{shown} holds {size} bytes, not a whole number of float32 rows for {n} names")
        d = size // (4 * n)
    if size != n * d * 4:
        raise InputError(f"{shown} holds {size} bytes but {n} names x d={d} x 4 bytes = {n * d * 4}")
    return filenames, np.fromfile(data_path, dtype="<f4").reshape(n, d)


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


def load_binary_feature(filename: str | Path, d: int | None = None) -> tuple[list[str], np.ndarray]:
    """fastdup's singular name for :func:`load_binary_features` (``filename=``: a work dir
    or a features.dat file)."""
    return load_binary_features(filename, d)

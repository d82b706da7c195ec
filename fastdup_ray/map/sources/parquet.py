"""Parquet files of image bytes, as LAION-style and Hugging Face datasets ship them.

The image is the first of the columns ``jpg``, ``png``, ``image``, ``bytes`` that holds
binary values or Hugging Face's image struct ``{bytes, path}``. A row is named
``<file location>/<key>`` by its ``key`` (or ``__key__``) column, else by its row number
in the file (from 0); a key repeated in one file is named ``<key>#<n>`` from its second
occurrence, as a repeated archive member is. The file is read a row group at a time
through its fsspec handle (local or s3/minio), only the columns used, so a big file
never sits in memory whole.

The other scalar columns (caption, url, width, ...) ride along with each row as
``Item.annotations`` and land in the shard's ``<prefix>features.annotations.parquet``.
A null image, a struct without bytes, or bytes that do not decode are bad rows; a file
with no image column, no rows, or that cannot be read or parsed is one bad row naming
the file (after the rows read before the damage); a storage failure is not bad data
(``storage_failed``: the shard is read again by a rerun).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from fastdup_ray.errors import MissingDependencyError
from fastdup_ray.map.sources.archives import occurrence_name, open_archive_stream
from fastdup_ray.map.sources.items import Item, ReadSettings
from fastdup_ray.rundir.storage import storage_unavailable

PARQUET_EXTENSIONS = (".parquet",)
# Where the image is, first found first: webdataset-style columns, then Hugging Face's.
IMAGE_COLUMNS = ("jpg", "png", "image", "bytes")
KEY_COLUMNS = ("key", "__key__")
# Names the run's frames give their own columns (api.RESERVED, and the row name): an
# annotation column of that name is kept as parquet_<name>.
RESERVED_NAMES = ("filename", "index", "is_valid", "error_code")
# Rows turned into Items at once: a batch's images are Python bytes for that long.
ROWS_PER_BATCH = 256


@dataclass(frozen=True)
class Columns:
    """Which columns of a file are read, and as what."""

    image: str | None
    struct: bool  # Hugging Face's {bytes, path}
    key: str | None
    annotations: tuple[str, ...]

    @property
    def read(self) -> list[str]:
        return list(dict.fromkeys(c for c in (self.image, self.key, *self.annotations) if c))


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError("Parquet inputs need pyarrow: pip install pyarrow") from None
    return pa, pq


def image_column(schema) -> tuple[str | None, bool]:
    """(name, is a {bytes, path} struct) of the image column, or (None, False)."""
    pa, _ = _pyarrow()
    for name in IMAGE_COLUMNS:
        if name not in schema.names:
            continue
        kind = schema.field(name).type
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            return name, False
        if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0:
            return name, True
    return None, False


def is_scalar(kind) -> bool:
    """A column a user reads as one value per image (not bytes, not nested)."""
    pa, _ = _pyarrow()
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    checks = (
        pa.types.is_string,
        pa.types.is_large_string,
        pa.types.is_integer,
        pa.types.is_floating,
        pa.types.is_boolean,
        pa.types.is_temporal,
        pa.types.is_decimal,
    )
    return any(check(kind) for check in checks)


def choose_columns(schema) -> Columns:
    image, struct = image_column(schema)
    key = next((name for name in KEY_COLUMNS if name in schema.names), None)
    annotations = tuple(name for name in schema.names if name != image and is_scalar(schema.field(name).type))
    return Columns(image, struct, key, annotations)


def plain(value):
    """A value as JSON holds it: numbers, strings, booleans, None (dates etc. as text)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def row_item(location: str, name: str, image, struct: bool, column: str, annotations: dict | None) -> Item:
    where = f"{location}/{name}"
    if struct and image is not None:
        data, path = image.get("bytes"), image.get("path")
        if data is None:
            stored = f" (only the path {path!r}: images stored outside the file are not read)" if path else ""
            return Item(
                where, reason=f"image has no bytes in column {column!r}{stored}", annotations=annotations
            )
        image = data
    if image is None:
        return Item(where, reason=f"image is null in column {column!r}", annotations=annotations)
    return Item(where, data=image, annotations=annotations)


def batch_items(location: str, batch, columns: Columns, first_row: int, seen: Counter) -> Iterator[Item]:
    """The rows of one record batch as Items, named by key or row number."""
    images = batch.column(columns.image).to_pylist()
    keys = batch.column(columns.key).to_pylist() if columns.key else [None] * len(images)
    values = {name: batch.column(name).to_pylist() for name in columns.annotations}
    for offset, (image, key) in enumerate(zip(images, keys)):
        name = str(key) if key is not None and str(key) != "" else str(first_row + offset)
        seen[name] += 1
        row = {annotation_name(c): plain(v[offset]) for c, v in values.items()} or None
        yield row_item(location, occurrence_name(name, seen), image, columns.struct, columns.image, row)


def annotation_name(column: str) -> str:
    return f"parquet_{column}" if column in RESERVED_NAMES else column


def group_items(location: str, parquet, group: int, columns: Columns, first_row: int, seen: Counter):
    """The rows of one row group. The group's column chunks are fetched together (one
    coalesced read on S3; iter_batches would pre-buffer every group of the file), and
    are let go when this generator ends, before the next group is read."""
    table = parquet.read_row_group(group, columns=columns.read, use_threads=False)
    for batch in table.to_batches(max_chunksize=ROWS_PER_BATCH):
        yield from batch_items(location, batch, columns, first_row, seen)
        first_row += batch.num_rows


def file_items(location: str, stream: BinaryIO, max_items: int = 0) -> Iterator[Item]:
    """Every row of an open Parquet file, one row group at a time."""
    _, pq = _pyarrow()
    parquet = pq.ParquetFile(stream)
    columns = choose_columns(parquet.schema_arrow)
    if columns.image is None:
        found = ", ".join(parquet.schema_arrow.names) or "none"
        yield Item(
            location,
            reason=f"no image column: looked for {', '.join(IMAGE_COLUMNS)} holding bytes or an image struct "
            f"{{bytes, path}}; the file has {found}",
        )
        return
    rows, seen = 0, Counter()
    for group in range(parquet.num_row_groups):
        for item in group_items(location, parquet, group, columns, rows, seen):
            yield item
            rows += 1
            if max_items and rows >= max_items:
                return
    if rows == 0:
        yield Item(location, reason="Parquet file holds no rows")


def failure_item(location: str, exc: Exception, rows: int) -> Item:
    """The Item that stands for a file that failed after ``rows`` rows; raises a bug."""
    pa, _ = _pyarrow()
    cause = f"{type(exc).__name__}: {exc}"
    if storage_unavailable(exc):
        why = f"the storage failed after {rows} rows despite retries: {cause}"
        return Item(location, reason=f"cannot read Parquet file, {why}", storage_failed=True)
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return Item(location, reason=f"cannot read Parquet file: {cause}")
    if isinstance(exc, (pa.ArrowException, OSError, EOFError)):
        return Item(location, reason=f"corrupt or unreadable Parquet file after {rows} rows: {cause}")
    raise exc


def read_parquet(location: str, settings: ReadSettings) -> Iterator[Item]:
    """The Parquet kind's reader: every row of the file at ``location`` as an Item."""
    rows = 0
    try:
        with open_archive_stream(location, settings.storage, None) as stream:
            for item in file_items(location, stream, settings.max_items_per_archive):
                yield item
                rows += 1
    except Exception as exc:  # noqa: BLE001 - failure_item sorts storage, damage and bugs
        yield failure_item(location, exc, rows)

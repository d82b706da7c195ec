"""The map's batch record: every column a batch carries between the stages, declared once.

A batch is a dict of numpy arrays of equal length, one entry per declared column, as
both engines move it (Ray Data's numpy batches are such dicts). Three records:

- ``WORK``: what a read + decode stage is given, one row per unit or cut of a unit;
- ``DECODED``: what read + decode makes (pixels, statistics, thumbnail, or why a row is bad);
- ``EMBEDDED``: the same rows with their vectors instead of pixels, for the shard writer.

Control rows are typed, not guessed from missing keys: each decoded or embedded row has a
``control``, ``IMAGE`` for an input or ``UNIT_END`` for the row that closes its unit, and
a unit-end row's ``unit_rows`` says how many rows of the unit came before it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from fastdup_ray.map.decode import STAT_COLUMNS

Batch = dict[str, np.ndarray]

IMAGE = 0  # control: the row is an input (good or bad)
UNIT_END = 1  # control: no input; every row of its unit is before it in the stream
# unit_rows of a unit-end row whose rows were cut and read in parallel, so that nobody
# counted them: the stream's order alone says they are all in (the local engine's cuts).
UNCOUNTED = -1


class RecordError(ValueError):
    """A batch that does not match its record: a stage made or expected other columns."""


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # numpy's name; "object" holds str or bytes
    fill: object  # the value of a row nobody set
    doc: str
    shaped: bool = False  # one row is an array (pixels, a vector); its shape is given when made


@dataclass(frozen=True)
class Record:
    name: str
    columns: tuple[Column, ...]
    optional: tuple[Column, ...] = ()  # may be absent (never made by an engine)
    by_name: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {c.name: c for c in self.columns + self.optional})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def empty(self, rows: int, shapes: dict[str, tuple[int, ...]] | None = None) -> Batch:
        """``rows`` rows of every column at its fill value; ``shapes``: a shaped column's row shape."""
        shapes = shapes or {}
        batch = {}
        for column in self.columns:
            shape = (rows, *shapes[column.name]) if column.shaped else rows
            batch[column.name] = np.full(shape, column.fill, dtype=column.dtype)
        return batch

    def check(self, batch: Batch) -> Batch:
        """``batch``, when its columns are this record's, of one length and of the declared
        kinds of number; else a RecordError naming what differs."""
        missing = [name for name in self.names if name not in batch]
        extra = [name for name in batch if name not in self.by_name]
        if missing or extra:
            raise RecordError(
                f"a {self.name} batch must have exactly the columns of map/record.py: "
                f"missing {missing}, undeclared {extra}"
            )
        lengths = {name: len(values) for name, values in batch.items()}
        if len(set(lengths.values())) > 1:
            raise RecordError(f"a {self.name} batch has columns of different lengths: {lengths}")
        for name, values in batch.items():
            declared = np.dtype(self.by_name[name].dtype)
            if declared.kind != "O" and np.asarray(values).dtype.kind != declared.kind:
                raise RecordError(f"column {name!r} of a {self.name} batch is {values.dtype}, not {declared}")
        return batch


def _stat(name: str) -> Column:
    return Column(f"stat_{name}", "float64", 0.0, f"image statistic {name} (stats.csv)")


ROW_COLUMNS = (
    Column("unit", "object", "", "the unit's name: its shard's prefix"),
    Column("seq", "int64", 0, "the row's place among its unit's rows"),
    Column("control", "int8", IMAGE, "IMAGE (an input) or UNIT_END (closes its unit)"),
    Column("unit_rows", "int64", 0, "on a UNIT_END row: rows of its unit before it, or UNCOUNTED"),
    Column("path", "object", "", "the input's name in every output"),
    Column("ok", "bool", False, "decoded: it has pixels (and later a vector)"),
    Column("storage_failed", "bool", False, "the storage failed: the unit is not finished, not bad"),
    Column("reason", "object", "", "why a row is bad (features.bad.csv)"),
    Column("thumbnail", "object", b"", "JPEG thumbnail for the galleries, or b''"),
    Column("boxed", "object", b"", "a crop's whole image with its box drawn (JPEG, draw_bbox), or b''"),
    Column("hash", "object", "", "content hash of the file's bytes, or '' (no file of its own)"),
    Column("copy_of", "int64", -1, "an earlier row of the batch with the same bytes, or -1"),
    Column("annotations", "object", "", "JSON of the columns that came with the input, or ''"),
    *(_stat(name) for name in STAT_COLUMNS),
)
PIXELS = Column("pixels", "uint8", 0, "RGB at the model's input size, (size, size, 3)", shaped=True)
EMBEDDING = Column(
    "embedding", "float32", 0.0, "the row's unit vector, (d,); zeros for a bad row", shaped=True
)

DECODED = Record("decoded", ROW_COLUMNS + (PIXELS,))
EMBEDDED = Record("embedded", ROW_COLUMNS + (EMBEDDING,))
WORK = Record(
    "work",
    (
        Column("unit", "object", "", "the unit's name"),
        Column("kind", "object", "", "the unit's kind ('files', 'archive', 'parquet', ...)"),
        Column("locations", "object", "[]", "JSON list of the locations to read"),
        Column("first_seq", "int64", 0, "seq of the first row read"),
        Column("closes", "bool", True, "the unit's last cut: a UNIT_END row follows its rows"),
        Column("boxes", "object", "", "JSON {location: [box, ...]} of a run of bounding boxes, or ''"),
    ),
    # Items the driver already read (an archive is one stream, read in order there).
    optional=(Column("items", "object", None, "list of Items already read, instead of locations"),),
)


def work_row(
    unit: str, kind: str, locations, first_seq: int = 0, closes: bool = True, boxes: str = ""
) -> dict:
    """One WORK row as a plain dict (Ray Data's ``from_items`` takes these); ``boxes``:
    the JSON of the bounding boxes of its images (map/crops.py), '' when it has none."""
    return {
        "unit": unit,
        "kind": kind,
        "locations": json.dumps(list(locations)),
        "first_seq": first_seq,
        "closes": closes,
        "boxes": boxes,
    }


def work_batch(
    unit: str,
    kind: str,
    locations=(),
    first_seq: int = 0,
    closes: bool = True,
    items=None,
    boxes: str = "",
) -> Batch:
    """A one-row WORK batch; ``items``: the rows already read, carried as they are."""
    row = work_row(unit, kind, locations, first_seq, closes, boxes)
    batch = {name: np.array([value], dtype=WORK.by_name[name].dtype) for name, value in row.items()}
    if items is not None:
        batch["items"] = np.empty(1, dtype=object)
        batch["items"][0] = items
    return WORK.check(batch)


def unit_end(unit: str, seq: int, rows_before: int, d: int) -> Batch:
    """An EMBEDDED batch of one UNIT_END row: ``unit`` has ``rows_before`` rows (or UNCOUNTED)."""
    batch = EMBEDDED.empty(1, {"embedding": (d,)})
    batch["unit"][0], batch["seq"][0] = unit, seq
    batch["control"][0], batch["unit_rows"][0] = UNIT_END, rows_before
    return batch


def ends(batch: Batch) -> np.ndarray:
    """Which rows close their unit."""
    return batch["control"] == UNIT_END

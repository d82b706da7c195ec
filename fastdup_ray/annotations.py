"""The annotations a user gives the object API's ``fd.run(annotations=...)``: a DataFrame
with a ``filename`` column (and any columns of theirs: ``label``, ``split``, ...), a list of
files or a .csv path, checked and turned into the run's locations.

A name is found as fastdup finds it: absolute, else relative to the working directory,
else relative to input_dir, the first that is a file winning; a name that is none is a
bad row of the run (features.bad.csv) naming the paths tried.

With fastdup's bounding-box columns (``col_x, row_y, width, height``, or a rotated box's
``x1, y1, ... x4, y4``) a table has a row per box, several per image; each box is a row
of the run named by map/crops.py's crop_name, and a name may then also lie inside an
archive (``shards/0.tar/img.jpg``): the run reads the archive and keeps the boxed members.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import polars as pl

from fastdup_ray.errors import ConfigError, InputError
from fastdup_ray.map.crops import QUAD, QUAD_COLUMNS, XYWH, XYWH_COLUMNS, Box, Boxes, archive_of, crop_name
from fastdup_ray.map.sources.items import ARCHIVE_EXTENSIONS
from fastdup_ray.rundir.storage import is_remote

log = logging.getLogger("fastdup_ray")

# Columns the frames make themselves; annotations may not bring their own.
RESERVED = ("index", "is_valid", "error_code")

Missing = list[tuple[str, str]]  # (location, reason) of annotation names that are no file


@dataclass
class AnnotatedRun:
    """What fd.run(annotations=...) runs: the table (a row per image, or per box),
    the bad rows of names found nowhere, the inputs to read, and the boxes by image
    location (None for a table of whole images)."""

    table: pl.DataFrame
    missing: Missing
    source: list[str]
    boxes: Boxes | None = None


def annotated_run(annotations: Any, input_dir: str | list[str] | None) -> AnnotatedRun:
    """The run that fd.run(annotations=...) asks for (annotation_table, or box_table
    when the table has bounding-box columns)."""
    table = _as_polars(annotations)
    if box_kind(table) is not None:
        return box_table(table, input_dir)
    table, missing = annotation_table(table, input_dir)
    lost = {location for location, _ in missing}
    return AnnotatedRun(table, missing, [name for name in table["filename"].to_list() if name not in lost])


def box_kind(table: pl.DataFrame) -> str | None:
    """QUAD or XYWH when ``table`` has that kind's columns (a rotated box wins, as in
    fastdup), None when it has neither; some of a kind's columns only are an error."""
    for kind, columns in ((QUAD, QUAD_COLUMNS), (XYWH, XYWH_COLUMNS)):
        if all(c in table.columns for c in columns):
            return kind
    for columns in (XYWH_COLUMNS, QUAD_COLUMNS):
        some = [c for c in columns if c in table.columns]
        if len(some) > 1:
            lacking = [c for c in columns if c not in table.columns]
            raise ConfigError(
                f"annotations have the bounding-box columns {', '.join(some)} but not {', '.join(lacking)}: "
                f"give all of {', '.join(columns)}"
            )
    return None


def box_table(table: pl.DataFrame, input_dir: str | list[str] | None) -> AnnotatedRun:
    """A row per bounding box: its ``filename`` the crop's name (image and box), every
    column of the user's kept; boxes of images found nowhere are bad rows; the inputs are
    the boxed images (or the archives they lie in). An ``index`` column (the satellite
    notebook's csv has one) is replaced by the run's row numbers, as fastdup does."""
    if "index" in table.columns:
        log.info("annotations: their 'index' column is replaced by the run's row numbers (as fastdup does)")
        table = table.drop("index")
    _check_columns(table)
    kind = box_kind(table)
    columns = QUAD_COLUMNS if kind == QUAD else XYWH_COLUMNS
    before = table.height
    table = table.with_columns(pl.col(c).cast(pl.Float64, strict=False) for c in columns)
    table = table.unique(["filename", *columns], keep="first", maintain_order=True)
    if table.height < before:
        log.warning(
            "annotations: removed %d repeated bounding boxes (as fastdup does)", before - table.height
        )
    names = table["filename"].cast(pl.String).unique(maintain_order=True).to_list()
    locations, missing, found = resolve_names(names, input_dir, archives=True)
    where = dict(zip(names, locations))
    why = dict(missing)
    boxes: Boxes = {}
    crops, bad = [], []
    values = table.select(columns).fill_null(float("nan")).rows()
    for name, numbers in zip(table["filename"].cast(pl.String).to_list(), values):
        location, box = where[name], Box(kind, tuple(numbers))
        crops.append(crop_name(location, box))
        if location in why:
            bad.append((crops[-1], why[location]))
        else:
            boxes.setdefault(location, []).append(box)
    if not boxes:
        first = missing[0][1].removeprefix("no such file: ")
        raise InputError(f"annotations: none of the {len(names)} file names is a file ({first}, ...)")
    log.info(
        "annotations: %d bounding boxes of %d images; %s",
        table.height,
        len(names),
        _how_found(found, len(missing), input_dir),
    )
    source = sorted({archive_of(loc, ARCHIVE_EXTENSIONS) or loc for loc in boxes})
    table = table.with_columns(pl.Series("filename", crops, dtype=pl.String))
    return AnnotatedRun(table, bad, source, boxes)


def _check_columns(table: pl.DataFrame) -> None:
    if "filename" not in table.columns:
        raise ConfigError(
            f"annotations need a 'filename' column (they have {', '.join(table.columns) or 'none'})"
        )
    clash = [c for c in RESERVED if c in table.columns]
    if clash:
        raise ConfigError(
            f"annotations may not have the column(s) {', '.join(clash)}: the frames make them; rename yours"
        )
    if table.height == 0:
        raise ConfigError("annotations list no images")


def annotation_table(annotations: Any, input_dir: str | list[str] | None) -> tuple[pl.DataFrame, Missing]:
    """(table, missing): the annotations given to fd.run as a polars frame whose
    ``filename`` column holds the run's locations (resolve_names), and the (location,
    reason) of the names that are no file."""
    table = _as_polars(annotations)
    _check_columns(table)
    locations, missing, found = resolve_names(table["filename"].cast(pl.String).to_list(), input_dir)
    table = table.with_columns(pl.Series("filename", locations, dtype=pl.String))
    repeated = table.filter(pl.col("filename").is_duplicated())["filename"]
    if len(repeated):
        raise ConfigError(
            f"annotations list {repeated[0]} more than once: one row per image, or bounding boxes in "
            f"the columns {', '.join(XYWH_COLUMNS)} (or a rotated box's {', '.join(QUAD_COLUMNS)})"
        )
    if not any(found.values()):
        first = missing[0][1].removeprefix("no such file: ")
        raise InputError(f"annotations: none of the {table.height} file names is a file ({first}, ...)")
    log.info("annotations: %s", _how_found(found, len(missing), input_dir))  # once per run, not per name
    return table, missing


def _as_polars(annotations: Any) -> pl.DataFrame:
    if isinstance(annotations, pl.DataFrame):
        return annotations
    if isinstance(annotations, (list, tuple)):
        return pl.DataFrame({"filename": [os.fspath(x) for x in annotations]}, schema={"filename": pl.String})
    if isinstance(annotations, (str, os.PathLike)) and os.fspath(annotations).endswith(".csv"):
        try:
            return pl.read_csv(os.fspath(annotations), infer_schema=False)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise ConfigError(
                f"annotations: cannot read {os.fspath(annotations)}: {str(exc).splitlines()[0]}"
            ) from None
    if type(annotations).__module__.startswith("pandas"):
        return pl.from_pandas(annotations)
    raise ConfigError(
        "annotations must be a DataFrame with a 'filename' column, a list of files or a .csv path, got "
        f"{type(annotations).__name__}"
    )


# How resolve_names found a name, in the order it tries (fastdup's).
ABSOLUTE, WORKING_DIR, INPUT_DIR = "absolute", "relative to the working directory", "relative to input_dir"


def resolve_names(
    names: list[str], input_dir: str | list[str] | None, archives: bool = False
) -> tuple[list[str], Missing, dict[str, int]]:
    """(locations, missing, found): each annotation name as the run reads it, found as fastdup
    finds it: absolute, else relative to the working directory, else relative to
    input_dir; the first that is a file wins, decided per name. A name that is none is
    kept at its input_dir-relative path and listed in ``missing`` with the paths tried.
    Relative to a remote input_dir, names are joined to it unchecked. ``found``: how
    many names were found each way. With ``archives`` a name may also be a member of an
    archive that is a file (``a.tar/img.jpg``)."""
    locations, missing, found = [], [], {ABSOLUTE: 0, WORKING_DIR: 0, INPUT_DIR: 0}
    for name in names:
        location, how, tried = _resolve(name, input_dir)
        if how is None and archives:
            location, how = _in_archive(location, tried)
        locations.append(location)
        if how is None:
            paths = " and ".join(f"{path} ({why})" for path, why in tried)
            missing.append((location, f"no such file: tried {paths}"))
        else:
            found[how] += 1
    return locations, missing, found


def _resolve(name: str, input_dir: str | list[str] | None) -> tuple[str, str | None, list[tuple[str, str]]]:
    """(location, how it was found or None, [(path tried, why)]) of one annotation name."""
    if is_remote(name):
        return name, ABSOLUTE, []
    if os.path.isabs(name):
        path = os.path.abspath(name)
        return path, ABSOLUTE if os.path.isfile(path) else None, [(path, ABSOLUTE)]
    if isinstance(input_dir, str) and is_remote(input_dir):
        return f"{input_dir.rstrip('/')}/{name}", INPUT_DIR, []
    here = os.path.abspath(name)
    if os.path.isfile(here):
        return here, WORKING_DIR, []
    if not isinstance(input_dir, str):
        raise ConfigError(
            f"annotations name {name!r} relative to no folder: it is no file in the working directory, and "
            "there is "
            "no input_dir (the folder the names are relative to); give input_dir or absolute names"
        )
    inside = os.path.abspath(os.path.join(input_dir, name))
    tried = [(here, WORKING_DIR), (inside, INPUT_DIR)]
    return inside, INPUT_DIR if os.path.isfile(inside) else None, tried


def _in_archive(location: str, tried: list[tuple[str, str]]) -> tuple[str, str | None]:
    """(location, how) of the first path tried that lies in an archive that is a file."""
    for path, how in tried:
        archive = archive_of(path, ARCHIVE_EXTENSIONS)
        if archive is not None and os.path.isfile(archive):
            return path, how
    return location, None


def _how_found(found: dict[str, int], missing: int, input_dir: Any) -> str:
    """'142 file names resolved relative to the working directory', and the other ways."""
    words = {WORKING_DIR: WORKING_DIR, INPUT_DIR: f"{INPUT_DIR} {input_dir}", ABSOLUTE: "as absolute paths"}
    ways = [(found[how], said) for how, said in words.items() if found[how]]
    (count, how), others = ways[0], ways[1:]
    text = f"{count} file name{'s' * (count != 1)} resolved {how}"
    text += "".join(f", {n} {way}" for n, way in others)
    return text + (f"; {missing} found nowhere (bad rows of features.bad.csv)" if missing else "")

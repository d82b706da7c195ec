"""The annotations a user gives the object API's ``fd.run(annotations=...)``: a DataFrame
with a ``filename`` column (and any columns of theirs: ``label``, ``split``, ...), a list of
files or a .csv path, checked and turned into the run's locations.

A name is found as fastdup finds it: absolute, else relative to the working directory,
else relative to input_dir, the first that is a file winning; a name that is none is a
bad row of the run (features.bad.csv) naming the paths tried.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import polars as pl

from fastdup_ray.errors import ConfigError, InputError
from fastdup_ray.rundir.storage import is_remote

log = logging.getLogger("fastdup_ray")

# Columns the frames make themselves; annotations may not bring their own.
RESERVED = ("index", "is_valid", "error_code")

Missing = list[tuple[str, str]]  # (location, reason) of annotation names that are no file


def annotation_table(annotations: Any, input_dir: str | list[str] | None) -> tuple[pl.DataFrame, Missing]:
    """(table, missing): the annotations given to fd.run as a polars frame whose
    ``filename`` column holds the run's locations (resolve_names), and the (location,
    reason) of the names that are no file."""
    table = _as_polars(annotations)
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
    locations, missing, found = resolve_names(table["filename"].cast(pl.String).to_list(), input_dir)
    table = table.with_columns(pl.Series("filename", locations, dtype=pl.String))
    repeated = table.filter(pl.col("filename").is_duplicated())["filename"]
    if len(repeated):
        raise ConfigError(
            f"annotations list {repeated[0]} more than once: one row per image (bounding boxes are not "
            "supported)"
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
    names: list[str], input_dir: str | list[str] | None
) -> tuple[list[str], Missing, dict[str, int]]:
    """(locations, missing, found): each annotation name as the run reads it, found as fastdup
    finds it: absolute, else relative to the working directory, else relative to
    input_dir; the first that is a file wins, decided per name. A name that is none is
    kept at its input_dir-relative path and listed in ``missing`` with the paths tried.
    Relative to a remote input_dir, names are joined to it unchecked. ``found``: how
    many names were found each way."""
    locations, missing, found = [], [], {ABSOLUTE: 0, WORKING_DIR: 0, INPUT_DIR: 0}
    for name in names:
        location, how, tried = _resolve(name, input_dir)
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


def _how_found(found: dict[str, int], missing: int, input_dir: Any) -> str:
    """'142 file names resolved relative to the working directory', and the other ways."""
    words = {WORKING_DIR: WORKING_DIR, INPUT_DIR: f"{INPUT_DIR} {input_dir}", ABSOLUTE: "as absolute paths"}
    ways = [(found[how], said) for how, said in words.items() if found[how]]
    (count, how), others = ways[0], ways[1:]
    text = f"{count} file name{'s' * (count != 1)} resolved {how}"
    text += "".join(f", {n} {way}" for n, way in others)
    return text + (f"; {missing} found nowhere (bad rows of features.bad.csv)" if missing else "")

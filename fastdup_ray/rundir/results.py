"""The one reader of a finished run: its parameters (config.json), the names of its
images, its bad list, its statistics and its tables, whichever form the reduce wrote them in.

A small run writes ``similarity.csv`` and the other CSVs of the run guide; a big one writes
each table as Parquet parts (``similarity/part-00000.parquet``, ...) with the same columns,
and the CSV too while it stays under ``csv_row_limit`` rows. The run itself (resume
checks), galleries, ``dedup``, folder actions, ``evaluate`` and the Python API read a run
only through here; only the run writes it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

import polars as pl

from fastdup_ray.errors import InputError
from fastdup_ray.rundir import layout
from fastdup_ray.rundir.shards import (
    BAD_FILE,
    FEATURES_FILE,
    NAMES_SUFFIX,
    list_shards,
    load_annotations,
    load_names,
    read_filenames,
    shard_names,
)
from fastdup_ray.rundir.storage import StorageOptions
from fastdup_ray.rundir.workdir import WorkDir

# Columns that must stay strings whatever they hold (a file named "123.jpg" is no number).
STRING_COLUMNS = {"from": pl.String, "to": pl.String, "filename": pl.String}
# The types of the run's tables: a table of no rows (similarity.csv at a threshold nothing
# reaches) has no values to infer them from, and read back as text it breaks every
# computation on it. Other files (a user's annotations) keep only STRING_COLUMNS.
_PAIRS = {"from": pl.String, "to": pl.String, "distance": pl.Float64}
_STATS = {
    "__id": pl.Int64,
    "filename": pl.String,
    "hash": pl.String,
    **{
        name: pl.Float64 for name in ("width", "height", "file_size", "blur", "unique_colors", "color_spread")
    },
    **{name: pl.Float64 for name in ("mean", "min", "max", "std")},
    **{
        f"is_{flag}": pl.Boolean
        for flag in ("dark", "bright", "blurry", "low_information", "odd_aspect_ratio")
    },
    "is_grayscale": pl.Boolean,
}
TABLE_TYPES = {
    layout.SIMILARITY_FILE: {**_PAIRS, "exact": pl.Boolean},
    layout.OUTLIERS_FILE: _PAIRS,
    layout.COMPONENT_INFO_FILE: {"component_id": pl.Int64, "Count": pl.Int64},
    layout.CONNECTED_COMPONENTS_FILE: {
        "__id": pl.Int64,
        "component_id": pl.Int64,
        "pagerank": pl.Float64,
        "delta": pl.Float64,
        "filename": pl.String,
    },
    layout.STATS_FILE: _STATS,
    layout.STATS_PARQUET: _STATS,
}
# Every table's columns by name (a name means the same in each), for tables of unknown
# name: a user's filtered copy of one, or a DataFrame given to a gallery.
COLUMN_TYPES = {name: kind for types in TABLE_TYPES.values() for name, kind in types.items()}


def column_types(name: str) -> dict[str, pl.DataType]:
    """The column types of work-dir file ``name``: a run table's (a Parquet part's are its
    table's, ``similarity/part-00000.parquet``), else only the STRING_COLUMNS."""
    folder = name.rpartition("/")[0]
    table = next((table for table, parts in layout.TABLE_PARTS.items() if parts == folder), name)
    return {**STRING_COLUMNS, **TABLE_TYPES.get(table, {})}


def typed(table: pl.DataFrame, types: dict[str, pl.DataType] = COLUMN_TYPES) -> pl.DataFrame:
    """``table`` with its columns named in ``types`` in those types, however it was read."""
    schema = table.schema
    wrong = [
        pl.col(name).cast(kind) for name, kind in types.items() if name in schema and schema[name] != kind
    ]
    return table.with_columns(wrong) if wrong else table


def _work(work: WorkDir | str) -> WorkDir:
    return work if isinstance(work, WorkDir) else WorkDir(str(work))


# --- The run's record: its parameters, its images, what it skipped -------------------------

# Bare features without shards (save_binary_feature's or fastdup's; fastdup 0.x's name).
BARE_FEATURES = (FEATURES_FILE, "atrain_features.dat")
BAD_COLUMNS = {"filename": pl.String, "error": pl.String}


def has_config(work: WorkDir | str) -> bool:
    return _work(work).exists(layout.CONFIG_FILE)


def recorded_storage(work: WorkDir | str) -> StorageOptions | None:
    """Endpoint, region and profile of the run's S3 storage as its config.json records
    them (keys are never written there: they come from the environment, as for the run);
    None without a config.json."""
    saved = read_config(work, missing_ok=True)
    if saved is None:
        return None
    return StorageOptions(
        endpoint_url=saved.get("s3_endpoint_url"),
        region=saved.get("s3_region"),
        profile=saved.get("s3_profile"),
    )


def read_config(work: WorkDir | str, missing_ok: bool = False) -> dict | None:
    """The run's parameters as its config.json records them (a dict: keys of older or
    newer versions are kept, so no RunConfig is rebuilt from it). Missing: None when
    ``missing_ok``, else an InputError; unreadable or not a JSON object: an InputError."""
    work = _work(work)
    data = work.read_if_present(layout.CONFIG_FILE)
    if data is None:
        if missing_ok:
            return None
        raise InputError(
            f"no run in {work.location}: {layout.CONFIG_FILE} is missing; run fastdup-ray there first"
        )
    where = work.path(layout.CONFIG_FILE)
    try:
        config = json.loads(data)
    except ValueError as exc:  # UnicodeDecodeError too
        raise InputError(
            f"cannot read {where}: {exc}; it is not the config.json a run writes (rerun with overwrite=True "
            "to start over)"
        ) from None
    if not isinstance(config, dict):
        raise InputError(
            f"cannot read {where}: it holds a JSON {type(config).__name__}, not a run's parameters"
        )
    return config


def read_test_run(work: WorkDir | str) -> dict[str, str] | None:
    """``train_work_dir`` and ``test_features`` of a run_mode 3/4 results folder
    (test_run.json); None for any other folder."""
    work = _work(work)
    data = work.read_if_present(layout.TEST_RUN_FILE)
    if data is None:
        return None
    try:
        test_run = json.loads(data)
        return {key: str(test_run[key]) for key in ("train_work_dir", "test_features")}
    except (ValueError, KeyError, TypeError):
        raise InputError(
            f"{work.path(layout.TEST_RUN_FILE)} must be JSON naming train_work_dir and test_features"
        ) from None


def bare_features(work: WorkDir | str) -> str | None:
    """The bare features file of a folder without shards (features.dat), if it has one."""
    work = _work(work)
    return next((name for name in BARE_FEATURES if work.exists(name + NAMES_SUFFIX)), None)


def read_names(
    work: WorkDir | str, prefixes: Sequence[str] | None = None, bare: str | None = None
) -> list[str]:
    """Row names of the run in features.dat order (row i is index / ``__id`` i), without
    reading a vector: those of ``prefixes`` (default: every finished shard), else of the
    bare features file ``bare`` (default: the folder's, bare_features)."""
    work = _work(work)
    prefixes = list_shards(work) if prefixes is None and bare is None else list(prefixes or ())
    if prefixes:
        return load_names(work, prefixes)
    bare = bare or bare_features(work)
    if bare is None:
        raise InputError(f"no finished run in {work.location}: no features shards found")
    with work.local_copies([bare + NAMES_SUFFIX]) as (names,):
        return read_filenames(names)


def read_input_annotations(work: WorkDir | str, prefixes: Sequence[str] | None = None) -> pl.DataFrame | None:
    """The columns that came with the inputs (a Parquet file's captions, ...), ``filename``
    first, of ``prefixes`` (default: every finished shard); None when no shard has any."""
    work = _work(work)
    return load_annotations(work, list_shards(work) if prefixes is None else list(prefixes))


def read_bad_list(work: WorkDir | str, prefixes: Sequence[str] | None = None) -> pl.DataFrame:
    """``filename, error`` of every input the run skipped: its merged features.bad.csv, or
    with ``prefixes`` those shards' own lists in order; no rows where there is none."""
    work = _work(work)
    names = [BAD_FILE] if prefixes is None else [shard_names(prefix)[2] for prefix in prefixes]
    found = ((name, work.read_if_present(name)) for name in names)
    lists = [_bad_list(work, name, data) for name, data in found if data is not None]
    return pl.concat(lists, how="vertical") if lists else pl.DataFrame(schema=BAD_COLUMNS)


def _bad_list(work: WorkDir, name: str, data: bytes) -> pl.DataFrame:
    # All text, never inferred: a reason or a name that looks like a number stays as written.
    try:
        table = pl.read_csv(io.BytesIO(data), infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read {work.path(name)}: {str(exc).splitlines()[0]}") from None
    return _checked(table, work.path(name), tuple(BAD_COLUMNS)).select(tuple(BAD_COLUMNS))


def part_names(work: WorkDir | str, folder: str) -> list[str]:
    """The Parquet parts (``part-NNNNN.parquet``) in ``folder``, as work-dir names, in order."""
    work = _work(work)
    # A remote listing of a missing folder is empty; a local WorkDir would create it.
    if not work.remote and not work.exists(folder):
        return []
    return [
        f"{folder}/{part}"
        for part in work.sub(folder).names()
        if part.startswith("part-") and part.endswith(".parquet")
    ]


def table_parts(work: WorkDir | str, name: str) -> list[str]:
    """The Parquet parts of table ``name`` (e.g. 'similarity.csv'), as work-dir names, in order."""
    folder = layout.TABLE_PARTS.get(name)
    return part_names(work, folder) if folder is not None else []


def has_table(work: WorkDir | str, name: str) -> bool:
    """Whether the run wrote table ``name`` in either form."""
    work = _work(work)
    return work.exists(name) or bool(table_parts(work, name))


def _missing(work: WorkDir, name: str) -> InputError:
    return InputError(
        f"{work.path(name)} is missing: run fastdup-ray on this work dir first (run_mode 0 or 2)"
    )


def _checked(table: pl.DataFrame, where: str, columns: Sequence[str]) -> pl.DataFrame:
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise InputError(f"{where} has no column {', '.join(missing)} (it has {', '.join(table.columns)})")
    return table


def read_file_table(work: WorkDir | str, name: str, columns: Sequence[str] = ()) -> pl.DataFrame:
    """One table file of the work dir (.csv or .parquet), checked to have ``columns``;
    the run's columns in their types even when it has no rows."""
    work = _work(work)
    content = work.read_if_present(name)
    if content is None:
        raise _missing(work, name)
    data = io.BytesIO(content)
    try:
        if name.endswith(".parquet"):
            table = pl.read_parquet(data)
        else:
            table = pl.read_csv(data, schema_overrides=column_types(name))
        table = typed(table, column_types(name))
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read {work.path(name)}: {str(exc).splitlines()[0]}") from None
    return _checked(table, work.path(name), columns)


def scan_table(work: WorkDir | str, name: str) -> pl.LazyFrame:
    """Table ``name`` as a lazy frame: the CSV when the run wrote it, else its parts
    (streamed by polars from local parts; remote parts are read one by one)."""
    work = _work(work)
    if work.exists(name):
        if work.remote:
            return read_file_table(work, name).lazy()
        return pl.scan_csv(work.path(name), schema_overrides=column_types(name))
    parts = table_parts(work, name)
    if not parts:
        raise _missing(work, name)
    if work.remote:
        frame = pl.concat([read_file_table(work, part) for part in parts], how="vertical").lazy()
    else:
        frame = pl.scan_parquet([work.path(part) for part in parts])
    return frame.drop(layout.PART_ORDER_COLUMNS, strict=False)


def read_table(work: WorkDir | str, name: str, columns: Sequence[str] = ()) -> pl.DataFrame:
    """Table ``name`` (e.g. layout.SIMILARITY_FILE) in memory, from its CSV or its
    Parquet parts, checked to have ``columns``; its columns typed even with no rows."""
    work = _work(work)
    try:
        table = typed(scan_table(work, name).collect(), column_types(name))
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read {work.path(name)}: {str(exc).splitlines()[0]}") from None
    return _checked(table, work.path(name), columns)


def stats_source(work: WorkDir | str) -> str:
    """The run's statistics table: stats.parquet when the run wrote it (typed, quick to
    read), else stats.csv, which a big run may have written as Parquet parts only."""
    return layout.STATS_PARQUET if _work(work).exists(layout.STATS_PARQUET) else layout.STATS_FILE


def has_stats(work: WorkDir | str) -> bool:
    work = _work(work)
    return work.exists(layout.STATS_PARQUET) or has_table(work, layout.STATS_FILE)


def read_stats(work: WorkDir | str, columns: Sequence[str] = ()) -> pl.DataFrame:
    """The run's statistics, one row per image by ``__id``, from whichever form it wrote."""
    name = stats_source(work)
    if name == layout.STATS_PARQUET:
        return read_file_table(work, name, columns)
    return read_table(work, name, columns).sort("__id")

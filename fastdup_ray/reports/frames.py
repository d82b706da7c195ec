"""DataFrames given to the galleries in place of a run's table, as fastdup takes them:
``create_outliers_gallery(fd.outliers().head(3), save_path, work_dir=...)`` shows those
three rows, each image from the run's stored thumbnails.

A frame may be a run's CSV read by pandas or polars (``from``, ``to``, ``distance``;
``__id``, ``component_id``, ...) or one of the object API's frames, with fastdup's names
(``filename_from``, ``filename_outlier``, ``index``, ``img_w``, ...); it becomes the table
the gallery reads. Its run is ``work_dir=`` (``input_dir=`` for
create_components_gallery, fastdup's spelling); without it, the newest run opened in this
process (by a gallery or the object API's frames) that holds every file the frame names.
A frame that names no file (images by index only) needs the parameter.
"""

from __future__ import annotations

import polars as pl

from fastdup_ray.errors import ConfigError, InputError
from fastdup_ray.reports.tables import FRAME, RunTables, opened_runs
from fastdup_ray.rundir import layout

# Which table a gallery's frame stands for.
PAIRS, OUTLIERS, COMPONENTS, STATS = "pairs", "outliers", "components", "stats"
# The object API's end columns (file names) of a pair frame, by kind.
NAMED_ENDS = {
    PAIRS: (("filename_from", "filename_to"),),
    OUTLIERS: (("filename_outlier", "filename_nearest"), ("filename_from", "filename_to")),
}
OUTLIER_ENDS = {"outlier": "from", "nearest": "to"}  # fd.outliers(data=False): by index
# The object API's names of per-image columns -> the tables'.
IMAGE_NAMES = {
    COMPONENTS: {"index": "__id"},
    STATS: {"index": "__id", "img_w": "width", "img_h": "height", "unique": "unique_colors", "stdv": "std"},
}


def is_frame(value) -> bool:
    """A polars or pandas DataFrame."""
    pandas = type(value).__module__.startswith("pandas") and hasattr(value, "columns")
    return isinstance(value, pl.DataFrame) or pandas


def frame_tables(frame, kind: str, work_dir, labels, param: str = "work_dir") -> RunTables:
    """The tables of the run ``frame`` comes from (``work_dir``, else looked up by the
    files it names), with the frame in place of the run's ``kind`` table."""
    table = with_table_names(frame, kind)
    if work_dir is not None:
        tables = _named_run(work_dir, labels, param)
    else:
        tables = _found_run(named_files(table, kind), labels, param)
    return with_frame(tables, table, kind, param)


def with_frame(tables: RunTables, frame, kind: str, param: str = "work_dir") -> RunTables:
    """``tables`` with ``frame`` (its images the run's) in place of its ``kind`` table."""
    table = with_table_names(frame, kind)  # again for a frame given here: it changes nothing twice
    table = _pair_names(table, tables) if kind in (PAIRS, OUTLIERS) else _image_ids(table, kind, tables)
    _check_in_run(table, kind, tables, param)
    tables.use_frame(table)
    return tables


def with_table_names(frame, kind: str) -> pl.DataFrame:
    """``frame`` as polars with the run tables' column names (pair ends may be indexes)."""
    table = frame if isinstance(frame, pl.DataFrame) else pl.from_pandas(frame)
    if kind in NAMED_ENDS:
        for a, b in NAMED_ENDS[kind]:
            if a in table.columns and b in table.columns:  # names beat the index columns
                return table.drop("from", "to", *OUTLIER_ENDS, strict=False).rename({a: "from", b: "to"})
        return _renamed(table, OUTLIER_ENDS if kind == OUTLIERS else {})
    return _renamed(table, IMAGE_NAMES[kind])


def _renamed(table: pl.DataFrame, names: dict[str, str]) -> pl.DataFrame:
    present = set(table.columns)
    return table.rename({old: new for old, new in names.items() if old in present and new not in present})


def named_files(table: pl.DataFrame, kind: str) -> list[str] | None:
    """The files a frame names; None when it names none (indexes only, component_info)."""
    columns = [c for c in (("from", "to") if kind in NAMED_ENDS else ("filename",)) if c in table.columns]
    texts = [c for c in columns if not table.schema[c].is_numeric()]
    if not texts:
        return None
    files = pl.concat([table[c].cast(pl.String) for c in texts]).drop_nulls()
    return files.unique(maintain_order=True).to_list()


def _named_run(work_dir, labels, param: str) -> RunTables:
    try:
        return RunTables(work_dir, labels)
    except InputError as exc:
        raise ConfigError(
            f"{param}={str(work_dir)!r} holds no finished run ({exc}); "
            f"with a DataFrame, {param}= names the work dir of the run it comes from"
        ) from None


def _found_run(files: list[str] | None, labels, param: str) -> RunTables:
    """The newest run opened in this process that holds every one of ``files``."""
    needed = f"give {param}=<the work dir of the run it comes from>"
    if files is None:
        raise ConfigError(
            f"{param}= is needed: {FRAME} names no image file (only indexes or components), "
            f"so its run cannot be looked up; {needed}"
        )
    wanted = set(files)
    for location in opened_runs():
        try:
            tables = RunTables(location, labels)
        except Exception:  # noqa: BLE001 - a run removed, or on storage no longer reachable, is no candidate
            continue
        if wanted <= set(tables.from_images.names["filename"]) | set(tables.to_images.names["filename"]):
            return tables
    example = f" (such as {files[0]!r})" if files else ""
    raise ConfigError(
        f"{param}= is needed: no run opened in this process holds the {len(files)} images "
        f"{FRAME} names{example}; {needed}"
    )


def _pair_names(table: pl.DataFrame, tables: RunTables) -> pl.DataFrame:
    """Pair ends given by index (fd.similarity(data=False)) as the run's file names."""
    for end, images in (("from", tables.from_images), ("to", tables.to_images)):
        if end in table.columns and table.schema[end].is_numeric():
            names = images.names.rename({"__id": "__end", "filename": "__name"})
            table = _joined(table.with_columns(pl.col(end).cast(pl.Int64).alias("__end")), names, "__end")
            table = table.with_columns(pl.col("__name").alias(end)).drop("__end", "__name")
    return table


def _image_ids(table: pl.DataFrame, kind: str, tables: RunTables) -> pl.DataFrame:
    """A per-image frame with both ``__id`` and ``filename`` (from whichever it has), and
    a components frame with the run's ``pagerank`` when it lacks one."""
    names = tables.names
    if "__id" not in table.columns and "filename" in table.columns:
        table = _joined(table.with_columns(pl.col("filename").cast(pl.String)), names, "filename")
    elif "__id" in table.columns and "filename" not in table.columns and kind == STATS:
        table = _joined(table.with_columns(pl.col("__id").cast(pl.Int64)), names, "__id")
    if kind == COMPONENTS and "__id" in table.columns and "pagerank" not in table.columns:
        ranks = tables.table(layout.CONNECTED_COMPONENTS_FILE, ("__id", "pagerank")).select(
            "__id", "pagerank"
        )
        table = _joined(table.with_columns(pl.col("__id").cast(pl.Int64)), ranks, "__id")
    return table


def _joined(table: pl.DataFrame, other: pl.DataFrame, on: str) -> pl.DataFrame:
    """``table`` with ``other``'s columns, its rows in their order (none dropped)."""
    return table.join(other, on=on, how="left", maintain_order="left")


def _check_in_run(table: pl.DataFrame, kind: str, tables: RunTables, param: str) -> None:
    """Every image the frame names is one of its run's: else its tiles would show
    another run's pictures, or none."""
    if kind in NAMED_ENDS:
        known = set(tables.from_images.names["filename"]) | set(tables.to_images.names["filename"])
        values = [v for c in ("from", "to") if c in table.columns for v in table[c].to_list()]
    elif "__id" in table.columns:
        known = set(tables.names["__id"].to_list())
        values = table["__id"].to_list()
    else:
        return  # component_info: components, not images
    strangers = [v for v in values if v is None or v not in known]
    if strangers:
        shown = "an index not in it" if strangers[0] is None else repr(strangers[0])
        raise ConfigError(
            f"{FRAME} names {len(strangers)} images that are not in the run at {tables.work.location} "
            f"(such as {shown}); give {param}= the work dir of the run it comes from"
        )

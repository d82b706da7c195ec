"""What the galleries read from a finished run: its tables (always through results.py, so
CSV or Parquet parts alike), the names, thumbnails and statistics of its images, the run's
parameters, the labels a user gave, and which image of each component ``dedup`` keeps.

As in fastdup, ``work_dir`` may also name one table (``work/similarity.csv``, or a
filtered copy of it in the work dir): the gallery shows that table; a DataFrame may take
a table's place too (frames.py). A ``test_results``
folder of run_mode 3 or 4 works too: its ``from`` images are the test set's, its ``to``
images the train run's.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from fastdup_ray.errors import ConfigError, InputError
from fastdup_ray.reports.originals import original_thumbnails
from fastdup_ray.rundir import layout, results
from fastdup_ray.rundir.shards import (
    list_shards,
    load_stats,
    load_thumbnails,
    read_marker,
)
from fastdup_ray.rundir.storage import is_remote
from fastdup_ray.rundir.summary import human_bytes
from fastdup_ray.rundir.workdir import WorkDir

TABLE_SUFFIXES = (".csv", ".parquet")
FACT_COLUMNS = ("__id", "width", "height", "file_size")
# What the galleries' messages call a DataFrame shown in place of a table.
FRAME = "the DataFrame"
# The runs opened in this process, newest last (a few: they are looked through by name).
REMEMBERED_RUNS = 32
_opened_runs: OrderedDict[str, None] = OrderedDict()


def remember_run(location: str) -> None:
    """Note a run opened in this process (by a gallery or the object API's frames), so a
    DataFrame of its images finds it without work_dir (frames.py)."""
    location = location if is_remote(location) else os.path.abspath(location)
    _opened_runs.pop(location, None)
    _opened_runs[location] = None
    while len(_opened_runs) > REMEMBERED_RUNS:
        _opened_runs.popitem(last=False)


def opened_runs() -> list[str]:
    """The runs opened in this process, newest first."""
    return list(reversed(_opened_runs))


def open_folder(location: str) -> WorkDir:
    """A WorkDir over an existing folder; a missing local one is an error, not created."""
    if not is_remote(location) and not os.path.isdir(location):
        raise InputError(f"no finished run in {location}: no such folder")
    return WorkDir(location)


def split_table_path(work_dir: str | os.PathLike | WorkDir) -> tuple[str | WorkDir, str | None]:
    """(folder, table file name or None) of a work dir or of one table inside it."""
    if isinstance(work_dir, WorkDir):
        return work_dir, None
    location = os.fspath(work_dir)
    if location.endswith(TABLE_SUFFIXES) and not os.path.isdir(location):
        folder, _, name = location.rpartition("/")
        return folder or ".", name
    return location, None


@dataclass(frozen=True)
class ImageFacts:
    """What a user weighs when choosing which copy to keep."""

    width: int
    height: int
    file_size: int

    def caption(self) -> str:
        return f"{self.width}\u00d7{self.height} px \u00b7 {human_bytes(self.file_size)}"


class ImageSource:
    """Names, thumbnails and statistics of one set of features: a run's finished shards,
    or bare ``features.dat`` + ``features.dat.csv`` (names only). Compared by identity:
    galleries group tiles by the source their ids belong to."""

    def __init__(self, work: WorkDir, label: str = "", bare: str | None = None) -> None:
        self.work = work
        self.label = label  # a caption line for its tiles when a gallery shows two sources
        self.prefixes = [] if bare else list_shards(work)
        self.bare = bare if bare or self.prefixes else results.bare_features(work)
        if not self.prefixes and self.bare is None:
            raise InputError(f"no finished run in {work.location}: no features shards found")
        self._names: pl.DataFrame | None = None
        self._facts: pl.DataFrame | None = None

    @classmethod
    def at(cls, location: str, label: str) -> ImageSource:
        """The features at ``location``: a folder, or one bare features.dat file (run_mode 4
        takes either as test_dir)."""
        if not is_remote(location) and os.path.isfile(location):
            folder, name = os.path.split(location)
            return cls(open_folder(folder or "."), label, bare=name)
        return cls(open_folder(location), label)

    @property
    def names(self) -> pl.DataFrame:
        """``__id, filename`` of every image, in features.dat.csv order."""
        if self._names is None:
            names = results.read_names(self.work, self.prefixes, self.bare)
            self._names = (
                pl.DataFrame({"filename": pl.Series(names, dtype=pl.String)})
                .with_row_index("__id")
                .with_columns(pl.col("__id").cast(pl.Int64))
            )
        return self._names

    def thumbnails(self, ids: Sequence[int], *, size: int, boxed: bool = False) -> dict[int, bytes]:
        """The stored thumbnails of ``ids`` (``boxed``: a crop's whole image with its box
        drawn); an image stored without one gets one of ``size`` (the caller's display
        size) made from its original file, where it has a file of its own (originals.py)."""
        found = load_thumbnails(self.work, self.prefixes, list(ids), boxed) if self.prefixes else {}
        missing = [int(i) for i in ids if i not in found]
        if missing:
            rows = self.names.filter(pl.col("__id").is_in(missing))
            storage = self.work.options or results.recorded_storage(self.work)
            found.update(original_thumbnails(dict(rows.iter_rows()), size, storage))
        return found

    def counts(self) -> tuple[int, int]:
        """(good, bad) images, from the shards' completion markers."""
        markers = [read_marker(self.work, prefix) or {} for prefix in self.prefixes]
        return sum(m.get("good", 0) for m in markers), sum(m.get("bad", 0) for m in markers)

    def facts(self, ids: Sequence[int]) -> dict[int, ImageFacts]:
        """Resolution and file size of the given images (those the run measured)."""
        if self._facts is None:
            self._facts = self._read_facts()
        if self._facts.is_empty():
            return {}
        rows = self._facts.filter(pl.col("__id").is_in(list(ids)))
        return {
            int(i): ImageFacts(int(w), int(h), int(s))
            for i, w, h, s in rows.iter_rows()
            if None not in (w, h, s)
        }

    def _read_facts(self) -> pl.DataFrame:
        if results.has_stats(self.work):
            return results.read_stats(self.work, FACT_COLUMNS).select(FACT_COLUMNS)
        # Test features of run_mode 3 have only their shards' statistics.
        stats = load_stats(self.work, self.prefixes) if self.prefixes else None
        if stats is None or not set(FACT_COLUMNS[1:]) <= set(stats.columns):
            return pl.DataFrame(schema={c: pl.Int64 for c in FACT_COLUMNS})
        return stats.with_row_index("__id").select(pl.col("__id").cast(pl.Int64), *FACT_COLUMNS[1:])


@dataclass(frozen=True)
class KeepMarkers:
    """Which images ``dedup --keep <rule>`` keeps: every component keeps one image."""

    rule: str
    kept: frozenset[int]
    keeper_of: Mapping[int, int]  # component_id -> the kept __id
    component_of: Mapping[int, int]  # __id -> component_id


def labels_of(annotations, label_col: str = "label") -> dict[str, str] | None:
    """filename -> label from an annotations frame (pandas or polars, with ``filename``
    and ``label_col`` columns) or a mapping; None when no annotations are given."""
    if annotations is None:
        return None
    if isinstance(annotations, Mapping):
        return {str(k): str(v) for k, v in annotations.items() if v is not None}
    frame = (
        annotations
        if isinstance(annotations, pl.DataFrame)
        else pl.from_pandas(annotations)
        if hasattr(annotations, "iloc")
        else None
    )
    if frame is None:
        raise ConfigError(
            f"annotations must be a pandas or polars DataFrame with filename and {label_col} columns, got "
            f"{type(annotations).__name__}"
        )
    missing = [c for c in ("filename", label_col) if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"annotations need columns filename and {label_col}; missing {', '.join(missing)} (it has "
            f"{', '.join(frame.columns)})"
        )
    frame = frame.select(pl.col("filename").cast(pl.String), pl.col(label_col).cast(pl.String)).drop_nulls()
    return dict(frame.iter_rows())


class RunTables:
    """The tables of a finished run, or of a test run's results, and the images they name.

    ``from_images`` names the images of a pair table's ``from`` column, ``to_images``
    those of ``to``: one source for a run, the test features and the train run for a
    test_results folder. ``chosen`` is the table file the user named, if any (FRAME for
    a DataFrame). Tables are read once and kept, so several galleries of one run read
    each table once."""

    def __init__(self, work_dir: str | os.PathLike | WorkDir, labels: dict[str, str] | None = None) -> None:
        folder, self.chosen = split_table_path(work_dir)
        self.work = folder if isinstance(folder, WorkDir) else open_folder(folder)
        self.labels = labels
        self._tables: dict[str, pl.DataFrame] = {}
        self._markers: dict[str, KeepMarkers | str] = {}
        test_run = results.read_test_run(self.work)
        if test_run is None:
            self.from_images = self.to_images = ImageSource(self.work)
        else:
            self.from_images = ImageSource.at(test_run["test_features"], "test image")
            self.to_images = ImageSource.at(test_run["train_work_dir"], "train image")
        remember_run(self.work.location)

    def use_frame(self, table: pl.DataFrame) -> None:
        """Show ``table`` (a user's DataFrame, its columns named as the run's tables) in
        place of the run's table whose columns it has, as a named table file is shown."""
        self.chosen = FRAME
        self._tables[FRAME] = results.typed(table)

    def where(self, name: str) -> str:
        """How messages name table ``name``: its path, or 'the DataFrame'."""
        return FRAME if name == FRAME and FRAME in self._tables else self.work.path(name)

    @property
    def is_test_run(self) -> bool:
        return self.from_images is not self.to_images

    def single_run(self, report: str) -> ImageSource:
        """The run's images; a test run's results have no components or statistics."""
        if self.is_test_run:
            raise InputError(
                f"{self.work.location} holds a test run's results (test_results): make the {report} from "
                f"the train work dir {self.to_images.work.location} instead"
            )
        return self.from_images

    @property
    def names(self) -> pl.DataFrame:
        return self.single_run("report").names

    @property
    def prefixes(self) -> list[str]:
        images = self.single_run("report")
        if not images.prefixes:
            raise InputError(
                f"{self.work.location} holds bare {images.bare} features, not the shards of a run"
            )
        return images.prefixes

    @property
    def config(self) -> dict:
        """The run's config.json (its parameters); {} when there is none (a test run)."""
        return results.read_config(self.work, missing_ok=True) or {}

    def has(self, name: str) -> bool:
        return name == self.chosen or results.has_table(self.work, name)

    def table(self, name: str, columns: Sequence[str] = ()) -> pl.DataFrame:
        """A table of the run (its CSV or Parquet parts) or the table file the user named,
        checked to have ``columns``."""
        if name not in self._tables:
            if name == self.chosen and not self.work.exists(name):
                raise InputError(f"{self.work.path(name)} is missing: no such file")
            if name in layout.TABLE_PARTS and name != self.chosen:
                self._tables[name] = results.read_table(self.work, name)  # its CSV or its Parquet parts
            else:
                self._tables[name] = results.read_file_table(self.work, name)
            # The run's tables come typed; a user's copy of one is typed by its column names.
            self._tables[name] = results.typed(self._tables[name])
        table = self._tables[name]
        missing = [column for column in columns if column not in table.columns]
        if missing:
            raise InputError(
                f"{self.where(name)} has no column {', '.join(missing)} (it has {', '.join(table.columns)})"
            )
        return table

    def tables_for(self, roles: dict[str, Sequence[str]]) -> list[pl.DataFrame]:
        """The tables a gallery reads (run table name -> columns it needs), in order; the
        table the user named takes the place of the first one whose columns it has."""
        replaced = None
        if self.chosen is not None:
            chosen = self.table(self.chosen)
            replaced = next(
                (name for name, columns in roles.items() if set(columns) <= set(chosen.columns)), None
            )
            if replaced is None:
                wanted = " or ".join(",".join(columns) for columns in roles.values())
                raise InputError(
                    f"{self.where(self.chosen)} has columns {','.join(chosen.columns)}; this gallery reads "
                    f"{wanted}"
                )
        return [
            self.table(self.chosen) if name == replaced else self.table(name, columns)
            for name, columns in roles.items()
        ]

    def table_for(self, name: str, columns: Sequence[str]) -> pl.DataFrame:
        return self.tables_for({name: columns})[0]

    def shows_run_table(self, name: str) -> bool:
        """Whether a gallery of ``name`` shows the run's own table, not a user's file."""
        return self.chosen is None or self.chosen == name

    def with_ids(self, pairs: pl.DataFrame) -> pl.DataFrame:
        """A from,to,distance table with ``from_id`` and ``to_id`` joined on."""
        from_ids = self.from_images.names.rename({"filename": "from", "__id": "from_id"})
        to_ids = self.to_images.names.rename({"filename": "to", "__id": "to_id"})
        pairs = pairs.join(from_ids, on="from", how="left", maintain_order="left")
        return pairs.join(to_ids, on="to", how="left", maintain_order="left")

    def components(self) -> pl.DataFrame | None:
        """``__id, component_id, Count`` of every image; None when the run wrote no
        components (or for a test run, whose ids belong to two sources)."""
        if self.is_test_run or not (
            results.has_table(self.work, layout.CONNECTED_COMPONENTS_FILE)
            and results.has_table(self.work, layout.COMPONENT_INFO_FILE)
        ):
            return None
        members = self.table(layout.CONNECTED_COMPONENTS_FILE, ("__id", "component_id")).select(
            "__id", "component_id"
        )
        return members.join(
            self.table(layout.COMPONENT_INFO_FILE, ("component_id", "Count")).select("component_id", "Count"),
            on="component_id",
            how="left",
        )

    def component_sizes(self) -> dict[int, tuple[int, int]]:
        """__id -> (component_id, images in it); empty when there are no components."""
        components = self.components()
        return {} if components is None else {i: (c, n) for i, c, n in components.iter_rows()}

    def keep_markers(self, rule: str) -> KeepMarkers | str:
        """Which images ``dedup --keep rule`` keeps, by dedup's own rule; or, when the run
        cannot tell (no components, a test run), the reason as a sentence."""
        if rule not in self._markers:
            self._markers[rule] = self._read_keep_markers(rule)
        return self._markers[rule]

    def _read_keep_markers(self, rule: str) -> KeepMarkers | str:
        from fastdup_ray.actions.dedup import KEEP_RULES, keep_and_remove

        if rule not in KEEP_RULES:
            raise ConfigError(f"keep must be one of {', '.join(KEEP_RULES)}, got {rule!r}")
        if self.is_test_run:
            return "a test run's results have no components, so no image is marked keep or remove"
        if not results.has_table(self.work, layout.CONNECTED_COMPONENTS_FILE):
            return (
                f"the run wrote no {layout.CONNECTED_COMPONENTS_FILE}, so no image is marked keep or remove"
            )
        rows = self.from_images.names.height
        try:
            # Row numbers stand for the names: one name may stand for two rows.
            keepers, removed = keep_and_remove(self.work.location, rule, names=[str(i) for i in range(rows)])
        except (InputError, ValueError) as exc:
            return f"no keep markers: {exc}"
        kept = keepers.select(pl.col("filename").cast(pl.Int64).alias("__id"), "component_id")
        component_of = dict(
            pl.concat(
                [kept, removed.select(pl.col("filename").cast(pl.Int64).alias("__id"), "component_id")]
            ).iter_rows()
        )
        return KeepMarkers(
            rule, frozenset(kept["__id"].to_list()), {c: i for i, c in kept.iter_rows()}, component_of
        )

    def label(self, location: str) -> str | None:
        return None if self.labels is None else self.labels.get(location)

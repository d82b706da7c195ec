"""fastdup's v1 object API over a run: ``fd = fastdup_ray.create(work_dir, input_dir)``,
``fd.run(...)``, then the run's tables as pandas DataFrames with fastdup's column names,
and ``fd.vis`` for the galleries.

A thin layer: ``fd.run`` is :func:`fastdup_ray.pipeline.run_config` (its annotations
checked and resolved by :mod:`fastdup_ray.annotations`), the frames are the run's tables
read through :mod:`fastdup_ray.rundir.results` (CSV or Parquet parts) and joined with the
run's image list, so ``create`` on a finished work dir opens it without recomputing.
As in fastdup, an image's ``index`` is its row in ``features.dat.csv`` (the tables'
``__id``); pairs name their images by index (``from``, ``to``) and by file
(``filename_from``, ``filename_to``). Frames are built with polars; ``as_polars=True``
returns them without the pandas copy.
"""

from __future__ import annotations

import io
import logging
import os
from typing import TYPE_CHECKING, Any

import polars as pl

from fastdup_ray.annotations import annotated_run
from fastdup_ray.api_tools import RunTools
from fastdup_ray.config import RunConfig
from fastdup_ray.errors import ConfigError, InputError
from fastdup_ray.rundir import layout, results
from fastdup_ray.rundir.own_features import embeddings_run
from fastdup_ray.rundir.shards import load_binary_features
from fastdup_ray.rundir.storage import StorageOptions, is_remote
from fastdup_ray.rundir.summary import RunSummary
from fastdup_ray.rundir.workdir import WorkDir
from fastdup_ray.v1_args import v1_parameters

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger("fastdup_ray")

# fastdup v1's names for parameters its v0 API (and RunConfig) call otherwise.
# stats.csv's names -> fastdup's img_stats() names.
STATS_NAMES = {"__id": "index", "width": "img_w", "height": "img_h", "unique_colors": "unique", "std": "stdv"}
STATS_INTEGERS = ("img_w", "img_h", "file_size", "unique")
# fastdup's stats.csv order; our own columns (hash, color_spread, flags) follow.
STATS_ORDER = (
    "index",
    "filename",
    "img_w",
    "img_h",
    "unique",
    "blur",
    "mean",
    "min",
    "max",
    "stdv",
    "file_size",
)


def create(
    work_dir: str | os.PathLike | None = None, input_dir: str | os.PathLike | list | None = None
) -> Fastdup:
    """A fastdup object over ``work_dir``: call ``run()`` to analyse ``input_dir``, or
    read the frames of a run already finished there (nothing is recomputed)."""
    return Fastdup(work_dir, input_dir)


class Fastdup(RunTools):
    """One work dir and its run, with fastdup v1's methods (see :func:`create`)."""

    def __init__(
        self, work_dir: str | os.PathLike | None = None, input_dir: str | os.PathLike | list | None = None
    ) -> None:
        if work_dir is None:
            log.warning("fastdup_ray.create() without work_dir: outputs go to ./work_dir")
            work_dir = "work_dir"
        self.work_dir = os.fspath(work_dir)
        self._input_dir = _fspath(input_dir)
        self._storage: StorageOptions | None = None
        self._user_annotations: pl.DataFrame | None = None
        # What the last fd.run() in this process did (counts, seconds); None for a run
        # opened from disk.
        self.run_summary: RunSummary | None = None

    def __repr__(self) -> str:
        return f"Fastdup(work_dir={self.work_dir!r}, input_dir={self.input_dir!r})"

    # The run ---------------------------------------------------------------------------

    @property
    def input_dir(self) -> str | list[str] | None:
        """The input given to create() or run(), else the finished run's (config.json)."""
        if self._input_dir is not None:
            return self._input_dir
        return self.config.get("input_dir") if self._has_config() else None

    @property
    def config(self) -> dict:
        """The finished run's parameters (its config.json)."""
        work = self._existing_work()
        if not results.has_config(work):
            raise InputError(
                f"no run in {self.work_dir}: {layout.CONFIG_FILE} is missing; call fd.run() first"
            )
        return results.read_config(work)

    def run(
        self,
        input_dir: str | os.PathLike | list | None = None,
        annotations: Any = None,
        overwrite: bool = False,
        print_summary: bool = False,
        embeddings: Any = None,
        **params: Any,
    ) -> int:
        """Run fastdup_ray over ``input_dir`` (or the one given to create()) with fastdup's
        parameter names (threshold, nearest_neighbors_k, cc_threshold, outlier_percentile,
        num_images, turi_param, ...); returns 0 as fastdup does, the counts are in
        ``fd.run_summary``. A rerun resumes: images whose files are unchanged are not
        extracted again; another input needs ``overwrite=True``.

        ``annotations``: the images to analyse, as a DataFrame with a ``filename`` column
        and any columns of yours (``label``, ...) that the frames then carry, or a list of
        files; a name is absolute, or relative to the working directory or input_dir (the
        first that is a file; none: a bad row naming the paths tried). ``embeddings``: your
        own n x d vectors, one per annotations row, reduced as run_mode 2 (own_features.py).
        """
        from fastdup_ray.pipeline import run_config

        source = _fspath(input_dir) if input_dir is not None else self.input_dir
        table, missing, boxes = None, [], None
        if embeddings is not None:  # your own n x d vectors, annotations naming their rows
            source, table, params = embeddings_run(self.work_dir, embeddings, annotations, overwrite, params)
        elif annotations is not None:
            asked = annotated_run(annotations, source)
            table, missing, source, boxes = asked.table, asked.missing, asked.source, asked.boxes
        if source is None:
            raise ConfigError(
                "input_dir must be given, to fastdup_ray.create(work_dir, input_dir) or to "
                "fd.run(input_dir=...)"
            )
        config = RunConfig.from_kwargs(
            source, self.work_dir, overwrite=overwrite, **v1_parameters(params, boxes is not None)
        )
        self.run_summary = run_config(config, rejected=missing, boxes=boxes)
        self._input_dir, self._storage = source, config.storage_options()
        work = self._work()
        if table is not None:
            buffer = io.BytesIO()
            table.write_parquet(buffer)
            work.write_bytes(layout.ANNOTATIONS_FILE, buffer.getvalue())
        elif overwrite:
            work.remove(layout.ANNOTATIONS_FILE)  # they described the run just cleared
        self._user_annotations = table
        if print_summary:
            self.summary()
        return 0

    def summary(self, verbose: bool = True) -> list[str]:
        """fastdup's summary of the run in a few lines (printed when ``verbose``, as
        fastdup does: it is what the call is for)."""
        listing = self._annotation_frame(valid_only=False)
        total = max(listing.height, 1)
        invalid = listing.filter(~pl.col("is_valid")).height
        components, info = self._component_frames(data=False)
        grouped = components.height
        largest = int(components["count"].max() or 0) if grouped else 0
        outliers = results.read_table(self._finished(), layout.OUTLIERS_FILE).height
        lines = [
            f"Dataset contains {listing.height} images",
            f"Valid images are {100 * (listing.height - invalid) / total:.2f}% "
            f"({listing.height - invalid:,d}) of the data, "
            f"invalid are {100 * invalid / total:.2f}% ({invalid:,d}) of the data",
            f"Components: {100 * grouped / total:.2f}% ({grouped:,d}) of images are in "
            f"{components['component_id'].n_unique()} components of two or more; the largest has "
            f"{largest:,d} images",
            f"Outliers: {100 * outliers / total:.2f}% ({outliers:,d}) of images are possible outliers",
        ]
        stats = self._stats_frame()
        if stats is not None:
            flags = [
                f"{int(stats[flag].sum()):,d} {flag.removeprefix('is_')}"
                for flag in ("is_blurry", "is_dark", "is_bright")
                if flag in stats.columns
            ]
            lines.append("Image statistics: " + ", ".join(flags) + " (see .img_stats())")
        if verbose:
            print("\n".join(lines))
        return lines

    # Frames -----------------------------------------------------------------------------

    def annotations(self, valid_only: bool = True, as_polars: bool = False) -> pd.DataFrame | pl.DataFrame:
        """Every image of the run: ``index``, ``filename``, ``is_valid``, ``error_code``
        (why an invalid image could not be read), ``img_w``, ``img_h``, ``file_size``,
        then your annotation columns. Only the valid images unless ``valid_only=False``."""
        return _out(self._annotation_frame(valid_only), as_polars)

    def invalid_instances(self, as_polars: bool = False) -> pd.DataFrame | pl.DataFrame:
        """The images that could not be read: ``index``, ``filename``, ``is_valid``
        (false), ``error_code`` (the reason), then your annotation columns."""
        listing = self._annotation_frame(valid_only=False).filter(~pl.col("is_valid"))
        return _out(listing.drop("img_w", "img_h", "file_size", strict=False), as_polars)

    def similarity(self, data: bool = True, as_polars: bool = False) -> pd.DataFrame | pl.DataFrame:
        """Pairs at or above the run's threshold, most similar first: ``from``, ``to``
        (indexes), ``distance`` (cosine similarity, 1 = identical), ``exact`` (the files
        are byte-identical), and with ``data`` each image's ``filename_from`` /
        ``filename_to`` and annotation columns."""
        pairs = results.read_table(self._finished(), layout.SIMILARITY_FILE, ("from", "to", "distance"))
        return _out(self._pairs(pairs, ("from", "to"), data), as_polars)

    def outliers(self, data: bool = True, as_polars: bool = False) -> pd.DataFrame | pl.DataFrame:
        """Images far from all others, most outlying first: ``outlier``, ``nearest`` (its
        nearest neighbour; indexes), ``distance`` (their similarity), and with ``data``
        ``filename_outlier`` / ``filename_nearest`` and annotation columns."""
        table = results.read_table(self._finished(), layout.OUTLIERS_FILE, ("from", "to", "distance"))
        table = table.rename({"from": "outlier", "to": "nearest"}).sort("distance", maintain_order=True)
        return _out(self._pairs(table, ("outlier", "nearest"), data), as_polars)

    def connected_components(
        self, data: bool = True, as_polars: bool = False
    ) -> tuple[pd.DataFrame, pd.DataFrame] | tuple[pl.DataFrame, pl.DataFrame]:
        """(components, component_info), as fastdup returns them. components: one row per
        image in a component of two or more (images alone are left out, as in fastdup):
        ``index``, ``component_id``, ``pagerank``, ``delta``, ``count`` (images in the
        component), ``mean_distance`` / ``min_distance`` / ``max_distance`` (of the
        similarity.csv pairs inside it), and with ``data`` ``filename`` and annotation
        columns. component_info: component_info.csv (``component_id``, ``Count``)."""
        components, info = self._component_frames(data)
        return _out(components, as_polars), _out(info, as_polars)

    def img_stats(self, data: bool = True, as_polars: bool = False) -> pd.DataFrame | pl.DataFrame:
        """Per-image statistics with fastdup's names: ``index``, ``filename``, ``img_w``,
        ``img_h``, ``unique``, ``blur``, ``mean``, ``min``, ``max``, ``stdv``,
        ``file_size``, then ours (``hash``, ``color_spread``, the ``is_dark`` ... flags); with
        ``data`` your annotation columns. Empty (with a warning) for a run of your own
        features, which has no images to measure."""
        stats = self._stats_frame()
        if stats is None:
            log.warning("no image statistics in %s (a run of your own features has none)", self.work_dir)
            return _out(pl.DataFrame(), as_polars)
        if data:
            stats = self._with_user_columns(stats, "filename")
        return _out(stats, as_polars)

    def connected_components_grouped(
        self,
        sort_by: str = "comp_size",
        ascending: bool = True,
        metric: str | None = None,
        load_crops: bool | None = None,
        group_by: str = "visual",
        label_col: str = "label",
    ) -> pd.DataFrame:
        """fastdup's components a row each (``component_id`` or ``label``, ``files``,
        ``files_ids``, ``label``, ``distance``, ``len``): reports/components.py. A run of
        bounding boxes groups its crops (its rows), whatever ``load_crops`` says."""
        from fastdup_ray.reports.components import group_components
        from fastdup_ray.reports.tables import RunTables, labels_of

        user = self._user_columns()
        labels = labels_of(user, label_col) if user is not None and label_col in user.columns else None
        tables = RunTables(self._finished().location, labels)
        return group_components(tables, group_by, None, metric, sort_by, ascending).to_pandas()

    def __getitem__(self, index: int) -> dict:
        """Image ``index`` of fd.annotations(valid_only=False) as a dict, as fastdup's."""
        listing = self._annotation_frame(valid_only=False).filter(pl.col("index") == index)
        if listing.is_empty():
            raise IndexError(f"image index {index} is not in the run in {self.work_dir}")
        return listing.row(0, named=True)

    def embeddings(self) -> tuple[list[str], np.ndarray]:
        """(filenames, float32 array n x d): the run's feature vectors, row i = index i."""
        return load_binary_features(self._finished().location)

    @property
    def vis(self):
        """The galleries of this run (``fd.vis.duplicates_gallery()``, ...), with your
        annotations' labels when you gave them."""
        from fastdup_ray.reports.vis import Visualizer

        return Visualizer(self.work_dir, annotations=self._user_columns())

    # Reading the run ---------------------------------------------------------------------

    def _work(self) -> WorkDir:
        return WorkDir(self.work_dir, self._storage or self._stored_storage())

    def _stored_storage(self) -> StorageOptions | None:
        """The storage options a remote run's config.json records (results.recorded_storage)."""
        return results.recorded_storage(WorkDir(self.work_dir)) if is_remote(self.work_dir) else None

    def _existing_work(self) -> WorkDir:
        """The work dir, refused (not created) when a local one does not exist."""
        if not is_remote(self.work_dir) and not os.path.isdir(self.work_dir):
            raise InputError(f"no run in {self.work_dir}: no such folder; call fd.run() first")
        return self._work()

    def _has_config(self) -> bool:
        if not is_remote(self.work_dir) and not os.path.isdir(self.work_dir):
            return False
        return results.has_config(self._work())

    def _finished(self) -> WorkDir:
        """The work dir once it holds a finished run (run_mode 0 or 2)."""
        from fastdup_ray.reports.tables import remember_run

        work = self._existing_work()
        if not results.has_table(work, layout.CONNECTED_COMPONENTS_FILE):
            raise InputError(
                f"no finished run in {self.work_dir}: {layout.CONNECTED_COMPONENTS_FILE} is missing; call "
                "fd.run() first (run_mode 0 or 2)"
            )
        remember_run(self.work_dir)  # a gallery of a frame of this run finds it without work_dir
        return work

    def _names(self) -> pl.DataFrame:
        """``index``, ``filename`` of every image with a feature row, by index."""
        work = self._finished()
        components = results.scan_table(work, layout.CONNECTED_COMPONENTS_FILE)
        if "filename" in components.collect_schema().names():
            names = components.select(pl.col("__id").alias("index"), "filename").collect()
        else:  # written before the components table carried names
            filenames = results.read_names(work)
            names = pl.DataFrame(
                {"index": range(len(filenames)), "filename": filenames},
                schema={"index": pl.Int64, "filename": pl.String},
            )
        return names.sort("index")

    def _bad(self, first_index: int) -> pl.DataFrame:
        """The run's invalid images, numbered on from ``first_index`` as fastdup does."""
        bad = results.read_bad_list(self._finished())
        return bad.select(
            (pl.int_range(pl.len(), dtype=pl.Int64) + first_index).alias("index"),
            "filename",
            pl.col("error").alias("error_code"),
        )

    def _stats_frame(self) -> pl.DataFrame | None:
        work = self._finished()
        if not results.has_stats(work):
            return None
        stats = results.read_stats(work, ("__id", "filename", "width", "height")).rename(
            STATS_NAMES, strict=False
        )
        stats = stats.with_columns(pl.col(c).cast(pl.Int64) for c in STATS_INTEGERS if c in stats.columns)
        first = [c for c in STATS_ORDER if c in stats.columns]
        return stats.select(first + [c for c in stats.columns if c not in first])

    def _annotation_frame(self, valid_only: bool) -> pl.DataFrame:
        names = self._names()
        listing = names.with_columns(is_valid=pl.lit(True), error_code=pl.lit(None, dtype=pl.String))
        if not valid_only:
            bad = self._bad(int(names["index"].max()) + 1 if names.height else 0)
            listing = pl.concat([listing, bad.with_columns(is_valid=pl.lit(False)).select(listing.columns)])
        stats = self._stats_frame()
        if stats is not None:
            sizes = stats.select([c for c in ("index", "img_w", "img_h", "file_size") if c in stats.columns])
            listing = listing.join(sizes, on="index", how="left", maintain_order="left")
        return self._with_user_columns(listing, "filename")

    def _user_columns(self) -> pl.DataFrame | None:
        """The annotations given to run() (filename and your columns), else the columns
        that came with the inputs (a Parquet file's captions, ...), if any."""
        if self._user_annotations is None:
            work = self._existing_work()
            if work.exists(layout.ANNOTATIONS_FILE):
                self._user_annotations = results.read_file_table(work, layout.ANNOTATIONS_FILE, ("filename",))
            else:
                self._user_annotations = results.read_input_annotations(work)
        return self._user_annotations

    def _with_user_columns(self, table: pl.DataFrame, on: str, suffix: str = "") -> pl.DataFrame:
        """``table`` with your annotation columns joined on its column ``on`` (a filename),
        each renamed ``<column><suffix>``."""
        user = self._user_columns()
        if user is None or user.width == 1:
            return table
        user = user.rename({c: f"{c}{suffix}" for c in user.columns if c != "filename"}).rename(
            {"filename": on}
        )
        return table.join(user, on=on, how="left", maintain_order="left")

    def _pairs(self, pairs: pl.DataFrame, ends: tuple[str, str], data: bool) -> pl.DataFrame:
        """A table of two filename columns ``ends`` as fastdup gives it: each end an
        index, and with ``data`` ``filename_<end>`` plus annotation columns per end."""
        index_of = self._names().select("filename", "index")
        for end in ends:
            pairs = pairs.join(
                index_of.rename({"filename": end, "index": f"__{end}"}),
                on=end,
                how="left",
                maintain_order="left",
            )
            pairs = pairs.with_columns(
                pl.col(end).alias(f"filename_{end}"), pl.col(f"__{end}").alias(end)
            ).drop(f"__{end}")
        if not data:
            return pairs.drop(*(f"filename_{end}" for end in ends))
        for end in ends:
            pairs = self._with_user_columns(pairs, f"filename_{end}", suffix=f"_{end}")
        return pairs

    def _component_frames(self, data: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
        work = self._finished()
        members = results.read_table(work, layout.CONNECTED_COMPONENTS_FILE, ("__id", "component_id"))
        members = members.drop("filename", strict=False).rename({"__id": "index"}).sort("index")
        sizes = members.group_by("component_id").agg(pl.len().cast(pl.Int64).alias("count"))
        members = members.join(sizes, on="component_id", how="left", maintain_order="left").filter(
            pl.col("count") >= 2
        )
        members = members.join(
            self._inner_distances(members), on="component_id", how="left", maintain_order="left"
        )
        if data:
            members = members.join(self._names(), on="index", how="left", maintain_order="left")
            members = self._with_user_columns(members, "filename")
        return members, results.read_table(work, layout.COMPONENT_INFO_FILE, ("component_id",))

    def _inner_distances(self, members: pl.DataFrame) -> pl.DataFrame:
        """mean / min / max similarity of the similarity.csv pairs inside each component."""
        pairs = self._pairs(
            results.read_table(self._finished(), layout.SIMILARITY_FILE, ("from", "to", "distance")),
            ("from", "to"),
            data=False,
        )
        component = members.select("index", "component_id")
        inside = (
            pairs.join(component.rename({"index": "from"}), on="from")
            .join(component.rename({"index": "to", "component_id": "component_to"}), on="to")
            .filter(pl.col("component_id") == pl.col("component_to"))
        )
        return inside.group_by("component_id").agg(
            pl.col("distance").mean().alias("mean_distance"),
            pl.col("distance").min().alias("min_distance"),
            pl.col("distance").max().alias("max_distance"),
        )


def _fspath(location: Any) -> Any:
    if isinstance(location, (list, tuple)):
        return [os.fspath(x) for x in location]
    return None if location is None else os.fspath(location)


def _out(table: pl.DataFrame, as_polars: bool) -> pd.DataFrame | pl.DataFrame:
    return table if as_polars else table.to_pandas()

"""fastdup's ``fd.vis``: the galleries of one finished run, with fastdup's method and
argument names (``num_images``, ``slice``, ``save_path``, ``ascending``, ``threshold``,
``metric``, ``min_items``, ``max_items``, ``label_col``, ``show``).

Each method writes the gallery's HTML pages to ``save_path`` (default
``<work_dir>/galleries``, as fastdup) and returns the first page's path; in a notebook
(IPython with a running kernel) it also shows the first page inline, thumbnails and all.
With ``annotations`` (a frame with ``filename`` and ``label`` columns) tiles show each
image's label and ``slice`` keeps the rows whose image has one of the given labels.
``external_df`` (fastdup's name): a DataFrame of the rows to show, such as a filtered
``fd.outliers()``, in place of the run's table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from fastdup_ray.errors import ConfigError
from fastdup_ray.reports import frames, galleries
from fastdup_ray.reports.components import components_cards, is_grouped
from fastdup_ray.reports.options import Look, boxed_view, check_options
from fastdup_ray.reports.render import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_TILE_SIZE,
    Gallery,
    render_inline,
    write_gallery,
)
from fastdup_ray.reports.tables import RunTables, labels_of
from fastdup_ray.rundir.storage import is_remote

DEFAULT_NUM_IMAGES = 20  # fastdup's default for every gallery
Labels = str | Sequence[str] | None


def in_notebook() -> bool:
    """Whether this runs in a notebook: IPython is imported and has a kernel (a terminal
    IPython has none; a plain script no IPython at all)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class Visualizer:
    """The galleries of the run in ``work_dir`` (a work dir, a test_results folder, or one
    of their tables), labelled by ``annotations`` when given."""

    def __init__(self, work_dir: str | os.PathLike, annotations=None) -> None:
        self.work_dir = os.fspath(work_dir)
        self.annotations = annotations

    def _tables(self, label_col: str, slice: Labels, external_df=None, kind: str = "") -> RunTables:
        """The run's tables with labels from the annotations' ``label_col``, when it has
        one (a listing without labels only gives no labels, unless a slice needs them),
        and ``external_df`` in place of its ``kind`` table."""
        has_labels = self.annotations is not None and (
            isinstance(self.annotations, dict) or label_col in getattr(self.annotations, "columns", ())
        )
        if slice is not None and not has_labels and not is_grouped(external_df):
            raise ConfigError(
                f"slice needs annotations with filename and {label_col} columns: "
                "Visualizer(work_dir, annotations=frame), or label_col= naming the label column"
            )
        tables = RunTables(self.work_dir, labels_of(self.annotations, label_col) if has_labels else None)
        if external_df is None or (kind == frames.COMPONENTS and is_grouped(external_df)):
            return tables
        if not frames.is_frame(external_df):
            raise ConfigError(
                f"external_df must be a pandas or polars DataFrame, not {type(external_df).__name__}"
            )
        return frames.with_frame(tables, external_df, kind)

    def _folder(self, save_path: str | os.PathLike | None) -> Path:
        if save_path is not None:
            return Path(save_path)
        if is_remote(self.work_dir):
            raise ConfigError(
                f"save_path is needed: galleries of a remote work dir ({self.work_dir}) go to a local folder"
            )
        folder = (
            self.work_dir if os.path.isdir(self.work_dir) else os.path.dirname(self.work_dir)
        )  # a table's folder
        return Path(folder) / "galleries"

    def _write(
        self,
        gallery: Gallery,
        save_path,
        show: bool,
        page_size: int,
        thumbnail_size: int,
        look: Look = Look(),
        save_artifacts: bool = False,
    ) -> Path:
        folder = self._folder(save_path)
        page = write_gallery(
            gallery, folder, page_size, thumbnail_size, look=look, save_artifacts=save_artifacts
        )
        if show and in_notebook():
            from IPython.display import HTML, display

            display(HTML(render_inline(gallery, folder, page_size, look.tile_size(thumbnail_size))))
        return page

    def duplicates_gallery(
        self,
        save_path: str | os.PathLike | None = None,
        num_images: int | None = DEFAULT_NUM_IMAGES,
        slice: Labels = None,
        ascending: bool = False,
        threshold: float | None = None,
        label_col: str = "label",
        keep: str | None = galleries.DEFAULT_KEEP,
        thumbnail_size: int = DEFAULT_TILE_SIZE,
        page_size: int = DEFAULT_PAGE_SIZE,
        show: bool = True,
        external_df=None,
        max_width: int | None = None,
        enhance_image: bool = False,
        keep_aspect_ratio: bool = True,
        save_artifacts: bool = False,
        **options,
    ) -> Path:
        """Pairs at or above ``threshold`` (default: all of similarity.csv), most similar
        first, with each image's resolution and size and which one ``dedup --keep keep``
        keeps; ``slice='diff'`` the pairs whose labels differ, 'same' those that agree."""
        check_options(self.duplicates_gallery, options)
        look = Look(max_width, keep_aspect_ratio, enhance_image, boxed_view(options))
        tables = self._tables(label_col, slice, external_df, frames.PAIRS)
        cards = galleries.duplicates_cards(tables, num_images, threshold, ascending, keep, slice)
        return self._write(cards, save_path, show, page_size, thumbnail_size, look, save_artifacts)

    def outliers_gallery(
        self,
        save_path: str | os.PathLike | None = None,
        num_images: int | None = DEFAULT_NUM_IMAGES,
        slice: Labels = None,
        ascending: bool = True,
        label_col: str = "label",
        thumbnail_size: int = DEFAULT_TILE_SIZE,
        page_size: int = DEFAULT_PAGE_SIZE,
        show: bool = True,
        external_df=None,
        max_width: int | None = None,
        enhance_image: bool = False,
        keep_aspect_ratio: bool = True,
        save_artifacts: bool = False,
        **options,
    ) -> Path:
        """Images far from everything, most outlying first, beside their nearest neighbour;
        ``slice``: a label or a list of labels."""
        check_options(self.outliers_gallery, options)
        look = Look(max_width, keep_aspect_ratio, enhance_image, boxed_view(options))
        tables = self._tables(label_col, slice, external_df, frames.OUTLIERS)
        cards = galleries.outliers_cards(tables, num_images, ascending, slice)
        return self._write(cards, save_path, show, page_size, thumbnail_size, look, save_artifacts)

    def component_gallery(
        self,
        save_path: str | os.PathLike | None = None,
        num_images: int | None = DEFAULT_NUM_IMAGES,
        slice: Labels = None,
        min_items: int | None = None,
        max_items: int | None = None,
        ascending: bool = False,
        label_col: str = "label",
        keep: str | None = galleries.DEFAULT_KEEP,
        thumbnail_size: int = DEFAULT_TILE_SIZE,
        page_size: int = DEFAULT_PAGE_SIZE,
        show: bool = True,
        external_df=None,
        group_by: str = "visual",
        sort_by: str = "comp_size",
        metric: str | None = None,
        threshold: float | None = None,
        max_width: int | None = None,
        enhance_image: bool = False,
        keep_aspect_ratio: bool = True,
        save_artifacts: bool = False,
        **options,
    ) -> Path:
        """Components of ``min_items`` (default 2) or more images, largest first, up to
        ``max_items`` (default 12) members each, grouped and ordered as
        :mod:`fastdup_ray.reports.components` says (group_by, slice 'diff' / 'same' / labels,
        metric, sort_by, threshold). ``external_df``: members (fd.connected_components()) or
        groups (fastdup.find_top_components(), whose ``label_col`` lists label the tiles)."""
        check_options(self.component_gallery, options)
        look = Look(max_width, keep_aspect_ratio, enhance_image, boxed_view(options))
        tables = self._tables(label_col, slice, external_df, frames.COMPONENTS)
        cards = components_cards(
            tables,
            num_images,
            12 if max_items is None else max_items,
            2 if min_items is None else min_items,
            ascending,
            keep,
            slice,
            group_by,
            sort_by,
            metric,
            threshold,
            grouped=external_df if is_grouped(external_df) else None,
            label_col=label_col,
        )
        return self._write(cards, save_path, show, page_size, thumbnail_size, look, save_artifacts)

    def stats_gallery(
        self,
        save_path: str | os.PathLike | None = None,
        metric: str = "dark",
        slice: Labels = None,
        ascending: bool | None = None,
        num_images: int | None = DEFAULT_NUM_IMAGES,
        label_col: str = "label",
        thumbnail_size: int = DEFAULT_TILE_SIZE,
        page_size: int = DEFAULT_PAGE_SIZE,
        show: bool = True,
        external_df=None,
        max_width: int | None = None,
        enhance_image: bool = False,
        keep_aspect_ratio: bool = True,
        save_artifacts: bool = False,
        **options,
    ) -> Path:
        """Images by one statistic: fastdup's 'dark' (lowest mean first), 'bright' (highest
        mean first), 'blur' (blurriest first), or any column of stats.csv. The page is
        named as fastdup names it: after the column (``blur.html``, ``mean.html``, ...)."""
        check_options(self.stats_gallery, options)
        look = Look(max_width, keep_aspect_ratio, enhance_image, boxed_view(options))
        tables = self._tables(label_col, slice, external_df, frames.STATS)
        column, _ = galleries.stats_order(metric, ascending)
        cards = galleries.stats_cards(tables, metric, ascending, num_images, slice=slice, stem=column)
        return self._write(cards, save_path, show, page_size, thumbnail_size, look, save_artifacts)

    def similarity_gallery(
        self,
        save_path: str | os.PathLike | None = None,
        num_images: int | None = DEFAULT_NUM_IMAGES,
        slice: Labels = None,
        max_items: int = 10,
        threshold: float | None = None,
        label_col: str = "label",
        thumbnail_size: int = DEFAULT_TILE_SIZE,
        page_size: int = DEFAULT_PAGE_SIZE,
        show: bool = True,
        external_df=None,
        ascending: bool | None = None,
        min_items: int | None = None,
        max_width: int | None = None,
        enhance_image: bool = False,
        keep_aspect_ratio: bool = True,
        save_artifacts: bool = False,
        **options,
    ) -> Path:
        """Images followed by those most similar to them, each pair once; with
        ``slice='diff'`` fastdup's mislabel view (images whose look-alikes carry another
        label, lowest label score first), 'same' its opposite (reports/labelled.py)."""
        check_options(self.similarity_gallery, options)
        look = Look(max_width, keep_aspect_ratio, enhance_image, boxed_view(options))
        tables = self._tables(label_col, slice, external_df, frames.PAIRS)
        cards = galleries.similarity_cards(
            tables, num_images, max_items, threshold, slice, **label_order(slice, ascending, min_items)
        )
        return self._write(cards, save_path, show, page_size, thumbnail_size, look, save_artifacts)


def label_order(slice, ascending: bool | None, min_items: int | None) -> dict:
    """The similarity gallery's ascending / min_items, which order and cut its label
    views (slice 'diff' or 'same')."""
    if galleries.label_view(slice):
        return {"ascending": ascending, "min_items": min_items}
    for name, value in (("ascending", ascending), ("min_items", min_items)):
        if value is not None:
            raise ConfigError(
                f"similarity_gallery({name}=...) orders and cuts the label views: give slice='diff' or 'same'"
            )
    return {}

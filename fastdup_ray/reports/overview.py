"""Every gallery of a run at once, and ``index.html``: the run's summary (images good and
bad, pairs, components, outliers, what ``dedup`` would remove), a link to each gallery
(or why it is empty, or why it could not be made) and the run's parameters."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from fastdup_ray.errors import InputError
from fastdup_ray.reports import galleries
from fastdup_ray.reports.components import components_cards
from fastdup_ray.reports.render import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_TILE_SIZE,
    INDEX_PAGE,
    Gallery,
    SavedThumbnails,
    render_index,
    write_gallery,
)
from fastdup_ray.reports.tables import KeepMarkers, RunTables, labels_of
from fastdup_ray.rundir import layout
from fastdup_ray.rundir.shards import BAD_FILE
from fastdup_ray.rundir.workdir import write_file_atomically

log = logging.getLogger("fastdup_ray")

DEFAULT_STATS_METRICS = ("blur", "dark", "bright")
# Never shown, whatever a config.json holds.
SECRET_PARAMETERS = ("s3_key", "s3_secret")


def create_galleries(
    work_dir,
    save_path,
    num_images: int | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    keep: str | None = galleries.DEFAULT_KEEP,
    thumbnail_size: int = DEFAULT_TILE_SIZE,
    stats_metrics: Sequence[str] = DEFAULT_STATS_METRICS,
    annotations=None,
) -> Path:
    """Write the duplicates, similarity, components, outliers and statistics galleries of
    a run to ``save_path``, and ``index.html`` linking them; returns index.html's path."""
    tables = RunTables(work_dir, labels_of(annotations))
    stats_count = 100 if num_images is None else num_images
    builders: list[tuple[str, Callable[[], Gallery]]] = [
        ("Duplicates", lambda: galleries.duplicates_cards(tables, num_images, keep=keep)),
        ("Similar images", lambda: galleries.similarity_cards(tables, num_images)),
        ("Components", lambda: components_cards(tables, num_images, keep=keep)),
        ("Outliers", lambda: galleries.outliers_cards(tables, num_images)),
        *(
            (
                f"Statistics: {metric}",
                lambda metric=metric: galleries.stats_cards(tables, metric, num_images=stats_count),
            )
            for metric in stats_metrics
        ),
    ]
    entries = []
    saved: SavedThumbnails = {}  # the galleries share one thumbnails folder: each image read once
    for title, build in builders:
        try:
            gallery = build()
        except InputError as exc:  # a table the run did not write (run_mode 1, a test run)
            entries.append(
                {"title": title, "href": None, "description": "", "rows": None, "why": f"Not made: {exc}"}
            )
            continue
        page = write_gallery(gallery, save_path, page_size, thumbnail_size, index_link=True, saved=saved)
        entries.append(
            {
                "title": gallery.title,
                "href": page.name,
                "description": gallery.description,
                "rows": len(gallery.cards),
                "why": gallery.empty,
            }
        )
    # As config.json writes them (true, null, ...).
    parameters = {
        name: value if isinstance(value, str) else json.dumps(value)
        for name, value in sorted(tables.config.items())
        if name not in SECRET_PARAMETERS
    }
    text = render_index(
        run_summary(tables, keep), entries, parameters, f"fastdup-ray run: {tables.work.location}"
    )
    index = Path(save_path) / INDEX_PAGE
    write_file_atomically(index, text.encode("utf-8"))
    log.info("wrote %s", index)
    return index


def run_summary(tables: RunTables, keep: str | None) -> list[tuple[str, str]]:
    """(what, how many) lines of the run, from the tables it wrote."""
    lines = [("work dir", tables.work.location)]
    if tables.is_test_run:
        lines.append(
            (
                "test run",
                f"test images {tables.from_images.work.location} "
                f"against the train run {tables.to_images.work.location}",
            )
        )
    else:
        good, bad = tables.from_images.counts()
        lines.append(
            (
                "images",
                f"{good} good, {bad} bad" + (f" (reasons in {tables.work.path(BAD_FILE)})" if bad else ""),
            )
        )
    if tables.has(layout.SIMILARITY_FILE):
        pairs = tables.table(layout.SIMILARITY_FILE, galleries.PAIR_COLUMNS)
        threshold = tables.config.get("threshold")
        at = f" at or above {threshold:g}" if threshold is not None else ""
        exact = int(pairs["exact"].sum()) if "exact" in pairs.columns else 0
        lines.append(
            (
                "similar pairs",
                f"{pairs.height}{at}" + (f", {exact} of them byte-identical files" if exact else ""),
            )
        )
    components = tables.components()
    if components is not None:
        grouped = components.filter(pl.col("Count") >= 2)
        lines.append(
            (
                "components",
                f"{grouped['component_id'].n_unique()} with 2 or more images "
                f"({grouped.height} images in them)",
            )
        )
    if tables.has(layout.OUTLIERS_FILE):
        lines.append(
            ("outliers", str(tables.table(layout.OUTLIERS_FILE, galleries.PAIR_COLUMNS)["from"].n_unique()))
        )
    if keep:
        markers = tables.keep_markers(keep)
        if isinstance(markers, KeepMarkers):
            removed = len(markers.component_of) - len(markers.kept)
            lines.append(
                (
                    "dedup",
                    f"fastdup-ray dedup --keep {keep} keeps {len(markers.kept)} images and removes {removed}",
                )
            )
    return lines

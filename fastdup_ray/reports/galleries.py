"""HTML galleries over a finished run, with fastdup's function names.

Each gallery reads only the run's outputs (similarity, outliers, the component tables,
stats; CSV or Parquet parts, through results.py) and the thumbnails that extraction
stored per shard, so it works the same for loose files, members of tars and images on
S3: nothing is re-read from the dataset. A click on an image opens the original when it
is a local file, else the stored thumbnail.

Each ``*_cards`` function picks a gallery's cards from a :class:`RunTables`, its tiles
made by tiles.py; the ``create_*_gallery`` functions (create.py) open the run and write
the pages (render.py). A gallery with nothing to show says why and what to change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

from fastdup_ray.errors import ConfigError
from fastdup_ray.reports.render import (
    Card,
    Gallery,
)
from fastdup_ray.reports.tables import RunTables
from fastdup_ray.reports.tiles import (
    DEFAULT_KEEP,
    TileMaker,
    as_id,
    card_layout,
    in_slice,
    label_view,
    limit_rows,
    lowered,
    pairs_by_labels,
    rerun_hint,
    slice_labels,
    slice_note,
)
from fastdup_ray.rundir import layout, results

PAIR_COLUMNS = ("from", "to", "distance")
STATS_COLUMNS = ("__id", "filename", "width", "height")
# fastdup's stats_gallery names: 'dark' and 'bright' sort by mean brightness.
METRIC_ALIASES = {"dark": ("mean", True), "bright": ("mean", False)}


def _unique_pairs(pairs: pl.DataFrame, tables: RunTables) -> pl.DataFrame:
    """Each pair once: within one run, a->b and b->a are the same pair."""
    if tables.is_test_run:
        return pairs
    low = pl.min_horizontal("from", "to").alias("_low")
    high = pl.max_horizontal("from", "to").alias("_high")
    return (
        pairs.with_columns(low, high)
        .unique(["_low", "_high"], keep="first", maintain_order=True)
        .drop("_low", "_high")
    )


def _pairs(tables: RunTables, threshold: float | None) -> pl.DataFrame:
    pairs = tables.table_for(layout.SIMILARITY_FILE, PAIR_COLUMNS)
    if threshold is not None:
        pairs = pairs.filter(pl.col("distance") >= threshold)
    return pairs


def _no_pairs_reason(tables: RunTables, threshold: float | None, wanted: set[str] | None) -> str:
    """Why a pair gallery is empty, and what to change."""
    pairs = tables.table_for(layout.SIMILARITY_FILE, PAIR_COLUMNS)
    if wanted is not None and (threshold is None or pairs.filter(pl.col("distance") >= threshold).height):
        return f"Nothing to show: {slice_note(wanted, tables)}."
    if threshold is not None and pairs.height:
        best = pairs["distance"].max()
        return (
            f"No pairs at or above {threshold:g} (the gallery's threshold); "
            f"the most similar pair scores {best:.4f}: try threshold={math.floor(best * 100) / 100:g}."
        )
    run_threshold = tables.config.get("threshold")
    if not tables.shows_run_table(layout.SIMILARITY_FILE):
        return f"No pairs: {tables.chosen} has no rows."  # a table file or the DataFrame
    if run_threshold is None:
        return "No pairs: similarity.csv has no rows."
    return (
        f"No pairs at or above {run_threshold:g} (the run's threshold): to see less similar pairs, "
        f"{rerun_hint(f'--threshold {lowered(run_threshold):g}')}."
    )


# --- the galleries' cards ------------------------------------------------------------------


def duplicates_cards(
    tables: RunTables,
    num_images: int | None = None,
    threshold: float | None = None,
    ascending: bool = False,
    keep: str | None = DEFAULT_KEEP,
    slice: str | Sequence[str] | None = None,
) -> Gallery:
    """Pairs of similarity.csv side by side, most similar first: each image's resolution,
    file size and component, and which of them ``dedup --keep <keep>`` keeps."""
    wanted, view = slice_labels(tables, slice), label_view(slice)
    pairs = _unique_pairs(_pairs(tables, threshold), tables)
    pairs = pairs_by_labels(pairs, tables, view) if view else in_slice(pairs, "from", tables, wanted)
    pairs = tables.with_ids(
        limit_rows(pairs.sort("distance", descending=not ascending, maintain_order=True), num_images)
    )
    maker = TileMaker(tables, keep)
    maker.prepare(tables.from_images, pairs["from_id"])
    maker.prepare(tables.to_images, pairs["to_id"])
    sizes = tables.component_sizes()
    exact = pairs["exact"].to_list() if "exact" in pairs.columns else [False] * pairs.height
    cards = []
    for rank, (a, b, distance, a_id, b_id) in enumerate(
        pairs.select("from", "to", "distance", "from_id", "to_id").iter_rows()
    ):
        facts = [f"pair {rank + 1} of {pairs.height}"]
        a_component, b_component = sizes.get(as_id(a_id)), sizes.get(as_id(b_id))
        if a_component and b_component:
            same = a_component[0] == b_component[0]
            facts.append(
                f"component {a_component[0]} ({a_component[1]} images)"
                if same
                else f"components {a_component[0]} and {b_component[0]}"
            )
        on_card = [as_id(a_id), as_id(b_id)]
        cards.append(
            Card(
                heading=f"similarity {distance:.4f}"
                + (" \u00b7 byte-identical files" if exact[rank] else ""),
                facts=facts,
                tiles=[
                    maker.tile(tables.from_images, a_id, a, on_card=on_card),
                    maker.tile(tables.to_images, b_id, b, on_card=on_card),
                ],
            )
        )
    order = "least" if ascending else "most"
    of = {"diff": " whose labels differ", "same": " whose labels agree"}.get(view or "", "")
    gallery = Gallery(
        "duplicates",
        "Duplicates",
        f"Image pairs{of} at or above the run's threshold, {order} similar first; each pair once.",
        cards,
        notes=maker.note(),
    )
    if not cards:
        gallery.empty = (
            f"Nothing to show: no pair{of} in {tables.where(layout.SIMILARITY_FILE)}."
            if view
            else _no_pairs_reason(tables, threshold, wanted)
        )
    return gallery


def outliers_cards(
    tables: RunTables,
    num_images: int | None = None,
    ascending: bool = True,
    slice: str | Sequence[str] | None = None,
) -> Gallery:
    """Images of outliers.csv, most outlying first, each beside its nearest neighbour."""
    wanted = slice_labels(tables, slice, compares=False)
    rows = tables.with_ids(
        in_slice(tables.table_for(layout.OUTLIERS_FILE, PAIR_COLUMNS), "from", tables, wanted)
    )
    # One card per outlier: its least similar kNN edge decides how far out it is.
    rows = rows.sort("distance", maintain_order=True).unique("from", keep="first", maintain_order=True)
    rows = limit_rows(rows.sort("distance", descending=not ascending, maintain_order=True), num_images)
    maker = TileMaker(tables)
    maker.prepare(tables.from_images, rows["from_id"])
    maker.prepare(tables.to_images, rows["to_id"])
    cards = [
        Card(
            heading=f"outlier {rank}: similarity to its nearest neighbour {distance:.4f}",
            facts=[],
            tiles=[
                maker.tile(tables.from_images, a_id, a, ["outlier"]),
                maker.tile(tables.to_images, b_id, b, ["nearest neighbour"]),
            ],
        )
        for rank, (a, b, distance, a_id, b_id) in enumerate(
            rows.select("from", "to", "distance", "from_id", "to_id").iter_rows(), start=1
        )
    ]
    gallery = Gallery(
        "outliers",
        "Outliers",
        "Images least similar to their nearest neighbour, most outlying first, each beside that neighbour.",
        cards,
    )
    if not cards:
        lower = tables.config.get("lower_threshold")
        if wanted is not None:
            gallery.empty = f"Nothing to show: {slice_note(wanted, tables)}."
        elif lower is not None and tables.shows_run_table(layout.OUTLIERS_FILE):
            gallery.empty = (
                f"No outliers: outliers.csv is empty at lower_threshold {lower:g}; to list more images, "
                f"{rerun_hint(f'--lower-threshold {min(0.5, round(lower + 0.05, 2)):g}')}."
            )
        else:
            gallery.empty = "No outliers: the table has no rows."
    return gallery


def stats_order(metric: str, ascending: bool | None) -> tuple[str, bool]:
    """(column, ascending) of a stats gallery: 'dark' is lowest mean first, 'bright'
    highest mean first, other metrics lowest first unless said."""
    column, default = METRIC_ALIASES.get(metric, (metric, True))
    return column, default if ascending is None else ascending


def stats_cards(
    tables: RunTables,
    metric: str = "blur",
    ascending: bool | None = None,
    num_images: int | None = 100,
    per_card: int = 10,
    slice: str | Sequence[str] | None = None,
    stem: str | None = None,
) -> Gallery:
    """Images sorted by one statistic of stats.csv (blur, mean, width, unique_colors, ...;
    fastdup's 'dark' and 'bright' sort by mean)."""
    images = tables.single_run("statistics gallery")
    stats = tables.table_for(results.stats_source(tables.work), STATS_COLUMNS)
    column, ascending = stats_order(metric, ascending)
    if column not in stats.columns or column in ("__id", "filename", "hash"):
        usable = [c for c in stats.columns if c not in ("__id", "filename", "hash")]
        raise ConfigError(
            f"unknown statistic {metric!r}; stats.csv has {', '.join(usable)} (and fastdup's dark, bright)"
        )
    wanted = slice_labels(tables, slice, compares=False)
    rows = limit_rows(
        in_slice(stats, "filename", tables, wanted).sort([column, "__id"], descending=[not ascending, False]),
        num_images,
    )
    flags = [c for c in stats.columns if c.startswith("is_")]
    maker = TileMaker(tables)
    maker.prepare(images, rows["__id"])
    tiles = []
    for row in rows.iter_rows(named=True):
        captions = [f"{column} {_number(row[column])}"] + [
            flag[3:].replace("_", " ") for flag in flags if row[flag]
        ]
        tiles.append(maker.tile(images, row["__id"], row["filename"], captions))
    order = "lowest" if ascending else "highest"
    cards = [
        Card(
            heading=f"{order} {column}: images {start + 1}-{start + len(chunk)}",
            facts=[],
            tiles=chunk,
            layout="wide",
        )
        for start in range(0, len(tiles), per_card)
        for chunk in [tiles[start : start + per_card]]
    ]
    gallery = Gallery(
        stem or f"stats_{metric}", f"Statistics: {metric}", f"Images by {column}, {order} first.", cards
    )
    if not cards:
        gallery.empty = (
            f"Nothing to show: {slice_note(wanted, tables)}."
            if wanted is not None
            else "No images: the run measured none (every image was bad?)."
        )
    return gallery


def similarity_cards(
    tables: RunTables,
    num_images: int | None = None,
    max_items: int = 10,
    threshold: float | None = None,
    slice: str | Sequence[str] | None = None,
    **label_options,
) -> Gallery:
    """Images with the ones most similar to them, each pair shown once: a pair sits on the
    card of whichever of its two images comes first (images with the closest match come
    first). A test run's queries are its test images. fastdup's slice='diff' and
    'same' compare labels: labelled.label_similarity_cards."""
    if label_view(slice):
        from fastdup_ray.reports.labelled import label_similarity_cards

        return label_similarity_cards(
            tables, label_view(slice), num_images, max_items, threshold, **label_options
        )
    wanted = slice_labels(tables, slice)
    pairs = tables.with_ids(_unique_pairs(_pairs(tables, threshold), tables))
    pairs = pairs.select("from", "to", "distance", "from_id", "to_id")
    if tables.is_test_run:
        owned = pairs.rename({"from": "query", "from_id": "query_id", "to": "match", "to_id": "match_id"})
    else:
        # Queries in order of their closest match; each pair goes to its earlier image.
        ends = pl.concat(
            [
                pairs.select(pl.col("from").alias("image"), "distance"),
                pairs.select(pl.col("to").alias("image"), "distance"),
            ]
        )
        order = (
            ends.group_by("image")
            .agg(pl.col("distance").max().alias("best"))
            .sort(["best", "image"], descending=[True, False])
        )
        rank = order.with_row_index("rank").select("image", pl.col("rank").cast(pl.Int64))
        pairs = pairs.join(rank.rename({"image": "from", "rank": "from_rank"}), on="from").join(
            rank.rename({"image": "to", "rank": "to_rank"}), on="to"
        )
        from_first = pl.col("from_rank") <= pl.col("to_rank")
        owned = pairs.select(
            pl.when(from_first).then("from").otherwise("to").alias("query"),
            pl.when(from_first).then("from_id").otherwise("to_id").alias("query_id"),
            pl.when(from_first).then("to").otherwise("from").alias("match"),
            pl.when(from_first).then("to_id").otherwise("from_id").alias("match_id"),
            "distance",
        )
    owned = in_slice(owned, "query", tables, wanted).sort(
        ["distance", "query", "match"], descending=[True, False, False]
    )
    queries = limit_rows(owned.unique("query", keep="first", maintain_order=True), num_images)
    groups = {
        key[0]: group
        for key, group in owned.join(queries.select("query"), on="query", how="semi").group_by(
            "query", maintain_order=True
        )
    }
    maker = TileMaker(tables)
    maker.prepare(tables.from_images, queries["query_id"])
    maker.prepare(
        tables.to_images, [i for group in groups.values() for i in group.head(max_items)["match_id"]]
    )
    cards = []
    for query, query_id in queries.select("query", "query_id").iter_rows():
        group = groups[query]
        tiles = [maker.tile(tables.from_images, query_id, query, ["query"])]
        tiles += [
            maker.tile(tables.to_images, i, name, [f"similarity {d:.4f}"])
            for name, i, d in group.head(max_items).select("match", "match_id", "distance").iter_rows()
        ]
        shown = f", showing {max_items}" if group.height > max_items else ""
        cards.append(
            Card(
                heading=f"{group.height} similar image{'s' * (group.height != 1)}{shown}",
                facts=[],
                tiles=tiles,
                layout=card_layout(tiles),
            )
        )
    gallery = Gallery(
        "similarity",
        "Similar images",
        "Each image followed by the images most similar to it; each pair shown once, "
        "on the card of the image whose closest match is closer.",
        cards,
    )
    if not cards:
        gallery.empty = _no_pairs_reason(tables, threshold, wanted)
    return gallery


def _number(value) -> str:
    if isinstance(value, (int, np.integer)) or float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.2f}"

"""fastdup's mislabel view: ``similarity_gallery(slice='diff')``.

Each image is a query with every image similar to it (similarity.csv's pairs, both ways
round). Its label score, as fastdup computes it, is the share of those images that carry
its own label: 0% means all its look-alikes carry another label, the sign of a mislabel.
'diff' shows the images with a look-alike of another label, lowest score first, each
beside those look-alikes; 'same' the images with look-alikes of their own label, highest
score first, beside those. ``min_items`` keeps queries with at least that many similar
images (fastdup's), ``ascending`` turns the order round.
"""

from __future__ import annotations

import polars as pl

from fastdup_ray.reports.render import Card, Gallery
from fastdup_ray.reports.tables import RunTables
from fastdup_ray.reports.tiles import TileMaker, card_layout, labelled, limit_rows
from fastdup_ray.rundir import layout

PAIR_COLUMNS = ("from", "to", "distance")


def label_scores(tables: RunTables, threshold: float | None) -> pl.DataFrame:
    """Every (query, match, distance) pair both ways round, with both labels, the
    query's number of similar images ``length`` and its label ``score`` (0-100)."""
    pairs = tables.table_for(layout.SIMILARITY_FILE, PAIR_COLUMNS).select(PAIR_COLUMNS)
    if threshold is not None:
        pairs = pairs.filter(pl.col("distance") >= threshold)
    if not tables.is_test_run:  # a test run's queries are its test images only
        swapped = pairs.select(pl.col("to").alias("from"), pl.col("from").alias("to"), "distance")
        pairs = pl.concat([pairs, swapped]).unique(["from", "to"], keep="first", maintain_order=True)
    pairs = labelled(labelled(pairs, "from", tables, "label"), "to", tables, "label2")
    pairs = pairs.filter(pl.col("label").is_not_null())
    agree = (pl.col("label") == pl.col("label2")).fill_null(False)
    return pairs.with_columns(
        pl.len().over("from").alias("length"),
        (100.0 * agree.sum().over("from") / pl.len().over("from")).alias("score"),
        agree.alias("agree"),
    )


def label_similarity_cards(
    tables: RunTables,
    view: str,
    num_images: int | None = None,
    max_items: int = 10,
    threshold: float | None = None,
    min_items: int | None = None,
    ascending: bool | None = None,
) -> Gallery:
    """The cards of the module docstring."""
    scored = label_scores(tables, threshold)
    if min_items is not None:
        scored = scored.filter(pl.col("length") >= min_items)
    shown = scored.filter(~pl.col("agree") if view == "diff" else pl.col("agree"))
    low_first = (view == "diff") if ascending is None else ascending
    queries = shown.group_by("from", maintain_order=True).agg(
        pl.col("score").first(), pl.col("length").first(), pl.len().alias("shown")
    )
    queries = limit_rows(
        queries.sort(["score", "length", "from"], descending=[not low_first, False, False]), num_images
    )
    shown = tables.with_ids(shown.join(queries.select("from"), on="from", how="semi"))
    groups = {
        key[0]: group.sort(["distance", "to"], descending=[True, False]).head(max_items)
        for key, group in shown.group_by("from", maintain_order=True)
    }
    maker = TileMaker(tables)
    maker.prepare(tables.from_images, [g["from_id"][0] for g in groups.values()])
    maker.prepare(tables.to_images, [i for g in groups.values() for i in g["to_id"]])
    other = "carry another label" if view == "diff" else "share its label"
    cards = []
    for query, score, length, count in queries.iter_rows():
        group = groups[query]
        tiles = [
            maker.tile(tables.from_images, group["from_id"][0], query, ["query", f"label score {score:.0f}%"])
        ]
        tiles += [
            maker.tile(tables.to_images, i, name, [f"similarity {d:.4f}"])
            for name, i, d in group.select("to", "to_id", "distance").iter_rows()
        ]
        more = f", showing {max_items}" if count > max_items else ""
        cards.append(
            Card(
                heading=f"{count} of {length} similar image{'s' * (length != 1)} {other}{more}",
                facts=[f"label score {score:.0f}%: the share of its similar images with its label"],
                tiles=tiles,
                layout=card_layout(tiles),
            )
        )
    title = "different labels" if view == "diff" else "the same label"
    gallery = Gallery(
        "similarity",
        f"Similar images of {title}",
        f"Each image followed by the similar images that {other}; "
        + ("lowest label score (likely mislabels) first." if low_first else "highest label score first."),
        cards,
    )
    if not cards:
        of = "another label" if view == "diff" else "its own label"
        gallery.empty = f"Nothing to show: no labelled image has a similar image of {of}."
    return gallery

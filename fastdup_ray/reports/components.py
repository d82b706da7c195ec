"""Components as fastdup groups them: :func:`group_components` is the one rule behind
``fastdup.find_top_components``, ``fd.connected_components_grouped`` and the component
gallery.

A row per group of two or more images: ``component_id`` (grouped by what the images
look like, fastdup's group_by='visual') or ``label`` (group_by='label': the images of
components of each label), ``files``, ``files_ids`` (highest pagerank first), ``label``
(the members' labels, when there are labels), ``distance`` (the lowest similarity of a
similarity.csv pair inside; fastdup's ``min_distance``), ``len``, and with ``metric``
(blur, size, mean, min, max, unique, stdv, or any stats.csv column) that statistic's
mean over the members.

fastdup's slices: a label or a list keeps the members with those labels; 'diff' keeps the
components whose members' labels disagree (the mislabel view), 'same' those that agree.
Order, as fastdup's: 'diff' by distance, else by ``metric``, else by ``sort_by``
('comp_size', 'distance', or a column above), largest first unless ``ascending``.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from fastdup_ray.errors import ConfigError
from fastdup_ray.reports.render import Card, Gallery
from fastdup_ray.reports.tables import RunTables
from fastdup_ray.reports.tiles import (
    DEFAULT_KEEP,
    TileMaker,
    card_layout,
    label_view,
    labelled,
    limit_rows,
    lowered,
    rerun_hint,
    slice_labels,
    slice_note,
)
from fastdup_ray.rundir import layout, results

MEMBER_COLUMNS = ("__id", "component_id", "pagerank")
PAIR_COLUMNS = ("from", "to", "distance")
GROUP_BY = ("visual", "label")
# fastdup's statistic names -> stats.csv's.
METRIC_NAMES = {"unique": "unique_colors", "stdv": "std", "img_w": "width", "img_h": "height"}


def members_of(tables: RunTables) -> pl.DataFrame:
    """``__id, component_id, pagerank, filename`` of the members a gallery may show: the
    run's connected_components table, or the user's copy of it, or the members of the
    components a component_info table (or frame) names."""
    images = tables.single_run("components gallery")
    run_members = tables.table(layout.CONNECTED_COMPONENTS_FILE, MEMBER_COLUMNS)
    members = run_members
    if tables.chosen is not None:
        chosen = tables.table(tables.chosen)
        if set(MEMBER_COLUMNS) <= set(chosen.columns):
            members = chosen
        elif "component_id" in chosen.columns:
            members = run_members.join(chosen.select("component_id"), on="component_id", how="semi")
        else:
            raise ConfigError(
                f"{tables.where(tables.chosen)} has columns {', '.join(chosen.columns)}; the component "
                "gallery reads __id, component_id, pagerank or component_id, Count"
            )
    return members.select(MEMBER_COLUMNS).join(images.names, on="__id", how="left", maintain_order="left")


def inside_similarity(tables: RunTables, members: pl.DataFrame) -> pl.DataFrame:
    """component_id, pairs, mean, distance (the lowest similarity) of the similarity.csv
    pairs whose two images are in one component."""
    empty = pl.DataFrame(
        schema={"component_id": pl.Int64, "pairs": pl.UInt32, "mean": pl.Float64, "distance": pl.Float64}
    )
    if not results.has_table(tables.work, layout.SIMILARITY_FILE) or members.is_empty():
        return empty
    component = members.select("filename", pl.col("component_id").cast(pl.Int64))
    pairs = tables.table(layout.SIMILARITY_FILE, PAIR_COLUMNS).select(PAIR_COLUMNS)
    inside = (
        pairs.join(component.rename({"filename": "from", "component_id": "a"}), on="from")
        .join(component.rename({"filename": "to", "component_id": "b"}), on="to")
        .filter(pl.col("a") == pl.col("b"))
    )
    return inside.group_by(pl.col("a").alias("component_id")).agg(
        pl.len().alias("pairs"),
        pl.col("distance").mean().alias("mean"),
        pl.col("distance").min().alias("distance"),
    )


def with_metric(tables: RunTables, members: pl.DataFrame, metric: str) -> pl.DataFrame:
    """``members`` with a column ``metric`` from the run's statistics ('size' is width x
    height, as in fastdup)."""
    stats = results.read_stats(tables.work) if results.has_stats(tables.work) else None
    if stats is None:
        raise ConfigError(f"metric={metric!r} needs the run's statistics; this run has no stats.csv")
    if metric == "size":
        column = (pl.col("width") * pl.col("height")).alias("size")
    else:
        name = METRIC_NAMES.get(metric, metric)
        if name not in stats.columns or name in ("__id", "filename", "hash"):
            usable = [c for c in stats.columns if c not in ("__id", "filename", "hash")]
            raise ConfigError(f"unknown metric {metric!r}; stats.csv has {', '.join(usable)} (and size)")
        column = pl.col(name).alias(metric)
    return members.join(stats.select("__id", column), on="__id", how="left", maintain_order="left")


def group_components(
    tables: RunTables,
    group_by: str = "visual",
    slice: str | Sequence[str] | None = None,
    metric: str | None = None,
    sort_by: str = "comp_size",
    ascending: bool = False,
    min_items: int | None = None,
    max_items: int | None = None,
    threshold: float | None = None,
) -> pl.DataFrame:
    """The groups of the module docstring, in fastdup's order."""
    if group_by not in GROUP_BY:
        raise ConfigError(f"group_by must be 'visual' or 'label', got {group_by!r}")
    if min_items is not None and min_items < 2:
        raise ConfigError(
            f"min_items must be at least 2 (a component has two or more images), got {min_items}"
        )
    members = members_of(tables)
    view, wanted = label_view(slice), slice_labels(tables, slice)
    if group_by == "label" and tables.labels is None:
        raise ConfigError("group_by='label' needs annotations with filename and label columns")
    if tables.labels is not None:
        members = labelled(members, "filename", tables, "label")
    if wanted is not None:
        members = members.filter(pl.col("label").is_in(list(wanted)))
    if metric is not None:
        members = with_metric(tables, members, metric)
    # Only members of components of two or more (a singleton is no component).
    sizes = members.group_by("component_id").agg(pl.len().alias("_size"))
    members = members.join(sizes, on="component_id").filter(pl.col("_size") >= 2).drop("_size")
    members = members.sort(["component_id", "pagerank", "__id"], descending=[False, True, False])
    inside = inside_similarity(tables, members)
    key = "component_id" if group_by == "visual" else "label"
    aggregates = [pl.col("filename").alias("files"), pl.col("__id").alias("files_ids")]
    if group_by == "label":
        aggregates.append(pl.col("component_id").unique(maintain_order=True))
    elif "label" in members.columns:
        aggregates.append(pl.col("label"))
    if metric is not None:
        aggregates.append(pl.col(metric).mean().alias(metric))
    grouped = members.group_by(key, maintain_order=True).agg(*aggregates)
    if group_by == "visual":
        grouped = grouped.join(
            inside.select("component_id", "distance"), on="component_id", how="left", maintain_order="left"
        )
    else:
        lowest = members.join(inside.select("component_id", "distance"), on="component_id", how="left")
        grouped = grouped.join(
            lowest.group_by("label").agg(pl.col("distance").min()),
            on="label",
            how="left",
            maintain_order="left",
        )
    grouped = grouped.with_columns(pl.col("files").list.len().cast(pl.Int64).alias("len")).filter(
        pl.col("len") >= (min_items or 2)
    )
    if view is not None:
        distinct = pl.col("label").list.drop_nulls().list.n_unique()
        grouped = grouped.filter(distinct > 1 if view == "diff" else distinct == 1)
    if max_items is not None:
        grouped = grouped.filter(pl.col("len") <= max_items)
    if threshold is not None:
        grouped = grouped.filter(pl.col(metric if metric else "distance") > threshold)
    return sort_groups(grouped, key, view, metric, sort_by, ascending)


def sort_groups(
    grouped: pl.DataFrame, key: str, view: str | None, metric: str | None, sort_by: str, ascending: bool
) -> pl.DataFrame:
    """fastdup's order: 'diff' by distance, else by metric, else by sort_by."""
    if view == "diff":
        column = "distance"
    elif metric is not None:
        column = metric
    elif sort_by == "comp_size":
        column = "len"
    elif sort_by in grouped.columns and grouped.schema[sort_by] != pl.List:
        column = sort_by
    else:
        usable = ["comp_size"] + [c for c, t in grouped.schema.items() if not isinstance(t, pl.List)]
        raise ConfigError(
            f"sort_by={sort_by!r} is not a column of the components; sort by one of {', '.join(usable)}"
        )
    return grouped.sort(
        [column, key], descending=[not ascending, False], nulls_last=True, maintain_order=True
    )


def is_grouped(frame) -> bool:
    """A frame of groups (find_top_components, connected_components_grouped): a list of
    ``files`` per row."""
    return frame is not None and "files" in getattr(frame, "columns", ())


def components_cards(
    tables: RunTables,
    num_images: int | None = None,
    max_items: int = 12,
    min_size: int = 2,
    ascending: bool = False,
    keep: str | None = DEFAULT_KEEP,
    slice: str | Sequence[str] | None = None,
    group_by: str = "visual",
    sort_by: str = "comp_size",
    metric: str | None = None,
    threshold: float | None = None,
    grouped=None,
    label_col: str = "label",
) -> Gallery:
    """A card per group of :func:`group_components` (or per row of ``grouped``, a user's
    frame of groups, shown in its order): its size, the labels it holds, the mean and
    lowest similarity of its pairs, and up to ``max_items`` members, with the one
    ``dedup --keep <keep>`` keeps."""
    images = tables.single_run("components gallery")
    if grouped is not None:
        rows, key = user_groups(grouped, tables, label_col), "component_id"
    else:
        rows = group_components(
            tables, group_by, slice, metric, sort_by, ascending, min_size, None, threshold
        )
        key = "component_id" if group_by == "visual" else "label"
    rows = limit_rows(rows, num_images)
    shown = [ids[:max_items] for ids in rows["files_ids"].to_list()]
    members = pl.DataFrame({"__id": [i for ids in shown for i in ids]}, schema={"__id": pl.Int64})
    members = members.join(
        tables.table(layout.CONNECTED_COMPONENTS_FILE, MEMBER_COLUMNS), on="__id", how="left"
    )
    members = members.join(images.names, on="__id", how="left")
    inside = {row[0]: row[1:] for row in inside_similarity(tables, members_in(tables, rows)).iter_rows()}
    ranks = dict(members.select("__id", "pagerank").iter_rows())
    maker = TileMaker(tables, keep)
    maker.prepare(images, members["__id"])
    names = images.names["filename"]
    cards = []
    for row, ids in zip(rows.iter_rows(named=True), shown, strict=True):
        labels = row.get("label") if group_by == "visual" or grouped is not None else None
        labels = labels if isinstance(labels, list) else None
        tiles = [
            maker.tile(
                images,
                i,
                names[i],
                [f"pagerank {ranks[i]:.4f}"] if ranks.get(i) is not None else [],
                on_card=ids,
                label=None if labels is None or labels[n] is None else str(labels[n]),
            )
            for n, i in enumerate(ids)
        ]
        count = row["len"]
        facts = [f"{count} images" + (f", showing {len(tiles)}" if len(tiles) < count else "")]
        if labels is not None and any(label is not None for label in labels):
            held = pl.Series(labels, dtype=pl.String).drop_nulls().value_counts(sort=True, name="n")
            facts.append("labels: " + ", ".join(f"{label} \u00d7{n}" for label, n in held.iter_rows()))
        if metric is not None and row.get(metric) is not None:
            facts.append(f"mean {metric} {row[metric]:.2f}")
        if key == "component_id" and row["component_id"] in inside:
            pairs, mean, low = inside[row["component_id"]]
            facts.append(
                f"similarity inside: mean {mean:.4f}, min {low:.4f} "
                f"over {pairs} pair{'s' * (pairs != 1)} of similarity.csv"
            )
        elif key == "component_id":
            facts.append("no pair of similarity.csv inside (joined by kNN edges below the run's threshold)")
        heading = f"component {row['component_id']}" if key == "component_id" else f"label {row['label']}"
        cards.append(Card(heading=heading, facts=facts, tiles=tiles, layout=card_layout(tiles)))
    return components_gallery(tables, cards, maker, min_size, slice, group_by)


def members_in(tables: RunTables, rows: pl.DataFrame) -> pl.DataFrame:
    """filename, component_id of every member of the components ``rows`` shows."""
    ids = [i for group in rows["files_ids"].to_list() for i in group]
    members = tables.table(layout.CONNECTED_COMPONENTS_FILE, MEMBER_COLUMNS).select("__id", "component_id")
    members = members.filter(pl.col("__id").is_in(ids))
    return members.join(tables.names, on="__id").select("filename", "component_id")


def user_groups(grouped, tables: RunTables, label_col: str) -> pl.DataFrame:
    """A user's frame of groups (fastdup's find_top_components output, perhaps with a
    label list added) as the rows of the gallery: files_ids from its files, its
    ``label_col`` lists as the tiles' labels."""
    frame = grouped if isinstance(grouped, pl.DataFrame) else pl.from_pandas(grouped)
    ids = dict(tables.names.select("filename", "__id").iter_rows())
    files = frame["files"].to_list()
    strangers = [name for group in files for name in group if name not in ids]
    if strangers:
        raise ConfigError(
            f"external_df names {len(strangers)} files that are not in the run at {tables.work.location} "
            f"(such as {strangers[0]!r})"
        )
    rows = pl.DataFrame(
        {
            "component_id": frame["component_id"] if "component_id" in frame.columns else range(frame.height),
            "files_ids": [[ids[name] for name in group] for group in files],
            "len": [len(group) for group in files],
        }
    )
    if label_col in frame.columns and frame.schema[label_col] == pl.List:
        rows = rows.with_columns(frame[label_col].cast(pl.List(pl.String)).alias("label"))
    return rows


def components_gallery(tables, cards, maker, min_size: int, slice, group_by: str) -> Gallery:
    ccthreshold = tables.config.get("ccthreshold")
    joined = (
        f"at or above ccthreshold {ccthreshold:g}" if ccthreshold is not None else "at or above ccthreshold"
    )
    what = {"diff": ", whose labels disagree", "same": ", all of one label"}.get(label_view(slice) or "", "")
    grouping = "by label" if group_by == "label" else f"joined by similarity {joined}"
    gallery = Gallery(
        "components",
        "Components",
        f"Groups of images {grouping}{what}, at least {min_size} images, largest first.",
        cards,
        notes=maker.note(),
    )
    if not cards:
        wanted = slice_labels(tables, slice)
        if label_view(slice):
            agree = "disagree" if slice == "diff" else "all agree"
            gallery.empty = (
                f"Nothing to show: no component of {min_size} or more images whose labels {agree}."
            )
        elif wanted is not None:
            gallery.empty = f"Nothing to show: {slice_note(wanted, tables)}."
        elif ccthreshold is not None and tables.chosen is None:
            gallery.empty = (
                f"No components of {min_size} or more images at ccthreshold {ccthreshold:g}: "
                "to join less similar images, "
                f"{rerun_hint(f'--turi-param ccthreshold={lowered(ccthreshold):g}')}."
            )
        else:
            gallery.empty = f"No components of {min_size} or more images in these tables."
    return gallery

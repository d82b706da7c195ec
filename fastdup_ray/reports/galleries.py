"""HTML galleries over a finished run, with fastdup's function names.

Each gallery reads only the run's outputs (similarity.csv, outliers.csv, the component
tables, stats.parquet) and the thumbnails that extraction stored per shard, so it works
the same for loose files, members of tars and images on S3: nothing is re-read from the
dataset. A gallery is a folder: ``<name>.html`` (plus ``<name>_2.html``, ... when the
rows do not fit one page) and ``thumbnails/<__id>.jpg`` beside it, so the pages open
offline. Every text shown is HTML-escaped.

The pure part is :func:`render_pages` (cards in, HTML pages out); the gallery functions
pick the cards from the run's tables.
"""

from __future__ import annotations

import html
import io
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from fastdup_ray import outputs
from fastdup_ray.errors import InputError
from fastdup_ray.features import list_shards, load_names, load_thumbnails
from fastdup_ray.workdir import WorkDir, write_file_atomically

log = logging.getLogger("fastdup_ray")

THUMBNAILS_DIR = "thumbnails"
DEFAULT_PAGE_SIZE = 50


@dataclass
class Tile:
    """One image on a card: its run-wide row id, its location and caption lines."""

    image_id: int | None
    location: str
    captions: list[str] = field(default_factory=list)


@dataclass
class Card:
    """One row of a gallery: a heading, facts about the row, and its images side by side."""

    heading: str
    facts: list[str]
    tiles: list[Tile]


class RunTables:
    """The outputs of one finished run, loaded on demand, with names mapped to row ids."""

    def __init__(self, work_dir: str | os.PathLike | WorkDir) -> None:
        self.work = work_dir if isinstance(work_dir, WorkDir) else WorkDir(os.fspath(work_dir))
        self.prefixes = list_shards(self.work)
        if not self.prefixes:
            raise InputError(f"no finished run in {self.work.location}: no features shards found")
        self._names: pl.DataFrame | None = None

    def table(self, name: str) -> pl.DataFrame:
        if not self.work.exists(name):
            raise InputError(f"{self.work.path(name)} is missing: run fastdup-ray on this work dir first (run_mode 0 or 2)")
        data = io.BytesIO(self.work.read_bytes(name))
        if name.endswith(".parquet"):
            return pl.read_parquet(data)
        return pl.read_csv(data, schema_overrides={"from": pl.String, "to": pl.String})

    @property
    def names(self) -> pl.DataFrame:
        """``__id, filename`` of every image, in features.dat.csv order."""
        if self._names is None:
            names = load_names(self.work, self.prefixes)
            self._names = pl.DataFrame({"filename": pl.Series(names, dtype=pl.String)}).with_row_index("__id").with_columns(pl.col("__id").cast(pl.Int64))
        return self._names

    def with_ids(self, pairs: pl.DataFrame) -> pl.DataFrame:
        """A from,to,distance table with ``from_id`` and ``to_id`` joined on."""
        ids = self.names
        pairs = pairs.join(ids.rename({"filename": "from", "__id": "from_id"}), on="from", how="left", maintain_order="left")
        return pairs.join(ids.rename({"filename": "to", "__id": "to_id"}), on="to", how="left", maintain_order="left")

    def component_sizes(self) -> dict[int, tuple[int, int]]:
        """__id -> (component_id, images in it); empty when the run wrote no components."""
        if not (self.work.exists(outputs.CONNECTED_COMPONENTS_FILE) and self.work.exists(outputs.COMPONENT_INFO_FILE)):
            return {}
        members = self.table(outputs.CONNECTED_COMPONENTS_FILE).select("__id", "component_id")
        sizes = members.join(self.table(outputs.COMPONENT_INFO_FILE).select("component_id", "Count"), on="component_id", how="left")
        return {i: (c, n) for i, c, n in sizes.iter_rows()}


def render_pages(title: str, description: str, cards: list[Card], page_size: int, thumbnails: set[int], stem: str) -> list[tuple[str, str]]:
    """(file name, HTML) of each page; tiles whose id is in ``thumbnails`` show
    ``thumbnails/<id>.jpg``, the others a labelled empty box."""
    pages = max(1, math.ceil(len(cards) / page_size))
    names = [f"{stem}.html" if page == 0 else f"{stem}_{page + 1}.html" for page in range(pages)]
    rendered = []
    for page in range(pages):
        chunk = cards[page * page_size : (page + 1) * page_size]
        nav = _navigation(names, page)
        body = "\n".join(_render_card(card, thumbnails) for card in chunk) or '<p class="empty">Nothing to show: the run found no rows for this gallery.</p>'
        rendered.append(
            (
                names[page],
                _PAGE.format(
                    title=html.escape(title),
                    description=html.escape(description),
                    count=len(cards),
                    first=page * page_size + 1 if chunk else 0,
                    last=page * page_size + len(chunk),
                    nav=nav,
                    body=body,
                ),
            )
        )
    return rendered


def _navigation(names: list[str], page: int) -> str:
    if len(names) == 1:
        return ""
    links = []
    if page > 0:
        links.append(f'<a href="{names[page - 1]}" rel="prev">&larr; previous</a>')
    links.append(f"page {page + 1} of {len(names)}")
    if page + 1 < len(names):
        links.append(f'<a href="{names[page + 1]}" rel="next">next &rarr;</a>')
    return '<nav>' + " · ".join(links) + "</nav>"


def _render_card(card: Card, thumbnails: set[int]) -> str:
    tiles = []
    for tile in card.tiles:
        caption = "".join(f"<div>{html.escape(line)}</div>" for line in tile.captions)
        location = html.escape(tile.location)
        if tile.image_id is not None and tile.image_id in thumbnails:
            picture = f'<img src="{THUMBNAILS_DIR}/{tile.image_id}.jpg" alt="{location}">'
        else:
            picture = '<div class="missing">no thumbnail</div>'
        tiles.append(f'<figure>{picture}<figcaption><div class="location">{location}</div>{caption}</figcaption></figure>')
    facts = "".join(f"<li>{html.escape(fact)}</li>" for fact in card.facts)
    return f'<section class="card"><h2>{html.escape(card.heading)}</h2><ul class="facts">{facts}</ul><div class="tiles">{"".join(tiles)}</div></section>'


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }}
h1 {{ margin-bottom: 0.2em; }}
nav {{ margin: 1em 0; }}
.card {{ background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; margin-bottom: 1em; }}
.card h2 {{ font-size: 1em; margin: 0.2em 0; }}
.facts {{ list-style: none; padding: 0; margin: 0 0 0.5em 0; color: #555; font-size: 0.9em; }}
.facts li {{ display: inline; margin-right: 1.5em; }}
.tiles {{ display: flex; flex-wrap: wrap; gap: 0.8em; }}
figure {{ margin: 0; width: 180px; }}
figure img {{ max-width: 180px; max-height: 180px; display: block; border: 1px solid #ccc; }}
.missing {{ width: 128px; height: 96px; background: #eee; color: #888; display: flex; align-items: center; justify-content: center; font-size: 0.8em; }}
figcaption {{ font-size: 0.8em; word-break: break-all; margin-top: 0.3em; }}
.location {{ font-family: monospace; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>{description}</p>
<p class="summary">{count} rows; showing {first}&ndash;{last}.</p>
{nav}
{body}
{nav}
</body>
</html>
"""


def write_gallery(tables: RunTables, save_path: str | os.PathLike, stem: str, title: str, description: str, cards: list[Card], page_size: int) -> Path:
    """Write the pages and the thumbnails they show; returns the first page's path."""
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    folder = Path(save_path)
    (folder / THUMBNAILS_DIR).mkdir(parents=True, exist_ok=True)
    wanted = sorted({tile.image_id for card in cards for tile in card.tiles if tile.image_id is not None})
    on_disk = {int(p.stem) for p in (folder / THUMBNAILS_DIR).glob("*.jpg") if p.stem.isdigit()}
    missing = [i for i in wanted if i not in on_disk]
    for image_id, jpeg in load_thumbnails(tables.work, tables.prefixes, missing).items():
        write_file_atomically(folder / THUMBNAILS_DIR / f"{image_id}.jpg", jpeg)
        on_disk.add(image_id)
    if wanted and not on_disk.intersection(wanted):
        log.warning("no thumbnails in %s (extracted with thumbnail_size=0, or your own features): the gallery shows locations only", tables.work.location)
    pages = render_pages(title, description, cards, page_size, on_disk, stem)
    for name, text in pages:
        write_file_atomically(folder / name, text.encode("utf-8"))
    log.info("wrote %s (%d page%s, %d rows)", folder / pages[0][0], len(pages), "s" * (len(pages) > 1), len(cards))
    return folder / pages[0][0]


def _limit(table: pl.DataFrame, num_images: int | None) -> pl.DataFrame:
    return table if num_images is None else table.head(num_images)


def _component_caption(sizes: dict[int, tuple[int, int]], image_id: int | None) -> list[str]:
    if image_id is None or image_id not in sizes:
        return []
    component, count = sizes[image_id]
    return [f"component {component} ({count} image{'s' * (count != 1)})"]


def _id(value) -> int | None:
    return None if value is None else int(value)


def create_duplicates_gallery(work_dir, save_path, num_images: int | None = None, page_size: int = DEFAULT_PAGE_SIZE) -> Path:
    """Pairs of similarity.csv side by side, most similar first, with their similarity
    and the size of the component each image is in."""
    tables = RunTables(work_dir)
    pairs = _limit(tables.with_ids(tables.table(outputs.SIMILARITY_FILE)).sort("distance", descending=True, maintain_order=True), num_images)
    sizes = tables.component_sizes()
    cards = [
        Card(
            heading=f"similarity {distance:.4f}",
            facts=[f"pair {rank} of {pairs.height}"],
            tiles=[
                Tile(_id(a_id), a, _component_caption(sizes, _id(a_id))),
                Tile(_id(b_id), b, _component_caption(sizes, _id(b_id))),
            ],
        )
        for rank, (a, b, distance, a_id, b_id) in enumerate(pairs.select("from", "to", "distance", "from_id", "to_id").iter_rows(), start=1)
    ]
    return write_gallery(tables, save_path, "duplicates", "Duplicates", "Image pairs at or above the run's threshold, most similar first.", cards, page_size)


def create_outliers_gallery(work_dir, save_path, num_images: int | None = None, page_size: int = DEFAULT_PAGE_SIZE) -> Path:
    """Images of outliers.csv, most outlying first, each beside its nearest neighbour."""
    tables = RunTables(work_dir)
    rows = tables.with_ids(tables.table(outputs.OUTLIERS_FILE))
    # One card per outlier: its least similar kNN edge decides how far out it is.
    rows = rows.sort("distance", maintain_order=True).unique("from", keep="first", maintain_order=True)
    rows = _limit(rows, num_images)
    sizes = tables.component_sizes()
    cards = [
        Card(
            heading=f"outlier {rank}: similarity to its neighbour {distance:.4f}",
            facts=_component_caption(sizes, _id(a_id)),
            tiles=[Tile(_id(a_id), a, ["outlier"]), Tile(_id(b_id), b, ["nearest neighbour"])],
        )
        for rank, (a, b, distance, a_id, b_id) in enumerate(rows.select("from", "to", "distance", "from_id", "to_id").iter_rows(), start=1)
    ]
    return write_gallery(tables, save_path, "outliers", "Outliers", "Images least similar to their nearest neighbours, most outlying first.", cards, page_size)


def create_components_gallery(work_dir, save_path, num_images: int | None = None, max_items: int = 12, min_size: int = 2, page_size: int = DEFAULT_PAGE_SIZE) -> Path:
    """Components of two or more images, largest first; up to ``max_items`` members each,
    highest pagerank first."""
    tables = RunTables(work_dir)
    info = _limit(tables.table(outputs.COMPONENT_INFO_FILE).filter(pl.col("Count") >= min_size), num_images)
    members = tables.table(outputs.CONNECTED_COMPONENTS_FILE).join(info.select("component_id"), on="component_id", how="semi")
    members = members.sort(["component_id", "pagerank", "__id"], descending=[False, True, False]).join(tables.names, on="__id", how="left", maintain_order="left")
    by_component = {key[0]: group for key, group in members.group_by("component_id", maintain_order=True)}
    cards = []
    for component, count in info.select("component_id", "Count").iter_rows():
        group = by_component[component].head(max_items)
        tiles = [Tile(int(i), name, [f"pagerank {rank:.4f}"]) for i, name, rank in group.select("__id", "filename", "pagerank").iter_rows()]
        shown = f"showing {len(tiles)}" if len(tiles) < count else "all shown"
        cards.append(Card(heading=f"component {component}: {count} images", facts=[shown], tiles=tiles))
    return write_gallery(tables, save_path, "components", "Components", f"Groups of images joined by similarity at or above ccthreshold, at least {min_size} images, largest first.", cards, page_size)


def create_stats_gallery(work_dir, save_path, metric: str = "blur", ascending: bool = True, num_images: int | None = 100, page_size: int = DEFAULT_PAGE_SIZE, per_card: int = 10) -> Path:
    """Images sorted by one statistic of stats.csv (blur, mean, width, unique_colors, ...)."""
    tables = RunTables(work_dir)
    stats = tables.table(outputs.STATS_PARQUET)
    if metric not in stats.columns or metric in ("__id", "filename"):
        usable = [c for c in stats.columns if c not in ("__id", "filename")]
        raise ValueError(f"unknown statistic {metric!r}; stats.csv has {', '.join(usable)}")
    rows = _limit(stats.sort([metric, "__id"], descending=[not ascending, False]), num_images)
    flags = [c for c in stats.columns if c.startswith("is_")]
    tiles = []
    for row in rows.iter_rows(named=True):
        captions = [f"{metric} {_number(row[metric])}", f"{row['width']:.0f}x{row['height']:.0f}"]
        captions += [flag[3:].replace("_", " ") for flag in flags if row[flag]]
        tiles.append(Tile(int(row["__id"]), row["filename"], captions))
    order = "lowest" if ascending else "highest"
    cards = [
        Card(heading=f"{order} {metric}: images {start + 1}-{start + len(chunk)}", facts=[], tiles=chunk)
        for start in range(0, len(tiles), per_card)
        for chunk in [tiles[start : start + per_card]]
    ]
    return write_gallery(tables, save_path, f"stats_{metric}", f"Statistics: {metric}", f"Images by {metric}, {order} first.", cards, page_size)


def create_similarity_gallery(work_dir, save_path, num_images: int | None = None, max_items: int = 10, page_size: int = DEFAULT_PAGE_SIZE) -> Path:
    """Each image with similar ones (similarity.csv, both directions), most similar first;
    images with the closest match come first."""
    tables = RunTables(work_dir)
    pairs = tables.with_ids(tables.table(outputs.SIMILARITY_FILE))
    both = pl.concat(
        [
            pairs.select(pl.col("from").alias("query"), pl.col("from_id").alias("query_id"), pl.col("to").alias("match"), pl.col("to_id").alias("match_id"), "distance"),
            pairs.select(pl.col("to").alias("query"), pl.col("to_id").alias("query_id"), pl.col("from").alias("match"), pl.col("from_id").alias("match_id"), "distance"),
        ]
    ).sort(["distance", "query", "match"], descending=[True, False, False])
    queries = _limit(both.unique("query", keep="first", maintain_order=True), num_images)
    groups = {key[0]: group for key, group in both.join(queries.select("query"), on="query", how="semi").group_by("query", maintain_order=True)}
    cards = []
    for query, query_id in queries.select("query", "query_id").iter_rows():
        group = groups[query]
        tiles = [Tile(_id(query_id), query, ["query"])]
        tiles += [Tile(_id(i), name, [f"similarity {d:.4f}"]) for name, i, d in group.head(max_items).select("match", "match_id", "distance").iter_rows()]
        cards.append(Card(heading=f"{group.height} similar image{'s' * (group.height != 1)}", facts=[], tiles=tiles))
    return write_gallery(tables, save_path, "similarity", "Similar images", "Each image followed by the images most similar to it.", cards, page_size)


def _number(value) -> str:
    if isinstance(value, (int, np.integer)) or float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.2f}"

"""HTML galleries over a finished run, with fastdup's function names.

Each gallery reads only the run's outputs (similarity.csv, outliers.csv, the component
tables, stats.parquet) and the thumbnails that extraction stored per shard, so it works
the same for loose files, members of tars and images on S3: nothing is re-read from the
dataset. A gallery is a folder: ``<name>.html`` (plus ``<name>_2.html``, ... when the
rows do not fit one page) and ``thumbnails/<hash of its bytes>.jpg`` beside it, so the
pages open offline and galleries of several runs can share a folder. Every text shown is
HTML-escaped.

As in fastdup, ``work_dir`` may also name one table (``work/similarity.csv``, or a
filtered copy of it in the work dir): the gallery shows that table. A ``test_results``
folder of run_mode 3 or 4 works too: its ``from`` images are the test set's, its ``to``
images the train run's.

The pure part is :func:`render_pages` (cards in, HTML pages out); the gallery functions
pick the cards from the run's tables.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from fastdup_ray import layout
from fastdup_ray.errors import InputError
from fastdup_ray.features import FEATURES_FILE, NAMES_SUFFIX, list_shards, load_names, load_thumbnails, read_filenames
from fastdup_ray.storage import is_remote
from fastdup_ray.workdir import WorkDir, write_file_atomically

log = logging.getLogger("fastdup_ray")

THUMBNAILS_DIR = "thumbnails"
DEFAULT_PAGE_SIZE = 50
# run_mode 3 and 4 write their tables to <work_dir>/test_results with this file beside
# them: {"train_work_dir": ..., "test_features": ...}.
TABLE_SUFFIXES = (".csv", ".parquet")
# Bare features without shards (save_binary_feature's or fastdup's; fastdup 0.x's name).
BARE_FEATURES = (FEATURES_FILE, "atrain_features.dat")
PAIR_COLUMNS = ("from", "to", "distance")
MEMBER_COLUMNS = ("__id", "component_id", "pagerank")
INFO_COLUMNS = ("component_id", "Count")
STATS_COLUMNS = ("__id", "filename", "width", "height")


def open_folder(location: str) -> WorkDir:
    """A WorkDir over an existing folder; a missing local one is an error, not created."""
    if not is_remote(location) and not os.path.isdir(location):
        raise InputError(f"no finished run in {location}: no such folder")
    return WorkDir(location)


class ImageSource:
    """Names and thumbnails of one set of features: a run's finished shards, or bare
    ``features.dat`` + ``features.dat.csv`` (names only, no thumbnails). Compared by
    identity: galleries group tiles by the source their ids belong to."""

    def __init__(self, work: WorkDir, label: str = "", bare: str | None = None) -> None:
        self.work = work
        self.label = label  # a caption line for its tiles when a gallery shows two sources
        self.prefixes = [] if bare else list_shards(work)
        self.bare = bare if bare or self.prefixes else next((name for name in BARE_FEATURES if work.exists(name + NAMES_SUFFIX)), None)
        if not self.prefixes and self.bare is None:
            raise InputError(f"no finished run in {work.location}: no features shards found")
        self._names: pl.DataFrame | None = None

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
            names = load_names(self.work, self.prefixes) if self.prefixes else read_filenames(self.work.local_copy(self.bare + NAMES_SUFFIX))
            self._names = pl.DataFrame({"filename": pl.Series(names, dtype=pl.String)}).with_row_index("__id").with_columns(pl.col("__id").cast(pl.Int64))
        return self._names

    def thumbnails(self, ids: Sequence[int]) -> dict[int, bytes]:
        return load_thumbnails(self.work, self.prefixes, list(ids)) if self.prefixes else {}


def split_table_path(work_dir: str | os.PathLike | WorkDir) -> tuple[str | WorkDir, str | None]:
    """(folder, table file name or None) of a work dir or of one table inside it."""
    if isinstance(work_dir, WorkDir):
        return work_dir, None
    location = os.fspath(work_dir)
    if location.endswith(TABLE_SUFFIXES) and not os.path.isdir(location):
        folder, _, name = location.rpartition("/")
        return folder or ".", name
    return location, None


@dataclass
class Tile:
    """One image on a card: its row id in ``source``, its location and caption lines."""

    image_id: int | None
    location: str
    captions: list[str] = field(default_factory=list)
    source: ImageSource | None = None
    thumbnail: str | None = None  # file name under thumbnails/, set when the gallery is written


@dataclass
class Card:
    """One row of a gallery: a heading, facts about the row, and its images side by side."""

    heading: str
    facts: list[str]
    tiles: list[Tile]


class RunTables:
    """The tables of a finished run, or of a test run's results, and the images they name.

    ``from_images`` names the images of a pair table's ``from`` column, ``to_images``
    those of ``to``: one source for a run, the test features and the train run for a
    test_results folder. ``chosen`` is the table file the user named, if any."""

    def __init__(self, work_dir: str | os.PathLike | WorkDir) -> None:
        folder, self.chosen = split_table_path(work_dir)
        self.work = folder if isinstance(folder, WorkDir) else open_folder(folder)
        test_run = self._test_run()
        if test_run is None:
            self.from_images = self.to_images = ImageSource(self.work)
        else:
            self.from_images = ImageSource.at(test_run["test_features"], "test image")
            self.to_images = ImageSource.at(test_run["train_work_dir"], "train image")

    def _test_run(self) -> dict | None:
        if not self.work.exists(layout.TEST_RUN_FILE):
            return None
        try:
            test_run = json.loads(self.work.read_bytes(layout.TEST_RUN_FILE))
            return {key: str(test_run[key]) for key in ("train_work_dir", "test_features")}
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{self.work.path(layout.TEST_RUN_FILE)} must be JSON naming train_work_dir and test_features") from None

    @property
    def is_test_run(self) -> bool:
        return self.from_images is not self.to_images

    def single_run(self, report: str) -> ImageSource:
        """The run's images; a test run's results have no components or statistics."""
        if self.is_test_run:
            raise InputError(f"{self.work.location} holds a test run's results (test_results): make the {report} from the train work dir {self.to_images.work.location} instead")
        return self.from_images

    @property
    def names(self) -> pl.DataFrame:
        return self.single_run("report").names

    @property
    def prefixes(self) -> list[str]:
        images = self.single_run("report")
        if not images.prefixes:
            raise InputError(f"{self.work.location} holds bare {images.bare} features, not the shards of a run")
        return images.prefixes

    def table(self, name: str, columns: Sequence[str] = ()) -> pl.DataFrame:
        """A table of the folder (csv or parquet), checked to have ``columns``."""
        if not self.work.exists(name):
            hint = "no such file" if name == self.chosen else "run fastdup-ray on this work dir first (run_mode 0 or 2)"
            raise InputError(f"{self.work.path(name)} is missing: {hint}")
        data = io.BytesIO(self.work.read_bytes(name))
        try:
            table = pl.read_parquet(data) if name.endswith(".parquet") else pl.read_csv(data, schema_overrides={"from": pl.String, "to": pl.String, "filename": pl.String})
        except pl.exceptions.PolarsError as exc:
            raise InputError(f"cannot read {self.work.path(name)}: {str(exc).splitlines()[0]}") from None
        missing = [column for column in columns if column not in table.columns]
        if missing:
            raise InputError(f"{self.work.path(name)} has no column {', '.join(missing)} (it has {', '.join(table.columns)})")
        return table

    def tables_for(self, roles: dict[str, Sequence[str]]) -> list[pl.DataFrame]:
        """The tables a gallery reads (run file name -> columns it needs), in order; the
        table the user named takes the place of the first one whose columns it has."""
        replaced = None
        if self.chosen is not None:
            chosen = self.table(self.chosen)
            replaced = next((name for name, columns in roles.items() if set(columns) <= set(chosen.columns)), None)
            if replaced is None:
                wanted = " or ".join(",".join(columns) for columns in roles.values())
                raise InputError(f"{self.work.path(self.chosen)} has columns {','.join(chosen.columns)}; this gallery reads {wanted}")
        return [chosen if name == replaced else self.table(name, columns) for name, columns in roles.items()]

    def table_for(self, name: str, columns: Sequence[str]) -> pl.DataFrame:
        return self.tables_for({name: columns})[0]

    def with_ids(self, pairs: pl.DataFrame) -> pl.DataFrame:
        """A from,to,distance table with ``from_id`` and ``to_id`` joined on."""
        from_ids = self.from_images.names.rename({"filename": "from", "__id": "from_id"})
        to_ids = self.to_images.names.rename({"filename": "to", "__id": "to_id"})
        pairs = pairs.join(from_ids, on="from", how="left", maintain_order="left")
        return pairs.join(to_ids, on="to", how="left", maintain_order="left")

    def component_sizes(self) -> dict[int, tuple[int, int]]:
        """__id -> (component_id, images in it); empty when the run wrote no components
        (or for a test run, whose ids belong to two sources)."""
        if self.is_test_run or not (self.work.exists(layout.CONNECTED_COMPONENTS_FILE) and self.work.exists(layout.COMPONENT_INFO_FILE)):
            return {}
        members = self.table(layout.CONNECTED_COMPONENTS_FILE).select("__id", "component_id")
        sizes = members.join(self.table(layout.COMPONENT_INFO_FILE).select("component_id", "Count"), on="component_id", how="left")
        return {i: (c, n) for i, c, n in sizes.iter_rows()}


def render_pages(title: str, description: str, cards: list[Card], page_size: int, stem: str) -> list[tuple[str, str]]:
    """(file name, HTML) of each page; a tile with a ``thumbnail`` shows
    ``thumbnails/<thumbnail>``, the others a labelled empty box."""
    pages = max(1, math.ceil(len(cards) / page_size))
    names = [f"{stem}.html" if page == 0 else f"{stem}_{page + 1}.html" for page in range(pages)]
    rendered = []
    for page in range(pages):
        chunk = cards[page * page_size : (page + 1) * page_size]
        nav = _navigation(names, page)
        body = "\n".join(_render_card(card) for card in chunk) or '<p class="empty">Nothing to show: the run found no rows for this gallery.</p>'
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


def _render_card(card: Card) -> str:
    tiles = []
    for tile in card.tiles:
        caption = "".join(f"<div>{html.escape(line)}</div>" for line in tile.captions)
        location = html.escape(tile.location)
        if tile.thumbnail is not None:
            picture = f'<img src="{THUMBNAILS_DIR}/{html.escape(tile.thumbnail)}" alt="{location}">'
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
    tiles = [tile for card in cards for tile in card.tiles if tile.source is not None and tile.image_id is not None]
    if tiles and not write_thumbnails(folder / THUMBNAILS_DIR, tiles):
        log.warning("no thumbnails in %s (extracted with thumbnail_size=0, or your own features): the gallery shows locations only", tables.work.location)
    pages = render_pages(title, description, cards, page_size, stem)
    for name, text in pages:
        write_file_atomically(folder / name, text.encode("utf-8"))
    log.info("wrote %s (%d page%s, %d rows)", folder / pages[0][0], len(pages), "s" * (len(pages) > 1), len(cards))
    return folder / pages[0][0]


def write_thumbnails(folder: Path, tiles: list[Tile]) -> int:
    """Set each tile's ``thumbnail`` to the one its source stored for it, saved under a
    name made from its bytes, so a folder shared by the galleries of several runs never
    shows one run's picture for another's image. Returns how many tiles got one."""
    wanted: dict[ImageSource, set[int]] = {}
    for tile in tiles:
        wanted.setdefault(tile.source, set()).add(tile.image_id)
    files: dict[tuple[ImageSource, int], str] = {}
    for source, ids in wanted.items():
        for image_id, jpeg in source.thumbnails(sorted(ids)).items():
            name = f"{hashlib.sha256(jpeg).hexdigest()[:32]}.jpg"
            if not (folder / name).exists():  # the same name is the same bytes
                write_file_atomically(folder / name, jpeg)
            files[(source, image_id)] = name
    for tile in tiles:
        tile.thumbnail = files.get((tile.source, tile.image_id))
    return sum(tile.thumbnail is not None for tile in tiles)


def _limit(table: pl.DataFrame, num_images: int | None) -> pl.DataFrame:
    return table if num_images is None else table.head(num_images)


def _component_caption(sizes: dict[int, tuple[int, int]], image_id: int | None) -> list[str]:
    if image_id is None or image_id not in sizes:
        return []
    component, count = sizes[image_id]
    return [f"component {component} ({count} image{'s' * (count != 1)})"]


def _id(value) -> int | None:
    return None if value is None else int(value)


def _tile(source: ImageSource, image_id, location: str, captions: list[str]) -> Tile:
    """A tile of one of ``source``'s images, captioned with the set it is from when a
    gallery shows two (a test run's test and train images)."""
    return Tile(_id(image_id), location, [source.label, *captions] if source.label else captions, source)


def create_duplicates_gallery(work_dir, save_path, num_images: int | None = None, page_size: int = DEFAULT_PAGE_SIZE) -> Path:
    """Pairs of similarity.csv side by side, most similar first, with their similarity
    and the size of the component each image is in."""
    tables = RunTables(work_dir)
    pairs = tables.with_ids(tables.table_for(layout.SIMILARITY_FILE, PAIR_COLUMNS))
    pairs = _limit(pairs.sort("distance", descending=True, maintain_order=True), num_images)
    sizes = tables.component_sizes()
    cards = [
        Card(
            heading=f"similarity {distance:.4f}",
            facts=[f"pair {rank} of {pairs.height}"],
            tiles=[
                _tile(tables.from_images, a_id, a, _component_caption(sizes, _id(a_id))),
                _tile(tables.to_images, b_id, b, _component_caption(sizes, _id(b_id))),
            ],
        )
        for rank, (a, b, distance, a_id, b_id) in enumerate(pairs.select("from", "to", "distance", "from_id", "to_id").iter_rows(), start=1)
    ]
    return write_gallery(tables, save_path, "duplicates", "Duplicates", "Image pairs at or above the run's threshold, most similar first.", cards, page_size)


def create_outliers_gallery(work_dir, save_path, num_images: int | None = None, page_size: int = DEFAULT_PAGE_SIZE) -> Path:
    """Images of outliers.csv, most outlying first, each beside its nearest neighbour."""
    tables = RunTables(work_dir)
    rows = tables.with_ids(tables.table_for(layout.OUTLIERS_FILE, PAIR_COLUMNS))
    # One card per outlier: its least similar kNN edge decides how far out it is.
    rows = rows.sort("distance", maintain_order=True).unique("from", keep="first", maintain_order=True)
    rows = _limit(rows, num_images)
    sizes = tables.component_sizes()
    cards = [
        Card(
            heading=f"outlier {rank}: similarity to its neighbour {distance:.4f}",
            facts=_component_caption(sizes, _id(a_id)),
            tiles=[_tile(tables.from_images, a_id, a, ["outlier"]), _tile(tables.to_images, b_id, b, ["nearest neighbour"])],
        )
        for rank, (a, b, distance, a_id, b_id) in enumerate(rows.select("from", "to", "distance", "from_id", "to_id").iter_rows(), start=1)
    ]
    return write_gallery(tables, save_path, "outliers", "Outliers", "Images least similar to their nearest neighbours, most outlying first.", cards, page_size)


def create_components_gallery(work_dir, save_path, num_images: int | None = None, max_items: int = 12, min_size: int = 2, page_size: int = DEFAULT_PAGE_SIZE) -> Path:
    """Components of two or more images, largest first; up to ``max_items`` members each,
    highest pagerank first."""
    tables = RunTables(work_dir)
    images = tables.single_run("components gallery")
    members, info = tables.tables_for({layout.CONNECTED_COMPONENTS_FILE: MEMBER_COLUMNS, layout.COMPONENT_INFO_FILE: INFO_COLUMNS})
    # Either table may be a user's filtered copy: show the components both still hold.
    info = info.filter(pl.col("Count") >= min_size).join(members.select("component_id"), on="component_id", how="semi", maintain_order="left")
    info = _limit(info, num_images)
    members = members.select(MEMBER_COLUMNS).join(info.select("component_id"), on="component_id", how="semi")
    members = members.sort(["component_id", "pagerank", "__id"], descending=[False, True, False]).join(images.names, on="__id", how="left", maintain_order="left")
    by_component = {key[0]: group for key, group in members.group_by("component_id", maintain_order=True)}
    cards = []
    for component, count in info.select("component_id", "Count").iter_rows():
        group = by_component[component].head(max_items)
        tiles = [_tile(images, i, name, [f"pagerank {rank:.4f}"]) for i, name, rank in group.select("__id", "filename", "pagerank").iter_rows()]
        shown = f"showing {len(tiles)}" if len(tiles) < count else "all shown"
        cards.append(Card(heading=f"component {component}: {count} images", facts=[shown], tiles=tiles))
    return write_gallery(tables, save_path, "components", "Components", f"Groups of images joined by similarity at or above ccthreshold, at least {min_size} images, largest first.", cards, page_size)


def create_stats_gallery(work_dir, save_path, metric: str = "blur", ascending: bool = True, num_images: int | None = 100, page_size: int = DEFAULT_PAGE_SIZE, per_card: int = 10) -> Path:
    """Images sorted by one statistic of stats.csv (blur, mean, width, unique_colors, ...)."""
    tables = RunTables(work_dir)
    images = tables.single_run("statistics gallery")
    stats = tables.table_for(layout.STATS_PARQUET, STATS_COLUMNS)
    if metric not in stats.columns or metric in ("__id", "filename"):
        usable = [c for c in stats.columns if c not in ("__id", "filename")]
        raise ValueError(f"unknown statistic {metric!r}; stats.csv has {', '.join(usable)}")
    rows = _limit(stats.sort([metric, "__id"], descending=[not ascending, False]), num_images)
    flags = [c for c in stats.columns if c.startswith("is_")]
    tiles = []
    for row in rows.iter_rows(named=True):
        captions = [f"{metric} {_number(row[metric])}", f"{row['width']:.0f}x{row['height']:.0f}"]
        captions += [flag[3:].replace("_", " ") for flag in flags if row[flag]]
        tiles.append(_tile(images, row["__id"], row["filename"], captions))
    order = "lowest" if ascending else "highest"
    cards = [
        Card(heading=f"{order} {metric}: images {start + 1}-{start + len(chunk)}", facts=[], tiles=chunk)
        for start in range(0, len(tiles), per_card)
        for chunk in [tiles[start : start + per_card]]
    ]
    return write_gallery(tables, save_path, f"stats_{metric}", f"Statistics: {metric}", f"Images by {metric}, {order} first.", cards, page_size)


def create_similarity_gallery(work_dir, save_path, num_images: int | None = None, max_items: int = 10, page_size: int = DEFAULT_PAGE_SIZE) -> Path:
    """Each image with similar ones (similarity.csv, both directions), most similar first;
    images with the closest match come first. A test run's queries are its test images."""
    tables = RunTables(work_dir)
    pairs = tables.with_ids(tables.table_for(layout.SIMILARITY_FILE, PAIR_COLUMNS))
    forward = pairs.select(pl.col("from").alias("query"), pl.col("from_id").alias("query_id"), pl.col("to").alias("match"), pl.col("to_id").alias("match_id"), "distance")
    backward = pairs.select(pl.col("to").alias("query"), pl.col("to_id").alias("query_id"), pl.col("from").alias("match"), pl.col("from_id").alias("match_id"), "distance")
    # Within one run both columns name the same images, so a pair counts both ways.
    both = pl.concat([forward] if tables.is_test_run else [forward, backward]).sort(["distance", "query", "match"], descending=[True, False, False])
    queries = _limit(both.unique("query", keep="first", maintain_order=True), num_images)
    groups = {key[0]: group for key, group in both.join(queries.select("query"), on="query", how="semi").group_by("query", maintain_order=True)}
    cards = []
    for query, query_id in queries.select("query", "query_id").iter_rows():
        group = groups[query]
        tiles = [_tile(tables.from_images, query_id, query, ["query"])]
        tiles += [_tile(tables.to_images, i, name, [f"similarity {d:.4f}"]) for name, i, d in group.head(max_items).select("match", "match_id", "distance").iter_rows()]
        cards.append(Card(heading=f"{group.height} similar image{'s' * (group.height != 1)}", facts=[], tiles=tiles))
    return write_gallery(tables, save_path, "similarity", "Similar images", "Each image followed by the images most similar to it.", cards, page_size)


def _number(value) -> str:
    if isinstance(value, (int, np.integer)) or float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.2f}"

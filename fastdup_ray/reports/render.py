"""HTML of the galleries and of their index, from Jinja2 templates with autoescape on, so
every file name, label and fact shown is escaped (a member named ``<script>...`` shows as
text).

A gallery is a folder: ``<stem>.html`` (plus ``<stem>_2.html``, ... when the cards do not
fit one page) and ``thumbnails/<hash of its bytes>.jpg`` beside it, so the pages open
offline and galleries of several runs can share a folder. The pure part is
:func:`render_pages` (cards in, HTML out); :func:`write_gallery` also writes the
thumbnails the cards show.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from PIL import Image, ImageOps

from fastdup_ray.errors import ConfigError
from fastdup_ray.reports.options import Look
from fastdup_ray.rundir.workdir import write_file_atomically

log = logging.getLogger("fastdup_ray")

THUMBNAILS_DIR = "thumbnails"
INDEX_PAGE = "index.html"
DEFAULT_PAGE_SIZE = 50
# Longest side of an image on a card, in CSS pixels: large enough to judge a pair by.
DEFAULT_TILE_SIZE = 256
# What a browser shows itself; other originals (TIFF, HEIC, ...) open as the stored view.
BROWSER_IMAGES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".avif", ".svg")

ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("fastdup_ray.reports", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass
class Tile:
    """One image on a card: its row id in ``source``, its location, caption lines and,
    for duplicates, whether ``dedup`` keeps it ('keep' or 'remove')."""

    image_id: int | None
    location: str
    captions: list[str] = field(default_factory=list)
    source: object | None = None  # tables.ImageSource; identity groups thumbnail reads
    marker: str | None = None
    marker_text: str = ""
    thumbnail: str | None = None  # file name under thumbnails/, set when written
    width: int = 0  # shown size, set from the thumbnail when written
    height: int = 0
    link: str | None = None  # what a click opens, set when written


@dataclass
class Card:
    """One row of a gallery: a heading, facts about the row, and its images. A 'pair'
    card sits beside others in the grid; a 'wide' one takes a whole row."""

    heading: str
    facts: list[str]
    tiles: list[Tile]
    layout: str = "pair"


@dataclass
class Gallery:
    """What one gallery shows: its cards, and when there are none, why and what to change."""

    stem: str
    title: str
    description: str
    cards: list[Card]
    empty: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def filename(self) -> str:
        return f"{self.stem}.html"


def page_names(stem: str, pages: int) -> list[str]:
    return [f"{stem}.html" if page == 0 else f"{stem}_{page + 1}.html" for page in range(pages)]


def render_pages(
    gallery: Gallery,
    page_size: int = DEFAULT_PAGE_SIZE,
    tile_size: int = DEFAULT_TILE_SIZE,
    index_link: bool = False,
) -> list[tuple[str, str]]:
    """(file name, HTML) of each page of ``gallery``; a tile with a ``thumbnail`` shows
    ``thumbnails/<thumbnail>``, the others a labelled empty box."""
    if page_size < 1:
        raise ConfigError(f"page_size must be at least 1, got {page_size}")
    names = page_names(gallery.stem, max(1, math.ceil(len(gallery.cards) / page_size)))
    template = ENVIRONMENT.get_template("gallery.html")
    pages = []
    for page, name in enumerate(names):
        chunk = gallery.cards[page * page_size : (page + 1) * page_size]
        pages.append(
            (
                name,
                template.render(
                    gallery=gallery,
                    cards=chunk,
                    first=page * page_size + 1 if chunk else 0,
                    last=page * page_size + len(chunk),
                    page=page,
                    names=names,
                    tile_size=tile_size,
                    index_link=index_link,
                    image_src=lambda tile: f"{THUMBNAILS_DIR}/{tile.thumbnail}" if tile.thumbnail else None,
                    open_link=lambda tile: tile.link,
                ),
            )
        )
    return pages


def render_inline(gallery: Gallery, folder: Path, page_size: int, tile_size: int) -> str:
    """The first page's cards as one HTML fragment with the thumbnails inside it (data
    URIs): a notebook shows it without serving the gallery's folder."""

    def image_src(tile: Tile) -> str | None:
        if not tile.thumbnail:
            return None
        data = (folder / THUMBNAILS_DIR / tile.thumbnail).read_bytes()
        return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")

    def open_link(tile: Tile) -> str | None:
        # A stored view is relative to the gallery's folder, which a notebook does not serve.
        return None if tile.link is None or tile.link.startswith(THUMBNAILS_DIR + "/") else tile.link

    page = folder / gallery.filename
    return ENVIRONMENT.get_template("inline.html").render(
        gallery=gallery,
        cards=gallery.cards[:page_size],
        total=len(gallery.cards),
        page=page,
        tile_size=tile_size,
        image_src=image_src,
        open_link=open_link,
    )


def render_index(summary: list[tuple[str, str]], galleries: list[dict], parameters: dict, title: str) -> str:
    """index.html: the run's summary, a line per gallery (a link, or why it is empty or
    missing), and the run's parameters."""
    return ENVIRONMENT.get_template("index.html").render(
        summary=summary, galleries=galleries, parameters=parameters, title=title, tile_size=DEFAULT_TILE_SIZE
    )


def write_gallery(
    gallery: Gallery,
    save_path: str | os.PathLike,
    page_size: int = DEFAULT_PAGE_SIZE,
    tile_size: int = DEFAULT_TILE_SIZE,
    index_link: bool = False,
    look: Look = Look(),
    save_artifacts: bool = False,
    saved: SavedThumbnails | None = None,
) -> Path:
    """Write the pages and the thumbnails they show, drawn as ``look`` says; with
    ``save_artifacts`` (fastdup's name) also ``<stem>_artifacts.csv``, a row per image
    shown. ``saved``: the thumbnails earlier galleries saved in ``save_path``, kept up
    to date (see write_thumbnails). Returns the first page's path."""
    if page_size < 1:
        raise ConfigError(f"page_size must be at least 1, got {page_size}")
    if tile_size < 16:
        raise ConfigError(f"thumbnail_size must be at least 16 (CSS pixels), got {tile_size}")
    tile_size = look.tile_size(tile_size)
    folder = Path(save_path)
    (folder / THUMBNAILS_DIR).mkdir(parents=True, exist_ok=True)
    tiles = [tile for card in gallery.cards for tile in card.tiles]
    shown = [tile for tile in tiles if tile.source is not None and tile.image_id is not None]
    if shown and not write_thumbnails(folder / THUMBNAILS_DIR, shown, tile_size, look, saved):
        log.warning(
            "no thumbnails for %s (extracted with thumbnail_size=0 or from your own features, "
            "and its images are not files of their own, or could not be read): it shows locations only",
            gallery.title,
        )
    for tile in tiles:
        tile.link = link_of(tile)
    pages = render_pages(gallery, page_size, tile_size, index_link)
    for name, text in pages:
        write_file_atomically(folder / name, text.encode("utf-8"))
    if save_artifacts:
        write_file_atomically(
            folder / f"{gallery.stem}_artifacts.csv", artifacts_csv(gallery).encode("utf-8")
        )
    log.info(
        "wrote %s (%d page%s, %d cards)",
        folder / pages[0][0],
        len(pages),
        "s" * (len(pages) > 1),
        len(gallery.cards),
    )
    return folder / pages[0][0]


def link_of(tile: Tile) -> str | None:
    """What a click on the image opens: the original when it is a local file a browser
    can show, else the stored thumbnail on its own (tars, S3, video frames)."""
    location = tile.location
    if (
        "://" not in location
        and location.lower().endswith(BROWSER_IMAGES)
        and os.path.isfile(location)
        and os.access(location, os.R_OK)
    ):
        return Path(location).resolve().as_uri()
    return f"{THUMBNAILS_DIR}/{tile.thumbnail}" if tile.thumbnail else None


def artifacts_csv(gallery: Gallery) -> str:
    """A row per image shown: its card, the card's heading, the file and its captions."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["card", "heading", "filename", "captions"])
    for number, card in enumerate(gallery.cards, start=1):
        for tile in card.tiles:
            writer.writerow([number, card.heading, tile.location, " | ".join(tile.captions)])
    return out.getvalue()


def enhanced(jpeg: bytes) -> bytes:
    """fastdup's enhance_image: the picture in grey, its histogram equalised."""
    with Image.open(io.BytesIO(jpeg)) as picture:
        grey = ImageOps.equalize(ImageOps.grayscale(picture))
    out = io.BytesIO()
    grey.save(out, format="JPEG", quality=90)
    return out.getvalue()


# Thumbnails already saved in a galleries folder: (source, image id, boxed, enhanced) ->
# (file name, size). The galleries create_galleries writes together show many of the same
# images; each gallery would otherwise read them from the run again.
SavedThumbnails = dict[tuple[object, int, bool, bool], tuple[str, tuple[int, int]]]


def write_thumbnails(
    folder: Path, tiles: list[Tile], tile_size: int, look: Look = Look(), saved: SavedThumbnails | None = None
) -> int:
    """Set each tile's ``thumbnail`` to the one its source stored for it (enhanced when
    ``look`` says), saved under a name made from its bytes, so a folder shared by the
    galleries of several runs never shows one run's picture for another's image; and its
    shown size, the thumbnail scaled to fit ``tile_size`` (a square of that size without
    ``keep_aspect_ratio``). Thumbnails in ``saved`` (this folder's) are not read again;
    those read are added to it. Returns how many tiles got one."""
    saved = {} if saved is None else saved

    def key(source, image_id) -> tuple[object, int, bool, bool]:
        return source, image_id, look.boxed, look.enhance_image

    wanted: dict[object, set[int]] = {}
    for tile in tiles:
        if key(tile.source, tile.image_id) not in saved:
            wanted.setdefault(tile.source, set()).add(tile.image_id)
    for source, ids in wanted.items():
        for image_id, jpeg in source.thumbnails(sorted(ids), boxed=look.boxed, size=tile_size).items():
            jpeg = enhanced(jpeg) if look.enhance_image else jpeg
            name = f"{hashlib.sha256(jpeg).hexdigest()[:32]}.jpg"
            if not (folder / name).exists():  # the same name is the same bytes
                write_file_atomically(folder / name, jpeg)
            with Image.open(io.BytesIO(jpeg)) as picture:  # reads the header only
                saved[key(source, image_id)] = (name, picture.size)
    for tile in tiles:
        name, (width, height) = saved.get(key(tile.source, tile.image_id), (None, (0, 0)))
        tile.thumbnail = name
        if name:
            # Thumbnails of older runs (128 px) are scaled up to the tile: a grid of one size.
            scale = tile_size / max(width, height)
            tile.width, tile.height = max(1, round(width * scale)), max(1, round(height * scale))
            if not look.keep_aspect_ratio:
                tile.width = tile.height = tile_size
    return sum(tile.thumbnail is not None for tile in tiles)

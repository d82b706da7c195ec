"""fastdup's gallery functions: ``create_duplicates_gallery`` and its siblings open the
run and write the pages of the cards galleries.py picks.

As in fastdup, their first argument is a work dir, one of its tables (a path), or a
DataFrame of a table's rows (frames.py), whose run ``work_dir=`` names.
"""

from __future__ import annotations

from pathlib import Path

from fastdup_ray.errors import ConfigError
from fastdup_ray.reports import frames
from fastdup_ray.reports.galleries import (
    DEFAULT_KEEP,
    components_cards,
    duplicates_cards,
    outliers_cards,
    similarity_cards,
    stats_cards,
)
from fastdup_ray.reports.render import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_TILE_SIZE,
    Gallery,
    write_gallery,
)
from fastdup_ray.reports.tables import RunTables, labels_of


def open_tables(data, kind: str, work_dir, annotations, param: str = "work_dir") -> RunTables:
    """The tables a create_*_gallery shows: of the run (or one table of it) at the path
    ``data``, else at ``work_dir``; or, for a DataFrame, of the run it comes from
    (``work_dir``, else looked up by its files: frames.py), with the frame in place."""
    labels = labels_of(annotations)
    if frames.is_frame(data):
        return frames.frame_tables(data, kind, work_dir, labels, param)
    location = data if data is not None else work_dir
    if location is None:
        raise ConfigError(
            f"a gallery needs a run: a work dir, one of its tables or a DataFrame first, or {param}="
        )
    return RunTables(location, labels)


def _written(gallery: Gallery, save_path, page_size: int, thumbnail_size: int) -> Path:
    if save_path is None:
        raise ConfigError("save_path is needed: the folder the gallery's pages and thumbnails go to")
    return write_gallery(gallery, save_path, page_size, thumbnail_size)


def create_duplicates_gallery(
    similarity_file=None,
    save_path=None,
    num_images: int | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    threshold: float | None = None,
    ascending: bool = False,
    keep: str | None = DEFAULT_KEEP,
    thumbnail_size: int = DEFAULT_TILE_SIZE,
    annotations=None,
    slice=None,
    work_dir=None,
) -> Path:
    """Pairs of similarity.csv side by side, most similar first, with each image's
    resolution, file size and component, and which one ``dedup --keep <keep>`` keeps
    (``keep=None``: no markers). ``similarity_file``: a work dir, a table of it, or a
    DataFrame of pairs (fd.similarity(), similarity.csv's rows) whose run is ``work_dir``.
    Returns the first page's path."""
    tables = open_tables(similarity_file, frames.PAIRS, work_dir, annotations)
    cards = duplicates_cards(tables, num_images, threshold, ascending, keep, slice)
    return _written(cards, save_path, page_size, thumbnail_size)


def create_outliers_gallery(
    outliers_file=None,
    save_path=None,
    num_images: int | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    ascending: bool = True,
    thumbnail_size: int = DEFAULT_TILE_SIZE,
    annotations=None,
    slice=None,
    work_dir=None,
) -> Path:
    """Images of outliers.csv, most outlying first, each beside its nearest neighbour.
    ``outliers_file``: a work dir, a table of it, or a DataFrame of outliers
    (fd.outliers(), outliers.csv's rows) whose run is ``work_dir``."""
    tables = open_tables(outliers_file, frames.OUTLIERS, work_dir, annotations)
    cards = outliers_cards(tables, num_images, ascending, slice)
    return _written(cards, save_path, page_size, thumbnail_size)


def create_components_gallery(
    work_dir=None,
    save_path=None,
    num_images: int | None = None,
    max_items: int = 12,
    min_size: int = 2,
    page_size: int = DEFAULT_PAGE_SIZE,
    ascending: bool = False,
    keep: str | None = DEFAULT_KEEP,
    thumbnail_size: int = DEFAULT_TILE_SIZE,
    annotations=None,
    slice=None,
    input_dir=None,
) -> Path:
    """Components of two or more images, largest first, with their size and similarity
    inside, up to ``max_items`` members each (highest pagerank first). ``work_dir``: a
    work dir, a table of it, or a DataFrame (fd.connected_components()'s frames,
    connected_components.csv's rows) whose run is ``input_dir``, as fastdup names it."""
    tables = open_tables(work_dir, frames.COMPONENTS, input_dir, annotations, param="input_dir")
    cards = components_cards(tables, num_images, max_items, min_size, ascending, keep, slice)
    return _written(cards, save_path, page_size, thumbnail_size)


def create_stats_gallery(
    stats_file=None,
    save_path=None,
    metric: str = "blur",
    ascending: bool | None = None,
    num_images: int | None = 100,
    page_size: int = DEFAULT_PAGE_SIZE,
    per_card: int = 10,
    thumbnail_size: int = DEFAULT_TILE_SIZE,
    annotations=None,
    slice=None,
    work_dir=None,
) -> Path:
    """Images sorted by one statistic of stats.csv (blur, mean, width, unique_colors, ...;
    fastdup's 'dark' and 'bright' too). ``stats_file``: a work dir, a table of it, or a
    DataFrame of images (fd.img_stats(), stats.csv's rows) whose run is ``work_dir``."""
    tables = open_tables(stats_file, frames.STATS, work_dir, annotations)
    cards = stats_cards(tables, metric, ascending, num_images, per_card, slice)
    return _written(cards, save_path, page_size, thumbnail_size)


def create_similarity_gallery(
    similarity_file=None,
    save_path=None,
    num_images: int | None = None,
    max_items: int = 10,
    page_size: int = DEFAULT_PAGE_SIZE,
    threshold: float | None = None,
    thumbnail_size: int = DEFAULT_TILE_SIZE,
    annotations=None,
    slice=None,
    work_dir=None,
) -> Path:
    """Each image followed by the images most similar to it, each pair once.
    ``similarity_file``: a work dir, a table of it, or a DataFrame of pairs whose run is
    ``work_dir``."""
    tables = open_tables(similarity_file, frames.PAIRS, work_dir, annotations)
    cards = similarity_cards(tables, num_images, max_items, threshold, slice)
    return _written(cards, save_path, page_size, thumbnail_size)

"""fastdup's gallery functions: ``create_duplicates_gallery`` and its siblings open the
run and write the pages of the cards galleries.py picks.

As in fastdup, their first argument is a work dir, one of its tables (a path), or a
DataFrame of a table's rows (frames.py), whose run ``work_dir=`` names.
"""

from __future__ import annotations

import io
from pathlib import Path

from fastdup_ray.errors import ConfigError
from fastdup_ray.reports import frames
from fastdup_ray.reports.components import components_cards, is_grouped
from fastdup_ray.reports.galleries import (
    DEFAULT_KEEP,
    duplicates_cards,
    outliers_cards,
    similarity_cards,
    stats_cards,
)
from fastdup_ray.reports.options import Look, boxed_view, check_options
from fastdup_ray.reports.render import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_TILE_SIZE,
    Gallery,
    write_gallery,
)
from fastdup_ray.reports.tables import RunTables, labels_of
from fastdup_ray.reports.tiles import label_view
from fastdup_ray.rundir.storage import is_remote


def open_tables(
    data, kind: str, work_dir, annotations, param: str = "work_dir", get_label_func=None
) -> RunTables:
    """The tables a create_*_gallery shows: of the run (or one table of it) at the path
    ``data``, else at ``work_dir``; or, for a DataFrame, of the run it comes from
    (``work_dir``, else looked up by its files: frames.py), with the frame in place.
    Labels: ``annotations``, or fastdup's ``get_label_func`` (a mapping file -> label, a
    frame with filename and label, or a function of a file name)."""
    if annotations is None and get_label_func is not None and not callable(get_label_func):
        annotations = get_label_func
    labels = labels_of(annotations)
    if frames.is_frame(data) and not (kind == frames.COMPONENTS and is_grouped(data)):
        tables = frames.frame_tables(data, kind, work_dir, labels, param)
    else:
        location = work_dir if frames.is_frame(data) or data is None else data
        if location is None:
            raise ConfigError(
                f"a gallery needs a run: a work dir, one of its tables or a DataFrame first, or {param}="
            )
        tables = RunTables(location, labels)
    if callable(get_label_func):
        names = tables.from_images.names["filename"].to_list()
        if tables.is_test_run:
            names += tables.to_images.names["filename"].to_list()
        tables.labels = {name: str(get_label_func(name)) for name in names}
    return tables


def _written(
    gallery: Gallery, save_path, tables: RunTables, options: dict, page_size: int, size: int
) -> Path:
    """Write the pages to ``save_path``, by default the run's galleries folder (as
    fd.vis does), drawn as fastdup's max_width, keep_aspect_ratio and enhance_image say."""
    look = Look(
        options.pop("max_width", None),
        options.pop("keep_aspect_ratio", True),
        options.pop("enhance_image", False),
        boxed_view(options),
    )
    artifacts = bool(options.pop("save_artifacts", False))
    if save_path is None:
        if is_remote(tables.work.location):
            raise ConfigError(
                f"save_path is needed: galleries of a remote work dir ({tables.work.location}) go to a "
                "local folder"
            )
        save_path = Path(tables.work.location) / "galleries"
    elif str(save_path).endswith(".html"):
        save_path = Path(save_path).parent  # fastdup's fd.vis names the page; the folder holds it
    return write_gallery(gallery, save_path, page_size, size, look=look, save_artifacts=artifacts)


def _ascending(ascending: bool, descending: bool | None) -> bool:
    """fastdup's v0 ``descending`` wins over ``ascending`` when given."""
    return ascending if descending is None else not descending


# fastdup's options every create_*_gallery takes (how images are drawn, saving the rows).
DRAWING = ("max_width", "keep_aspect_ratio", "enhance_image", "save_artifacts")


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
    get_label_func=None,
    descending: bool | None = None,
    **options,
) -> Path:
    """Pairs of similarity.csv side by side, most similar first, with each image's
    resolution, file size and component, and which one ``dedup --keep <keep>`` keeps
    (``keep=None``: no markers). ``similarity_file``: a work dir, a table of it, or a
    DataFrame of pairs (fd.similarity(), similarity.csv's rows) whose run is ``work_dir``.
    Returns the first page's path."""
    check_options(create_duplicates_gallery, options, DRAWING)
    tables = open_tables(similarity_file, frames.PAIRS, work_dir, annotations, get_label_func=get_label_func)
    cards = duplicates_cards(tables, num_images, threshold, _ascending(ascending, descending), keep, slice)
    return _written(cards, save_path, tables, options, page_size, thumbnail_size)


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
    get_label_func=None,
    descending: bool | None = None,
    **options,
) -> Path:
    """Images of outliers.csv, most outlying first, each beside its nearest neighbour.
    ``outliers_file``: a work dir, a table of it, or a DataFrame of outliers
    (fd.outliers(), outliers.csv's rows) whose run is ``work_dir``."""
    check_options(create_outliers_gallery, options, DRAWING)
    tables = open_tables(outliers_file, frames.OUTLIERS, work_dir, annotations, get_label_func=get_label_func)
    cards = outliers_cards(tables, num_images, _ascending(ascending, descending), slice)
    return _written(cards, save_path, tables, options, page_size, thumbnail_size)


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
    get_label_func=None,
    descending: bool | None = None,
    group_by: str = "visual",
    min_items: int | None = None,
    metric: str | None = None,
    sort_by: str = "comp_size",
    threshold: float | None = None,
    label_col: str = "label",
    **options,
) -> Path:
    """Components of two or more images, largest first, with their size and similarity
    inside, up to ``max_items`` members each (highest pagerank first). ``work_dir``: a
    work dir, a table of it, or a DataFrame (fd.connected_components()'s frames,
    connected_components.csv's rows) whose run is ``input_dir``, as fastdup names it."""
    check_options(create_components_gallery, options, DRAWING)
    tables = open_tables(
        work_dir, frames.COMPONENTS, input_dir, annotations, param="input_dir", get_label_func=get_label_func
    )
    cards = components_cards(
        tables,
        num_images,
        max_items,
        min_size if min_items is None else min_items,
        _ascending(ascending, descending),
        keep,
        slice,
        group_by,
        sort_by,
        metric,
        threshold,
        grouped=work_dir if is_grouped(work_dir) else None,
        label_col=label_col,
    )
    return _written(cards, save_path, tables, options, page_size, thumbnail_size)


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
    get_label_func=None,
    descending: bool | None = None,
    **options,
) -> Path:
    """Images sorted by one statistic of stats.csv (blur, mean, width, unique_colors, ...;
    fastdup's 'dark' and 'bright' too). ``stats_file``: a work dir, a table of it, or a
    DataFrame of images (fd.img_stats(), stats.csv's rows) whose run is ``work_dir``."""
    check_options(create_stats_gallery, options, DRAWING)
    tables = open_tables(stats_file, frames.STATS, work_dir, annotations, get_label_func=get_label_func)
    cards = stats_cards(tables, metric, _ascending(ascending, descending), num_images, per_card, slice)
    return _written(cards, save_path, tables, options, page_size, thumbnail_size)


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
    get_label_func=None,
    descending: bool | None = None,
    min_items: int | None = None,
    **options,
) -> Path:
    """Each image followed by the images most similar to it, each pair once.
    ``similarity_file``: a work dir, a table of it, or a DataFrame of pairs whose run is
    ``work_dir``."""
    check_options(create_similarity_gallery, options, DRAWING)
    tables = open_tables(similarity_file, frames.PAIRS, work_dir, annotations, get_label_func=get_label_func)
    labels = {}
    if label_view(slice):
        labels = {"min_items": min_items, "ascending": None if descending is None else not descending}
    cards = similarity_cards(tables, num_images, max_items, threshold, slice, **labels)
    return _written(cards, save_path, tables, options, page_size, thumbnail_size)


def create_duplicate_videos_gallery(similarity_file=None, save_path=None, **options) -> Path:
    """fastdup's gallery of duplicate videos. fastdup_ray reads no video files: a run over
    the frames you extracted (a folder of frames per video) gives pairs of frames, and
    this is their duplicates gallery, the same as create_duplicates_gallery."""
    return create_duplicates_gallery(similarity_file, save_path, **options)


def find_top_components(
    work_dir,
    get_label_func=None,
    group_by: str = "visual",
    slice=None,
    threshold: float | None = None,
    metric: str | None = None,
    descending: bool = True,
    min_items: int | None = None,
    max_items: int | None = None,
    save_path=None,
    annotations=None,
    **options,
):
    """fastdup's top components of a run (a work dir, one of its tables, or a frame of
    its members) as a pandas DataFrame, a row per component of two or more images:
    ``component_id`` (``label`` with group_by='label'), ``files``, ``files_ids``,
    ``label`` (a list, with labels), ``distance`` (lowest similarity inside), ``len``, and
    with ``metric`` its mean; largest first (reports/components.py). ``max_items`` keeps
    the components of at most that many images, as in fastdup. With ``save_path`` the
    frame is also written there as ``top_components.parquet``."""
    from fastdup_ray.reports.components import group_components

    check_options(find_top_components, options)
    tables = open_tables(work_dir, frames.COMPONENTS, None, annotations, get_label_func=get_label_func)
    groups = group_components(
        tables, group_by, slice, metric, "comp_size", not descending, min_items, max_items, threshold
    )
    if save_path is not None:
        from fastdup_ray.rundir.workdir import write_file_atomically

        Path(save_path).mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        groups.write_parquet(buffer)
        write_file_atomically(Path(save_path) / "top_components.parquet", buffer.getvalue())
    return groups.to_pandas()

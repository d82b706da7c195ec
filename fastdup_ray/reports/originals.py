"""Thumbnails made when a gallery is written, from the original files, for images whose
run stored none: extracted with ``thumbnail_size=0`` (about a tenth faster), or a user's
own features (``save_binary_feature`` and ``run_mode=2``). fastdup's galleries read the
images themselves; ours do so only then. An image inside an archive, a Parquet file or a
video, and a crop of a bounding box, has no file of its own and shows its location."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from fastdup_ray.map.crops import archive_of, split_crop_name
from fastdup_ray.map.decode import BadImage, make_thumbnail, open_rgb
from fastdup_ray.map.sources.items import ARCHIVE_EXTENSIONS, VIDEO_EXTENSIONS
from fastdup_ray.map.sources.parquet import PARQUET_EXTENSIONS
from fastdup_ray.rundir.storage import StorageOptions, read_bytes

log = logging.getLogger("fastdup_ray")

CONTAINER_EXTENSIONS = ARCHIVE_EXTENSIONS + VIDEO_EXTENSIONS + PARQUET_EXTENSIONS
# Reads at once: remote objects cost a round trip each, local files next to nothing.
READERS = 16


def has_own_file(location: str) -> bool:
    """Whether the image at ``location`` is named as a file of its own (local or remote),
    rather than as a member of a container or a crop of a bounding box."""
    return archive_of(location, CONTAINER_EXTENSIONS) is None and split_crop_name(location)[1] is None


def original_thumbnails(
    locations: Mapping[int, str], size: int, options: StorageOptions | None = None
) -> dict[int, bytes]:
    """JPEG thumbnails (longest side ``size``) of the images at ``locations`` (id ->
    location) that are files of their own, read and decoded now; an image that cannot be
    read or decoded gets none, and the first such is logged with its reason."""
    readable = [(image_id, loc) for image_id, loc in locations.items() if has_own_file(loc)]
    with ThreadPoolExecutor(READERS) as pool:
        made = list(pool.map(lambda item: _thumbnail(item[1], size, options), readable))
    failed = [(loc, outcome) for (_, loc), outcome in zip(readable, made) if isinstance(outcome, str)]
    if failed:
        log.warning(
            "no thumbnail for %d of %d images read from their files (first: %s: %s)",
            len(failed),
            len(readable),
            *failed[0],
        )
    return {image_id: jpeg for (image_id, _), jpeg in zip(readable, made) if isinstance(jpeg, bytes)}


def _thumbnail(location: str, size: int, options: StorageOptions | None) -> bytes | str:
    """The thumbnail of one file, or why there is none."""
    try:
        rgb, shape = open_rgb(read_bytes(location, options), size)
    except BadImage as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a file gone or storage unreachable: no thumbnail, said why
        return f"{type(exc).__name__}: {exc}"
    return make_thumbnail(rgb, size, shape)

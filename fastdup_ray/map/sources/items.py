"""What a source yields: one image to decode (bytes or an RGB frame), or a bad input with its reason."""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass, field

import numpy as np

from fastdup_ray.map.sources.kinds import kind_of  # noqa: F401 - re-exported: callers name kinds from here
from fastdup_ray.rundir.storage import StorageOptions

# HEIC/HEIF and AVIF are listed whether or not their decoder is installed: without it
# each such file is a features.bad.csv row that names the extra to install (decode.py).
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".tif",
    ".tiff",
    ".gif",
    ".bmp",
    ".webp",
    ".heic",
    ".heif",
    ".hif",
    ".avif",
)
ARCHIVE_EXTENSIONS = (".tar", ".tgz", ".tar.gz", ".zip")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
LIST_EXTENSIONS = (".txt", ".csv")


@dataclass
class Item:
    """One input image as named in every output, with its content or why it has none."""

    location: str
    data: bytes | None = None
    pixels: np.ndarray | None = None  # an already decoded RGB frame (video)
    reason: str | None = None
    # Not bad data: the storage still failed after the S3 client's retries, so the unit's
    # shard is left unfinished for a rerun rather than this input listed in features.bad.csv.
    storage_failed: bool = False
    # Scalar columns that came with the image (a Parquet row's caption, url, ...): the
    # shard keeps them in its annotations table, keyed by ``location``.
    annotations: dict | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass
class ReadSettings:
    """What reading a unit needs besides its locations (picklable, sent to tasks)."""

    storage: StorageOptions = field(default_factory=StorageOptions)
    cache_dir: str | None = None
    keep_archives: bool = False
    keep_images: bool = False
    video_fps: float = 1.0
    max_items_per_archive: int = 0  # also caps the rows read from one Parquet file


def escape_name(name: str) -> str:
    """A printable, valid UTF-8 form of a name that may hold undecodable bytes."""
    return name.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")


def is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def location_hash(location: str) -> str:
    """A short stable hash of a full location: names that must not collide carry it."""
    return hashlib.sha256(location.encode("utf-8", errors="surrogateescape")).hexdigest()[:10]


def shorten(name: str, limit: int) -> str:
    """``name`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    return name.encode("utf-8", errors="surrogateescape")[:limit].decode("utf-8", errors="ignore")


def cache_key(location: str) -> str:
    """A cache entry's name for an archive: unique per full location (two buckets' 00000.tar
    never share an entry) and short enough for any file system."""
    return f"{shorten(posixpath.basename(location.rstrip('/')), 100)}-{location_hash(location)}"

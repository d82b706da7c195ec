"""Source stage: turn ``input_dir`` into work units, and a unit into Items.

``input_dir`` is a local folder (recursive), an ``s3://`` or ``minio://`` prefix
(recursive), a single image / archive / video, a file list (``.txt`` with one location
per line, ``.csv`` with a ``filename`` column), a brace pattern
(``s3://bucket/laion/{00000..41454}.tar``), or a Python list of locations.

A *unit* is what one task reads and what one features shard holds: each archive is a
unit (shard named after the archive); loose images and videos are cut, in sorted order,
into shards of ``shard_size`` with stable names (``images-<first>-<end>.``), or a single
unnamed shard (plain ``features.dat``) when they all fit in one and no offsets are given.
``min_offset``/``max_offset`` pick a slice of the sorted inputs (archives and loose
files), max exclusive, before the cut.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from fastdup_ray.errors import InputError
from fastdup_ray.sources.archives import iter_archive
from fastdup_ray.sources.items import (
    ARCHIVE_EXTENSIONS,
    IMAGE_EXTENSIONS,
    LIST_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Item,
    escape_name,
    is_utf8,
    kind_of,
)
from fastdup_ray.sources.video import iter_video_frames
from fastdup_ray.storage import StorageOptions, is_remote, list_files, read_bytes

log = logging.getLogger("fastdup_ray")


@dataclass(frozen=True)
class WorkUnit:
    """One shard of work: an archive, or a run of loose image/video files."""

    name: str  # shard prefix in work_dir
    kind: str  # "archive" or "files"
    locations: tuple[str, ...]


@dataclass
class ReadSettings:
    """What reading a unit needs besides its locations (picklable, sent to tasks)."""

    storage: StorageOptions = field(default_factory=StorageOptions)
    cache_dir: str | None = None
    keep_archives: bool = False
    keep_images: bool = False
    video_fps: float = 1.0
    max_items_per_archive: int = 0


@dataclass
class Listing:
    """The inputs of a run, sorted: archives, loose files, and entries already known bad."""

    archives: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.archives) + len(self.files) + len(self.bad)


def _classify(locations: list[str], listing: Listing, from_list: bool) -> int:
    skipped = 0
    for location in locations:
        if not is_utf8(location):
            listing.bad.append((escape_name(location), "file name is not valid UTF-8"))
            continue
        kind = kind_of(location)
        if kind == "archive":
            listing.archives.append(location)
        elif kind in ("image", "video"):
            listing.files.append(location)
        elif from_list:
            listing.bad.append((location, "not an image, video or archive (unknown extension)"))
        else:
            skipped += 1
    return skipped


def read_file_list(location: str, options: StorageOptions | None = None) -> list[str]:
    """Locations listed in a .txt (one per line; blank lines and # comments ignored) or a
    .csv with a ``filename`` column (or one column). Relative local paths are taken
    relative to the list's folder."""
    try:
        text = read_bytes(location, options)
    except FileNotFoundError:
        raise InputError(f"file list {location!r} does not exist") from None
    if location.lower().endswith(".csv"):
        table = pl.read_csv(io.BytesIO(text), infer_schema=False)
        column = "filename" if "filename" in table.columns else table.columns[0]
        entries = [e.strip() for e in table[column].to_list() if e and e.strip()]
    else:
        lines = text.decode("utf-8", errors="surrogateescape").splitlines()
        entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    base = posixpath.dirname(location) if is_remote(location) else os.path.dirname(os.path.abspath(location))
    return [e if is_remote(e) or os.path.isabs(e) else (f"{base}/{e}" if is_remote(location) else os.path.join(base, e)) for e in entries]


def list_inputs(input_dir, options: StorageOptions | None = None) -> Listing:
    """Everything ``input_dir`` names, sorted and classified."""
    listing = Listing()
    if isinstance(input_dir, str) and "{" in input_dir and ".." in input_dir:
        # webdataset's shard notation, s3://bucket/laion/{00000..41454}.tar: a list of archives
        from braceexpand import braceexpand

        input_dir = list(braceexpand(input_dir))
    if isinstance(input_dir, (list, tuple)):
        _classify([str(x) for x in input_dir], listing, from_list=True)
    elif is_remote(input_dir):
        if input_dir.lower().endswith(LIST_EXTENSIONS):
            _classify(read_file_list(input_dir, options), listing, from_list=True)
        else:
            skipped = _classify(list_files(input_dir, options), listing, from_list=False)
            if skipped:
                log.info("skipped %d files that are not images, videos or archives under %s", skipped, input_dir)
    else:
        if not os.path.exists(input_dir):
            raise InputError(f"input_dir {input_dir!r} does not exist")
        if os.path.isfile(input_dir):
            path = os.path.abspath(input_dir)
            if path.lower().endswith(LIST_EXTENSIONS):
                _classify(read_file_list(path, options), listing, from_list=True)
            elif kind_of(path):
                _classify([path], listing, from_list=True)
            else:
                raise InputError(
                    f"input_dir {input_dir!r} is a file that is not an image ({', '.join(IMAGE_EXTENSIONS)}), "
                    f"archive ({', '.join(ARCHIVE_EXTENSIONS)}), video ({', '.join(VIDEO_EXTENSIONS)}) or file list (.txt, .csv)"
                )
        else:
            found = []
            for folder, dirs, files in os.walk(os.path.abspath(input_dir)):
                dirs.sort()
                found.extend(os.path.join(folder, name) for name in files)
            skipped = _classify(found, listing, from_list=False)
            if skipped:
                log.info("skipped %d files that are not images, videos or archives under %s", skipped, input_dir)
    listing.archives.sort()
    listing.files.sort()
    listing.bad.sort()
    if not listing:
        raise InputError(
            f"no images found under {input_dir!r} (looked for {', '.join(IMAGE_EXTENSIONS + ARCHIVE_EXTENSIONS + VIDEO_EXTENSIONS)} in any case)"
        )
    return listing


def archive_shard_name(location: str, all_archives: list[str]) -> str:
    """``<tarname>`` for an archive: its file name, or its path below the common root
    (with '/' as '__') when two archives share a file name."""
    base = posixpath.basename(location)
    if sum(1 for other in all_archives if posixpath.basename(other) == base) == 1:
        return base
    root = posixpath.commonpath([a.split("://", 1)[-1] for a in all_archives])
    return location.split("://", 1)[-1][len(root):].strip("/").replace("/", "__")


def plan_units(listing: Listing, shard_size: int, min_offset: int = 0, max_offset: int | None = None, num_images: int = 0) -> list[WorkUnit]:
    """Cut the listing into work units, keeping only the slice [min_offset, max_offset)."""
    files = listing.files[:num_images] if num_images else listing.files
    ordered = sorted([(loc, "archive") for loc in listing.archives] + [(loc, "file") for loc in files])
    sliced = ordered[min_offset:max_offset]
    file_index = {loc: i for i, loc in enumerate(files)}
    units = [WorkUnit(archive_shard_name(loc, listing.archives), "archive", (loc,)) for loc, kind in sliced if kind == "archive"]
    chosen = [loc for loc, kind in sliced if kind == "file"]
    whole = min_offset == 0 and max_offset is None and len(files) <= shard_size
    if whole and chosen:
        units.append(WorkUnit("", "files", tuple(chosen)))
    elif chosen:
        groups: dict[int, list[str]] = {}
        for loc in chosen:
            groups.setdefault(file_index[loc] // shard_size, []).append(loc)
        for group in groups.values():
            first, last = file_index[group[0]], file_index[group[-1]] + 1
            units.append(WorkUnit(f"images-{first:09d}-{last:09d}.", "files", tuple(group)))
    return sorted(units, key=lambda u: u.name)


def read_unit(unit: WorkUnit, settings: ReadSettings) -> Iterator[Item]:
    """Every Item of a unit: archive members, or loose files (video files expanded into frames)."""
    cache = Path(settings.cache_dir) if settings.cache_dir else None

    def video_items(location: str, data: bytes) -> Iterator[Item]:
        return iter_video_frames(location, data, fps=settings.video_fps)

    if unit.kind == "archive":
        yield from iter_archive(
            unit.locations[0],
            settings.storage,
            cache_dir=cache,
            keep_archives=settings.keep_archives,
            keep_images=settings.keep_images,
            video_items=video_items,
            max_items=settings.max_items_per_archive,
        )
        return
    for location in unit.locations:
        try:
            data = read_bytes(location, settings.storage)
        except Exception as exc:  # noqa: BLE001 - any read failure is this input's bad reason
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
            yield Item(location, reason=f"cannot read file: {reason}")
            continue
        if kind_of(location) == "video":
            yield from video_items(location, data)
        else:
            yield Item(location, data=data)


__all__ = ["Item", "Listing", "ReadSettings", "WorkUnit", "list_inputs", "plan_units", "read_file_list", "read_unit"]

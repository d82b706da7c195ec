"""Source stage: turn ``input_dir`` into work units, and a unit into Items.

``input_dir`` is a local folder (recursive), an ``s3://`` or ``minio://`` prefix
(recursive), a single image / archive / video, a file list (``.txt`` with one location
per line, ``.csv`` with a ``filename`` column), a brace pattern
(``s3://bucket/laion/{00000..41454}.tar``), or a Python list of locations.

The kinds of input, and the reader of each, are the registry below (:mod:`.kinds`).
A *unit* is what one task reads and what one features shard holds: each archive or
Parquet file is a unit (shard named after the file, with a short hash of its full
location when two share a file name or the name is too long for a file system); loose images and
videos are cut, in sorted order, into shards of ``shard_size`` with stable names
(``images-<first>-<end>.``), or a single unnamed shard (plain ``features.dat``) when
the run is that one shard and nothing else. ``min_offset``/``max_offset`` pick a slice of
the sorted inputs (archives and loose files), max exclusive, before the cut.

Every unit carries a fingerprint of its inputs (location, size and mtime of files; size
and ETag of objects), so a finished shard is reused only for exactly the inputs it was
cut from. Loose files are read only when they are regular files (a FIFO named .jpg
would block a read forever); symlinked folders are followed once each.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import posixpath
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import polars as pl

from fastdup_ray.errors import InputError
from fastdup_ray.map.sources.archives import read_archive
from fastdup_ray.map.sources.files import read_image
from fastdup_ray.map.sources.items import (
    ARCHIVE_EXTENSIONS,
    IMAGE_EXTENSIONS,
    LIST_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Item,
    ReadSettings,
    cache_key,
    escape_name,
    is_utf8,
    location_hash,
    shorten,
)
from fastdup_ray.map.sources.kinds import (
    KINDS,
    InputKind,
    described,
    extensions,
    input_kind,
    kind_of,
    register,
)
from fastdup_ray.map.sources.parquet import PARQUET_EXTENSIONS, read_parquet
from fastdup_ray.map.sources.video import read_video
from fastdup_ray.rundir.storage import (
    StorageOptions,
    is_remote,
    list_files_with_versions,
    read_bytes,
)

log = logging.getLogger("fastdup_ray")

# The registry: a new input kind is its reader module and one line here.
register(InputKind("image", IMAGE_EXTENSIONS, read_image))
register(InputKind("archive", ARCHIVE_EXTENSIONS, read_archive, own_shard=True))
register(InputKind("video", VIDEO_EXTENSIONS, read_video))
register(InputKind("parquet", PARQUET_EXTENSIONS, read_parquet, own_shard=True))


@dataclass(frozen=True)
class WorkUnit:
    """One shard of work: one file of an own-shard kind (an archive, a Parquet file), or
    a run of loose image/video files."""

    name: str  # shard prefix in work_dir
    kind: str  # the kind's name ("archive", "parquet", ...), or "files" for loose files
    locations: tuple[str, ...]
    fingerprint: str = ""  # of the inputs as listed: a shard is reused only for the same
    # {image location: [Box, ...]} in a run of bounding boxes (map/crops.py), else None
    boxes: dict | None = field(default=None, compare=False, repr=False)

    @property
    def rows(self) -> int:
        """The rows it gives when its files are images: one per file, or one per box."""
        return len(self.locations) if self.boxes is None else sum(map(len, self.boxes.values()))

    def marker_fields(self) -> dict:
        """What the shard's completion marker records about its inputs: the fingerprint
        decides reuse; the first and last locations let a reduce find overlapping shards."""
        first, last = (self.locations[0], self.locations[-1]) if self.locations else ("", "")
        return {
            "inputs": self.fingerprint,
            "kind": self.kind,
            "first": first,
            "last": last,
            "count": len(self.locations),
        }


@dataclass
class Listing:
    """The inputs of a run, sorted: files that are a shard each (``archives``: archives,
    Parquet files), loose files, and entries already known bad."""

    archives: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    # location -> "size:mtime_ns" (files) or "size:ETag" (objects); "" when unknown
    versions: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.archives) + len(self.files) + len(self.bad)


def _classify(locations: list[str], listing: Listing, from_list: bool) -> int:
    skipped = 0
    for location in locations:
        if not is_utf8(location):
            listing.bad.append((escape_name(location), "file name is not valid UTF-8"))
            continue
        kind = input_kind(location)
        if kind is None:
            if from_list:
                listing.bad.append(
                    (location, f"not an input of any kind ({', '.join(KINDS)}): unknown extension")
                )
            else:
                skipped += 1
            continue
        if not is_remote(location):
            problem = record_local_version(location, listing.versions)
            if problem:
                listing.bad.append((location, problem))
                continue
        (listing.archives if kind.own_shard else listing.files).append(location)
    return skipped


def record_local_version(path: str, versions: dict[str, str]) -> str | None:
    """Record a local file's size and mtime; the reason it cannot be read, if it cannot.
    A missing file is left to the reader, which lists it with the operating system's words."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        versions[path] = "missing"
        return None
    except OSError as exc:
        return f"cannot read file: {exc.strerror or exc}"
    if not stat.S_ISREG(info.st_mode):
        kind = (
            "FIFO"
            if stat.S_ISFIFO(info.st_mode)
            else "device"
            if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
            else "socket"
            if stat.S_ISSOCK(info.st_mode)
            else "directory"
            if stat.S_ISDIR(info.st_mode)
            else "special file"
        )
        return f"not a regular file ({kind}): skipped, a read could block or never end"
    versions[path] = f"{info.st_size}:{info.st_mtime_ns}"
    return None


def _remote_versions(locations: list[str], options: StorageOptions | None, versions: dict[str, str]) -> None:
    """Size and ETag of remote objects, one listing per folder (not one request per object)."""
    by_folder: dict[str, list[str]] = {}
    for location in locations:
        if is_remote(location):
            by_folder.setdefault(posixpath.dirname(location), []).append(location)
    for folder, members in by_folder.items():
        try:
            entries = list_files_with_versions(folder, options, recursive=False)
        except InputError:
            entries = {}
        for location in members:
            versions[location] = entries.get(location, "missing")


def _walk_local(root: str, exclude: list[str]) -> list[str]:
    """Every file under ``root``. The real folders are walked first; then each symlinked
    folder whose target was not listed yet (a link back up the tree, or to a folder
    already walked, is skipped with a log line), so an image is listed once, under its
    real path where it has one. The ``exclude`` folders (the run's own work_dir and cache
    inside the input folder) are left out."""
    excluded = {os.path.realpath(path) for path in exclude}
    seen: set[tuple[int, int]] = set()
    found: list[str] = []
    pending = [root]
    while pending:
        links: list[str] = []
        for folder, dirs, files in os.walk(pending.pop(0)):
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in seen:
                log.info("skipped %s: a link to a folder already listed", folder)
                dirs[:] = []
                continue
            seen.add((info.st_dev, info.st_ino))
            paths = [os.path.join(folder, d) for d in sorted(dirs)]
            links.extend(p for p in paths if os.path.islink(p) and os.path.realpath(p) not in excluded)
            dirs[:] = [
                os.path.basename(p)
                for p in paths
                if not os.path.islink(p) and os.path.realpath(p) not in excluded
            ]
            found.extend(os.path.join(folder, name) for name in files)
        pending.extend(links)
    return found


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
    return [
        e
        if is_remote(e) or os.path.isabs(e)
        else (f"{base}/{e}" if is_remote(location) else os.path.join(base, e))
        for e in entries
    ]


def list_inputs(
    input_dir, options: StorageOptions | None = None, exclude: list[str] | tuple[str, ...] = ()
) -> Listing:
    """Everything ``input_dir`` names, sorted and classified, with each input's version.
    Folders in ``exclude`` (the run's work_dir and cache) are never listed."""
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
            found = list_files_with_versions(input_dir, options)
            listing.versions.update(found)
            skipped = _classify(list(found), listing, from_list=False)
            if skipped:
                log.info(
                    "skipped %d files that are not images, videos or archives under %s", skipped, input_dir
                )
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
                    f"input_dir {input_dir!r} is a file of no input kind ({described()}) "
                    "and no file list (.txt, .csv)"
                )
        else:
            skipped = _classify(
                _walk_local(os.path.abspath(input_dir), list(exclude)), listing, from_list=False
            )
            if skipped:
                log.info(
                    "skipped %d files that are not images, videos or archives under %s", skipped, input_dir
                )
    missing = [loc for loc in listing.archives + listing.files if loc not in listing.versions]
    if missing:
        _remote_versions(missing, options, listing.versions)
    listing.archives.sort()
    listing.files.sort()
    listing.bad.sort()
    if not listing:
        raise InputError(
            f"no images found under {input_dir!r} (looked for {', '.join(extensions())} in any case)"
        )
    return listing


# A shard prefix stays well under the 255-byte file name limit once the longest file
# name is built from it: ".<prefix>features.thumbnails.parquet.tmp-xxxxxxxx" adds 42.
MAX_PREFIX_BYTES = 160


def shared_file_names(archives: list[str]) -> set[str]:
    """File names that more than one of the archives has (counted once for the run)."""
    counts = Counter(posixpath.basename(location) for location in archives)
    return {name for name, count in counts.items() if count > 1}


def archive_shard_name(location: str, shared: set[str]) -> str:
    """``<tarname>`` for an archive: its file name when no other archive of the run has
    that name (``shared``, from shared_file_names) and it is short enough; else the name
    (shortened) with a hash of the full location, so shard names are unique for any set
    of locations."""
    base = posixpath.basename(location)
    if base not in shared and len(base.encode("utf-8", errors="surrogateescape")) <= MAX_PREFIX_BYTES:
        return base
    return f"{shorten(base, MAX_PREFIX_BYTES - 12)}-{location_hash(location)}."


def fingerprint(locations: tuple[str, ...], versions: dict[str, str]) -> str:
    """One hash of the inputs of a unit as they are now."""
    digest = hashlib.sha256()
    for location in locations:
        digest.update(f"{location}\t{versions.get(location, '')}\n".encode("utf-8", errors="surrogateescape"))
    return digest.hexdigest()[:16]


def plan_units(
    listing: Listing, shard_size: int, min_offset: int = 0, max_offset: int | None = None, num_images: int = 0
) -> list[WorkUnit]:
    """Cut the listing into work units, keeping only the slice [min_offset, max_offset)."""
    files = listing.files[:num_images] if num_images else listing.files
    ordered = sorted([(loc, kind_of(loc)) for loc in listing.archives] + [(loc, "file") for loc in files])
    sliced = ordered[min_offset:max_offset]
    file_index = {loc: i for i, loc in enumerate(files)}
    versions = listing.versions
    shared = shared_file_names(listing.archives)  # once: a LAION listing has ~41k archives
    units = [
        WorkUnit(archive_shard_name(loc, shared), kind, (loc,), fingerprint((loc,), versions))
        for loc, kind in sliced
        if kind != "file"
    ]
    chosen = [loc for loc, kind in sliced if kind == "file"]
    # Unnamed (plain features.dat, fastdup's layout) only when this one shard is the whole
    # run: otherwise the top-level features.bad.csv is the merged list of every shard.
    whole = (
        min_offset == 0
        and max_offset is None
        and len(files) <= shard_size
        and not listing.archives
        and not listing.bad
    )
    if whole and chosen:
        units.append(WorkUnit("", "files", tuple(chosen), fingerprint(tuple(chosen), versions)))
    elif chosen:
        groups: dict[int, list[str]] = {}
        for loc in chosen:
            groups.setdefault(file_index[loc] // shard_size, []).append(loc)
        for group in groups.values():
            first, last = file_index[group[0]], file_index[group[-1]] + 1
            units.append(
                WorkUnit(
                    f"images-{first:09d}-{last:09d}.",
                    "files",
                    tuple(group),
                    fingerprint(tuple(group), versions),
                )
            )
    return sorted(units, key=lambda u: u.name)


def read_unit(unit: WorkUnit, settings: ReadSettings) -> Iterator[Item]:
    """Every Item of a unit, each file by its kind's reader (a file of no known kind is
    read as an image). After a storage failure the unit's other files are not tried:
    each would wait out the retries too, and a rerun reads the unit again."""
    own = KINDS.get(unit.kind)
    for location in unit.locations:
        kind = own or input_kind(location) or KINDS["image"]
        for item in kind.read(location, settings):
            yield item
            if item.storage_failed:
                return


__all__ = [
    "KINDS",
    "InputKind",
    "Item",
    "Listing",
    "ReadSettings",
    "WorkUnit",
    "cache_key",
    "kind_of",
    "list_inputs",
    "plan_units",
    "read_file_list",
    "read_unit",
    "register",
]

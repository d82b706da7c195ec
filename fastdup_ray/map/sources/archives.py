"""Read images out of tar, tgz/tar.gz and zip archives as streams, local or remote.

Tars are read front to back (``r|*``), so a remote tar is never downloaded whole unless
the run keeps archives (``delete_tar=0``). Webdataset shards need nothing special: the
image member of each sample is used, its ``.txt``/``.json`` members are ignored.
Unsafe members (absolute names, ``..``), non-UTF-8 names, oversized members, archives
with no image at all and truncated or corrupt archives become bad items with their
reason; the archive's other images still go through. A member name repeated in one
archive (a retried webdataset sample, or another picture under one name) is an image at
each occurrence, the n-th named ``<name>#<n>`` from n = 2. An archive inside an archive
is read too (``outer.tar/inner.tar/x.jpg``), down to MAX_NESTING levels.
"""

from __future__ import annotations

import functools
import io
import logging
import tarfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from fastdup_ray.map.sources.items import Item, ReadSettings, cache_key, escape_name, is_utf8, kind_of
from fastdup_ray.map.sources.video import iter_video_frames
from fastdup_ray.rundir.storage import (
    StorageOptions,
    is_remote,
    object_version,
    resolve,
    storage_unavailable,
)

log = logging.getLogger("fastdup_ray")

# A member bigger than this is refused, whatever its header claims: a zip or tar bomb
# must not fill memory.
MAX_MEMBER_BYTES = 256 * 1024 * 1024
# Archives inside archives are opened up to this depth (an archive bomb nests forever).
MAX_NESTING = 3
# What a member may be; any other member (webdataset's .txt/.json/.cls, a .parquet) is
# not an image and is passed over.
MEMBER_KINDS = ("image", "video", "archive")


def member_kind(name: str) -> str | None:
    kind = kind_of(name)
    return kind if kind in MEMBER_KINDS else None


def unsafe_reason(name: str) -> str | None:
    """Why a member name may not be used as a path under the cache folder, if it may not."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "unsafe member name (absolute path)"
    if ".." in name.replace("\\", "/").split("/"):
        return "unsafe member name (contains ..)"
    return None


@contextmanager
def open_archive_stream(
    location: str, options: StorageOptions | None, keep_dir: Path | None
) -> Iterator[BinaryIO]:
    """A readable binary stream of the archive; with ``keep_dir`` a remote archive is
    first downloaded there and kept."""
    if not is_remote(location):
        with open(location, "rb") as handle:
            yield handle
        return
    fs, path = resolve(location, options)
    if keep_dir is not None:
        keep_dir.mkdir(parents=True, exist_ok=True)
        local = keep_dir / cache_key(location)
        # The kept copy is used only while the object is unchanged (size and ETag).
        version = object_version(fs.info(path))
        stamp = local.with_name(local.name + ".version")
        if not (local.exists() and stamp.exists() and stamp.read_text() == version):
            partial = local.with_name(local.name + ".part")
            fs.get_file(path, str(partial))
            partial.rename(local)
            stamp.write_text(version)
        with open(local, "rb") as handle:
            yield handle
        return
    handle = fs.open(path, "rb", block_size=8 * 1024 * 1024)
    try:
        yield handle
    finally:
        handle.close()


def _member_item(
    archive: str, name: str, size: int, read, keep_images: Path | None, video_items, seen: Counter, depth: int
) -> Iterator[Item]:
    if not is_utf8(name):
        yield Item(f"{archive}/{escape_name(name)}", reason="member name is not valid UTF-8")
        return
    kind = member_kind(name)
    if kind is None:
        return  # webdataset's .txt/.json/.cls and other members: not images
    # A repeated name (a writer's retried sample, or another picture under one name) is an
    # image too; from its second occurrence on it is named '<name>#<n>', so every row has
    # its own name and dedup can find the n-th occurrence again.
    seen[name] += 1
    stored = occurrence_name(name, seen)
    location = f"{archive}/{stored}"
    reason = unsafe_reason(name)
    if reason:
        yield Item(location, reason=reason)
        return
    if size > MAX_MEMBER_BYTES:
        yield Item(location, reason=f"member too large ({size} bytes > {MAX_MEMBER_BYTES})")
        return
    if kind == "archive":
        yield from _nested_archive(location, name, stored, read, keep_images, video_items, depth)
        return
    data = read()
    if keep_images is not None:
        target = keep_images / stored  # safe: no absolute part, no '..'; a repeat beside the first
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    if kind == "video":
        yield from video_items(location, data)
    else:
        yield Item(location, data=data)


def occurrence_name(name: str, seen: Counter) -> str:
    """A member's row name: ``name`` at its first occurrence in the archive, '<name>#<n>' at
    its n-th. The suffix follows the extension, so it never reads as a member's own name."""
    return name if seen[name] <= 1 else f"{name}#{seen[name]}"


def _nested_archive(
    location: str, name: str, stored: str, read, keep_images: Path | None, video_items, depth: int
) -> Iterator[Item]:
    """The images of an archive member that is itself an archive, named below it
    (``stored``: its name with any occurrence suffix, for the kept images' folder)."""
    if depth >= MAX_NESTING:
        yield Item(location, reason=f"archive nested more than {MAX_NESTING} levels deep: not opened")
        return
    reader = iter_zip if name.lower().endswith(".zip") else iter_tar
    inner_keep = keep_images / stored if keep_images is not None else None
    yield from with_empty_line(
        location, reader(location, io.BytesIO(read()), inner_keep, video_items, depth=depth + 1)
    )


def with_empty_line(location: str, items: Iterator[Item]) -> Iterator[Item]:
    """The archive's items, or one line saying it holds no image: an archive never
    vanishes from the run's accounting."""
    count = 0
    for item in items:
        count += 1
        yield item
    if count == 0:
        yield Item(location, reason="archive holds no images (no member is an image, video or archive)")


def iter_tar(
    location: str, stream: BinaryIO, keep_images: Path | None, video_items, max_items: int = 0, depth: int = 0
) -> Iterator[Item]:
    count = 0
    current = None  # the member being read: a cut-off archive names the image it cut
    seen: Counter = Counter()
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as archive:
            for member in archive:
                if member.isdir():
                    continue
                if not member.isfile():
                    if member_kind(member.name):
                        yield Item(
                            f"{location}/{escape_name(member.name)}",
                            reason="link or special member, not a file",
                        )
                    continue
                reader = archive.extractfile(member)
                current = member.name
                for item in _member_item(
                    location, member.name, member.size, reader.read, keep_images, video_items, seen, depth
                ):
                    current = None
                    yield item
                    count += 1
                current = None
                if max_items and count >= max_items:
                    return
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        if storage_unavailable(exc):
            raise  # the connection failed, not the archive: iter_archive says so
        where = location
        if current and member_kind(current):  # a repeat is named by its occurrence, as its row would be
            where = f"{location}/{escape_name(occurrence_name(current, seen))}"
        yield Item(
            where, reason=f"truncated or corrupt archive after {count} images: {type(exc).__name__}: {exc}"
        )


def iter_zip(
    location: str, stream: BinaryIO, keep_images: Path | None, video_items, max_items: int = 0, depth: int = 0
) -> Iterator[Item]:
    count = 0
    seen: Counter = Counter()
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        if storage_unavailable(exc):
            raise
        yield Item(location, reason=f"corrupt zip archive: {exc}")
        return
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue

            def read(info=info) -> bytes:
                with archive.open(info) as member:
                    data = member.read(MAX_MEMBER_BYTES + 1)
                if len(data) > MAX_MEMBER_BYTES:
                    raise zipfile.LargeZipFile(f"member inflates past {MAX_MEMBER_BYTES} bytes")
                return data

            try:
                for item in _member_item(
                    location, info.filename, info.file_size, read, keep_images, video_items, seen, depth
                ):
                    yield item
                    count += 1
            except (
                zipfile.BadZipFile,
                zipfile.LargeZipFile,
                zlib.error,
                OSError,
                EOFError,
                NotImplementedError,
            ) as exc:
                if storage_unavailable(exc):
                    raise
                row = occurrence_name(info.filename, seen)  # a repeat by its occurrence, as its row would be
                yield Item(f"{location}/{row}", reason=f"corrupt archive member: {exc}")
                count += 1
            if max_items and count >= max_items:
                return


def iter_archive(
    location: str,
    options: StorageOptions | None = None,
    cache_dir: Path | None = None,
    keep_archives: bool = False,
    keep_images: bool = False,
    video_items=None,
    max_items: int = 0,
) -> Iterator[Item]:
    """Every image of the archive at ``location`` as an Item (bad ones with a reason).

    ``keep_archives``/``keep_images`` (fastdup's delete_tar=0 / delete_img=0) keep the
    downloaded archive and the extracted images under ``cache_dir``; otherwise nothing
    is written to disk.
    """
    video_items = video_items or (
        lambda loc, data: iter([Item(loc, reason="video inside an archive needs PyAV")])
    )
    keep_images_dir = (cache_dir / "images" / cache_key(location)) if keep_images and cache_dir else None
    keep_archive_dir = (
        (cache_dir / "archives") if keep_archives and cache_dir and is_remote(location) else None
    )
    reader = iter_zip if location.lower().endswith(".zip") else iter_tar
    passed = 0  # items given out before a failure, for its reason
    try:
        with open_archive_stream(location, options, keep_archive_dir) as stream:
            for item in with_empty_line(
                location, reader(location, stream, keep_images_dir, video_items, max_items)
            ):
                yield item
                passed += 1
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        yield Item(location, reason=f"cannot read archive: {type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - storage failures and unreadable files are this input's reason
        if storage_unavailable(exc):
            # The S3 client's retries are spent (storage.py): say so, not "corrupt", and
            # flag it, so that the shard is run again rather than finished without the rest.
            why = f"the storage failed after {passed} images despite retries: {type(exc).__name__}: {exc}"
            yield Item(location, reason=f"cannot read archive, {why}", storage_failed=True)
        elif isinstance(exc, OSError):
            yield Item(location, reason=f"cannot read archive: {exc}")
        else:
            raise


def read_archive(location: str, settings: ReadSettings) -> Iterator[Item]:
    """The archive kind's reader: iter_archive with the run's read settings."""
    cache = Path(settings.cache_dir) if settings.cache_dir else None
    yield from iter_archive(
        location,
        settings.storage,
        cache_dir=cache,
        keep_archives=settings.keep_archives,
        keep_images=settings.keep_images,
        video_items=functools.partial(iter_video_frames, fps=settings.video_fps),
        max_items=settings.max_items_per_archive,
    )

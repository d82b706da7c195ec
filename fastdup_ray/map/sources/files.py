"""Loose files: an image is read whole, as one Item; a read failure is its bad reason.

A storage failure (the S3 client's retries spent) is an Item flagged ``storage_failed``,
not a bad row: the unit stops there and a rerun reads it again.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastdup_ray.map.sources.items import Item, ReadSettings
from fastdup_ray.rundir.storage import read_bytes, storage_unavailable


def read_whole(location: str, settings: ReadSettings) -> bytes | Item:
    """The file's bytes, or the Item (bad, or storage-failed) that stands for it."""
    try:
        return read_bytes(location, settings.storage)
    except Exception as exc:  # noqa: BLE001 - any read failure is this input's bad reason
        if storage_unavailable(exc):
            why = f"cannot read file, the storage failed despite retries: {type(exc).__name__}: {exc}"
            return Item(location, reason=why, storage_failed=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
        return Item(location, reason=f"cannot read file: {reason}")


def read_image(location: str, settings: ReadSettings) -> Iterator[Item]:
    """One image file as one Item, its bytes to decode."""
    data = read_whole(location, settings)
    yield data if isinstance(data, Item) else Item(location, data=data)

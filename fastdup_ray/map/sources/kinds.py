"""The input kinds: which file names are which kind of input, and the reader of each.

A kind is one :class:`InputKind`: its extensions and ``read(location, settings)``, which
turns one file into Items (bad ones with their reason; a storage failure as one Item
flagged ``storage_failed``, after which the unit is not read further). Listing,
planning and ``read_unit`` ask only this table, so a new input kind is its reader
module plus one ``register`` line in ``map/sources/__init__.py``.

``own_shard`` kinds (archives, Parquet files) are a unit and a shard each, named after
the file and reused by its version; the others (images, videos) are loose files, cut in
listing order into shards of ``shard_size``. This module imports no reader, so that
readers may ask it what a name is (an archive's members are named by extension too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastdup_ray.map.sources.items import Item, ReadSettings

Reader = Callable[[str, "ReadSettings"], Iterator["Item"]]


@dataclass(frozen=True)
class InputKind:
    name: str  # as units and shard markers record it ("image", "archive", ...)
    extensions: tuple[str, ...]  # lower case, with the dot; matched in any case
    read: Reader
    own_shard: bool = False  # one unit and one shard per file


# In registration order; the first kind whose extension ends a name is its kind.
KINDS: dict[str, InputKind] = {}


def register(kind: InputKind) -> InputKind:
    KINDS[kind.name] = kind
    return kind


def input_kind(name: str) -> InputKind | None:
    """The kind of a file name from its extension (any case), or None."""
    lower = name.lower()
    return next((kind for kind in KINDS.values() if lower.endswith(kind.extensions)), None)


def kind_of(name: str) -> str | None:
    """'image', 'archive', 'video', 'parquet', ... or None, from the name's extension."""
    kind = input_kind(name)
    return kind.name if kind else None


def own_shard(kind: str | None) -> bool:
    """Whether units (and shard markers) of this kind hold one file each."""
    return kind in KINDS and KINDS[kind].own_shard


def extensions() -> tuple[str, ...]:
    """Every registered extension, for messages that say what was looked for."""
    return tuple(ext for kind in KINDS.values() for ext in kind.extensions)


def described() -> str:
    """Each kind with its extensions: 'image (.jpg, .jpeg, ...), archive (.tar, ...), ...'."""
    return ", ".join(f"{kind.name} ({', '.join(kind.extensions)})" for kind in KINDS.values())

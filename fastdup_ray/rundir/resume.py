"""Resume: which finished shards a run reuses, which it extracts again, which are stale.

A shard is reused only when its marker's fingerprint matches its inputs as listed now;
a run over the whole input (no offsets) removes every other shard, so vanished inputs
drop out; a run over a slice removes only the shards that lie inside its slice and
refuses one that it would cut through (the reduce would count those inputs twice).
Pure functions over markers (dicts) and planned units.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastdup_ray.errors import InputError
from fastdup_ray.map.sources import WorkUnit
from fastdup_ray.map.sources.kinds import own_shard


@dataclass(frozen=True)
class ResumePlan:
    todo: list[WorkUnit]  # to extract (anew, where a stale shard of that name exists)
    reused: list[str]  # finished shards of exactly these inputs
    stale: list[str]  # shards to remove before extraction


def plan_resume(
    units: list[WorkUnit],
    markers: dict[str, dict],
    complete: set[str],
    whole_run: bool,
    keep: frozenset[str] = frozenset(),
) -> ResumePlan:
    """Compare the planned units with the shards already in work_dir (``markers`` of every
    shard with a marker, ``complete`` those whose files check out). ``keep`` names shards
    that are not cut from inputs (the listing's bad list) and are never stale."""
    todo = [u for u in units if not (u.name in complete and markers[u.name].get("inputs") == u.fingerprint)]
    reused = [u.name for u in units if u not in todo]
    planned = {u.name for u in units}
    others = [p for p in markers if p not in planned and p not in keep]
    if whole_run:
        return ResumePlan(todo, reused, sorted(others))
    return ResumePlan(todo, reused, sorted(p for p in others if _inside_slice(p, markers[p], units)))


def _span(marker: dict) -> tuple[str, str] | None:
    """(first, last) input location of a shard cut from loose files, or None."""
    if marker.get("kind") != "files" or not marker.get("count"):
        return None
    return marker["first"], marker["last"]


def _inside_slice(prefix: str, marker: dict, units: list[WorkUnit]) -> bool:
    """True when every input of the shard belongs to this slice (it is superseded);
    raises when the shard holds inputs both inside and outside the slice."""
    if own_shard(marker.get("kind")):  # one archive or Parquet file: superseded by a unit of it
        return any(u.kind == marker["kind"] and u.locations[0] == marker.get("first") for u in units)
    span = _span(marker)
    files = [u for u in units if u.kind == "files" and u.locations]
    if span is None or not files:
        return False
    low, high = min(u.locations[0] for u in files), max(u.locations[-1] for u in files)
    first, last = span
    if last < low or first > high:
        return False  # another slice's shard
    if low <= first and last <= high:
        return True
    cut = next(u.name for u in files if not (u.locations[-1] < first or u.locations[0] > last))
    raise InputError(
        f"this slice's shard {cut!r} overlaps the finished shard {prefix!r} "
        f"(inputs {first} .. {last}), which reaches outside the slice: "
        "its inputs would be counted twice. Run the same min_offset/max_offset slices as before, "
        "or start over with overwrite=True (--overwrite)"
    )


def check_no_overlap(markers: dict[str, dict]) -> None:
    """Before a reduce: no input may sit in two shards (slices of different runs into one
    work_dir). Raises naming the shards."""
    spans = sorted((span, prefix) for prefix, marker in markers.items() if (span := _span(marker)))
    for (previous, before), (current, prefix) in zip(spans, spans[1:]):
        if current[0] <= previous[1]:
            raise InputError(
                f"shards {before!r} and {prefix!r} hold some of the same inputs "
                "(made by overlapping min_offset/max_offset slices); "
                "remove one of them, or rerun with overwrite=True"
            )
    archives: dict[str, str] = {}  # and Parquet files: any kind of one file per shard
    for prefix, marker in markers.items():
        if own_shard(marker.get("kind")):
            other = archives.setdefault(marker.get("first", ""), prefix)
            if other != prefix:
                raise InputError(
                    f"shards {other!r} and {prefix!r} were both made from {marker['first']}; "
                    "remove one of them, or rerun with overwrite=True"
                )

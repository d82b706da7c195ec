"""The map as the engines see it: its settings, its stages, and the work they are given.

An engine (:mod:`fastdup_ray.engine`) imports this module and nothing else of the map. A
:class:`MapPlan` declares, in order, the stages a unit's rows go through, each with one
calling convention (datatrove's steps are the model): ``stage.open()`` returns a function
of one batch that yields batches (:mod:`fastdup_ray.map.record` declares their columns),
and ``stage.placement`` says how it wants to be run:

- ``TASK``: stateless CPU work, one WORK row per call (read + decode: a unit is one stream);
- ``ACTOR``: holds a session loaded once per process (embed), fed batches of rows.

On CPU the plan also declares its stages :class:`Fused`, one ACTOR stage over WORK rows
(:meth:`MapPlan.fused` with :meth:`MapPlan.work_pieces`), for an engine whose every
worker should read, decode and embed, as the local engine's processes do.

The plan also says how its units are given: whole, one WORK row each, to the tasks of an
engine that runs each stage in its own pool (:meth:`MapPlan.work_rows`), or cut into
pieces that run every stage in one process (:meth:`MapPlan.pieces`). Adding a stage or a
setting of one touches this package only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from typing import ClassVar, Protocol

from fastdup_ray.map.batches import EmbedBatches, decode_items
from fastdup_ray.map.crops import Box, Boxes, Margin, boxes_from_json, boxes_json
from fastdup_ray.map.record import UNCOUNTED, WORK, Batch, work_batch, work_row
from fastdup_ray.map.sources import Item, ReadSettings, WorkUnit, read_unit

TASK = "task"
ACTOR = "actor"


@dataclass(frozen=True)
class DecodeSettings:
    """Pixels and thumbnails: the model's input size, the galleries' thumbnail size, and
    the margins added to bounding boxes before they are cut."""

    image_size: int
    thumbnail_size: int = 0
    margin: Margin = Margin()


@dataclass(frozen=True)
class EmbedSettings:
    """The model to embed with: its file, its width, and 'cpu' or 'gpu' (decided once)."""

    model_file: str
    d: int
    compute: str = "cpu"


class Stage(Protocol):
    name: str
    placement: str  # TASK or ACTOR

    def open(self) -> Callable[[Batch], Iterator[Batch]]:
        """What runs the stage's batches in this process (an actor's session loads here)."""


@dataclass(frozen=True)
class ReadDecode:
    """WORK rows in, DECODED batches of ``rows_per_batch`` out, then each closing unit's
    UNIT_END row. Rows the driver already read (``items``) are decoded as they are."""

    read: ReadSettings
    decode: DecodeSettings
    rows_per_batch: int
    name: ClassVar[str] = "read+decode"
    placement: ClassVar[str] = TASK

    def open(self) -> Callable[[Batch], Iterator[Batch]]:
        return self.run

    def run(self, work: Batch) -> Iterator[Batch]:
        WORK.check(work)
        given = work.get("items")
        for i, name in enumerate(work["unit"]):
            unit = WorkUnit(str(name), str(work["kind"][i]), tuple(json.loads(work["locations"][i])))
            items = read_unit(unit, self.read) if given is None else given[i]
            boxes = boxes_from_json(str(work["boxes"][i]))
            yield from self.run_one(
                unit.name, items, int(work["first_seq"][i]), bool(work["closes"][i]), boxes
            )

    def run_one(
        self, unit: str, items: Iterable[Item], first: int, closes: bool, boxes: Boxes | None = None
    ) -> Iterator[Batch]:
        """With ``boxes`` (a run of bounding boxes) each image becomes a row per box, an
        image without boxes none, and a box whose image never came a bad row at the end."""
        pending: list[tuple[Item, list[Box] | None]] = []
        count = first
        for row in _rows(items, boxes):
            pending.append(row)
            if sum(_width(r) for r in pending) >= self.rows_per_batch:
                batch = self.decoded(unit, pending, count)
                count, pending = count + len(batch["seq"]), []
                yield batch
        if closes:
            # A unit read whole (its first row here) is counted; a last cut of a unit whose
            # cuts ran in parallel cannot know the unit's rows, only that they came first.
            total = count + sum(_width(r) for r in pending) if first == 0 else UNCOUNTED
            yield self.decoded(unit, pending, count, total=total)
        elif pending:
            yield self.decoded(unit, pending, count)

    def decoded(
        self, unit: str, rows: list[tuple[Item, list[Box] | None]], first: int, total: int | None = None
    ) -> Batch:
        size, thumbnails = self.decode.image_size, self.decode.thumbnail_size
        items, boxes = [item for item, _ in rows], [found for _, found in rows]
        return decode_items(
            unit,
            items,
            size,
            first,
            total=total,
            thumbnail_size=thumbnails,
            boxes=boxes if any(boxes) else None,
            margin=self.decode.margin,
        )


def _rows(items: Iterable[Item], boxes: Boxes | None) -> Iterator[tuple[Item, list[Box] | None]]:
    """(item, its boxes) of each item to decode: all of them with None in a run of whole
    images; in a run of boxes the items that have boxes, then a bad Item for each image
    whose boxes are left (it was not in its input), so that every box gives one row."""
    if boxes is None:
        yield from ((item, None) for item in items)
        return
    left = dict(boxes)
    for item in items:
        found = left.pop(item.location, None)
        if found:
            yield item, found
    for location, found in left.items():
        yield Item(location, reason="no such image in its input (its bounding boxes name it)"), found


def _width(row: tuple[Item, list[Box] | None]) -> int:
    """The rows an item gives: one per box, or one."""
    return 1 if row[1] is None else len(row[1])


@dataclass(frozen=True)
class Embed:
    """DECODED batches in, EMBEDDED batches out, through one model session per process."""

    embed: EmbedSettings
    name: ClassVar[str] = "embed"
    placement: ClassVar[str] = ACTOR

    def open(self) -> Callable[[Batch], Iterator[Batch]]:
        session = EmbedBatches(self.embed.model_file, self.embed.d, self.embed.compute)
        return lambda batch: iter((session(batch),))


@dataclass(frozen=True)
class Fused:
    """Every stage of a plan in one process, over one WORK row at a time, its batches
    streamed out as each is embedded. One such actor per core keeps decode and model busy
    in the proportion each image needs and moves no pixels between processes; separate
    pools of decode tasks and embed actors, sized ahead, leave one of them short."""

    stages: tuple[Stage, ...]
    name: ClassVar[str] = "read+decode+embed"
    placement: ClassVar[str] = ACTOR

    def open(self) -> Callable[[Batch], Iterator[Batch]]:
        return partial(run_through, tuple(stage.open() for stage in self.stages))


def run_through(runs: tuple[Callable[[Batch], Iterator[Batch]], ...], work: Batch) -> Iterator[Batch]:
    """``work`` through each stage's function in turn, lazily."""
    batches: Iterator[Batch] = iter((work,))
    for run in runs:
        batches = _each(run, batches)
    return batches


def _each(run: Callable[[Batch], Iterator[Batch]], batches: Iterator[Batch]) -> Iterator[Batch]:
    for batch in batches:
        yield from run(batch)


@dataclass(frozen=True)
class MapSettings:
    """Everything extraction needs, derived once from the run's config (picklable: it
    travels to worker processes and Ray tasks)."""

    read: ReadSettings
    decode: DecodeSettings
    embed: EmbedSettings
    batch_size: int = 64


def gpus_here() -> int:
    """GPUs the embed stage could use on this machine (CUDA sessions of ONNX Runtime)."""
    from fastdup_ray.map.embed import cuda_available

    return int(cuda_available())


def cuda_problem_here() -> str | None:
    """None when a CUDA session really starts in this process; else why not (embed.cuda_problem)."""
    from fastdup_ray.map.embed import cuda_problem

    return cuda_problem()


class Sink(Protocol):
    """Where an engine hands every finished batch, in order, on the driver."""

    def add(self, batch: Batch) -> None: ...

    def gave_up(self, unit: str) -> bool:
        """True once ``unit`` is lost (its storage failed): its further cuts need not run."""


@dataclass(frozen=True)
class Piece:
    """A cut of a unit, as one WORK batch, for an engine that runs every stage on it."""

    unit: str
    work: Batch = field(repr=False)


@dataclass(frozen=True)
class MapPlan:
    """The units to extract and how: the engines schedule what this declares."""

    settings: MapSettings
    units: tuple[WorkUnit, ...]

    @property
    def compute(self) -> str:
        return self.settings.embed.compute

    @property
    def row_bytes(self) -> int:
        """Bytes of one decoded row in flight (its pixels)."""
        size = self.settings.decode.image_size
        return size * size * 3

    def on(self, compute: str) -> MapPlan:
        """The plan embedding on ``compute`` instead (a cluster without the GPU asked for)."""
        embed = replace(self.settings.embed, compute=compute)
        return replace(self, settings=replace(self.settings, embed=embed))

    def batch_rows(self, parts: int) -> int:
        """``batch_size``, but a run of one unit is cut into at least ``parts`` batches:
        small runs get smaller batches, so that every worker has work from the start."""
        if len(self.units) != 1:
            return self.settings.batch_size
        return max(1, min(self.settings.batch_size, -(-len(self.units[0].locations) // parts)))

    def stages(self, rows_per_batch: int) -> tuple[Stage, ...]:
        """The stages in order, reading and decoding ``rows_per_batch`` rows at a time."""
        return (
            ReadDecode(self.settings.read, self.settings.decode, rows_per_batch),
            Embed(self.settings.embed),
        )

    def work_rows(self) -> list[dict]:
        """One WORK row per unit, read whole by one task (its rows are counted)."""
        return [work_row(u.name, u.kind, u.locations, boxes=_unit_boxes(u, u.locations)) for u in self.units]

    def fused(self, rows_per_batch: int) -> Fused:
        """The stages as one, for WORK rows of :meth:`work_pieces`."""
        return Fused(self.stages(rows_per_batch))

    def work_pieces(self, rows_per_batch: int) -> list[dict]:
        """WORK rows for workers that run every stage: loose files in the cuts of
        :func:`unit_cuts`, so that every worker has some from the start; an archive whole,
        one stream read where it runs (not on the driver)."""
        rows = []
        for unit in self.units:
            if unit.kind != "files":
                rows.append(
                    work_row(unit.name, unit.kind, unit.locations, boxes=_unit_boxes(unit, unit.locations))
                )
                continue
            for locations, first, _, closes, boxes in unit_cuts(unit, self.settings.read, rows_per_batch):
                rows.append(work_row(unit.name, unit.kind, locations, first, closes, boxes))
        return rows

    def pieces(self, rows_per_batch: int, sink: Sink) -> Iterator[Piece]:
        """Every unit cut into pieces of ``rows_per_batch`` rows, in listing order; a unit
        ``sink`` gave up on is not cut further."""
        for unit in self.units:
            for piece in unit_pieces(unit, self.settings.read, rows_per_batch):
                if sink.gave_up(unit.name):
                    break  # the storage failed under this unit: a rerun reads it whole
                yield piece


def unit_pieces(unit: WorkUnit, read: ReadSettings, rows_per_batch: int) -> Iterator[Piece]:
    """The cuts of :func:`unit_cuts` as WORK batches."""
    for locations, first, items, closes, boxes in unit_cuts(unit, read, rows_per_batch):
        yield Piece(
            unit.name, work_batch(unit.name, unit.kind, locations, first, closes, items=items, boxes=boxes)
        )


def unit_cuts(
    unit: WorkUnit, read: ReadSettings, rows_per_batch: int
) -> Iterator[tuple[tuple, int, list | None, bool, str]]:
    """(locations, first row, Items already read, closes, boxes JSON) of each cut of
    ``unit``: loose files as runs of locations that a worker reads itself (reads run in
    parallel); archive members as Items read here, in order (an archive is one stream).
    The last cut closes the unit (a unit of nothing is one closing cut). In a run of
    bounding boxes each cut carries the boxes of its images, and the last one also those
    of images its unit never gave (each a bad row)."""
    previous = None
    given: set[str] = set()
    for cut in _cuts(unit, read, rows_per_batch):
        if previous is not None:
            yield *previous, False, _unit_boxes(unit, _names(*previous))
        previous = cut
        given.update(_names(*cut))
    locations, first, items = previous or ((), 0, None)
    names = _names(locations, first, items) | (set(unit.boxes) - given if unit.boxes else set())
    yield locations, first, items, True, _unit_boxes(unit, names)


def _names(locations, first: int, items) -> set[str]:
    """The images a cut gives: its locations, or the Items read for it."""
    return set(locations) | {item.location for item in items or ()}


def _unit_boxes(unit: WorkUnit, locations) -> str:
    """The JSON of ``unit``'s boxes of these locations (all of an archive's for its one
    location), '' in a run of whole images."""
    if unit.boxes is None:
        return ""
    if unit.kind != "files" and len(unit.locations) == 1 and tuple(locations) == unit.locations:
        return boxes_json(unit.boxes)
    wanted = set(locations)
    return boxes_json({loc: found for loc, found in unit.boxes.items() if loc in wanted})


def _cuts(unit: WorkUnit, read: ReadSettings, rows: int) -> Iterator[tuple[tuple, int, list | None]]:
    """(locations, first row, Items already read) of each cut of ``unit``."""
    if unit.kind == "files":
        for start in range(0, len(unit.locations), rows):
            yield unit.locations[start : start + rows], start, None
        return
    pending: list[Item] = []
    count = 0
    for item in read_unit(unit, read):
        pending.append(item)
        if len(pending) == rows:
            yield (), count, pending
            count, pending = count + len(pending), []
    if pending:
        yield (), count, pending


__all__ = [
    "ACTOR",
    "Fused",
    "TASK",
    "MapPlan",
    "MapSettings",
    "Piece",
    "Sink",
    "Stage",
    "cuda_problem_here",
    "gpus_here",
]

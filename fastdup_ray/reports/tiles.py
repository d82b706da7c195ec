"""What every gallery's cards are made of: tiles with the captions they share
(:class:`TileMaker`), and the helpers the galleries share to cut their rows (a count,
fastdup's ``slice`` of labels) and to say how to rerun when a gallery is empty.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from fastdup_ray.errors import ConfigError
from fastdup_ray.reports.render import Tile
from fastdup_ray.reports.tables import ImageSource, KeepMarkers, RunTables


def limit_rows(table: pl.DataFrame, num_images: int | None) -> pl.DataFrame:
    if num_images is not None and (
        isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)) or num_images < 0
    ):
        raise ConfigError(f"num_images must be a whole number >= 0 or None, got {num_images!r}")
    return table if num_images is None else table.head(num_images)


def card_layout(tiles: Sequence[Tile]) -> str:
    """Two images sit beside another card in the grid; more take a whole row."""
    return "pair" if len(tiles) <= 2 else "wide"


def as_id(value) -> int | None:
    return None if value is None else int(value)


# Which image of a component the galleries mark as the one dedup keeps, unless told.
DEFAULT_KEEP = "resolution"
# fastdup's two slices that compare labels instead of naming one.
LABEL_VIEWS = ("diff", "same")


def label_view(slice_) -> str | None:
    """'diff' or 'same' when ``slice`` is one of fastdup's two label comparisons."""
    return slice_ if isinstance(slice_, str) and slice_ in LABEL_VIEWS else None


def slice_labels(
    tables: RunTables, slice_: str | Sequence[str] | None, compares: bool = True
) -> set[str] | None:
    """The labels a gallery keeps (fastdup's ``slice``); None keeps every row, and so do
    'diff' and 'same', which compare labels (they need labels all the same), in the
    galleries that compare two images (``compares``)."""
    if slice_ is None:
        return None
    if tables.labels is None:
        raise ConfigError(
            "slice needs annotations: a frame with filename and label columns "
            "(Visualizer(work_dir, annotations=frame))"
        )
    if label_view(slice_):
        if not compares:
            raise ConfigError(
                f"slice={slice_!r} compares the labels of similar images: it is for the similarity, "
                "duplicates and component galleries; here slice takes a label or a list of labels"
            )
        return None
    return {slice_} if isinstance(slice_, str) else {str(label) for label in slice_}


def labelled(table: pl.DataFrame, column: str, tables: RunTables, name: str) -> pl.DataFrame:
    """``table`` with the label of the image in ``column`` as column ``name`` (null for
    an image without one)."""
    labels = tables.labels or {}
    mapping = pl.DataFrame(
        {column: list(labels), name: list(labels.values())}, schema={column: pl.String, name: pl.String}
    )
    return table.join(mapping, on=column, how="left", maintain_order="left")


def pairs_by_labels(pairs: pl.DataFrame, tables: RunTables, view: str) -> pl.DataFrame:
    """The pairs whose two images' labels differ ('diff') or agree ('same'); a pair with
    an unlabelled image is neither."""
    both = labelled(labelled(pairs, "from", tables, "_label_from"), "to", tables, "_label_to")
    agree = pl.col("_label_from") == pl.col("_label_to")
    known = pl.col("_label_from").is_not_null() & pl.col("_label_to").is_not_null()
    return both.filter(known & (~agree if view == "diff" else agree)).drop("_label_from", "_label_to")


def in_slice(table: pl.DataFrame, column: str, tables: RunTables, wanted: set[str] | None) -> pl.DataFrame:
    """Rows whose image in ``column`` has a label in ``wanted``."""
    if wanted is None:
        return table
    names = [name for name, label in tables.labels.items() if label in wanted]
    return table.filter(pl.col(column).is_in(names))


def slice_note(wanted: set[str] | None, tables: RunTables) -> str:
    if wanted is None:
        return ""
    present = sorted(set(tables.labels.values()))
    return (
        f"no rows whose image has a label in {sorted(wanted)} "
        f"(labels in the annotations: {', '.join(present[:20]) or 'none'})"
    )


def rerun_hint(option: str) -> str:
    return f"run again with {option} (same command and work dir: the extracted features are reused)"


def lowered(value: float, step: float = 0.1, floor: float = 0.05) -> float:
    return round(max(floor, value - step), 2)


class TileMaker:
    """Tiles with the captions every gallery shares: the source (test or train image),
    the label, resolution and file size, and dedup's keep marker when asked for."""

    def __init__(self, tables: RunTables, keep: str | None = None) -> None:
        self.tables = tables
        self.markers = tables.keep_markers(keep) if keep else None
        self._facts: dict[int, dict] = {}

    def prepare(self, source: ImageSource, ids) -> None:
        """Read the resolution and size of the images about to be shown, in one go."""
        wanted = [int(i) for i in ids if i is not None]
        self._facts[id(source)] = {**self._facts.get(id(source), {}), **source.facts(wanted)}

    def tile(
        self,
        source: ImageSource,
        image_id,
        location: str,
        captions: Sequence[str] = (),
        on_card: Sequence[int] = (),
        label: str | None = None,
    ) -> Tile:
        image_id = as_id(image_id)
        lines = [source.label] if source.label else []
        label = self.tables.label(location) if label is None else label
        if label is not None:
            lines.append(f"label: {label}")
        lines += captions
        facts = self._facts.get(id(source), {}).get(image_id)
        if facts is not None:
            lines.append(facts.caption())
        tile = Tile(image_id, location, lines, source)
        if isinstance(self.markers, KeepMarkers) and image_id is not None and not self.tables.is_test_run:
            self._mark(tile, self.markers, on_card)
        return tile

    def _mark(self, tile: Tile, markers: KeepMarkers, on_card: Sequence[int]) -> None:
        if tile.image_id in markers.kept:
            tile.marker, tile.marker_text = "keep", "dedup keeps"
            return
        component = markers.component_of.get(tile.image_id)
        if component is None:
            return
        tile.marker, tile.marker_text = "remove", "dedup removes"
        keeper = markers.keeper_of.get(component)
        if keeper is not None and keeper not in on_card:
            names = self.tables.from_images.names
            tile.captions.append(f"kept instead: {names['filename'][keeper]}")

    def note(self) -> list[str]:
        if self.markers is None:
            return []
        if isinstance(self.markers, str):
            return [self.markers]
        return [
            f"Green solid frame: the image fastdup-ray dedup --keep {self.markers.rule} keeps "
            "(one image per component); red dashed frame: an image it removes."
        ]

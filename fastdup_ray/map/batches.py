"""The map's work on one batch: decode Items into a DECODED batch, embed it into an EMBEDDED one.

Plain functions and one class over the record of :mod:`fastdup_ray.map.record`; the
stages (:mod:`fastdup_ray.map.plan`) run them in whatever process an engine gives them.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict

import numpy as np
from PIL import Image

from fastdup_ray.map.crops import Box, Margin, crop_name
from fastdup_ray.map.decode import (
    STAT_COLUMNS,
    BadImage,
    content_hash,
    decode_crops,
    decode_with_thumbnail,
    image_stats,
    make_thumbnail,
    resize_frame,
)
from fastdup_ray.map.embed import Embedder
from fastdup_ray.map.record import DECODED, EMBEDDED, UNIT_END, Batch
from fastdup_ray.map.sources import Item


def decode_items(
    unit: str,
    items: list[Item],
    size: int,
    first_seq: int,
    total: int | None = None,
    thumbnail_size: int = 0,
    boxes: list[list[Box] | None] | None = None,
    margin: Margin = Margin(),
) -> Batch:
    """Decode a run of Items of one unit into a DECODED batch; with ``total`` a UNIT_END
    row closes the unit, announcing ``total`` rows before it.

    With ``thumbnail_size`` each good row also carries a JPEG thumbnail for the galleries,
    made from the pixels already decoded, so no report ever re-reads the dataset. Each
    file's bytes get a content hash (``hash``); a byte-identical copy of an earlier row of
    the batch is not decoded again (``copy_of`` names that row, else -1). ``boxes``, one
    entry per item: its bounding boxes, each a row of its own (decode_boxes), or None;
    ``margin``: what is added around each box before it is cut."""
    widths = [1 if boxes is None or boxes[i] is None else len(boxes[i]) for i in range(len(items))]
    rows = sum(widths) + (total is not None)
    batch = DECODED.empty(rows, {"pixels": (size, size, 3)})
    batch["unit"][:] = unit
    batch["seq"][:] = np.arange(first_seq, first_seq + rows, dtype=np.int64)
    first_with: dict[str, int] = {}
    row = 0
    for i, item in enumerate(items):
        if boxes is not None and boxes[i] is not None:
            decode_boxes(batch, row, item, boxes[i], size, thumbnail_size, first_with, margin)
        else:
            decode_row(batch, row, item, size, thumbnail_size, first_with)
        row += widths[i]
    if total is not None:
        batch["control"][-1], batch["unit_rows"][-1] = UNIT_END, total
    return batch


STAT_FIELDS = tuple(f"stat_{s}" for s in STAT_COLUMNS)
# What a row that copies an earlier one (same bytes, same box) takes from it.
COPIED_FIELDS = ("pixels", "ok", "reason", "thumbnail", "boxed", *STAT_FIELDS)


def copy_row(batch: Batch, row: int, source: int) -> None:
    """Row ``row`` as row ``source``'s results: no second decode of the same content."""
    batch["copy_of"][row] = source
    for name in COPIED_FIELDS:
        batch[name][row] = batch[name][source]


def decode_boxes(
    batch: Batch,
    row: int,
    item: Item,
    boxes: list[Box],
    size: int,
    thumbnail_size: int,
    first_with: dict,
    margin: Margin = Margin(),
) -> None:
    """Rows ``row`` on of ``batch``, one per box of ``item``, its image decoded once: each
    the crop's pixels, statistics and thumbnails, or why it is bad (the image's reason
    when the image is bad). A crop's ``hash`` is of the file's bytes and the box."""
    rows = range(row, row + len(boxes))
    for r, box in zip(rows, boxes):
        batch["path"][r] = crop_name(item.location, box)
        if item.annotations:
            batch["annotations"][r] = json.dumps(item.annotations, ensure_ascii=False, default=str)
    if not item.ok:
        for r in rows:
            batch["reason"][r], batch["storage_failed"][r] = item.reason, item.storage_failed
        return
    if item.pixels is not None:
        for r in rows:
            batch["reason"][r] = "bounding boxes of a video frame are not supported"
        return
    file_hash = content_hash(item.data)
    for r, box in zip(rows, boxes):
        batch["hash"][r] = hashlib.blake2b(f"{file_hash}#{box.key}".encode(), digest_size=16).hexdigest()
    if all(first_with.get(batch["hash"][r], r) != r for r in rows):
        for r in rows:  # a byte-identical copy of an image with the same boxes: its rows
            copy_row(batch, r, first_with[batch["hash"][r]])
        return
    for r in rows:
        first_with.setdefault(batch["hash"][r], r)
    try:
        crops, _ = decode_crops(item.data, boxes, size, thumbnail_size, margin)
    except BadImage as exc:
        for r in rows:
            batch["reason"][r] = str(exc)
        return
    for r, result in zip(rows, crops):
        if isinstance(result, str):
            batch["reason"][r] = result
            continue
        batch["pixels"][r], (width, height), batch["thumbnail"][r], batch["boxed"][r] = result
        batch["ok"][r] = True
        for name, value in image_stats(batch["pixels"][r], width, height, len(item.data)).items():
            batch[f"stat_{name}"][r] = value


def decode_row(batch: Batch, i: int, item: Item, size: int, thumbnail_size: int, first_with: dict) -> None:
    """Row ``i`` of ``batch`` from ``item``: pixels, statistics and thumbnail, or why it is bad."""
    batch["path"][i] = item.location
    if item.annotations:
        batch["annotations"][i] = json.dumps(item.annotations, ensure_ascii=False, default=str)
    if not item.ok:
        batch["reason"][i], batch["storage_failed"][i] = item.reason, item.storage_failed
        return
    if item.data is not None:
        batch["hash"][i] = content_hash(item.data)
        source = first_with.setdefault(batch["hash"][i], i)
        if source != i:  # byte-identical to an earlier row: its results, not a second decode
            copy_row(batch, i, source)
            return
    try:
        if item.pixels is not None:  # a video frame: no file of its own
            batch["pixels"][i] = resize_frame(item.pixels, size)
            (width, height), file_size = item.pixels.shape[1::-1], 0
            batch["thumbnail"][i] = make_thumbnail(Image.fromarray(item.pixels), thumbnail_size)
        else:
            batch["pixels"][i], (width, height), batch["thumbnail"][i] = decode_with_thumbnail(
                item.data, size, thumbnail_size
            )
            file_size = len(item.data)
        batch["ok"][i] = True
    except BadImage as exc:
        batch["reason"][i] = str(exc)
        return
    # Statistics come from the pixels already decoded: no second read of the image.
    for name, value in image_stats(batch["pixels"][i], width, height, file_size).items():
        batch[f"stat_{name}"][i] = value


# Vectors of recently embedded files by content hash, per process: a byte-identical copy
# in a later batch (common in web crawls) is not run through the model again. 8,192
# vectors of the shipped model's d=320 are 10 MiB (40 MiB at d=1280).
RECENT_VECTORS = 8192


class EmbedBatches:
    """One ONNX Runtime session, reused for every batch: a DECODED batch in, its EMBEDDED
    batch out. Each distinct file content is embedded once: copies within a batch
    (``copy_of``) and contents embedded recently by this process take the vector already
    computed."""

    def __init__(self, model_path: str | None, d: int, compute: str) -> None:
        self.embedder = Embedder(model_path, d=d, compute=compute, threads=1)
        self.d = d
        self.recent: OrderedDict[str, np.ndarray] = OrderedDict()

    def __call__(self, batch: Batch) -> Batch:
        DECODED.check(batch)
        ok, hashes, copy_of = batch["ok"].astype(bool), batch["hash"], batch["copy_of"]
        vectors = np.zeros((len(ok), self.d), dtype=np.float32)
        known = np.array([bool(h) and h in self.recent for h in hashes], dtype=bool)
        for i in np.flatnonzero(ok & known):
            vectors[i] = self.recent[hashes[i]]
        fresh = ok & ~known & (copy_of < 0)
        if fresh.any():
            vectors[fresh] = self.embedder.embed(batch["pixels"][fresh])
            self.remember(hashes[fresh], vectors[fresh])
        copies = np.flatnonzero(ok & ~known & (copy_of >= 0))
        vectors[copies] = vectors[copy_of[copies]]
        out = {key: value for key, value in batch.items() if key != "pixels"}
        out["embedding"] = vectors
        return EMBEDDED.check(out)

    def remember(self, hashes: np.ndarray, vectors: np.ndarray) -> None:
        for content, vector in zip(hashes, vectors):
            if content:
                self.recent[content] = vector
                self.recent.move_to_end(content)
        while len(self.recent) > RECENT_VECTORS:
            self.recent.popitem(last=False)

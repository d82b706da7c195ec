"""Bounding boxes: the boxes of an image, the name of each crop, and the crop itself.

A box is fastdup's axis-aligned ``col_x, row_y, width, height`` (COCO's x, y, w, h) or a
rotated quadrilateral ``x1, y1, ... x4, y4`` (its corners in order, the first the
top-left of the object, as DOTA lists them), in pixels of the upright image (after
EXIF orientation, as OpenCV's imread and image viewers show it).

Each box is a row of its own in every output, named ``<image location>#bbox=x,y,w,h``
(or ``#quad=x1,y1,...,y4``): the name carries the image and the box, so a row's whole
image and box are found from its name alone (:func:`split_crop_name`).

A box partly outside its image is clipped to it (the part inside is the object seen); a
box wholly outside, of zero or negative width, height or area, or with a number that is
not finite, is a bad row (features.bad.csv) with the reason. Pure functions over PIL
images and numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw

XYWH = "bbox"  # fastdup's col_x, row_y, width, height
QUAD = "quad"  # a rotated box's four corners
XYWH_COLUMNS = ("col_x", "row_y", "width", "height")
QUAD_COLUMNS = ("x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4")


class BadBox(Exception):
    """A box that gives no crop; the message is the reason written to features.bad.csv."""


def _number(value: float) -> str:
    """A coordinate as names carry it: whole numbers without a point, others exactly."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class Box:
    """One box: its kind (XYWH or QUAD) and its numbers, in the column order of that kind."""

    kind: str
    values: tuple[float, ...]

    @property
    def key(self) -> str:
        """``bbox=x,y,w,h`` or ``quad=x1,...,y4``: the box as a crop's name carries it."""
        return f"{self.kind}=" + ",".join(_number(v) for v in self.values)

    def corners(self) -> list[tuple[float, float]]:
        """The four corners, clockwise from the top-left (for an upright box)."""
        if self.kind == XYWH:
            x, y, w, h = self.values
            return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
        v = self.values
        return [(v[0], v[1]), (v[2], v[3]), (v[4], v[5]), (v[6], v[7])]

    def sides(self) -> tuple[float, float]:
        """(width, height) of the crop it gives, in original pixels: a rotated box's first
        and second edges."""
        if self.kind == XYWH:
            return self.values[2], self.values[3]
        (ax, ay), (bx, by), (cx, cy), _ = self.corners()
        return math.hypot(bx - ax, by - ay), math.hypot(cx - bx, cy - by)


@dataclass(frozen=True)
class Margin:
    """fastdup's margins around every box before it is cut: ``additive`` pixels on each
    side, and the box made ``horiz`` (of its width) wider and ``vert`` (of its height)
    taller, half on each side. A rotated box grows along its own edges."""

    additive: float = 0.0
    horiz: float = 0.0
    vert: float = 0.0

    def grow(self, box: Box) -> Box:
        """``box`` with the margins added (the box itself when there are none)."""
        if not (self.additive or self.horiz or self.vert):
            return box
        width, height = box.sides()
        dx, dy = self.additive + self.horiz * width / 2, self.additive + self.vert * height / 2
        if box.kind == XYWH:
            x, y, w, h = box.values
            return Box(XYWH, (x - dx, y - dy, w + 2 * dx, h + 2 * dy))
        (ax, ay), (bx, by), _, (dx4, dy4) = box.corners()
        ux, uy = (bx - ax) / width, (by - ay) / width  # along the first (top) edge
        vx, vy = (dx4 - ax) / height, (dy4 - ay) / height  # down the left edge
        signs = ((-1, -1), (1, -1), (1, 1), (-1, 1))  # each corner's way out, clockwise from top-left
        grown = [
            (px + su * dx * ux + sv * dy * vx, py + su * dx * uy + sv * dy * vy)
            for (px, py), (su, sv) in zip(box.corners(), signs)
        ]
        return Box(QUAD, tuple(v for point in grown for v in point))


def crop_name(location: str, box: Box) -> str:
    """The row name of ``box`` of the image at ``location``."""
    return f"{location}#{box.key}"


def split_crop_name(name: str) -> tuple[str, Box | None]:
    """(image location, box) of a crop's row name; (name, None) for a name of a whole image."""
    location, mark, key = name.rpartition("#")
    kind, equals, numbers = key.partition("=")
    if not mark or not equals or kind not in (XYWH, QUAD):
        return name, None
    try:
        values = tuple(float(v) for v in numbers.split(","))
    except ValueError:
        return name, None
    if len(values) != (4 if kind == XYWH else 8):
        return name, None
    return location, Box(kind, values)


def box_problem(box: Box, width: int, height: int) -> str | None:
    """Why ``box`` gives no crop of an image of ``width`` x ``height``, or None."""
    if not all(math.isfinite(v) for v in box.values):
        return f"bounding box {box.key}: a coordinate is not a finite number"
    if box.kind == XYWH:
        x, y, w, h = box.values
        if w <= 0 or h <= 0:
            return f"bounding box {box.key}: zero or negative width or height"
        if x >= width or y >= height or x + w <= 0 or y + h <= 0:
            return f"bounding box {box.key} is outside the image ({width}x{height})"
        return None
    if _area(box.corners()) <= 0:
        return f"bounding box {box.key}: a rotated box of zero area"
    xs, ys = [p[0] for p in box.corners()], [p[1] for p in box.corners()]
    if min(xs) >= width or min(ys) >= height or max(xs) <= 0 or max(ys) <= 0:
        return f"bounding box {box.key} is outside the image ({width}x{height})"
    return None


def _area(corners: list[tuple[float, float]]) -> float:
    """The quadrilateral's area (shoelace), whichever way round its corners go."""
    twice = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]))
    return abs(twice) / 2


def crop_size(box: Box, width: int, height: int) -> tuple[int, int]:
    """(width, height) in original pixels of the crop ``box`` gives (clipped to the image)."""
    if box.kind == XYWH:
        x, y, w, h = box.values
        left, top = max(0.0, x), max(0.0, y)
        right, bottom = min(float(width), x + w), min(float(height), y + h)
        return max(1, round(right - left)), max(1, round(bottom - top))
    w, h = box.sides()
    return max(1, round(w)), max(1, round(h))


def crop(image: Image.Image, box: Box, width: int, height: int) -> Image.Image:
    """The part of ``image`` inside ``box``; ``image`` is the upright picture of ``width`` x
    ``height`` original pixels, possibly decoded smaller (a JPEG's draft), so coordinates
    are scaled by its size. A rotated box is warped upright (its first edge the top);
    raises BadBox when the box gives no crop."""
    problem = box_problem(box, width, height)
    if problem:
        raise BadBox(problem)
    sx, sy = image.width / width, image.height / height
    if box.kind == XYWH:
        x, y, w, h = box.values
        left, top = max(0, math.floor(x * sx)), max(0, math.floor(y * sy))
        right = min(image.width, max(left + 1, math.ceil((x + w) * sx)))
        bottom = min(image.height, max(top + 1, math.ceil((y + h) * sy)))
        return image.crop((left, top, right, bottom))
    w, h = box.sides()
    out = (max(1, round(w * sx)), max(1, round(h * sy)))
    (ax, ay), (bx, by), (cx, cy), (dx, dy) = [(px * sx, py * sy) for px, py in box.corners()]
    # PIL's QUAD takes the source corners that land on the output's upper-left, lower-left,
    # lower-right and upper-right: ours are upper-left, upper-right, lower-right, lower-left.
    return image.transform(
        out, Image.Transform.QUAD, (ax, ay, dx, dy, cx, cy, bx, by), Image.Resampling.BILINEAR
    )


def draft_scale(boxes: list[Box], size: int) -> float:
    """The smallest scale (<= 1) of the whole image at which every box still has ``size``
    pixels on each side: a JPEG may be decoded that much smaller (libjpeg's draft) without
    a crop losing any pixel the model's input keeps."""
    sides = [min(box.sides()) for box in boxes if all(math.isfinite(v) for v in box.values)]
    smallest = min((s for s in sides if s > 0), default=0.0)
    return 1.0 if smallest <= size else size / smallest


def draw_box(image: Image.Image, box: Box, width: int, height: int) -> Image.Image:
    """A copy of ``image`` (the whole upright picture of ``width`` x ``height`` original
    pixels, at any scale) with ``box`` drawn on it, for draw_bbox galleries."""
    marked = image.copy()
    sx, sy = image.width / width, image.height / height
    line = max(2, round(max(image.size) / 100))
    corners = [(x * sx, y * sy) for x, y in box.corners()]
    ImageDraw.Draw(marked).polygon(corners, outline=(255, 0, 0), width=line)
    return marked


# A unit's boxes: {image location: [Box, ...]}, as they travel in a WORK row (JSON).
Boxes = dict[str, list[Box]]


def boxes_json(boxes: Boxes) -> str:
    """The JSON a WORK row carries: each location's boxes as [kind, [numbers]], in order."""
    return json.dumps({loc: [[b.kind, list(b.values)] for b in found] for loc, found in boxes.items()})


def boxes_from_json(text: str) -> Boxes | None:
    """boxes_json read back; None for '' (a run of whole images)."""
    if not text:
        return None
    return {
        loc: [Box(kind, tuple(values)) for kind, values in found] for loc, found in json.loads(text).items()
    }


def archive_of(location: str, archive_extensions: tuple[str, ...]) -> str | None:
    """The archive an image location lies in (``/data/a.tar/x/1.jpg`` -> ``/data/a.tar``), or None."""
    parts = location.split("/")
    for i, part in enumerate(parts[:-1]):
        if i and part.lower().endswith(archive_extensions):
            return "/".join(parts[: i + 1])
    return None


def with_boxes(units: list, boxes: Boxes, archive_extensions: tuple[str, ...]) -> list:
    """The work units, each with the boxes of its images (``boxes``) and a fingerprint
    that changes when they do: a shard is reused only for the same images and boxes."""
    by_input: dict[str, Boxes] = {}
    for location, found in boxes.items():
        by_input.setdefault(archive_of(location, archive_extensions) or location, {})[location] = found
    out = []
    for unit in units:
        mine: Boxes = {}
        for location in unit.locations:
            mine.update(by_input.get(location, {}))
        digest = hashlib.sha256(f"{unit.fingerprint}\n{boxes_json(mine)}".encode()).hexdigest()[:16]
        out.append(replace(unit, boxes=mine, fingerprint=digest))
    return out

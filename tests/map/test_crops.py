"""The bounding-box core (map/crops.py, decode_crops): boxes cut from a decoded picture,
rotated boxes warped upright, bad boxes named with their reason, crop names that carry
the image and the box, and a JPEG drafted no smaller than its smallest box needs."""

import io

import numpy as np
import pytest
from PIL import Image

from fastdup_ray.map.crops import (
    QUAD,
    XYWH,
    BadBox,
    Box,
    Margin,
    boxes_from_json,
    boxes_json,
    crop,
    crop_name,
    crop_size,
    draft_scale,
    split_crop_name,
)
from fastdup_ray.map.decode import decode_crops
from fastdup_ray.map.plan import unit_pieces
from fastdup_ray.map.record import WORK
from fastdup_ray.map.sources import ReadSettings, WorkUnit


def quadrants(width: int = 200, height: int = 100) -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, white bottom-right."""
    picture = Image.new("RGB", (width, height), (255, 255, 255))
    picture.paste((255, 0, 0), (0, 0, width // 2, height // 2))
    picture.paste((0, 255, 0), (width // 2, 0, width, height // 2))
    picture.paste((0, 0, 255), (0, height // 2, width // 2, height))
    return picture


def mean_colour(picture: Image.Image) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(picture, np.float32).reshape(-1, 3).mean(0).round())


def test_an_axis_aligned_box_cuts_its_part_of_the_picture():
    part = crop(quadrants(), Box(XYWH, (110, 10, 60, 30)), 200, 100)
    assert part.size == (60, 30) and mean_colour(part) == (0, 255, 0)


def test_a_picture_decoded_smaller_is_cut_at_the_scaled_box():
    half = quadrants().resize((100, 50), Image.Resampling.NEAREST)  # a JPEG's draft at 1/2
    part = crop(half, Box(XYWH, (10, 60, 60, 30)), 200, 100)
    assert part.size == (30, 15) and mean_colour(part) == (0, 0, 255)


def test_a_box_partly_outside_is_clipped_to_the_picture():
    box = Box(XYWH, (150, 60, 100, 100))  # reaches 50 px past the right and bottom edges
    part = crop(quadrants(), box, 200, 100)
    assert part.size == (50, 40) == crop_size(box, 200, 100)
    assert mean_colour(part) == (255, 255, 255)


@pytest.mark.parametrize(
    ("box", "reason"),
    [
        (Box(XYWH, (250, 10, 20, 20)), "outside the image (200x100)"),
        (Box(XYWH, (-50, 10, 40, 20)), "outside the image"),
        (Box(XYWH, (10, 10, 0, 20)), "zero or negative width or height"),
        (Box(XYWH, (10, 10, 20, -5)), "zero or negative width or height"),
        (Box(XYWH, (10, float("nan"), 20, 20)), "not a finite number"),
        (Box(QUAD, (10, 10, 50, 10, 90, 10, 30, 10)), "zero area"),
        (Box(QUAD, (300, 10, 350, 10, 350, 60, 300, 60)), "outside the image"),
    ],
)
def test_a_box_that_gives_no_crop_is_refused_with_its_reason(box, reason):
    with pytest.raises(BadBox, match=reason.replace("(", r"\(").replace(")", r"\)")):
        crop(quadrants(), box, 200, 100)


def test_a_rotated_box_is_warped_upright_first_edge_on_top():
    # A 40 x 20 box turned a quarter: its first (top) edge runs down the x = 60 line,
    # over red then blue, so upright it is red on the left and blue on the right.
    picture = Image.new("RGB", (100, 100), (0, 0, 0))
    picture.paste((255, 0, 0), (40, 20, 60, 40))  # the box's first half (near its top edge)
    picture.paste((0, 0, 255), (40, 40, 60, 60))  # its second half
    # corners clockwise from the object's top-left: (60,20) (60,60) (40,60) (40,20)
    box = Box(QUAD, (60, 20, 60, 60, 40, 60, 40, 20))
    part = crop(picture, box, 100, 100)
    assert part.size == (40, 20)
    pixels = np.asarray(part, np.int32)
    # the first edge, (60,20)->(60,60), is the top: red on the left, blue on the right
    assert pixels[:, :18, 0].mean() > 200 and pixels[:, 22:, 2].mean() > 200


def test_crop_names_carry_the_image_and_the_box_and_read_back():
    box = Box(XYWH, (10, 20.5, 30, 40))
    name = crop_name("s3://bucket/a#b/photo.jpg", box)
    assert name == "s3://bucket/a#b/photo.jpg#bbox=10,20.5,30,40"
    assert split_crop_name(name) == ("s3://bucket/a#b/photo.jpg", box)
    quad = Box(QUAD, (1, 2, 3, 4, 5, 6, 7, 8))
    assert split_crop_name(crop_name("/d/x.tar/1.jpg", quad)) == ("/d/x.tar/1.jpg", quad)
    assert split_crop_name("/d/plain#1.jpg") == ("/d/plain#1.jpg", None)
    assert boxes_from_json(boxes_json({"/d/1.jpg": [box, quad]})) == {"/d/1.jpg": [box, quad]}


def test_draft_scale_keeps_the_smallest_box_at_the_model_size():
    assert draft_scale([Box(XYWH, (0, 0, 2000, 1000))], 224) == pytest.approx(224 / 1000)
    assert draft_scale([Box(XYWH, (0, 0, 2000, 1000)), Box(XYWH, (0, 0, 100, 100))], 224) == 1.0


def jpeg(picture: Image.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=95)
    return out.getvalue()


def test_decode_crops_decodes_once_and_cuts_every_box_with_its_own_size():
    big = quadrants(2000, 1000)
    boxes = [Box(XYWH, (0, 0, 1000, 500)), Box(XYWH, (1100, 600, 800, 300)), Box(XYWH, (5000, 0, 10, 10))]
    crops, shape = decode_crops(jpeg(big), boxes, 64, 32)
    assert shape == (2000, 1000)
    (red, red_shape, red_thumb, red_boxed), (white, white_shape, _, _), bad = crops
    assert red.shape == (64, 64, 3) and red[..., 0].mean() > 240 and red[..., 1].mean() < 15
    assert white.min() > 235
    assert red_shape == (1000, 500) and white_shape == (800, 300)
    assert Image.open(io.BytesIO(red_thumb)).size == (32, 16)  # the crop's aspect
    assert Image.open(io.BytesIO(red_boxed)).size == (32, 16)  # the whole image's
    assert "outside the image (2000x1000)" in bad


def test_a_small_box_of_a_large_jpeg_keeps_its_detail():
    big = Image.new("RGB", (4000, 3000), (128, 128, 128))
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: gone at any draft reduction
    big.paste(Image.fromarray(stripes), (1000, 1000))
    [(pixels, _, _, _)], _ = decode_crops(jpeg(big), [Box(XYWH, (1000, 1000, 64, 64))], 64, 0)
    assert pixels.astype(np.float32).std() > 60


def test_each_piece_of_an_archive_carries_its_images_boxes_and_the_last_those_never_found(tmp_path):
    from conftest import write_tar

    tar = tmp_path / "t.tar"
    write_tar(tar, {f"{i}.jpg": jpeg(quadrants(40, 40)) for i in range(3)})
    box = Box(XYWH, (0, 0, 10, 10))
    boxes = {f"{tar}/0.jpg": [box], f"{tar}/2.jpg": [box, box], f"{tar}/gone.jpg": [box]}
    unit = WorkUnit("t.tar", "archive", (str(tar),), "f", boxes=boxes)
    pieces = [WORK.check(p.work) for p in unit_pieces(unit, ReadSettings(), 2)]
    carried = [boxes_from_json(str(p["boxes"][0])) for p in pieces]
    assert [sorted(c) for c in carried] == [[f"{tar}/0.jpg"], [f"{tar}/2.jpg", f"{tar}/gone.jpg"]]


def test_margins_grow_a_box_on_every_side_and_a_rotated_one_along_its_edges():
    margin = Margin(additive=5, horiz=0.2, vert=0.5)
    assert margin.grow(Box(XYWH, (100, 100, 50, 20))) == Box(XYWH, (90, 90, 70, 40))
    turned = margin.grow(Box(QUAD, (60, 20, 60, 60, 40, 60, 40, 20)))  # 40 x 20, a quarter turned
    assert turned.sides() == pytest.approx((40 + 10 + 8, 20 + 10 + 10))
    assert turned.values[:2] == pytest.approx((60 + 10, 20 - 9))  # its top-left, moved out both ways
    assert Margin().grow(Box(XYWH, (1, 2, 3, 4))) == Box(XYWH, (1, 2, 3, 4))


def test_a_margin_is_cut_with_the_box_but_a_flat_box_stays_bad():
    picture = quadrants(2000, 1000)
    (part, shape, _, _), flat = decode_crops(
        jpeg(picture), [Box(XYWH, (1010, 10, 80, 80)), Box(XYWH, (10, 10, 0, 80))], 64, 0, Margin(additive=20)
    )[0]
    assert shape == (120, 110)  # grown 20 px each way, clipped at the top edge
    # cut from x=990 (red up to 1000, 5 of the 64 columns) to 1110 (green)
    assert part[:, :4, 0].mean() > 200 and part[:, -8:, 1].mean() > 200
    assert "zero or negative width" in flat

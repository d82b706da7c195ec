import io
import re

import numpy as np
import pytest
from PIL import Image

from fastdup_ray.map.decode import (
    BadImage,
    container_format,
    decode_image,
    decode_with_size,
)
from fastdup_ray.sample import jpeg_bytes, make_scene


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "BMP", "WEBP", "GIF"])
def test_common_formats_decode_to_fixed_size_rgb(fmt):
    pixels = decode_image(encode(make_scene(1), fmt), 224)
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    assert pixels.std() > 5  # a real picture, not a blank


@pytest.mark.parametrize(
    "original, size",
    [
        ((1600, 1200), 224),
        ((500, 333), 176),  # drafted to 250x167, a little under the model's side
    ],
)
def test_large_jpeg_draft_decode_matches_full_decode_closely(original, size):
    big = make_scene(2).resize(original)
    fast = decode_image(jpeg_bytes(big), size).astype(np.float32)
    full = np.asarray(
        Image.open(io.BytesIO(jpeg_bytes(big)))
        .convert("RGB")
        .resize((size, size), Image.Resampling.BILINEAR),
        np.float32,
    )
    assert np.abs(fast - full).mean() < 4


def test_transparency_is_laid_on_white():
    rgba = Image.new("RGBA", (50, 50), (255, 0, 0, 0))
    pixels = decode_image(encode(rgba, "PNG"), 32)
    assert (pixels == 255).all()


def test_palette_with_transparency_and_cmyk_and_16_bit():
    palette = make_scene(3).convert("P")
    palette.info["transparency"] = 0
    assert decode_image(encode(palette, "PNG", transparency=0), 32).shape == (32, 32, 3)
    assert decode_image(encode(make_scene(4).convert("CMYK"), "JPEG"), 32).shape == (32, 32, 3)
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    pixels = decode_image(encode(Image.fromarray(ramp), "PNG"), 64)
    assert pixels[0, 0, 0] < 10 and pixels[-1, -1, 0] > 245  # scaled, not clipped at 255


def test_exif_orientation_is_applied():
    tall = Image.new("RGB", (40, 80), (0, 0, 255))
    tall.paste((255, 0, 0), (0, 0, 40, 40))  # red on top
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
    pixels = decode_image(encode(tall, "JPEG", exif=exif), 16)
    # After rotating 90 degrees clockwise the red half is on the right.
    assert pixels[8, 12, 0] > 200 and pixels[8, 3, 2] > 200


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"this is a text file, not a picture", "not an image"),
        (jpeg_bytes(make_scene(5))[:400], "truncated"),
    ],
)
def test_bad_bytes_give_a_reason(data, reason):
    with pytest.raises(BadImage, match=reason):
        decode_image(data, 224)


def encode_heif_or_avif(image: Image.Image, fmt: str, **kwargs) -> bytes:
    """HEIF through pillow-heif's writer (the test extra installs it), AVIF through Pillow's own."""
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    return encode(image, fmt, **kwargs)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_decode_like_the_jpeg_of_the_same_picture(fmt):
    scene = make_scene(6)
    data = encode_heif_or_avif(scene, fmt, quality=90)
    assert container_format(data) == fmt
    pixels = decode_image(data, 64).astype(np.float32)
    assert np.abs(pixels - decode_image(encode(scene, "PNG"), 64)).mean() < 6  # lossy, but the same picture


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_follow_exif_orientation(fmt):
    wide = make_scene(7).resize((80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    assert decode_with_size(encode_heif_or_avif(wide, fmt, exif=exif.tobytes()), 32)[1] == (40, 80)


@pytest.mark.parametrize("fmt, extra", [("HEIF", "fastdup_ray[heif]"), ("AVIF", "fastdup_ray[avif]")])
def test_without_its_decoder_a_heic_or_avif_file_names_the_extra_to_install(fmt, extra, monkeypatch, caplog):
    import fastdup_ray.map.decode as decode

    data = encode_heif_or_avif(make_scene(8), fmt)
    # As if the plugin were not installed (its opener may already be registered in this process).
    monkeypatch.setattr(decode, "heif_decoder_ready", lambda: False)
    monkeypatch.setattr(decode, "avif_decoder_ready", lambda: False)
    decode._warn_missing_decoder.cache_clear()  # warned once per process: maybe by an earlier test
    with pytest.raises(BadImage, match=r"image skipped: .*pip install '" + re.escape(extra)) as error:
        decode_image(data, 32)
    assert "cannot identify" not in str(error.value) and extra in caplog.text
    assert decode_image(encode(make_scene(8), "PNG"), 32).shape == (32, 32, 3)  # other formats unaffected


def test_only_heif_and_avif_brands_are_taken_for_them():
    mp4_header = b"\0\0\0\x18ftypisom\0\0\x02\0isommp41" + bytes(64)
    assert container_format(mp4_header) is None and container_format(encode(make_scene(9), "PNG")) is None
    # An AVIF whose major brand is the generic mif1 is still AVIF (its compatible brands say so).
    assert container_format(b"\0\0\0\x1cftypmif1\0\0\0\0mif1avifmiaf" + bytes(64)) == "AVIF"


def test_decompression_bomb_is_refused(monkeypatch):
    import fastdup_ray.map.decode as decode

    monkeypatch.setattr(decode.Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(BadImage, match="decompression bomb"):
        decode_image(encode(Image.new("RGB", (100, 100)), "PNG"), 32)


def test_stats_blur_does_not_depend_on_resolution_and_flags_blur():
    from PIL import ImageFilter

    from fastdup_ray.map.decode import decode_with_size, image_stats

    scene = make_scene(8, material=4)  # a printed page: sharp edges
    small, big = scene, scene.resize((1280, 960))
    scores = []
    for image in (small, big, scene.filter(ImageFilter.GaussianBlur(4))):
        pixels, (w, h) = decode_with_size(encode(image, "PNG"), 224)
        scores.append(image_stats(pixels, w, h, 0)["blur"])
    assert abs(scores[0] - scores[1]) / scores[0] < 0.3  # same picture, 4x the pixels
    assert scores[2] < scores[0] / 5  # blurred: far lower


def test_stats_width_height_follow_exif_orientation():
    from fastdup_ray.map.decode import decode_with_size

    exif = Image.Exif()
    exif[0x0112] = 6
    _, size = decode_with_size(encode(Image.new("RGB", (40, 80)), "JPEG", exif=exif), 16)
    assert size == (80, 40)


def test_stats_color_spread_tells_greyscale_from_colour():
    from fastdup_ray.map.decode import decode_with_size, image_stats

    scene = make_scene(9, material=0)
    grey_pixels, (w, h) = decode_with_size(encode(scene.convert("L").convert("RGB"), "PNG"), 64)
    colour_pixels, _ = decode_with_size(encode(scene, "PNG"), 64)
    assert (
        image_stats(grey_pixels, w, h, 0)["color_spread"]
        < 1
        < image_stats(colour_pixels, w, h, 0)["color_spread"]
    )


@pytest.mark.parametrize(
    "original, thumbnail_size, expected",
    [
        ((400, 200), 128, (128, 64)),
        ((200, 400), 128, (64, 128)),
        ((60, 40), 128, (60, 40)),
        ((1000, 500), 256, (256, 128)),
        # decoded at 1/2 or 1/4 scale, a little under the thumbnail's size: still full size
        ((500, 333), 256, (256, 170)),
        ((1000, 750), 256, (256, 192)),
    ],
)
def test_thumbnail_keeps_the_aspect_never_enlarges_and_looks_like_the_image(
    original, thumbnail_size, expected
):
    from fastdup_ray.map.decode import decode_with_thumbnail

    picture = make_scene(3).resize(original)
    _, shape, thumbnail = decode_with_thumbnail(jpeg_bytes(picture), 160, thumbnail_size)
    small = Image.open(io.BytesIO(thumbnail))
    assert shape == original and small.format == "JPEG" and small.size == expected
    reference = np.asarray(picture.resize(expected, Image.Resampling.BOX), np.float32)
    assert np.abs(np.asarray(small.convert("RGB"), np.float32) - reference).mean() < 6

"""Decode stage: image bytes -> fixed-size RGB array, or the reason the image is bad.

Pure functions on bytes and numpy arrays; extract.py runs them in whatever process an
engine gives it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import warnings
from math import ceil

import numpy as np
from PIL import Image, ImageFile, ImageOps, features

from fastdup_ray.map.crops import Box, Margin, box_problem, crop, crop_size, draft_scale, draw_box

log = logging.getLogger("fastdup_ray")

# Refuse decompression bombs instead of allocating gigabytes: PIL raises
# DecompressionBombError above twice this many pixels and warns above it; we treat the
# warning as an error too, so a 100-megapixel trap never reaches the resize.
MAX_IMAGE_PIXELS = 89_478_485
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
# A truncated file must be reported bad, never padded with grey and embedded.
ImageFile.LOAD_TRUNCATED_IMAGES = False


# How far below the model's side (and the thumbnail's) a JPEG may be drafted: the resize
# stretches the rest. At 3/4 a 500x333 photo decodes at 1/2 (250x167) instead of whole, as
# about half of the dev photos do; near-duplicate quality does not move (docs/quality.md,
# "Decode scale").
DRAFT_SIDE = 0.75


class BadImage(Exception):
    """The bytes are not a decodable image; the message is the reason written to features.bad.csv."""


# HEIC/HEIF and AVIF files are ISO-BMFF containers: an ``ftyp`` box whose major or
# compatible brands say what they hold. Pillow reads AVIF itself (its wheels since 11.3),
# HEIF only through pillow-heif; without the decoder such a file is reported with the
# line that installs it, not as "cannot identify image format".
AVIF_BRANDS = frozenset({b"avif", b"avis"})
HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"mif2", b"msf1"}
)
MISSING_DECODER = {
    "HEIF": "HEIC/HEIF image skipped: no HEIF decoder installed "
    "(pip install 'fastdup_ray[heif]', which adds pillow-heif)",
    "AVIF": "AVIF image skipped: this Pillow cannot read AVIF "
    "(pip install 'fastdup_ray[avif]', Pillow >= 11.3)",
}


def container_format(data: bytes) -> str | None:
    """'AVIF' or 'HEIF' when ``data`` starts with an ISO-BMFF ftyp box of those brands, else None
    (MP4 and MOV files have ftyp boxes too, with other brands)."""
    if len(data) < 16 or data[4:8] != b"ftyp":
        return None
    end = min(int.from_bytes(data[:4], "big"), len(data), 256)
    brands = {data[8:12]} | {data[i : i + 4] for i in range(16, end - 3, 4)}
    if brands & AVIF_BRANDS:
        return "AVIF"
    if brands & HEIF_BRANDS:
        return "HEIF"
    return None


@functools.cache
def heif_decoder_ready() -> bool:
    """Whether Pillow can open HEIF here; registers pillow-heif's opener, once per process,
    the first time a HEIF file is met (a run without one never imports it)."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


@functools.cache
def avif_decoder_ready() -> bool:
    """Whether this Pillow was built with libavif (its wheels are, from 11.3 on)."""
    return bool(features.check("avif"))


def require_decoder(data: bytes) -> None:
    """Raise BadImage naming the extra to install when ``data`` is a HEIF or AVIF file
    that no installed decoder reads; the warning is logged once per process and format."""
    kind = container_format(data)
    ready = {"HEIF": heif_decoder_ready, "AVIF": avif_decoder_ready}.get(kind)
    if ready is not None and not ready():
        _warn_missing_decoder(kind)
        raise BadImage(MISSING_DECODER[kind])


@functools.cache
def _warn_missing_decoder(kind: str) -> None:
    log.warning("%s; every such file is listed in features.bad.csv", MISSING_DECODER[kind])


def decode_image(data: bytes, size: int) -> np.ndarray:
    """Decode ``data`` into a (size, size, 3) uint8 RGB array (see decode_with_size)."""
    return decode_with_size(data, size)[0]


def decode_with_size(data: bytes, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode ``data`` into a (size, size, 3) uint8 RGB array, and the image's own
    (width, height) after EXIF orientation.

    The whole image is squashed to size x size (no centre crop: a crop would hide
    differences at the borders). EXIF orientation is applied, transparency is laid on
    white, 16-bit images are scaled to 8 bits, animated images use their first frame.
    Raises BadImage with a short reason for anything that cannot be decoded.
    """
    pixels, shape, _ = decode_with_thumbnail(data, size, 0)
    return pixels, shape


def decode_with_thumbnail(
    data: bytes, size: int, thumbnail_size: int
) -> tuple[np.ndarray, tuple[int, int], bytes]:
    """decode_with_size plus a JPEG thumbnail (longest side ``thumbnail_size``, aspect
    kept; b"" when 0) made from the same decoded pixels, for the galleries."""
    rgb, shape = open_rgb(data, ceil(size * DRAFT_SIDE), longest=ceil(thumbnail_size * DRAFT_SIDE))
    resized = rgb.resize((size, size), Image.Resampling.BILINEAR)
    # The square model input still has every pixel a thumbnail no larger than it needs
    # (only its aspect is squashed), and shrinking it is cheaper than shrinking rgb.
    source = resized if thumbnail_size <= size else rgb
    # Sized from the original's shape, not the drafted one's, which may be a little smaller.
    return np.asarray(resized, dtype=np.uint8), shape, make_thumbnail(source, thumbnail_size, shape)


def open_rgb(
    data: bytes, size: int, scale: float | None = None, longest: int = 0
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode ``data`` to an upright RGB image at least ``size`` on each side and ``longest``
    on its longer side where the original is (with ``scale``: at least that fraction of the
    original on each side), and the original (width, height) after EXIF orientation."""
    if not data:
        raise BadImage("empty file")
    require_decoder(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size  # before draft mode shrinks it
            if image.format == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the image is large, for a
                # fraction of a full decode's cost.
                if scale is not None:
                    wanted = (ceil(width * scale), ceil(height * scale))
                else:
                    longer = max(size, longest)
                    wanted = (longer, size) if width >= height else (size, longer)
                image.draft("RGB", wanted)
            image.load()
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF turns it a quarter
                width, height = height, width
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image), (width, height)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"decompression bomb: {exc}") from None
    except Image.UnidentifiedImageError:
        raise BadImage("not an image (cannot identify image format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        text = str(exc) or type(exc).__name__
        if "truncated" in text.lower():
            raise BadImage(f"truncated image: {text}") from None
        raise BadImage(f"corrupt image: {text}") from None


def decode_crops(
    data: bytes, boxes: list[Box], size: int, thumbnail_size: int, margin: Margin = Margin()
) -> tuple[list[tuple[np.ndarray, tuple[int, int], bytes, bytes] | str], tuple[int, int]]:
    """Decode ``data`` once and cut each of ``boxes`` from it: per box (pixels at size x
    size, its (width, height) in original pixels, its thumbnail, a thumbnail of the whole
    image with the box drawn) or the reason it gives no crop; and the image's own
    (width, height). ``margin``: fastdup's margins, added to each good box before it is
    cut. Raises BadImage when the image itself cannot be decoded.

    Boxes are in original pixels, so a JPEG is drafted only as small as keeps the
    smallest box ``size`` pixels a side (crops.draft_scale): a small box of a large photo
    keeps its detail, and an image of large boxes still decodes at a fraction of the cost."""
    rgb, (width, height) = open_rgb(data, size, scale=draft_scale(boxes, size))
    whole = shrunk(rgb, thumbnail_size, (width, height)) if thumbnail_size > 0 else None
    out: list = []
    for box in boxes:
        problem = box_problem(box, width, height)  # the box as given, before its margins
        if problem:
            out.append(problem)
            continue
        grown = margin.grow(box)
        part = crop(rgb, grown, width, height)
        shape = crop_size(grown, width, height)
        pixels = np.asarray(part.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
        thumbnail = make_thumbnail(part, thumbnail_size, shape)
        boxed = b"" if whole is None else jpeg_of(draw_box(whole, box, width, height))
        out.append((pixels, shape, thumbnail, boxed))
    return out, (width, height)


def jpeg_of(picture: Image.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=80)
    return out.getvalue()


def make_thumbnail(rgb: Image.Image, thumbnail_size: int, shape: tuple[int, int] | None = None) -> bytes:
    """JPEG bytes of a picture of ``shape`` (width, height; default rgb.size) shrunk to fit
    thumbnail_size x thumbnail_size, never enlarged (b"" for 0). ``rgb`` may hold it
    squashed to another shape, as the model's square input does."""
    if thumbnail_size <= 0:
        return b""
    return jpeg_of(shrunk(rgb, thumbnail_size, shape))


def shrunk(rgb: Image.Image, thumbnail_size: int, shape: tuple[int, int] | None = None) -> Image.Image:
    """make_thumbnail's picture before its JPEG encoding."""
    width, height = shape or rgb.size
    scale = min(1.0, thumbnail_size / max(width, height))
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    # An integer box reduction first, then a short area-averaging step: about 0.2 ms an
    # image here against 0.7 ms for Image.thumbnail, on the decode stage's budget. (The
    # model's input keeps bilinear: the thresholds were calibrated on it.)
    factor = min(rgb.width // target[0], rgb.height // target[1])
    small = rgb.reduce(factor) if factor > 1 else rgb
    if small.size != target:
        small = small.resize(
            target,
            Image.Resampling.BOX
            if small.width >= target[0] and small.height >= target[1]
            else Image.Resampling.BILINEAR,
        )
    return small


def picture_pixels(image: Image.Image, size: int) -> np.ndarray:
    """An image already opened with PIL (a search query) as the model input a file of it
    becomes: upright, RGB (transparency on white), squashed to (size, size, 3) uint8."""
    rgb = _to_rgb(ImageOps.exif_transpose(image))
    return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def resize_frame(pixels: np.ndarray, size: int) -> np.ndarray:
    """An already decoded RGB frame (a video's) squashed to (size, size, 3) like an image."""
    resized = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB").resize(
        (size, size), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.uint8)


GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def content_hash(data: bytes) -> str:
    """blake2b (128 bits) of a file's bytes: equal hashes mean byte-identical files."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


STAT_COLUMNS = (
    "width",
    "height",
    "file_size",
    "blur",
    "unique_colors",
    "mean",
    "min",
    "max",
    "std",
    "color_spread",
)


def image_stats(pixels: np.ndarray, width: int, height: int, file_size: int) -> dict[str, float]:
    """Statistics of an image from its decoded fixed-size RGB array (no second read).

    blur is the variance of the 4-neighbour Laplacian of the grey image at the fixed
    decode size, so it does not depend on the original resolution (low = blurry); mean,
    min, max and std are over the same fixed-size RGB pixels; unique_colors and
    color_spread (mean absolute difference between channels, 0 for a grey image) are
    over every other pixel of it in each direction, which keeps the whole computation
    near a millisecond (an exact count of distinct colours over all of them costs more
    than the model).
    """
    values = pixels.astype(np.float32)
    grey = values @ GREY_WEIGHTS
    laplacian = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    sample = pixels[::2, ::2]
    packed = (
        (sample[..., 0].astype(np.uint32) << 16) | (sample[..., 1].astype(np.uint32) << 8) | sample[..., 2]
    ).ravel()
    packed.sort()
    # Mean and spread from one pass each (np.std would convert to float64 and pass twice).
    flat = values.reshape(-1)
    mean = float(flat.mean(dtype=np.float64))
    centred = flat - np.float32(mean)
    channels = sample.astype(np.int16)
    spread = (
        np.abs(channels[..., 1] - channels[..., 0]).sum() + np.abs(channels[..., 2] - channels[..., 1]).sum()
    )
    return {
        "width": width,
        "height": height,
        "file_size": file_size,
        "blur": float(laplacian.var()),
        "unique_colors": int(1 + np.count_nonzero(packed[1:] != packed[:-1])),
        "mean": mean,
        "min": int(pixels.min()),
        "max": int(pixels.max()),
        "std": float(np.sqrt(max(0.0, float(centred @ centred) / flat.size))),
        "color_spread": float(spread) / (2 * channels[..., 0].size),
    }


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max(initial=0) > 255 else 255.0
        grey = np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        return image.convert("RGB")
    return image

"""Labelled photo sets for the benchmarks: real photos plus edited copies.

The edits are the ones near-duplicate finders meet in practice: JPEG recompression,
downscaling, crops, flips, brightness/contrast, greyscale, blur, small rotations,
borders, text overlays, aspect changes, hue shifts, and pairs of these.
"""

from __future__ import annotations

import io
import random
import shutil
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = REPO.parent / "shared" / "data" / "imagenet-sample-dev"


def list_photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def jpeg_recompress(img: Image.Image, rng: random.Random) -> Image.Image:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=rng.randint(10, 30))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def downscale(img, rng):
    f = rng.uniform(0.3, 0.6)
    return img.resize((max(16, int(img.width * f)), max(16, int(img.height * f))), Image.Resampling.BILINEAR)


def crop(img, rng):
    f = rng.uniform(0.75, 0.9)
    w, h = int(img.width * f), int(img.height * f)
    x, y = rng.randint(0, img.width - w), rng.randint(0, img.height - h)
    return img.crop((x, y, x + w, y + h))


def flip(img, rng):
    return ImageOps.mirror(img)


def brightness_contrast(img, rng):
    img = ImageEnhance.Brightness(img).enhance(rng.choice([rng.uniform(0.6, 0.8), rng.uniform(1.2, 1.4)]))
    return ImageEnhance.Contrast(img).enhance(rng.uniform(0.7, 1.3))


def greyscale(img, rng):
    return ImageOps.grayscale(img).convert("RGB")


def blur(img, rng):
    return img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(1.5, 3.0)))


def rotate(img, rng):
    return img.rotate(rng.uniform(-10, 10), resample=Image.Resampling.BILINEAR, expand=False, fillcolor=(0, 0, 0))


def border(img, rng):
    pad = int(min(img.size) * rng.uniform(0.05, 0.15))
    colour = rng.choice([(0, 0, 0), (255, 255, 255), (128, 128, 128)])
    return ImageOps.expand(img, border=pad, fill=colour)


def text_overlay(img, rng):
    img = img.copy()
    draw = ImageDraw.Draw(img)
    size = max(12, img.height // 10)
    font = ImageFont.load_default(size=size)
    text = rng.choice(["SAMPLE", "© stock photo", "sale -50%", "hello world", "IMG_2041"])
    draw.text((rng.randint(0, img.width // 3), rng.randint(0, img.height * 2 // 3)), text, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    return img


def aspect(img, rng):
    if rng.random() < 0.5:
        return img.resize((int(img.width * rng.uniform(1.3, 1.6)), img.height), Image.Resampling.BILINEAR)
    return img.resize((img.width, int(img.height * rng.uniform(1.3, 1.6))), Image.Resampling.BILINEAR)


def hue_shift(img, rng):
    hsv = np.asarray(img.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + rng.randint(20, 60)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


SINGLE = [jpeg_recompress, downscale, crop, flip, brightness_contrast, greyscale, blur, rotate, border, text_overlay, aspect, hue_shift]


def transform(img: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    """One transform, or a pair of them (one time in four)."""
    steps = rng.sample(SINGLE, 2) if rng.random() < 0.25 else [rng.choice(SINGLE)]
    for step in steps:
        img = step(img, rng)
    return img, "+".join(step.__name__ for step in steps)


def build_set(photos: Path, out: Path, seed: int) -> pl.DataFrame:
    """Write originals and copies to out/images; return (filename, group, transform)."""
    rng = random.Random(seed)
    images = out / "images"
    if images.exists():
        shutil.rmtree(images)
    images.mkdir(parents=True)
    rows = []
    for group, src in enumerate(list_photos(photos)):
        original = Image.open(src).convert("RGB")
        stem = f"g{group:04d}"
        target = images / f"{stem}_orig.jpg"
        shutil.copyfile(src, target)
        rows.append((str(target), group, "original"))
        if rng.random() < 0.5:
            for c in range(rng.randint(1, 3)):
                copy, name = transform(original, rng)
                target = images / f"{stem}_copy{c}.jpg"
                copy.save(target, format="JPEG", quality=90)
                rows.append((str(target), group, name))
    return pl.DataFrame(rows, schema=["filename", "group", "transform"], orient="row")




def build_volume_set(photos: Path, out: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` JPEGs for throughput runs: the photos cycled, most of them edited."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    sources = [Image.open(p).convert("RGB") for p in list_photos(photos)]
    written = []
    for i in range(count):
        target = out / f"{i // 1000:03d}" / f"img{i:06d}.jpg"
        if not target.exists():
            target.parent.mkdir(exist_ok=True)
            image = sources[i % len(sources)]
            if i >= len(sources):
                image, _ = transform(image, rng)
            image.save(target, format="JPEG", quality=90)
        written.append(target)
    return written

"""Labelled near-duplicate sets made from real photos: each photo plus edited copies.

The edits are the ones near-duplicate finders meet in practice (the list of issue 15):
JPEG recompression at quality 15-40, downscaling to 30-60 %, crops to 65-85 %, mirror
flips, brightness, contrast, greyscale, blur, rotation up to 12 degrees, borders, text
overlays, and pairs of these. ``build_set`` gives about half of the photos 1-3 copies
(groups of up to four images) and splits the photos into a tune half and a report half.

The quality benchmark (benchmarks/quality.py) chose the default thresholds on the tune
half; the tests check the split and the groups (tests/test_defaults.py). Like sample.py
it lives in the package so that neither imports from benchmarks/.
"""

from __future__ import annotations

import hashlib
import io
import random
import shutil
from pathlib import Path

import polars as pl
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

HALVES = ("tune", "report")
COPIES_SHARE = 0.5  # share of photos that get copies
PAIR_SHARE = 0.25  # share of copies made by two edits


def list_photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def split_halves(photos: list[Path]) -> dict[Path, str]:
    """Each photo's half, 'tune' or 'report': photos ordered by a hash of their file
    name, the first half tuned on. No group spans both halves, and the same folder always
    gives the same split."""
    ranked = sorted(photos, key=lambda p: hashlib.blake2b(p.name.encode(), digest_size=8).digest())
    return {photo: HALVES[0] if rank < len(ranked) // 2 else HALVES[1] for rank, photo in enumerate(ranked)}


def jpeg(img: Image.Image, rng: random.Random) -> Image.Image:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=rng.randint(15, 40))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def downscale(img, rng):
    f = rng.uniform(0.3, 0.6)
    return img.resize((max(16, int(img.width * f)), max(16, int(img.height * f))), Image.Resampling.BILINEAR)


def crop(img, rng):
    f = rng.uniform(0.65, 0.85)
    w, h = int(img.width * f), int(img.height * f)
    x, y = rng.randint(0, img.width - w), rng.randint(0, img.height - h)
    return img.crop((x, y, x + w, y + h))


def flip(img, rng):
    return ImageOps.mirror(img)


def _darker_or_brighter(rng: random.Random) -> float:
    return rng.uniform(0.6, 0.8) if rng.random() < 0.5 else rng.uniform(1.25, 1.5)


def brightness(img, rng):
    return ImageEnhance.Brightness(img).enhance(_darker_or_brighter(rng))


def contrast(img, rng):
    return ImageEnhance.Contrast(img).enhance(_darker_or_brighter(rng))


def greyscale(img, rng):
    return ImageOps.grayscale(img).convert("RGB")


def blur(img, rng):
    return img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(1.5, 3.0)))


def rotate(img, rng):
    angle = rng.uniform(3, 12) * rng.choice((-1, 1))
    return img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=(0, 0, 0))


def border(img, rng):
    pad = int(min(img.size) * rng.uniform(0.05, 0.15))
    colour = rng.choice([(0, 0, 0), (255, 255, 255), (128, 128, 128)])
    return ImageOps.expand(img, border=pad, fill=colour)


def text(img, rng):
    img = img.copy()
    draw = ImageDraw.Draw(img)
    size = max(12, img.height // 10)
    font = ImageFont.load_default(size=size)
    words = rng.choice(["SAMPLE", "© stock photo", "sale -50%", "hello world", "IMG_2041"])
    draw.text(
        (rng.randint(0, img.width // 3), rng.randint(0, img.height * 2 // 3)),
        words,
        fill=(255, 255, 255),
        font=font,
        stroke_width=2,
        stroke_fill=(0, 0, 0),
    )
    return img


EDITS = [jpeg, downscale, crop, flip, brightness, contrast, greyscale, blur, rotate, border, text]


def transform(img: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    """One edit, or two in a row (PAIR_SHARE of the time); returns the copy and its
    edit name ('blur', or 'crop+text' for a pair)."""
    steps = rng.sample(EDITS, 2) if rng.random() < PAIR_SHARE else [rng.choice(EDITS)]
    for step in steps:
        img = step(img, rng)
    return img, "+".join(step.__name__ for step in steps)


def write_group(src: Path, group: int, folder: Path, rng: random.Random) -> list[tuple[str, int, str]]:
    """The original and, for COPIES_SHARE of the photos, 1-3 edited copies: (file, group, edit) rows."""
    stem = folder / f"g{group:04d}"
    target = Path(f"{stem}_orig{src.suffix.lower()}")
    shutil.copyfile(src, target)
    rows = [(str(target), group, "original")]
    if rng.random() < COPIES_SHARE:
        original = Image.open(src).convert("RGB")
        for c in range(rng.randint(1, 3)):
            copy, edit = transform(original, rng)
            target = Path(f"{stem}_copy{c}.jpg")
            copy.save(target, format="JPEG", quality=90)
            rows.append((str(target), group, edit))
    return rows


def build_set(photos: Path, out: Path, seed: int) -> pl.DataFrame:
    """Write each photo's group to out/images/<half>/; return (filename, group, transform, half).

    Each photo's copies come from a generator seeded by ``seed`` and the photo's name, so
    a group does not change when photos are added or removed.
    """
    images = out / "images"
    if images.exists():
        shutil.rmtree(images)
    rows = []
    sources = list_photos(photos)
    half_of = split_halves(sources)
    for group, src in enumerate(sources):
        half = half_of[src]
        folder = images / half
        folder.mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"{seed}/{src.name}")
        rows += [(*row, half) for row in write_group(src, group, folder, rng)]
    return pl.DataFrame(rows, schema=["filename", "group", "transform", "half"], orient="row")


VOLUME_STEM = "img"  # build_volume_set's image i is VOLUME_STEM + i, six digits


def build_volume_set(photos: Path, out: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` JPEGs for throughput runs: the photos cycled, most of them edited (the
    photo each was made from: volume_source)."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    sources = [Image.open(p).convert("RGB") for p in list_photos(photos)]
    written = []
    for i in range(count):
        target = out / f"{i // 1000:03d}" / f"{VOLUME_STEM}{i:06d}.jpg"
        if not target.exists():
            target.parent.mkdir(exist_ok=True)
            image = sources[i % len(sources)]
            if i >= len(sources):
                image, _ = transform(image, rng)
            image.save(target, format="JPEG", quality=90)
        written.append(target)
    return written


def volume_source(location: str, photos: int) -> int:
    """The index (in list_photos order, of ``photos`` photos) of the photo that the image
    of build_volume_set at ``location`` was made from: its ground-truth group."""
    return int(Path(location).stem.removeprefix(VOLUME_STEM)) % photos

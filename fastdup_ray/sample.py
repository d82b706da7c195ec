"""A small labelled sample the project makes itself: photo-like images, near-duplicate
copies of some of them, a corrupt file and a nested folder.

It feeds the README's demo command and the integration tests, so neither needs a
download. The images are synthetic "scenes" (smooth colour fields, shapes, texture)
that a CNN tells apart about as well as it tells apart unrelated photos.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter


def make_scene(seed: int, width: int = 320, height: int = 240) -> Image.Image:
    """A random photo-like RGB image: a smooth colour field, shapes, edges and grain."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.uint8)
    image = Image.fromarray(coarse, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(6, 16))):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        x0, y0 = int(rng.integers(-40, width)), int(rng.integers(-40, height))
        x1, y1 = x0 + int(rng.integers(20, width // 2)), y0 + int(rng.integers(20, height // 2))
        kind = rng.integers(0, 4)
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif kind == 2:
            points = [(int(rng.integers(0, width)), int(rng.integers(0, height))) for _ in range(int(rng.integers(3, 7)))]
            draw.polygon(points, fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(2, 12)))
    # Fine texture with a random orientation and frequency, then sensor-like grain.
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle, freq = rng.uniform(0, np.pi), rng.uniform(0.05, 0.5)
    stripes = 8 * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy))[..., None]
    pixels = np.asarray(image, dtype=np.float32) + stripes + rng.normal(0, 3, size=(height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.2))))


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def near_duplicate(image: Image.Image, kind: int) -> Image.Image:
    """One of a few edits that keep an image recognisably the same picture."""
    width, height = image.size
    if kind == 0:  # recompressed hard and shrunk
        small = image.resize((width * 3 // 5, height * 3 // 5), Image.Resampling.BILINEAR)
        return Image.open(io.BytesIO(jpeg_bytes(small, quality=50))).convert("RGB")
    if kind == 1:  # small crop
        return image.crop((width // 20, height // 20, width - width // 20, height - height // 20))
    if kind == 2:  # brighter
        return ImageEnhance.Brightness(image).enhance(1.2)
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


@dataclass
class SampleDataset:
    """Where the sample went and what a correct run must find in it."""

    root: Path
    images: list[Path] = field(default_factory=list)
    duplicate_pairs: list[tuple[Path, Path]] = field(default_factory=list)
    corrupt: list[Path] = field(default_factory=list)


def make_sample_dataset(root: str | Path, n_scenes: int = 24, n_duplicated: int = 6, seed: int = 0) -> SampleDataset:
    """Write ``n_scenes`` distinct scenes (JPEG and PNG, some in a nested folder), a
    near-duplicate copy of ``n_duplicated`` of them, and one corrupt JPEG."""
    root = Path(root)
    nested = root / "nested" / "deeper"
    nested.mkdir(parents=True, exist_ok=True)
    sample = SampleDataset(root=root)
    for i in range(n_scenes):
        scene = make_scene(seed * 100_003 + i)
        folder = nested if i % 4 == 3 else root
        path = folder / (f"scene_{i:03d}.png" if i % 5 == 4 else f"scene_{i:03d}.jpg")
        if path.suffix == ".png":
            scene.save(path)
        else:
            path.write_bytes(jpeg_bytes(scene))
        sample.images.append(path)
        if i < n_duplicated:
            copy_path = root / f"scene_{i:03d}_copy.JPG"
            copy_path.write_bytes(jpeg_bytes(near_duplicate(scene, i % 4), quality=80))
            sample.images.append(copy_path)
            sample.duplicate_pairs.append((path, copy_path))
    corrupt = root / "nested" / "broken.jpg"
    corrupt.write_bytes(jpeg_bytes(make_scene(seed + 999))[:300])
    sample.corrupt.append(corrupt)
    return sample

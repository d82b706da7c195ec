"""Near-duplicate quality benchmark on real photos.

Builds a labelled set from a folder of photos: every original, plus for about half of
them 1-3 transformed copies (JPEG recompression, downscaling, crops, flips,
brightness/contrast, greyscale, blur, small rotation, borders, text overlays, aspect
changes, hue shifts, and pairs of these). Runs fastdup_ray over it, then prints

- average precision, best F1 and recall at precision >= 0.95 over all image pairs
  (every pair scored from features.dat: the model's separating power), with the
  threshold that reaches precision 0.95: what the default threshold is calibrated on;
- precision / recall of similarity.csv at the default threshold (what users get);
- precision / recall of "same component" pairs at the default ccthreshold.

    python benchmarks/quality.py [--photos ../shared/data/imagenet-sample-dev] [--out /tmp/fdr-quality]
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

import fastdup_ray
from fastdup_ray.config import DEFAULT_CCTHRESHOLD, DEFAULT_THRESHOLD
from fastdup_ray.evaluate import pair_metrics, precision_recall_at

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = REPO.parent / "shared" / "data" / "imagenet-sample-dev"


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
    font = ImageFont_default(size)
    text = rng.choice(["SAMPLE", "© stock photo", "sale -50%", "hello world", "IMG_2041"])
    draw.text((rng.randint(0, img.width // 3), rng.randint(0, img.height * 2 // 3)), text, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    return img


def ImageFont_default(size):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


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
    for group, src in enumerate(sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))):
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--out", type=Path, default=Path("/tmp/fastdup-ray-quality"))
    parser.add_argument("--k", type=int, default=5, help="neighbours per image for the run (groups have up to 4 images)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-path", default=None)
    parser.add_argument("--d", type=int, default=1280)
    args = parser.parse_args()
    if not args.photos.is_dir():
        print(f"no photos at {args.photos}; pass --photos DIR", file=sys.stderr)
        return 2

    truth = build_set(args.photos, args.out, args.seed)
    work = args.out / "work"
    summary = fastdup_ray.run(str(args.out / "images"), str(work), k=args.k, model_path=args.model_path, d=args.d)
    names, features = fastdup_ray.load_binary_features(work)
    group_of = dict(zip(truth["filename"], truth["group"]))
    groups = np.array([group_of[n] for n in names])
    transform_of = dict(zip(truth["filename"], truth["transform"]))

    # Every pair scored: the model's own separating power, independent of k.
    sims = features @ features.T
    upper = np.triu_indices(len(names), k=1)
    scores = sims[upper]
    same = groups[upper[0]] == groups[upper[1]]
    metrics = pair_metrics(scores, same, precision_floor=0.95)
    p_def, r_def = precision_recall_at(scores, same, DEFAULT_THRESHOLD)

    # What users get: similarity.csv at the default threshold, components at ccthreshold.
    similarity = pl.read_csv(work / "similarity.csv")
    sim_same = np.array([group_of[a] == group_of[b] for a, b in zip(similarity["from"], similarity["to"])], dtype=bool)
    total_pos = int(same.sum())
    csv_precision = float(sim_same.mean()) if len(sim_same) else 1.0
    csv_recall = float(sim_same.sum()) / total_pos
    comps = pl.read_csv(work / "connected_components.csv")["component_id"].to_numpy()
    comp_pairs = comps[upper[0]] == comps[upper[1]]
    comp_precision = float((comp_pairs & same).sum() / max(1, comp_pairs.sum()))
    comp_recall = float((comp_pairs & same).sum() / total_pos)

    print(f"set: {len(names)} images ({summary.bad} bad), {truth['group'].n_unique()} groups, {total_pos} true duplicate pairs, {len(scores)} pairs scored")
    print(f"all pairs: average precision {metrics.average_precision:.4f}, best F1 {metrics.best_f1:.4f} at {metrics.best_f1_threshold:.3f}, "
          f"recall {metrics.recall_at_precision:.4f} at precision >= 0.95 (threshold {metrics.threshold_at_precision:.3f})")
    print(f"all pairs at default threshold {DEFAULT_THRESHOLD}: precision {p_def:.4f}, recall {r_def:.4f}")
    print(f"similarity.csv (k={args.k}, threshold {DEFAULT_THRESHOLD}): {len(similarity)} pairs, precision {csv_precision:.4f}, recall {csv_recall:.4f}")
    print(f"components (ccthreshold {DEFAULT_CCTHRESHOLD}): same-component pairs precision {comp_precision:.4f}, recall {comp_recall:.4f}")
    # Which edits the model finds hardest: the lowest score of each copy to its original.
    index = {n: i for i, n in enumerate(names)}
    per_transform: dict[str, list[float]] = {}
    for name in names:
        if transform_of[name] == "original":
            continue
        orig = [n for n in names if group_of[n] == group_of[name] and transform_of[n] == "original"][0]
        per_transform.setdefault(transform_of[name].split("+")[0] if "+" not in transform_of[name] else "pair", []).append(float(sims[index[name], index[orig]]))
    print("copy-to-original similarity by edit (min / median):")
    for name, values in sorted(per_transform.items(), key=lambda kv: np.median(kv[1])):
        print(f"  {name:20s} n={len(values):3d} min {min(values):.3f} median {np.median(values):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

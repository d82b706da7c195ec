"""Time to build every gallery and the projector export over a run of 10,000 photos.

Builds (once) the throughput benchmark's folder of JPEGs, runs fastdup_ray on it (k=5,
so that similarity.csv and the components have plenty of rows), then times each gallery
with all its rows (``num_images=None``) and the projector export of 900 images, and
prints seconds, pages and thumbnails written.

    python benchmarks/galleries.py [--count 10000]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from photoset import DEFAULT_PHOTOS, build_volume_set

import fastdup_ray


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--out", type=Path, default=Path("/tmp/fastdup-ray-throughput"))
    parser.add_argument("--count", type=int, default=10_000)
    args = parser.parse_args()
    folder = args.out / f"images-{args.count}"
    build_volume_set(args.photos, folder, args.count)
    work = args.out / f"galleries-work-{args.count}"
    if not (work / "stats.parquet").exists():
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fastdup_ray", "run", str(folder), "--work-dir", str(work), "-k", "5"], check=True)
        print(f"run: {time.perf_counter() - start:.1f} s for {args.count} images (thumbnails made during extraction)")
    out = args.out / f"galleries-{args.count}"
    shutil.rmtree(out, ignore_errors=True)
    jobs = {
        "duplicates": lambda: fastdup_ray.create_duplicates_gallery(work, out),
        "outliers": lambda: fastdup_ray.create_outliers_gallery(work, out),
        "components": lambda: fastdup_ray.create_components_gallery(work, out),
        "stats (blur, all images)": lambda: fastdup_ray.create_stats_gallery(work, out, metric="blur", num_images=None),
        "similarity": lambda: fastdup_ray.create_similarity_gallery(work, out),
        "projector (900 images)": lambda: fastdup_ray.export_to_tensorboard_projector(work, out / "projector", sample_size=900),
    }
    total = 0.0
    for name, job in jobs.items():
        before = len(list((out / "thumbnails").glob("*.jpg"))) if (out / "thumbnails").exists() else 0
        start = time.perf_counter()
        first = job()
        seconds = time.perf_counter() - start
        total += seconds
        pages = len(list(first.parent.glob(first.stem + "*.html"))) if first.suffix == ".html" else 0
        after = len(list((out / "thumbnails").glob("*.jpg")))
        print(f"{name:28s} {seconds:6.2f} s  {pages:4d} pages  {after - before:6d} new thumbnails")
    size = sum(p.stat().st_size for p in (out / "thumbnails").glob("*.jpg"))
    print(f"all galleries + projector: {total:.1f} s; thumbnails on disk: {len(list((out / 'thumbnails').glob('*.jpg')))} files, {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

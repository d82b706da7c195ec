"""Time to build every gallery, their index and the projector export over a run of
10,000 photos; or, with --screenshots, the README's screenshots of the demo's galleries.

Timing: builds (once) the throughput benchmark's folder of JPEGs, runs fastdup_ray on it
(k=5, so that similarity.csv and the components have plenty of rows), then times each
gallery with all its rows (``num_images=None``), ``create_galleries`` (all of them and
index.html) and the projector export of 900 images, and prints seconds, pages and
thumbnails written.

    python benchmarks/galleries.py [--count 10000]
    python benchmarks/galleries.py --screenshots docs/screenshots

Screenshots: the demo's sample (``fastdup-ray demo``) in /tmp/fastdup-ray-demo, its
galleries opened in headless Chromium (Debian's chromium, driven by playwright), one
1280x800 view of each page as a palette PNG.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import time
from pathlib import Path

import fastdup_ray
from fastdup_ray.reports import create_galleries

SCREENSHOT_PAGES = ("index", "duplicates", "components", "similarity", "outliers")
DEMO = Path("/tmp/fastdup-ray-demo")


def time_galleries(photos: Path, out: Path, count: int) -> None:
    from photoset import build_volume_set

    folder = out / f"images-{count}"
    build_volume_set(photos, folder, count)
    work = out / f"galleries-work-{count}"
    if not (work / "stats.parquet").exists():
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "fastdup_ray", "run", str(folder), "--work-dir", str(work), "-k", "5"],
            check=True,
        )
        print(
            f"run: {time.perf_counter() - start:.1f} s for {count} images (thumbnails made during extraction)"
        )
    target = out / f"galleries-{count}"
    shutil.rmtree(target, ignore_errors=True)
    jobs = {
        "duplicates": lambda: fastdup_ray.create_duplicates_gallery(work, target),
        "outliers": lambda: fastdup_ray.create_outliers_gallery(work, target),
        "components": lambda: fastdup_ray.create_components_gallery(work, target),
        "stats (blur, all images)": lambda: fastdup_ray.create_stats_gallery(
            work, target, metric="blur", num_images=None
        ),
        "similarity": lambda: fastdup_ray.create_similarity_gallery(work, target),
        "create_galleries (all + index)": lambda: create_galleries(work, target / "all"),
        "projector (900 images)": lambda: fastdup_ray.export_to_tensorboard_projector(
            work, target / "projector", sample_size=900
        ),
    }
    total = 0.0
    for name, job in jobs.items():
        thumbnails = (target / "all" if name.startswith("create_galleries") else target) / "thumbnails"
        before = len(list(thumbnails.glob("*.jpg"))) if thumbnails.exists() else 0
        start = time.perf_counter()
        first = job()
        seconds = time.perf_counter() - start
        total += seconds
        pages = (
            len(list(first.parent.glob("*.html" if first.name == "index.html" else first.stem + "*.html")))
            if first.suffix == ".html"
            else 0
        )
        after = len(list(thumbnails.glob("*.jpg"))) if thumbnails.exists() else 0
        print(f"{name:32s} {seconds:6.2f} s  {pages:4d} pages  {after - before:6d} new thumbnails")
    files = list((target / "thumbnails").glob("*.jpg"))
    size = sum(p.stat().st_size for p in files)
    print(
        f"all: {total:.1f} s; thumbnails on disk: {len(files)} files, {size / 1e6:.1f} MB "
        f"({size / max(1, len(files)) / 1024:.1f} KiB each)"
    )


def screenshots(folder: Path) -> None:
    """The demo's galleries, one view of each page, as small PNGs in ``folder``."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from fastdup_ray.sample import make_sample_dataset

    shutil.rmtree(DEMO, ignore_errors=True)
    make_sample_dataset(DEMO / "sample")
    fastdup_ray.run(str(DEMO / "sample"), str(DEMO / "work"), executor="local")
    index = create_galleries(DEMO / "work", DEMO / "galleries")
    folder.mkdir(parents=True, exist_ok=True)
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        for name in SCREENSHOT_PAGES:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto((index.parent / f"{name}.html").as_uri(), wait_until="load")
            shot = Image.open(io.BytesIO(page.screenshot()))
            page.close()
            # A palette of 128 colours keeps the thumbnails legible at a fifth of the bytes.
            shot.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(
                folder / f"{name}.png", optimize=True
            )
            print(f"{folder / f'{name}.png'}: {(folder / f'{name}.png').stat().st_size / 1024:.0f} KiB")
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--photos",
        type=Path,
        default=None,
        help="folder of photos to build the timing set from (default: the throughput benchmark's)",
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/fastdup-ray-throughput"))
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument(
        "--screenshots",
        type=Path,
        default=None,
        help="write the README's screenshots of the demo's galleries here instead of timing",
    )
    args = parser.parse_args()
    if args.screenshots is not None:
        screenshots(args.screenshots)
        return 0
    from photoset import DEFAULT_PHOTOS

    time_galleries(args.photos or DEFAULT_PHOTOS, args.out, args.count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

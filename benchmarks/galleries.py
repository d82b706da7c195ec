"""Time to build every gallery, their index and the projector export over a run of
10,000 photos; or, with --screenshots, the README's screenshots of the demo's galleries.

Timing: builds (once) the throughput benchmark's folder of JPEGs, runs fastdup_ray on it
(k=5, so that similarity.csv and the components have plenty of rows), then times each
gallery with all its rows (``num_images=None``), ``create_galleries`` (all of them and
index.html) and the projector export of 900 images, and prints seconds, pages and
thumbnails written.

    python benchmarks/galleries.py [--count 10000]
    python benchmarks/galleries.py --s3 [--num-images 20] [--count 10000]
    python benchmarks/galleries.py --screenshots docs/screenshots

With --s3: a run of the set as one shard (as one LAION tar of 10,000 images is) copied
into moto's S3 server on loopback, behind the middleware of tests/loopback.py that counts
requests and bytes. Then, read from there as a cluster's run is: the thumbnails of 1, 10,
100 and 1,000 random rows (what a gallery of a LAION run asks of each shard it shows rows
of is the first case), and ``create_galleries`` with ``num_images``; for each, seconds, S3
requests and MB read.

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


def timed_run(photos: Path, out: Path, count: int, shard_size: int | None = None) -> Path:
    """The work dir of a run over ``count`` JPEGs of the throughput set (made once), in
    shards of ``shard_size`` images (the run's default where None)."""
    from photoset import build_volume_set

    folder = out / f"images-{count}"
    build_volume_set(photos, folder, count)
    work = out / (f"galleries-work-{count}" + (f"-shard{shard_size}" if shard_size else ""))
    if not (work / "stats.parquet").exists():
        start = time.perf_counter()
        sharding = ["--shard-size", str(shard_size)] if shard_size else []
        subprocess.run(
            [
                sys.executable,
                "-m",
                "fastdup_ray",
                "run",
                str(folder),
                "--work-dir",
                str(work),
                "-k",
                "5",
                *sharding,
            ],
            check=True,
        )
        print(
            f"run: {time.perf_counter() - start:.1f} s for {count} images (thumbnails made during extraction)"
        )
    return work


def time_galleries(photos: Path, out: Path, count: int) -> None:
    work = timed_run(photos, out, count)
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


def galleries_on_s3(photos: Path, out: Path, count: int, num_images: int | None) -> None:
    """Thumbnails and galleries read from a run's work dir on loopback S3, the requests counted."""
    import os

    import numpy as np
    import s3fs

    from fastdup_ray.reports.tables import ImageSource

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from loopback import LoopbackS3

    work = timed_run(photos, out, count, shard_size=count)
    key, secret = "AKIAGALLERIES", "galleries-secret-key"
    server = LoopbackS3()
    try:
        fs = s3fs.S3FileSystem(
            key=key,
            secret=secret,
            client_kwargs={"endpoint_url": server.uncounted_endpoint, "region_name": "us-east-1"},
        )
        server.create_bucket("galleries")
        fs.put(f"{work}/", "galleries/work", recursive=True)
        os.environ.update(
            AWS_ACCESS_KEY_ID=key,
            AWS_SECRET_ACCESS_KEY=secret,
            AWS_ENDPOINT_URL=server.endpoint,
            AWS_DEFAULT_REGION="us-east-1",
        )
        reader = ImageSource.at("s3://galleries/work", "run")
        rng = np.random.default_rng(0)
        for rows in (1, 10, 100, 1000):
            ids = rng.choice(count, size=min(rows, count), replace=False)
            server.phase(f"rows {rows}")
            start = time.perf_counter()
            found = reader.thumbnails(ids.tolist())
            report(
                f"thumbnails of {rows} random rows",
                time.perf_counter() - start,
                server,
                f"rows {rows}",
                len(found),
            )
        target = out / f"galleries-s3-{count}"
        shutil.rmtree(target, ignore_errors=True)
        server.phase("galleries")
        start = time.perf_counter()
        create_galleries("s3://galleries/work", target, num_images=num_images)
        shown = len(list((target / "thumbnails").glob("*.jpg")))
        report(
            f"create_galleries(num_images={num_images})",
            time.perf_counter() - start,
            server,
            "galleries",
            shown,
        )
    finally:
        server.stop()
    stored = sum(p.stat().st_size for p in work.glob("*thumbnails.parquet"))
    print(f"(the run's thumbnails file: {stored / 1e6:.1f} MB, {count} rows)")


def report(what: str, seconds: float, server, phase: str, thumbnails: int) -> None:
    counted = server.counts()[phase]
    print(
        f"{what:36s} {seconds:6.2f} s  GET {counted.get('requests_GET', 0):4d}  HEAD "
        f"{counted.get('requests_HEAD', 0):3d}  {counted['bytes_out'] / 1e6:8.2f} MB read  "
        f"{thumbnails:5d} thumbnails"
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
    parser.add_argument("--s3", action="store_true", help="the galleries read from the run on loopback S3")
    parser.add_argument("--num-images", type=int, default=20, help="with --s3: rows of each gallery (0: all)")
    args = parser.parse_args()
    if args.s3:
        from photoset import DEFAULT_PHOTOS

        galleries_on_s3(args.photos or DEFAULT_PHOTOS, args.out, args.count, args.num_images or None)
        return 0
    if args.screenshots is not None:
        screenshots(args.screenshots)
        return 0
    from photoset import DEFAULT_PHOTOS

    time_galleries(args.photos or DEFAULT_PHOTOS, args.out, args.count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

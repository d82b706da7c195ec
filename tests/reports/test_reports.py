"""Galleries and the projector export: pure rendering first, then a real run over a tar on
S3 whose galleries are opened in headless Chromium."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import free_port, shows_file, write_tar
from PIL import Image

import fastdup_ray
from fastdup_ray.config import DEFAULT_D
from fastdup_ray.errors import InputError
from fastdup_ray.map.decode import decode_with_thumbnail
from fastdup_ray.reports.projector import choose_sample, sprite_image
from fastdup_ray.reports.render import Card, Gallery, Tile, render_pages
from fastdup_ray.rundir.shards import FeatureShardWriter, load_thumbnails
from fastdup_ray.rundir.workdir import WorkDir
from fastdup_ray.sample import jpeg_bytes, make_scene, near_duplicate

EVIL = '<script>window.__pwned = 1</script> & "quotes".jpg'


def test_thumbnail_is_made_from_the_decoded_image_and_keeps_its_aspect():
    scene = Image.new("RGB", (400, 100), (200, 30, 30))
    pixels, (w, h), thumb = decode_with_thumbnail(jpeg_bytes(scene), 64, 128)
    assert pixels.shape == (64, 64, 3) and (w, h) == (400, 100)
    with Image.open(io.BytesIO(thumb)) as small:
        assert small.format == "JPEG" and small.size == (128, 32)
        assert abs(np.asarray(small)[..., 0].mean() - 200) < 10
    assert decode_with_thumbnail(jpeg_bytes(scene), 64, 0)[2] == b""


def test_thumbnails_are_found_by_run_wide_row_id_across_shards(tmp_path):
    work = WorkDir(str(tmp_path))
    for prefix, first in (("a.tar", 0), ("b.tar", 3)):
        with FeatureShardWriter(work, d=2, prefix=prefix) as writer:
            names = [f"{prefix}/{i}.jpg" for i in range(first, first + 3)]
            writer.add_good(
                names[:2], np.zeros((2, 2)), thumbnails=[f"t{first}".encode(), f"t{first + 1}".encode()]
            )
            writer.add_bad(["broken.jpg"], ["truncated"])
            writer.add_good(names[2:], np.zeros((1, 2)), thumbnails=[f"t{first + 2}".encode()])
    found = load_thumbnails(work, ["a.tar", "b.tar"], [5, 0, 4, 99])
    assert found == {0: b"t0", 4: b"t4", 5: b"t5"}


def test_a_few_rows_of_a_large_shard_get_the_same_thumbnails_as_reading_it_whole(tmp_path):
    """A few rows read from their row groups alone, and many read with the whole file,
    give the same thumbnails, the boxed ones too (a crop's whole image where it has one)."""
    work = WorkDir(str(tmp_path))
    thumbnails = [f"t{i}".encode() for i in range(640)]
    boxed = [f"b{i}".encode() if i % 3 == 0 else b"" for i in range(640)]
    with FeatureShardWriter(work, d=2, prefix="a.tar") as writer:
        for start in range(0, 640, 64):
            rows = slice(start, start + 64)
            names = [f"a.tar/{i}.jpg" for i in range(start, start + 64)]
            writer.add_good(names, np.zeros((64, 2)), thumbnails=thumbnails[rows], boxed=boxed[rows])
    few, many = [3, 4, 600], list(range(0, 640, 2))
    assert load_thumbnails(work, ["a.tar"], few) == {i: thumbnails[i] for i in few}
    assert load_thumbnails(work, ["a.tar"], many) == {i: thumbnails[i] for i in many}
    shown = {i: boxed[i] or thumbnails[i] for i in few + many}
    assert load_thumbnails(work, ["a.tar"], few, boxed=True) == {i: shown[i] for i in few}
    assert load_thumbnails(work, ["a.tar"], many, boxed=True) == {i: shown[i] for i in many}


def test_thumbnails_of_a_shard_written_with_a_long_footer_are_found(tmp_path):
    """Shards written before thumbnails kept only the row column's statistics have footers
    over the first read of a file's end; a few rows of one are still found."""
    import pyarrow.parquet as pq

    from fastdup_ray.rundir.shards import FOOTER_BYTES, THUMBNAILS_FILE, parquet_footer

    work = WorkDir(str(tmp_path))
    rng = np.random.default_rng(1)
    thumbnails = [rng.bytes(4000) for _ in range(1000)]
    with FeatureShardWriter(work, d=2, prefix="a.tar") as writer:
        writer.add_good([f"a.tar/{i}.jpg" for i in range(1000)], np.zeros((1000, 2)), thumbnails=thumbnails)
    path = tmp_path / f"a.tar{THUMBNAILS_FILE}"
    table = pq.read_table(path)
    with pq.ParquetWriter(path, table.schema, compression="none") as old:  # statistics of every column
        for start in range(0, 1000, 10):
            old.write_table(table.slice(start, 10))
    assert int.from_bytes(path.read_bytes()[-8:-4], "little") > FOOTER_BYTES
    assert parquet_footer(work, f"a.tar{THUMBNAILS_FILE}").num_row_groups == 100
    assert load_thumbnails(work, ["a.tar"], [7, 993]) == {7: thumbnails[7], 993: thumbnails[993]}


def _cards(count):
    return [
        Card(
            f"row {i}",
            [f"fact {i}"],
            [
                Tile(i, f"/data/{i}.jpg", [f"caption {i}"], thumbnail=f"{i}.jpg" if i < 3 else None),
                Tile(None, "s3://b/no-thumb.jpg"),
            ],
        )
        for i in range(count)
    ]


def test_pages_escape_every_name_and_split_large_results():
    cards = [
        Card(
            "<b>bold?</b>",
            ["<i>fact</i>"],
            [Tile(0, EVIL, ["<u>cap</u>"], thumbnail="0.jpg", marker="keep", marker_text="<em>keep</em>")],
        )
    ] + _cards(6)
    pages = render_pages(
        Gallery("duplicates", "T <x>", "desc & more", cards, notes=["<s>note</s>"]), page_size=3
    )
    assert [name for name, _ in pages] == ["duplicates.html", "duplicates_2.html", "duplicates_3.html"]
    first = pages[0][1]
    assert (
        "<script>" not in first
        and "&lt;script&gt;window.__pwned = 1&lt;/script&gt; &amp; &#34;quotes&#34;.jpg" in first
    )
    assert (
        "<b>" not in first
        and "<i>" not in first
        and "<u>" not in first
        and "<em>" not in first
        and "<s>" not in first
        and "T &lt;x&gt;" in first
    )
    assert 'src="thumbnails/0.jpg"' in first and 'href="duplicates_2.html"' in first
    middle = pages[1][1]
    assert (
        'href="duplicates.html"' in middle
        and 'href="duplicates_3.html"' in middle
        and "page 2 of 3" in middle
    )
    assert "no thumbnail" in middle  # a tile whose image has no thumbnail
    assert "7 rows; showing 7&ndash;7" in pages[2][1]


def test_sample_and_sprite_shapes():
    assert choose_sample(5, 10).tolist() == [0, 1, 2, 3, 4]
    picked = choose_sample(1000, 10, seed=3)
    assert len(set(picked.tolist())) == 10 and np.all(np.diff(picked) > 0)
    assert (choose_sample(1000, 10, seed=3) == picked).all()
    sheet = sprite_image([jpeg_bytes(Image.new("RGB", (128, 64), "red")), None, None, None, None], 32)
    assert sheet.size == (96, 96)  # ceil(sqrt(5)) = 3 cells a side
    assert sheet.getpixel((16, 16))[0] > 200 and sheet.getpixel((16, 2)) == (
        255,
        255,
        255,
    )  # letterboxed on white


# --- a real run over a tar on S3, its galleries in Chromium -------------------------------

KEY, SECRET = "AKIAGALLERYTEST", "gallery-secret-123"


@pytest.fixture(scope="module")
def gallery_run(ray_local, s3_server, tmp_path_factory):
    """Eight scenes and three planted copies in one webdataset tar on S3 (one member named
    like a script tag), run with a local work dir."""
    import boto3
    import s3fs

    boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
    ).create_bucket(Bucket="fdr-gallery")
    scenes = [make_scene(900 + i, material=i) for i in range(8)]
    members = {f"{i:09d}.jpg": jpeg_bytes(scene) for i, scene in enumerate(scenes)}
    members[EVIL] = jpeg_bytes(near_duplicate(scenes[1], 0))
    members["copy_of_3.jpg"] = jpeg_bytes(near_duplicate(scenes[3], 1))
    members["copy_of_5.jpg"] = jpeg_bytes(near_duplicate(scenes[5], 2))
    members["broken.jpg"] = jpeg_bytes(scenes[6])[:300]
    root = tmp_path_factory.mktemp("gallery")
    write_tar(root / "00000.tar", members)
    fs = s3fs.S3FileSystem(
        key=KEY, secret=SECRET, client_kwargs={"endpoint_url": s3_server, "region_name": "us-east-1"}
    )
    fs.put_file(str(root / "00000.tar"), "fdr-gallery/shards/00000.tar")
    work = root / "work"
    summary = fastdup_ray.run(
        "s3://fdr-gallery/shards",
        str(work),
        s3_endpoint_url=s3_server,
        s3_region="us-east-1",
        s3_key=KEY,
        s3_secret=SECRET,
        nearest_neighbors_k=3,
        lower_threshold=0.2,
    )
    assert (summary.good, summary.bad) == (11, 1)
    tar = "s3://fdr-gallery/shards/00000.tar"
    planted = {
        frozenset((f"{tar}/{a}", f"{tar}/{b}"))
        for a, b in (
            ("000000001.jpg", EVIL),
            ("000000003.jpg", "copy_of_3.jpg"),
            ("000000005.jpg", "copy_of_5.jpg"),
        )
    }
    return work, root / "galleries", planted


def open_page(chromium, path: Path):
    """Load a page from disk; returns (page, console errors, dialogs opened)."""
    page = chromium.new_page(viewport={"width": 1200, "height": 900})
    errors, dialogs = [], []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(path.as_uri(), wait_until="load")
    return page, errors, dialogs


def check_page(chromium, path: Path, screenshots: Path | None = None):
    """No console errors, no script run from a file name, every thumbnail decoded.
    Returns the page's text and how many images it shows."""
    page, errors, dialogs = open_page(chromium, path)
    widths = page.evaluate("Array.from(document.images).map(img => img.complete ? img.naturalWidth : 0)")
    text = page.inner_text("body")
    pwned = page.evaluate("window.__pwned === undefined")
    if screenshots is not None:
        page.screenshot(path=str(screenshots / f"{path.stem}.png"), full_page=True)
    page.close()
    assert errors == [] and dialogs == [] and pwned, (errors, dialogs)
    assert widths and all(w > 0 for w in widths), widths
    return text, len(widths)


def shown_pairs(text: str, names: set[str]) -> set[frozenset]:
    """Pairs of locations appearing on the same card of a duplicates page."""
    pairs = set()
    for card in text.split("similarity ")[1:]:
        present = sorted(name for name in names if name in card)
        if len(present) == 2:
            pairs.add(frozenset(present))
    return pairs


@pytest.mark.integration
def test_galleries_of_a_tar_on_s3_in_headless_chromium(gallery_run, chromium, monkeypatch):
    work, out, planted = gallery_run
    names = {n for pair in planted for n in pair}
    duplicates = fastdup_ray.create_duplicates_gallery(work, out)
    text, images = check_page(chromium, duplicates, out)
    assert shown_pairs(text, names) == planted and images == 6
    assert EVIL.replace('"', '"') in text  # the script-like name shows as text
    assert "component" in text and "(2 images)" in text
    # Members of a tar on S3 have no original a browser can open: a click opens the stored view.
    links = re.findall(r'<a class="open" href="([^"]+)"', duplicates.read_text())
    assert len(links) == 6 and all(
        link.startswith("thumbnails/") and (out / link).is_file() for link in links
    )

    components = fastdup_ray.create_components_gallery(work, out)
    text, images = check_page(chromium, components, out)
    assert len(re.findall(r"component \d+\n2 images", text)) == 3 and images == 6

    outliers = fastdup_ray.create_outliers_gallery(work, out)
    text, images = check_page(chromium, outliers, out)
    rows = pl.read_csv(work / "outliers.csv")
    assert rows["from"][0] in text and images == 2 * rows["from"].n_unique()

    stats = fastdup_ray.create_stats_gallery(work, out, metric="blur", ascending=True)
    text, images = check_page(chromium, stats, out)
    table = pl.read_csv(work / "stats.csv").sort("blur")
    names_csv, _ = fastdup_ray.load_binary_features(work)
    assert images == 11 and text.index(names_csv[table["__id"][0]]) < text.index(names_csv[table["__id"][-1]])

    similarity = fastdup_ray.create_similarity_gallery(work, out)
    text, images = check_page(chromium, similarity, out)
    assert images == 6 and all(name in text for name in names)  # each planted pair once


@pytest.mark.integration
def test_large_galleries_are_paged_and_the_pages_link_up(gallery_run, chromium):
    work, out, _ = gallery_run
    first = fastdup_ray.create_stats_gallery(
        work, out / "paged", metric="mean", ascending=False, page_size=1, per_card=4
    )
    assert sorted(p.name for p in first.parent.glob("stats_mean*.html")) == [
        "stats_mean.html",
        "stats_mean_2.html",
        "stats_mean_3.html",
    ]
    page, errors, _ = open_page(chromium, first)
    page.click("text=next")
    page.wait_for_load_state("load")
    assert page.url.endswith("stats_mean_2.html") and "page 2 of 3" in page.inner_text("body")
    assert page.evaluate("Array.from(document.images).every(img => img.naturalWidth > 0)")
    page.close()
    assert errors == []


@pytest.mark.integration
def test_galleries_from_a_work_dir_on_s3(ray_local, s3_server, gallery_run, chromium, monkeypatch, tmp_path):
    import s3fs

    work, _, planted = gallery_run
    fs = s3fs.S3FileSystem(
        key=KEY, secret=SECRET, client_kwargs={"endpoint_url": s3_server, "region_name": "us-east-1"}
    )
    fs.put(str(work) + "/", "fdr-gallery/work/", recursive=True)
    # A report finds S3 the way AWS tools do: endpoint and keys from the environment.
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    page = fastdup_ray.create_duplicates_gallery("s3://fdr-gallery/work", tmp_path)
    text, images = check_page(chromium, page)
    assert shown_pairs(text, {n for pair in planted for n in pair}) == planted and images == 6


@pytest.mark.integration
def test_gallery_and_projector_commands(gallery_run, tmp_path):
    work, _, _ = gallery_run
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastdup_ray",
            "create-components-gallery",
            str(work),
            str(tmp_path / "g"),
            "--max-items",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "g" / "components.html").exists() and len(
        list((tmp_path / "g" / "thumbnails").glob("*.jpg"))
    ) == 3
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastdup_ray",
            "create_stats_gallery",
            str(work),
            str(tmp_path / "g"),
            "--metric",
            "sharpness",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown statistic 'sharpness'" in bad.stderr and "blur" in bad.stderr


@pytest.mark.integration
def test_projector_export_is_served_by_tensorboard(gallery_run, tmp_path):
    pytest.importorskip("tensorboard")
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    work, _, _ = gallery_run
    config_path = fastdup_ray.export_to_tensorboard_projector(work, tmp_path / "logs", sample_size=8, seed=1)
    config = text_format.Parse(config_path.read_text(), ProjectorConfig())
    embedding = config.embeddings[0]
    assert list(embedding.tensor_shape) == [8, DEFAULT_D] and list(embedding.sprite.single_image_dim) == [
        64,
        64,
    ]
    names, vectors = fastdup_ray.load_binary_features(work)
    metadata = pl.read_csv(tmp_path / "logs" / "metadata.tsv", separator="\t", quote_char=None)
    ids = [names.index(name) for name in metadata["filename"]]
    assert metadata.height == 8 and ids == sorted(ids)

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(tmp_path / "logs"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/data/plugin/projector"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                runs = json.loads(urllib.request.urlopen(f"{base}/runs", timeout=5).read())
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        assert runs == ["."]
        tensor = np.frombuffer(
            urllib.request.urlopen(f"{base}/tensor?run=.&name=fastdup_ray").read(), dtype="<f4"
        ).reshape(8, DEFAULT_D)
        assert np.allclose(tensor, vectors[ids], atol=1e-5)
        sprite = Image.open(
            io.BytesIO(urllib.request.urlopen(f"{base}/sprite_image?run=.&name=fastdup_ray").read())
        )
        assert sprite.size == (3 * 64, 3 * 64)
    finally:
        server.terminate()
        server.wait(timeout=30)


# --- galleries of small local runs: thumbnails, table paths, test runs ---------------------


def make_folder(folder: Path, scenes: dict[str, Image.Image]) -> Path:
    folder.mkdir(parents=True)
    for name, image in scenes.items():
        (folder / name).write_bytes(jpeg_bytes(image))
    return folder


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory):
    """Three small runs on the local executor: 'train' (four scenes, two planted copies),
    'other' (four other scenes, one copy) and 'test' (copies of train scenes 1 and 2 and
    an unrelated scene). Every run numbers its images from 0, so ids collide across runs."""
    root = tmp_path_factory.mktemp("local_runs")
    train = {f"train_{i}.jpg": make_scene(300 + i, material=i) for i in range(4)}
    train["train_0_copy.jpg"] = near_duplicate(train["train_0.jpg"], 0)
    train["train_3_copy.jpg"] = near_duplicate(train["train_3.jpg"], 2)
    other = {f"other_{i}.jpg": make_scene(400 + i, material=i + 4) for i in range(4)}
    other["other_0_copy.jpg"] = near_duplicate(other["other_0.jpg"], 1)
    test = {
        "test_1.jpg": near_duplicate(train["train_1.jpg"], 0),
        "test_2.jpg": near_duplicate(train["train_2.jpg"], 2),
        "unrelated.jpg": make_scene(777, material=9),
    }
    works = {}
    for name, scenes in (("train", train), ("other", other), ("test", test)):
        folder = make_folder(root / name, scenes)
        works[name] = root / f"work_{name}"
        fastdup_ray.run(str(folder), str(works[name]), executor="local", nearest_neighbors_k=2)
    return works


def run_thumbnails(work: Path) -> dict[str, bytes]:
    """filename -> thumbnail bytes stored by the run's extraction."""
    table = pl.read_parquet(work / "features.thumbnails.parquet")
    return dict(zip(table["filename"], table["thumbnail"]))


def shown_tiles(page: Path) -> list[tuple[str, bytes | None]]:
    """(location, bytes of the thumbnail file it shows, or None for the empty box) of every
    tile of a gallery page, in page order."""
    import html as html_lib

    text = page.read_text()
    tiles = []
    for picture, location in re.findall(
        r'<figure class="tile[^"]*">(.*?)<figcaption>\s*<div class="location">(.*?)</div>', text, re.S
    ):
        source = re.search(r'<img src="([^"]+)"', picture)
        assert source or 'class="missing"' in picture, picture
        tiles.append(
            (
                html_lib.unescape(location),
                (page.parent / html_lib.unescape(source.group(1))).read_bytes() if source else None,
            )
        )
    return tiles


def test_a_gallery_shows_only_thumbnails_of_its_own_run_in_a_shared_folder(local_runs, tmp_path):
    train, other = local_runs["train"], local_runs["other"]
    out = tmp_path / "shared"
    fastdup_ray.create_duplicates_gallery(train, out)
    fastdup_ray.create_stats_gallery(train, out)
    kept = fastdup_ray.create_similarity_gallery(train, out)
    # Another run's galleries into the same folder: the same ids, other pictures.
    stats = fastdup_ray.create_stats_gallery(other, out)
    duplicates = fastdup_ray.create_duplicates_gallery(other, out)
    for page, work in ((duplicates, other), (stats, other), (kept, train)):
        tiles = shown_tiles(page)
        stored = run_thumbnails(work)
        assert tiles and all(picture == stored[name] for name, picture in tiles), page
    assert {name for name, _ in shown_tiles(out / "stats_blur.html")} == set(run_thumbnails(other))

    # A run without thumbnails shows its own files, whatever older pictures of the same
    # ids lie in the folder.
    bare = tmp_path / "bare"
    shutil.copytree(other, bare)
    (bare / "features.thumbnails.parquet").unlink()
    tiles = shown_tiles(fastdup_ray.create_stats_gallery(bare, out))
    assert len(tiles) == 5
    assert all(picture is not None and shows_file(picture, Path(name)) for name, picture in tiles)


def test_a_run_extracted_without_thumbnails_shows_its_files_and_no_picture_for_tar_members(tmp_path, caplog):
    """thumbnail_size=0 stores no thumbnails: the galleries make them from the images'
    own files, and an image inside a tar, or a file gone since the run, shows the empty
    box, the file gone named in a warning."""
    scenes = {f"loose_{i}.jpg": make_scene(500 + i, material=i) for i in range(3)}
    scenes["loose_0_copy.jpg"] = near_duplicate(scenes["loose_0.jpg"], 2)
    folder = make_folder(tmp_path / "images", scenes)
    members = {"member_0.jpg": jpeg_bytes(make_scene(600, material=5))}
    members["member_0_copy.jpg"] = jpeg_bytes(near_duplicate(make_scene(600, material=5), 3))
    write_tar(folder / "shard.tar", members)
    work = tmp_path / "work"
    fastdup_ray.run(str(folder), str(work), executor="local", nearest_neighbors_k=2, thumbnail_size=0)
    assert not list(work.glob("*thumbnails*"))

    tiles = shown_tiles(fastdup_ray.create_stats_gallery(work, tmp_path / "g"))
    assert len(tiles) == 6
    for name, picture in tiles:
        if "shard.tar/" in name:
            assert picture is None, name
        else:
            assert picture is not None and shows_file(picture, Path(name)), name
    duplicates = shown_tiles(fastdup_ray.create_duplicates_gallery(work, tmp_path / "g"))
    assert {Path(name).name for name, _ in duplicates} >= {"loose_0.jpg", "loose_0_copy.jpg"}
    # The projector's sprite is made from the same files: a loose image's cell is its picture.
    logs = tmp_path / "logs"
    fastdup_ray.export_to_tensorboard_projector(work, logs, sample_size=6, sprite_cell=32)
    assert 'image_path: "sprite.png"' in (logs / "projector_config.pbtxt").read_text()

    gone = folder / "loose_1.jpg"
    gone.unlink()
    with caplog.at_level("WARNING", logger="fastdup_ray"):
        tiles = dict(shown_tiles(fastdup_ray.create_stats_gallery(work, tmp_path / "after")))
    assert tiles[str(gone)] is None
    assert sum(picture is not None for picture in tiles.values()) == 3
    assert f"no thumbnail for 1 of 4 images read from their files (first: {gone}" in caplog.text


def card_count(page: Path) -> int:
    return page.read_text().count('<section class="card ')


def test_galleries_accept_the_path_of_the_table_they_show(local_runs, tmp_path):
    """As in fastdup, a path to a file names both the work dir (its folder) and the table
    read, so a filtered copy of a table in the work dir works too."""
    work = tmp_path / "work"
    shutil.copytree(local_runs["train"], work)
    pairs = pl.read_csv(work / "similarity.csv")
    assert pairs.height == 2
    whole = fastdup_ray.create_duplicates_gallery(work / "similarity.csv", tmp_path / "a")
    assert (
        card_count(whole) == 2
        and whole.read_text() == fastdup_ray.create_duplicates_gallery(work, tmp_path / "b").read_text()
    )
    pairs.head(1).write_csv(work / "top_pair.csv")
    assert card_count(fastdup_ray.create_duplicates_gallery(work / "top_pair.csv", tmp_path / "c")) == 1
    assert (
        card_count(fastdup_ray.create_similarity_gallery(str(work / "top_pair.csv"), tmp_path / "c")) == 1
    )  # the pair once
    assert (
        card_count(fastdup_ray.create_outliers_gallery(work / "outliers.csv", tmp_path / "c"))
        == pl.read_csv(work / "outliers.csv")["from"].n_unique()
    )

    info = pl.read_csv(work / "component_info.csv").filter(pl.col("Count") >= 2)
    assert info.height == 2
    assert (
        card_count(fastdup_ray.create_components_gallery(work / "connected_components.csv", tmp_path / "c"))
        == 2
    )
    assert card_count(fastdup_ray.create_components_gallery(work / "component_info.csv", tmp_path / "c")) == 2
    info.head(1).write_csv(work / "biggest_component.csv")
    assert (
        card_count(fastdup_ray.create_components_gallery(work / "biggest_component.csv", tmp_path / "c")) == 1
    )
    members = pl.read_csv(work / "connected_components.csv")
    members.filter(pl.col("component_id") == info["component_id"][1]).write_csv(
        work / "one_component_members.csv"
    )
    assert (
        card_count(fastdup_ray.create_components_gallery(work / "one_component_members.csv", tmp_path / "c"))
        == 1
    )

    stats = pl.read_csv(work / "stats.csv")
    stats.sort("blur").head(2).write_csv(work / "two_blurriest.csv")
    page = fastdup_ray.create_stats_gallery(work / "two_blurriest.csv", tmp_path / "c", per_card=1)
    assert card_count(page) == 2 and len(shown_tiles(page)) == 2
    assert (
        len(shown_tiles(fastdup_ray.create_stats_gallery(work / "stats.csv", tmp_path / "c"))) == stats.height
    )

    with pytest.raises(InputError, match="nothing.csv"):
        fastdup_ray.create_duplicates_gallery(work / "nothing.csv", tmp_path / "c")
    with pytest.raises(InputError, match="stats.csv"):
        fastdup_ray.create_duplicates_gallery(work / "stats.csv", tmp_path / "c")
    assert not (work / "nothing.csv").exists()


def write_test_results(train: Path, test_features: Path, results: Path) -> pl.DataFrame:
    """What run_mode 3 or 4 leaves in ``<work_dir>/test_results``: similarity.csv and
    outliers.csv from test images to train images, and test_run.json saying where each
    side's features are. Returns every test image's nearest train image."""
    train_names, train_vectors = fastdup_ray.load_binary_features(train)
    test_names, test_vectors = fastdup_ray.load_binary_features(test_features)
    similarity = test_vectors @ train_vectors.T
    nearest = pl.DataFrame(
        {
            "from": test_names,
            "to": [train_names[j] for j in similarity.argmax(1)],
            "distance": similarity.max(1),
        }
    )
    results.mkdir()
    nearest.filter(pl.col("distance") >= 0.9).sort("distance", descending=True).write_csv(
        results / "similarity.csv"
    )
    nearest.sort("distance").head(1).write_csv(results / "outliers.csv")
    (results / "test_run.json").write_text(
        json.dumps({"train_work_dir": str(train.resolve()), "test_features": str(test_features.resolve())})
    )
    return nearest


def plain_features(work: Path, folder: Path) -> Path:
    """The run's vectors as a bare features.dat + features.dat.csv (fastdup's layout, no
    completion marker, no thumbnails)."""
    names, vectors = fastdup_ray.load_binary_features(work)
    folder.mkdir()
    vectors.astype("<f4").tofile(folder / "features.dat")
    pl.DataFrame({"filename": names}).write_csv(folder / "features.dat.csv")
    return folder


def test_galleries_of_a_test_run_show_test_images_beside_train_images(local_runs, tmp_path):
    train, test = tmp_path / "train", local_runs["test"]
    shutil.copytree(local_runs["train"], train)
    results = train / "test_results"
    nearest = write_test_results(train, test, results)
    test_folder, train_folder = Path(nearest["from"][0]).parent, Path(nearest["to"][0]).parent
    assert dict(zip(nearest["from"], nearest["to"])) == {
        str(test_folder / "test_1.jpg"): str(train_folder / "train_1.jpg"),
        str(test_folder / "test_2.jpg"): str(train_folder / "train_2.jpg"),
        str(test_folder / "unrelated.jpg"): nearest["to"][2],
    }
    test_thumbs, train_thumbs = run_thumbnails(test), run_thumbnails(train)

    def expected(table: Path, test_thumbs=test_thumbs) -> list:
        rows = pl.read_csv(table)
        return [
            tile
            for a, b in zip(rows["from"], rows["to"])
            for tile in ((a, test_thumbs.get(a)), (b, train_thumbs[b]))
        ]

    duplicates = fastdup_ray.create_duplicates_gallery(results, tmp_path / "g")
    assert (
        shown_tiles(duplicates) == expected(results / "similarity.csv") and len(shown_tiles(duplicates)) == 4
    )
    assert "test image" in duplicates.read_text() and "train image" in duplicates.read_text()
    outliers = fastdup_ray.create_outliers_gallery(results / "outliers.csv", tmp_path / "g")
    assert shown_tiles(outliers) == expected(results / "outliers.csv") and shown_tiles(outliers)[0][
        0
    ].endswith("unrelated.jpg")
    similar = fastdup_ray.create_similarity_gallery(results, tmp_path / "g")
    assert shown_tiles(similar) == expected(results / "similarity.csv")  # test images are the queries
    for gallery in (fastdup_ray.create_components_gallery, fastdup_ray.create_stats_gallery):
        with pytest.raises(InputError, match="test_results.*train work dir"):
            gallery(results, tmp_path / "g")

    # run_mode 4: the test side is the user's features (shards, or a bare features.dat),
    # with no thumbnails: its tiles show their files, the train side its stored pictures.
    bare = plain_features(test, tmp_path / "bare")
    for number, features in enumerate((bare, bare / "features.dat", tmp_path / "saved")):
        if number == 2:
            fastdup_ray.save_binary_feature(features, *fastdup_ray.load_binary_features(test))
        shutil.rmtree(results)
        write_test_results(train, features, results)
        page = fastdup_ray.create_duplicates_gallery(results, tmp_path / f"g{number}")
        tiles, wanted = shown_tiles(page), expected(results / "similarity.csv", test_thumbs={})
        assert [name for name, _ in tiles] == [name for name, _ in wanted], features
        for (name, picture), (_, stored) in zip(tiles, wanted):
            assert picture == stored if stored else shows_file(picture, Path(name)), (features, name)


def test_run_mode_3_results_make_galleries(local_runs, tmp_path):
    """The same galleries straight from run_mode 3's own test_results folder."""
    train = tmp_path / "train"
    shutil.copytree(local_runs["train"], train)
    test_images = Path(pl.read_csv(local_runs["test"] / "features.dat.csv")["filename"][0]).parent
    fastdup_ray.run(
        str(test_images),
        str(train),
        executor="local",
        run_mode=3,
        test_dir=str(test_images),
        nearest_neighbors_k=2,
    )
    results = train / "test_results"
    if not (results / "test_run.json").exists():
        pytest.skip("run_mode 3 does not write test_results/ yet (issue 12)")
    test_thumbs, train_thumbs = run_thumbnails(train / "test_features"), run_thumbnails(train)
    page = fastdup_ray.create_duplicates_gallery(results, tmp_path / "g")
    rows = pl.read_csv(results / "similarity.csv")
    assert rows.height == 2 and shown_tiles(page) == [
        tile for a, b in zip(rows["from"], rows["to"]) for tile in ((a, test_thumbs[a]), (b, train_thumbs[b]))
    ]

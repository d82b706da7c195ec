"""Galleries a user decides from, over a real local run: every gallery and index.html in
headless Chromium (click-through links resolve), each pair once, keep markers that agree
with dedup's keep.csv, empty galleries that say what to change, the Visualizer's fastdup
arguments, Parquet-part tables, and inline display in a real Jupyter kernel."""

from __future__ import annotations

import html
import io
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
import polars as pl
import pytest
from PIL import Image

import fastdup_ray
from fastdup_ray.actions.dedup import write_keep_remove
from fastdup_ray.errors import ConfigError
from fastdup_ray.reports import Visualizer, create_galleries
from fastdup_ray.reports.vis import in_notebook
from fastdup_ray.rundir import layout
from fastdup_ray.sample import jpeg_bytes, make_scene, near_duplicate

GALLERY_PAGES = {
    "duplicates.html",
    "similarity.html",
    "components.html",
    "outliers.html",
    "stats_blur.html",
    "stats_dark.html",
    "stats_bright.html",
}
ODD = "odd <b>name & 'quote' #1 %20.jpg"  # escaped on the page, percent-encoded in its link


@pytest.fixture(scope="module")
def decided_run(tmp_path_factory):
    """A folder run with the local executor: 'a' and a smaller copy (resolution decides),
    'b' twice at one size, the copy a bigger file (file_size decides), 'c' three times (a
    component of three), three unrelated scenes and a broken file."""
    root = tmp_path_factory.mktemp("decided")
    folder = root / "images"
    folder.mkdir()
    a, b, c = (make_scene(610 + i, material=i) for i in range(3))
    files = {
        "a.jpg": jpeg_bytes(a),
        "a_small.jpg": jpeg_bytes(near_duplicate(a, 0)),
        "b.jpg": jpeg_bytes(b, quality=60),
        "b_best.jpg": jpeg_bytes(b, quality=98),
        "c.jpg": jpeg_bytes(c),
        "c_crop.jpg": jpeg_bytes(near_duplicate(c, 1)),
        ODD: jpeg_bytes(near_duplicate(c, 2)),
        "broken.jpg": jpeg_bytes(a)[:300],
    }
    files.update({f"other_{i}.jpg": jpeg_bytes(make_scene(700 + i, material=5 + i)) for i in range(3)})
    for name, data in files.items():
        (folder / name).write_bytes(data)
    work = root / "work"
    summary = fastdup_ray.run(str(folder), str(work), executor="local")
    assert (summary.good, summary.bad) == (10, 1)
    return folder, work


def read_cards(page: Path) -> list[list[tuple[str, str]]]:
    """Each card of a gallery page as (location, marker class: 'keep', 'remove' or '')."""
    cards = []
    for card in page.read_text().split('<section class="card ')[1:]:
        tiles = re.findall(r'<figure class="tile ?([a-z]*)">.*?<div class="location">(.*?)</div>', card, re.S)
        cards.append([(html.unescape(location), marker) for marker, location in tiles])
    return cards


def run_pairs(work: Path) -> set[frozenset]:
    table = pl.read_csv(work / "similarity.csv")
    return {frozenset(pair) for pair in zip(table["from"], table["to"])}


def open_page(chromium, url: str):
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url, wait_until="load")
    return page, errors


def link_target(page_file: Path, href: str) -> Path:
    """The file a link of a gallery page opens (file:// or relative)."""
    parsed = urlparse(href)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else page_file.parent / unquote(href)


def test_index_links_every_gallery_and_every_click_opens_a_picture(decided_run, chromium, tmp_path):
    folder, work = decided_run
    out, shots = tmp_path / "galleries", tmp_path / "screenshots"
    shots.mkdir()
    index = create_galleries(work, out)
    page, errors = open_page(chromium, index.as_uri())
    text = page.inner_text("body")
    assert "10 good, 1 bad" in text and "similar pairs" in text and "keeps 6 images and removes 4" in text
    assert re.search(r"threshold\s+0\.65", text) and re.search(
        r"ccthreshold\s+0\.7", text
    )  # the run's parameters
    hrefs = page.eval_on_selector_all("ul.galleries a", "links => links.map(a => a.getAttribute('href'))")
    assert set(hrefs) == GALLERY_PAGES
    page.screenshot(path=str(shots / "index.png"), full_page=True)
    for href in hrefs:
        with page.expect_navigation(wait_until="load"):
            page.click(f"ul.galleries a[href='{href}']")
        assert page.url.endswith("/" + href)
        assert page.evaluate(
            "Array.from(document.images).every(img => img.complete && img.naturalWidth > 0)"
        ), href
        page.screenshot(path=str(shots / href.replace(".html", ".png")), full_page=True)
        links = page.eval_on_selector_all("a.open", "links => links.map(a => a.getAttribute('href'))")
        assert links and len(links) == page.evaluate("document.images.length")
        for link in links:  # every original is a local file here: the link opens it
            assert link.startswith("file://") and link_target(out / href, link).is_file(), link
        with page.expect_navigation(wait_until="load"):
            page.click("text=all galleries")
        assert page.url == index.as_uri()
    # A click on an image opens the original, with its odd name, in a new tab.
    page.goto((out / "components.html").as_uri(), wait_until="load")
    with page.context.expect_page() as opened:
        page.get_by_title(f"open {folder / ODD}", exact=True).click()
    picture = opened.value
    picture.wait_for_load_state("load")
    assert link_target(out, picture.url) == folder / ODD
    assert picture.evaluate("document.images.length === 1 && document.images[0].naturalWidth === 320")
    page.close()
    assert errors == []
    assert {p.name for p in shots.iterdir()} == {"index.png"} | {
        name.replace(".html", ".png") for name in GALLERY_PAGES
    }


def test_each_pair_is_shown_once_with_dedups_keep_marker(decided_run, tmp_path):
    folder, work = decided_run
    pairs = run_pairs(work)
    assert frozenset((str(folder / "a.jpg"), str(folder / "a_small.jpg"))) in pairs and len(pairs) >= 4
    duplicates = read_cards(fastdup_ray.create_duplicates_gallery(work, tmp_path / "d"))
    assert all(len(card) == 2 for card in duplicates)
    assert len(duplicates) == len(pairs) and {frozenset(n for n, _ in card) for card in duplicates} == pairs

    similar = read_cards(fastdup_ray.create_similarity_gallery(work, tmp_path / "d"))
    shown = [frozenset((card[0][0], name)) for card in similar for name, _ in card[1:]]
    assert len(shown) == len(set(shown)) and set(shown) == pairs  # each pair once, none left out

    for rule, kept, removed in (("resolution", "a.jpg", "a_small.jpg"), ("file_size", "b_best.jpg", "b.jpg")):
        keep_csv, remove_csv = write_keep_remove(str(work), rule)
        keep, remove = set(pl.read_csv(keep_csv)["filename"]), set(pl.read_csv(remove_csv)["filename"])
        assert str(folder / kept) in keep and str(folder / removed) in remove
        for gallery in (fastdup_ray.create_duplicates_gallery, fastdup_ray.create_components_gallery):
            cards = read_cards(gallery(work, tmp_path / rule, keep=rule))
            marked = [tile for card in cards for tile in card]
            assert marked and all(
                (marker == "keep") == (name in keep) and (marker == "remove") == (name in remove)
                for name, marker in marked
            ), (rule, marked)
        components = read_cards(tmp_path / rule / "components.html")
        assert all(
            sum(marker == "keep" for _, marker in card) == 1 for card in components
        )  # one kept per component
    page = (tmp_path / "resolution" / "duplicates.html").read_text()
    assert "320\u00d7240 px" in page and "240\u00d7180 px" in page  # both sides' resolution
    assert re.search(r"\d+\.\d KB", page)

    unmarked = read_cards(fastdup_ray.create_duplicates_gallery(work, tmp_path / "none", keep=None))
    assert all(marker == "" for card in unmarked for _, marker in card)


def test_component_cards_show_size_and_similarity_inside(decided_run, tmp_path):
    folder, work = decided_run
    page = fastdup_ray.create_components_gallery(work, tmp_path)
    cards = read_cards(page)
    assert sorted(len(card) for card in cards) == [2, 2, 3]
    text = page.read_text()
    three = text.split('<section class="card ')[1]  # largest first
    inside = pl.read_csv(work / "similarity.csv").filter(
        pl.col("from").is_in([str(folder / n) for n in ("c.jpg", "c_crop.jpg", ODD)])
        & pl.col("to").is_in([str(folder / n) for n in ("c.jpg", "c_crop.jpg", ODD)])
    )
    assert (
        "3 images" in three
        and f"mean {inside['distance'].mean():.4f}, min {inside['distance'].min():.4f} "
        f"over {inside.height} pairs"
        in three
    )


def test_empty_galleries_say_why_and_what_to_change(decided_run, tmp_path):
    folder, work = decided_run
    strict = tmp_path / "strict"
    shutil.copytree(work, strict)
    # The same run again at thresholds nothing reaches: the features are reused.
    fastdup_ray.run(
        str(folder), str(strict), executor="local", threshold=0.9999, turi_param="ccthreshold=0.9999"
    )
    index = create_galleries(strict, tmp_path / "g")
    duplicates = (tmp_path / "g" / "duplicates.html").read_text()
    assert (
        "No pairs at or above 0.9999 (the run&#39;s threshold)" in duplicates
        and "--threshold 0.9 " in duplicates
    )
    assert "ccthreshold=0.9 " in (tmp_path / "g" / "components.html").read_text()
    assert "No pairs at or above 0.9999" in index.read_text() and "(0 rows)" in index.read_text()

    page = fastdup_ray.create_duplicates_gallery(work, tmp_path / "h", threshold=0.9999)
    best = pl.read_csv(work / "similarity.csv")["distance"].max()
    assert (
        f"the most similar pair scores {best:.4f}: try threshold={math.floor(best * 100) / 100:g}"
        in html.unescape(page.read_text())
    )


def test_visualizer_takes_fastdups_arguments(decided_run, tmp_path):
    folder, work = decided_run
    assert not in_notebook()
    names = pl.read_csv(work / "features.dat.csv")["filename"].to_list()
    annotations = pd.DataFrame({"filename": names, "label": [Path(n).name[0] for n in names]})
    vis = Visualizer(work, annotations=annotations)
    page = vis.duplicates_gallery(num_images=1)
    assert page == work / "galleries" / "duplicates.html"  # fastdup's default save_path
    top = pl.read_csv(work / "similarity.csv").sort("distance", descending=True).row(0)
    assert [frozenset(n for n, _ in card) for card in read_cards(page)] == [frozenset(top[:2])]

    only_b = read_cards(vis.duplicates_gallery(save_path=tmp_path, slice="b"))
    assert [sorted(Path(n).name for n, _ in card) for card in only_b] == [["b.jpg", "b_best.jpg"]]
    component = read_cards(vis.component_gallery(save_path=tmp_path, slice=["c", "o"], max_items=2))
    assert len(component) == 1 and len(component[0]) == 2  # the three c's (one with an 'o' name), two shown
    assert "label: c" in (tmp_path / "components.html").read_text()
    bright = vis.stats_gallery(save_path=tmp_path, metric="bright", num_images=3)
    means = pl.read_csv(work / "stats.csv").sort("mean", descending=True)["filename"].head(3).to_list()
    assert bright.name == "mean.html" and [n for card in read_cards(bright) for n, _ in card] == means
    assert read_cards(vis.outliers_gallery(save_path=tmp_path)) and read_cards(
        vis.similarity_gallery(save_path=tmp_path, num_images=2)
    )
    assert (
        "Nothing to show: no rows whose image has a label in [&#39;z&#39;]"
        in vis.duplicates_gallery(save_path=tmp_path, slice="z").read_text()
    )

    with pytest.raises(ConfigError, match="slice needs annotations"):
        Visualizer(work).duplicates_gallery(save_path=tmp_path, slice="b")
    # fastdup's listing frame has no labels: the galleries work, without labels.
    listing = pd.DataFrame({"filename": names, "is_valid": True})
    assert (
        "label:"
        not in Visualizer(work, annotations=listing).duplicates_gallery(save_path=tmp_path / "l").read_text()
    )


def test_galleries_read_tables_written_as_parquet_parts(decided_run, tmp_path):
    _, work = decided_run
    parts = tmp_path / "work"
    shutil.copytree(work, parts)
    for name, folder in layout.TABLE_PARTS.items():  # as the distributed reduce writes them
        (parts / folder).mkdir()
        pl.read_csv(parts / name).write_parquet(parts / folder / layout.part_name(0))
        (parts / name).unlink()
    (parts / layout.STATS_PARQUET).unlink()
    galleries = {
        "duplicates": lambda at, out: fastdup_ray.create_duplicates_gallery(at, out, keep=None),
        "components": lambda at, out: fastdup_ray.create_components_gallery(at, out, keep=None),
        "outliers": fastdup_ray.create_outliers_gallery,
        "similarity": fastdup_ray.create_similarity_gallery,
        "stats": lambda at, out: fastdup_ray.create_stats_gallery(at, out, metric="width"),
    }
    for name, gallery in galleries.items():
        from_parts = gallery(parts, tmp_path / "parts")
        from_csv = gallery(work, tmp_path / "csv")
        assert read_cards(from_parts) and read_cards(from_parts) == read_cards(from_csv), name
        assert re.findall(r"\d+\u00d7\d+ px", from_parts.read_text()) == re.findall(
            r"\d+\u00d7\d+ px", from_csv.read_text()
        ), name  # the statistics too


def test_create_galleries_command(decided_run, tmp_path):
    _, work = decided_run
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastdup_ray",
            "create-galleries",
            str(work),
            str(tmp_path / "g"),
            "--keep",
            "file_size",
            "--thumbnail-size",
            "200",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert {p.name for p in (tmp_path / "g").glob("*.html")} == GALLERY_PAGES | {"index.html"}
    assert (
        "--tile: 200px" in (tmp_path / "g" / "duplicates.html").read_text()
        and "dedup --keep file_size" in (tmp_path / "g" / "index.html").read_text()
    )
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastdup_ray",
            "create-galleries",
            str(tmp_path / "nothing"),
            str(tmp_path / "g"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        f"fastdup-ray: error: no finished run in {tmp_path / 'nothing'}: no such folder"
    ]


def test_thumbnails_are_stored_large_enough_to_judge(decided_run):
    _, work = decided_run
    thumbnails = pl.read_parquet(work / "features.thumbnails.parquet")
    sizes = {Image.open(io.BytesIO(jpeg)).size for jpeg in thumbnails["thumbnail"]}
    assert max(max(size) for size in sizes) == 256 and (256, 192) in sizes  # 320x240 scenes


def test_a_notebook_shows_the_gallery_inline(decided_run, tmp_path):
    """A real Jupyter kernel: the gallery comes back as display data, its thumbnails inside."""
    from jupyter_client.manager import start_new_kernel

    _, work = decided_run
    manager, client = start_new_kernel(kernel_name="python3")
    try:
        code = (
            "from fastdup_ray.reports.vis import Visualizer, in_notebook\n"
            "print(in_notebook())\n"
            f"Visualizer({str(work)!r}).duplicates_gallery(save_path={str(tmp_path)!r}, num_images=2);"
        )
        shown, printed = [], []

        def collect(message):
            content = message["content"]
            if message["msg_type"] == "display_data":
                shown.append(content["data"].get("text/html", ""))
            elif message["msg_type"] == "stream":
                printed.append(content["text"])
            elif message["msg_type"] == "error":
                printed.append("\n".join(content["traceback"]))

        reply = client.execute_interactive(code, timeout=120, output_hook=collect)
        assert reply["content"]["status"] == "ok", printed
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert "".join(printed).strip() == "True" and len(shown) == 1
    cards = shown[0].split('<section class="card ')[1:]
    assert len(cards) == 2 and all(card.count('src="data:image/jpeg;base64,') == 2 for card in cards)
    assert str(tmp_path / "duplicates.html") in shown[0]


# --- galleries of a DataFrame, as fastdup takes them ----------------------------------------

FRAME_GALLERIES = ("duplicates", "similarity", "outliers", "components", "stats")


def chosen_rows(work: Path, gallery: str, source: str) -> tuple[pd.DataFrame, list[list[str]]]:
    """A filtered frame for ``gallery`` (from the object API, or the run's CSV read by
    pandas) and the cards it must give: each card's file names, in page order."""
    fd = fastdup_ray.create(work_dir=work)
    if gallery in ("duplicates", "similarity"):
        pairs = fd.similarity() if source == "api" else pd.read_csv(work / "similarity.csv")
        frame = pairs.iloc[[1, 2]]
        ends = ("filename_from", "filename_to") if source == "api" else ("from", "to")
        rows = [list(row) for row in frame[list(ends)].itertuples(index=False)]
        return frame, rows
    if gallery == "outliers":
        outliers = fd.outliers() if source == "api" else pd.read_csv(work / "outliers.csv")
        frame = outliers.iloc[[0]]
        ends = ("filename_outlier", "filename_nearest") if source == "api" else ("from", "to")
        return frame, [list(frame[list(ends)].iloc[0])]
    if gallery == "components":
        if source == "api":
            members = fd.connected_components()[0]
            names = members["filename"]
        else:
            members = pd.read_csv(work / "connected_components.csv")
            names = members["filename"]
        biggest = members.loc[names.str.endswith("c.jpg"), "component_id"].iloc[0]
        frame = members[members["component_id"] == biggest].sort_values("pagerank", ascending=False).head(2)
        return frame, [sorted(frame["filename"])]
    stats = fd.img_stats() if source == "api" else pd.read_csv(work / "stats.csv")
    frame = stats.sort_values("blur").head(3)
    return frame, [list(frame["filename"])]


def card_names(page: Path, gallery: str) -> list[list[str]]:
    """Each card's file names; a components card's sorted (order is by pagerank ties)."""
    cards = [[name for name, _ in card] for card in read_cards(page)]
    if gallery == "similarity":  # a query and its matches: one pair per match
        return [[card[0], other] for card in cards for other in card[1:]]
    return [sorted(card) for card in cards] if gallery == "components" else cards


def every_tile_has_a_picture(page: Path) -> bool:
    tiles = re.findall(r'<figure class="tile[^"]*">(.*?)<figcaption>', page.read_text(), re.S)
    return bool(tiles) and all('<img src="thumbnails/' in tile for tile in tiles)


def frame_gallery(gallery: str, frame, out: Path, work: Path | None):
    """create_<gallery>_gallery(frame, out), naming the run as fastdup's keyword does."""
    create = getattr(fastdup_ray, f"create_{gallery}_gallery")
    if work is None:
        return create(frame, out)
    return (
        create(frame, out, input_dir=work) if gallery == "components" else create(frame, out, work_dir=work)
    )


@pytest.mark.parametrize("source", ["api", "csv"])
@pytest.mark.parametrize("flavour", ["pandas", "polars"])
@pytest.mark.parametrize("gallery", FRAME_GALLERIES)
def test_a_gallery_of_a_dataframe_shows_exactly_its_rows(decided_run, tmp_path, gallery, flavour, source):
    _, work = decided_run
    frame, expected = chosen_rows(work, gallery, source)
    assert 0 < len(frame)
    given = frame if flavour == "pandas" else pl.from_pandas(frame)
    page = frame_gallery(gallery, given, tmp_path / "named", work)
    shown = card_names(page, gallery)
    if gallery == "similarity":
        assert {frozenset(pair) for pair in shown} == {frozenset(pair) for pair in expected} and len(
            shown
        ) == len(expected)
    else:
        assert shown == expected
    assert every_tile_has_a_picture(page)
    # Without work_dir the run is the one opened in this process that holds those images.
    assert card_names(frame_gallery(gallery, given, tmp_path / "found", None), gallery) == shown


@pytest.mark.parametrize("gallery", FRAME_GALLERIES)
def test_fd_vis_takes_fastdups_external_df(decided_run, tmp_path, gallery):
    _, work = decided_run
    frame, _ = chosen_rows(work, gallery, "api")
    fd = fastdup_ray.create(work_dir=work)
    method = {
        "duplicates": "duplicates_gallery",
        "similarity": "similarity_gallery",
        "outliers": "outliers_gallery",
        "components": "component_gallery",
        "stats": "stats_gallery",
    }[gallery]
    extra = {"metric": "blur"} if gallery == "stats" else {}
    page = getattr(fd.vis, method)(save_path=tmp_path / "vis", external_df=frame, show=False, **extra)
    assert card_names(page, gallery) == card_names(
        frame_gallery(gallery, frame, tmp_path / "create", work), gallery
    )


def test_a_dataframe_whose_run_cannot_be_told_is_a_config_error_naming_work_dir(decided_run, tmp_path):
    folder, work = decided_run
    fd = fastdup_ray.create(work_dir=work)
    stranger = pd.DataFrame({"from": ["/elsewhere/a.jpg"], "to": ["/elsewhere/b.jpg"], "distance": [0.9]})
    with pytest.raises(ConfigError, match=r"work_dir="):
        fastdup_ray.create_duplicates_gallery(stranger, tmp_path)
    with pytest.raises(ConfigError, match=r"not in the run"):
        fastdup_ray.create_outliers_gallery(stranger, tmp_path, work_dir=work)
    by_index = fd.similarity(data=False)  # images by index only: nothing to look the run up by
    with pytest.raises(ConfigError, match=r"work_dir="):
        fastdup_ray.create_duplicates_gallery(by_index, tmp_path)
    shown = card_names(fastdup_ray.create_duplicates_gallery(by_index, tmp_path, work_dir=work), "duplicates")
    assert {frozenset(card) for card in shown} == run_pairs(work)
    with pytest.raises(ConfigError, match=r"input_dir="):
        fastdup_ray.create_components_gallery(
            fd.connected_components()[1], tmp_path
        )  # component_info names no image
    with pytest.raises(ConfigError, match=r"input_dir=.*holds no finished run"):
        fastdup_ray.create_components_gallery(fd.connected_components()[0], tmp_path, input_dir=folder)


def test_a_run_opened_earlier_on_storage_now_unreachable_does_not_stop_the_lookup(
    decided_run, tmp_path, monkeypatch
):
    """In the whole suite an S3 run opened by an earlier test (its server gone) came first."""
    from fastdup_ray.reports import tables

    folder, work = decided_run
    pairs = fastdup_ray.create(work_dir=work).similarity()
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    tables.remember_run("s3://gone-bucket/run")
    shown = card_names(fastdup_ray.create_duplicates_gallery(pairs, tmp_path), "duplicates")
    assert {frozenset(card) for card in shown} == run_pairs(work)


def test_create_galleries_reads_each_shown_thumbnail_from_the_run_once(decided_run, tmp_path, monkeypatch):
    """The galleries share one thumbnails folder and show many of the same images: a
    thumbnail one gallery saved is not read from the run again for the next (on S3 each
    read is of the shard's thumbnails file)."""
    from fastdup_ray.reports import tables

    _, work = decided_run
    asked: list[int] = []
    reader = tables.load_thumbnails

    def counted(work, prefixes, ids, boxed=False):
        asked.extend(ids)
        return reader(work, prefixes, ids, boxed)

    monkeypatch.setattr(tables, "load_thumbnails", counted)
    index = create_galleries(work, tmp_path / "g")
    shown = {p.name for p in (index.parent / "thumbnails").glob("*.jpg")}
    assert len(shown) == 10  # every good image is in some gallery
    assert sorted(asked) == sorted(set(asked)) and len(asked) == 10

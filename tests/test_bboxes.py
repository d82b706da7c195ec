"""Bounding boxes through fastdup's object API, as its object-detection notebooks use it:
``fd.run(annotations=df)`` with several boxes per image (``filename, col_x, row_y, width,
height, label``, or a rotated box's ``x1 .. y4``). A distinctive object pasted into two
photos at other places and scales: its two crops pair up and no other crops do; bad
boxes are features.bad.csv rows with their reasons; folders and tars on the local
engine, one run on Ray; resume follows the boxes; a draw_bbox gallery in Chromium."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from PIL import Image

import fastdup_ray
from fastdup_ray.map.crops import split_crop_name
from fastdup_ray.sample import jpeg_bytes, make_scene

pytestmark = pytest.mark.integration

LOCAL = {"executor": "local", "num_threads": 2}
OBJECT = make_scene(70, material=4).resize((120, 90))  # a printed page: the object to find


def photos() -> dict[str, Image.Image]:
    """Three photos of other materials; the object in a.jpg at (50, 60) and, twice as
    large, in b.jpg at (400, 300); c.jpg has the object turned a quarter at (500, 100)."""
    a = make_scene(71, material=0).resize((640, 480))
    a.paste(OBJECT, (50, 60))
    b = make_scene(72, material=2).resize((800, 600))
    b.paste(OBJECT.resize((240, 180)), (400, 300))
    c = make_scene(73, material=1).resize((700, 500))
    c.paste(OBJECT.rotate(-90, expand=True), (500, 100))  # now 90 wide, 120 tall
    return {"a.jpg": a, "b.jpg": b, "c.jpg": c}


def boxes() -> pd.DataFrame:
    """Two crops of the object, three other crops, and four boxes that give no crop."""
    rows = [
        ("a.jpg", 50, 60, 120, 90, "page"),
        ("a.jpg", 300, 200, 150, 150, "marble"),
        ("b.jpg", 400, 300, 240, 180, "page"),
        ("b.jpg", 20, 20, 200, 200, "bricks"),
        ("c.jpg", 40, 40, 300, 300, "wood"),
        ("b.jpg", 900, 20, 50, 50, "outside"),
        ("b.jpg", 10, 10, 0, 50, "flat"),
        ("c.jpg", 680, 480, 100, 100, "corner"),  # partly outside: clipped, a crop
        ("missing.jpg", 10, 10, 20, 50, "lost"),
    ]
    return pd.DataFrame(rows, columns=["filename", "col_x", "row_y", "width", "height", "label"])


def write_photos(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, picture in photos().items():
        (folder / name).write_bytes(jpeg_bytes(picture))
    return folder


def crop_pairs(fd) -> set[frozenset[str]]:
    pairs = fd.similarity()
    return {frozenset(pair) for pair in zip(pairs["label_from"], pairs["label_to"])}


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    folder = write_photos(tmp_path_factory.mktemp("boxes") / "photos")
    fd = fastdup_ray.create(work_dir=folder.parent / "work", input_dir=folder)
    assert fd.run(annotations=boxes(), threshold=0.8, **LOCAL) == 0
    return fd, folder


def test_the_two_crops_of_one_object_pair_up_and_no_other_crops_do(folder_run):
    fd, folder = folder_run
    assert crop_pairs(fd) == {frozenset({"page"})}
    pairs = fd.similarity()
    assert pairs["distance"].iloc[0] > 0.9
    ends = {split_crop_name(name)[0] for name in (pairs["filename_from"][0], pairs["filename_to"][0])}
    assert ends == {str(folder / "a.jpg"), str(folder / "b.jpg")}


def test_every_box_is_one_row_named_by_its_image_and_box_with_its_columns(folder_run):
    fd, folder = folder_run
    listing = fd.annotations(valid_only=False)
    assert len(listing) == len(boxes()) and listing["filename"].is_unique
    assert set(listing["label"]) == set(boxes()["label"])
    row = listing[listing["label"] == "page"].iloc[0]
    assert row["filename"] == f"{folder / 'a.jpg'}#bbox=50,60,120,90"
    assert (row["col_x"], row["row_y"], row["width"], row["height"]) == (50, 60, 120, 90)
    valid = fd.annotations()
    assert sorted(valid["label"]) == ["bricks", "corner", "marble", "page", "page", "wood"]
    names = [n for f in Path(fd.work_dir).glob("*features.dat.csv") for n in pl.read_csv(f)["filename"]]
    assert sorted(names) == sorted(valid["filename"])


def test_bad_boxes_are_rows_of_features_bad_csv_with_their_reasons(folder_run):
    fd, folder = folder_run
    bad = pl.read_csv(Path(fd.work_dir) / "features.bad.csv")  # every shard's, merged
    reasons = {split_crop_name(name)[1].values: why for name, why in bad.rows()}
    assert len(bad) == 3 and len(fd.invalid_instances()) == 3
    assert "outside the image (800x600)" in reasons[(900, 20, 50, 50)]
    assert "zero or negative width or height" in reasons[(10, 10, 0, 50)]
    assert "no such file" in reasons[(10, 10, 20, 50)]


def test_each_crop_has_its_own_statistics(folder_run):
    fd, _ = folder_run
    stats = fd.img_stats().set_index("label")
    assert (stats.loc["marble", "img_w"], stats.loc["marble", "img_h"]) == (150, 150)
    assert (stats.loc["corner", "img_w"], stats.loc["corner", "img_h"]) == (20, 20)  # clipped
    page = stats.loc["page"].sort_values("img_w")
    assert page["img_w"].tolist() == [120, 240]
    assert page["mean"].iloc[0] == pytest.approx(page["mean"].iloc[1], abs=6)


def test_a_rerun_reuses_the_shard_and_a_changed_box_extracts_it_again(folder_run, tmp_path):
    fd, folder = folder_run
    again = fastdup_ray.create(work_dir=fd.work_dir, input_dir=folder)
    again.run(annotations=boxes(), threshold=0.8, **LOCAL)
    assert again.run_summary.skipped_shards >= 1
    moved = boxes()
    moved.loc[1, "col_x"] = 310
    again = fastdup_ray.create(work_dir=fd.work_dir, input_dir=folder)
    again.run(annotations=moved, threshold=0.8, **LOCAL)
    assert again.run_summary.skipped_shards < again.run_summary.shards
    names = set(again.annotations()["filename"])
    assert f"{folder / 'a.jpg'}#bbox=310,200,150,150" in names
    assert f"{folder / 'a.jpg'}#bbox=300,200,150,150" not in names


def test_rotated_boxes_are_warped_upright_before_they_are_compared(tmp_path):
    folder = write_photos(tmp_path / "photos")
    # The object upright in a.jpg, and turned a quarter in c.jpg: its top edge there runs
    # down the right side of the pasted patch, from (590, 100) to (590, 220).
    quads = pd.DataFrame(
        [
            ("a.jpg", 50, 60, 170, 60, 170, 150, 50, 150, "page"),
            ("c.jpg", 590, 100, 590, 220, 500, 220, 500, 100, "page"),
            ("c.jpg", 40, 40, 340, 40, 340, 340, 40, 340, "wood"),
            ("a.jpg", 300, 200, 450, 200, 450, 350, 300, 350, "marble"),
            ("a.jpg", 10, 10, 50, 10, 90, 10, 30, 10, "line"),
        ],
        columns=["filename", "x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4", "label"],
    )
    fd = fastdup_ray.create(work_dir=tmp_path / "work", input_dir=folder)
    fd.run(annotations=quads, threshold=0.8, **LOCAL)
    assert crop_pairs(fd) == {frozenset({"page"})}
    stats = fd.img_stats().set_index("label")
    assert (stats.loc["page", "img_w"].tolist(), stats.loc["page", "img_h"].tolist()) == (
        [120, 120],
        [90, 90],
    )
    [reason] = fd.invalid_instances()["error_code"]
    assert "zero area" in reason


def test_the_satellite_notebook_runs_unchanged(tmp_path):
    """fastdup's satellite-image-analysis notebook: rotated boxes from a csv with an index
    column, bounding_box='rotated' with a margin, then crop galleries."""
    folder = write_photos(tmp_path / "photos")
    pd.DataFrame(
        [
            ("a.jpg", 50, 60, 170, 60, 170, 150, 50, 150, "page"),
            ("c.jpg", 590, 100, 590, 220, 500, 220, 500, 100, "text"),
            ("c.jpg", 40, 40, 340, 40, 340, 340, 40, 340, "wood"),
        ],
        columns=["filename", "x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4", "label"],
    ).to_csv(tmp_path / "mafat.csv", index_label="index")
    df = pd.read_csv(tmp_path / "mafat.csv")
    fd = fastdup_ray.create(input_dir=str(folder), work_dir=str(tmp_path / "output"))
    fd.run(
        annotations=df,
        overwrite=True,
        bounding_box="rotated",
        augmentation_additive_margin=15,
        verbose=False,
        ccthreshold=0.8,
        threshold=0.8,
        **LOCAL,
    )
    assert fd.img_stats().set_index("label").loc["page", "img_w"] == 120 + 2 * 15
    diff = Path(
        fd.vis.component_gallery(
            load_crops=True,
            enhance_image=True,
            keep_aspect_ratio=True,
            slice="diff",
            num_images=20,
            save_artifacts=True,
            show=False,
        )
    )
    assert "text" in diff.read_text() and "page" in diff.read_text()
    assert Path(fd.vis.outliers_gallery(load_crops=True, show=False)).exists()
    assert Path(fd.vis.stats_gallery(metric="blur", load_crops=True, show=False)).exists()


def write_tar_of_photos(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, picture in photos().items():
            data = jpeg_bytes(picture)
            info = tarfile.TarInfo(f"images/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def tar_boxes() -> pd.DataFrame:
    table = boxes()
    table["filename"] = "objects.tar/images/" + table["filename"]
    return table


def test_boxes_of_members_of_a_tar_are_cut_from_the_archive(tmp_path):
    tar = write_tar_of_photos(tmp_path / "data" / "objects.tar")
    fd = fastdup_ray.create(work_dir=tmp_path / "work", input_dir=tar.parent)
    fd.run(annotations=tar_boxes(), threshold=0.8, **LOCAL)
    assert crop_pairs(fd) == {frozenset({"page"})}
    listing = fd.annotations(valid_only=False)
    assert len(listing) == len(boxes()) and listing["is_valid"].sum() == 6
    names = pl.read_csv(tmp_path / "work" / "objects.tarfeatures.dat.csv")["filename"].to_list()
    assert all(name.startswith(f"{tar}/images/") and "#bbox=" in name for name in names)
    assert len(names) == 6


def test_a_tar_of_boxes_on_ray_gives_the_rows_of_the_local_engine(ray_local, tmp_path):
    tar = write_tar_of_photos(tmp_path / "data" / "objects.tar")
    local = fastdup_ray.create(work_dir=tmp_path / "local", input_dir=tar.parent)
    local.run(annotations=tar_boxes(), threshold=0.8, **LOCAL)
    on_ray = fastdup_ray.create(work_dir=tmp_path / "ray", input_dir=tar.parent)
    on_ray.run(annotations=tar_boxes(), threshold=0.8, executor="ray")
    for name in ("objects.tarfeatures.dat.csv", "objects.tarfeatures.bad.csv", "similarity.csv"):
        assert (tmp_path / "ray" / name).read_text() == (tmp_path / "local" / name).read_text()
    assert crop_pairs(on_ray) == {frozenset({"page"})}


def test_a_folder_of_boxes_on_ray_gives_the_rows_of_the_local_engine(ray_local, tmp_path):
    """Ray's CPU actors get loose files in pieces, each with its images' boxes, and the
    last piece those of images the folder lacks."""
    folder = write_photos(tmp_path / "photos")
    fastdup_ray.create(work_dir=tmp_path / "local", input_dir=folder).run(
        annotations=boxes(), threshold=0.8, **LOCAL
    )
    on_ray = fastdup_ray.create(work_dir=tmp_path / "ray", input_dir=folder)
    on_ray.run(annotations=boxes(), threshold=0.8, executor="ray", batch_size=2)
    local = tmp_path / "local"
    shard = "images-000000000-000000003.features"
    for name in (f"{shard}.dat.csv", f"{shard}.bad.csv", "features.bad.csv", "similarity.csv"):
        assert (tmp_path / "ray" / name).read_text() == (local / name).read_text(), name
    assert crop_pairs(on_ray) == {frozenset({"page"})}


def test_galleries_show_the_crops_and_with_draw_bbox_the_box_on_its_image(folder_run, chromium, tmp_path):
    fd, _ = folder_run
    crops = Path(fd.vis.duplicates_gallery(save_path=tmp_path / "crops", show=False))
    drawn = Path(fd.vis.duplicates_gallery(save_path=tmp_path / "drawn", draw_bbox=True, show=False))
    sizes = {}
    for page in (crops, drawn):
        browser = chromium.new_page(viewport={"width": 1280, "height": 900})
        browser.goto(page.as_uri(), wait_until="load")
        sizes[page] = browser.eval_on_selector_all(
            "img", "images => images.filter(i => i.complete).map(i => [i.naturalWidth, i.naturalHeight])"
        )
        browser.close()
    assert len(sizes[crops]) == len(sizes[drawn]) == 2
    # the crops are the object (4:3, as cut); drawn, each is its whole photo with the
    # object's box outlined in red where the box lies (a.jpg 640x480, b.jpg 800x600)
    assert sorted(sizes[crops]) == [[120, 90], [240, 180]]
    drawn_files = sorted((tmp_path / "drawn").glob("thumbnails/*.jpg"))
    outlined = set()
    for path in drawn_files:
        pixels = np.asarray(Image.open(path).convert("RGB"), np.int32)
        scale = pixels.shape[1] / 640, pixels.shape[1] / 800
        for photo, (x, y, w, _h), k in (
            ("a", (50, 60, 120, 90), scale[0]),
            ("b", (400, 300, 240, 180), scale[1]),
        ):
            top = pixels[round(y * k) : round(y * k) + 2, round(x * k) + 4 : round((x + w) * k) - 4]
            if top.size and (top[..., 0] > 180).all() and (top[..., 1:] < 90).all():
                outlined.add(photo)
    assert outlined == {"a", "b"}


def test_boxes_of_s3_files_and_of_members_of_an_s3_tar(s3_server, bucket, tmp_path):
    """A loose photo and a tar of photos on S3 (moto's server): the object's crop of the
    loose a.jpg pairs with its crop of the tar's b.jpg; a box of an object that is not
    there is a bad row."""
    from conftest import s3_options

    folder = write_photos(tmp_path / "photos")
    tar = write_tar_of_photos(tmp_path / "objects.tar")
    bucket.put_file(str(folder / "a.jpg"), "fdr-test/boxes/a.jpg")
    bucket.put_file(str(tar), "fdr-test/boxes/objects.tar")
    table = pd.DataFrame(
        [
            ("a.jpg", 50, 60, 120, 90, "page"),
            ("a.jpg", 300, 200, 150, 150, "marble"),
            ("objects.tar/images/b.jpg", 400, 300, 240, 180, "page"),
            ("objects.tar/images/b.jpg", 20, 20, 200, 200, "bricks"),
            ("gone.jpg", 10, 10, 20, 20, "lost"),
        ],
        columns=["filename", "col_x", "row_y", "width", "height", "label"],
    )
    fd = fastdup_ray.create(work_dir=tmp_path / "work", input_dir="s3://fdr-test/boxes")
    fd.run(annotations=table, threshold=0.8, **LOCAL, **s3_options(s3_server))
    assert crop_pairs(fd) == {frozenset({"page"})}
    listing = fd.annotations(valid_only=False).set_index("label")
    assert listing.loc["page", "filename"].tolist() == [
        "s3://fdr-test/boxes/a.jpg#bbox=50,60,120,90",
        "s3://fdr-test/boxes/objects.tar/images/b.jpg#bbox=400,300,240,180",
    ]
    assert not listing.loc["lost", "is_valid"] and listing["is_valid"].sum() == 4

"""fastdup's v1 object API (fastdup_ray.create): a run on generated photos driven as a
fastdup user drives it, its frames checked against the files on disk, a finished work
dir reopened without recomputing, annotations with labels, and the same frames from a
run whose tables are Parquet parts. Runs use the local executor (about 2 s each)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from PIL import Image

import fastdup_ray
from fastdup_ray.errors import ConfigError, InputError
from fastdup_ray.rundir import layout
from fastdup_ray.sample import jpeg_bytes, make_scene, near_duplicate

pytestmark = pytest.mark.integration

LOCAL = {"executor": "local", "num_threads": 2}
SIMILARITY_COLUMNS = ["from", "to", "distance", "exact", "filename_from", "filename_to"]
OUTLIER_COLUMNS = ["outlier", "nearest", "distance", "filename_outlier", "filename_nearest"]
COMPONENT_COLUMNS = [
    "index",
    "component_id",
    "pagerank",
    "delta",
    "count",
    "mean_distance",
    "min_distance",
    "max_distance",
    "filename",
]
FASTDUP_STATS = [
    "index",
    "filename",
    "img_w",
    "img_h",
    "unique",
    "blur",
    "mean",
    "min",
    "max",
    "stdv",
    "file_size",
]


@pytest.fixture(scope="module")
def finished(sample, tmp_path_factory):
    """A fastdup object that ran over the sample (12 scenes, 6 planted copies, a
    truncated JPEG)."""
    fd = fastdup_ray.create(work_dir=tmp_path_factory.mktemp("api") / "work", input_dir=sample.root)
    assert fd.run(**LOCAL) == 0
    return fd


def planted(sample) -> set[frozenset[str]]:
    return {frozenset((str(a), str(b))) for a, b in sample.duplicate_pairs}


def test_run_returns_0_like_fastdup_and_keeps_the_run_summary(finished, sample):
    assert finished.run_summary.good == len(sample.images)
    assert finished.run_summary.bad == len(sample.corrupt)
    assert finished.config["input_dir"] == str(sample.root)


def test_annotations_list_every_file_with_its_validity_and_size(finished, sample):
    listing = finished.annotations(valid_only=False)
    assert list(listing.columns[:4]) == ["index", "filename", "is_valid", "error_code"]
    assert sorted(listing["filename"]) == sorted(str(p) for p in sample.images + sample.corrupt)
    assert listing["index"].is_unique
    valid = finished.annotations()
    assert sorted(valid["filename"]) == sorted(str(p) for p in sample.images)
    assert valid["is_valid"].all()
    for row in valid.itertuples():
        assert row.file_size == os.path.getsize(row.filename)
        assert (row.img_w, row.img_h) == Image.open(row.filename).size
    # index is the row of features.dat.csv, as in fastdup
    names, _ = fastdup_ray.load_binary_features(finished.work_dir)
    assert valid.sort_values("index")["filename"].tolist() == names


def test_similarity_names_the_planted_copies_by_index_and_filename(finished, sample):
    pairs = finished.similarity()
    assert isinstance(pairs, pd.DataFrame)
    assert list(pairs.columns) == SIMILARITY_COLUMNS
    assert {frozenset(p) for p in zip(pairs["filename_from"], pairs["filename_to"])} == planted(sample)
    name_of = finished.annotations().set_index("index")["filename"]
    assert pairs["from"].map(name_of).tolist() == pairs["filename_from"].tolist()
    assert pairs["to"].map(name_of).tolist() == pairs["filename_to"].tolist()
    assert pairs["distance"].is_monotonic_decreasing
    bare = finished.similarity(data=False)
    assert list(bare.columns) == ["from", "to", "distance", "exact"]


def test_outliers_are_the_images_without_a_copy_most_outlying_first(finished, sample):
    outliers = finished.outliers()
    assert list(outliers.columns) == OUTLIER_COLUMNS
    assert len(outliers) > 0 and outliers["distance"].is_monotonic_increasing
    copied = {name for pair in planted(sample) for name in pair}
    assert not copied & set(outliers["filename_outlier"])
    name_of = finished.annotations().set_index("index")["filename"]
    assert outliers["nearest"].map(name_of).tolist() == outliers["filename_nearest"].tolist()


def test_connected_components_merge_filenames_sizes_and_inner_similarity(finished, sample):
    components, info = finished.connected_components()
    assert list(components.columns) == COMPONENT_COLUMNS
    assert list(info.columns[:2]) == ["component_id", "Count"]
    component_of = dict(zip(components["filename"], components["component_id"]))
    pairs = finished.similarity().set_index(["filename_from", "filename_to"])["distance"]
    for a, b in sample.duplicate_pairs:
        assert component_of[str(a)] == component_of[str(b)]
        member = components[components["filename"] == str(a)].iloc[0]
        assert member["count"] == 2
        similarity = pairs.get((str(a), str(b)), pairs.get((str(b), str(a))))
        assert member["min_distance"] == member["max_distance"] == pytest.approx(similarity)
    # images alone are left out, as fastdup leaves them out
    assert len(components) == 2 * len(sample.duplicate_pairs)
    assert (
        components.groupby("component_id").size() == components.groupby("component_id")["count"].first()
    ).all()


def test_invalid_instances_list_the_corrupt_file_with_its_reason(finished, sample):
    invalid = finished.invalid_instances()
    assert list(invalid.columns) == ["index", "filename", "is_valid", "error_code"]
    assert invalid["filename"].tolist() == [str(sample.corrupt[0])]
    assert not invalid["is_valid"].any()
    assert "truncated" in invalid["error_code"].iloc[0].lower()


def test_img_stats_use_fastdup_names_and_measure_the_files(finished, sample):
    stats = finished.img_stats()
    assert list(stats.columns[: len(FASTDUP_STATS)]) == FASTDUP_STATS
    assert sorted(stats["filename"]) == sorted(str(p) for p in sample.images)
    for row in stats.itertuples():
        assert (row.img_w, row.img_h) == Image.open(row.filename).size
        assert row.file_size == os.path.getsize(row.filename)


def test_as_polars_gives_the_same_frames(finished):
    assert isinstance(finished.similarity(as_polars=True), pl.DataFrame)
    assert finished.outliers(as_polars=True).columns == OUTLIER_COLUMNS
    components, info = finished.connected_components(as_polars=True)
    assert components.to_pandas().equals(finished.connected_components()[0])
    assert finished.invalid_instances(as_polars=True).height == 1


def test_create_on_a_finished_work_dir_opens_it_without_recomputing(finished, sample):
    work = Path(finished.work_dir)
    before = {p.name: p.stat().st_mtime_ns for p in work.iterdir()}
    reopened = fastdup_ray.create(work_dir=work)
    assert reopened.input_dir == str(sample.root)
    assert reopened.run_summary is None
    pd.testing.assert_frame_equal(reopened.similarity(), finished.similarity())
    pd.testing.assert_frame_equal(reopened.connected_components()[0], finished.connected_components()[0])
    pd.testing.assert_frame_equal(
        reopened.annotations(valid_only=False), finished.annotations(valid_only=False)
    )
    reopened.outliers(), reopened.img_stats(), reopened.invalid_instances(), reopened.summary(verbose=False)
    names, vectors = reopened.embeddings()
    assert len(names) == vectors.shape[0] == len(sample.images)
    assert {p.name: p.stat().st_mtime_ns for p in work.iterdir()} == before


def test_vis_writes_the_galleries_of_the_run_into_save_path(finished, sample, tmp_path):
    page = Path(finished.vis.duplicates_gallery(save_path=tmp_path, show=False))
    assert page.parent == tmp_path
    assert all(Path(a).name in page.read_text() for a, _ in sample.duplicate_pairs)
    with pytest.raises(ConfigError, match="slice needs annotations"):
        finished.vis.outliers_gallery(save_path=tmp_path, slice="cat", show=False)


def test_frames_before_a_run_say_to_call_run_and_create_nothing(tmp_path):
    fd = fastdup_ray.create(work_dir=tmp_path / "not_yet", input_dir=tmp_path)
    with pytest.raises(InputError, match=r"fd\.run\(\)"):
        fd.similarity()
    with pytest.raises(InputError, match=r"fd\.run\(\)"):
        fd.annotations()
    assert not (tmp_path / "not_yet").exists()


def test_summary_counts_the_run(finished, sample):
    lines = finished.summary(verbose=False)
    assert lines[0] == f"Dataset contains {len(sample.images) + 1} images"
    assert f"({len(sample.images)}) of the data, invalid are" in lines[1]
    assert f"in {len(sample.duplicate_pairs)} components of two or more" in lines[2]


def scenes_with_labels(folder: Path) -> pd.DataFrame:
    """Four scenes, one with a brighter copy; labels by scene; one extra file that the
    annotations leave out."""
    folder.mkdir()
    rows = []
    for i, label in enumerate(["cat", "dog", "cat", "bird"]):
        scene = make_scene(40 + i, material=i)
        (folder / f"{i}.jpg").write_bytes(jpeg_bytes(scene))
        rows.append({"filename": f"{i}.jpg", "label": label, "split": "train"})
        if i == 0:
            (folder / "0_copy.jpg").write_bytes(jpeg_bytes(near_duplicate(scene, 2)))
            rows.append({"filename": "0_copy.jpg", "label": label, "split": "val"})
    (folder / "left_out.jpg").write_bytes(jpeg_bytes(make_scene(99, material=7)))
    return pd.DataFrame(rows)


def test_annotations_given_to_run_choose_the_images_and_follow_them_into_every_frame(tmp_path):
    folder, work = tmp_path / "photos", tmp_path / "work"
    labels = scenes_with_labels(folder)
    fd = fastdup_ray.create(work_dir=work, input_dir=folder)
    # fastdup v1's names for ccthreshold and lower_threshold
    assert fd.run(annotations=labels, cc_threshold=0.8, outlier_percentile=0.2, **LOCAL) == 0
    assert fd.config["ccthreshold"] == 0.8 and fd.config["lower_threshold"] == 0.2
    listing = fd.annotations()
    assert sorted(listing["filename"]) == sorted(str(folder / name) for name in labels["filename"])
    assert dict(zip(listing["filename"], listing["label"])) == {
        str(folder / f): lab for f, lab in zip(labels["filename"], labels["label"])
    }
    pairs = fd.similarity()
    assert pairs[
        ["filename_from", "filename_to", "label_from", "label_to", "split_from", "split_to"]
    ].values.tolist() == [[str(folder / "0.jpg"), str(folder / "0_copy.jpg"), "cat", "cat", "train", "val"]]
    components, _ = fd.connected_components()
    assert set(components["label"]) == {"cat"}
    assert {"label_outlier", "label_nearest"} <= set(fd.outliers().columns)
    # a reopened run merges them again, and its galleries slice by label
    reopened = fastdup_ray.create(work_dir=work)
    pd.testing.assert_frame_equal(reopened.similarity(), pairs)
    cats = Path(
        reopened.vis.duplicates_gallery(save_path=tmp_path / "cats", slice="cat", show=False)
    ).read_text()
    dogs = Path(
        reopened.vis.duplicates_gallery(save_path=tmp_path / "dogs", slice="dog", show=False)
    ).read_text()
    assert "0_copy.jpg" in cats and "0_copy.jpg" not in dogs
    # a run over the whole folder is another input: refused unless overwrite, which
    # also forgets the annotations
    with pytest.raises(ConfigError, match="overwrite"):
        fd.run(input_dir=folder, **LOCAL)
    fd.run(input_dir=folder, overwrite=True, **LOCAL)
    assert "label" not in fastdup_ray.create(work_dir=work).annotations().columns
    assert not (work / layout.ANNOTATIONS_FILE).exists()
    assert str(folder / "left_out.jpg") in set(fd.annotations()["filename"])


@pytest.mark.parametrize(
    "annotations, message",
    [
        (pd.DataFrame({"path": ["a.jpg"]}), "'filename' column"),
        (pd.DataFrame({"filename": ["a.jpg"], "index": [0]}), "index"),
        (pd.DataFrame({"filename": ["/photos/a.jpg", "/photos/a.jpg"]}), "more than once"),
        (["a.jpg"], "relative to no folder"),
        (42, "must be a DataFrame"),
    ],
)
def test_bad_annotations_are_refused_before_anything_runs(tmp_path, annotations, message):
    fd = fastdup_ray.create(work_dir=tmp_path / "work")
    with pytest.raises(ConfigError, match=message):
        fd.run(annotations=annotations)
    assert not (tmp_path / "work").exists()


def test_fastdup_arguments_we_do_not_implement_say_what_to_do_instead(tmp_path):
    import numpy as np

    fd = fastdup_ray.create(work_dir=tmp_path / "work", input_dir=tmp_path)
    with pytest.raises(ConfigError, match="embeddings=...\\) needs annotations"):
        fd.run(embeddings=np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ConfigError, match="given twice"):
        fd.run(cc_threshold=0.9, ccthreshold=0.8)
    with pytest.raises(ConfigError, match="input_dir must be given"):
        fastdup_ray.create(work_dir=tmp_path / "other").run()


def as_parquet_parts(work: Path) -> None:
    """Rewrite a run's tables the way a big run leaves them: Parquet parts, no CSV."""
    for name, folder in layout.TABLE_PARTS.items():
        table = pl.read_csv(
            work / name, schema_overrides={"from": pl.String, "to": pl.String, "filename": pl.String}
        )
        (work / folder).mkdir()
        half = table.height // 2
        for number, part in enumerate((table[half:], table[:half])):  # out of order on purpose
            part.write_parquet(work / folder / layout.part_name(number))
        (work / name).unlink()


def test_a_run_with_parquet_parts_gives_the_same_frames_and_evaluation(finished, sample, tmp_path):
    parts = tmp_path / "parts"
    shutil.copytree(finished.work_dir, parts)
    as_parquet_parts(parts)
    fd = fastdup_ray.create(work_dir=parts)
    expected = finished.similarity()
    pairs = fd.similarity().sort_values(["distance", "from"], ascending=[False, True], ignore_index=True)
    pd.testing.assert_frame_equal(
        pairs, expected.sort_values(["distance", "from"], ascending=[False, True], ignore_index=True)
    )
    pd.testing.assert_frame_equal(fd.connected_components()[0], finished.connected_components()[0])
    assert sorted(fd.outliers()["filename_outlier"]) == sorted(finished.outliers()["filename_outlier"])
    truth = tmp_path / "truth.csv"
    pl.DataFrame(
        {
            "filename": [str(p) for pair in sample.duplicate_pairs for p in pair],
            "group": [i for i in range(len(sample.duplicate_pairs)) for _ in range(2)],
        }
    ).write_csv(truth)
    assert fastdup_ray.evaluate_run(str(parts), str(truth)) == fastdup_ray.evaluate_run(
        finished.work_dir, str(truth)
    )


# --- annotation file names, resolved as fastdup resolves them ---------------------------


def write_images(folder: Path, names: list[str], seed: int = 60) -> None:
    """A distinct generated photo at each of ``names`` (subfolders made as needed)."""
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg_bytes(make_scene(seed + i, material=i)))


def test_annotations_built_as_fastdups_notebooks_build_them_find_every_image(tmp_path, monkeypatch, caplog):
    """fastdup's notebooks list os.walk('images/') joined to its root, names relative to
    the working directory, and give input_dir='images/' beside them."""
    monkeypatch.chdir(tmp_path)
    write_images(tmp_path / "images", ["a/0.jpg", "a/1.jpg", "b/2.jpg", "3.jpg"])
    files = [os.path.join(root, f) for root, _, names in os.walk("images/") for f in names]
    annotations = pd.DataFrame({"filename": files, "label": [Path(f).parent.name for f in files]})
    fd = fastdup_ray.create(work_dir="work", input_dir="images/")
    with caplog.at_level("INFO", logger="fastdup_ray"):
        assert fd.run(annotations=annotations, **LOCAL) == 0
    assert (fd.run_summary.good, fd.run_summary.bad) == (4, 0)
    listing = fd.annotations(valid_only=False)
    assert listing["is_valid"].all()
    assert dict(zip(listing["filename"], listing["label"])) == {
        str(tmp_path / f): Path(f).parent.name for f in files
    }
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("annotations:")]
    assert said == ["annotations: 4 file names resolved relative to the working directory"]


def test_annotation_names_may_be_absolute_or_relative_to_input_dir_and_one_found_nowhere_is_bad(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.chdir(tmp_path)
    write_images(tmp_path / "images", ["a/0.jpg", "a/1.jpg", "2.jpg", "both.jpg"])
    write_images(
        tmp_path, ["both.jpg"], seed=90
    )  # also in the working directory: that one wins, as in fastdup
    names = ["a/0.jpg", str(tmp_path / "images" / "a" / "1.jpg"), "images/2.jpg", "both.jpg", "a/missing.jpg"]
    annotations = pl.DataFrame({"filename": names, "label": ["x", "y", "z", "w", "lost"]})
    fd = fastdup_ray.create(work_dir=tmp_path / "work", input_dir="images")
    with caplog.at_level("INFO", logger="fastdup_ray"):
        fd.run(annotations=annotations, **LOCAL)
    assert (fd.run_summary.good, fd.run_summary.bad) == (4, 1)
    found = set(fd.annotations()["filename"])
    assert found == {
        str(tmp_path / p) for p in ("images/a/0.jpg", "images/a/1.jpg", "images/2.jpg", "both.jpg")
    }
    invalid = fd.invalid_instances()
    assert invalid["filename"].tolist() == [str(tmp_path / "images" / "a" / "missing.jpg")]
    assert invalid["label"].tolist() == ["lost"]
    reason = invalid["error_code"].iloc[0]
    assert (
        str(tmp_path / "a" / "missing.jpg") in reason
        and str(tmp_path / "images" / "a" / "missing.jpg") in reason
    )
    bad = pl.read_csv(tmp_path / "work" / "features.bad.csv")
    assert bad.rows() == [(str(tmp_path / "images" / "a" / "missing.jpg"), reason)]
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("annotations:")]
    assert (
        len(said) == 1
        and "1 relative to input_dir images" in said[0]
        and "1 as absolute paths" in said[0]
        and "1 found nowhere" in said[0]
    )


def test_annotations_of_which_no_name_exists_are_refused_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    fd = fastdup_ray.create(work_dir=tmp_path / "work", input_dir="images")
    with pytest.raises(InputError, match=r"annotations: none of the 2 file names is a file.*images/x\.jpg"):
        fd.run(annotations=["x.jpg", "y.jpg"], **LOCAL)
    assert not (tmp_path / "work").exists()


# --- runs with nothing similar: every frame and gallery still works ----------------------


def degenerate_run(kind: str, root: Path):
    """'no_pairs': four unlike photos and a broken file at threshold 0.99; 'one_image':
    one good image (no neighbours at all) and a broken file; 'two_unlike': two unlike
    photos at threshold 0.99."""
    folder = root / "images"
    count = {"no_pairs": 4, "one_image": 1, "two_unlike": 2}[kind]
    write_images(folder, [f"{i}.jpg" for i in range(count)], seed=400)
    if kind != "two_unlike":
        (folder / "broken.jpg").write_bytes(jpeg_bytes(make_scene(1))[:200])
    fd = fastdup_ray.create(work_dir=root / "work", input_dir=folder)
    assert fd.run(threshold=0.99, **LOCAL) == 0
    return fd, count


def empty_reason(page: Path) -> str | None:
    import html

    found = re.search(r'<p class="empty">(.*?)</p>', page.read_text(), re.S)
    return None if found is None else html.unescape(found.group(1))


@pytest.mark.parametrize("kind", ["no_pairs", "one_image", "two_unlike"])
def test_every_frame_and_gallery_works_on_a_run_without_similar_pairs(kind, tmp_path):
    fd, good = degenerate_run(kind, tmp_path)
    assert (tmp_path / "work" / "similarity.csv").read_text().count("\n") == 1  # the header only
    pairs = fd.similarity(as_polars=True)
    assert (
        pairs.height == 0 and pairs.schema["distance"] == pl.Float64 and pairs.schema["exact"] == pl.Boolean
    )
    assert pairs.schema["from"] == pl.Int64 and pairs.schema["filename_from"] == pl.String
    outliers = fd.outliers(as_polars=True)
    assert outliers.schema["distance"] == pl.Float64 and outliers.height == (
        0 if good == 1 else outliers.height
    )
    components, info = fd.connected_components(as_polars=True)
    assert components.columns == COMPONENT_COLUMNS and components.height == 0
    assert components.schema["mean_distance"] == pl.Float64 and components.schema["pagerank"] == pl.Float64
    assert info.schema["Count"] == pl.Int64 and info["Count"].sum() == good
    for frame in (
        fd.similarity(),
        fd.outliers(),
        *fd.connected_components(),
        fd.img_stats(),
        fd.annotations(),
        fd.invalid_instances(),
    ):
        assert isinstance(frame, pd.DataFrame)
    assert len(fd.img_stats()) == len(fd.annotations()) == good
    assert len(fd.invalid_instances()) == (0 if kind == "two_unlike" else 1)
    lines = fd.summary(verbose=False)
    assert "0 components of two or more; the largest has 0 images" in lines[2]
    names, vectors = fd.embeddings()
    assert len(names) == vectors.shape[0] == good

    out = tmp_path / "galleries"
    pages = {
        "duplicates": fd.vis.duplicates_gallery(save_path=out / "vis", show=False),
        "similarity": fd.vis.similarity_gallery(save_path=out / "vis", show=False),
        "components": fd.vis.component_gallery(save_path=out / "vis", show=False),
        "outliers": fd.vis.outliers_gallery(save_path=out / "vis", show=False),
    }
    for metric in ("dark", "bright", "blur"):
        assert empty_reason(fd.vis.stats_gallery(save_path=out / "vis", metric=metric, show=False)) is None
    for name in ("duplicates", "similarity", "components", "outliers"):
        pages[f"create_{name}"] = getattr(fastdup_ray, f"create_{name}_gallery")(fd.work_dir, out / "create")
    assert empty_reason(fastdup_ray.create_stats_gallery(fd.work_dir, out / "create")) is None
    # The frames given back to the galleries, as fastdup takes them
    pages["frame_duplicates"] = fastdup_ray.create_duplicates_gallery(
        fd.similarity(), out / "frame", work_dir=fd.work_dir
    )
    pages["frame_similarity"] = fastdup_ray.create_similarity_gallery(
        fd.similarity(), out / "frame", work_dir=fd.work_dir
    )
    pages["frame_components"] = fastdup_ray.create_components_gallery(
        fd.connected_components()[0], out / "frame", input_dir=fd.work_dir
    )
    index = fastdup_ray.create_galleries(fd.work_dir, out / "all")
    assert "Not made" not in index.read_text()
    for name, page in pages.items():
        if name.endswith("outliers") and good > 1:
            assert empty_reason(page) is None, name  # the two unlike images are each other's nearest
            continue
        reason = empty_reason(page)
        assert reason and reason != "Nothing to show.", name
    assert "No pairs at or above 0.99 (the run's threshold)" in empty_reason(pages["duplicates"])
    assert "the DataFrame has no rows" in empty_reason(pages["frame_duplicates"])

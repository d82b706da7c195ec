"""fastdup's labelled classification notebook, run unchanged after ``import fastdup_ray as
fastdup``: 4 classes of photo-like scenes, near-duplicate copies of each scene, and two
planted mislabels (copies given another class's label). The mislabel views find exactly
those, the gallery options change what the page shows, and unknown options are one-line
errors."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from PIL import Image

import fastdup_ray as fastdup
from fastdup_ray.errors import ConfigError
from fastdup_ray.sample import jpeg_bytes, make_scene, near_duplicate

CLASSES = ("marble", "wood", "bricks", "clouds")
# (scene, copy) -> the label planted on that copy instead of its scene's class.
PLANTED = {(2, 2): "bricks", (5, 1): "clouds"}


def cards(page: Path) -> list[dict]:
    """Each card as a user reads it: heading, facts and its tiles (file, captions, size)."""
    out = []
    for card in page.read_text().split('<section class="card ')[1:]:
        heading = html.unescape(re.search(r"<h2>(.*?)</h2>", card, re.S).group(1))
        facts = [html.unescape(f) for f in re.findall(r"<li>(.*?)</li>", card, re.S)]
        tiles = []
        for figure in re.findall(r'<figure class="tile ?[a-z]*">(.*?)</figure>', card, re.S):
            location = html.unescape(re.search(r'<div class="location">(.*?)</div>', figure, re.S).group(1))
            size = re.search(r'width="(\d+)" height="(\d+)"', figure)
            src = re.search(r'<img src="([^"]+)"', figure)
            tiles.append(
                {
                    "file": Path(location).name,
                    "text": html.unescape(figure),
                    "size": tuple(map(int, size.groups())) if size else None,
                    "src": src.group(1) if src else None,
                }
            )
        out.append({"heading": heading, "facts": facts, "tiles": tiles})
    return out


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory):
    """8 scenes of distinct materials, two per class; scene s has 1 + s % 3 copies, so
    components of 2, 3 and 4 images; the planted copies carry another class's label."""
    root = tmp_path_factory.mktemp("labelled")
    folder = root / "images"
    folder.mkdir()
    rows = []
    for scene in range(8):
        image = make_scene(900 + scene, material=scene)
        label = CLASSES[scene // 2]
        (folder / f"s{scene}.jpg").write_bytes(jpeg_bytes(image))
        rows.append((str(folder / f"s{scene}.jpg"), label))
        for copy in range(1 + scene % 3):
            name = folder / f"s{scene}_copy{copy}.jpg"
            name.write_bytes(jpeg_bytes(near_duplicate(image, copy)))
            rows.append((str(name), PLANTED.get((scene, copy), label)))
    annotations = pd.DataFrame(rows, columns=["filename", "label"])
    work = root / "work"
    fd = fastdup.create(work_dir=work, input_dir=folder)
    assert fd.run(annotations=annotations, executor="local", num_threads=2) == 0
    return fd, folder, work, annotations


def planted_names() -> set[str]:
    return {f"s{scene}_copy{copy}.jpg" for scene, copy in PLANTED}


def scene_of(name: str) -> str:
    return name.split("_")[0].removesuffix(".jpg")


def test_the_mislabel_views_show_exactly_the_planted_mislabels(labelled_run, tmp_path):
    fd, _, work, _ = labelled_run
    similarity = fd.similarity()
    pairs = {
        frozenset((Path(a).name, Path(b).name))
        for a, b in similarity[["filename_from", "filename_to"]].values
    }
    assert all(len({scene_of(n) for n in pair}) == 1 for pair in pairs)  # copies pair up, scenes do not
    planted_pairs = {pair for pair in pairs if pair & planted_names()}
    assert len(planted_pairs) >= 4  # each planted copy beside at least its scene's original

    page = fd.vis.similarity_gallery(save_path=tmp_path, slice="diff", show=False)
    shown = cards(page)
    shown_pairs = {
        frozenset((card["tiles"][0]["file"], t["file"])) for card in shown for t in card["tiles"][1:]
    }
    assert shown_pairs == planted_pairs
    # Lowest label score first: the planted copies, whose look-alikes all carry another label.
    assert {card["tiles"][0]["file"] for card in shown[:2]} == planted_names()
    assert all("label score 0%" in card["tiles"][0]["text"] for card in shown[:2])
    assert "label score 0%" not in shown[-1]["tiles"][0]["text"]

    same = cards(fd.vis.similarity_gallery(save_path=tmp_path / "same", slice="same", show=False))
    same_pairs = {frozenset((c["tiles"][0]["file"], t["file"])) for c in same for t in c["tiles"][1:]}
    assert same_pairs == pairs - planted_pairs

    components = cards(fd.vis.component_gallery(save_path=tmp_path, slice="diff", show=False))
    assert sorted({scene_of(t["file"]) for t in c["tiles"]}.pop() for c in components) == ["s2", "s5"]
    assert all(any(f.startswith("labels: ") and "," in f for f in c["facts"]) for c in components)
    agreeing = cards(fd.vis.component_gallery(save_path=tmp_path / "s", slice="same", show=False))
    assert len(agreeing) == 6 and not {"s2", "s5"} & {scene_of(c["tiles"][0]["file"]) for c in agreeing}

    duplicates = cards(
        fd.vis.duplicates_gallery(save_path=tmp_path, slice="diff", num_images=None, show=False)
    )
    assert {frozenset(t["file"] for t in c["tiles"]) for c in duplicates} == planted_pairs

    top = fastdup.find_top_components(
        work, get_label_func=dict(fd.annotations()[["filename", "label"]].values)
    )
    assert sorted(top["len"]) == sorted(1 + 1 + s % 3 for s in range(8))
    diff = fastdup.find_top_components(work, annotations=fd.annotations(), slice="diff")
    assert sorted(scene_of(Path(files[0]).name) for files in diff["files"]) == ["s2", "s5"]
    assert all(len(set(labels)) == 2 for labels in diff["label"])


def test_label_slices_and_grouping(labelled_run, tmp_path):
    fd, _, _, annotations = labelled_run
    wood = cards(fd.vis.component_gallery(save_path=tmp_path, slice="wood", show=False))
    assert wood and all("label: wood" in t["text"] for c in wood for t in c["tiles"])
    by_label = cards(fd.vis.component_gallery(save_path=tmp_path / "l", group_by="label", show=False))
    expected = annotations["label"].value_counts()  # every image is in a component
    assert {c["heading"]: len(c["tiles"]) for c in by_label} == {f"label {k}": v for k, v in expected.items()}
    outliers = cards(fd.vis.outliers_gallery(save_path=tmp_path, slice=["wood", "clouds"], show=False))
    assert all(re.search(r"label: (wood|clouds)", c["tiles"][0]["text"]) for c in outliers)
    with pytest.raises(ConfigError, match="slice='diff' compares the labels"):
        fd.vis.outliers_gallery(save_path=tmp_path, slice="diff", show=False)

    grouped = fd.connected_components_grouped(group_by="label")
    assert set(grouped["label"]) == set(CLASSES) and list(grouped["len"]) == sorted(grouped["len"])
    assert fd[0]["filename"] == fd.annotations()["filename"][0] and "label" in fd[0]
    with pytest.raises(IndexError):
        fd[10_000]


def test_gallery_options_change_what_the_page_shows(labelled_run, tmp_path):
    fd, folder, work, _ = labelled_run
    largest = cards(fd.vis.component_gallery(save_path=tmp_path / "a", show=False))
    sizes = [int(c["facts"][0].split()[0]) for c in largest]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 4
    smallest = cards(
        fd.vis.component_gallery(save_path=tmp_path / "b", ascending=True, num_images=3, show=False)
    )
    assert [int(c["facts"][0].split()[0]) for c in smallest] == [2, 2, 2]
    at_least = cards(fd.vis.component_gallery(save_path=tmp_path / "c", min_items=3, show=False))
    assert len(at_least) == sum(s >= 3 for s in sizes) and all(
        int(c["facts"][0].split()[0]) >= 3 for c in at_least
    )
    by_size = cards(fd.vis.component_gallery(save_path=tmp_path / "d", metric="size", show=False))
    means = [float(next(f for f in c["facts"] if f.startswith("mean size")).split()[-1]) for c in by_size]
    assert means == sorted(means, reverse=True) and len(set(means)) > 1
    closest = cards(fd.vis.component_gallery(save_path=tmp_path / "e", sort_by="distance", show=False))
    lowest = [float(re.search(r"min ([\d.]+)", " ".join(c["facts"])).group(1)) for c in closest]
    assert lowest == sorted(lowest, reverse=True)

    narrow = cards(fd.vis.duplicates_gallery(save_path=tmp_path / "n", max_width=100, show=False))
    assert all(max(t["size"]) == 100 for c in narrow for t in c["tiles"])
    square = cards(fd.vis.outliers_gallery(save_path=tmp_path / "q", keep_aspect_ratio=False, show=False))
    assert all(t["size"][0] == t["size"][1] for c in square for t in c["tiles"])
    page = fd.vis.stats_gallery(
        save_path=tmp_path / "g", metric="blur", enhance_image=True, save_artifacts=True, show=False
    )
    assert page.name == "blur.html"  # fastdup's name
    for tile in (t for c in cards(page) for t in c["tiles"]):
        with Image.open(page.parent / tile["src"]) as thumbnail:
            assert thumbnail.mode == "L"  # enhanced: grey, equalised
    artifacts = pl.read_csv(page.parent / "blur_artifacts.csv")
    assert artifacts.height == sum(len(c["tiles"]) for c in cards(page))

    # fastdup's v0 forms: (frame, save folder, input_dir=...), and no save_path at all.
    out = fastdup.create_duplicates_gallery(fd.similarity(), str(tmp_path / "v0"), input_dir=str(folder))
    assert out == tmp_path / "v0" / "duplicates.html" and cards(out)
    assert (
        fastdup.create_duplicates_gallery(str(work / "similarity.csv"))
        == work / "galleries" / "duplicates.html"
    )
    names, vectors = fastdup.load_binary_feature(filename=str(work))
    assert vectors.shape[0] == len(names) == len(fd.annotations())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda fd, p: fd.vis.component_gallery(save_path=p, colour="red"),
            "has no option 'colour'; it takes",
        ),
        (
            lambda fd, p: fd.vis.outliers_gallery(save_path=p, get_bounding_box_func=dict),
            r"get_bounding_box_func=...\) is not supported",
        ),
        (
            lambda fd, p: fd.vis.outliers_gallery(save_path=p, draw_bbox="yes"),
            "draw_bbox must be True or False",
        ),
        (
            lambda fd, p: fd.vis.component_gallery(save_path=p, sort_by="area"),
            "sort_by='area' is not a column",
        ),
        (lambda fd, p: fastdup.create_stats_gallery(fd.work_dir, p, how="all"), r"how=\S+ is not supported"),
        (lambda fd, p: fd.vis.component_gallery(save_path=p, group_by="colour"), "group_by must be"),
    ],
)
def test_an_unknown_or_unsupported_option_is_a_one_line_error_naming_it(
    labelled_run, tmp_path, call, message
):
    fd = labelled_run[0]
    with pytest.raises(ConfigError, match=message) as caught:
        call(fd, tmp_path)
    assert "\n" not in str(caught.value)


def test_the_heatmaps_notebook_flow_and_the_mislabel_page_in_chromium(labelled_run, chromium, tmp_path):
    """fastdup's heatmaps notebook: find_top_components, a label list added per component,
    then component_gallery(external_df=..., label_col='label', sort_by='comp_size')."""
    fd, _, work, annotations = labelled_run
    cdf = fastdup.find_top_components(str(work))
    label_of = dict(annotations.values)
    cdf["label"] = cdf["files"].apply(lambda files: [label_of[f] for f in files])
    page = fd.vis.component_gallery(
        save_path=tmp_path,
        sort_by="comp_size",
        external_df=cdf,
        label_col="label",
        ascending=True,
        show=False,
    )
    shown = cards(page)
    assert len(shown) == len(cdf) and [len(c["tiles"]) for c in shown] == list(cdf["len"])
    for card, labels in zip(shown, cdf["label"], strict=True):
        assert [re.search(r"label: (\w+)", t["text"]).group(1) for t in card["tiles"]] == labels

    mislabels = fd.vis.similarity_gallery(save_path=tmp_path / "diff", slice="diff", show=False)
    browser = chromium.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    browser.on("pageerror", lambda exc: errors.append(str(exc)))
    browser.goto(mislabels.as_uri(), wait_until="load")
    loaded = browser.eval_on_selector_all(
        "img", "images => images.map(i => i.complete && i.naturalWidth > 0)"
    )
    text = browser.inner_text("body")
    browser.close()
    assert loaded and all(loaded) and not errors
    assert "carry another label" in text and "label score 0%" in text


def test_remove_duplicates_and_the_sprite_of_files(labelled_run, tmp_path, capsys):
    import shutil

    _, folder, _, annotations = labelled_run
    copy = tmp_path / "images"
    shutil.copytree(folder, copy)
    before = sorted(p.name for p in copy.iterdir())
    work = str(tmp_path / "work")
    assert fastdup.remove_duplicates(str(copy), work, distance=0.9, dry_run=True, executor="local") == 0
    assert "dry run, nothing changed" in capsys.readouterr().out
    assert sorted(p.name for p in copy.iterdir()) == before
    assert fastdup.remove_duplicates(str(copy), work, distance=0.9, executor="local") == 0
    left = sorted(p.name for p in copy.iterdir())
    assert (
        sorted({scene_of(n) for n in left}) == [f"s{i}" for i in range(8)] and len(left) == 8
    )  # one per scene

    files = sorted(str(p) for p in folder.iterdir())
    path, labels = fastdup.generate_sprite_image(
        files, 9, str(tmp_path / "log"), get_label_func=dict(annotations.values), h=32
    )
    with Image.open(path) as sprite:
        assert Path(path).name == "sprite.png" and sprite.size == (3 * 32, 3 * 32)
    assert labels == [dict(annotations.values)[f] for f in files[:9]]

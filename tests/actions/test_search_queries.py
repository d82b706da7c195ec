"""actions/search.py over a finished run of real JPEGs: image queries (file, list, PIL, numpy) go
through the run's own decode and embed, vectors are searched as given, and every misuse
is one typed error naming the problem."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image, ImageEnhance

import fastdup_ray
from fastdup_ray.actions import search as search_module
from fastdup_ray.errors import ConfigError, GpuUnavailableError, InputError, SearchNotReadyError
from fastdup_ray.sample import jpeg_bytes, make_scene

LOCAL = {"executor": "local", "num_threads": 2, "k": 3}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """Five distinct scenes run to the end, and an edited copy of scene 2 outside the run."""
    root = tmp_path_factory.mktemp("search")
    images = root / "images"
    images.mkdir()
    paths = []
    for i in range(5):
        path = images / f"scene_{i}.jpg"
        path.write_bytes(jpeg_bytes(make_scene(900 + i, material=i)))
        paths.append(str(path))
    edited = ImageEnhance.Brightness(make_scene(902, material=2).resize((300, 220))).enhance(1.15)
    copy = root / "query" / "edited_copy.jpg"
    copy.parent.mkdir()
    copy.write_bytes(jpeg_bytes(edited, quality=75))
    work = root / "work"
    fastdup_ray.run(str(images), str(work), **LOCAL)
    return work, paths, copy


@pytest.fixture
def searcher(finished_run):
    work, _, _ = finished_run
    return search_module.Searcher(4, work)


def test_an_edited_copy_finds_its_original_first_as_a_file_a_pil_image_and_a_numpy_image(
    finished_run, searcher
):
    _, paths, copy = finished_run
    picture = Image.open(copy)
    for query, name in (
        (str(copy), str(copy)),
        (picture, "query_image"),
        (np.asarray(picture.convert("RGB")), "query_image"),
    ):
        frame = searcher.search(query)
        assert frame.columns == ["from", "to", "distance"] and frame.height == 4
        assert frame["from"].unique().to_list() == [name]
        assert frame["to"][0] == paths[2] and frame["distance"][0] > 0.9
        assert frame["distance"].to_list() == sorted(frame["distance"].to_list(), reverse=True)
    grey = np.asarray(picture.convert("L"))  # H x W uint8: a greyscale picture
    assert searcher.search(grey)["to"][0] == paths[2]


def test_a_file_of_the_run_finds_itself_at_similarity_one_and_lists_keep_their_order(finished_run, searcher):
    _, paths, _ = finished_run
    frame = searcher.search([paths[3], paths[0]])
    assert frame["from"].to_list() == [paths[3]] * 4 + [paths[0]] * 4
    firsts = frame.group_by("from", maintain_order=True).first()
    assert firsts["to"].to_list() == [paths[3], paths[0]]
    assert firsts["distance"].to_list() == [pytest.approx(1.0, abs=1e-6)] * 2
    named = searcher.search("my name", img=Image.open(paths[1]))
    assert named["from"][0] == "my name" and named["to"][0] == paths[1]


def test_vector_queries_find_the_run_image_they_came_from(finished_run, searcher):
    work, paths, _ = finished_run
    names, vectors = fastdup_ray.load_binary_features(work)
    frame = searcher.vector_search(vectors[1])
    assert frame["from"].unique().to_list() == ["query_vector"] and frame["to"][0] == names[1]
    both = searcher.search(vectors[[4, 2]])  # a matrix given to search() is vectors too
    assert both.group_by("from", maintain_order=True).first()["to"].to_list() == [names[4], names[2]]
    assert both["from"].unique(maintain_order=True).to_list() == ["query_vector_0", "query_vector_1"]
    assert searcher.vector_search(vectors[:2], ["x", "y"])["from"].unique().sort().to_list() == ["x", "y"]


def test_v0_calls_keep_the_search_init_search_loaded(finished_run, monkeypatch):
    work, paths, copy = finished_run
    monkeypatch.setattr(search_module, "_current", None)
    with pytest.raises(SearchNotReadyError, match=r"call fastdup_ray.init_search\(k, work_dir\) first"):
        fastdup_ray.search(str(copy))
    assert fastdup_ray.init_search(2, work_dir=str(work), threshold=0.9) == 0
    frame = fastdup_ray.search(str(copy))
    assert frame[["from", "to"]].values.tolist() == [[str(copy), paths[2]]]  # one hit at >= 0.9
    names, vectors = fastdup_ray.load_binary_features(work)
    assert fastdup_ray.vector_search("mine", vectors[0])["to"].tolist() == [names[0]]
    fastdup_ray.init_search(2, str(work), store_int=1)
    assert fastdup_ray.search(paths[4])["to"].tolist()[0] == names.index(paths[4])


def test_the_object_api_searches_its_own_run(finished_run):
    work, paths, copy = finished_run
    fd = fastdup_ray.create(work)
    with pytest.raises(SearchNotReadyError, match=r"fd.init_search\(k\)"):
        fd.search(str(copy))
    assert fd.init_search(3) == 0
    assert fd.search(str(copy))["to"][0] == paths[2]
    assert fd.vector_search(vec=fd.embeddings()[1][0])["to"][0] == fd.embeddings()[0][0]


def test_misuse_is_one_typed_error_naming_the_problem(finished_run, searcher, tmp_path):
    work, _, _ = finished_run
    d = searcher.index.d
    with pytest.raises(ConfigError, match=f"shape \\(576,\\) but this run's features are {d}-d"):
        searcher.vector_search(np.ones(576, dtype=np.float32))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(jpeg_bytes(make_scene(1))[:400])
    with pytest.raises(InputError, match=f"query image {broken} cannot be decoded: truncated"):
        searcher.search(str(broken))
    with pytest.raises(InputError, match="does not exist"):
        searcher.search(str(tmp_path / "nothing.jpg"))
    with pytest.raises(ConfigError, match="an image must be H x W x 3"):
        searcher.search([np.zeros((4, 4, 3), dtype=np.float32)])
    with pytest.raises(ConfigError, match="cannot search for a dict"):
        searcher.search({"a": 1})
    with pytest.raises(ConfigError, match="d=576 but the run"):
        search_module.Searcher(3, work, d=576)
    with pytest.raises(ConfigError, match="k must be an integer >= 1"):
        search_module.Searcher(0, work)
    with pytest.raises(ConfigError, match="high_accuracy"):
        fastdup_ray.init_search(3, str(work), high_accuracy=True)
    with pytest.raises(InputError, match="no such folder"):
        fastdup_ray.init_search(3, str(tmp_path / "nowhere"))
    assert not (tmp_path / "nowhere").exists()
    unfinished = tmp_path / "unfinished"
    fastdup_ray.run(str(finished_run[1][0]).rsplit("/", 1)[0], str(unfinished), run_mode=1, **LOCAL)
    with pytest.raises(InputError, match="no finished run .*connected_components.csv is missing"):
        fastdup_ray.init_search(3, str(unfinished))


def test_a_run_of_your_own_features_is_searched_by_vector(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(20, 8)).astype(np.float32)
    fastdup_ray.save_binary_feature(tmp_path, [f"v{i}" for i in range(20)], vectors)
    fastdup_ray.run("unused", str(tmp_path), run_mode=2, d=8, k=2)
    own = search_module.Searcher(2, tmp_path)
    assert own.vector_search(vectors[7] * 3)["to"].to_list()[0] == "v7"
    with pytest.raises(ConfigError, match="own 8-d features, not of images: search it with vector_search"):
        own.search(np.zeros((10, 10, 3), dtype=np.uint8))


def test_a_gpu_run_without_cuda_here_is_searched_by_vector_and_says_why_not_by_image(
    finished_run, tmp_path, monkeypatch
):
    import json
    import shutil

    work, paths, copy = finished_run
    gpu_run = tmp_path / "gpu_run"
    shutil.copytree(work, gpu_run)
    from fastdup_ray.map.embed import default_model_path, model_digest

    config = json.loads((gpu_run / "config.json").read_text())
    fp16 = default_model_path("fp16")
    as_a_gpu_run_records_it = {
        "compute": "gpu",
        "model_file": os.path.basename(fp16),
        "model_sha256": model_digest(fp16),
    }
    (gpu_run / "config.json").write_text(json.dumps({**config, **as_a_gpu_run_records_it}))
    monkeypatch.setattr("fastdup_ray.map.embed.cuda_problem", lambda: "no CUDA device is visible")
    gpu = search_module.Searcher(2, gpu_run)
    names, vectors = fastdup_ray.load_binary_features(gpu_run)
    assert gpu.vector_search(vectors[3])["to"][0] == names[3]
    with pytest.raises(
        GpuUnavailableError, match="embedded on GPU with efficientnet_lite0_fp16.onnx, so its image"
    ):
        gpu.search(str(copy))


def test_a_model_saved_over_the_runs_model_after_the_run_is_refused_for_image_queries(tmp_path):
    """The run embedded with one model; its file was then overwritten by another of the same
    width. Queries embedded by the new bytes would not compare with the run's vectors, so an
    image query says so (a vector query still works)."""
    from fastdup_ray.map.embed import default_model_path

    images, work, model = tmp_path / "images", tmp_path / "work", tmp_path / "model.onnx"
    images.mkdir()
    for i in range(3):
        (images / f"scene_{i}.jpg").write_bytes(jpeg_bytes(make_scene(700 + i, material=i)))
    model.write_bytes(open(default_model_path("int8"), "rb").read())
    fastdup_ray.run(str(images), str(work), model_path=str(model), **LOCAL)
    assert (
        search_module.Searcher(2, work).search(str(images / "scene_1.jpg"))["to"][0].endswith("scene_1.jpg")
    )
    model.write_bytes(open(default_model_path("fp32"), "rb").read())  # same width, other weights
    changed = search_module.Searcher(2, work)
    with pytest.raises(ConfigError, match=f"{model} has changed since the run in .* embedded with it"):
        changed.search(str(images / "scene_1.jpg"))
    names, vectors = fastdup_ray.load_binary_features(work)
    assert changed.vector_search(vectors[2])["to"][0] == names[2]

"""fastdup's image-search notebook (examples/image-search.ipynb), run unchanged with
``import fastdup_ray as fastdup`` on a real Ray runtime: run, init_search, search with an
edited copy of a run image as a file, a PIL image and a numpy image, a vector query, and
the notebook's galleries of a search frame."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageEnhance

import fastdup_ray as fastdup
from fastdup_ray.sample import jpeg_bytes, make_scene


@pytest.mark.integration
def test_the_image_search_notebook_flow(ray_local, tmp_path):
    input_dir = tmp_path / "shopee-product-matching"
    train = input_dir / "train_images"
    train.mkdir(parents=True)
    for i in range(6):
        (train / f"{i:03d}.jpg").write_bytes(jpeg_bytes(make_scene(400 + i, material=i)))
    # The test image: scene 3 resized, cropped at the borders and brightened (not in the run).
    original = make_scene(403, material=3)
    edited = ImageEnhance.Brightness(original.crop((6, 4, 250, 250)).resize((180, 170))).enhance(1.1)
    query = tmp_path / "test_images" / "query.jpg"
    query.parent.mkdir()
    query.write_bytes(jpeg_bytes(edited, quality=80))
    work_dir = str(tmp_path / "my-fastdup-workdir")

    fastdup.run(str(input_dir), work_dir)
    fastdup.init_search(10, work_dir=work_dir)
    df = fastdup.search(str(query))
    assert list(df.columns) == ["from", "to", "distance"] and len(df) == 6  # k=10, six images
    assert df["from"].unique().tolist() == [str(query)] and df["to"][0] == str(train / "003.jpg")
    assert df["distance"].is_monotonic_decreasing and df["distance"][0] > df["distance"][1] + 0.05
    picture = Image.open(query)
    assert fastdup.search(picture)["to"][0] == str(train / "003.jpg")
    assert fastdup.search(str(query), np.asarray(picture.convert("RGB")))["to"][0] == str(train / "003.jpg")

    files, vectors = fastdup.load_binary_features(work_dir)
    for row in (0, 4):
        hits = fastdup.vector_search("query_vector", vectors[row])
        assert hits["to"][0] == files[row] and hits["distance"][0] == pytest.approx(1.0, abs=1e-6)

    # The notebook's galleries of a search frame (a run image's neighbours).
    df2 = fastdup.search(str(train / "001.jpg"))
    fastdup.create_duplicates_gallery(df2, work_dir, input_dir=str(input_dir))
    fastdup.create_similarity_gallery(df2, work_dir, input_dir=str(input_dir), min_items=3)
    page = (tmp_path / "my-fastdup-workdir" / "similarity.html").read_text()
    assert all(name in page for name in df2["to"].head(3))

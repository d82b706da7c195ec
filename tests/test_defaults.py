"""The default k, threshold and ccthreshold, and the tune/report split they were chosen on."""

from pathlib import Path

import numpy as np
from PIL import Image

from fastdup_ray.config import DEFAULT_CCTHRESHOLD, DEFAULT_THRESHOLD, RunConfig
from fastdup_ray.photoset import build_set, split_halves
from fastdup_ray.reduce.index import knn_edges
from fastdup_ray.reduce.outputs import unique_pairs


def test_default_k_links_every_pair_of_a_group_of_four():
    rng = np.random.default_rng(0)
    bases = rng.normal(size=(30, 64))
    vectors = np.repeat(bases, 4, axis=0) + 0.05 * rng.normal(size=(120, 64))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    a, b, _ = unique_pairs(*knn_edges(vectors, RunConfig("in", "out").nearest_neighbors_k))
    found = {(int(x), int(y)) for x, y in zip(a, b) if x // 4 == y // 4}
    assert len(found) == 30 * 6


def test_components_are_not_looser_than_similarity():
    assert 0 < DEFAULT_THRESHOLD <= DEFAULT_CCTHRESHOLD < 1


def _photos(folder: Path, count: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"photo{i:02d}.jpg")
    return folder


def test_split_is_by_photo_balanced_and_stable(tmp_path):
    photos = sorted(_photos(tmp_path / "photos", 20).iterdir())
    halves = split_halves(photos)
    assert sorted(halves.values()).count("tune") == 10
    assert split_halves(list(reversed(photos))) == halves


def test_groups_stay_in_one_half_and_hold_at_most_four(tmp_path):
    import polars as pl

    truth = build_set(_photos(tmp_path / "photos", 20), tmp_path / "set", seed=0)
    groups = truth.group_by("group").agg(pl.col("half").n_unique().alias("halves"), pl.len().alias("images"))
    assert groups["halves"].max() == 1 and groups["images"].max() <= 4
    assert all(Path(name).parent.name == half for name, half in zip(truth["filename"], truth["half"]))
    assert truth.equals(build_set(tmp_path / "photos", tmp_path / "set", seed=0))

"""fd.run(embeddings=matrix, annotations=files): your own vectors become the run's
features shard and the reduce runs on them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fastdup_ray
from fastdup_ray.errors import ConfigError


def planted(seed=1, n=30, d=12):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    vectors[n - 1] = vectors[4] + 0.01 * rng.normal(size=d).astype(np.float32)  # a near-copy of row 4
    return vectors, [f"photos/img{i}.jpg" for i in range(n)]


def test_own_embeddings_are_reduced_like_extracted_features(tmp_path):
    vectors, names = planted()
    fd = fastdup_ray.create(tmp_path / "work")
    labels = pd.DataFrame({"filename": names, "label": ["cat" if i % 2 else "dog" for i in range(30)]})
    assert fd.run(embeddings=vectors, annotations=labels, threshold=0.99) == 0
    pairs = fd.similarity()
    assert pairs[["filename_from", "filename_to"]].values.tolist() == [[names[4], names[29]]]
    assert pairs["label_from"].tolist() == ["dog"] and fd.run_summary.good == 30
    stored_names, stored = fastdup_ray.load_binary_features(tmp_path / "work")
    assert stored_names == names and np.array_equal(stored, vectors)
    fd.init_search(2)
    assert fd.vector_search(vec=vectors[29])["to"].tolist() == [names[29], names[4]]


def test_a_rerun_keeps_the_same_rows_and_another_matrix_needs_overwrite(tmp_path):
    vectors, names = planted()
    fd = fastdup_ray.create(tmp_path / "work")
    fd.run(embeddings=vectors, annotations=names)
    fd.run(embeddings=vectors, annotations=names)  # the cell run again
    other, _ = planted(seed=2)
    with pytest.raises(ConfigError, match="holds another run's features: .*overwrite=True"):
        fd.run(embeddings=other, annotations=names)
    fd.run(embeddings=other[:10], annotations=names[:10], overwrite=True)
    assert fastdup_ray.load_binary_features(tmp_path / "work")[0] == names[:10]
    assert len(fd.annotations()) == 10


@pytest.mark.parametrize(
    "embeddings, annotations, params, message",
    [
        (np.zeros((3, 4)), None, {}, "needs annotations"),
        (np.zeros((3, 4)), ["a", "b"], {}, "3 rows but annotations name 2 files"),
        (np.zeros((2, 4)), ["a", "a"], {}, "name a more than once"),
        (np.zeros(4), ["a"], {}, r"n x d numeric matrix .*shape \(4,\)"),
        (np.full((2, 4), np.nan), ["a", "b"], {}, "NaN"),
        (np.zeros((2, 4)), ["a", "b"], {"run_mode": 0}, "runs with run_mode=2"),
        (np.zeros((2, 4)), ["a", "b"], {"d": 8}, "runs with d=4"),
        (np.zeros((2, 4)), {"a": 1}, {}, "list of files or a frame with a filename column"),
    ],
)
def test_bad_embeddings_are_refused_before_anything_is_written(
    tmp_path, embeddings, annotations, params, message
):
    fd = fastdup_ray.create(tmp_path / "work")
    with pytest.raises(ConfigError, match=message):
        fd.run(embeddings=embeddings, annotations=annotations, **params)
    assert not (tmp_path / "work" / "features.dat").exists()

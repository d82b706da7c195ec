import numpy as np
import pytest

from fastdup_ray.errors import InputError
from fastdup_ray.rundir.shards import (
    FeatureShardWriter,
    load_binary_features,
    read_bad_list,
    save_binary_feature,
    shard_paths,
)


def test_save_and_load_round_trip_any_d(tmp_path):
    names = ["a.jpg", "dir with space/b,1.png", 'quote"d.jpg', "ünïcode.jpg"]
    array = np.random.default_rng(0).normal(size=(4, 37)).astype(np.float32)
    save_binary_feature(tmp_path, names, array)
    loaded_names, loaded = load_binary_features(tmp_path)
    assert loaded_names == names
    np.testing.assert_array_equal(loaded, array)
    data, csv_path, _ = shard_paths(tmp_path)
    assert data.stat().st_size == 4 * 37 * 4  # raw float32, no header
    assert csv_path.read_text(encoding="utf-8").splitlines()[0] == "filename"


def test_raw_layout_is_little_endian_row_major(tmp_path):
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    save_binary_feature(tmp_path, ["x", "y"], array)
    raw = np.frombuffer((tmp_path / "features.dat").read_bytes(), dtype="<f4")
    assert raw.tolist() == [0, 1, 2, 3, 4, 5]


def test_reads_fastdup_index_filename_header(tmp_path):
    np.ones((2, 4), dtype="<f4").tofile(tmp_path / "features.dat")
    (tmp_path / "features.dat.csv").write_text("index,filename\n0,/data/a.jpg\n1,/data/b.jpg\n")
    names, array = load_binary_features(tmp_path / "features.dat")
    assert names == ["/data/a.jpg", "/data/b.jpg"] and array.shape == (2, 4)


def test_size_mismatch_is_a_clear_error(tmp_path):
    np.ones((2, 4), dtype="<f4").tofile(tmp_path / "features.dat")
    (tmp_path / "features.dat.csv").write_text("filename\na\nb\nc\n")
    with pytest.raises(InputError, match="not a whole number"):
        load_binary_features(tmp_path)
    with pytest.raises(InputError, match="d=4"):
        load_binary_features(tmp_path, d=4)


def test_missing_features_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no features"):
        load_binary_features(tmp_path)


def test_writer_leaves_nothing_final_until_commit(tmp_path):
    writer = FeatureShardWriter(tmp_path, d=2)
    writer.add_good(["a"], np.ones((1, 2)))
    writer.add_bad(["b"], ["corrupt image: x"])
    assert not any(p.exists() for p in shard_paths(tmp_path))
    assert not (tmp_path / "features.done").exists()
    writer.commit()
    assert all(p.exists() for p in shard_paths(tmp_path)) and (tmp_path / "features.done").exists()
    assert read_bad_list(tmp_path).rows() == [("b", "corrupt image: x")]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_writer_abort_removes_temporary_files(tmp_path):
    with pytest.raises(RuntimeError):
        with FeatureShardWriter(tmp_path, d=2, prefix="shard0") as writer:
            writer.add_good(["a"], np.ones((1, 2)))
            raise RuntimeError("crash mid-shard")
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_wrong_width(tmp_path):
    writer = FeatureShardWriter(tmp_path, d=3)
    with pytest.raises(ValueError):
        writer.add_good(["a"], np.ones((1, 2)))
    writer.abort()

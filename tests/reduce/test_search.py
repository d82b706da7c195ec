"""The search core: query vectors checked, fastdup's search frame, and the saved index of
a finished run loaded once and searched from memory (against a brute-force answer)."""

from __future__ import annotations

import numpy as np
import pytest

import fastdup_ray
from fastdup_ray.errors import ConfigError, InputError
from fastdup_ray.reduce.search import SavedIndex, query_matrix, search_frame
from fastdup_ray.rundir.workdir import WorkDir


def unit(rng, n, d):
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_query_matrix_takes_a_vector_or_a_matrix_and_makes_rows_unit_length():
    assert query_matrix([3.0, 4.0], 2).tolist() == [[pytest.approx(0.6), pytest.approx(0.8)]]
    assert query_matrix(np.ones((3, 4)), 4).shape == (3, 4)
    with pytest.raises(ConfigError, match=r"shape \(5,\) but this run's features are 4-d"):
        query_matrix(np.ones(5), 4)
    with pytest.raises(ConfigError, match="NaN"):
        query_matrix([np.nan, 1.0], 2)
    with pytest.raises(ConfigError, match="vec must be a float vector"):
        query_matrix(["a", "b"], 2)


def test_search_frame_orders_each_query_by_similarity_then_index_and_cuts_at_threshold():
    src, dst = np.array([0, 0, 0, 1]), np.array([2, 0, 1, 1])
    sim = np.array([0.5, 0.9, 0.9, 1.0000001], dtype=np.float32)
    frame = search_frame(["q0", "q1"], src, dst, sim, ["a", "b", "c"])
    assert frame.columns == ["from", "to", "distance"]
    assert frame.rows() == [("q0", "a", 0.9), ("q0", "b", 0.9), ("q0", "c", 0.5), ("q1", "b", 1.0)]
    assert search_frame(["q0", "q1"], src, dst, sim, ["a", "b", "c"], threshold=0.9).height == 3
    assert search_frame(["q0", "q1"], src, dst, sim, ["a", "b", "c"], store_int=True)["to"].to_list() == [
        0,
        1,
        2,
        1,
    ]
    assert search_frame(["q"], src[:0], dst[:0], sim[:0], ["a"]).height == 0


@pytest.mark.parametrize("nnf_mode", ["Flat", "HNSW32"])
def test_saved_index_answers_like_brute_force_from_memory(tmp_path, nnf_mode):
    rng = np.random.default_rng(3)
    vectors = unit(rng, 200, 16)
    names = [f"img{i}.png" for i in range(200)]
    fastdup_ray.save_binary_feature(tmp_path, names, vectors)
    fastdup_ray.run("unused", str(tmp_path), run_mode=2, d=16, k=3, nnf_mode=nnf_mode)
    index = SavedIndex(WorkDir(str(tmp_path)))
    assert index.d == 16 and index.names == names and len(index.shards) == 1
    (tmp_path / "nnf.index").unlink()  # answered from memory from now on
    queries = unit(rng, 7, 16)
    src, dst, sim = index.search(queries, 5)
    truth = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :5]
    assert src.tolist() == np.repeat(np.arange(7), 5).tolist()
    assert dst.reshape(7, 5).tolist() == truth.tolist()
    assert sim.reshape(7, 5) == pytest.approx(np.take_along_axis(queries @ vectors.T, truth, 1), abs=1e-5)


def test_saved_index_refuses_a_run_that_is_not_finished(tmp_path):
    with pytest.raises(InputError, match="connected_components.csv is missing"):
        SavedIndex(WorkDir(str(tmp_path)))
    fastdup_ray.save_binary_feature(tmp_path, ["a", "b"], np.eye(2, dtype=np.float32))
    fastdup_ray.run("unused", str(tmp_path), run_mode=2, d=2, k=1)
    (tmp_path / "nnf.index").unlink()
    with pytest.raises(InputError, match="needs .*nnf.index"):
        SavedIndex(WorkDir(str(tmp_path)))


@pytest.mark.parametrize(
    "params",
    [
        {"nnf_mode": "Flat", "reduce_strategy": "distributed"},  # exact shards: nnf.index.json
        {"nnf_mode": "IVF8,Flat", "nprobe": 8, "reduce_strategy": "distributed"},  # nnf.routed/
    ],
)
def test_a_distributed_run_is_searched_through_its_sharded_or_routed_index(tmp_path, params):
    from fastdup_ray.rundir.shards import FeatureShardWriter

    rng = np.random.default_rng(8)
    vectors = unit(rng, 900, 16)
    names = [f"img{i:04d}.jpg" for i in range(900)]
    for number, rows in enumerate(np.split(np.arange(900), [300, 650])):
        with FeatureShardWriter(str(tmp_path), d=16, prefix=f"part{number}.") as writer:
            writer.add_good([names[i] for i in rows], vectors[rows])
    fastdup_ray.run(
        "unused", str(tmp_path), run_mode=2, k=3, rows_per_partition=400, executor="local", **params
    )
    index = SavedIndex(WorkDir(str(tmp_path)), nprobe=params.get("nprobe", 2))
    assert index.routed == ("IVF" in params["nnf_mode"]) and index.names == names
    assert index.routed or ((tmp_path / "nnf.index.json").is_file() and len(index.shards) > 1)
    queries = vectors[[5, 400, 899]]
    src, dst, sim = index.search(queries, 2)
    assert dst.reshape(3, 2)[:, 0].tolist() == [5, 400, 899]  # every list probed: each finds itself
    assert sim.reshape(3, 2)[:, 0] == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)


def test_a_routed_index_search_reads_only_the_buckets_of_the_lists_it_probes(tmp_path, monkeypatch):
    """A notebook's search of a few images must not read the whole saved index (0.5 TB
    for LAION) each call: one query probing one list reads that list's bucket alone."""
    from fastdup_ray.rundir.shards import FeatureShardWriter

    rng = np.random.default_rng(9)
    vectors = unit(rng, 900, 16)
    with FeatureShardWriter(str(tmp_path), d=16, prefix="part0.") as writer:
        writer.add_good([f"img{i:04d}.jpg" for i in range(900)], vectors)
    fastdup_ray.run(
        "unused", str(tmp_path), run_mode=2, k=3, rows_per_partition=200, executor="local",
        nnf_mode="IVF8,Flat", nprobe=1, reduce_strategy="distributed",
    )  # fmt: skip
    saved = sorted(p.name for p in (tmp_path / "nnf.routed").glob("bucket-*"))
    assert len(saved) > 1
    read = []
    original = WorkDir.read_bytes
    monkeypatch.setattr(WorkDir, "read_bytes", lambda self, name: read.append(name) or original(self, name))
    index = SavedIndex(WorkDir(str(tmp_path)), nprobe=1)
    read.clear()
    src, dst, sim = index.search(vectors[[123]], 1)
    assert dst.tolist() == [123] and sim[0] == pytest.approx(1.0, abs=1e-5)
    assert len([name for name in read if name.startswith("bucket-")]) == 1

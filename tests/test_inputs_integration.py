"""Archives, video, offsets, run modes and resume, on a real local Ray runtime."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import polars as pl
import pytest

import fastdup_ray
from fastdup_ray.errors import ConfigError
from fastdup_ray.rundir.shards import FeatureShardWriter
from fastdup_ray.sample import make_scene

pytestmark = pytest.mark.integration
OUTPUTS = ("similarity.csv", "outliers.csv", "component_info.csv", "connected_components.csv")


def read_outputs(work) -> dict[str, str]:
    return {name: (work / name).read_text() for name in OUTPUTS}


def all_listed(work) -> list[str]:
    names, _ = fastdup_ray.load_binary_features(work)
    bad = pl.read_csv(work / "features.bad.csv", infer_schema=False)[
        "filename"
    ].to_list()  # every shard's, merged
    return names + bad


def test_archives_write_one_shard_each_and_find_cross_archive_duplicates(
    ray_local, archive_dataset, tmp_path
):
    root, planted, corrupt, count = archive_dataset
    summary = fastdup_ray.run(str(root), str(tmp_path))
    for tarname in ("00000.tar", "00001.tar", "extra.tgz", "more.zip"):
        for suffix in ("features.dat", "features.dat.csv", "features.bad.csv", "features.done"):
            assert (tmp_path / f"{tarname}{suffix}").exists()
    listed = all_listed(tmp_path)
    assert len(listed) == len(set(listed)) == count and (summary.good, summary.bad) == (8, 1)
    assert f"{root}/00000.tar/000000000.jpg" in listed and not any(
        n.endswith((".txt", ".json")) for n in listed
    )
    bad = pl.read_csv(tmp_path / "00001.tarfeatures.bad.csv")
    assert bad.rows() == [(corrupt, bad["error"][0])] and "truncated" in bad["error"][0]
    similarity = pl.read_csv(tmp_path / "similarity.csv")
    assert {frozenset(p) for p in zip(similarity["from"], similarity["to"])} == {frozenset(planted)}


def test_local_executor_and_ray_write_the_same_shards_and_outputs(
    ray_local, archive_dataset, sample, tmp_path
):
    """Archives, loose files and broken inputs, once in threads in this process and once on Ray."""
    root, _, _, count = archive_dataset
    inputs = str(tmp_path / "inputs")
    shutil.copytree(root, f"{inputs}/archives")
    shutil.copytree(sample.root, f"{inputs}/files")
    local = fastdup_ray.run(inputs, str(tmp_path / "local"), executor="local", k=3)
    on_ray = fastdup_ray.run(inputs, str(tmp_path / "ray"), executor="ray", k=3)
    assert (local.good, local.bad) == (on_ray.good, on_ray.bad) and local.good + local.bad == count + len(
        sample.images
    ) + len(sample.corrupt)
    names, vectors = fastdup_ray.load_binary_features(tmp_path / "local")
    ray_names, ray_vectors = fastdup_ray.load_binary_features(tmp_path / "ray")
    assert names == ray_names and np.allclose(vectors, ray_vectors, atol=1e-6)
    assert read_outputs(tmp_path / "local") == read_outputs(tmp_path / "ray")
    assert sorted(all_listed(tmp_path / "local")) == sorted(all_listed(tmp_path / "ray"))


def test_run_mode_1_slices_then_run_mode_2_equals_run_mode_0(ray_local, archive_dataset, sample, tmp_path):
    root, _, _, _ = archive_dataset
    one_go, split = tmp_path / "one_go", tmp_path / "split"
    fastdup_ray.run(str(root), str(one_go), run_mode=0)
    first = fastdup_ray.run(str(root), str(split), run_mode=1, min_offset=0, max_offset=2)
    second = fastdup_ray.run(str(root), str(split), run_mode=1, min_offset=2)
    assert first.shards == 2 and second.shards == 2
    assert not (split / "similarity.csv").exists()  # run_mode 1 stores features only
    fastdup_ray.run("unused", str(split), run_mode=2)
    assert read_outputs(split) == read_outputs(one_go)


def test_rerun_skips_finished_shards_and_redoes_an_interrupted_one(ray_local, sample, tmp_path):
    reference, work = tmp_path / "reference", tmp_path / "work"
    fastdup_ray.run(str(sample.root), str(reference), shard_size=5)
    first = fastdup_ray.run(str(sample.root), str(work), shard_size=5, run_mode=1)
    assert first.shards == 4 and first.skipped_shards == 0
    # Interrupt one shard half-way: its marker never got written, its data is cut short.
    victim = "images-000000005-000000010."
    (work / f"{victim}features.done").unlink()
    data = work / f"{victim}features.dat"
    data.write_bytes(data.read_bytes()[:1000])
    again = fastdup_ray.run(str(sample.root), str(work), shard_size=5)
    assert again.skipped_shards == 3
    assert read_outputs(work) == read_outputs(reference)
    assert sorted(all_listed(work)) == sorted(str(p) for p in sample.images + sample.corrupt)
    with pytest.raises(ConfigError, match="shard_size"):
        fastdup_ray.run(str(sample.root), str(work), shard_size=7)


def test_video_frames_at_one_per_second_and_unreadable_video(ray_local, tmp_path):
    av = pytest.importorskip("av")
    videos = tmp_path / "videos"
    videos.mkdir()
    path = videos / "clip.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for second in range(3):  # a different scene each second, 10 frames each
            frame_image = np.asarray(make_scene(700 + second, material=second))
            for _ in range(10):
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame_image, format="rgb24")):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    (videos / "broken.avi").write_bytes(os.urandom(5000))
    work = tmp_path / "work"
    fastdup_ray.run(str(videos), str(work), video_fps=1)
    names, features = fastdup_ray.load_binary_features(work)
    assert names == [
        f"{path}/frame_0000.000s.jpg",
        f"{path}/frame_0001.000s.jpg",
        f"{path}/frame_0002.000s.jpg",
    ]
    assert (features @ features.T)[0, 1] < 0.9  # three different scenes
    bad = pl.read_csv(work / "features.bad.csv")
    assert bad["filename"].to_list() == [str(videos / "broken.avi")] and "video" in bad["error"][0]
    twice = tmp_path / "twice"
    fastdup_ray.run(str(path), str(twice), video_fps=2)
    assert len(fastdup_ray.load_binary_features(twice)[0]) == 6


def test_approximate_index_choice_and_saved_index(ray_local, sample, tmp_path):
    import faiss

    exact, approx = tmp_path / "exact", tmp_path / "approx"
    fastdup_ray.run(str(sample.root), str(exact), k=3)
    fastdup_ray.run(str(sample.root), str(approx), k=3, nnf_mode="HNSW32")
    assert faiss.read_index(str(approx / "nnf.index")).ntotal == 18
    # HNSW finds the same planted pairs here, with the same exact similarities.
    assert (approx / "similarity.csv").read_text() == (exact / "similarity.csv").read_text()
    with pytest.raises(ConfigError, match="nnmodel"):
        fastdup_ray.run(str(sample.root), str(tmp_path / "x"), nn_provider="turi", nnmodel="kd")


def test_users_own_features_round_trip_through_run_mode_2(tmp_path):
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(50, 17)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[49] = vectors[3] + 0.01 * rng.normal(size=17)  # a planted near-duplicate
    vectors[49] /= np.linalg.norm(vectors[49])
    names = [f"user/img{i}.png" for i in range(50)]
    fastdup_ray.save_binary_feature(str(tmp_path), names, vectors)
    summary = fastdup_ray.run("unused", str(tmp_path), run_mode=2, threshold=0.95, d=17)
    similarity = pl.read_csv(tmp_path / "similarity.csv")
    assert similarity.rows()[0][:2] == ("user/img3.png", "user/img49.png") and summary.good == 50
    loaded_names, loaded = fastdup_ray.load_binary_features(tmp_path)
    assert loaded_names == names and np.array_equal(loaded, vectors)


def test_run_mode_3_and_4_score_test_images_against_the_saved_index(ray_local, sample, tmp_path):
    from fastdup_ray.sample import jpeg_bytes, near_duplicate

    train = tmp_path / "train"
    fastdup_ray.run(str(sample.root), str(train), k=3)
    test_dir = tmp_path / "test_images"
    test_dir.mkdir()
    originals = {}
    for i in (7, 9):  # scenes without a copy in the train set
        original = next(p for p in sample.images if p.name.startswith(f"scene_{i:03d}."))
        from PIL import Image

        (test_dir / f"planted_{i}.jpg").write_bytes(
            jpeg_bytes(near_duplicate(Image.open(original).convert("RGB"), 0))
        )
        originals[str(test_dir / f"planted_{i}.jpg")] = str(original)
    summary = fastdup_ray.run(str(sample.root), str(train), run_mode=3, test_dir=str(test_dir), k=2)
    assert summary.good == 2
    similarity = pl.read_csv(train / "test_results" / "similarity.csv")
    assert dict(zip(similarity["from"], similarity["to"])) == originals  # test image -> its train original
    assert (train / "test_features" / "features.dat").exists()
    # run_mode 4: the same test vectors, already extracted.
    fastdup_ray.run(str(sample.root), str(train), run_mode=4, test_dir=str(train / "test_features"), k=2)
    assert pl.read_csv(train / "test_results" / "similarity.csv").equals(similarity)
    with pytest.raises(ConfigError, match="test_dir"):
        fastdup_ray.run(str(sample.root), str(train), run_mode=3)


def test_reduce_over_budget_runs_distributed_on_ray_with_the_same_outputs(ray_local, sample, tmp_path):
    in_memory, sharded = tmp_path / "in_memory", tmp_path / "sharded"
    fastdup_ray.run(str(sample.root), str(in_memory), shard_size=5, k=4)
    fastdup_ray.run(str(sample.root), str(sharded), shard_size=5, k=4, run_mode=1)
    # 20 KiB budget: the distributed reduce, Ray tasks over partitions of 7 rows.
    fastdup_ray.run(
        "unused",
        str(sharded),
        run_mode=2,
        k=4,
        reduce_memory_gb=20 / 2**20,
        rows_per_partition=7,
        executor="ray",
    )
    assert read_outputs(sharded) == read_outputs(in_memory)
    assert (
        len(list((sharded / "similarity").glob("part-*.parquet"))) == 3
        and not (sharded / "reduce_scratch").exists()
    )
    # Exact (Flat): no copy of the vectors is saved; the manifest names the feature shards
    # that run modes 3 and 4 search.
    manifest = json.loads((sharded / "nnf.index.json").read_text())
    assert not (sharded / "nnf.index").exists() and manifest["ntotal"] == 18 and len(manifest["shards"]) >= 3
    assert all(s["file"] is None for s in manifest["shards"])
    names, vectors = fastdup_ray.load_binary_features(in_memory)
    rng = np.random.default_rng(0)
    queries = vectors[[1, 8, 15]] + 0.02 * rng.normal(size=(3, vectors.shape[1])).astype(np.float32)
    fastdup_ray.save_binary_feature(
        tmp_path / "test",
        ["q1.jpg", "q8.jpg", "q15.jpg"],
        queries / np.linalg.norm(queries, axis=1, keepdims=True),
    )
    for work in (in_memory, sharded):
        fastdup_ray.run("unused", str(work), run_mode=4, test_dir=str(tmp_path / "test"), k=3, threshold=0.5)
    scored = pl.read_csv(sharded / "test_results" / "similarity.csv")
    assert scored.equals(pl.read_csv(in_memory / "test_results" / "similarity.csv"))
    assert {(a, b) for a, b in zip(scored["from"], scored["to"])} >= {
        ("q1.jpg", names[1]),
        ("q8.jpg", names[8]),
        ("q15.jpg", names[15]),
    }
    # An in-memory reduce over the same work dir replaces the manifest and the parts.
    fastdup_ray.run("unused", str(sharded), run_mode=2, k=4)
    assert (
        (sharded / "nnf.index").exists()
        and not (sharded / "nnf.index.json").exists()
        and not (sharded / "similarity").exists()
    )


def test_deduplicated_webdataset_shards_drop_whole_samples(ray_local, tmp_path):
    import tarfile

    from conftest import write_tar

    from fastdup_ray.actions.dedup import write_deduplicated_webdataset
    from fastdup_ray.sample import jpeg_bytes

    shards = tmp_path / "shards"
    shards.mkdir()
    scenes = [jpeg_bytes(make_scene(900 + i, material=i)) for i in range(4)]
    write_tar(
        shards / "00000.tar",
        {
            "000.jpg": scenes[0],
            "000.txt": b"zero",
            "000.json": b"{}",
            "001.jpg": scenes[1],
            "001.txt": b"one",
        },
    )
    write_tar(
        shards / "00001.tar",
        {
            "002.jpg": scenes[2],
            "002.txt": b"two",
            "003.jpg": scenes[0],
            "003.txt": b"copy of zero",
            "003.json": b"{}",
            "004.jpg": scenes[3],
            "004.txt": b"four",
        },
    )
    work = tmp_path / "work"
    fastdup_ray.run(str(shards), str(work), k=2)
    written = write_deduplicated_webdataset(str(work), str(tmp_path / "dedup"), keep="first")
    members = {p.name: sorted(tarfile.open(p).getnames()) for p in written}
    assert members["00000.tar"] == ["000.jpg", "000.json", "000.txt", "001.jpg", "001.txt"]
    assert members["00001.tar"] == ["002.jpg", "002.txt", "004.jpg", "004.txt"]  # sample 003 left out whole
    with tarfile.open(tmp_path / "dedup" / "00001.tar") as archive:
        assert archive.extractfile("004.txt").read() == b"four"
    remove = pl.read_csv(work / "remove.csv")
    assert remove["filename"].to_list() == [f"{shards}/00001.tar/003.jpg"]


def clustered_features(rng):
    """1,200 unit vectors around 8 centres, rows 100-102 near copies of row 50."""
    centres = rng.normal(size=(8, 48))
    vectors = centres[rng.integers(0, 8, 1200)] + 0.9 * rng.normal(size=(1200, 48))
    vectors[100:103] = vectors[50] + 0.01 * rng.normal(size=(3, 48))  # a planted group
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def assert_same_outputs(got_dir, want_dir):
    """Same rows in the same order, similarities included (rules.py); pagerank within 1e-6."""
    for name in OUTPUTS:
        got, want = pl.read_csv(got_dir / name), pl.read_csv(want_dir / name)
        scores = ["pagerank", "delta"]
        assert got.drop(scores, strict=False).equals(want.drop(scores, strict=False)), name
        for column in scores:
            if column in want.columns:
                assert (got[column] - want[column]).abs().max() <= 1e-6, (name, column)


def test_ivf_flat_reduce_probing_every_list_equals_exact_and_saves_a_reusable_index(tmp_path):
    vectors = clustered_features(np.random.default_rng(7))
    names = [f"img{i:05d}.jpg" for i in range(1200)]
    exact, ivf = tmp_path / "exact", tmp_path / "ivf"
    for work in (exact, ivf):
        fastdup_ray.save_binary_feature(work, names, vectors)
    fastdup_ray.run("unused", str(exact), run_mode=2, k=4, threshold=0.9)
    fastdup_ray.run("unused", str(ivf), run_mode=2, k=4, threshold=0.9, nnf_mode="IVF16,Flat", nprobe=16)
    assert_same_outputs(ivf, exact)
    import faiss

    index = faiss.read_index(str(ivf / "nnf.index"))
    assert type(index).__name__ == "IndexIVFFlat" and index.ntotal == 1200
    group = set(pl.read_csv(ivf / "similarity.csv").select("from", "to").iter_rows())
    assert {("img00050.jpg", "img00100.jpg"), ("img00101.jpg", "img00102.jpg")} <= group
    # run_mode 4 reuses the IVF index: a test copy of row 50 finds its original.
    fastdup_ray.save_binary_feature(tmp_path / "test", ["q.jpg"], vectors[[50]])
    fastdup_ray.run("unused", str(ivf), run_mode=4, test_dir=str(tmp_path / "test"), k=1, threshold=0.99)
    assert pl.read_csv(ivf / "test_results" / "similarity.csv").rows() == [("q.jpg", "img00050.jpg", 1.0)]


def test_ivf_flat_reduce_sharded_on_ray_equals_exact(ray_local, tmp_path):
    vectors = clustered_features(np.random.default_rng(8))
    exact, sharded = tmp_path / "exact", tmp_path / "sharded"
    for work in (exact, sharded):
        for part in range(3):  # three feature shards, as extraction writes them
            rows = slice(part * 400, (part + 1) * 400)
            with FeatureShardWriter(str(work), d=48, prefix=f"part{part}.") as writer:
                writer.add_good([f"img{i:05d}.jpg" for i in range(1200)][rows], vectors[rows])
    fastdup_ray.run("unused", str(exact), run_mode=2, k=4, threshold=0.9)
    # 100 KiB budget: the distributed reduce; routed to every list, so exact.
    fastdup_ray.run(
        "unused",
        str(sharded),
        run_mode=2,
        k=4,
        threshold=0.9,
        nnf_mode="IVF8,Flat",
        nprobe=8,
        reduce_memory_gb=100 / 2**20,
        rows_per_partition=500,
        executor="ray",
    )
    assert_same_outputs(sharded, exact)
    # The routed index (lists' centroids and members) is what run modes 3 and 4 search.
    assert (sharded / "nnf.routed" / "centroids.npy").exists() and len(
        list((sharded / "nnf.routed").glob("bucket-*.arrow"))
    ) >= 2


def test_heic_and_avif_copies_are_found_as_duplicates_of_their_jpeg(tmp_path):
    """A phone's HEIC and a web AVIF of two photos: read, embedded and paired with the JPEGs."""
    import pillow_heif

    from fastdup_ray.sample import jpeg_bytes

    pillow_heif.register_heif_opener()  # to write the HEIC; the run registers it by itself
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        (photos / f"scene_{i}.jpg").write_bytes(jpeg_bytes(make_scene(4100 + i, material=i)))
    make_scene(4100, material=0).save(photos / "phone.heic", "HEIF", quality=90)
    make_scene(4101, material=1).save(photos / "web.avif", "AVIF", quality=90)
    summary = fastdup_ray.run(str(photos), str(tmp_path / "work"), executor="local")
    assert (summary.good, summary.bad) == (8, 0)
    similarity = pl.read_csv(tmp_path / "work" / "similarity.csv")
    pairs = {
        frozenset(os.path.basename(n) for n in pair) for pair in zip(similarity["from"], similarity["to"])
    }
    assert {frozenset(("scene_0.jpg", "phone.heic")), frozenset(("scene_1.jpg", "web.avif"))} <= pairs

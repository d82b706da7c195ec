"""The distributed reduce (reduce/distributed.py) against the in-memory reduce: same
tables, written as Parquet parts by tasks, read back by results.py."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import fastdup_ray
from fastdup_ray.reduce.partitions import plan_partitions
from fastdup_ray.rundir import layout, results
from fastdup_ray.rundir.shards import FeatureShardWriter
from fastdup_ray.sample import jpeg_bytes, make_scene, near_duplicate

TABLES = (
    layout.SIMILARITY_FILE,
    layout.OUTLIERS_FILE,
    layout.CONNECTED_COMPONENTS_FILE,
    layout.COMPONENT_INFO_FILE,
)


def test_partitions_cut_the_shards_into_row_ranges_of_the_run():
    parts = plan_partitions(["a.", "b.", "c.", "d."], [5, 0, 12, 3], rows_per_partition=4)
    assert [(p.first, p.stop) for p in parts] == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20)]
    assert parts[1].pieces == (("a.", 4, 5), ("c.", 0, 3))  # spans two shards
    assert parts[4].pieces == (("c.", 11, 12), ("d.", 0, 3))
    covered = [(prefix, row) for p in parts for prefix, start, stop in p.pieces for row in range(start, stop)]
    assert covered == [
        (letter + ".", row) for letter, rows in zip("abcd", [5, 0, 12, 3]) for row in range(rows)
    ]


def planted_vectors(n=1500, d=32, seed=0):
    """Random unit vectors with 60 planted groups of three near-copies."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    for i in range(0, 180, 3):
        vectors[i + 1] = vectors[i] + 0.05 * rng.normal(size=d)
        vectors[i + 2] = vectors[i] + 0.05 * rng.normal(size=d)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_shards(work, vectors, cuts):
    names = [f"img{i:05d}.jpg" for i in range(len(vectors))]
    for number, rows in enumerate(np.split(np.arange(len(vectors)), cuts)):
        with FeatureShardWriter(str(work), d=vectors.shape[1], prefix=f"part{number}.") as writer:
            writer.add_good([names[i] for i in rows], vectors[rows])


def sorted_table(work, name):
    table = results.read_table(work, name)
    key = {
        "similarity.csv": ["from", "to"],
        "outliers.csv": ["from"],
        "connected_components.csv": ["__id"],
        "component_info.csv": ["component_id"],
    }[name]
    return table.sort(key)


def assert_same_tables(got, want, tolerance=1e-6):
    for name in TABLES:
        a, b = sorted_table(got, name), sorted_table(want, name)
        scores = [c for c in ("pagerank", "delta") if c in b.columns]
        assert a.columns == b.columns, name
        assert a.drop(scores).equals(b.drop(scores)), name
        for column in scores:
            assert (a[column] - b[column]).abs().max() <= tolerance, (name, column)


@pytest.mark.parametrize("nnf_mode, nprobe", [("Flat", 2), ("IVF8,Flat", 8)])
def test_distributed_reduce_writes_the_in_memory_tables_as_parts(tmp_path, nnf_mode, nprobe):
    vectors = planted_vectors()
    memory, distributed = tmp_path / "memory", tmp_path / "distributed"
    for work in (memory, distributed):
        write_shards(work, vectors, [400, 401, 1000])  # a one-row shard, partitions across shards
    params = dict(
        run_mode=2, k=4, threshold=0.8, ccthreshold=0.8, nnf_mode=nnf_mode, nprobe=nprobe, executor="local"
    )
    want = fastdup_ray.run("unused", str(memory), reduce_strategy="memory", **params)
    got = fastdup_ray.run(
        "unused", str(distributed), reduce_strategy="distributed", rows_per_partition=350, **params
    )
    assert_same_tables(distributed, memory)
    assert (got.similar_pairs, got.components, got.outlier_rows, got.grouped_images) == (
        want.similar_pairs,
        want.components,
        want.outlier_rows,
        want.grouped_images,
    )
    assert got.grouped_images == 180 and got.similar_pairs == 180
    # Parts from the tasks, the run guide's CSVs streamed from them, no scratch left behind.
    assert len(list((distributed / "similarity").glob("part-*.parquet"))) == 5
    assert len(list((distributed / "edges").glob("part-*.parquet"))) == 5
    assert (
        all((distributed / name).exists() for name in TABLES)
        and not (distributed / "reduce_scratch").exists()
    )
    edges = pl.read_parquet(distributed / "edges" / "*.parquet")
    assert edges.columns == ["src", "dst", "similarity"] and edges.height == 1500 * 4


def test_over_the_csv_row_limit_only_parts_are_written_and_every_reader_takes_them(tmp_path):
    vectors = planted_vectors(n=600)
    memory, parts_only = tmp_path / "memory", tmp_path / "parts"
    for work in (memory, parts_only):
        write_shards(work, vectors, [300])
    params = dict(run_mode=2, k=3, threshold=0.8, executor="local")
    fastdup_ray.run("unused", str(memory), **params)
    fastdup_ray.run(
        "unused",
        str(parts_only),
        reduce_strategy="distributed",
        rows_per_partition=200,
        csv_row_limit=0,
        **params,
    )
    assert not any((parts_only / name).exists() for name in TABLES)
    assert_same_tables(parts_only, memory)
    # Galleries read the parts too.
    from fastdup_ray.reports import create_similarity_gallery

    page = create_similarity_gallery(str(parts_only), tmp_path / "gallery")
    assert page.read_text().count("img0") >= 10  # the pairs are on the page


def test_exact_copies_are_paired_and_flagged_by_the_distributed_reduce(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(8):
        (folder / f"scene{i}.jpg").write_bytes(jpeg_bytes(make_scene(500 + i, material=i)))
    (folder / "edited.jpg").write_bytes(jpeg_bytes(near_duplicate(make_scene(503, material=3), 1)))
    for i in range(3):  # byte copies of scene0: with k=1 the kNN alone cannot pair all four
        (folder / f"copy{i}.jpg").write_bytes((folder / "scene0.jpg").read_bytes())
    memory, distributed = tmp_path / "memory", tmp_path / "distributed"
    fastdup_ray.run(str(folder), str(memory), executor="local", k=1, shard_size=4)
    fastdup_ray.run(
        str(folder),
        str(distributed),
        executor="local",
        k=1,
        shard_size=4,
        reduce_strategy="distributed",
        rows_per_partition=3,
    )
    assert_same_tables(distributed, memory)
    exact = results.read_table(distributed, layout.SIMILARITY_FILE).filter(pl.col("exact"))
    assert exact.height == 3 and (exact["distance"] == 1.0).all()
    stats = results.read_table(distributed, layout.STATS_FILE)
    assert stats.height == 12 and stats["__id"].to_list() == list(range(12)) and "hash" in stats.columns
    # Parts only (no CSV): dedup's keep rule and the API's frames read the stats parts.
    from fastdup_ray.actions.dedup import keep_and_remove

    parts_only = tmp_path / "parts_only"
    fastdup_ray.run(
        str(folder),
        str(parts_only),
        executor="local",
        k=1,
        shard_size=4,
        reduce_strategy="distributed",
        rows_per_partition=3,
        csv_row_limit=0,
    )
    assert not (parts_only / "stats.csv").exists() and (parts_only / "stats").is_dir()
    for got, want in zip(keep_and_remove(str(parts_only)), keep_and_remove(str(memory))):
        assert got.equals(want)
    frame = fastdup_ray.create(work_dir=str(parts_only)).img_stats(as_polars=True)
    assert frame.height == 12 and frame["img_w"].min() > 0
    # overwrite clears a distributed run's parts and edges with the rest of the run.
    fastdup_ray.run(str(folder), str(parts_only), executor="local", shard_size=4, run_mode=1, overwrite=True)
    assert not any(
        (parts_only / folder_name).exists()
        for folder_name in ("similarity", "stats", "edges", "connected_components")
    )


def test_test_images_meet_only_the_lists_they_probe_in_the_routed_index(tmp_path):
    vectors = planted_vectors(n=2000, d=24, seed=3)
    exact, routed = tmp_path / "exact", tmp_path / "routed"
    for work in (exact, routed):
        write_shards(work, vectors, [1000])
    fastdup_ray.run("unused", str(exact), run_mode=2, k=3, executor="local")
    fastdup_ray.run(
        "unused",
        str(routed),
        run_mode=2,
        k=3,
        nnf_mode="IVF16,Flat",
        nprobe=16,
        reduce_strategy="distributed",
        rows_per_partition=700,
        executor="local",
    )
    rng = np.random.default_rng(1)
    queries = vectors[[0, 500, 1500]] + 0.05 * rng.normal(size=(3, 24)).astype(np.float32)
    fastdup_ray.save_binary_feature(tmp_path / "test", ["q0.jpg", "q500.jpg", "q1500.jpg"], queries)
    for work in (exact, routed):
        fastdup_ray.run(
            "unused", str(work), run_mode=4, test_dir=str(tmp_path / "test"), k=3, threshold=0.5, nprobe=16
        )
    want = pl.read_csv(exact / "test_results" / "similarity.csv")
    got = pl.read_csv(routed / "test_results" / "similarity.csv")
    assert got.equals(want) and want.height >= 3  # every list probed: the exact answer
    # One probe: each test vector meets its own list only: fewer candidates, each scored exactly.
    fastdup_ray.run(
        "unused", str(routed), run_mode=4, test_dir=str(tmp_path / "test"), k=3, threshold=0.5, nprobe=1
    )
    one_probe = pl.read_csv(routed / "test_results" / "similarity.csv")
    unit_queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    for query, train, distance in one_probe.rows():
        expected = unit_queries[["q0.jpg", "q500.jpg", "q1500.jpg"].index(query)] @ vectors[int(train[3:8])]
        assert abs(distance - expected) < 1e-5
    assert {("q0.jpg", "img00000.jpg"), ("q500.jpg", "img00500.jpg"), ("q1500.jpg", "img01500.jpg")} <= set(
        one_probe.select("from", "to").rows()
    )


def threads_seen(_: int) -> tuple[int, int, float]:
    """faiss's OpenMP threads, BLAS's, and the CPUs Ray booked for this task (0 outside Ray)."""
    import faiss
    from threadpoolctl import threadpool_info

    blas = min(pool["num_threads"] for pool in threadpool_info() if pool["internal_api"] == "openblas")
    import ray

    # Asked outside a Ray worker, the runtime context starts a Ray instance of its own.
    booked = (
        ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0) if ray.is_initialized() else 0.0
    )
    return faiss.omp_get_max_threads(), blas, booked


@pytest.mark.parametrize("engine_name", ["local", "ray"])
def test_a_wave_of_one_item_runs_on_every_core_and_a_full_wave_on_one_each(engine_name, request):
    """The lists' k-means is a wave of one item: on one thread of a 16-core node the other
    cores sat idle. Each item gets its share of the cores (Ray books them), and a worker's
    next task of a full wave is back on one thread."""
    from fastdup_ray.engine import open_engine
    from fastdup_ray.reduce.distributed import _wave

    if engine_name == "ray":
        import sys

        from ray import cloudpickle

        request.getfixturevalue("ray_local")
        # Ray's workers cannot import this test module: send threads_seen by value.
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    engine = open_engine(engine_name, num_threads=2)
    try:
        alone = _wave(engine, threads_seen, [0])
        full = _wave(engine, threads_seen, [0, 1, 2, 3])
    finally:
        engine.close()
    booked = 2.0 if engine_name == "ray" else 0.0
    assert alone == [(2, 2, booked)]
    assert set(full) == {(1, 1, booked / 2)}

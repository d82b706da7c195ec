"""Every table has a total order (rules.py): on vectors full of exact and near ties the
kNN, and every table built on it, are the same whatever the strategy or the engine."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import fastdup_ray
from fastdup_ray.reduce import rules
from fastdup_ray.reduce.index import (
    build_index,
    knn_search,
    search_index_shard,
    topk_edges,
)
from fastdup_ray.reduce.lists import (
    blocked_ivf_knn,
    list_vectors,
    merge_candidates,
    route,
    score_lists,
    train_lists,
)
from fastdup_ray.rundir.shards import FeatureShardWriter

TABLES = ("similarity.csv", "outliers.csv", "component_info.csv", "connected_components.csv")


def tied_vectors(seed: int = 0, d: int = 24, groups: int = 36, singles: int = 200) -> np.ndarray:
    """Unit vectors: groups of 2-10 exact copies of one vector, groups of copies plus
    1e-7, and singletons, shuffled so that copies land in different shards and lists."""
    rng = np.random.default_rng(seed)
    rows = []
    for group in range(groups):
        base = rng.normal(size=d)
        size = 2 + group % 9
        copies = np.repeat(base[None, :], size, axis=0)
        if group % 2:
            copies = copies + 1e-7 * rng.choice([-1.0, 0.0, 1.0], size=copies.shape)
        rows.append(copies)
    rows.append(rng.normal(size=(singles, d)))
    vectors = np.concatenate(rows)[rng.permutation(sum(len(r) for r in rows))]
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


def rule_knn(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The rule's kNN by brute force: every pair scored by rules.pair_similarity."""
    n = len(vectors)
    sims = np.stack([rules.pair_similarity(vectors[i : i + 1], vectors[None, :, :])[0] for i in range(n)])
    ids = np.broadcast_to(np.arange(n), (n, n)).copy()
    sims[np.arange(n), np.arange(n)] = -np.inf
    return rules.best_first(sims, ids, k)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_knn_path_gives_the_rule_books_neighbours_on_ties(seed):
    vectors = tied_vectors(seed)
    n, k = len(vectors), 5
    want_sims, want_ids = rule_knn(vectors, k)

    flat = knn_search(vectors, k, batch_rows=97)  # several query blocks
    listed, probes, _ = list_vectors(
        lambda i: vectors[:250] if i == 0 else vectors[250:], [250, n - 250], 4, 4
    )
    blocked = blocked_ivf_knn(listed, probes, k)
    centroids = train_lists(vectors, 4)
    lists = route(vectors, centroids, 4)
    ids = np.repeat(np.arange(n), lists.shape[1])
    query, candidate, sim = score_lists(
        ids,
        lists.ravel(),
        np.tile(np.arange(lists.shape[1]) == 0, n),
        np.repeat(vectors, lists.shape[1], axis=0),
        k,
    )
    routed = merge_candidates(query, candidate, sim, k)
    shards = []
    for first, stop in ((0, 100), (100, 333), (333, n)):
        index = build_index(vectors[first:stop], "Flat")
        shards += search_index_shard(
            index, vectors[first:stop], first, lambda: [(0, vectors[:200]), (200, vectors[200:])], k
        )
    src = np.concatenate([np.repeat(np.arange(f, f + len(i)), k) for f, _, i in shards])
    cand = np.concatenate([i.ravel() for _, _, i in shards])
    score = np.concatenate([s.ravel() for _, s, _ in shards])
    valid = cand >= 0
    sharded = merge_candidates(src[valid], cand[valid], score[valid], k)

    want = topk_edges(want_sims, want_ids)
    for name, got in (
        ("flat", topk_edges(*flat)),
        ("blocked", topk_edges(*blocked)),
        ("routed", routed),
        ("shards", sharded),
    ):
        for column, (g, w) in enumerate(zip(got, want)):
            assert np.array_equal(g, w), (name, column)


def write_shards(work, vectors: np.ndarray) -> None:
    names = [f"img{i:05d}.jpg" for i in range(len(vectors))]
    for number, rows in enumerate(np.split(np.arange(len(vectors)), [150, 151, 380])):
        with FeatureShardWriter(str(work), d=vectors.shape[1], prefix=f"part{number}.") as writer:
            writer.add_good([names[i] for i in rows], vectors[rows])


def assert_same_rows(got, want) -> None:
    """Same rows in the same order; pagerank within 1e-6."""
    for name in TABLES:
        a, b = pl.read_csv(got / name), pl.read_csv(want / name)
        scores = [c for c in ("pagerank", "delta") if c in b.columns]
        assert a.drop(scores).equals(b.drop(scores)), name
        for column in scores:
            assert (a[column] - b[column]).abs().max() <= 1e-6, (name, column)


PARAMS = dict(run_mode=2, k=5, threshold=0.5, ccthreshold=0.5, lower_threshold=0.3)
STRATEGIES = {
    "memory-ivf": dict(reduce_strategy="memory", nnf_mode="IVF4,Flat", nprobe=4, executor="local"),
    "distributed-flat-local": dict(
        reduce_strategy="distributed", nnf_mode="Flat", rows_per_partition=97, executor="local"
    ),
    "distributed-routed-local": dict(
        reduce_strategy="distributed", nnf_mode="IVF4,Flat", nprobe=4, rows_per_partition=97, executor="local"
    ),
}


@pytest.fixture(scope="module")
def memory_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("memory")
    write_shards(work, tied_vectors(3))
    fastdup_ray.run("unused", str(work), **PARAMS, reduce_strategy="memory", executor="local")
    return work


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_each_strategy_writes_the_same_rows_on_ties(tmp_path, memory_run, strategy):
    write_shards(tmp_path, tied_vectors(3))
    fastdup_ray.run("unused", str(tmp_path), **PARAMS, **STRATEGIES[strategy])
    assert_same_rows(tmp_path, memory_run)


def test_a_rerun_writes_the_same_rows(tmp_path, memory_run):
    write_shards(tmp_path, tied_vectors(3))
    for _ in range(2):
        fastdup_ray.run("unused", str(tmp_path), **PARAMS, reduce_strategy="memory", executor="local")
        assert_same_rows(tmp_path, memory_run)


@pytest.mark.integration
def test_the_ray_engine_writes_the_same_rows_on_ties(ray_local, tmp_path, memory_run):
    write_shards(tmp_path, tied_vectors(3))
    fastdup_ray.run(
        "unused",
        str(tmp_path),
        **PARAMS,
        reduce_strategy="distributed",
        nnf_mode="IVF4,Flat",
        nprobe=4,
        rows_per_partition=97,
        executor="ray",
    )
    assert_same_rows(tmp_path, memory_run)

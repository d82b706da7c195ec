import numpy as np
import pytest

from fastdup_ray.reduce.index import (
    build_index,
    factory_string,
    knn_edges,
    knn_search,
    search_index_shard,
    searcher_for,
)
from fastdup_ray.reduce.lists import ivf_flat_lists, ivf_knn, merge_candidates, route, score_lists


def unit_rows(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(features, k):
    sims = features @ features.T
    np.fill_diagonal(sims, -np.inf)
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, ids, axis=1), ids


def test_knn_matches_brute_force():
    features = unit_rows(300, 24)
    sims, ids = knn_search(features, k=5)
    want_sims, want_ids = brute_force(features, 5)
    np.testing.assert_allclose(sims, want_sims, atol=1e-5)
    assert (ids == want_ids).mean() > 0.99  # float ties may swap order, nothing else


def test_knn_across_search_batches_equals_single_batch():
    features = unit_rows(257, 16, seed=1)
    one = knn_search(features, k=3)
    many = knn_search(features, k=3, batch_rows=50)
    np.testing.assert_array_equal(one[1], many[1])


def test_exact_copies_never_list_themselves():
    base = unit_rows(10, 8, seed=2)
    features = np.concatenate([base, base[:3], base[:3]])  # triplets of identical rows
    sims, ids = knn_search(features, k=2)
    assert (ids != np.arange(len(features))[:, None]).all()
    for copy in (0, 10, 13):
        assert set(ids[copy]) == {0, 10, 13} - {copy}
        np.testing.assert_allclose(sims[copy], 1.0, atol=1e-5)


def test_fewer_rows_than_k_marks_missing_neighbours():
    sims, ids = knn_search(unit_rows(3, 4), k=5)
    assert (ids[:, 2:] == -1).all() and np.isneginf(sims[:, 2:]).all()
    src, dst, sim = knn_edges(unit_rows(3, 4), k=5)
    assert len(src) == 6 and (dst >= 0).all() and (src != dst).all()


def sharded_exact_knn(shards: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The distributed reduce's exact kNN, in memory: one Flat index per shard searched
    with every shard, each query's candidates merged (merge_candidates)."""
    offsets = np.cumsum([0] + [len(s) for s in shards])
    blocks = lambda: [(int(offsets[i]), shard) for i, shard in enumerate(shards)]  # noqa: E731
    found = []
    for i, shard in enumerate(shards):
        for first, sims, ids in search_index_shard(
            build_index(shard, "Flat"), shard, int(offsets[i]), blocks, k
        ):
            query = np.repeat(np.arange(first, first + len(ids)), ids.shape[1])
            valid = ids.ravel() >= 0
            found.append((query[valid], ids.ravel()[valid], sims.ravel()[valid]))
    return as_topk(*(np.concatenate(c) for c in zip(*found)), n=int(offsets[-1]), k=k)


def routed_knn(
    features: np.ndarray, k: int, nlist: int, nprobe: int, buckets: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The distributed reduce's routed kNN, in memory: route, group lists into buckets,
    score each bucket, merge each query's candidates."""
    from fastdup_ray.reduce.lists import train_lists

    centroids = train_lists(features, nlist, seed=seed)
    probes = route(features, centroids, nprobe)
    width = probes.shape[1]
    ids = np.repeat(np.arange(len(features)), width)
    lists = probes.ravel()
    member = np.tile(np.arange(width) == 0, len(features))
    bucket = lists * buckets // len(centroids)
    found = [
        score_lists(ids[bucket == b], lists[bucket == b], member[bucket == b], features[ids[bucket == b]], k)
        for b in range(buckets)
    ]
    return as_topk(*(np.concatenate(c) for c in zip(*found)), n=len(features), k=k)


def as_topk(query, candidate, sim, n, k):
    """merge_candidates' edges as n x k arrays (-inf / -1 where missing), like knn_search."""
    src, dst, best = merge_candidates(query, candidate, sim, k)
    sims, ids = np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)
    starts = np.searchsorted(src, src)
    rank = np.arange(len(src)) - starts
    sims[src, rank], ids[src, rank] = best, dst
    return sims, ids


def test_sharded_exact_knn_equals_unsharded_exact():
    features = unit_rows(400, 32, seed=3)
    whole_sims, whole_ids = knn_search(features, k=6)
    for cuts in ([100, 250], [1, 2, 399], [200]):
        sims, ids = sharded_exact_knn(np.split(features, cuts), k=6)
        np.testing.assert_allclose(sims, whole_sims, atol=1e-5)
        assert (ids == whole_ids).mean() > 0.99


def test_routed_knn_probing_every_list_is_exact_and_with_few_probes_never_invents_a_similarity():
    features = clustered_rows(900, 24, 6, seed=4)
    features[10] = features[20] = features[30]  # exact copies tie; smaller ids first
    whole_sims, whole_ids = knn_search(features, k=5)
    sims, ids = routed_knn(features, k=5, nlist=8, nprobe=8, buckets=3)
    np.testing.assert_allclose(sims, whole_sims, atol=1e-5)
    assert (ids == whole_ids).mean() > 0.999 and list(ids[30][:2]) == [10, 20]
    sims, ids = routed_knn(clustered_rows(3000, 32, 10, seed=5), k=6, nlist=12, nprobe=2, buckets=5)
    features = clustered_rows(3000, 32, 10, seed=5)
    valid = ids >= 0
    exact = np.einsum("nd,nkd->nk", features, features[np.maximum(ids, 0)])
    np.testing.assert_allclose(sims[valid], exact[valid], atol=1e-5)
    assert not (ids == np.arange(3000)[:, None]).any()
    _, whole_ids = knn_search(features, k=6)
    assert np.mean([len(set(a) & set(b)) / 6 for a, b in zip(ids, whole_ids)]) > 0.9


@pytest.mark.parametrize(
    "nn_provider, nnf_mode, nnmodel",
    [
        ("nnf", "HNSW32", ""),
        ("nnf", "IVF64,Flat", ""),
        ("nnf", "IVF4096,PQ8", ""),
        ("turi", "", "brute_force"),
        ("turi", "", "ball_tree"),
        ("turi", "", "lsh"),
    ],
)
def test_every_index_choice_reports_exact_similarities_only(nn_provider, nnf_mode, nnmodel):
    features = unit_rows(3000, 32, seed=4)
    index = build_index(features, factory_string(nn_provider, nnf_mode, nnmodel))
    sims, ids = knn_search(features, k=5, index=index)
    exact_sims, _ = knn_search(features, k=5)
    valid = ids >= 0
    recomputed = np.einsum(
        "ij,ij->i", features[np.repeat(np.arange(3000), 5)[valid.ravel()]], features[ids[valid]]
    )
    np.testing.assert_allclose(sims[valid], recomputed, atol=1e-5)  # never an invented similarity
    assert (sims[valid] <= exact_sims[valid] + 1e-5).all()  # can miss the best, never beat it
    if nnmodel == "brute_force":
        np.testing.assert_allclose(sims, exact_sims, atol=1e-6)


@pytest.mark.parametrize("spec", ["IVF4096,PQ8", "PQ8", "PCA16,PQ8", "OPQ8,IVF16,PQ8"])
def test_pq_indexes_skip_the_polysemous_training_no_search_here_uses(spec):
    """The factory's default trained a code order for Hamming-filtered search (never used),
    most of a small IVF-PQ build's time."""
    from fastdup_ray.reduce.index import coded_index

    index = build_index(unit_rows(1000, 32, seed=5), spec)
    assert coded_index(index).do_polysemous_training is False


def test_pq_neighbours_are_those_of_the_polysemous_trained_index():
    """What skipping that training must not change: the neighbours and their scores (with
    4-bit codes, whose polysemous training is quick enough for a test)."""
    import faiss

    from fastdup_ray.reduce.index import coded_index, set_search_effort

    features = unit_rows(1000, 32, seed=5)
    trained = faiss.index_factory(32, "IVF25,PQ8x4", faiss.METRIC_INNER_PRODUCT)
    assert coded_index(trained).do_polysemous_training
    trained.train(features)
    trained.add(features)
    set_search_effort(trained)
    expected_sims, expected_ids = trained.search(features, 5)
    sims, ids = build_index(features, "IVF25,PQ8x4").search(features, 5)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(sims, expected_sims)


def test_unknown_index_names_are_clear_errors():
    from fastdup_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="nnmodel"):
        factory_string("turi", "", "kd_forest")
    with pytest.raises(ConfigError, match="faiss cannot build"):
        build_index(unit_rows(10, 8), "NotAnIndex")


# Property-based: however the vectors are cut into index shards, the merged exact top-k
# equals the unsharded exact top-k.
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=120),
    k=st.integers(min_value=1, max_value=8),
    seed=st.integers(0, 2**16),
    cut_seeds=st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=5),
    duplicates=st.integers(min_value=0, max_value=5),
)
def test_property_sharded_exact_knn_equals_unsharded(n, k, seed, cut_seeds, duplicates):
    features = unit_rows(n, 16, seed=seed)
    features[:duplicates] = features[n - 1]  # exact copies: ties broken by the smaller id everywhere
    cuts = sorted({int(c * n) for c in cut_seeds} - {0, n})
    whole_sims, whole_ids = knn_search(features, k=k)
    sims, ids = sharded_exact_knn(np.split(features, cuts), k=k)
    np.testing.assert_allclose(sims, whole_sims, atol=1e-5)
    # Where candidates tie (exact copies, or equal to float precision) either may be kept,
    # in or beyond the top k; the similarities above agree, so compare ids only at
    # positions whose score differs from its neighbours' in the full ranking.
    ranked, _ = brute_force(features, min(n - 1, k + 1))
    ranked = np.concatenate(
        [np.full((n, 1), np.inf), ranked, np.full((n, k + 2 - ranked.shape[1]), -np.inf)], axis=1
    )
    clear = (np.abs(ranked[:, 1 : k + 1] - ranked[:, :k]) > 1e-5) & (
        np.abs(ranked[:, 1 : k + 1] - ranked[:, 2 : k + 2]) > 1e-5
    )
    clear &= whole_ids >= 0
    assert np.array_equal(ids[clear], whole_ids[clear])
    # Routed to every list (any bucketing of the lists), the routed kNN is exact too.
    routed_sims, routed_ids = routed_knn(features, k=k, nlist=3, nprobe=3, buckets=2, seed=seed)
    np.testing.assert_allclose(routed_sims, whole_sims, atol=1e-5)
    assert np.array_equal(routed_ids[clear], whole_ids[clear])


def clustered_rows(n, d, clusters, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.9 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_blockwise_ivf_probing_every_list_is_the_exact_knn():
    features = clustered_rows(900, 24, 6, seed=4)
    features[10] = features[20] = features[30]  # exact copies tie; smaller ids first
    shards = np.split(features, [100, 101, 600])
    sims, ids, _, centroids = ivf_knn(
        lambda i: shards[i], [len(s) for s in shards], 24, k=5, nlist=8, nprobe=8
    )
    whole_sims, whole_ids = knn_search(features, k=5)
    np.testing.assert_allclose(sims, whole_sims, atol=1e-5)
    assert (ids == whole_ids).mean() > 0.999 and list(ids[30][:2]) == [10, 20]


def test_blockwise_ivf_with_few_probes_reports_exact_similarities_and_high_recall():
    features = clustered_rows(3000, 32, 10, seed=5)
    shards = np.array_split(features, 4)
    sims, ids, listed, centroids = ivf_knn(
        lambda i: shards[i], [len(s) for s in shards], 32, k=6, nlist=12, nprobe=2
    )
    valid = ids >= 0
    exact = np.einsum("nd,nkd->nk", features, features[np.maximum(ids, 0)])
    np.testing.assert_allclose(sims[valid], exact[valid], atol=1e-5)  # never an invented similarity
    assert not (ids == np.arange(3000)[:, None]).any()
    _, whole_ids = knn_search(features, k=6)
    recall = np.mean([len(set(a) & set(b)) / 6 for a, b in zip(ids, whole_ids)])
    assert recall > 0.9
    index = listed.index  # what nnf.index saves for run modes 3/4
    assert index.ntotal == 3000 and index.nlist == len(centroids)
    _, found = index.search(features[:50], 1)
    assert (found[:, 0] == np.arange(50)).all()


def numpy_blas_threads() -> set[int]:
    """The thread counts of numpy's own BLAS (faiss brings another)."""
    from threadpoolctl import threadpool_info

    return {pool["num_threads"] for pool in threadpool_info() if "numpy" in pool["filepath"]}


def test_blockwise_ivf_on_several_threads_gives_one_threads_answer_bit_for_bit():
    """The (list, block) products run on the search's threads and are merged in list
    order, so the kNN (ties included) does not depend on the thread count; numpy's BLAS
    runs on one thread inside, where it splits those small products at a loss."""
    from fastdup_ray.reduce.lists import blocked_ivf_knn, list_vectors

    features = clustered_rows(2000, 16, 8, seed=6)
    features[100] = features[200] = features[1500]  # a three-way tie
    listed, probes, _ = list_vectors(lambda i: features, [2000], nlist=10, nprobe=3)
    alone = blocked_ivf_knn(listed, probes, 5, max_block=50, threads=1)
    seen = []
    original = listed.gather

    def gather(ids, home):  # each block's queries, read as its product is made
        if len(ids):
            seen.append(numpy_blas_threads())
        return original(ids, home)

    listed.gather = gather
    together = blocked_ivf_knn(listed, probes, 5, max_block=50, threads=3)
    assert together[1].tolist() == alone[1].tolist() and together[0].tolist() == alone[0].tolist()
    assert list(alone[1][1500][:2]) == [100, 200]
    assert len(seen) > 3 * 10 and all(counts == {1} for counts in seen)


def test_only_plain_ivf_flat_specs_are_searched_blockwise():
    assert ivf_flat_lists("IVF1024,Flat") == 1024 and ivf_flat_lists("IVF16384,PQ64") is None
    assert ivf_flat_lists("HNSW32") is None and ivf_flat_lists("PCA64,IVF100,Flat") is None


def test_gpu_search_falls_back_to_the_cpu_index_with_one_log_line(caplog):
    """faiss-cpu here: compute='gpu' searches the same index on CPU and says so; 'cpu' is silent."""
    import faiss

    features = np.random.default_rng(3).standard_normal((50, 8)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    index = build_index(features, "Flat")
    assert searcher_for(index, "cpu") is index and not caplog.records
    searcher = searcher_for(index, "gpu")
    if faiss.get_num_gpus() == 0:
        assert searcher is index
        assert [r.message for r in caplog.records if "faiss sees no GPU" in r.message] and len(
            caplog.records
        ) == 1
    sims, ids = knn_search(features, 3, index=searcher)
    assert np.array_equal(ids, knn_search(features, 3)[1])


def test_a_routed_search_scores_its_lists_on_one_blas_thread(monkeypatch):
    """A routed-index search (run modes 3/4, a notebook's search) scores each probed list
    in one small product, which BLAS splitting over the cores only slows down."""
    from threadpoolctl import threadpool_limits

    from fastdup_ray.reduce import lists

    seen = []
    original = lists.top_k_of_list

    def top_k_of_list(*args):  # runs right after each list's product
        seen.append(numpy_blas_threads())
        return original(*args)

    monkeypatch.setattr(lists, "top_k_of_list", top_k_of_list)
    features = clustered_rows(600, 16, 4, seed=7)
    home = route(features, features[[0, 150, 300, 450]], 1)[:, 0]
    with threadpool_limits(limits=2, user_api="blas"):
        query, candidate, sim = score_lists(np.arange(600), home, np.ones(600, dtype=bool), features, k=3)
    assert len(query) == 600 * 3 and seen and all(counts == {1} for counts in seen)

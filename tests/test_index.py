import numpy as np

from fastdup_ray.index import knn_edges, knn_search


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

import numpy as np

from fastdup_ray.reduce import outputs
from fastdup_ray.reduce.index import knn_edges

NAMES = [f"/data/img{i}.jpg" for i in range(6)]


def test_unique_pairs_collapse_both_directions_and_clip():
    src = np.array([0, 1, 2, 3])
    dst = np.array([1, 0, 3, 2])
    sim = np.array([0.9, 0.9, 1.0000001, 1.0000001], dtype=np.float32)
    a, b, s = outputs.unique_pairs(src, dst, sim)
    assert list(zip(a, b)) == [(0, 1), (2, 3)]
    assert s.max() <= 1.0


def test_similarity_table_threshold_and_order():
    a, b = np.array([0, 0, 2, 3]), np.array([1, 2, 4, 5])
    sim = np.array([0.95, 0.5, 0.99, 0.8], dtype=np.float32)
    table = outputs.similarity_table(NAMES, a, b, sim, threshold=0.8)
    assert table.columns == ["from", "to", "distance"]
    assert table.rows() == [(NAMES[2], NAMES[4], 0.99), (NAMES[0], NAMES[1], 0.95), (NAMES[3], NAMES[5], 0.8)]


def test_outliers_are_the_images_whose_nearest_neighbour_is_least_similar():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, 8)).astype(np.float32)
    features[1] = features[0] + 0.01  # 0 and 1 are near copies: neither is an outlier
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    names = [f"img{i}.jpg" for i in range(50)]
    for k, fraction in ((2, 0.1), (5, 0.1), (5, 0.5)):
        src, dst, sim = knn_edges(features, k)
        table = outputs.outliers_table(names, src, dst, sim, lower_threshold=fraction)
        assert table.height == min(
            50, int(np.ceil(fraction * 50 * k))
        )  # more k, more rows, one per image at most
        assert table["from"].n_unique() == table.height
        nearest = {i: max((s, j) for a, j, s in zip(src, dst, sim) if a == i and j != i) for i in range(50)}
        ranked = sorted(range(50), key=lambda i: (nearest[i][0], i))[: table.height]
        assert set(table["from"]) == {names[i] for i in ranked}
        assert {(r[0], r[1]) for r in table.rows()} == {(names[i], names[nearest[i][1]]) for i in ranked}
        assert "img0.jpg" not in set(table["from"]) or table.height >= 49
        assert table["distance"].is_sorted(descending=True)


def test_component_tables():
    labels = np.array([0, 0, 2, 0, 4])
    rank = np.array([1.2, 0.9, 0.15, 0.9, 0.15])
    components, info = outputs.component_tables(labels, rank, np.zeros(5), [f"{i}.jpg" for i in range(5)])
    assert components.columns == ["__id", "component_id", "pagerank", "delta", "filename"]
    assert components["filename"].to_list() == ["0.jpg", "1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    assert components["__id"].to_list() == [0, 1, 2, 3, 4]
    assert info.rows() == [(0, 3), (2, 1), (4, 1)]


def test_exact_copies_are_paired_as_a_star_and_flagged():
    hashes = np.array(["h1", "h2", "h1", "", "h1", "h2", None], dtype=object)
    a, b = outputs.exact_pairs(outputs.content_groups(hashes))
    assert sorted(zip(a.tolist(), b.tolist())) == [(0, 2), (0, 4), (1, 5)]
    for nothing in (np.array([], dtype=object), np.array(["", "", None], dtype=object)):
        assert [len(x) for x in outputs.exact_pairs(outputs.content_groups(nothing))] == [0, 0]
    src, dst, sim = np.array([2, 3]), np.array([0, 6]), np.array([0.9999, 0.5], dtype=np.float32)
    a, b, sim, exact = outputs.pairs_with_exact(src, dst, sim, hashes)
    pairs = {(int(x), int(y)): (float(s), bool(e)) for x, y, s, e in zip(a, b, sim, exact)}
    assert pairs == {(0, 2): (1.0, True), (0, 4): (1.0, True), (1, 5): (1.0, True), (3, 6): (0.5, False)}
    table = outputs.similarity_table([f"{i}.jpg" for i in range(7)], a, b, sim, 0.75, exact=exact)
    assert table.columns == ["from", "to", "distance", "exact"] and table["exact"].all() and table.height == 3

import numpy as np
import pytest

from fastdup_ray.graph import components_in_rounds, connected_components, local_forest, pagerank


def reference_components(n, src, dst):
    """Breadth-first search: label = smallest node id reachable."""
    neighbours = [[] for _ in range(n)]
    for a, b in zip(src, dst):
        neighbours[a].append(b)
        neighbours[b].append(a)
    labels = [-1] * n
    for start in range(n):
        if labels[start] >= 0:
            continue
        labels[start] = start
        queue = [start]
        while queue:
            node = queue.pop()
            for nxt in neighbours[node]:
                if labels[nxt] < 0:
                    labels[nxt] = start
                    queue.append(nxt)
    return np.array(labels)


def chain(n, rng):
    order = rng.permutation(n)
    return order[:-1], order[1:]


def star(n, rng):
    centre = rng.integers(n)
    others = np.array([i for i in range(n) if i != centre])
    return np.full(len(others), centre), others


def random_sparse(n, rng):
    m = n // 2
    return rng.integers(0, n, m), rng.integers(0, n, m)


def giant(n, rng):
    m = 4 * n
    return rng.integers(0, n, m), rng.integers(0, n, m)


def no_edges(n, rng):
    return np.zeros(0, int), np.zeros(0, int)


@pytest.mark.parametrize("shape", [chain, star, random_sparse, giant, no_edges])
@pytest.mark.parametrize("seed", range(5))
def test_components_match_bfs(shape, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    src, dst = shape(n, rng)
    labels = connected_components(n, src, dst)
    np.testing.assert_array_equal(labels, reference_components(n, src, dst))


def test_pagerank_isolated_nodes_score_reset_and_hub_scores_highest():
    src, dst = np.array([0, 0, 0]), np.array([1, 2, 3])
    rank, delta = pagerank(5, src, dst, np.ones(3))
    assert rank[4] == pytest.approx(0.15)
    assert rank[0] == rank.max()
    assert delta.max() < 1e-3
    # Mass is conserved for nodes with edges: ranks average to 1 over a connected graph.
    assert rank[:4].mean() == pytest.approx(1.0, abs=1e-3)


def test_pagerank_weights_matter():
    rank, _ = pagerank(3, np.array([0, 0]), np.array([1, 2]), np.array([0.9, 0.1]))
    assert rank[1] > rank[2]


@pytest.mark.parametrize("shape", [chain, star, random_sparse, giant, no_edges])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("edges_per_task", [1, 7, 50])
def test_partitioned_rounds_match_in_memory(shape, seed, edges_per_task):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 300))
    src, dst = shape(n, rng)
    order = rng.permutation(len(src))  # edges arrive in any order
    labels = components_in_rounds(n, src[order], dst[order], edges_per_task)
    np.testing.assert_array_equal(labels, connected_components(n, src, dst))


def test_local_forest_keeps_connectivity_with_one_edge_per_node():
    src, dst = np.array([5, 6, 7, 5]), np.array([6, 7, 5, 9])
    nodes, roots = local_forest(src, dst)
    assert sorted(zip(nodes.tolist(), roots.tolist())) == [(6, 5), (7, 5), (9, 5)]


@pytest.mark.integration
@pytest.mark.parametrize("engine_name", ["local", "ray"])
def test_components_on_either_engine_match_in_memory(ray_local, engine_name):
    from fastdup_ray.engine import open_engine

    rng = np.random.default_rng(7)
    n = 5000
    src, dst = rng.integers(0, n, 6000), rng.integers(0, n, 6000)
    engine = open_engine(engine_name, num_threads=2)
    try:
        labels = components_in_rounds(n, src, dst, edges_per_task=500, map_fn=engine.map)
    finally:
        engine.close()
    np.testing.assert_array_equal(labels, reference_components(n, src, dst))


# Property-based: any graph, any partition size, the distributed rounds give the same
# partition as in-memory union-find and as breadth-first search.
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def graphs(draw):
    n = draw(st.integers(min_value=0, max_value=60))
    if n == 0:
        return 0, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    shape = draw(st.sampled_from(["random", "chain", "star", "cliques"]))
    if shape == "random":
        pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3 * n))
    elif shape == "chain":
        order = draw(st.permutations(range(n)))
        pairs = list(zip(order[:-1], order[1:]))
    elif shape == "star":
        centre = draw(st.integers(0, n - 1))
        pairs = [(centre, i) for i in draw(st.lists(st.integers(0, n - 1), max_size=n))]
    else:
        size = draw(st.integers(1, 6))
        pairs = [(a, b) for start in range(0, n, size) for a in range(start, min(n, start + size)) for b in range(a + 1, min(n, start + size))]
    src = np.array([a for a, _ in pairs], dtype=np.int64)
    dst = np.array([b for _, b in pairs], dtype=np.int64)
    return n, src, dst


@settings(max_examples=150, deadline=None)
@given(graph=graphs(), edges_per_task=st.integers(min_value=1, max_value=40))
def test_property_partitioned_rounds_equal_union_find(graph, edges_per_task):
    n, src, dst = graph
    expected = reference_components(n, src, dst)
    assert np.array_equal(connected_components(n, src, dst), expected)
    assert np.array_equal(components_in_rounds(n, src, dst, edges_per_task), expected)

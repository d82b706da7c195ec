import numpy as np
import pytest

from fastdup_ray.reduce.graph import (
    component_pagerank,
    connected_components,
    large_star,
    pagerank,
    small_star,
    star_labels,
)


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


def components_in_star_rounds(n: int, src: np.ndarray, dst: np.ndarray, partitions: int) -> np.ndarray:
    """What the distributed reduce does, in memory: nodes cut into ``partitions`` ranges,
    large-star and small-star run per range on the entries of its nodes only, until a
    round changes nothing; then each range's labels."""
    bounds = np.linspace(0, n, partitions + 1).astype(int)
    keep = src != dst
    a, b = np.maximum(src[keep], dst[keep]), np.minimum(src[keep], dst[keep])
    for _ in range(100):
        u, v = np.concatenate([a, b]), np.concatenate([b, a])
        outs = [
            large_star(u[(u >= lo) & (u < hi)], v[(u >= lo) & (u < hi)])
            for lo, hi in zip(bounds[:-1], bounds[1:])
        ]
        a, b = np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])
        changed = sum(o[2] for o in outs)
        labels = np.concatenate(
            [
                star_labels(lo, hi, a[(a >= lo) & (a < hi)], b[(a >= lo) & (a < hi)])
                for lo, hi in zip(bounds[:-1], bounds[1:])
            ]
        )
        outs = [
            small_star(a[(a >= lo) & (a < hi)], b[(a >= lo) & (a < hi)])
            for lo, hi in zip(bounds[:-1], bounds[1:])
        ]
        a, b = np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])
        if changed + sum(o[2] for o in outs) == 0:
            return labels
    raise AssertionError("no convergence")


@pytest.mark.parametrize("shape", [chain, star, random_sparse, giant, no_edges])
@pytest.mark.parametrize("partitions", [1, 3, 7])
def test_star_rounds_over_partitions_match_bfs(shape, partitions):
    rng = np.random.default_rng(partitions)
    n = int(rng.integers(partitions, 400))
    src, dst = shape(n, rng)
    np.testing.assert_array_equal(
        components_in_star_rounds(n, np.asarray(src), np.asarray(dst), partitions),
        reference_components(n, src, dst),
    )


def test_pagerank_per_component_equals_pagerank_of_the_whole_graph():
    rng = np.random.default_rng(5)
    n = 300
    src, dst = rng.integers(0, n, 250), rng.integers(0, n, 250)
    keep = src != dst
    src, dst, weight = src[keep], dst[keep], rng.uniform(0.7, 1.0, keep.sum())
    labels = connected_components(n, src, dst)
    rank, delta = pagerank(n, src, dst, weight, labels=labels)
    # Solve the components in two unrelated groups, as two tasks would.
    group = labels[src] % 2
    for g in (0, 1):
        nodes, component, part_rank, part_delta = component_pagerank(
            src[group == g], dst[group == g], weight[group == g], labels[src[group == g]]
        )
        np.testing.assert_allclose(part_rank, rank[nodes], atol=1e-12)
        np.testing.assert_allclose(part_delta, delta[nodes], atol=1e-12)
        assert np.array_equal(component, labels[nodes])
    # Each component stopped on its own: every node's last change is below the tolerance.
    assert delta.max() < 1e-3 and np.allclose(rank[np.bincount(np.r_[src, dst], minlength=n) == 0], 0.15)


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
        pairs = [
            (a, b)
            for start in range(0, n, size)
            for a in range(start, min(n, start + size))
            for b in range(a + 1, min(n, start + size))
        ]
    src = np.array([a for a, _ in pairs], dtype=np.int64)
    dst = np.array([b for _, b in pairs], dtype=np.int64)
    return n, src, dst


@settings(max_examples=150, deadline=None)
@given(graph=graphs(), partitions=st.integers(min_value=1, max_value=8))
def test_property_star_rounds_equal_union_find(graph, partitions):
    n, src, dst = graph
    expected = reference_components(n, src, dst)
    assert np.array_equal(connected_components(n, src, dst), expected)
    assert np.array_equal(components_in_star_rounds(n, src, dst, partitions), expected)

import numpy as np
import pytest

from fastdup_ray.graph import connected_components, pagerank


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

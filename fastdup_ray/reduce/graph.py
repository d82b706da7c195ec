"""Graph stage: connected components (union-find) and pagerank over kNN edges.

Plain numpy functions over edge lists (src, dst[, weight]) on nodes 0..n-1.
"""

from __future__ import annotations

import numpy as np

from fastdup_ray.reduce.rules import (
    PAGERANK_MAX_ITERATIONS,
    PAGERANK_RESET,
    PAGERANK_TOLERANCE,
)


def connected_components(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Label every node with the smallest node id of its component.

    Vectorised union-find: each round hooks every root onto the smallest root it shares
    an edge with, then compresses paths fully; it ends when no edge joins two trees.
    Rounds are few (about log of the longest chain), each linear in the edges.
    """
    parent = np.arange(n, dtype=np.int64)
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    while True:
        root_src, root_dst = parent[src], parent[dst]
        crossing = root_src != root_dst
        if not crossing.any():
            return parent
        low = np.minimum(root_src[crossing], root_dst[crossing])
        high = np.maximum(root_src[crossing], root_dst[crossing])
        # Roots only ever point to smaller ids, so no cycle can form.
        np.minimum.at(parent, high, low)
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def pagerank(
    n: int,
    src: np.ndarray,
    dst: np.ndarray,
    weight: np.ndarray,
    labels: np.ndarray | None = None,
    reset_probability: float = PAGERANK_RESET,
    tolerance: float = PAGERANK_TOLERANCE,
    max_iterations: int = PAGERANK_MAX_ITERATIONS,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted pagerank on the undirected graph, in the GraphLab/Turi convention that
    fastdup's outputs use: pr_i = reset + (1 - reset) * sum_j pr_j * w_ji / W_j, so a node
    with no edges scores ``reset``. Returns (pagerank, delta), delta being each node's
    change in its last iteration.

    With ``labels`` (each node's component) every component iterates until its own
    largest change is below ``tolerance``, as if solved alone: a node's pagerank then
    depends only on its component's edges, so components can be solved in separate
    tasks with the same result.
    """
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    weight = np.asarray(weight, dtype=np.float64)
    both_src = np.concatenate([src, dst])
    both_dst = np.concatenate([dst, src])
    both_weight = np.concatenate([weight, weight])
    out_weight = np.bincount(both_src, weights=both_weight, minlength=n)
    share = np.divide(
        both_weight, out_weight[both_src], out=np.zeros_like(both_weight), where=out_weight[both_src] > 0
    )
    component = (
        np.unique(labels, return_inverse=True)[1].ravel()
        if labels is not None
        else np.zeros(n, dtype=np.int64)
    )
    rank = np.ones(n, dtype=np.float64)
    delta = np.zeros(n, dtype=np.float64)
    active = np.ones(n, dtype=bool)
    for _ in range(max_iterations):
        if n == 0 or not active.any():
            break
        incoming = np.bincount(both_dst, weights=rank[both_src] * share, minlength=n)
        updated = reset_probability + (1.0 - reset_probability) * incoming
        step = np.abs(updated - rank)
        # Nodes of converged components keep their values (their neighbours are frozen too).
        rank = np.where(active, updated, rank)
        delta = np.where(active, step, delta)
        largest = np.zeros(component.max() + 1 if n else 0)
        np.maximum.at(largest, component[active], step[active])
        active &= largest[component] >= tolerance
    return rank, delta


def component_pagerank(
    src: np.ndarray, dst: np.ndarray, weight: np.ndarray, component: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pagerank of the components whose edges are given (``component``: each edge's
    component id), nodes numbered globally: (nodes, their component, pagerank, delta).
    The same values as pagerank over the whole graph with its labels."""
    order = np.lexsort((dst, src))
    src, dst, weight, component = src[order], dst[order], weight[order], component[order]
    nodes, compact = np.unique(np.concatenate([src, dst]), return_inverse=True)
    node_component = np.empty(len(nodes), dtype=np.int64)
    node_component[compact] = np.concatenate([component, component])
    rank, delta = pagerank(
        len(nodes), compact[: len(src)], compact[len(src) :], weight, labels=node_component
    )
    return nodes, node_component, rank, delta


# --- Components in rounds of large-star / small-star (Kiveris et al., 2014) ------------------
#
# The distributed reduce keeps edges partitioned by node and alternates two local
# operations, each needing only one node's neighbours. They end with every component a
# star around its smallest node, so each node's label is its one smaller neighbour (or
# itself). Rounds grow with log(n) at worst and are few on near-duplicate graphs.


def _group_min(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """For each entry (u, v), the smallest v among the entries of its u."""
    order = np.argsort(u, kind="stable")
    nodes, starts = np.unique(u[order], return_index=True)
    smallest = np.minimum.reduceat(v[order], starts) if len(order) else np.zeros(0, dtype=np.int64)
    return smallest[np.searchsorted(nodes, u)]


def _unique_edges(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges (a, b) with a > b, each once."""
    if len(a) == 0:
        return a, b
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def large_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Entries (u, v) for every neighbour v of each node u held here (both directions
    of each edge reach their two nodes). Each node links its larger neighbours to the
    smallest of itself and its neighbours. Returns the new edges (larger, smaller), once
    each, and how many of them differ from the edge they replace."""
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    smallest = np.minimum(_group_min(u, v), u)
    larger = v > u
    new_a, new_b = _unique_edges(v[larger], smallest[larger])
    changed = int(np.count_nonzero(smallest[larger] != u[larger]))
    return new_a, new_b, changed


def small_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Entries (u, v) with v < u: each edge at its larger node. Each node links itself
    and its smaller neighbours to the smallest of them. Returns the new edges (larger,
    smaller), once each, and how many of them are not already edges of the node."""
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    smallest = _group_min(u, v)
    others = v != smallest
    new_a = np.concatenate([u, v[others]])
    new_b = np.concatenate([smallest, smallest[others]])
    new_a, new_b = _unique_edges(new_a, new_b)
    return new_a, new_b, int(np.count_nonzero(others))


def star_labels(first: int, stop: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Labels of nodes first..stop-1 once the graph is stars: a node's one smaller
    neighbour (entries (u, v), v < u), or the node itself."""
    labels = np.arange(first, stop, dtype=np.int64)
    if len(u):
        labels[np.asarray(u) - first] = _group_min(np.asarray(u), np.asarray(v))
    return labels

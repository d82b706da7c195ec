"""Graph stage: connected components (union-find) and pagerank over kNN edges.

Plain numpy functions over edge lists (src, dst[, weight]) on nodes 0..n-1.
"""

from __future__ import annotations

import numpy as np


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
    reset_probability: float = 0.15,
    tolerance: float = 1e-3,
    max_iterations: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted pagerank on the undirected graph, in the GraphLab/Turi convention that
    fastdup's outputs use: pr_i = reset + (1 - reset) * sum_j pr_j * w_ji / W_j, so a node
    with no edges scores ``reset``. Returns (pagerank, delta), delta being each node's
    change in the last iteration.
    """
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    weight = np.asarray(weight, dtype=np.float64)
    both_src = np.concatenate([src, dst])
    both_dst = np.concatenate([dst, src])
    both_weight = np.concatenate([weight, weight])
    out_weight = np.bincount(both_src, weights=both_weight, minlength=n)
    share = np.divide(both_weight, out_weight[both_src], out=np.zeros_like(both_weight), where=out_weight[both_src] > 0)
    rank = np.ones(n, dtype=np.float64)
    delta = np.zeros(n, dtype=np.float64)
    for _ in range(max_iterations):
        incoming = np.bincount(both_dst, weights=rank[both_src] * share, minlength=n)
        updated = reset_probability + (1.0 - reset_probability) * incoming
        delta = np.abs(updated - rank)
        rank = updated
        if n == 0 or delta.max() < tolerance:
            break
    return rank, delta


def local_forest(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Components of one partition of the edges, as star edges node -> its component's
    smallest node (roots left out). The stars connect exactly what the edges connected,
    with at most one edge per node touched, so merge rounds shrink dense edge sets."""
    nodes, compact = np.unique(np.concatenate([src, dst]), return_inverse=True)
    labels = connected_components(len(nodes), compact[: len(src)], compact[len(src):])
    roots = nodes[labels]
    keep = nodes != roots
    return nodes[keep], roots[keep]


def forest_of_part(part: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """local_forest of one (src, dst) partition: the function an engine maps."""
    return local_forest(*part)


def components_in_rounds(n: int, src: np.ndarray, dst: np.ndarray, edges_per_task: int, map_fn=map) -> np.ndarray:
    """Connected components of a graph whose edges need not fit one process: partition
    the edges, reduce each partition to its star forest (``map_fn(forest_of_part, parts)``,
    an engine's map: processes or Ray tasks), repeat while that shrinks the edge set,
    then finish in memory. Same labels as connected_components."""
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    while len(src) > edges_per_task:
        parts = [(src[i : i + edges_per_task], dst[i : i + edges_per_task]) for i in range(0, len(src), edges_per_task)]
        forests = list(map_fn(forest_of_part, parts))
        new_src = np.concatenate([f[0] for f in forests])
        new_dst = np.concatenate([f[1] for f in forests])
        shrunk = len(new_src) < 0.9 * len(src)
        # Sorting by root brings each star's edges together for the next round.
        order = np.argsort(new_dst, kind="stable")
        src, dst = new_src[order], new_dst[order]
        if not shrunk:
            break
    return connected_components(n, src, dst)

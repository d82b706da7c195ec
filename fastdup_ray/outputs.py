"""Output stage: similarity, outliers and component tables in fastdup's CSV formats.

Functions from arrays to polars tables; run.py writes them atomically to the work dir.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

SIMILARITY_FILE = "similarity.csv"
OUTLIERS_FILE = "outliers.csv"
COMPONENT_INFO_FILE = "component_info.csv"
CONNECTED_COMPONENTS_FILE = "connected_components.csv"


def unique_pairs(src: np.ndarray, dst: np.ndarray, sim: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected edges once each (a < b): i->j and j->i from kNN collapse into one pair.

    Similarities are clipped to [0, 1], the range fastdup's ``distance`` column uses.
    """
    a = np.minimum(src, dst)
    b = np.maximum(src, dst)
    keep = a != b
    a, b, sim = a[keep], b[keep], sim[keep]
    order = np.lexsort((b, a))
    a, b, sim = a[order], b[order], sim[order]
    first = np.ones(len(a), dtype=bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[first], b[first], np.clip(sim[first], 0.0, 1.0).astype(np.float32)


def cross_table(from_names: list[str], to_names: list[str], src: np.ndarray, dst: np.ndarray, sim: np.ndarray) -> pl.DataFrame:
    """``from,to,distance`` where from and to index two different name lists (test -> train)."""
    return pl.DataFrame(
        {
            "from": pl.Series(from_names, dtype=pl.String).gather(src) if len(src) else pl.Series([], dtype=pl.String),
            "to": pl.Series(to_names, dtype=pl.String).gather(dst) if len(dst) else pl.Series([], dtype=pl.String),
            "distance": np.round(sim.astype(np.float64), 6),
        }
    )


def _pair_table(filenames: list[str], a: np.ndarray, b: np.ndarray, sim: np.ndarray) -> pl.DataFrame:
    return cross_table(filenames, filenames, a, b, sim)


def similarity_table(filenames: list[str], a: np.ndarray, b: np.ndarray, sim: np.ndarray, threshold: float) -> pl.DataFrame:
    """Pairs with similarity >= threshold, most similar first (``from,to,distance``)."""
    keep = sim >= threshold
    a, b, sim = a[keep], b[keep], sim[keep]
    order = np.lexsort((b, a, -sim))
    return _pair_table(filenames, a[order], b[order], sim[order])


def outliers_table(filenames: list[str], src: np.ndarray, dst: np.ndarray, sim: np.ndarray, lower_threshold: float) -> pl.DataFrame:
    """The ``lower_threshold`` fraction of all kNN edges (query -> neighbour) with the lowest similarity.

    ``from`` is the query image, far from even its nearest neighbours; ``to`` that
    neighbour. Rows go from least to most outlying (similarity descending), as fastdup
    writes them. More neighbours k means more edges, so more rows.
    """
    sim = np.clip(sim, 0.0, 1.0)
    count = min(len(sim), math.ceil(lower_threshold * len(sim)))
    lowest = np.lexsort((dst, src, sim))[:count]
    src, dst, sim = src[lowest], dst[lowest], sim[lowest]
    order = np.lexsort((dst, src, -sim))
    return _pair_table(filenames, src[order], dst[order], sim[order])


def component_tables(labels: np.ndarray, rank: np.ndarray, delta: np.ndarray) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(connected_components, component_info).

    connected_components: ``__id,component_id,pagerank,delta``, one row per image by __id.
    component_info: ``component_id,Count``, largest components first. A component's id is
    the smallest __id in it, so ids are stable across runs over the same features.
    """
    n = len(labels)
    components = pl.DataFrame(
        {
            "__id": np.arange(n, dtype=np.int64),
            "component_id": labels.astype(np.int64),
            "pagerank": np.round(rank, 6),
            "delta": np.round(delta, 6),
        }
    )
    ids, counts = np.unique(labels, return_counts=True)
    order = np.lexsort((ids, -counts))
    info = pl.DataFrame({"component_id": ids[order].astype(np.int64), "Count": counts[order].astype(np.int64)})
    return components, info

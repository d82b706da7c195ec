"""Output stage: similarity, outliers and component tables in fastdup's CSV formats.

Functions from arrays to polars tables; the reduce writes them atomically to the work dir
(their names are in layout.py).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from fastdup_ray.reduce import rules

# Flags in the spirit of cleanvision's issue types, on the statistics of the decoded
# image at the model's input size (176x176 for the shipped model; colour values 0-255).
# Defaults, documented in the README.
DARK_MEAN = 40.0  # mean colour value below this: dark
BRIGHT_MEAN = 220.0  # above this: bright (washed out)
BLURRY_LAPLACIAN = 30.0  # variance of the Laplacian below this: blurry
LOW_INFORMATION_COLORS = 64  # fewer distinct colours than this: low information
ODD_ASPECT = 3.0  # longer side over shorter side above this: odd aspect ratio
GRAYSCALE_SPREAD = 1.0  # mean difference between colour channels below this: greyscale


def unique_pairs(
    src: np.ndarray, dst: np.ndarray, sim: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def content_groups(hashes) -> np.ndarray:
    """One integer per row for its content hash (equal hashes, equal numbers), -1 where a
    row has none: pairs of rows are then compared as integers, not 32-character strings."""
    hashes = np.asarray(["" if h is None else h for h in hashes], dtype="U32")
    _, groups = np.unique(hashes, return_inverse=True)
    groups = groups.astype(np.int64)
    groups[hashes == ""] = -1
    return groups


def exact_pairs(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows with byte-identical content (equal content_groups), as pairs from the first row
    of each group to every other row: a star, so a group of m copies gives m-1 pairs
    (linear, yet one component), whatever k the kNN used."""
    known = np.flatnonzero(groups >= 0)
    order = known[np.argsort(groups[known], kind="stable")]
    group = groups[order]
    first = np.r_[True, group[1:] != group[:-1]] if len(order) else np.zeros(0, dtype=bool)
    leader = order[np.flatnonzero(first)[np.cumsum(first) - 1]]
    copy = ~first
    return leader[copy].astype(np.int64), order[copy].astype(np.int64)


def pairs_with_exact(
    src: np.ndarray, dst: np.ndarray, sim: np.ndarray, hashes=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """unique_pairs of the kNN edges plus every exact-copy pair (exact_pairs), with an
    ``exact`` flag; an exact pair's similarity is 1.0 exactly. ``hashes``: each row's
    content hash, or None when the rows have none (users' own features)."""
    if hashes is None:
        a, b, sim = unique_pairs(src, dst, sim)
        return a, b, sim, np.zeros(len(a), dtype=bool)
    groups = content_groups(hashes)
    extra_a, extra_b = exact_pairs(groups)
    a, b, sim = unique_pairs(
        np.concatenate([src, extra_a]),
        np.concatenate([dst, extra_b]),
        np.concatenate([sim, np.ones(len(extra_a), dtype=np.float32)]),
    )
    exact = (groups[a] >= 0) & (groups[a] == groups[b])
    sim[exact] = 1.0
    return a, b, sim, exact


def cross_table(
    from_names: list[str], to_names: list[str], src: np.ndarray, dst: np.ndarray, sim: np.ndarray
) -> pl.DataFrame:
    """``from,to,distance`` where from and to index two different name lists (test -> train).
    A row from an image to itself (a test image that is also a train image) is left out."""
    table = pl.DataFrame(
        {
            "from": pl.Series(from_names, dtype=pl.String).gather(src)
            if len(src)
            else pl.Series([], dtype=pl.String),
            "to": pl.Series(to_names, dtype=pl.String).gather(dst)
            if len(dst)
            else pl.Series([], dtype=pl.String),
            "distance": rules.csv_values(sim),
        }
    )
    return table.filter(pl.col("from") != pl.col("to"))


def similarity_table(
    filenames: list[str],
    a: np.ndarray,
    b: np.ndarray,
    sim: np.ndarray,
    threshold: float,
    to_names: list[str] | None = None,
    exact: np.ndarray | None = None,
) -> pl.DataFrame:
    """Pairs with similarity >= threshold, most similar first (``from,to,distance``, then
    ``exact`` when given: true for byte-identical files). ``to_names`` names ``b`` when it
    indexes another list (test -> train)."""
    keep = rules.at_least(sim, threshold)
    a, b, sim = a[keep], b[keep], sim[keep]
    order = np.lexsort((b, a, -sim))  # the rule book's order: similarity, then row ids
    table = cross_table(
        filenames, filenames if to_names is None else to_names, a[order], b[order], sim[order]
    )
    if exact is not None:
        table = table.with_columns(pl.Series("exact", exact[keep][order], dtype=pl.Boolean))
    return table


def outliers_table(
    filenames: list[str],
    src: np.ndarray,
    dst: np.ndarray,
    sim: np.ndarray,
    lower_threshold: float,
    to_names: list[str] | None = None,
) -> pl.DataFrame:
    """Images far from everything: those whose *nearest* neighbour is least similar, one
    row per image (``from`` the image, ``to`` that nearest neighbour), so an image with a
    close copy is never an outlier.

    How many rows follows the run guide: the ``lower_threshold`` fraction of the kNN edges
    computed (more neighbours k, more rows), at most one per image. Rows go from least to
    most outlying (similarity descending), as fastdup writes them.
    """
    sim = np.clip(sim, 0.0, 1.0)
    if to_names is None:
        mine = src != dst
        src, dst, sim = src[mine], dst[mine], sim[mine]
    # Each image's nearest neighbour: its most similar edge (ties to the lower id).
    order = np.lexsort((dst, -sim, src))
    src, dst, sim = src[order], dst[order], sim[order]
    first = np.ones(len(src), dtype=bool)
    first[1:] = src[1:] != src[:-1]
    src, dst, sim = src[first], dst[first], sim[first]
    count = rules.outlier_count(lower_threshold, len(order), len(src))
    lowest = np.lexsort((src, sim))[:count]
    src, dst, sim = src[lowest], dst[lowest], sim[lowest]
    order = np.lexsort((src, -sim))
    return cross_table(
        filenames, filenames if to_names is None else to_names, src[order], dst[order], sim[order]
    )


def component_tables(
    labels: np.ndarray, rank: np.ndarray, delta: np.ndarray, filenames: list[str] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(connected_components, component_info).

    connected_components: ``__id,component_id,pagerank,delta`` (then ``filename`` when
    given), one row per image by __id.
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
    if filenames is not None:
        components = components.with_columns(pl.Series("filename", filenames, dtype=pl.String))
    ids, counts = np.unique(labels, return_counts=True)
    order = np.lexsort((ids, -counts))
    info = pl.DataFrame(
        {"component_id": ids[order].astype(np.int64), "Count": counts[order].astype(np.int64)}
    )
    return components, info


def stats_table(stats: pl.DataFrame) -> pl.DataFrame:
    """stats.csv: ``__id`` (row of features.dat.csv) first, the statistics, then flags."""
    table = stats.with_row_index("__id").with_columns(pl.col("__id").cast(pl.Int64))
    longer = pl.max_horizontal("width", "height")
    shorter = pl.min_horizontal("width", "height").clip(lower_bound=1)
    return table.with_columns(
        (pl.col("mean") < DARK_MEAN).alias("is_dark"),
        (pl.col("mean") > BRIGHT_MEAN).alias("is_bright"),
        (pl.col("blur") < BLURRY_LAPLACIAN).alias("is_blurry"),
        (pl.col("unique_colors") < LOW_INFORMATION_COLORS).alias("is_low_information"),
        (longer / shorter > ODD_ASPECT).alias("is_odd_aspect_ratio"),
        (pl.col("color_spread") < GRAYSCALE_SPREAD).alias("is_grayscale"),
    )

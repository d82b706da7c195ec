"""The saved index that run modes 3 and 4 search: ``nnf.index`` (a faiss index), a
manifest of exact shards after a distributed Flat reduce, or the routed lists
(``nnf.routed/``: centroids and bucket members) after a routed one. Test vectors are
searched one index shard (or bucket of lists) at a time, ranked by the rule book."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from fastdup_ray.errors import InputError
from fastdup_ray.reduce.index import (
    build_index,
    empty_topk,
    merge_into,
    search_index_shard,
    topk_edges,
)
from fastdup_ray.reduce.knn_waves import ROUTED_INDEX_DIR, search_routed_index
from fastdup_ray.rundir.layout import INDEX_FILE, INDEX_MANIFEST
from fastdup_ray.rundir.shards import load_shards, read_marker
from fastdup_ray.rundir.workdir import WorkDir


def save_index(index, work: WorkDir, name: str = INDEX_FILE) -> None:
    """An index beside the features, for later runs to reuse (written to a local file
    first, never serialised in memory: an IVF index holds every vector)."""
    import uuid

    import faiss

    local = work.staging / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        faiss.write_index(index, str(local))
        work.put(local, name)
    finally:
        local.unlink(missing_ok=True)


def remove_saved_index(work: WorkDir) -> None:
    """Drop the index an earlier run saved (single or sharded) before saving this run's."""
    for name in work.names():
        if name in (INDEX_FILE, INDEX_MANIFEST) or (
            name.startswith("nnf.shard-") and name.endswith(".index")
        ):
            work.remove(name)
    work.remove_tree(ROUTED_INDEX_DIR)


def write_index_manifest(work: WorkDir, spec: str, d: int, shards: list[dict]) -> None:
    """The sharded index: which file holds which rows of which feature shards."""
    manifest = {"spec": spec, "d": d, "ntotal": sum(s["rows"] for s in shards), "shards": shards}
    work.write_bytes(INDEX_MANIFEST, json.dumps(manifest, indent=1).encode())


def saved_index_shards(work: WorkDir, prefixes: list[str], rows: list[int]) -> list[dict]:
    """The run's saved index as shards ({file, first, rows, prefixes}); a single
    nnf.index is one shard over every feature shard; a shard with no file is searched
    exactly from its features (a distributed Flat reduce saves no copy of the vectors).
    Checked against the features."""
    n = sum(rows)
    if work.exists(ROUTED_INDEX_DIR):
        return []  # searched list by list (search_routed_index)
    if work.exists(INDEX_MANIFEST):
        manifest = json.loads(work.read_bytes(INDEX_MANIFEST))
        shards = manifest["shards"]
        if manifest["ntotal"] != n or [p for s in shards for p in s["prefixes"]] != [
            p for p, r in zip(prefixes, rows) if r
        ]:
            raise InputError(
                f"{work.path(INDEX_MANIFEST)} indexes {manifest['ntotal']} vectors "
                f"of other shards than work_dir's {n}; rerun run_mode 2"
            )
        return shards
    if not work.exists(INDEX_FILE):
        raise InputError(
            f"this run mode needs {work.path(INDEX_FILE)} "
            f"(or a distributed run's {ROUTED_INDEX_DIR}/ or {INDEX_MANIFEST}): "
            "run mode 0 or 2 on the train set first"
        )
    return [{"file": INDEX_FILE, "first": 0, "rows": n, "prefixes": list(prefixes)}]


def search_saved_index(
    work: WorkDir, prefixes: list[str], d: int, queries: np.ndarray, k: int, nprobe: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges (query row, train row, similarity) from each query to its k nearest vectors
    in the saved index, one index shard (or bucket of routed lists, each query meeting
    only the lists it probes) in memory at a time."""
    if work.exists(ROUTED_INDEX_DIR):
        return search_routed_index(work, queries, k, nprobe)
    return search_index_shards(index_shards(work, prefixes, d), queries, k)


def index_shards(work: WorkDir, prefixes: list[str], d: int) -> Iterator[tuple[Any, np.ndarray, int]]:
    """The saved index's shards (faiss index, its unit vectors, first global row), loaded
    one at a time as they are asked for, each checked against its feature shards. Not
    for a routed index (see search_routed_index)."""
    import faiss

    markers = [read_marker(work, p) or {} for p in prefixes]
    for shard in saved_index_shards(work, prefixes, [m.get("good", 0) for m in markers]):
        _, vectors = load_shards(work, shard["prefixes"], d, normalize=True)
        if shard["file"] is None:
            index = build_index(vectors, "Flat")
        else:
            with work.local_copies([shard["file"]]) as (local,):
                index = faiss.read_index(local)
        if index.ntotal != shard["rows"]:
            raise InputError(
                f"{work.path(shard['file'])} holds {index.ntotal} vectors, "
                f"not the {shard['rows']} of its feature shards; rerun run_mode 2"
            )
        yield index, vectors, shard["first"]


def search_index_shards(
    shards: Iterable[tuple[Any, np.ndarray, int]], queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges (query row, train row, similarity) from each query to its k nearest vectors
    over ``shards`` (index_shards' triples, streamed from disk or held in memory)."""
    best = empty_topk(len(queries), k)
    for index, vectors, first in shards:
        for block, sims, ids in search_index_shard(
            index, vectors, first, lambda: [(0, queries)], k, queries_in_index=False
        ):
            merge_into(best, block, sims, ids, k)
    src, dst, sim = topk_edges(*best)
    return src, dst, np.clip(sim, 0.0, 1.0)

"""Routing vectors to their nearest IVF lists: exact (faiss IndexFlatIP, one BLAS product
against every centroid, what reduce/lists.py's route does) against faiss HNSW over the
centroids, per list count, one thread, on synthetic clustered centroids; prints
microseconds per vector, HNSW's build time, and its recall of the exact nprobe lists and
of the home (nearest) list.

    python benchmarks/routing.py --d 256 --lists 1024,4096,16384 --nprobe 4
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, count: int, d: int, seeds: np.ndarray, spread: float) -> np.ndarray:
    return unit(seeds[rng.integers(0, len(seeds), count)] + spread * unit(rng.normal(size=(count, d))))


def timed_search(index, queries: np.ndarray, nprobe: int, rounds: int) -> tuple[float, np.ndarray]:
    spent = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        _, probes = index.search(queries, nprobe)
        spent += time.perf_counter() - start
    return spent / rounds, probes


def main() -> int:
    import faiss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--lists", default="1024,4096,16384")
    parser.add_argument("--nprobe", type=int, default=4)
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-search", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    for nlist in (int(x) for x in args.lists.split(",")):
        seeds = unit(rng.normal(size=(max(1, nlist // 4), args.d)))
        centroids = clustered(rng, nlist, args.d, seeds, 0.5)
        queries = clustered(rng, args.queries, args.d, centroids, 0.7)
        flat = faiss.IndexFlatIP(args.d)
        flat.add(centroids)
        hnsw = faiss.IndexHNSWFlat(args.d, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        start = time.perf_counter()
        hnsw.add(centroids)
        build = time.perf_counter() - start
        hnsw.hnsw.efSearch = args.ef_search
        exact_s, exact = timed_search(flat, queries, args.nprobe, args.rounds)
        hnsw_s, found = timed_search(hnsw, queries, args.nprobe, args.rounds)
        recall = float(np.mean((found[:, :, None] == exact[:, None, :]).any(-1)))
        home = float(np.mean(found[:, 0] == exact[:, 0]))
        print(
            f"{nlist} lists: exact {exact_s * 1e6 / args.queries:.1f} us/vector, "
            f"HNSW{args.hnsw_m} ef {args.ef_search} {hnsw_s * 1e6 / args.queries:.1f} us/vector "
            f"(built in {build:.1f}s), recall of the {args.nprobe} lists {recall:.4f}, home list {home:.4f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

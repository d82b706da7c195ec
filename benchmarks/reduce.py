"""Reduce benchmark: index + kNN + components + output files over synthetic features.

Writes N vectors of width d as extraction writes them (feature shards of --shard-rows
with completion markers), with planted near-duplicate groups (2-5 noisy copies of one
vector, cosine >= ~0.9) inside a clustered background (like real embeddings, which are
not spread uniformly), then times the reduce phase by phase and prints peak memory
(this process's maximum RSS), recall@k of the index against exact search on a sample of
queries, and the fraction of planted groups recovered exactly as components.

    python benchmarks/reduce.py --n 100000 --nnf-mode HNSW32
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from fastdup_ray import outputs
from fastdup_ray.features import FeatureShardWriter, list_shards, load_names, load_rows, load_shards, read_marker
from fastdup_ray.graph import connected_components, pagerank
from fastdup_ray.index import build_index, ivf_flat_lists, ivf_knn, knn_search, merge_topk, topk_edges
from fastdup_ray.workdir import WorkDir


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_dataset(work: Path, n: int, d: int, shard_rows: int, seed: int = 0) -> list[list[int]]:
    """Feature shards with planted groups; returns the groups as lists of global rows."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(max(1, n // 1000), d)))
    groups: list[list[int]] = []
    row = 0
    for shard in range((n + shard_rows - 1) // shard_rows):
        count = min(shard_rows, n - row)
        background = unit(centres[rng.integers(0, len(centres), count)] + 0.9 * unit(rng.normal(size=(count, d))))
        # Every 20th row starts a planted group of 2-5 copies (within the shard).
        i = 0
        while i < count - 5:
            if rng.random() < 0.05:
                size = int(rng.integers(2, 6))
                base = background[i]
                background[i:i + size] = unit(base + 0.012 * rng.normal(size=(size, d)))
                groups.append(list(range(row + i, row + i + size)))
                i += size
            i += 1
        with FeatureShardWriter(work, d, prefix=f"bench-{shard:05d}.") as writer:
            writer.add_good([f"synthetic/{row + j:09d}.jpg" for j in range(count)], background)
        row += count
    return groups


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=1280)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--shard-rows", type=int, default=10_000)
    parser.add_argument("--nnf-mode", default="HNSW32")
    parser.add_argument("--nprobe", type=int, default=2, help="lists each vector probes, for IVF<n>,Flat (searched blockwise)")
    parser.add_argument("--save-index", action="store_true", help="also build and serialise the faiss index run modes 3/4 reuse (timed and measured apart)")
    parser.add_argument("--ccthreshold", type=float, default=0.8)
    parser.add_argument("--queries", type=int, default=1000, help="sampled queries for recall@k against exact search")
    parser.add_argument("--out", type=Path, default=Path("/tmp/fastdup-ray-reduce"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    start = time.perf_counter()
    groups = write_dataset(args.out, args.n, args.d, args.shard_rows)
    feature_bytes = args.n * args.d * 4
    print(f"{args.n} vectors, d={args.d}, {len(groups)} planted groups, features {feature_bytes / 2**30:.2f} GiB in "
          f"{len(list_shards(WorkDir(str(args.out))))} shards (written in {time.perf_counter() - start:.1f}s)")

    times: dict[str, float] = {}

    def phase(name, fn):
        t = time.perf_counter()
        value = fn()
        times[name] = time.perf_counter() - t
        return value

    work = WorkDir(str(args.out))
    prefixes = list_shards(work)
    nlist = ivf_flat_lists(args.nnf_mode)
    if nlist:
        # The run's path for IVF<n>,Flat: shards streamed into list order, searched blockwise.
        @contextmanager
        def timed(name):
            t = time.perf_counter()
            yield
            times[name] = time.perf_counter() - t

        names = phase("load", lambda: load_names(work, prefixes))
        rows = [read_marker(work, p)["good"] for p in prefixes]
        sims, ids, listed, centroids = ivf_knn(lambda i: load_shards(work, [prefixes[i]], args.d)[1], rows, args.d, args.k, nlist, args.nprobe, phase=timed)
        blocks = lambda: (listed.members(lst) for lst in range(listed.nlist))  # noqa: E731
        index = listed.index
    else:
        names, stored = phase("load", lambda: load_shards(work, prefixes, args.d))
        blocks = lambda: [(np.arange(args.n), stored)]  # noqa: E731
        index = phase("index", lambda: build_index(stored, args.nnf_mode))
        sims, ids = phase("knn", lambda: knn_search(stored, args.k, index=index))
    src, dst, knn_sim = topk_edges(sims, ids)
    a, b, sim = phase("pairs", lambda: outputs.unique_pairs(src, dst, knn_sim))
    joined = sim >= args.ccthreshold
    labels = phase("components", lambda: connected_components(args.n, a[joined], b[joined]))
    rank, delta = phase("pagerank", lambda: pagerank(args.n, a[joined], b[joined], sim[joined]))

    def write_outputs():
        for table, name in (
            (outputs.similarity_table(names, a, b, sim, args.ccthreshold), "similarity.csv"),
            (outputs.outliers_table(names, src, dst, knn_sim, 0.05), "outliers.csv"),
            *zip(outputs.component_tables(labels, rank, delta), ("connected_components.csv", "component_info.csv")),
        ):
            work.write_bytes(name, table.write_csv().encode())

    phase("outputs", write_outputs)
    total = sum(times.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if args.save_index:
        import faiss

        saved = args.out / "nnf.index"
        phase("save index", lambda: faiss.write_index(index, str(saved)))
        peak_saved = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    rng = np.random.default_rng(1)
    sample = rng.choice(args.n, size=min(args.queries, args.n), replace=False)
    queries = load_rows(work, prefixes, sample, args.d)
    truth_sims = np.full((len(sample), args.k), -np.inf, dtype=np.float32)
    truth = np.full((len(sample), args.k), -1, dtype=np.int64)
    for block_ids, vectors in blocks():  # exact search, block by block
        scores = queries @ vectors.T
        scores[block_ids[None, :] == sample[:, None]] = -np.inf
        top = np.argsort(-scores, axis=1)[:, : args.k]
        truth_sims, truth = merge_topk([(truth_sims, truth), (np.take_along_axis(scores, top, axis=1), block_ids[top])], args.k)
    recall = np.mean([len(set(truth[i]) & set(ids[q])) / args.k for i, q in enumerate(sample)])
    recovered = 0
    for group in groups:
        label = labels[group[0]]
        recovered += bool((labels[group] == label).all() and (labels == label).sum() == len(group))

    print("phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in times.items()) + f"; total {total:.1f}s (index {args.nnf_mode}, k={args.k})")
    print(f"peak memory {peak / 2**30:.2f} GiB = {peak / feature_bytes:.2f}x the feature files")
    if args.save_index:
        print(f"saving the index: {times['save index']:.1f}s, {saved.stat().st_size / 2**30:.2f} GiB; peak memory with it {peak_saved / 2**30:.2f} GiB = {peak_saved / feature_bytes:.2f}x")
    print(f"recall@{args.k} vs exact ({len(sample)} queries): {recall:.4f}")
    print(f"planted groups recovered as components (ccthreshold {args.ccthreshold}): {recovered}/{len(groups)} = {recovered / max(1, len(groups)):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Reduce benchmark: the product's reduce (index + kNN + components + output files) over synthetic features.

Writes N vectors of width d as extraction writes them (feature shards of --shard-rows
with completion markers), with planted near-duplicate groups (2-5 noisy copies of one
vector, cosine >= ~0.9) inside a clustered background (like real embeddings, which are
not spread uniformly), then runs the product's in-memory reduce on them
(``fastdup_ray.run`` with run_mode=2, reduce_strategy='memory') and prints its seconds
per stage (RunSummary.seconds), peak memory (this process's maximum RSS), recall@k of
the run's kNN against exact search on a sample of queries (the saved nnf.index searched
as the run searched it), and the fraction of planted groups recovered exactly as
components (connected_components.csv).

    python benchmarks/reduce.py --n 100000 --nnf-mode HNSW32

With ``--scaling`` it runs the product's distributed reduce (``fastdup_ray.run`` with
run_mode=2, reduce_strategy='distributed') at each size of ``--sizes`` in a driver
process of its own, on the engine of ``--executor``, and prints per size: seconds per
phase, the driver's peak RSS, the largest worker's peak RSS (sampled from /proc),
recall@k of the edges against exact search on a query sample, and the planted groups
found as components:

    python benchmarks/reduce.py --scaling --d 256 --sizes 1000000,2000000,4000000 --shard-rows 100000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

import fastdup_ray
from fastdup_ray.reduce.index import merge_topk, search_topk
from fastdup_ray.reduce.lists import ivf_flat_lists
from fastdup_ray.rundir import layout, results
from fastdup_ray.rundir.shards import (
    FeatureShardWriter,
    list_shards,
    load_rows,
    load_shards,
)
from fastdup_ray.rundir.summary import RunSummary
from fastdup_ray.rundir.workdir import WorkDir


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
        background = unit(
            centres[rng.integers(0, len(centres), count)] + 0.9 * unit(rng.normal(size=(count, d)))
        )
        # Every 20th row starts a planted group of 2-5 copies (within the shard).
        i = 0
        while i < count - 5:
            if rng.random() < 0.05:
                size = int(rng.integers(2, 6))
                base = background[i]
                background[i : i + size] = unit(base + 0.012 * rng.normal(size=(size, d)))
                groups.append(list(range(row + i, row + i + size)))
                i += size
            i += 1
        with FeatureShardWriter(work, d, prefix=f"bench-{shard:05d}.") as writer:
            writer.add_good([f"synthetic/{row + j:09d}.jpg" for j in range(count)], background)
        row += count
    return groups


DRIVER = """
import json, sys
import fastdup_ray
work, nlist, k, nprobe, ccthreshold, executor, rows_per_partition = sys.argv[1:]
summary = fastdup_ray.run(
    "unused", work, run_mode=2, k=int(k), nnf_mode=f"IVF{nlist},Flat", nprobe=int(nprobe),
    threshold=float(ccthreshold), ccthreshold=float(ccthreshold), reduce_strategy="distributed",
    executor=executor, rows_per_partition=int(rows_per_partition),
)
# VmHWM, not ru_maxrss: the latter keeps the peak of the benchmark process this one was
# forked from (it survives exec), VmHWM belongs to this process's own memory.
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("RESULT " + json.dumps({"seconds": summary.seconds, "driver_rss": peak * 1024}))
"""


class WorkerMemory:
    """The largest resident set of any engine worker seen while running (Ray workers
    are named 'ray::...'; the local engine's are this benchmark's grandchildren)."""

    def __init__(self, driver_pid_file: Path | None = None) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                    if not (cmdline.startswith(b"ray::") or b"multiprocessing.spawn" in cmdline):
                        continue
                    for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            self.peak = max(self.peak, int(line.split()[1]) * 1024)
                except OSError:
                    continue

    def __enter__(self) -> "WorkerMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def exact_neighbours(
    work: WorkDir, prefixes: list[str], queries_ids: np.ndarray, d: int, k: int
) -> np.ndarray:
    """The exact k nearest rows of the sampled rows (faiss over one shard at a time): the
    benchmark's yardstick, apart from the product's search."""
    import faiss

    queries = load_rows(work, prefixes, queries_ids, d)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    best = (
        np.full((len(queries_ids), k), -np.inf, dtype=np.float32),
        np.full((len(queries_ids), k), -1, dtype=np.int64),
    )
    first = 0
    for prefix in prefixes:
        _, vectors = load_shards(work, [prefix], d, normalize=True)
        index = faiss.IndexFlatIP(d)
        index.add(vectors)
        sims, ids = index.search(queries, k + 1)
        ids = np.where(ids >= 0, ids + first, -1)
        sims = np.where(ids == queries_ids[:, None], -np.inf, sims)
        best = merge_topk([best, (sims, ids)], k)
        first += len(vectors)
    return best[1]


def recall_at_k(found: dict[int, set[int]], truth: np.ndarray, sample: np.ndarray, k: int) -> float:
    """Mean share of each sampled row's exact k nearest rows that the run found."""
    return float(
        np.mean([len(found.get(int(q), set()) & set(truth[i].tolist())) / k for i, q in enumerate(sample)])
    )


def groups_recovered(work: WorkDir, groups: list[list[int]]) -> int:
    """Planted groups that are exactly one component of the run's connected_components
    (its CSV or its Parquet parts)."""
    members = results.read_table(work, layout.CONNECTED_COMPONENTS_FILE, ("__id", "component_id"))
    labels = members.sort("__id")["component_id"].to_numpy()
    sizes = np.bincount(labels, minlength=len(labels))
    return sum(bool((labels[g] == labels[g[0]]).all() and sizes[labels[g[0]]] == len(g)) for g in groups)


def scaling(args) -> int:
    """The distributed reduce at each size, each in a fresh driver process."""
    import polars as pl

    print(
        f"distributed reduce on the {args.executor} engine, d={args.d}, k={args.k}, nprobe={args.nprobe}, "
        f"lists of ~1000 vectors, shards of {args.shard_rows}, partitions of {args.rows_per_partition} rows"
    )
    rows = []
    for n in args.sizes:
        shutil.rmtree(args.out, ignore_errors=True)
        args.out.mkdir(parents=True)
        groups = write_dataset(args.out, n, args.d, args.shard_rows)
        started = time.perf_counter()
        with WorkerMemory() as workers:
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    DRIVER,
                    str(args.out),
                    str(max(1, n // 1000)),
                    str(args.k),
                    str(args.nprobe),
                    str(args.ccthreshold),
                    args.executor,
                    str(args.rows_per_partition),
                ],
                capture_output=True,
                text=True,
                env={**os.environ, "RAY_ADDRESS": ""},
            )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stderr[-3000:])
            return 1
        result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
        work = WorkDir(str(args.out))
        sample = np.sort(np.random.default_rng(1).choice(n, size=min(args.queries, n), replace=False))
        truth = exact_neighbours(work, list_shards(work), sample, args.d, args.k)
        edges = (
            pl.scan_parquet(str(args.out / layout.EDGES_DIR / "*.parquet"))
            .filter(pl.col("src").is_in(sample.tolist()))
            .collect()
        )
        found = {src: set(group["dst"].to_list()) for (src,), group in edges.group_by("src")}
        recall = recall_at_k(found, truth, sample, args.k)
        recovered = groups_recovered(work, groups)
        seconds = result["seconds"]
        rows.append((n, wall, result["driver_rss"], workers.peak, recall, recovered, len(groups)))
        print(
            f"{n:>9,} vectors: {wall:.0f}s wall ({', '.join(f'{k} {v:.0f}s' for k, v in seconds.items())}); "
            f"driver peak RSS {result['driver_rss'] / 2**20:.0f} MiB, "
            f"largest worker {workers.peak / 2**20:.0f} MiB; "
            f"recall@{args.k} {recall:.4f} ({len(sample)} queries); "
            f"planted groups found as components {recovered}/{len(groups)}",
            flush=True,
        )
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(
            f"{last[0] / first[0]:.0f}x the vectors: {last[1] / first[1]:.2f}x the time, "
            f"driver RSS {last[2] / first[2]:.2f}x"
        )
    shutil.rmtree(args.out, ignore_errors=True)
    return 0


def run_reduce(args) -> RunSummary:
    """The product's in-memory reduce over the shards in args.out, as a user runs it."""
    return fastdup_ray.run(
        "unused",
        str(args.out),
        run_mode=2,
        k=args.k,
        nnf_mode=args.nnf_mode,
        nprobe=args.nprobe,
        threshold=args.ccthreshold,  # similarity.csv at the components' cut, as before
        ccthreshold=args.ccthreshold,
        reduce_strategy="memory",
    )


def run_neighbours(work: WorkDir, args, sample: np.ndarray) -> dict[int, set[int]]:
    """The kNN the run found for the sampled rows: its saved nnf.index searched as the run
    searched it (reduce.index.search_topk, the IVF lists at the run's nprobe)."""
    import faiss

    with work.local_copies([layout.INDEX_FILE]) as (path,):
        index = faiss.read_index(path)
    if ivf_flat_lists(args.nnf_mode):
        faiss.extract_index_ivf(index).nprobe = args.nprobe
    _, vectors = load_shards(work, list_shards(work), args.d, normalize=True)
    _, ids = search_topk(index, vectors, vectors[sample], sample, args.k)
    return {int(q): set(row[row >= 0].tolist()) for q, row in zip(sample, ids)}


def in_memory(args) -> int:
    """Write the dataset, time the product's reduce over it, then measure what it found."""
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    start = time.perf_counter()
    groups = write_dataset(args.out, args.n, args.d, args.shard_rows)
    feature_bytes = args.n * args.d * 4
    work = WorkDir(str(args.out))
    print(
        f"{args.n} vectors, d={args.d}, {len(groups)} planted groups, "
        f"features {feature_bytes / 2**30:.2f} GiB in {len(list_shards(work))} shards "
        f"(written in {time.perf_counter() - start:.1f}s)"
    )
    times = run_reduce(args).seconds
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sample = np.random.default_rng(1).choice(args.n, size=min(args.queries, args.n), replace=False)
    truth = exact_neighbours(work, list_shards(work), sample, args.d, args.k)
    recall = recall_at_k(run_neighbours(work, args, sample), truth, sample, args.k)
    recovered = groups_recovered(work, groups)
    print(
        "phases: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in times.items())
        + f"; total {sum(times.values()):.1f}s (index {args.nnf_mode}, k={args.k})"
    )
    print(f"peak memory {peak / 2**30:.2f} GiB = {peak / feature_bytes:.2f}x the feature files")
    saved = work.size(layout.INDEX_FILE) / 2**30
    timing = f"{times['save_index']:.1f}s" if "save_index" in times else "in the index phase"
    print(f"saving the index (nnf.index, always saved by the run): {timing}, {saved:.2f} GiB")
    print(f"recall@{args.k} vs exact ({len(sample)} queries): {recall:.4f}")
    print(
        f"planted groups recovered as components (ccthreshold {args.ccthreshold}): "
        f"{recovered}/{len(groups)} = {recovered / max(1, len(groups)):.4f}"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=1280)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--shard-rows", type=int, default=10_000)
    parser.add_argument("--nnf-mode", default="HNSW32")
    parser.add_argument(
        "--nprobe", type=int, default=2, help="lists each vector probes, for IVF<n>,Flat (searched blockwise)"
    )
    parser.add_argument(
        "--save-index",
        action="store_true",
        help="no effect: the run always saves nnf.index now, and its size and time are always printed",
    )
    parser.add_argument("--ccthreshold", type=float, default=0.8)
    parser.add_argument(
        "--queries", type=int, default=1000, help="sampled queries for recall@k against exact search"
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/fastdup-ray-reduce"))
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="the product's distributed reduce at each of --sizes (see above)",
    )
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[1_000_000, 2_000_000, 4_000_000],
    )
    parser.add_argument("--executor", default="ray", choices=["ray", "local"])
    parser.add_argument("--rows-per-partition", type=int, default=250_000)
    args = parser.parse_args()
    return scaling(args) if args.scaling else in_memory(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""The in-memory reduce of two checkouts of fastdup_ray, alternating, on the same synthetic vectors.

Writes the vectors once (benchmarks/reduce.py's planted groups in a clustered background),
then each round runs the product's reduce (``fastdup_ray.run`` with run_mode=2,
reduce_strategy='memory') once per checkout, in a fresh process with PYTHONPATH set to it,
every other round in reverse order so the drift of a shared machine cancels. Prints each
run's wall seconds and stage seconds, the medians and the ratio to the first checkout, and
whether the tables (similarity, outliers, components) are identical between checkouts.

    python benchmarks/reduce_ab.py --old /work/base --new . --n 1000000 --nnf-mode IVF1024,Flat
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from reduce import write_dataset

TABLES = ("similarity.csv", "outliers.csv", "connected_components.csv", "component_info.csv")
# One reduce in the child process: the product's own entry point, its stage seconds as JSON.
CHILD = """
import json, sys
import fastdup_ray
cut = float(sys.argv[5])
summary = fastdup_ray.run("unused", sys.argv[1], run_mode=2, k=int(sys.argv[2]), nnf_mode=sys.argv[3],
                          nprobe=int(sys.argv[4]), threshold=cut, ccthreshold=cut, reduce_strategy="memory")
print(json.dumps(summary.seconds))
"""


def reduce_once(checkout: Path, work: Path, args) -> dict:
    """Wall and stage seconds of one reduce by ``checkout``, and a digest of its tables."""
    env = dict(os.environ, PYTHONPATH=str(checkout.resolve()), RAY_ADDRESS="")
    command = [sys.executable, "-c", CHILD, str(work), str(args.k), args.nnf_mode, str(args.nprobe)]
    start = time.perf_counter()
    done = subprocess.run(command + [str(args.ccthreshold)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: reduce failed\n{done.stderr[-3000:]}")
    digest = hashlib.sha256()
    for name in TABLES:
        digest.update((work / name).read_bytes())
    stages = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall": wall, "stages": stages, "tables": digest.hexdigest()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="the checkout to compare against")
    parser.add_argument("--new", type=Path, default=Path("."))
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=320)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--shard-rows", type=int, default=50_000)
    parser.add_argument("--nnf-mode", default="IVF200,Flat")
    parser.add_argument("--nprobe", type=int, default=2)
    parser.add_argument("--ccthreshold", type=float, default=0.8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/fastdup-ray-reduce-ab"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.iterdir():
        if stale.is_file():
            stale.unlink()
    write_dataset(args.out, args.n, args.d, args.shard_rows)
    checkouts = {"old": args.old, "new": args.new}
    runs: dict[str, list[dict]] = {name: [] for name in checkouts}
    for round_no in range(args.rounds):
        order = list(checkouts) if round_no % 2 == 0 else list(checkouts)[::-1]
        for name in order:
            run = reduce_once(checkouts[name], args.out, args)
            runs[name].append(run)
            stages = ", ".join(f"{k} {v:.2f}s" for k, v in run["stages"].items())
            print(f"round {round_no + 1} {name}: wall {run['wall']:.2f}s ({stages})", flush=True)
    medians = {name: float(np.median([r["wall"] for r in rs])) for name, rs in runs.items()}
    knn = {name: float(np.median([r["stages"].get("knn", 0.0) for r in rs])) for name, rs in runs.items()}
    print(
        f"median wall: old {medians['old']:.2f}s, new {medians['new']:.2f}s "
        f"({medians['new'] / medians['old']:.2f}x); knn old {knn['old']:.2f}s, new {knn['new']:.2f}s"
    )
    same = len({r["tables"] for rs in runs.values() for r in rs}) == 1
    print(f"tables identical across checkouts and rounds: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())

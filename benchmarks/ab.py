"""Extraction throughput of two or more checkouts of fastdup_ray, alternating, same machine, same moment.

Each round runs ``python -m fastdup_ray run`` once per checkout (PYTHONPATH set to it), in a
fresh process on the same folder of JPEGs, and prints end-to-end and extraction img/s and
the CPU milliseconds of all its processes per image (what contention moves least); then
the medians and each checkout's ratio to the first. Alternating rounds (every other one in
reverse order) cancel the drift of a shared machine that single figures suffer from.

    python benchmarks/ab.py --checkout old=/work/base --checkout new=. [--count 2000]
        [--rounds 3] [--executors local,ray] [-- --run-mode 1]
"""

from __future__ import annotations

import argparse
import os
import resource
from pathlib import Path

import numpy as np
from photoset import DEFAULT_PHOTOS
from throughput import end_to_end

from fastdup_ray.photoset import build_volume_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", action="append", required=True, help="NAME=PATH of a checkout")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--out", type=Path, default=Path("/tmp/fastdup-ray-ab"))
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--executors",
        default="",
        help="comma list (e.g. local,ray): run each checkout on each executor, as cases NAME/EXECUTOR",
    )
    parser.add_argument("run_args", nargs="*", help="extra arguments for fastdup-ray run (after --)")
    args = parser.parse_args()
    cases = cases_of(dict(item.split("=", 1) for item in args.checkout), args.executors, args.run_args)
    folder = args.out / f"images-{args.count}"
    paths = build_volume_set(args.photos, folder, args.count)
    print(f"{len(paths)} JPEGs in {folder}; run args {args.run_args}")
    rates: dict[str, list[tuple[float, float, float]]] = {name: [] for name in cases}
    for round_number in range(args.rounds):
        # Every other round in the reverse order: neither checkout always runs right after the other.
        order = list(cases.items())
        for name, (path, run_args) in order if round_number % 2 == 0 else order[::-1]:
            env = dict(os.environ, PYTHONPATH=os.path.abspath(path))
            before = cpu_seconds_of_children()
            measured = end_to_end(folder, args.out / "work", run_args, env=env)
            cpu_ms = (cpu_seconds_of_children() - before) * 1000 / measured["good"]
            rate = (
                measured["good"] / measured["wall"],
                measured["good"] / measured["stages"]["extract"],
                cpu_ms,
            )
            rates[name].append(rate)
            print(
                f"round {round_number + 1} {name}: end to end {rate[0]:.1f}, extraction {rate[1]:.1f} img/s, "
                f"{cpu_ms:.2f} CPU ms an image"
            )
    first = next(iter(cases))
    base = np.median(rates[first], axis=0)
    for name, measured in rates.items():
        median = np.median(measured, axis=0)
        print(
            f"median {name}: end to end {median[0]:.1f} img/s, extraction {median[1]:.1f} img/s, "
            f"{median[2]:.2f} CPU ms an image; ratio to {first}: {median[0] / base[0]:.3f}, "
            f"{median[1] / base[1]:.3f}, CPU per image {median[2] / base[2]:.3f}"
        )


def cases_of(checkouts: dict[str, str], executors: str, run_args: list[str]) -> dict:
    """NAME -> (checkout path, run arguments); with executors, NAME/EXECUTOR for each."""
    if not executors:
        return {name: (path, run_args) for name, path in checkouts.items()}
    return {
        f"{name}/{executor}": (path, ["--executor", executor, *run_args])
        for name, path in checkouts.items()
        for executor in executors.split(",")
    }


def cpu_seconds_of_children() -> float:
    """User + system seconds of every finished child process (and theirs): on a shared
    machine this moves far less than wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()

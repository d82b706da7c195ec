"""Throughput: images/s end to end and per stage, on a folder of real-photo JPEGs.

Builds (once) a folder of ``--count`` JPEGs from a folder of photos, most of them
edited copies, then measures on this machine:

- where an image's CPU time goes, on one core, for each shipped model at its input size:
  decode + resize, thumbnail, statistics, model (batches of 64, one ONNX Runtime thread);
- end to end: ``python -m fastdup_ray run`` in a fresh process (process start-up, and Ray's
  with ``--executors ray``, included), with the seconds of each stage the run reports,
  how much of the cores' time extraction spent outside decode, statistics and model, and
  the CPU seconds of each kind of process (driver, workers, Ray's own) and unused;
- with ``--vs-fastdup``: fastdup 2.54 on the same folder, alternating with fastdup_ray,
  and the ratio; and both tools' accuracy on the same run's features: average precision,
  best F1 and recall at precision >= 0.95 over all pairs of the images made from
  report-half photos (photoset.split_halves; the images made from one photo are a
  group). fastdup is installed by this script into its own virtual environment from the
  registry; its licence is non-commercial, so it is only ever a benchmark peer here,
  never a dependency.

- with ``--compare-model PATH``: another ONNX model (an earlier default, a candidate)
  beside the shipped int8 one: its per-image costs, and end to end in each round right
  after the shipped model's run, with the img/s ratio of the two (same machine, same
  moment, so the ratio holds on a shared machine where single figures drift).

- with ``ray-job`` among ``--executors``: the run as ``ray job submit`` users make it, sent
  to a one-node cluster of this machine's cores started with ``ray start --head`` for that
  round (its start and a first job that uploads the package are not timed; the timed span
  is from ``ray job submit`` to the job's end), so Ray's own start-up is the cluster's, as
  on a real one, and the cluster is not running while the other executors are timed.

- with ``--scaling 1,2,4,8,16``: for each worker count, img/s of each engine end to end
  (``--num-threads N``) beside the ceiling at that count: decode + resize alone and the
  model alone, each in N processes.

    python benchmarks/throughput.py [--count 10000] [--repeats 2] [--vs-fastdup]
        [--executors auto,ray,ray-job] [--scaling 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
from photoset import DEFAULT_PHOTOS, build_volume_set, list_photos

from fastdup_ray.actions.evaluate import PairMetrics, pair_metrics, same_group_pairs
from fastdup_ray.engine import available_cpus
from fastdup_ray.map.decode import decode_with_thumbnail, image_stats, open_rgb
from fastdup_ray.map.embed import Embedder, default_model_path
from fastdup_ray.photoset import split_halves, volume_source
from fastdup_ray.rundir.shards import load_binary_features

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # /proc's CPU times are in these
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the loopback cluster the tests and rehearsal use
from loopback import LoopbackCluster  # noqa: E402


def per_image_costs(
    paths: list[Path], model: Embedder, thumbnail_size: int = 128, batch: int = 64, rounds: int = 3
) -> dict[str, float]:
    """Milliseconds of one core per image for each step of extraction, at the model's size.
    Resize and thumbnail are differences of decode passes, so each pass is the fastest of
    ``rounds`` alternating ones: on a shared machine one slow pass would make a difference
    meaningless (a single pass each once gave resize -1.07 ms)."""
    blobs = [p.read_bytes() for p in paths]
    size = model.image_size

    def timed(step) -> tuple[float, list]:
        start = time.perf_counter()
        out = [step(blob) for blob in blobs]
        return (time.perf_counter() - start) * 1000 / len(blobs), out

    passes = {
        "decoded": lambda blob: decode_with_thumbnail(blob, size, 0),
        "with thumbnail": lambda blob: decode_with_thumbnail(blob, size, thumbnail_size),
        "opened": lambda blob: open_rgb(blob, size),
    }
    fastest = dict.fromkeys(passes, float("inf"))
    for _ in range(rounds):
        for name, step in passes.items():
            ms, out = timed(step)
            fastest[name] = min(fastest[name], ms)
            if name == "decoded":
                decoded = out
    decode_ms, with_thumb_ms, open_ms = fastest["decoded"], fastest["with thumbnail"], fastest["opened"]
    start = time.perf_counter()
    for pixels, (width, height), _ in decoded:
        image_stats(pixels, width, height, 0)
    stats_ms = (time.perf_counter() - start) * 1000 / len(decoded)
    stacked = np.stack([pixels for pixels, _, _ in decoded])
    model.embed(stacked[:batch])  # warm-up
    start = time.perf_counter()
    for first in range(0, len(stacked), batch):
        model.embed(stacked[first : first + batch])
    model_ms = (time.perf_counter() - start) * 1000 / len(stacked)
    return {
        "decode": open_ms,
        "resize": decode_ms - open_ms,
        "thumbnail": with_thumb_ms - decode_ms,
        "stats": stats_ms,
        "model": model_ms,
    }


class ProcessSampler:
    """Peak resident memory and CPU seconds by role while a run goes, read from /proc:
    its driver, the local engine's worker processes, each kind of Ray worker (Ray titles
    them ``ray::<task or actor>``) and, for CPU, Ray's own processes (raylet, GCS,
    dashboard, log monitor). CPU is counted from the sampler's start, so a cluster that was
    already up is charged only for this run."""

    def __init__(self, driver_pid: int | None) -> None:
        self.driver_pid = driver_pid  # None: the driver is a Ray job's ``fastdup_ray run``
        self.peaks: dict[str, int] = {}
        self.cpu_at_start: dict[int, float] = {}
        self.cpu_last: dict[int, tuple[str, float]] = {}
        self.stop = threading.Event()
        self._sample(at_start=True)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(0.2):
            self._sample()

    def role(self, pid: int, argv: list[bytes]) -> str | None:
        title = argv[0].decode(errors="replace")
        # A job's driver is `python -m fastdup_ray run ...`; the `ray job submit` CLI
        # names the same command after its own script, so argv[1:4] tells them apart.
        job_driver = self.driver_pid is None and argv[1:4] == [b"-m", b"fastdup_ray", b"run"]
        if pid == self.driver_pid or job_driver:
            return "driver"
        if title.startswith("ray::"):
            return re.sub(r"\.\w+$", "", title.split(" ")[0])  # ray::Actor.method: the actor
        if any(b"multiprocessing.spawn" in arg for arg in argv):
            return "local worker"
        if any(b"/ray/" in arg for arg in argv):
            return "Ray's own processes"
        return None

    def _sample(self, at_start: bool = False) -> None:
        for folder in Path("/proc").glob("[0-9]*"):
            try:
                pid = int(folder.name)
                argv = (folder / "cmdline").read_bytes().split(b"\0")
                stat = (folder / "stat").read_text()
                rss = next(
                    int(line.split()[1]) * 1024
                    for line in (folder / "status").read_text().splitlines()
                    if line.startswith("VmRSS:")
                )
            except (OSError, StopIteration, ValueError):
                continue
            fields = stat[stat.rindex(")") + 2 :].split()  # utime and stime: fields 14 and 15
            cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            if at_start:
                self.cpu_at_start[pid] = cpu
            role = self.role(pid, argv)
            if role is None or role == "ray::IDLE":
                continue
            self.cpu_last[pid] = (role, cpu)
            if role != "Ray's own processes":
                self.peaks[role] = max(self.peaks.get(role, 0), rss)

    def finish(self) -> tuple[dict[str, int], dict[str, float]]:
        """Peak RSS and CPU seconds, by role."""
        self.stop.set()
        self.thread.join()
        cpu: dict[str, float] = {}
        for pid, (role, seconds) in self.cpu_last.items():
            cpu[role] = cpu.get(role, 0.0) + seconds - self.cpu_at_start.get(pid, 0.0)
        return self.peaks, cpu


def end_to_end(folder, work: Path, extra: list[str], env: dict | None = None, fresh: bool = True) -> dict:
    """``python -m fastdup_ray run`` in a fresh process: wall seconds, good images, stage
    seconds, and peak memory of the driver and of each kind of Ray worker."""
    if fresh:
        shutil.rmtree(work, ignore_errors=True)  # a fresh run, not a resume of the last one
    env = dict(env or os.environ, RAY_ADDRESS="")
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "fastdup_ray", "run", str(folder), "--work-dir", str(work), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    sampler = ProcessSampler(process.pid)
    stdout, stderr = process.communicate()
    memory, cpu = sampler.finish()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"run failed:\n{stderr[-3000:]}")
    return run_figures(stderr, wall, memory, cpu)


def run_figures(log: str, wall: float, memory: dict[str, int], cpu: dict[str, float]) -> dict:
    """What a run's log says (good images, the seconds of each stage) with what the
    sampler saw: peak memory and CPU seconds by role."""
    good = int(re.search(r"images: (\d+) good", log).group(1))
    stages = dict(re.findall(r"(\w+) ([\d.]+)s", re.search(r"time: (.*)", log).group(1)))
    return {
        "wall": wall,
        "good": good,
        "stages": {k: float(v) for k, v in stages.items()},
        "memory": memory,
        "cpu": cpu,
    }


def ray_job(folder: Path, work: Path, extra: list[str], cores: int) -> dict:
    """The run submitted with ``ray job submit`` to a one-node cluster started for it: wall
    seconds from the submit to the job's end (the CLI's start, the working dir's upload
    check, the job's driver joining the cluster and its actors starting included)."""
    shutil.rmtree(work, ignore_errors=True)
    cluster = LoopbackCluster(head_cpus=cores, worker_cpus=0)
    try:
        # The first job of a cluster uploads the package and builds the runtime env: once
        # per cluster, not per job, so it is not counted.
        cluster.submit(["python", "-c", "import fastdup_ray"], {}, str(REPO))
        command = ["python", "-m", "fastdup_ray", "run", str(folder), "--work-dir", str(work), *extra]
        sampler = ProcessSampler(None)
        start = time.perf_counter()
        done = cluster.submit(command, {}, str(REPO))
        wall = time.perf_counter() - start
        memory, cpu = sampler.finish()
    finally:
        cluster.stop()
    if done.returncode != 0:
        raise SystemExit(f"ray job failed:\n{done.stderr[-1500:]}\n{done.stdout[-3000:]}")
    return run_figures(done.stdout, wall, memory, cpu)


def timed_run(executor: str, folder: Path, work: Path, extra: list[str], cores: int) -> dict:
    """One end-to-end run with ``executor`` (auto, local, ray, or ray-job: see above)."""
    if executor == "ray-job":
        return ray_job(folder, work, ["--executor", "ray", *extra], cores)
    return end_to_end(folder, work, ["--executor", executor, *extra])


def compared_args(model_path: str) -> list[str]:
    """fastdup-ray run options for another ONNX model: its path and its feature width."""
    return ["--model-path", model_path, "--d", str(Embedder(model_path).output_width())]


def cpu_line(cpu: dict[str, float], wall: float, cores: int) -> str:
    """CPU seconds by role, and the cores' time none of them used (start-up waits,
    stragglers; this script's sampling and any other process count there too)."""
    roles = ", ".join(f"{role} {seconds:.1f}" for role, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]))
    unused = max(0.0, wall * cores - sum(cpu.values()))
    return f"{roles}; idle or other processes {unused:.1f} of {wall * cores:.1f} core-s"


def memory_line(memory: dict[str, int]) -> str:
    return ", ".join(
        f"{role} {rss / 2**20:.0f} MiB" for role, rss in sorted(memory.items(), key=lambda kv: -kv[1])
    )


FASTDUP_SCRIPT = """
import sys, time
import fastdup
start = time.perf_counter()
fastdup.run(input_dir=sys.argv[1], work_dir=sys.argv[2], verbose=False)
print("seconds", time.perf_counter() - start)
"""


def fastdup_python(out: Path) -> Path:
    """A virtual environment with fastdup 2.54 (made once, beside the benchmark data)."""
    venv = out / "fastdup-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "fastdup==2.54"], check=True)
    return python


def fastdup_run(python: Path, folder: Path, work: Path, count: int) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    start = time.perf_counter()
    result = subprocess.run(
        [str(python), "-c", FASTDUP_SCRIPT, str(folder), str(work)],
        capture_output=True,
        text=True,
        env=dict(os.environ, SENTRY_OPT_OUT="1"),
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"fastdup failed:\n{result.stderr[-3000:]}")
    return {"wall": wall, "good": count}


def fastdup_features(work: Path) -> tuple[list[str], np.ndarray]:
    """fastdup's own features of a run: its names in row order and its vectors (its
    model's width), L2-normalised for the cosine it scores with."""
    names = pl.read_csv(work / "atrain_features.dat.csv")["filename"].to_list()
    vectors = np.fromfile(work / "atrain_features.dat", dtype="<f4").reshape(len(names), -1)
    return names, vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def all_pairs(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (a < b) of unit vectors and its cosine similarity."""
    a, b = np.triu_indices(len(features), k=1)
    return a, b, (features @ features.T)[a, b]


def report_half_accuracy(photos: Path, names: list[str], vectors: np.ndarray) -> tuple[int, int, PairMetrics]:
    """(images, true pairs, pair metrics over all their pairs) for the images of this set
    made from report-half photos (split_halves: no default was tuned on them), the images
    made from one photo being one group: what a run's unit features are worth on it (ours
    are unit by the embedder, fastdup's by fastdup_features)."""
    listed = list_photos(photos)
    half = split_halves(listed)
    groups = np.array([volume_source(name, len(listed)) for name in names])
    keep = np.array([half[listed[g]] == "report" for g in groups])
    vectors, groups = vectors[keep], groups[keep]
    a, b, sim = all_pairs(vectors)
    true_pairs = same_group_pairs(groups)
    return len(vectors), true_pairs, pair_metrics(sim, groups[a] == groups[b], true_pairs)


def _decode_share(paths: list[str], size: int) -> float:
    start = time.perf_counter()
    for path in paths:
        decode_with_thumbnail(Path(path).read_bytes(), size, 0)
    return time.perf_counter() - start


def _model_share(count: int, size: int) -> float:
    model = Embedder(default_model_path("int8"))
    pixels = np.random.default_rng(0).integers(0, 255, (64, size, size, 3), dtype=np.uint8)
    model.embed(pixels[:16])  # warm-up
    start = time.perf_counter()
    for _ in range(0, count, 64):
        model.embed(pixels)
    return time.perf_counter() - start


def ceiling(kind: str, workers: int, paths: list[Path], size: int) -> float:
    """img/s of decode + resize alone, or of the int8 model alone, in ``workers`` processes
    sharing the images: what extraction could reach if nothing else cost anything."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    shares = [[str(p) for p in paths[i::workers]] for i in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(_model_share, [16] * workers, [size] * workers))  # start the workers first
        if kind == "decode":
            seconds = list(pool.map(_decode_share, shares, [size] * workers))
        else:
            seconds = list(pool.map(_model_share, [len(s) for s in shares], [size] * workers))
    return sum(len(s) for s in shares) / max(seconds)


def scaling(
    folder: Path, paths: list[Path], out: Path, counts: list[int], executors: list[str], extra: list[str]
) -> None:
    """One table: per worker count, each engine end to end and the two ceilings."""
    size = Embedder(default_model_path("int8")).image_size
    print(f"scaling on {len(paths)} images ({size} px, int8 model); img/s")
    print(
        "| workers | " + " | ".join(f"{e} end to end" for e in executors) + " | decode alone | model alone |"
    )
    print("|---|" + "---|" * (len(executors) + 2))
    for count in counts:
        runs = [
            end_to_end(folder, out / "work-scaling", ["--executor", e, "--num-threads", str(count), *extra])
            for e in executors
        ]
        cells = [
            f"{r['good'] / r['wall']:.0f} (extract {r['good'] / r['stages']['extract']:.0f})" for r in runs
        ]
        print(
            f"| {count} | " + " | ".join(cells) + f" | {ceiling('decode', count, paths, size):.0f}"
            f" | {ceiling('model', count, paths, size):.0f} |",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--out", type=Path, default=Path("/tmp/fastdup-ray-throughput"))
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--vs-fastdup", action="store_true", help="also run fastdup 2.54 on the same folder, alternating"
    )
    parser.add_argument(
        "--executors",
        default="auto",
        help="comma list of fastdup-ray executors to time each round (auto, local, ray, ray-job)",
    )
    parser.add_argument(
        "--memory-sizes",
        default="",
        help="comma list of image counts (e.g. 2000,10000): one run each, peak memory per worker kind, "
        "to show it does not grow with the dataset",
    )
    parser.add_argument(
        "--scaling",
        default="",
        help="comma list of worker counts (e.g. 1,2,4,8,16): each engine end to end "
        "and the decode / model ceilings at each count",
    )
    parser.add_argument(
        "--compare-model",
        default=None,
        metavar="PATH",
        help="also time this ONNX model, alternating with the shipped int8 one",
    )
    parser.add_argument("run_args", nargs="*", help="extra arguments for fastdup-ray run (after --)")
    args = parser.parse_args()
    if not args.photos.is_dir():
        print(f"no photos at {args.photos}; pass --photos DIR", file=sys.stderr)
        return 2
    folder = args.out / f"images-{args.count}"
    paths = build_volume_set(args.photos, folder, args.count)
    cores = available_cpus()
    print(f"machine: {cores} cores; {len(paths)} JPEGs in {folder}")
    if args.scaling:
        scaling(
            folder,
            paths,
            args.out,
            [int(c) for c in args.scaling.split(",")],
            args.executors.split(","),
            args.run_args,
        )
        return 0

    costs = {}
    models = {precision: default_model_path(precision) for precision in ("fp32", "int8")}
    if args.compare_model:
        models["compared"] = args.compare_model
    for label, path in models.items():
        model = Embedder(path)
        costs[label] = per_image_costs(paths[:640], model)
        total = sum(costs[label].values())
        steps = ", ".join(f"{k} {v:.2f}" for k, v in costs[label].items())
        print(
            f"one core, {label} model ({Path(path).name}) at {model.image_size} px, "
            f"d={model.output_width()}: {steps} ms an image; "
            f"{total:.2f} ms = {1000 / total:.0f} img/s per core"
        )
    results = []
    compared = []
    peer = []
    python = fastdup_python(args.out) if args.vs_fastdup else None
    executors = args.executors.split(",")
    for repeat in range(args.repeats):
        if python:
            timed = fastdup_run(python, folder, args.out / "fastdup-work", len(paths))
            peer.append(timed)
            print(
                f"fastdup 2.54 #{repeat + 1}: {timed['good'] / timed['wall']:.0f} img/s "
                f"({timed['wall']:.1f}s wall, process start included)"
            )
        for executor in executors:
            measured = timed_run(executor, folder, args.out / "work", args.run_args, cores)
            measured["executor"] = executor
            results.append(measured)
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in measured["stages"].items())
            extract_s = measured["stages"]["extract"]
            startup = measured["wall"] - sum(measured["stages"].values())
            # The cores' time in extraction against what decode + stats + model need alone.
            busy = (
                measured["good"] * sum(costs["int8"].values()) / 1000 if not args.run_args else float("nan")
            )
            print(
                f"end to end #{repeat + 1} ({executor}): {measured['good'] / measured['wall']:.0f} img/s "
                f"({measured['good']} images in {measured['wall']:.1f}s wall: "
                f"process start {startup:.1f}s, stages {stages}); "
                f"extraction {measured['good'] / extract_s:.0f} img/s, "
                f"{busy / (extract_s * cores):.0%} of {cores} cores' time in decode + stats + model"
            )
            print(f"  peak memory: {memory_line(measured['memory'])}")
            print(f"  CPU seconds: {cpu_line(measured['cpu'], measured['wall'], cores)}")
            if args.compare_model:
                other = end_to_end(
                    folder,
                    args.out / "work",
                    ["--executor", executor, *compared_args(args.compare_model), *args.run_args],
                )
                other["executor"] = executor
                compared.append(other)
                print(
                    f"  compared model #{repeat + 1} ({executor}): "
                    f"{other['good'] / other['wall']:.0f} img/s, "
                    f"extraction {other['good'] / other['stages']['extract']:.0f} img/s; "
                    "shipped / compared end to end "
                    f"{measured['good'] / measured['wall'] / (other['good'] / other['wall']):.3f}, "
                    f"extraction {other['stages']['extract'] / extract_s:.3f}"
                )
    for count in [int(c) for c in args.memory_sizes.split(",") if c]:
        # Extraction (run_mode 1) and the reduce (run_mode 2) in separate processes, so
        # each one's peak is its own even when the local executor runs both in the driver.
        subset = build_volume_set(args.photos, args.out / f"images-{count}", count)
        for mode, stage in (("1", "extraction"), ("2", "reduce")):
            measured = end_to_end(
                args.out / f"images-{count}",
                args.out / "work-memory",
                ["--executor", executors[0], "--run-mode", mode, *args.run_args],
                fresh=mode == "1",
            )
            print(f"memory at {len(subset)} images, {stage}: {memory_line(measured['memory'])}")
    for executor in executors if compared else []:
        ours = np.median([r["good"] / r["wall"] for r in results if r["executor"] == executor])
        theirs = np.median([r["good"] / r["wall"] for r in compared if r["executor"] == executor])
        print(
            f"median end to end on {cores} cores ({executor}): shipped int8 {ours:.0f} img/s, "
            f"compared model {theirs:.0f} img/s, ratio {ours / theirs:.3f}"
        )
    best = max(results, key=lambda r: r["good"] / r["wall"])
    if peer:
        theirs = np.median([r["good"] / r["wall"] for r in peer])
        for executor in executors:
            ours = np.median([r["good"] / r["wall"] for r in results if r["executor"] == executor])
            print(
                f"median end to end on {cores} cores: fastdup_ray ({executor}) {ours:.0f} img/s, "
                f"fastdup {theirs:.0f} img/s, ratio {ours / theirs:.2f}x"
            )
        if not args.run_args:  # the shipped model, whichever engine ran last
            images, pairs, ours = report_half_accuracy(args.photos, *load_binary_features(args.out / "work"))
            _, _, theirs = report_half_accuracy(args.photos, *fastdup_features(args.out / "fastdup-work"))
            print(
                f"accuracy on the {images} images made from report-half photos ({pairs} true pairs), "
                f"all pairs: average precision fastdup_ray {ours.average_precision:.4f}, "
                f"fastdup {theirs.average_precision:.4f}; best F1 {ours.best_f1:.4f}, {theirs.best_f1:.4f}; "
                f"recall at precision >= 0.95 {ours.recall_at_precision:.4f}, "
                f"{theirs.recall_at_precision:.4f}"
            )
    print(
        json.dumps(
            {
                "cores": cores,
                "images": best["good"],
                "end_to_end_img_s": round(best["good"] / best["wall"], 1),
                "extract_img_s": round(best["good"] / best["stages"]["extract"], 1),
                "stages_s": best["stages"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

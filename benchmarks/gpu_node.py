"""One GPU node, end to end from local webdataset tars: images/s, GPU and CPU utilisation,
and which of them limits the run.

Writes ``--count`` photos into tars of ``--per-tar``: the photo folder's files cycled under
new names, each with a JPEG comment segment holding its number, so every file has distinct
bytes (the run decodes and embeds byte-identical files once, by content hash, and would
otherwise measure almost nothing) at the same decoding cost. Then it times
``python -m fastdup_ray run TARS --compute gpu`` in a fresh process (Ray start-up
included) while sampling ``nvidia-smi`` and /proc/stat every half second.

Needs the gpu extra (onnxruntime-gpu, faiss-gpu) and an NVIDIA driver::

    pip install '.[gpu]' && python benchmarks/gpu_node.py [--count 200000] [--per-tar 10000]
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

from photoset import DEFAULT_PHOTOS, list_photos
from throughput import end_to_end

from fastdup_ray.engine import available_cpus


def numbered_jpeg(data: bytes, number: int) -> bytes:
    """The JPEG ``data`` with a comment segment (COM, 0xFFFE) after its start marker that
    holds ``number``: distinct bytes, the same pixels."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG (no start-of-image marker)")
    comment = f"fastdup_ray benchmark copy {number}".encode()
    return data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:]


def cycled_tars(photos: Path, out: Path, count: int, per_tar: int) -> list[Path]:
    blobs = [p.read_bytes() for p in list_photos(photos)]
    out.mkdir(parents=True, exist_ok=True)
    tars = []
    for start in range(0, count, per_tar):
        path = out / f"{start // per_tar:05d}.tar"
        if not path.exists():
            partial = path.with_suffix(".part")
            with tarfile.open(partial, "w") as archive:
                for i in range(start, min(count, start + per_tar)):
                    info = tarfile.TarInfo(f"{i:09d}.jpg")
                    data = numbered_jpeg(blobs[i % len(blobs)], i)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
            partial.rename(path)
        tars.append(path)
    return tars


class Utilisation:
    """GPU utilisation and memory (nvidia-smi) and CPU busy share (/proc/stat), sampled."""

    def __init__(self) -> None:
        self.gpu: list[tuple[float, float]] = []
        self.cpu: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    @staticmethod
    def _cpu_times() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]

    def _sample(self) -> None:
        total, idle = self._cpu_times()
        while not self.stop.wait(0.5):
            now_total, now_idle = self._cpu_times()
            if now_total > total:
                self.cpu.append(1 - (now_idle - idle) / (now_total - total))
            total, idle = now_total, now_idle
            try:
                line = subprocess.run(
                    [
                        "nvidia-smi",
                        "--query-gpu=utilization.gpu,memory.used",
                        "--format=csv,noheader,nounits",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=5,
                    check=False,
                ).stdout.splitlines()[0]
                util, memory = (float(x) for x in line.split(","))
                self.gpu.append((util, memory))
            except (OSError, IndexError, ValueError, subprocess.TimeoutExpired):
                pass

    def finish(self) -> None:
        self.stop.set()
        self.thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--out", type=Path, default=Path("/tmp/fastdup-ray-gpu"))
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--per-tar", type=int, default=10_000)
    parser.add_argument("run_args", nargs="*", help="extra arguments for fastdup-ray run (after --)")
    args = parser.parse_args()
    if shutil.which("nvidia-smi") is None:
        print("no nvidia-smi: this benchmark needs an NVIDIA GPU node", file=sys.stderr)
        return 2
    tars = cycled_tars(args.photos, args.out / f"tars-{args.count}", args.count, args.per_tar)
    gpu_name = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    print(f"machine: {available_cpus()} cores, {gpu_name}; {args.count} JPEGs in {len(tars)} tars")
    sampled = Utilisation()
    start = time.time()
    measured = end_to_end(tars[0].parent, args.out / "work", ["--compute", "gpu", *args.run_args])
    sampled.finish()
    extract_s = measured["stages"]["extract"]
    # Samples taken while extraction ran (it starts after listing, a fraction of a second in).
    first = int((measured["wall"] - sum(measured["stages"].values())) / 0.5)
    during = slice(first, first + int(extract_s / 0.5))
    gpu = sampled.gpu[during] or sampled.gpu
    cpu = sampled.cpu[during] or sampled.cpu
    gpu_util = sum(u for u, _ in gpu) / max(1, len(gpu))
    cpu_busy = 100 * sum(cpu) / max(1, len(cpu))
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in measured["stages"].items())
    print(
        f"end to end: {measured['good'] / measured['wall']:.0f} img/s "
        f"({measured['good']} images in {measured['wall']:.1f}s wall); "
        f"extraction {measured['good'] / extract_s:.0f} img/s; stages: {stages}"
    )
    print(
        f"during extraction: GPU utilisation {gpu_util:.0f}% "
        f"(max memory {max((m for _, m in gpu), default=0):.0f} MiB), CPU busy {cpu_busy:.0f}%"
    )
    if cpu_busy >= 85 and gpu_util < 70:
        verdict = "decoding on the CPUs (the GPU waits for batches)"
    elif gpu_util >= 85:
        verdict = "the GPU (the model)"
    else:
        verdict = "neither saturated: per-batch overhead or input reading"
    print(f"bottleneck: {verdict}; wall clock {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Extraction speed by input kind, and the run_mode 1 + 2 = run_mode 0 check.

Makes ``--count`` JPEGs from real photos (photoset.py), stores them three ways — a
folder, webdataset tars of ``--per-tar`` images, the same tars in moto's S3 server on
loopback — then times ``python -m fastdup_ray run --run-mode 1`` on each in fresh
processes (Ray start-up included), and prints img/s. Last, it runs the tars once with
run_mode 0 and once as two run_mode 1 halves (offsets) + run_mode 2, and compares the
output files byte for byte.

    python benchmarks/inputs.py [--count 3000] [--per-tar 500]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import tarfile
from pathlib import Path

from photoset import DEFAULT_PHOTOS, build_volume_set
from throughput import end_to_end

KEY, SECRET = "bench", "bench-secret"


def make_tars(paths: list[Path], out: Path, per_tar: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    tars = []
    for start in range(0, len(paths), per_tar):
        tar_path = out / f"{start // per_tar:05d}.tar"
        if not tar_path.exists():
            with tarfile.open(tar_path, "w") as archive:
                for i, path in enumerate(paths[start : start + per_tar]):
                    archive.add(path, arcname=f"{start + i:09d}.jpg")
        tars.append(tar_path)
    return tars


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--out", type=Path, default=Path("/tmp/fastdup-ray-inputs"))
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--per-tar", type=int, default=500)
    args = parser.parse_args()
    folder = args.out / f"folder-{args.count}"
    paths = build_volume_set(args.photos, folder, args.count)
    tars = make_tars(paths, args.out / f"tars-{args.count}", args.per_tar)
    env = dict(os.environ, RAY_ADDRESS="", AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET)
    print(f"machine: {os.cpu_count()} cores; {len(paths)} JPEGs; {len(tars)} tars of {args.per_tar}")

    import s3fs
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
    ).create_bucket(Bucket="bench")
    fs = s3fs.S3FileSystem(
        key=KEY, secret=SECRET, client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"}
    )
    for tar in tars:
        fs.put_file(str(tar), f"bench/tars/{tar.name}")
    s3_args = ["--s3-endpoint-url", endpoint, "--s3-region", "us-east-1"]

    variants = {
        "folder": (str(folder), []),
        "local tars": (str(tars[0].parent), []),
        "s3 tars (loopback)": ("s3://bench/tars", s3_args),
    }
    for name, (inputs, extra) in variants.items():
        measured = end_to_end(inputs, args.out / "work", [*extra, "--run-mode", "1"], env)
        wall, good = measured["wall"], measured["good"]
        print(
            f"{name:20s}: {good / wall:6.1f} img/s extraction "
            f"({good} images, {wall:.1f}s wall incl. process + Ray start)"
        )

    one_go, split = args.out / "one_go", args.out / "split"
    for work in (one_go, split):
        shutil.rmtree(work, ignore_errors=True)
    tar_dir = str(tars[0].parent)
    half = len(tars) // 2
    end_to_end(tar_dir, one_go, [], env)
    end_to_end(tar_dir, split, ["--run-mode", "1", "--max-offset", str(half)], env)
    end_to_end(tar_dir, split, ["--run-mode", "1", "--min-offset", str(half)], env, fresh=False)
    end_to_end("unused", split, ["--run-mode", "2"], env, fresh=False)
    for name in ("similarity.csv", "outliers.csv", "component_info.csv", "connected_components.csv"):
        same = (one_go / name).read_bytes() == (split / name).read_bytes()
        print(
            f"run_mode 0 vs run_mode 1 (two offset halves) + 2: {name} {'identical' if same else 'DIFFERENT'}"
        )
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

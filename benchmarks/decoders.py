"""Decoders and the model, one core: where an image's milliseconds go, and what another
JPEG decoder would save.

Times, on the throughput set's JPEGs (``--count`` of them, built once as throughput.py
builds them), each decoder that is installed, all decoding at the DCT scale that keeps
the model's side (what the run's draft mode does), in alternating rounds:

- ``pil``: the run's own path (``fastdup_ray.map.decode.open_rgb``: draft, load, EXIF
  orientation, RGB);
- ``simplejpeg`` and ``simplejpeg-fast`` (its fast DCT and upsampling), when installed;
- ``opencv`` (``cv2.imdecode`` with ``IMREAD_REDUCED_COLOR_*``), when installed;

then the shipped int8 model under ONNX Runtime's profiler (batches of 16, one thread):
its milliseconds an image and the share of each operator type and of the costliest
nodes.

    python benchmarks/decoders.py [--count 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import collections
import glob
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from photoset import DEFAULT_PHOTOS, build_volume_set
from PIL import Image

from fastdup_ray.map.decode import open_rgb
from fastdup_ray.map.embed import CPU_RUN_SIZE, default_model_path

SIZE = 176  # the shipped model's side


def decoders() -> dict:
    """name -> function(bytes) -> RGB pixels of at least SIZE a side, for those installed."""
    found = {"pil": lambda data: np.asarray(open_rgb(data, SIZE)[0])}
    try:
        import simplejpeg
    except ImportError:
        pass
    else:
        found["simplejpeg"] = lambda data: simplejpeg.decode_jpeg(
            data, "RGB", min_height=SIZE, min_width=SIZE
        )
        found["simplejpeg-fast"] = lambda data: simplejpeg.decode_jpeg(
            data, "RGB", fastdct=True, fastupsample=True, min_height=SIZE, min_width=SIZE
        )
    try:
        import cv2
    except ImportError:
        pass
    else:
        flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}

        def opencv(data: bytes) -> np.ndarray:
            width, height = Image.open(io.BytesIO(data)).size  # the header only: opencv reads none alone
            scale = max(s for s in flags if min(width, height) / s >= SIZE or s == 1)
            buffer = np.frombuffer(data, dtype=np.uint8)
            return cv2.cvtColor(cv2.imdecode(buffer, flags[scale]), cv2.COLOR_BGR2RGB)

        found["opencv"] = opencv
    return found


def time_decoders(datas: list[bytes], rounds: int) -> dict[str, float]:
    """Median milliseconds an image of each decoder, the order reversed every other round."""
    found = decoders()
    for decode in found.values():  # first calls load libraries
        decode(datas[0])
    times: dict[str, list[float]] = collections.defaultdict(list)
    for number in range(rounds):
        names = list(found) if number % 2 == 0 else list(reversed(found))
        for name in names:
            start = time.perf_counter()
            for data in datas:
                found[name](data)
            times[name].append((time.perf_counter() - start) / len(datas) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def profile_model(batches: int = 20) -> tuple[float, dict[str, float], list[tuple[str, float]]]:
    """ms an image of the int8 model, the share of each operator type, the top nodes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = ort.InferenceSession(default_model_path("int8"), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    batch = np.random.default_rng(0).integers(0, 256, (CPU_RUN_SIZE, SIZE, SIZE, 3), dtype=np.uint8)
    for _ in range(3):
        session.run(None, {name: batch})
    start = time.perf_counter()
    for _ in range(batches):
        session.run(None, {name: batch})
    per_image = (time.perf_counter() - start) / (batches * CPU_RUN_SIZE) * 1000
    by_type: collections.Counter = collections.Counter()
    by_node: collections.Counter = collections.Counter()
    with open(session.end_profiling()) as handle:
        for event in json.load(handle):
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                by_type[event["args"]["op_name"]] += event["dur"]
                by_node[event["name"].removesuffix("_kernel_time")] += event["dur"]
    total = sum(by_type.values())
    shares = {op: spent / total for op, spent in by_type.most_common()}
    return per_image, shares, [(node, spent / total) for node, spent in by_node.most_common(6)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = Path(f"/tmp/fastdup-ray-throughput/images-{args.count}")
    if not folder.exists():
        build_volume_set(args.photos, folder, args.count)
    files = sorted(glob.glob(str(folder / "**" / "*.jpg"), recursive=True))[: args.count]
    datas = [Path(f).read_bytes() for f in files]
    sides = [open_rgb(d, SIZE)[1] for d in datas[:200]]
    print(
        f"{len(datas)} JPEGs of about {int(np.median([w for w, _ in sides]))}x"
        f"{int(np.median([h for _, h in sides]))} in {folder}; one core, decoded to >= {SIZE} px a side"
    )
    for name, ms in time_decoders(datas, args.rounds).items():
        print(f"decode {name:16s} {ms:.3f} ms an image (median of {args.rounds} rounds)")
    per_image, shares, nodes = profile_model()
    print(
        f"model int8 at {SIZE} px: {per_image:.2f} ms an image; by operator: "
        + ", ".join(f"{op} {share:.1%}" for op, share in shares.items() if share >= 0.001)
    )
    print("costliest nodes: " + ", ".join(f"{node} {share:.1%}" for node, share in nodes))


if __name__ == "__main__":
    main()

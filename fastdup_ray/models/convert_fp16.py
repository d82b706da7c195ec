"""Build ``efficientnet_lite0_fp16.onnx``, the GPU default, from the fp32 model: weights and
activations in float16, uint8 input and float32 features as before.

Uses the float16 converter that ships inside onnxruntime (build time only; needs ``onnx``)::

    python fastdup_ray/models/convert_fp16.py

On the quality benchmark it scores exactly as the fp32 model (average precision 0.9978;
cosine to the fp32 features 0.99998). ONNX Runtime's CPU provider runs float16
convolutions slowly (60 img/s per core against 94 for fp32), so it is only for CUDA.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=HERE / "efficientnet_lite0.onnx")
    parser.add_argument("--out", type=Path, default=HERE / "efficientnet_lite0_fp16.onnx")
    args = parser.parse_args()
    # keep_io_types: the graph still takes uint8 images and returns float32 features.
    converted = convert_float_to_float16(onnx.load(str(args.source)), keep_io_types=True)
    onnx.save(converted, str(args.out))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

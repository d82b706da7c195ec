"""Build ``efficientnet_lite0_int8.onnx`` from the fp32 model: static QDQ int8,
per-channel weights, calibrated on photo-like images the project makes itself
(fastdup_ray.sample: every procedural material, several seeds, plus edited copies).

Needs the ``onnx`` package besides onnxruntime (build time only)::

    python fastdup_ray/models/quantize_int8.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from fastdup_ray.decode import decode_image
from fastdup_ray.sample import MATERIALS, jpeg_bytes, make_scene, near_duplicate

HERE = Path(__file__).parent


class SceneBatches(CalibrationDataReader):
    """Batches of decoded project-made scenes, as the embedder feeds them."""

    def __init__(self, count: int = 192, batch: int = 16) -> None:
        images = []
        for i in range(count):
            scene = make_scene(10_000 + i, material=i % MATERIALS)
            if i % 3 == 1:
                scene = near_duplicate(scene, i % 4)
            images.append(decode_image(jpeg_bytes(scene), 224))
        stacked = np.stack(images)
        self.batches = iter([{"images": stacked[s : s + batch]} for s in range(0, count, batch)])

    def get_next(self):
        return next(self.batches, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=HERE / "efficientnet_lite0.onnx")
    parser.add_argument("--out", type=Path, default=HERE / "efficientnet_lite0_int8.onnx")
    args = parser.parse_args()
    prepared = args.out.with_suffix(".prep.onnx")
    quant_pre_process(str(args.source), str(prepared))
    quantize_static(
        str(prepared),
        str(args.out),
        SceneBatches(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        # Only convolutions: the input cast and scaling and the final pooling stay in float.
        op_types_to_quantize=["Conv"],
        # Percentile ranges ignore the rare extreme activations that min/max would stretch
        # the int8 scale over (min/max cost 0.006 AP on the quality benchmark).
        calibrate_method=CalibrationMethod.Percentile,
        extra_options={"CalibPercentile": 99.99},
    )
    prepared.unlink()
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

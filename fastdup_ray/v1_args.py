"""fastdup v1's keyword arguments to ``fd.run`` as RunConfig's: its other names for our
parameters, and the arguments this tool does not implement, each refused with what to do."""

from __future__ import annotations

from typing import Any

from fastdup_ray.errors import ConfigError

V1_ALIASES = {"cc_threshold": "ccthreshold", "outlier_percentile": "lower_threshold"}
# fastdup v1 arguments this tool does not implement, with what to do instead.
UNSUPPORTED = {
    "embeddings": (
        "save them with fastdup_ray.save_binary_feature(work_dir, filenames, array) "
        "and call fd.run(run_mode=2)"
    ),
    "subset": "give the images to analyse as annotations=[...] (a list of files) or as input_dir",
    "bounding_box": (
        "face, yolov5s and ocr boxes are not made here: give the boxes as annotations= with "
        "col_x, row_y, width, height (or x1..y4) columns"
    ),
    "data_type": "whole images, or bounding boxes given as annotations=",
}
# What bounding_box= and data_type= may say when the annotations hold boxes (their columns decide).
BOX_RUN = {"bounding_box": ("rotated", "xywh_bbox"), "data_type": ("bbox", "image", "infer")}


def v1_parameters(params: dict[str, Any], boxes: bool = False) -> dict[str, Any]:
    """fastdup v1's keyword arguments as RunConfig's (cc_threshold -> ccthreshold, ...);
    an argument this tool does not implement is an error that says what to do. ``boxes``:
    the annotations hold bounding boxes (bounding_box='rotated' and data_type='bbox' agree)."""
    allowed = BOX_RUN if boxes else {"data_type": ("image", "infer")}
    for name, advice in UNSUPPORTED.items():
        if name in params and params[name] not in allowed.get(name, ()):
            raise ConfigError(f"fd.run({name}={params[name]!r}) is not supported: {advice}")
    params = {k: v for k, v in params.items() if k not in UNSUPPORTED}
    resolved: dict[str, Any] = {}
    for name, value in params.items():
        target = V1_ALIASES.get(name, name)
        if target in resolved:
            raise ConfigError(f"parameter {target!r} given twice (once as {name!r})")
        resolved[target] = value
    return resolved

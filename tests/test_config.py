import json

import pytest

from fastdup_ray.config import DEFAULT_CCTHRESHOLD, RunConfig, parse_turi_param
from fastdup_ray.errors import ConfigError
from fastdup_ray.map.embed import default_model_path, model_digest


def test_defaults_and_alias_k():
    config = RunConfig.from_kwargs("in", "out", k=7)
    assert config.nearest_neighbors_k == 7
    assert config.ccthreshold == DEFAULT_CCTHRESHOLD
    assert config.delete_tar and config.delete_img


def test_turi_param_sets_fields():
    config = RunConfig.from_kwargs("in", "out", turi_param="ccthreshold=0.9, delete_tar=0,delete_img=1")
    assert config.ccthreshold == 0.9
    assert config.delete_tar is False and config.delete_img is True


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"threshold": 1.5}, "threshold"),
        ({"lower_threshold": -0.1}, "lower_threshold"),
        ({"k": 0}, "nearest_neighbors_k"),
        ({"nearest_neighbors_k": 2.5}, "nearest_neighbors_k"),
        ({"num_images": -1}, "num_images"),
        ({"d": 0}, "d"),
        ({"compute": "tpu"}, "compute"),
        ({"run_mode": 9}, "run_mode"),
        ({"model_path": "/no/such/model.onnx"}, "model_path"),
        ({"turi_param": "ccthreshold=high"}, "ccthreshold"),
        ({"turi_param": "ccthreshold=1.2"}, "ccthreshold"),
        ({"turi_param": "colour=blue"}, "colour"),
        ({"turi_param": "delete_tar=yes"}, "delete_tar"),
        ({"tresh": 0.5}, "tresh"),
    ],
)
def test_invalid_values_name_the_parameter(kwargs, named):
    with pytest.raises(ConfigError, match=named):
        RunConfig.from_kwargs("in", "out", **kwargs)


def test_alias_and_full_name_together_is_an_error():
    with pytest.raises(ConfigError, match="given twice"):
        RunConfig.from_kwargs("in", "out", k=3, nearest_neighbors_k=4)


def test_parse_turi_param_ignores_blank_items():
    assert parse_turi_param("ccthreshold=0.5,,") == {"ccthreshold": 0.5}


def test_to_json_round_trips():
    config = RunConfig.from_kwargs("in", "out", threshold=0.8, turi_param="ccthreshold=0.91")
    values = json.loads(config.to_json())
    assert values["threshold"] == 0.8 and values["ccthreshold"] == 0.91
    assert values["model_file"] == "efficientnet_lite0_int8_w7.onnx"  # CPU default: the int8 model
    values.pop("model_file")  # derived from compute and precision, not a parameter
    assert values.pop("model_sha256") == model_digest(default_model_path("int8"))
    assert RunConfig(**values) == RunConfig.from_kwargs("in", "out", threshold=0.8, ccthreshold=0.91)
    assert (
        RunConfig.from_kwargs("in", "out", compute="gpu")
        .model_file()
        .endswith("efficientnet_lite0_fp16.onnx")
    )
    assert (
        RunConfig.from_kwargs("in", "out", precision="fp32").model_file().endswith("efficientnet_lite0.onnx")
    )


def test_fastdups_zero_and_one_are_booleans():
    config = RunConfig.from_kwargs("in", "out", verbose=1, delete_img=0)
    config.validate()
    assert config.verbose is True and config.delete_img is False

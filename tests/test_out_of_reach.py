"""fastdup's model-zoo features this tool does not have: each name fastdup's notebooks use
gives one typed error line saying what to use instead, before anything is written."""

from __future__ import annotations

import pytest

import fastdup_ray
from fastdup_ray.errors import FastdupRayError, NotInFastdupRayError


def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text and isinstance(excinfo.value, (FastdupRayError, NotImplementedError))
    return text


def test_captions_vqa_and_enrichment_say_to_bring_your_own_model_as_annotations(tmp_path):
    fd = fastdup_ray.create(tmp_path / "work", tmp_path)
    with pytest.raises(NotInFastdupRayError) as caught:
        fd.caption(model_name="automatic", device="cpu", batch_size=8)
    assert one_line(caught).startswith("fd.caption is not in fastdup_ray: captioning and VQA")
    assert "annotations=frame with filename" in str(caught.value)
    with pytest.raises(NotInFastdupRayError, match="fd.caption is not in fastdup_ray"):
        fd.caption(model_name="vqa", vqa_prompt="is this photo taken indoors or outdoors?")
    with pytest.raises(NotInFastdupRayError) as caught:
        fd.enrich(
            task="zero-shot-classification", model="recognize-anything-model", input_df=None, input_col="x"
        )
    assert one_line(caught).startswith("fd.enrich is not in fastdup_ray: zero-shot enrichment")
    assert "bbox_x" in str(caught.value)
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("detector", ["face", "yolov5s", "ocr", "quick_ocr"])
def test_fastdups_detectors_say_to_give_your_own_boxes(tmp_path, detector):
    for call in (
        lambda: fastdup_ray.run(str(tmp_path), str(tmp_path / "work"), bounding_box=detector),
        lambda: fastdup_ray.create(tmp_path / "work", tmp_path).run(bounding_box=detector),
    ):
        with pytest.raises(NotInFastdupRayError) as caught:
            call()
        assert f"bounding_box='{detector}': fastdup's built-in" in one_line(caught)
        assert "annotations (filename, bbox_x, bbox_y, bbox_w, bbox_h)" in str(caught.value)
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("name", ["dinov2s", "dinov2b", "clip", "clip336", "resnet50"])
def test_models_fastdup_downloads_by_name_say_to_give_an_onnx_file_or_your_vectors(tmp_path, name):
    for call in (
        lambda: fastdup_ray.run(str(tmp_path), str(tmp_path / "work"), model_path=name),
        lambda: fastdup_ray.create(tmp_path / "work", tmp_path).run(model_path=name),
    ):
        with pytest.raises(NotInFastdupRayError) as caught:
            call()
        assert f"model_path='{name}' names a model fastdup downloads" in one_line(caught)
        assert f"model_path='{name}.onnx'" in str(caught.value) and "embeddings=matrix" in str(caught.value)
    with pytest.raises(NotInFastdupRayError, match="high_accuracy=True .*DINOv2.*embeddings=matrix"):
        fastdup_ray.run(str(tmp_path), str(tmp_path / "work"), high_accuracy=True)


def test_fastdup_datasets_names_say_to_use_a_folder_and_annotations():
    import fastdup_ray.datasets as datasets  # importing it is fine: using a name says why not

    with pytest.raises(NotInFastdupRayError) as caught:
        from fastdup_ray.datasets import FastdupHFDataset  # noqa: F401
    assert one_line(caught).startswith("fastdup_ray.datasets is not in fastdup_ray: fastdup.datasets")
    assert "input_dir" in str(caught.value)
    with pytest.raises(NotInFastdupRayError):
        datasets.FastdupTorchDataset  # noqa: B018
    with pytest.raises(AttributeError):
        datasets.__wrapped__  # noqa: B018 - the import system's look-ups stay plain misses

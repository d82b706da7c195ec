
import numpy as np
import onnxruntime as ort
import pytest

from fastdup_ray.decode import decode_image
from fastdup_ray.embed import Embedder, default_model_path
from fastdup_ray.errors import ConfigError
from fastdup_ray.sample import jpeg_bytes, make_scene


@pytest.fixture(scope="module", params=["fp32", "int8"])
def embedder(request):
    return Embedder(default_model_path(request.param), d=1280)


def test_shipped_model_loads_and_gives_1280_unit_vectors(embedder):
    session = ort.InferenceSession(default_model_path(), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].shape[1] == 1280
    vectors = embedder.embed(np.stack([decode_image(jpeg_bytes(make_scene(s)), 224) for s in range(3)]))
    assert vectors.shape == (3, 1280) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_edited_copy_scores_far_closer_than_unrelated_image(embedder):
    photo = make_scene(10, material=5)
    small = photo.resize((200, 150))
    copy = jpeg_bytes(small, quality=40)  # recompressed hard and resized
    unrelated = jpeg_bytes(make_scene(11, material=0))
    vectors = embedder.embed(np.stack([decode_image(b, 224) for b in (jpeg_bytes(photo), copy, unrelated)]))
    to_copy, to_unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert to_copy > 0.9
    assert to_copy - to_unrelated > 0.3


def test_wrong_d_is_a_clear_error():
    with pytest.raises(ConfigError, match="pass d=1280"):
        Embedder(d=512)


def test_users_float_nchw_model(tmp_path):
    """A user's own ONNX file: float NCHW input, feature-map output that we pool."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    weights = np.random.default_rng(0).normal(size=(8, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 64, 64])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.ravel())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "tiny.onnx"
    onnx.save(model, path)
    embedder = Embedder(str(path), d=8)
    assert embedder.image_size == 64
    vectors = embedder.embed(np.stack([decode_image(jpeg_bytes(make_scene(s)), 64) for s in range(2)]))
    assert vectors.shape == (2, 8)

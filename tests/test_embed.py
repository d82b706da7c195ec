
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
    vectors = embedder.embed(np.stack([decode_image(jpeg_bytes(make_scene(s)), embedder.image_size) for s in range(3)]))
    assert vectors.shape == (3, 1280) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_edited_copy_scores_far_closer_than_unrelated_image(embedder):
    photo = make_scene(10, material=5)
    small = photo.resize((200, 150))
    copy = jpeg_bytes(small, quality=40)  # recompressed hard and resized
    unrelated = jpeg_bytes(make_scene(11, material=0))
    vectors = embedder.embed(np.stack([decode_image(b, embedder.image_size) for b in (jpeg_bytes(photo), copy, unrelated)]))
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


def test_int8_model_keeps_the_fp32_neighbourhoods_of_edited_copies():
    """The fast int8 model (160 px) ranks copies like the fp32 model (224 px): the same
    nearest neighbour for every image of a set of scenes and their edited copies."""
    from fastdup_ray.sample import near_duplicate

    scenes = [make_scene(40 + i, material=i % 8) for i in range(8)]
    images = [jpeg_bytes(s) for s in scenes] + [jpeg_bytes(near_duplicate(s, i % 4)) for i, s in enumerate(scenes)]
    neighbours = []
    for precision in ("fp32", "int8"):
        model = Embedder(default_model_path(precision), d=1280)
        vectors = model.embed(np.stack([decode_image(b, model.image_size) for b in images]))
        sims = vectors @ vectors.T
        np.fill_diagonal(sims, -1)
        neighbours.append(sims.argmax(axis=1))
    assert Embedder(default_model_path("int8")).image_size == 160
    assert (neighbours[0] == neighbours[1]).all() and (neighbours[1] == np.r_[np.arange(8, 16), np.arange(8)]).all()

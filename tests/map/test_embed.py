import numpy as np
import onnxruntime as ort
import pytest

from fastdup_ray.config import DEFAULT_D
from fastdup_ray.errors import ConfigError
from fastdup_ray.map.decode import decode_image
from fastdup_ray.map.embed import SHIPPED_MODELS, Embedder, default_model_path
from fastdup_ray.sample import jpeg_bytes, make_scene


@pytest.fixture(scope="module", params=["fp32", "int8"])
def embedder(request):
    return Embedder(default_model_path(request.param), d=DEFAULT_D)


@pytest.mark.parametrize("precision", sorted(SHIPPED_MODELS))
def test_shipped_models_are_in_step_176_px_in_default_d_out(precision):
    """fp32, int8 and fp16 take the same input and give features of the default width, so
    the calibrated thresholds mean the same for each."""
    session = ort.InferenceSession(default_model_path(precision), providers=["CPUExecutionProvider"])
    assert (
        session.get_inputs()[0].shape[1:] == [176, 176, 3]
        and session.get_outputs()[0].shape[1] == DEFAULT_D == 320
    )


def test_shipped_model_gives_unit_vectors(embedder):
    vectors = embedder.embed(
        np.stack([decode_image(jpeg_bytes(make_scene(s)), embedder.image_size) for s in range(3)])
    )
    assert vectors.shape == (3, DEFAULT_D) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_edited_copy_scores_far_closer_than_unrelated_image(embedder):
    photo = make_scene(10, material=5)
    small = photo.resize((200, 150))
    copy = jpeg_bytes(small, quality=40)  # recompressed hard and resized
    unrelated = jpeg_bytes(make_scene(11, material=0))
    vectors = embedder.embed(
        np.stack([decode_image(b, embedder.image_size) for b in (jpeg_bytes(photo), copy, unrelated)])
    )
    to_copy, to_unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert to_copy > 0.9
    assert to_copy - to_unrelated > 0.3


def test_wrong_d_is_a_clear_error():
    with pytest.raises(ConfigError, match=f"pass d={DEFAULT_D}"):
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


def test_int8_and_fp16_models_keep_the_fp32_neighbourhoods_of_edited_copies():
    """The fast int8 model (CPU default) and the fp16 one (GPU default) rank copies as the
    fp32 model does, the same nearest neighbour for every image of a set of scenes and
    their edited copies, with features close to fp32's."""
    from fastdup_ray.sample import near_duplicate

    scenes = [make_scene(40 + i, material=i % 8) for i in range(8)]
    images = [jpeg_bytes(s) for s in scenes] + [
        jpeg_bytes(near_duplicate(s, i % 4)) for i, s in enumerate(scenes)
    ]
    neighbours, features = [], []
    for precision in ("fp32", "int8", "fp16"):
        model = Embedder(default_model_path(precision), d=DEFAULT_D)
        vectors = model.embed(np.stack([decode_image(b, model.image_size) for b in images]))
        sims = vectors @ vectors.T
        np.fill_diagonal(sims, -1)
        neighbours.append(sims.argmax(axis=1))
        features.append(vectors)
    for other in neighbours:
        assert (other == np.r_[np.arange(8, 16), np.arange(8)]).all()
    fp32, int8, fp16 = features
    assert (fp32 * fp16).sum(axis=1).min() > 0.999
    # The 7-bit weights of the pointwise convolutions (models/quantize_int8.py) cost a
    # little: 0.96 at the least on these scenes against 0.98 for 8-bit weights computed exactly.
    assert (fp32 * int8).sum(axis=1).min() > 0.95


def test_int8_weights_leave_no_room_for_an_int16_pair_sum_to_overflow():
    """On x86 without VNNI, ONNX Runtime adds pairs of uint8 x int8 products in a saturating
    int16 (VPMADDUBSW) in its convolutions that are not depthwise: 2 * 255 * |w| must stay
    under 32768, so |w| <= 64, whatever CPU the model ships to."""
    import onnx
    from onnx import numpy_helper

    from fastdup_ray.models.quantize_int8 import is_depthwise

    model = onnx.load(default_model_path("int8"))
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    made_by = {node.output[0]: node for node in model.graph.node}
    largest = {}
    for node in model.graph.node:
        if node.op_type == "Conv":
            depthwise = is_depthwise(node)
            quantized = weights[made_by[node.input[1]].input[0]]
            assert quantized.dtype == np.int8
            largest[depthwise] = max(largest.get(depthwise, 0), int(np.abs(quantized.astype(int)).max()))
    assert largest[False] <= 64 and largest[True] > 64  # depthwise keeps 8 bits: its kernel sums in int32


def test_int8_model_gives_the_same_features_on_this_cpu_as_in_exact_arithmetic():
    """ONNX Runtime's integer kernels (graph optimised) against the same quantised model
    run as float DequantizeLinear -> Conv -> QuantizeLinear (no optimisation): equal up to
    rounding when no kernel overflows. On an AVX2 CPU without VNNI, 8-bit weights gave
    cosines down to 0.63 here."""
    scenes = [make_scene(40 + i, material=i % 8) for i in range(8)]
    pixels = np.stack([decode_image(jpeg_bytes(scene), 176) for scene in scenes])

    def features(level):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(
            default_model_path("int8"), options, providers=["CPUExecutionProvider"]
        )
        out = session.run(None, {session.get_inputs()[0].name: pixels})[0].reshape(len(pixels), -1)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    kernels = features(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    exact = features(ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    assert (kernels * exact).sum(axis=1).min() > 0.995


@pytest.fixture
def cuda_listed_but_broken(monkeypatch):
    """onnxruntime as onnxruntime-gpu behaves where CUDA cannot load: CUDA is listed as
    available, and a session asked for it comes up on the CPU provider alone (CPU
    onnxruntime does exactly that for a provider it lacks)."""
    from fastdup_ray.map import embed

    listed = [embed.CUDA, *ort.get_available_providers()]
    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    embed.cuda_problem.cache_clear()
    yield
    embed.cuda_problem.cache_clear()


def test_cuda_listed_but_not_starting_is_found_by_a_real_session(cuda_listed_but_broken):
    from fastdup_ray.map.embed import cuda_available, cuda_problem

    assert cuda_available()
    problem = cuda_problem()
    assert problem is not None and "CUDA did not start in this process" in problem


def test_a_gpu_session_where_cuda_cannot_start_refuses_rather_than_running_fp16_on_cpu(
    cuda_listed_but_broken,
):
    from fastdup_ray.errors import GpuUnavailableError

    with pytest.raises(GpuUnavailableError, match="compute='gpu' but .*CUDA did not start.*compute='cpu'"):
        Embedder(default_model_path("fp16"), d=DEFAULT_D, compute="gpu")


def test_no_cuda_at_all_is_named_as_no_gpu():
    from fastdup_ray.map.embed import cuda_available, cuda_problem

    if cuda_available():
        pytest.skip("this onnxruntime lists CUDA")
    cuda_problem.cache_clear()
    assert cuda_problem().startswith("no GPU was found: onnxruntime has no CUDAExecutionProvider")

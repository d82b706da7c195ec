"""Embed stage: batches of RGB arrays -> L2-normalised feature vectors with ONNX Runtime.

The shipped default is EfficientNet-Lite0 (models/NOTICE says where its weights come
from), giving the 320-d mean-pooled output of its last block at 176 px. Users may pass
their own ONNX file with ``model_path`` and its width ``d``; its input layout is read
from the model itself.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from importlib import resources

import numpy as np

from fastdup_ray.errors import ConfigError, GpuUnavailableError, MissingDependencyError

log = logging.getLogger("fastdup_ray")

DEFAULT_IMAGE_SIZE = 224
CPU_RUN_SIZE = 16
# ImageNet statistics, the usual convention for float NCHW models exported from torchvision.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


SHIPPED_MODELS = {
    "fp32": "efficientnet_lite0.onnx",
    # "_w7": 7-bit pointwise weights (models/quantize_int8.py). A new name for new weights,
    # so a run begun with the earlier int8 file refuses to resume with this one.
    "int8": "efficientnet_lite0_int8_w7.onnx",
    "fp16": "efficientnet_lite0_fp16.onnx",
}


def default_model_path(precision: str = "fp32") -> str:
    """Path of the shipped EfficientNet-Lite0 ONNX model, all at 176 px with 320-d
    features: fp32; int8 (static QDQ, per-channel; built by models/quantize_int8.py),
    the CPU default, its model step about 2.3x the fp32 one's speed on CPU, with
    near-duplicate average precision 0.9923 against 0.9938 (benchmarks/quality.py,
    report half); or fp16 (models/convert_fp16.py), the GPU default, which scores as
    fp32 does."""
    return str(resources.files("fastdup_ray.models").joinpath(SHIPPED_MODELS[precision]))


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError(
            "onnxruntime is needed to embed images: pip install onnxruntime"
        ) from None
    return onnxruntime


@dataclass(frozen=True)
class ModelInput:
    """How a model wants its images: side length, layout and element type."""

    name: str
    size: int
    layout: str  # "NHWC" (uint8, scaling inside the model) or "NCHW" (float, ImageNet-normalised here)
    dtype: str  # "uint8" or "float32"


def read_model_input(session) -> ModelInput:
    """Work out the input convention of an ONNX model from its declared input."""
    meta = session.get_inputs()[0]
    shape = list(meta.shape)
    if len(shape) != 4:
        raise ConfigError(f"model input {meta.name!r} has shape {shape}; an image model needs 4 dimensions")
    dtype = "uint8" if meta.type == "tensor(uint8)" else "float32"
    if shape[3] == 3:
        layout, spatial = "NHWC", shape[1:3]
    elif shape[1] == 3:
        layout, spatial = "NCHW", shape[2:4]
    else:
        raise ConfigError(
            f"model input {meta.name!r} has shape {shape}; expected 3 colour channels first or last"
        )
    sides = [s for s in spatial if isinstance(s, int) and s > 0]
    size = sides[0] if sides else DEFAULT_IMAGE_SIZE
    return ModelInput(name=meta.name, size=size, layout=layout, dtype=dtype)


def cuda_available() -> bool:
    """onnxruntime lists CUDA: a GPU build is installed, which says nothing about whether
    CUDA starts here (cuda_problem does)."""
    return CUDA in _onnxruntime().get_available_providers()


CUDA = "CUDAExecutionProvider"
INSTALL_GPU = "install fastdup_ray[gpu] on a machine with a CUDA GPU"


@functools.cache
def cuda_problem() -> str | None:
    """None when a session asked for CUDA really gets it in this process; else why not.

    onnxruntime-gpu lists CUDA as available even where its libraries cannot load (no
    driver, cuDNN or CUDA of another major version, a worker without the driver's
    LD_LIBRARY_PATH), and a session asked for it then quietly runs on CPU. So the check
    makes a session with the shipped fp16 model and reads the providers it really has."""
    if not cuda_available():
        return f"no GPU was found: onnxruntime has no {CUDA} ({INSTALL_GPU})"
    ort = _onnxruntime()
    session, errors = _with_native_stderr(
        lambda: ort.InferenceSession(default_model_path("fp16"), providers=[CUDA, "CPUExecutionProvider"])
    )
    if CUDA in session.get_providers():
        return None
    return f"onnxruntime lists {CUDA} but CUDA did not start in this process ({_last_error(errors)})"


def _with_native_stderr(make):
    """``make()``, and what onnxruntime's C++ side wrote to stderr meanwhile (where it says
    why a provider failed: Python never sees that text)."""
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            result = make()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        text = sink.read().decode(errors="replace")
    if text:
        log.debug("onnxruntime said: %s", text.strip())
    return result, text


def _last_error(text: str) -> str:
    """The last line of onnxruntime's log that says what failed, without its colours and
    its "time [W:onnxruntime:...]" prefix."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = [re.sub(r"^.*?\[[EW]:onnxruntime:[^\]]*\]\s*", "", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    failing = [line for line in lines if "error" in line.lower() or "fail" in line.lower()] or lines
    if not failing:
        return "it gave no reason: check nvidia-smi and LD_LIBRARY_PATH"
    reason = failing[-1]
    return reason if len(reason) <= 300 else reason[:297] + "..."


def onnx_providers(compute: str) -> list[str]:
    """ONNX Runtime providers for ``compute``; falls back to CPU with one log line when CUDA
    cannot start (the run's compute was decided on the same check, so this is a worker
    unlike the driver's machine)."""
    if compute == "gpu":
        problem = cuda_problem()
        if problem is None:
            return [CUDA, "CPUExecutionProvider"]
        raise GpuUnavailableError(
            f"compute='gpu' but {problem}; the fp16 GPU model is not run on CPU: fix CUDA on this "
            "node or run with compute='cpu'"
        )
    return ["CPUExecutionProvider"]


class Embedder:
    """One ONNX Runtime session; ``embed`` turns a uint8 NHWC batch into unit vectors."""

    def __init__(
        self, model_path: str | None = None, d: int | None = None, compute: str = "cpu", threads: int = 1
    ):
        ort = _onnxruntime()
        self.model_path = model_path or default_model_path()
        options = ort.SessionOptions()
        # One thread per session: parallelism comes from running one actor per core, which
        # scales better than intra-op threads for small CNNs on small batches.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = onnx_providers(compute)
        try:
            self.session = ort.InferenceSession(self.model_path, options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own classes for a bad file
            detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"model_path {self.model_path!r} is not an ONNX model onnxruntime can load: {detail}"
            ) from None
        # On CPU, runs of 16 images keep a convolution's activations in the core's cache:
        # the int8 model does 466 img/s per core in runs of 16 against 426 in runs of 64.
        # A GPU takes the whole batch at once.
        self.run_size = None if CUDA in self.session.get_providers() else CPU_RUN_SIZE
        self.input = read_model_input(self.session)
        self.d = d
        if d is not None:
            width = self.output_width()
            if width is not None and width != d:
                raise ConfigError(
                    f"model {os.path.basename(self.model_path)} gives {width}-d features "
                    f"but d={d}; pass d={width}"
                )

    @property
    def image_size(self) -> int:
        return self.input.size

    def output_width(self) -> int | None:
        shape = self.session.get_outputs()[0].shape
        width = shape[1] if len(shape) >= 2 else None
        return width if isinstance(width, int) else None

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(n, size, size, 3) uint8 -> (n, d) float32, each row of unit length."""
        if len(images) == 0:
            return np.zeros((0, self.d or self.output_width() or 0), dtype=np.float32)
        feed = self._prepare(images)
        step = self.run_size or len(feed)
        runs = [
            self.session.run(None, {self.input.name: feed[s : s + step]})[0]
            for s in range(0, len(feed), step)
        ]
        out = runs[0] if len(runs) == 1 else np.concatenate(runs)
        if out.ndim == 4:  # a feature map: pool it globally
            out = out.mean(axis=(2, 3))
        out = out.reshape(len(images), -1).astype(np.float32, copy=False)
        if self.d is not None and out.shape[1] != self.d:
            raise ConfigError(f"model gives {out.shape[1]}-d features but d={self.d}; pass d={out.shape[1]}")
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def _prepare(self, images: np.ndarray) -> np.ndarray:
        if self.input.dtype == "uint8" and self.input.layout == "NHWC":
            return np.ascontiguousarray(images)
        x = images.astype(np.float32) / 255.0
        x = (x - IMAGENET_MEAN) / IMAGENET_STD
        if self.input.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.float32)


def model_digest(path: str) -> str:
    """SHA-256 of the model file's bytes: what a resume compares, since a model retrained
    and saved under the same name gives other vectors. A run asks twice (the resume check,
    then config.json), so the file is read once per size and modification time."""
    status = os.stat(path)
    return _file_digest(os.path.realpath(path), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as model:
        for chunk in iter(lambda: model.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_file_for(model_path: str | None, precision: str, compute: str) -> str:
    """The ONNX file a run with these settings embeds with (what config.json records for
    it, so a search of a finished run embeds its queries with the same one)."""
    if model_path:
        return model_path
    return default_model_path(precision if precision != "auto" else ("fp16" if compute == "gpu" else "int8"))

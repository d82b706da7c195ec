"""RunConfig: fastdup's run parameters, parsed once and carried through every stage.

Values come from keyword arguments of :func:`fastdup_ray.run` or from the CLI; the
comma list ``turi_param`` ('ccthreshold=0.88,delete_tar=0') is unpacked into fields.
Every invalid value raises :class:`ConfigError` naming the parameter.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from fastdup_ray.errors import ConfigError

# Chosen for the shipped int8 EfficientNet-Lite0 features on the tune half of
# benchmarks/quality.py (150 of the dev photos, 153 edited copies in groups of up to
# four), never on the half it reports: threshold and ccthreshold each sit in the middle
# of the band where precision holds at 0.95 (false pairs scaled for a collection 10x
# larger) and recall at 0.90: 0.58-0.72 for similarity.csv, 0.65-0.74 for components
# (at least the threshold; purity >= 0.98). k=3 is the least that links every image of
# a group of four to the other three. See README "Default thresholds". A similarity of
# 0.9 does not mean the same for two models.
DEFAULT_THRESHOLD = 0.65
DEFAULT_CCTHRESHOLD = 0.70
DEFAULT_K = 3

DEFAULT_D = 320  # width of the shipped models' features
COMPUTE_CHOICES = ("cpu", "gpu")
EXECUTOR_CHOICES = ("auto", "local", "ray")
REDUCE_STRATEGIES = ("auto", "memory", "distributed")
PRECISION_CHOICES = ("auto", "int8", "fp32", "fp16")
RUN_MODES = (0, 1, 2, 3, 4)
TURI_PARAM_KEYS = ("ccthreshold", "delete_tar", "delete_img")
# fastdup's short names for its parameters.
ALIASES = {"k": "nearest_neighbors_k"}


@dataclass
class RunConfig:
    """Every parameter of a run. Field names are fastdup's where fastdup has one."""

    input_dir: str | list[str]
    work_dir: str
    test_dir: str | None = None
    threshold: float = DEFAULT_THRESHOLD
    lower_threshold: float = 0.05
    nearest_neighbors_k: int = DEFAULT_K
    ccthreshold: float = DEFAULT_CCTHRESHOLD
    delete_tar: bool = True
    delete_img: bool = True
    num_images: int = 0
    verbose: bool = False
    d: int = DEFAULT_D
    model_path: str | None = None
    precision: str = "auto"
    compute: str = "cpu"
    run_mode: int = 0
    # fastdup's name: clear an earlier run in work_dir (its shards, outputs and index) first.
    overwrite: bool = False
    batch_size: int = 64
    num_threads: int = 0
    # Which engine runs the stages: 'local' (worker processes on this machine, no Ray
    # start-up), 'ray' (Ray Data; a cluster when RAY_ADDRESS names one), or 'auto' (see
    # engine.choose).
    executor: str = "auto"
    nn_provider: str = "nnf"
    nnf_mode: str = "Flat"
    nnmodel: str = "brute_force"
    # Lists each image is compared with under nnf_mode 'IVF<n>,Flat' (searched blockwise).
    nprobe: int = 2
    reduce_memory_gb: float = 8.0
    # 'memory' (every vector in one process), 'distributed' (waves of tasks writing Parquet
    # parts, nothing per image on the driver) or 'auto': distributed above reduce_memory_gb.
    reduce_strategy: str = "auto"
    # Rows per task of the distributed reduce (a row range over the feature shards).
    rows_per_partition: int = 250_000
    # The distributed reduce writes each table's CSV too while it has at most this many rows.
    csv_row_limit: int = 50_000_000
    min_offset: int = 0
    max_offset: int | None = None
    shard_size: int = 1000
    video_fps: float = 1.0
    # Longest side of the JPEG thumbnails kept per shard for the galleries (0: none).
    thumbnail_size: int = 256
    cache_dir: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_profile: str | None = None
    s3_key: str | None = field(default=None, repr=False)
    s3_secret: str | None = field(default=None, repr=False)
    turi_param: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.turi_param:
            for key, value in parse_turi_param(self.turi_param).items():
                setattr(self, key, value)
        self.validate()

    @classmethod
    def from_kwargs(cls, input_dir: str, work_dir: str, **kwargs: Any) -> "RunConfig":
        """Build a config from fastdup-style keyword arguments (aliases such as ``k`` allowed)."""
        known = {f.name for f in dataclasses.fields(cls)}
        resolved: dict[str, Any] = {}
        for name, value in kwargs.items():
            target = ALIASES.get(name, name)
            if target not in known or target in ("input_dir", "work_dir"):
                raise ConfigError(f"unknown parameter {name!r}; known parameters: {', '.join(sorted(known))}")
            if target in resolved:
                raise ConfigError(f"parameter {target!r} given twice (once as {name!r})")
            resolved[target] = value
        inputs = (
            [os.fspath(x) for x in input_dir]
            if isinstance(input_dir, (list, tuple))
            else os.fspath(input_dir)
        )
        return cls(input_dir=inputs, work_dir=os.fspath(work_dir), **resolved)

    def validate(self) -> None:
        _check_fraction("threshold", self.threshold)
        _check_fraction("lower_threshold", self.lower_threshold)
        _check_fraction("ccthreshold", self.ccthreshold)
        _check_int("nearest_neighbors_k", self.nearest_neighbors_k, minimum=1)
        _check_int("num_images", self.num_images, minimum=0)
        _check_int("d", self.d, minimum=1)
        _check_int("batch_size", self.batch_size, minimum=1)
        _check_int("num_threads", self.num_threads, minimum=0)
        _check_int("min_offset", self.min_offset, minimum=0)
        if self.max_offset is not None:
            _check_int("max_offset", self.max_offset, minimum=self.min_offset + 1)
        _check_int("shard_size", self.shard_size, minimum=1)
        _check_int("thumbnail_size", self.thumbnail_size, minimum=0)
        _check_int("nprobe", self.nprobe, minimum=1)
        _check_int("rows_per_partition", self.rows_per_partition, minimum=1)
        _check_int("csv_row_limit", self.csv_row_limit, minimum=0)
        if self.reduce_strategy not in REDUCE_STRATEGIES:
            raise ConfigError(
                f"reduce_strategy must be one of {REDUCE_STRATEGIES}, got {self.reduce_strategy!r}"
            )
        if (
            isinstance(self.reduce_memory_gb, bool)
            or not isinstance(self.reduce_memory_gb, (int, float))
            or self.reduce_memory_gb <= 0
        ):
            raise ConfigError(f"reduce_memory_gb must be a number > 0, got {self.reduce_memory_gb!r}")
        from fastdup_ray.reduce.index import factory_string

        factory_string(self.nn_provider, self.nnf_mode, self.nnmodel)  # names the bad parameter
        if (
            isinstance(self.video_fps, bool)
            or not isinstance(self.video_fps, (int, float))
            or self.video_fps <= 0
        ):
            raise ConfigError(f"video_fps must be a number > 0, got {self.video_fps!r}")
        if self.compute not in COMPUTE_CHOICES:
            raise ConfigError(f"compute must be one of {COMPUTE_CHOICES}, got {self.compute!r}")
        if self.executor not in EXECUTOR_CHOICES:
            raise ConfigError(f"executor must be one of {EXECUTOR_CHOICES}, got {self.executor!r}")
        if not isinstance(self.overwrite, bool):
            raise ConfigError(f"overwrite must be True or False, got {self.overwrite!r}")
        if self.run_mode not in RUN_MODES:
            raise ConfigError(f"run_mode must be one of {RUN_MODES}, got {self.run_mode!r}")
        if self.run_mode in (3, 4) and not self.test_dir:
            raise ConfigError(
                f"run_mode={self.run_mode} needs test_dir: the images (3) or features (4) to score against work_dir's index"
            )
        if self.precision not in PRECISION_CHOICES:
            raise ConfigError(f"precision must be one of {PRECISION_CHOICES}, got {self.precision!r}")
        if self.model_path is not None and not os.path.isfile(self.model_path):
            raise ConfigError(f"model_path {self.model_path!r} is not a file")
        if not self.work_dir:
            raise ConfigError("work_dir must be given")

    def to_json(self) -> str:
        """The resolved parameters, without secrets (keys never reach a file or a log)."""
        values = dataclasses.asdict(self)
        for private in ("turi_param", "s3_key", "s3_secret"):  # turi_param is already unpacked
            values.pop(private)
        values["model_file"] = os.path.basename(self.model_file())  # derived: what resume compares
        return json.dumps(values, indent=2, sort_keys=True)

    def storage_options(self):
        from fastdup_ray.rundir.storage import StorageOptions

        return StorageOptions(
            endpoint_url=self.s3_endpoint_url,
            region=self.s3_region,
            profile=self.s3_profile,
            key=self.s3_key,
            secret=self.s3_secret,
        )

    def extraction_settings(self) -> dict[str, Any]:
        """Settings that change what a features shard holds: a resume must not mix them."""
        return {
            "model_file": os.path.basename(self.model_file()),
            "d": self.d,
            "video_fps": self.video_fps,
            "shard_size": self.shard_size,
        }

    def model_file(self) -> str:
        """The ONNX file to embed with: the user's, or the shipped model at ``precision``
        ('auto': int8 on CPU, where its model step is ~2.3x faster; fp16 on GPU)."""
        if self.model_path:
            return self.model_path
        from fastdup_ray.map.embed import default_model_path

        precision = (
            self.precision if self.precision != "auto" else ("fp16" if self.compute == "gpu" else "int8")
        )
        return default_model_path(precision)


def parse_turi_param(text: str) -> dict[str, Any]:
    """Parse fastdup's ``turi_param`` comma list, e.g. ``'ccthreshold=0.88,delete_tar=0'``."""
    parsed: dict[str, Any] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not raw:
            raise ConfigError(f"turi_param item {item!r} must look like key=value")
        if key not in TURI_PARAM_KEYS:
            raise ConfigError(f"turi_param key {key!r} is unknown; known keys: {', '.join(TURI_PARAM_KEYS)}")
        if key == "ccthreshold":
            try:
                parsed[key] = float(raw)
            except ValueError:
                raise ConfigError(f"turi_param ccthreshold must be a number, got {raw!r}") from None
        else:
            if raw not in ("0", "1"):
                raise ConfigError(f"turi_param {key} must be 0 or 1, got {raw!r}")
            parsed[key] = raw == "1"
    return parsed


def _check_fraction(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{name} must be a number between 0 and 1, got {value!r}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")

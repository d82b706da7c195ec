"""The parameter table: every run parameter declared once, under fastdup's name.

RunConfig's fields and defaults, its validation, the fingerprint a resume compares, the
``run`` command's options and README.md's parameter table are all made from ``PARAMS``, so
adding a parameter means adding one entry here (fastdup_ray.config reads it), then
regenerating README's table with ``fastdup_ray.config.update_readme("README.md")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

REQUIRED = object()  # the default of a parameter every run must give
KINDS = ("str", "path", "inputs", "int", "float", "bool")
STAGES = ("run", "map", "reduce", "storage")


@dataclass(frozen=True)
class Param:
    """One run parameter. ``kind`` 'path' is a str that may be given as an os.PathLike;
    'inputs' is one path or a list of them."""

    name: str
    kind: str
    default: Any = REQUIRED
    help: str = ""  # one line: the option's --help, and README's meaning unless doc says more
    doc: str = ""  # README's "meaning here", markdown
    stage: str = "run"  # the part of the pipeline it feeds
    choices: tuple = ()
    low: float | None = None  # valid range; low_open: low itself is not valid
    high: float | None = None
    low_open: bool = False
    optional: bool = False  # None is valid
    fingerprint: bool = False  # changes what a features shard holds: a resume must not mix values
    cli: tuple[str, ...] | None = None  # None: --name-with-dashes; (): no option; no dash: positional
    aliases: tuple[str, ...] = ()  # fastdup's other names for it (keyword arguments and --config)
    turi: bool = False  # also a key of turi_param
    recorded: bool = True  # False: kept out of repr and config.json (secrets; turi_param, unpacked)
    shown_default: str = ""  # the default in words, where its value says too little

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def flags(self) -> tuple[str, ...]:
        return ("--" + self.name.replace("_", "-"),) if self.cli is None else self.cli

    @property
    def annotation(self) -> str:
        base = {"path": "str", "inputs": "str | list[str]"}.get(self.kind, self.kind)
        return base + " | None" if self.optional else base


def _margin(name: str, high: float | None, help: str) -> Param:
    """fastdup's margins around the bounding boxes of fd.run(annotations=...), added
    before each is cut (map/crops.py's Margin); they change what a shard holds."""
    extra = {"stage": "map", "low": 0, "high": high, "fingerprint": True, "turi": True}
    return Param(name, "float", 0.0, help, **extra)


PARAMS: tuple[Param, ...] = (
    Param(
        "input_dir",
        "inputs",
        cli=("input_dir",),
        stage="map",
        help=(
            "folder (recursive), s3://bucket/prefix, minio://host/bucket/prefix, s3://b/{00000..00099}.tar, "
            "tar/tgz/zip, .parquet of image bytes, video, or a .txt/.csv file list"
        ),
        doc="the images: see [Inputs in detail](#inputs-in-detail)",
    ),
    Param("work_dir", "path", help="where the outputs go", doc="where the outputs go, local or remote"),
    Param(
        "threshold",
        "float",
        DEFAULT_THRESHOLD,
        stage="reduce",
        low=0,
        high=1,
        help="similarity.csv keeps pairs at or above this cosine similarity",
        doc=(
            "similarity.csv keeps pairs with cosine similarity ≥ this (calibrated: see "
            "[Default thresholds](#default-thresholds))"
        ),
    ),
    Param(
        "lower_threshold",
        "float",
        0.05,
        stage="reduce",
        low=0,
        high=1,
        help="fraction of kNN edges, least similar first, written to outliers.csv",
        doc=(
            "outliers.csv holds this fraction of the kNN edges computed (n × k), at most one row per "
            "image: the images whose nearest neighbour is least similar"
        ),
    ),
    Param(
        "nearest_neighbors_k",
        "int",
        DEFAULT_K,
        stage="reduce",
        low=1,
        cli=("-k", "--nearest-neighbors-k"),
        aliases=("k",),
        help="neighbours per image",
        doc="neighbours searched per image (3 links every image of a group of four to the other three)",
    ),
    Param(
        "ccthreshold",
        "float",
        DEFAULT_CCTHRESHOLD,
        stage="reduce",
        low=0,
        high=1,
        cli=(),
        turi=True,
        help="pairs of similarity.csv at or above it join components",
    ),
    Param(
        "turi_param",
        "str",
        "",
        recorded=False,
        help="fastdup's comma list, e.g. 'ccthreshold=0.9,delete_tar=0'",
        doc=(
            "fastdup's comma list: `ccthreshold=0.7` (components), `delete_tar=0,delete_img=0` (keep "
            "downloaded archives / extracted images; for archive inputs)"
        ),
    ),
    Param(
        "delete_tar",
        "bool",
        True,
        stage="storage",
        cli=(),
        turi=True,
        help="True: remote archives are streamed and never kept; False keeps a copy of each in cache_dir",
    ),
    Param(
        "delete_img",
        "bool",
        True,
        stage="storage",
        cli=(),
        turi=True,
        help="True: images inside archives are read in memory and never kept; False keeps them in cache_dir",
    ),
    Param(
        "num_images",
        "int",
        0,
        stage="map",
        low=0,
        help="only the first N images of the sorted listing (0 = all)",
        doc="only the first N images of the sorted listing (0 = all): try a run on a few images first",
    ),
    Param("verbose", "bool", False, help="debug logging and Ray Data progress bars"),
    Param(
        "d",
        "int",
        DEFAULT_D,
        stage="map",
        low=1,
        fingerprint=True,
        help="feature width of the model",
        doc="feature width of the model; checked against the model's output",
    ),
    Param(
        "model_path",
        "path",
        None,
        stage="map",
        optional=True,
        shown_default="shipped EfficientNet-Lite0",
        help="your own ONNX model",
        doc="your own ONNX model (see below); a resume compares its file name",
    ),
    Param(
        "precision",
        "str",
        "auto",
        stage="map",
        choices=("auto", "int8", "fp32", "fp16"),
        help=(
            "shipped model, all at 176 px: int8 (CPU default, ~2.3x the fp32 speed), fp16 (GPU default) "
            "or fp32"
        ),
        doc=(
            "shipped model, all at 176 px with d=320: `int8` (the CPU default: ~2.3x the fp32 model's speed "
            "per core, average precision 0.991 against 0.994 on the quality benchmark's report half), "
            "`fp16` (the GPU default; scores as fp32) or `fp32`"
        ),
    ),
    Param(
        "compute",
        "str",
        "cpu",
        stage="map",
        choices=("cpu", "gpu"),
        help="where to embed (gpu falls back to cpu when none is found)",
        doc=(
            "`gpu`: embedding actors use one GPU each with onnxruntime-gpu's CUDA provider, in batches of "
            "at least 256, fed by CPU decode tasks, and the exact kNN runs on faiss-gpu. Whether CUDA "
            "really starts is checked with a session on a worker holding a GPU (onnxruntime-gpu lists "
            "CUDA even where its libraries cannot load); when it does not, the run says why in one log "
            "line and embeds on CPU with the CPU model, decided once before any shard and recorded in "
            "config.json. The fp16 model never runs on the CPU provider"
        ),
    ),
    Param(
        "executor",
        "str",
        "auto",
        choices=("auto", "local", "ray"),
        help=(
            "local: worker processes on this machine; ray: Ray Data and Ray tasks; auto: ray when a "
            "cluster is given, inputs are remote or compute is gpu"
        ),
        doc=(
            "`local`: the local engine, worker processes of this program (one single-threaded ONNX "
            "Runtime session each), also for the distributed reduce's tasks; `ray`: the Ray engine, Ray "
            "Data tasks and actors, Ray tasks for the reduce; `auto`: `ray` when `RAY_ADDRESS` is set or "
            "Ray is already started, when `compute='gpu'`, or when inputs are remote (many archives read "
            "at once), else `local`"
        ),
    ),
    Param(
        "run_mode",
        "int",
        0,
        choices=(0, 1, 2, 3, 4),
        help=(
            "0 extract + neighbours, 1 extract features only, 2 neighbours from the shards in work-dir, "
            "3 score test-dir images against work-dir's index, 4 the same with test-dir features"
        ),
        doc=(
            "0 extract + neighbours + components; 1 extract features only; 2 neighbours and components "
            "from the shards in `work_dir` (also a user's own features written with "
            "`save_binary_feature`, any d, or a `features.dat` + `.csv` that fastdup wrote; every vector "
            "is scaled to unit length when read, so `distance` is the cosine for any vectors); 3 extract "
            "the images of `test_dir` (into `work_dir/test_features`) and score each against "
            "`work_dir`'s saved index; 4 the same with features already in `test_dir`. Modes 3 and 4 "
            "write `work_dir/test_results/` (`similarity.csv` pairs from a test image to a train image, "
            "`outliers.csv`) and leave the train run's files as they are"
        ),
    ),
    Param(
        "test_dir",
        "path",
        None,
        optional=True,
        help="run_mode 3: images, run_mode 4: extracted features, to score against work-dir's index",
        doc="run_mode 3: test images; run_mode 4: a folder of test features",
    ),
    Param(
        "overwrite",
        "bool",
        False,
        help="clear an earlier run in --work-dir first (needed to reuse a work dir for another input)",
        doc=(
            "clear an earlier run in `work_dir` (shards, outputs, index) first; without it a rerun on "
            "another `input_dir` or other extraction settings is refused"
        ),
    ),
    Param(
        "nn_provider",
        "str",
        "nnf",
        stage="reduce",
        choices=("nnf", "turi"),
        help="index family, fastdup's names",
        doc="index family, see [Nearest neighbours](#nearest-neighbours-and-components)",
    ),
    Param(
        "nnf_mode",
        "str",
        "Flat",
        stage="reduce",
        help=(
            "faiss factory string for nn_provider=nnf: Flat (exact), HNSW32, IVF4096,Flat, IVF16384,PQ64, ..."
        ),
        doc="faiss factory string for `nn_provider='nnf'`",
    ),
    Param(
        "nnmodel",
        "str",
        "brute_force",
        stage="reduce",
        choices=("brute_force", "ball_tree", "lsh"),
        help="index for nn_provider=turi",
        doc="index for `nn_provider='turi'`",
    ),
    Param(
        "nprobe",
        "int",
        2,
        stage="reduce",
        low=1,
        help="nnf_mode IVF<n>,Flat: lists each image is compared with, exactly",
        doc=(
            "for `nnf_mode='IVF<n>,Flat'` and the distributed reduce's routed kNN: lists each image is "
            "compared with, exactly (n = every list: exact kNN)"
        ),
    ),
    Param(
        "reduce_strategy",
        "str",
        "auto",
        stage="reduce",
        choices=("auto", "memory", "distributed"),
        help=(
            "memory: every vector in one process; distributed: tasks writing Parquet parts; auto: "
            "distributed above --reduce-memory-gb"
        ),
        doc=(
            "`memory` (every vector in one process), `distributed` ([waves of tasks]"
            "(#the-reduce-at-scale-distributed)), or `auto` (distributed above `reduce_memory_gb`)"
        ),
    ),
    Param(
        "reduce_memory_gb",
        "float",
        8.0,
        stage="reduce",
        low=0,
        low_open=True,
        help="above this many GiB of vectors the reduce runs distributed, as tasks of the engine",
    ),
    Param(
        "rows_per_partition",
        "int",
        250_000,
        stage="reduce",
        low=1,
        help="rows per task of the distributed reduce",
    ),
    Param(
        "csv_row_limit",
        "int",
        50_000_000,
        stage="reduce",
        low=0,
        help="the distributed reduce writes a table's CSV too while it has at most this many rows",
        doc="above this many rows a table of the distributed reduce is written as Parquet parts only",
    ),
    Param(
        "min_offset",
        "int",
        0,
        stage="map",
        low=0,
        help="first input (archive or image) of the sorted listing to process",
        doc="first of the sorted inputs (archives, or images) to process",
    ),
    Param(
        "max_offset",
        "int",
        None,
        stage="map",
        low=1,
        optional=True,
        help="process inputs before this offset (exclusive)",
        doc="process the sorted inputs before this offset (exclusive; none: to the end)",
    ),
    Param(
        "shard_size",
        "int",
        1000,
        stage="map",
        low=1,
        fingerprint=True,
        help="loose images per features shard",
    ),
    Param(
        "video_fps",
        "float",
        1.0,
        stage="map",
        low=0,
        low_open=True,
        fingerprint=True,
        help="frames taken per second of video",
    ),
    Param(
        "thumbnail_size",
        "int",
        256,
        stage="map",
        low=0,
        help="longest side of the thumbnails kept for the galleries; 0 = none (galleries read the files)",
        doc="longest side of the JPEG thumbnails stored per shard for the galleries; 0 = none: the "
        "galleries then make them from the images' own files, and images inside tars show none",
    ),
    _margin(
        "augmentation_additive_margin", None, "pixels added on each side of a bounding box before its cut"
    ),
    _margin(
        "augmentation_horiz", 1, "a bounding box made this fraction wider (half each side) before its cut"
    ),
    _margin(
        "augmentation_vert", 1, "a bounding box made this fraction taller (half each side) before its cut"
    ),
    Param("batch_size", "int", 64, stage="map", low=1, help="images per decode and embedding batch"),
    Param(
        "num_threads",
        "int",
        0,
        stage="map",
        low=0,
        help="embedding actors (worker processes with --executor local); 0 = one per CPU",
        doc=(
            "embedding actors (worker processes with the local engine); 0 = one per CPU (of the Ray "
            "cluster; of this process's affinity and cgroup quota locally)"
        ),
    ),
    Param(
        "cache_dir",
        "path",
        None,
        stage="storage",
        optional=True,
        shown_default="`<temp>/fastdup_ray_cache-<uid>` (private, 0700)",
        help="where delete_tar=0 / delete_img=0 keep archives and images",
    ),
    Param(
        "s3_endpoint_url",
        "str",
        None,
        stage="storage",
        optional=True,
        shown_default="`AWS_ENDPOINT_URL`, else AWS",
        help="S3-compatible endpoint",
        doc="S3-compatible endpoint, e.g. a MinIO server's (see [Credentials](#s3-and-minio-credentials))",
    ),
    Param(
        "s3_region",
        "str",
        None,
        stage="storage",
        optional=True,
        shown_default="`AWS_REGION` / AWS config",
        help="S3 region",
    ),
    Param(
        "s3_profile",
        "str",
        None,
        stage="storage",
        optional=True,
        shown_default="`AWS_PROFILE`, else `default`",
        help=(
            "profile of ~/.aws/credentials; keys themselves only via AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        ),
    ),
    Param(
        "s3_key",
        "str",
        None,
        stage="storage",
        optional=True,
        cli=(),  # a key on a command line is visible to every user of the machine
        recorded=False,
        shown_default="AWS's own lookup",
        help="S3 access key id, never written to config.json or a log",
    ),
    Param(
        "s3_secret",
        "str",
        None,
        stage="storage",
        optional=True,
        cli=(),
        recorded=False,
        shown_default="AWS's own lookup",
        help="S3 secret key, never written to config.json or a log",
    ),
)

BY_NAME = {p.name: p for p in PARAMS}
ALIASES = {alias: p.name for p in PARAMS for alias in p.aliases}  # fastdup's short names
TURI_PARAM_KEYS = tuple(p.name for p in PARAMS if p.turi)
FINGERPRINTED = tuple(p.name for p in PARAMS if p.fingerprint)

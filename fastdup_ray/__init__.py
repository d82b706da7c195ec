"""fastdup_ray: duplicates, near-duplicates, outliers and clusters in image datasets, on Ray.

Public API (a thin layer over the stage modules):

- :func:`run` — the whole job over a folder of images, with fastdup's parameter names.
- :func:`create` — fastdup's v1 object API: ``fd.run()``, the run's tables as DataFrames
  (``fd.similarity()``, ``fd.connected_components()``, ...) and ``fd.vis`` galleries.
- :func:`load_binary_features` / :func:`save_binary_feature` — the features.dat format.
- :class:`RunConfig` — every parameter of a run, validated.
- :func:`evaluate_run` — precision/recall/F1, average precision, component purity against ground truth.
- ``create_*_gallery`` / :func:`export_to_tensorboard_projector` — reports over a finished run.
"""

from fastdup_ray.actions.evaluate import evaluate_run
from fastdup_ray.actions.remove import remove_duplicates
from fastdup_ray.actions.search import init_search, search, vector_search
from fastdup_ray.actions.video_frames import extract_video_frames
from fastdup_ray.api import Fastdup, create
from fastdup_ray.config import RunConfig
from fastdup_ray.errors import (
    ConfigError,
    FastdupRayError,
    InputError,
    StorageUnavailableError,
)
from fastdup_ray.pipeline import RunSummary, run
from fastdup_ray.reports import (
    Visualizer,
    create_components_gallery,
    create_duplicate_videos_gallery,
    create_duplicates_gallery,
    create_galleries,
    create_outliers_gallery,
    create_similarity_gallery,
    create_stats_gallery,
    export_to_tensorboard_projector,
    find_top_components,
)
from fastdup_ray.reports.explore import explore
from fastdup_ray.reports.projector import generate_sprite_image
from fastdup_ray.rundir.shards import load_binary_feature, load_binary_features, save_binary_feature

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "create",
    "create_components_gallery",
    "create_duplicate_videos_gallery",
    "create_duplicates_gallery",
    "create_galleries",
    "create_outliers_gallery",
    "create_similarity_gallery",
    "create_stats_gallery",
    "explore",
    "export_to_tensorboard_projector",
    "extract_video_frames",
    "FastdupRayError",
    "InputError",
    "init_search",
    "evaluate_run",
    "find_top_components",
    "generate_sprite_image",
    "Fastdup",
    "RunConfig",
    "RunSummary",
    "Visualizer",
    "load_binary_feature",
    "load_binary_features",
    "remove_duplicates",
    "run",
    "save_binary_feature",
    "search",
    "StorageUnavailableError",
    "vector_search",
]

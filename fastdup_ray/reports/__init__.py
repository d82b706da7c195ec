"""Reports over a finished run: HTML galleries, their index, the notebook Visualizer and
the TensorBoard projector export.

They read the run's outputs and the thumbnails stored at extraction; they never rerun
the pipeline or re-read the dataset.
"""

from fastdup_ray.reports.create import (
    create_components_gallery,
    create_duplicate_videos_gallery,
    create_duplicates_gallery,
    create_outliers_gallery,
    create_similarity_gallery,
    create_stats_gallery,
    find_top_components,
)
from fastdup_ray.reports.overview import create_galleries
from fastdup_ray.reports.projector import export_to_tensorboard_projector
from fastdup_ray.reports.vis import Visualizer

__all__ = [
    "Visualizer",
    "create_components_gallery",
    "create_duplicate_videos_gallery",
    "create_duplicates_gallery",
    "create_galleries",
    "create_outliers_gallery",
    "create_similarity_gallery",
    "create_stats_gallery",
    "export_to_tensorboard_projector",
    "find_top_components",
]

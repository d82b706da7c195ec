"""Reports over a finished run: HTML galleries and the TensorBoard projector export.

They read the run's outputs and the thumbnails stored at extraction; they never rerun
the pipeline or re-read the dataset.
"""

from fastdup_ray.reports.galleries import (
    create_components_gallery,
    create_duplicates_gallery,
    create_outliers_gallery,
    create_similarity_gallery,
    create_stats_gallery,
)
from fastdup_ray.reports.projector import export_to_tensorboard_projector

__all__ = [
    "create_components_gallery",
    "create_duplicates_gallery",
    "create_outliers_gallery",
    "create_similarity_gallery",
    "create_stats_gallery",
    "export_to_tensorboard_projector",
]

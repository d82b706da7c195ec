"""The benchmarks' photo sets: fastdup_ray.photoset's builders, over the 300 photos of
../shared/data/imagenet-sample-dev by default."""

from pathlib import Path

from fastdup_ray.photoset import (  # noqa: F401 (the benchmarks import them from here)
    HALVES,
    build_set,
    build_volume_set,
    list_photos,
)

DEFAULT_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample-dev"

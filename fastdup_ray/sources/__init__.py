"""Source stage: turn ``input_dir`` into the sorted list of image locations to process.

Folders only for now; archives, object stores, file lists and video come as further
modules beside folder.py.
"""

from __future__ import annotations

from fastdup_ray.sources.folder import Listing, list_folder


def list_inputs(input_dir: str, num_images: int = 0) -> Listing:
    """Every image under ``input_dir`` (sorted), cut to the first ``num_images`` when > 0."""
    listing = list_folder(input_dir)
    if num_images:
        listing = listing.first(num_images)
    return listing


__all__ = ["Listing", "list_folder", "list_inputs"]

"""List the images of a local folder, recursively, in a stable (sorted) order."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from fastdup_ray.decode import IMAGE_EXTENSIONS
from fastdup_ray.errors import InputError

log = logging.getLogger("fastdup_ray")


@dataclass
class Listing:
    """Image locations to decode, plus inputs already known to be bad (with reasons)."""

    locations: list[str] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)

    def first(self, n: int) -> "Listing":
        """The first n inputs of the sorted order, good and bad alike."""
        merged = sorted([(loc, None) for loc in self.locations] + list(self.bad))[:n]
        return Listing([loc for loc, why in merged if why is None], [(loc, why) for loc, why in merged if why is not None])

    def __len__(self) -> int:
        return len(self.locations) + len(self.bad)


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def list_folder(input_dir: str) -> Listing:
    """All files with an image extension under ``input_dir`` (any case), sorted.

    A single image file is a folder of one. Names that are not valid UTF-8 cannot be
    written to the CSV outputs faithfully, so they go to the bad list under an escaped name.
    """
    if not os.path.exists(input_dir):
        raise InputError(f"input_dir {input_dir!r} does not exist")
    if os.path.isfile(input_dir):
        if not is_image_name(input_dir):
            raise InputError(f"input_dir {input_dir!r} is a file without an image extension ({', '.join(IMAGE_EXTENSIONS)})")
        candidates = [os.path.abspath(input_dir)]
        skipped = 0
    else:
        candidates, skipped = [], 0
        for folder, dirs, files in os.walk(os.path.abspath(input_dir)):
            dirs.sort()
            for name in files:
                if is_image_name(name):
                    candidates.append(os.path.join(folder, name))
                else:
                    skipped += 1
    listing = Listing()
    for path in sorted(candidates):
        try:
            path.encode("utf-8")
            listing.locations.append(path)
        except UnicodeEncodeError:
            escaped = os.fsencode(path).decode("utf-8", errors="backslashreplace")
            listing.bad.append((escaped, "file name is not valid UTF-8"))
    if not listing:
        raise InputError(f"no images found under {input_dir!r} (looked for {', '.join(IMAGE_EXTENSIONS)} in any case)")
    if skipped:
        log.info("skipped %d files without an image extension under %s", skipped, input_dir)
    return listing

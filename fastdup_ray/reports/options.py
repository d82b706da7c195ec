"""The options a gallery takes beyond its own parameters, as fastdup names them.

Each gallery function declares what it accepts once, in its signature; the rest of
fastdup's keyword arguments come in ``**options`` and are checked here: one that fastdup
has and this tool does not implement is a ConfigError that names it and says what to do
instead, one that neither has is a ConfigError naming it and the gallery's options (a
notebook gets one line, not ``TypeError: unexpected keyword argument``).

:class:`Look` is how a gallery's images are drawn: fastdup's ``max_width`` (the widest an
image is shown, in CSS pixels), ``keep_aspect_ratio`` and ``enhance_image`` (grey,
histogram-equalised thumbnails, as fastdup draws them).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from fastdup_ray.errors import ConfigError

# fastdup's gallery options that this tool has no counterpart for, and what to do instead.
OUT_OF_REACH = {
    "get_bounding_box_func": "give the boxes to fd.run(annotations=...) (col_x, row_y, width, height "
    "columns) and show them with draw_bbox=True",
    "get_extra_col_func": "give the extra column in annotations= (or external_df=) and name it label_col=",
    "get_reformat_filename_func": "rename the files in annotations= before run()",
    "get_display_filename_func": "rename the files in annotations= before run()",
    "id_to_filename_func": "galleries read the run's own file names",
    "hierarchical_run": "hierarchical galleries are not supported",
    "keyword": "filter the rows first and give them as external_df=",
    "vqa_prompt": "captioning and VQA are not part of fastdup_ray",
    "blur_threshold": "filter fd.img_stats() by blur and give the rows as external_df=",
    "how": "only how='one' (each outlier beside its nearest neighbour) is supported",
}
# fastdup options that change nothing here: pages always load their thumbnails from files
# beside them (fastdup's lazy loading), and images come from the run's stored thumbnails,
# so input_dir (where fastdup re-reads them) is not needed.
NO_EFFECT = ("lazy_load", "jupyter_html", "input_dir")
# fastdup's options for a run of bounding boxes, which every gallery takes (boxed_view).
BOX_VIEW = ("draw_bbox", "load_crops")


def boxed_view(options: dict) -> bool:
    """Whether a gallery shows each crop of a run of bounding boxes as its whole image with
    the box drawn (``draw_bbox=True``, or ``load_crops=False``: fastdup's full images) rather
    than the crop itself (``load_crops=True``, the default for such a run). A run of whole
    images shows them either way."""
    for name in BOX_VIEW:
        value = options.get(name)
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}")
    return bool(options.get("draw_bbox")) or options.get("load_crops") is False


def check_options(gallery: Callable, options: dict, also: tuple[str, ...] = ()) -> None:
    """Refuse, in one line, each of ``options`` that ``gallery`` does not take (its
    parameters, and the ``also`` it reads from its keyword arguments)."""
    name = getattr(gallery, "__qualname__", getattr(gallery, "__name__", "gallery")).replace(
        "Visualizer.", "fd.vis."
    )
    for option in options:
        if option in NO_EFFECT or option in BOX_VIEW or option in also:
            continue
        if option in OUT_OF_REACH:
            raise ConfigError(f"{name}({option}=...) is not supported: {OUT_OF_REACH[option]}")
        accepted = [
            p.name
            for p in inspect.signature(gallery).parameters.values()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"
        ] + list(also)
        raise ConfigError(f"{name}() has no option {option!r}; it takes {', '.join(accepted)}")


@dataclass(frozen=True)
class Look:
    """How a gallery's images are drawn (fastdup's max_width, keep_aspect_ratio,
    enhance_image; ``boxed``: crops as their whole image with the box drawn, boxed_view)."""

    max_width: int | None = None
    keep_aspect_ratio: bool = True
    enhance_image: bool = False
    boxed: bool = False

    def __post_init__(self) -> None:
        if self.max_width is not None and (
            isinstance(self.max_width, bool) or not isinstance(self.max_width, int) or self.max_width < 16
        ):
            raise ConfigError(f"max_width must be a whole number of CSS pixels >= 16, got {self.max_width!r}")

    def tile_size(self, thumbnail_size: int) -> int:
        """The longest side of a shown image: thumbnail_size, at most max_width."""
        return thumbnail_size if self.max_width is None else min(thumbnail_size, self.max_width)

"""Export a sample of a run's feature vectors to TensorBoard's embedding projector.

Writes what the projector plugin reads from a log dir: ``tensors.tsv`` (one vector per
line), ``metadata.tsv`` (a header, then file name, component and its size per line),
``sprite.png`` (the thumbnails stored at extraction, in a square grid of fixed-size
cells) and ``projector_config.pbtxt`` naming them. TensorBoard itself is only needed to
look at the result (``pip install 'fastdup-ray[projector]'``).
"""

from __future__ import annotations

import io
import logging
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from fastdup_ray.errors import ConfigError, InputError
from fastdup_ray.reports.tables import RunTables
from fastdup_ray.rundir.shards import load_rows, read_marker
from fastdup_ray.rundir.workdir import write_file_atomically

log = logging.getLogger("fastdup_ray")

TENSOR_NAME = "fastdup_ray"
# A sprite may be at most 8192 px on a side, so at 64 px per cell 128 x 128 images.
MAX_SPRITE_SIDE = 8192


def choose_sample(n: int, sample_size: int, seed: int = 0) -> np.ndarray:
    """Sorted row ids of a reproducible uniform sample (all rows when n <= sample_size)."""
    if n <= sample_size:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=sample_size, replace=False)).astype(np.int64)


def sprite_image(thumbnails: list[bytes | None], cell: int) -> Image.Image:
    """A square grid of cell x cell tiles in row order, each thumbnail fitted and centred
    on white (an empty tile where there is none), as the projector expects."""
    side = max(1, math.ceil(math.sqrt(len(thumbnails))))
    sheet = Image.new("RGB", (side * cell, side * cell), "white")
    for i, jpeg in enumerate(thumbnails):
        if not jpeg:
            continue
        with Image.open(io.BytesIO(jpeg)) as thumb:
            tile = thumb.convert("RGB")
            tile.thumbnail((cell, cell))
        x, y = (i % side) * cell, (i // side) * cell
        sheet.paste(tile, (x + (cell - tile.width) // 2, y + (cell - tile.height) // 2))
    return sheet


def projector_config(n: int, d: int, cell: int, with_sprite: bool) -> str:
    """The projector_config.pbtxt text (protobuf text format of ProjectorConfig)."""
    lines = [
        "embeddings {",
        f'  tensor_name: "{TENSOR_NAME}"',
        '  tensor_path: "tensors.tsv"',
        '  metadata_path: "metadata.tsv"',
        f"  tensor_shape: {n}",
        f"  tensor_shape: {d}",
    ]
    if with_sprite:
        lines += [
            "  sprite {",
            '    image_path: "sprite.png"',
            f"    single_image_dim: {cell}",
            f"    single_image_dim: {cell}",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _tsv_field(text: str) -> str:
    # Tabs and line breaks would split a row of metadata.tsv.
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def export_to_tensorboard_projector(
    work_dir, log_dir, sample_size: int = 900, sprite_cell: int = 64, seed: int = 0
) -> Path:
    """Write a projector log dir for a uniform sample of ``sample_size`` images of a run;
    returns the config's path. Open it with ``%tensorboard --logdir LOG_DIR``."""
    if sample_size < 1:
        raise ValueError(f"sample_size must be at least 1, got {sample_size}")
    most = (MAX_SPRITE_SIDE // sprite_cell) ** 2
    if sample_size > most:
        log.warning(
            "sample_size %d is more than a %d px sprite holds at %d px per image; using %d",
            sample_size,
            MAX_SPRITE_SIDE,
            sprite_cell,
            most,
        )
        sample_size = most
    tables = RunTables(work_dir)
    names = tables.names
    ids = choose_sample(names.height, sample_size, seed)
    d = int((read_marker(tables.work, tables.prefixes[0]) or {}).get("d", 0))
    vectors = load_rows(tables.work, tables.prefixes, ids, d)
    filenames = names["filename"].gather(ids).to_list()
    component = tables.component_sizes()
    thumbs = tables.single_run("projector export").thumbnails(ids.tolist(), size=sprite_cell)

    folder = Path(log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    np.savetxt(buffer, vectors, delimiter="\t", fmt="%.6g")
    write_file_atomically(folder / "tensors.tsv", buffer.getvalue().encode())
    rows = ["filename\tcomponent_id\tcomponent_size"]
    for i, name in zip(ids.tolist(), filenames):
        c, n = component.get(i, ("", ""))
        rows.append(f"{_tsv_field(name)}\t{c}\t{n}")
    write_file_atomically(folder / "metadata.tsv", ("\n".join(rows) + "\n").encode("utf-8"))
    with_sprite = bool(thumbs)
    if with_sprite:
        sheet = io.BytesIO()
        sprite_image([thumbs.get(i) for i in ids.tolist()], sprite_cell).save(sheet, format="PNG")
        write_file_atomically(folder / "sprite.png", sheet.getvalue())
    else:
        log.warning("no thumbnails in %s: the projector shows points without images", tables.work.location)
    config = folder / "projector_config.pbtxt"
    write_file_atomically(
        config, projector_config(len(ids), vectors.shape[1], sprite_cell, with_sprite).encode()
    )
    log.info("projector export: %d of %d images in %s", len(ids), names.height, folder)
    return config


def generate_sprite_image(
    img_list,
    sample_size: int,
    log_dir,
    get_label_func=None,
    h: int = 0,
    w: int = 0,
    alternative_filename=None,
    alternative_width=None,
    max_width: int | None = None,
) -> tuple[str, list]:
    """fastdup's sprite of image files: the first ``sample_size`` of ``img_list`` (local
    files) in a square grid of ``h`` (or ``w``, else 64) px cells, saved as
    ``<log_dir>/sprite.png`` (or ``alternative_filename``), scaled to ``max_width``
    when given. Returns (path, labels): each image's label by ``get_label_func`` (a
    mapping or a function of the file name), or [] without it."""
    if alternative_width is not None:
        raise ConfigError("generate_sprite_image(alternative_width=...) is not supported: the grid is square")
    files = [os.fspath(name) for name in list(img_list)[:sample_size]]
    if not files or sample_size < 1:
        raise ConfigError("generate_sprite_image needs at least one image and sample_size >= 1")
    cell = int(h or w or 64)
    cells = []
    for name in files:
        try:
            with Image.open(name) as picture:
                tile = picture.convert("RGB")
        except (OSError, ValueError) as exc:
            raise InputError(f"generate_sprite_image cannot read {name}: {exc}") from None
        tile.thumbnail((cell, cell))
        buffer = io.BytesIO()
        tile.save(buffer, format="JPEG", quality=90)
        cells.append(buffer.getvalue())
    sheet = sprite_image(cells, cell)
    if max_width is not None and sheet.width > max_width:
        sheet = sheet.resize((max_width, round(sheet.height * max_width / sheet.width)))
    path = Path(alternative_filename) if alternative_filename else Path(log_dir) / "sprite.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    out = io.BytesIO()
    sheet.save(out, format="PNG")
    write_file_atomically(path, out.getvalue())
    label = get_label_func.get if isinstance(get_label_func, dict) else get_label_func
    return str(path), [label(name) for name in files] if label else []

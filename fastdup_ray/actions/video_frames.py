"""fastdup's ``extract_video_frames(input_dir, work_dir)``: the frames of every video under
``input_dir`` written as JPEG files to ``<work_dir>/tmp`` (fastdup's folder), for a run
over them or any other use. The frames are the map side's (map/sources/video.py: PyAV,
``video_fps`` frames a second, named by their time), so a run on the videos themselves
sees the same pictures; a video that cannot be read is a row of ``tmp/frames.bad.csv``."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import polars as pl
from PIL import Image

from fastdup_ray.errors import ConfigError, InputError
from fastdup_ray.map.sources import list_inputs
from fastdup_ray.map.sources.items import ReadSettings
from fastdup_ray.map.sources.kinds import kind_of
from fastdup_ray.map.sources.video import read_video
from fastdup_ray.rundir.storage import is_remote
from fastdup_ray.rundir.workdir import write_file_atomically

log = logging.getLogger("fastdup_ray")

FRAMES_DIR = "tmp"  # fastdup's name for the folder of extracted frames
BAD_FRAMES = "frames.bad.csv"


def frame_path(video: str, frame: str, input_dir) -> str:
    """Where a frame of ``video`` goes under the frames folder: the video's path below a
    local input folder (its file name otherwise), then the frame's own name."""
    root = os.fspath(input_dir) if isinstance(input_dir, (str, os.PathLike)) else None
    if root and not is_remote(root) and os.path.isdir(root):
        relative = os.path.relpath(video, root)
    else:
        relative = video.rstrip("/").rsplit("/", 1)[-1]
    return f"{relative}/{frame.rsplit('/', 1)[-1]}"


def extract_video_frames(
    input_dir,
    work_dir,
    verbose: bool = False,
    num_threads: int = -1,
    num_images: int = 0,
    min_offset: int = 0,
    max_offset: int = 0,
    turi_param: str = "",
    model_path: str | None = None,
    d: int | None = None,
    resize_video: int = 0,
    keyframes_only: int = 1,
    license: str = "",
    no_sort: int = 0,
    resume: int = 1,
    save_timestamp: int = 0,
    video_fps: float = 1.0,
) -> int:
    """Write the frames of the videos in ``input_dir`` (``min_offset``/``max_offset`` pick
    videos of the sorted list, ``num_images`` caps the frames) to ``<work_dir>/tmp``;
    returns 0 as fastdup does. Frames are taken ``video_fps`` a second, keyframes or not."""
    del verbose, num_threads, model_path, d, keyframes_only, license, no_sort, resume, save_timestamp
    if resize_video:
        raise ConfigError("extract_video_frames(resize_video=1) is not supported: frames keep their size")
    if turi_param:
        raise ConfigError(f"extract_video_frames(turi_param={turi_param!r}) is not supported")
    out = Path(os.fspath(work_dir)) / FRAMES_DIR
    listing = list_inputs(input_dir, exclude=[os.fspath(work_dir)])
    videos = [name for name in listing.files if kind_of(name) == "video"]
    videos = videos[min_offset : max_offset or None]
    if not videos:
        raise InputError(f"no videos in {input_dir} (min_offset={min_offset}, max_offset={max_offset})")
    settings = ReadSettings(video_fps=video_fps)
    written, bad = 0, []
    for video in videos:
        for item in read_video(video, settings):
            if not item.ok:
                bad.append((item.location, item.reason))
                continue
            if num_images and written >= num_images:
                break
            target = out / frame_path(video, item.location, input_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            jpeg = io.BytesIO()
            Image.fromarray(item.pixels).save(jpeg, format="JPEG", quality=95)
            write_file_atomically(target, jpeg.getvalue())  # a crash leaves no half frame
            written += 1
    out.mkdir(parents=True, exist_ok=True)
    bad_frame = pl.DataFrame(bad, schema={"filename": pl.String, "error": pl.String}, orient="row")
    write_file_atomically(out / BAD_FRAMES, bad_frame.write_csv().encode())
    log.info(
        "extract_video_frames: %d frames of %d videos in %s (%d unreadable)",
        written,
        len(videos),
        out,
        len(bad),
    )
    return 0

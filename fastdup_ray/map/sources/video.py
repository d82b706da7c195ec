"""Frames out of videos with PyAV (FFmpeg ships inside its wheel: no system ffmpeg needed).

One frame per second by default (``video_fps``); each frame is named
``<video location>/frame_<seconds>s.jpg`` so its time is in its name.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from fastdup_ray.map.sources.files import read_whole
from fastdup_ray.map.sources.items import Item, ReadSettings


def frame_name(video: str, seconds: float) -> str:
    return f"{video}/frame_{seconds:08.3f}s.jpg"


def iter_video_frames(location: str, data: bytes, fps: float = 1.0, max_frames: int = 0) -> Iterator[Item]:
    """Frames at ``fps`` per second as RGB Items; an unreadable video is one bad Item."""
    try:
        import av
    except ImportError:
        yield Item(location, reason="video input needs PyAV: pip install 'fastdup_ray[video]'")
        return
    step = 1.0 / fps
    next_time = 0.0
    count = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                yield Item(location, reason="no video stream")
                return
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                seconds = float(frame.time) if frame.time is not None else count * step
                if seconds + 1e-6 < next_time:
                    continue
                yield Item(frame_name(location, seconds), pixels=frame.to_ndarray(format="rgb24"))
                count += 1
                while next_time <= seconds + 1e-6:
                    next_time += step
                if max_frames and count >= max_frames:
                    return
    except (av.error.FFmpegError, ValueError, OSError, EOFError) as exc:
        yield Item(location, reason=f"unreadable video after {count} frames: {exc}")
        return
    if count == 0:
        yield Item(location, reason="unreadable video: no frames decoded")


def read_video(location: str, settings: ReadSettings) -> Iterator[Item]:
    """A loose video file: read whole, then its frames at ``settings.video_fps``."""
    data = read_whole(location, settings)
    if isinstance(data, Item):
        yield data
        return
    yield from iter_video_frames(location, data, fps=settings.video_fps)

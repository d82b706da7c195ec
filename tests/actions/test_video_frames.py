"""fastdup's extract_video_frames: the frames a run would take of each video, written as
JPEG files to work_dir/tmp, an unreadable video listed with its reason."""

from __future__ import annotations

import os

import numpy as np
import polars as pl
import pytest
from PIL import Image

import fastdup_ray
from fastdup_ray.errors import ConfigError, InputError
from fastdup_ray.sample import make_scene


def write_video(path, seconds=3):
    av = pytest.importorskip("av")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for second in range(seconds):  # a different scene each second, 10 frames each
            picture = np.asarray(make_scene(600 + second, material=second))
            for _ in range(10):
                for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_frames_are_written_under_work_dir_tmp_by_video_and_time(tmp_path):
    videos = tmp_path / "videos"
    (videos / "cam").mkdir(parents=True)
    write_video(videos / "cam" / "clip.mp4")
    (videos / "broken.avi").write_bytes(os.urandom(3000))
    work = tmp_path / "work"
    assert fastdup_ray.extract_video_frames(str(videos), str(work)) == 0
    frames = sorted(p.relative_to(work / "tmp").as_posix() for p in (work / "tmp").rglob("*.jpg"))
    assert frames == [f"cam/clip.mp4/frame_000{s}.000s.jpg" for s in range(3)]
    with Image.open(work / "tmp" / frames[0]) as first:
        assert first.size == (320, 240)
    bad = pl.read_csv(work / "tmp" / "frames.bad.csv")
    assert bad["filename"].to_list() == [str(videos / "broken.avi")] and "video" in bad["error"][0]
    fastdup_ray.extract_video_frames(str(videos), str(tmp_path / "two"), video_fps=2, num_images=4)
    assert len(list((tmp_path / "two" / "tmp").rglob("*.jpg"))) == 4
    summary = fastdup_ray.run(str(work / "tmp"), str(tmp_path / "run"), executor="local", num_threads=2, k=2)
    assert summary.good == 3


def test_no_videos_and_unsupported_options_are_one_line_errors(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"not a video")
    with pytest.raises(InputError, match="no videos in"):
        fastdup_ray.extract_video_frames(str(tmp_path), str(tmp_path / "work"))
    with pytest.raises(ConfigError, match="resize_video=1"):
        fastdup_ray.extract_video_frames(str(tmp_path), str(tmp_path / "work"), resize_video=1)

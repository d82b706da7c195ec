"""Degenerate runs end without a traceback anywhere: a slice past the end, no readable
image, one image, no similar pairs. A run that read nothing says so and fails."""

from __future__ import annotations

import logging

import pytest

import fastdup_ray
from fastdup_ray.cli import main
from fastdup_ray.errors import FastdupRayError
from fastdup_ray.sample import jpeg_bytes, make_scene


def folder(tmp_path, scenes: int, broken: int = 0):
    root = tmp_path / "images"
    root.mkdir()
    for i in range(scenes):
        (root / f"scene_{i}.jpg").write_bytes(jpeg_bytes(make_scene(5200 + i, material=i)))
    for i in range(broken):
        (root / f"broken_{i}.jpg").write_bytes(b"not a jpeg at all")
    return root


@pytest.fixture(autouse=True)
def fresh_console():
    """The run's console handler writes to the sys.stderr of its time: capsys's, here."""
    logging.getLogger("fastdup_ray").handlers.clear()
    yield
    logging.getLogger("fastdup_ray").handlers.clear()


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    logging.getLogger("fastdup_ray").handlers.clear()
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("fastdup-ray: error:")]


def test_a_slice_past_the_end_is_an_error_naming_the_offset(tmp_path, capsys):
    images = folder(tmp_path, 3)
    code, _, err = run_cli(
        capsys,
        "run",
        str(images),
        "--work-dir",
        str(tmp_path / "work"),
        "--min-offset",
        "100",
        "--executor",
        "local",
    )
    assert code != 0
    [line] = error_lines(err)
    assert "min_offset" in line and "3" in line
    with pytest.raises(FastdupRayError, match="min_offset"):
        fastdup_ray.run(str(images), str(tmp_path / "work2"), min_offset=100, executor="local")


def test_a_run_that_reads_no_image_fails_naming_the_first_location(tmp_path, capsys):
    images = folder(tmp_path, 0, broken=2)
    code, _, err = run_cli(
        capsys, "run", str(images), "--work-dir", str(tmp_path / "work"), "--executor", "local"
    )
    assert code != 0
    [line] = error_lines(err)
    assert "no image" in line and str(images / "broken_0.jpg") in line
    assert (tmp_path / "work" / "features.bad.csv").read_text().count("broken_") == 2  # still accounted for
    with pytest.raises(FastdupRayError, match="broken_0.jpg"):
        fastdup_ray.run(str(images), str(tmp_path / "work2"), executor="local")


@pytest.mark.parametrize("scenes", [1, 2])
def test_one_image_or_no_similar_pairs_run_and_every_command_reads_the_run(tmp_path, capsys, scenes):
    images = folder(tmp_path, scenes, broken=1)
    work = tmp_path / "work"
    code, _, _ = run_cli(
        capsys, "run", str(images), "--work-dir", str(work), "--threshold", "0.99", "--executor", "local"
    )
    assert code == 0
    assert (work / "similarity.csv").read_text().splitlines()[1:] == []
    assert len((work / "connected_components.csv").read_text().splitlines()) == 1 + scenes
    code, _, _ = run_cli(capsys, "create-galleries", str(work), str(tmp_path / "galleries"))
    assert code == 0 and (tmp_path / "galleries" / "index.html").exists()
    code, out, _ = run_cli(capsys, "dedup", str(work))
    assert code == 0
    assert (work / "remove.csv").read_text().splitlines()[1:] == []
    assert len((work / "keep.csv").read_text().splitlines()) == 1 + scenes
    groups = tmp_path / "groups.csv"
    groups.write_text(
        "filename,group\n" + "".join(f"{images / f'scene_{i}.jpg'},{i}\n" for i in range(scenes))
    )
    code, out, _ = run_cli(capsys, "evaluate", str(work), "--groups", str(groups))
    assert code == 0 and "precision" in out
    summary = fastdup_ray.run(str(images), str(tmp_path / "again"), threshold=0.99, executor="local")
    assert (summary.good, summary.bad, summary.similar_pairs) == (scenes, 1, 0)

"""Commands over a work dir that holds no run fail with one line on stderr and exit
status 2, never a traceback, and leave a missing work dir missing."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = {
    "dedup": ["dedup", "{work}"],
    "evaluate": ["evaluate", "{work}", "--groups", "{groups}"],
    "duplicates": ["create-duplicates-gallery", "{work}", "{out}"],
    "outliers": ["create_outliers_gallery", "{work}", "{out}"],
    "components": ["create-components-gallery", "{work}", "{out}"],
    "stats": ["create-stats-gallery", "{work}", "{out}"],
    "similarity": ["create-similarity-gallery", "{work}", "{out}"],
    "galleries": ["create-galleries", "{work}", "{out}"],
    "projector": ["export-to-tensorboard-projector", "{work}", "{out}"],
}


def run_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastdup_ray", *args], check=False, capture_output=True, text=True, timeout=120
    )


def assert_one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("fastdup-ray: error: "), (
        done.stderr
    )
    assert all(word in lines[0] for word in words), lines[0]


@pytest.mark.integration
@pytest.mark.parametrize("state", ["empty", "missing", "started"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_work_dir_without_a_run_is_a_one_line_error(command, state, tmp_path):
    work = tmp_path / "work"
    if state != "missing":
        work.mkdir()
    if state == "started":  # a run that stopped before its first shard was finished
        (work / "config.json").write_text('{"threshold": 0.75, "nearest_neighbors_k": 2}')
    groups = tmp_path / "groups.csv"
    groups.write_text("filename,group\na.jpg,1\nb.jpg,1\n")
    args = [arg.format(work=work, groups=groups, out=tmp_path / "out") for arg in COMMANDS[command]]
    assert_one_line_error(run_command(*args), str(work))
    assert work.exists() == (state != "missing")


@pytest.mark.integration
def test_evaluate_names_a_missing_or_malformed_groups_file(sample, tmp_path):
    import fastdup_ray

    work = tmp_path / "work"
    fastdup_ray.run(str(sample.root), str(work), executor="local")
    assert_one_line_error(
        run_command("evaluate", str(work), "--groups", str(tmp_path / "nothing.csv")), "nothing.csv"
    )
    (tmp_path / "wrong.csv").write_text("name,label\na.jpg,1\n")
    assert_one_line_error(
        run_command("evaluate", str(work), "--groups", str(tmp_path / "wrong.csv")),
        "wrong.csv",
        "filename,group",
    )
    (tmp_path / "ragged.csv").write_text('filename,group\na.jpg,1\n"unclosed,1\n')
    assert_one_line_error(
        run_command("evaluate", str(work), "--groups", str(tmp_path / "ragged.csv")), "ragged.csv"
    )

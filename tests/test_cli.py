"""Command-line habits: --version, each command once in the usage, a suggestion for a
mistyped option, fastdup's underscore names still working, and a demo that says what to
run next with absolute paths."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import fastdup_ray


def cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastdup_ray", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, RAY_ADDRESS=""),
    )


def test_version():
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"fastdup-ray {fastdup_ray.__version__}"


def test_usage_lists_each_command_once():
    usage = cli("--help").stdout
    commands = usage.split("{", 1)[1].split("}", 1)[0].split(",")
    assert len(commands) == len(set(commands)) and "create-duplicates-gallery" in commands
    assert not [c for c in commands if "_" in c]


def test_a_mistyped_option_names_the_nearest_one(tmp_path):
    result = cli("run", str(tmp_path), "--work-dir", str(tmp_path / "w"), "--thresold", "0.5")
    assert result.returncode == 2 and "did you mean --threshold?" in result.stderr


def test_fastdup_function_names_still_work_as_commands(tmp_path):
    result = cli("create_duplicates_gallery", str(tmp_path / "missing"), str(tmp_path / "g"))
    assert result.returncode == 2 and "no finished run" in result.stderr


@pytest.mark.integration
def test_demo_prints_the_next_command_with_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("demo", "out", "--executor", "local", timeout=300)
    assert result.returncode == 0, result.stderr
    work, galleries = tmp_path / "out" / "work", tmp_path / "out" / "galleries"
    assert f"fastdup-ray create-galleries {work} {galleries}" in result.stdout
    assert f"file://{galleries}/index.html" in result.stdout

"""cluster/ and configs/: every file parses, every fastdup_ray command in them exists in the CLI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from fastdup_ray.cli import build_parser, config_from_args, load_config_file
from fastdup_ray.config import RunConfig
from fastdup_ray.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
FILES = sorted((REPO / "configs").glob("*.yaml")) + sorted((REPO / "cluster").glob("*.yaml"))
COMMAND = re.compile(r"(?:python3? -m fastdup_ray|fastdup-ray) ([^\n#]*)")


def test_there_are_config_and_cluster_files():
    assert {p.parent.name for p in FILES} == {"configs", "cluster"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_file_parses_and_its_commands_exist(path):
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents
    commands = COMMAND.findall(path.read_text())
    assert commands, f"{path} shows no fastdup_ray command"
    for command in commands:
        tokens = shlex.split(command.replace("\\\\", " "))
        build_parser().parse_args(tokens)  # exits (fails the test) on an unknown command or option


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_job_configs_are_valid_run_configs(path):
    values = load_config_file(str(path))
    config = RunConfig.from_kwargs(values.pop("input_dir"), values.pop("work_dir"), **values)
    assert config.work_dir


def test_command_line_overrides_the_config_file_and_unknown_keys_are_named(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("input_dir: /data/in\nwork-dir: /data/out\nthreshold: 0.8\nk: 4\n")
    args = vars(build_parser().parse_args(["run", "--config", str(path), "--threshold", "0.9"]))
    args.pop("command")
    config = config_from_args(args)
    assert (config.threshold, config.nearest_neighbors_k, config.work_dir) == (0.9, 4, "/data/out")
    path.write_text("input_dir: /data/in\nwork_dir: /data/out\nthreshhold: 0.8\n")
    args = vars(build_parser().parse_args(["run", "--config", str(path)]))
    args.pop("command")
    with pytest.raises(ConfigError, match="threshhold"):
        config_from_args(args)


def test_brace_pattern_lists_the_shards(tmp_path):
    from fastdup_ray.map.sources import list_inputs

    for i in range(3):
        (tmp_path / f"{i:05d}.tar").write_bytes(b"")
    listing = list_inputs(f"{tmp_path}/{{00000..00002}}.tar")
    assert listing.archives == [str(tmp_path / f"{i:05d}.tar") for i in range(3)]

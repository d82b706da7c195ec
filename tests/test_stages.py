"""Stages take frozen settings and return what they did: only pipeline.py reads RunConfig
or fills a RunSummary."""

import ast
import dataclasses
from pathlib import Path

import pytest

import fastdup_ray
from fastdup_ray.config import RunConfig
from fastdup_ray.map.plan import DecodeSettings, EmbedSettings, MapSettings
from fastdup_ray.params import PARAMS
from fastdup_ray.pipeline import reduce_settings
from fastdup_ray.reduce.strategy import ReduceSettings

PACKAGE = Path(fastdup_ray.__file__).parent
STAGE_PACKAGES = ("map", "reduce", "engine", "rundir", "reports", "actions")


def names_imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_stage_imports_run_config_or_run_summary():
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(
            name
            for name in names_imported(path)
            if name.startswith("fastdup_ray.config") or name.endswith(".RunSummary")
        )
        for folder in STAGE_PACKAGES
        for path in sorted((PACKAGE / folder).rglob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_reduce_settings_are_the_reduce_stage_parameters():
    reduce_params = {p.name for p in PARAMS if p.stage == "reduce"}
    assert {f.name for f in dataclasses.fields(ReduceSettings)} == reduce_params | {"d", "compute"}
    settings = reduce_settings(RunConfig("in", "out", threshold=0.8, nprobe=5, d=64), "gpu")
    assert (settings.threshold, settings.nprobe, settings.d, settings.compute) == (0.8, 5, 64, "gpu")
    assert settings.spec == "Flat"


@pytest.mark.parametrize("cls", [ReduceSettings, MapSettings, DecodeSettings, EmbedSettings])
def test_settings_are_frozen(cls):
    assert cls.__dataclass_params__.frozen

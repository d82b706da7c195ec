"""End to end, with a real Ray runtime: the CLI in a subprocess and the Python API."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

import fastdup_ray
from fastdup_ray.config import DEFAULT_D, DEFAULT_K

pytestmark = pytest.mark.integration

EXPECTED_FILES = {
    "config.json",
    "features.dat",
    "features.dat.csv",
    "features.bad.csv",
    "features.done",
    "features.thumbnails.parquet",
    "nnf.index",
    "features.stats.csv",
    "stats.csv",
    "stats.parquet",
    "similarity.csv",
    "outliers.csv",
    "component_info.csv",
    "connected_components.csv",
}


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_ADDRESS="")  # never join a cluster the test machine may have
    return subprocess.run(
        [sys.executable, "-m", "fastdup_ray", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture(scope="module")
def cli_run(sample, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    result = cli("run", str(sample.root), "--work-dir", str(work))
    return result, work


def test_cli_run_leaves_exactly_the_output_files(cli_run):
    result, work = cli_run
    assert result.returncode == 0, result.stderr
    assert {p.name for p in work.iterdir()} == EXPECTED_FILES
    assert "images: 18 good, 1 bad" in result.stderr


def test_every_input_is_in_exactly_one_list(cli_run, sample):
    _, work = cli_run
    names, features = fastdup_ray.load_binary_features(work)
    bad = pl.read_csv(work / "features.bad.csv")
    listed = names + bad["filename"].to_list()
    assert sorted(listed) == sorted(str(p) for p in sample.images + sample.corrupt)
    assert len(set(listed)) == len(listed)
    assert bad["filename"].to_list() == [str(sample.corrupt[0])]
    assert "truncated" in bad["error"][0]
    assert features.shape == (18, DEFAULT_D)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-4)


def test_similarity_finds_exactly_the_planted_pairs(cli_run, sample):
    _, work = cli_run
    similarity = pl.read_csv(work / "similarity.csv")
    assert similarity.columns == ["from", "to", "distance", "exact"]
    assert not similarity["exact"].any()  # the planted copies are edited, none byte-identical
    found = {frozenset(pair) for pair in zip(similarity["from"], similarity["to"])}
    planted = {frozenset((str(a), str(b))) for a, b in sample.duplicate_pairs}
    assert found == planted
    assert similarity["distance"].is_sorted(descending=True)


def test_components_group_the_planted_pairs_only(cli_run, sample):
    _, work = cli_run
    names, _ = fastdup_ray.load_binary_features(work)
    components = pl.read_csv(work / "connected_components.csv")
    assert components.columns == ["__id", "component_id", "pagerank", "delta", "filename"]
    assert components["__id"].to_list() == list(range(len(names)))
    label = dict(zip(names, components["component_id"]))
    for a, b in sample.duplicate_pairs:
        assert label[str(a)] == label[str(b)]
    info = pl.read_csv(work / "component_info.csv")
    assert info.columns[:2] == ["component_id", "Count"]
    assert sorted(info["Count"].to_list(), reverse=True) == [2] * 6 + [1] * 6
    outliers = pl.read_csv(work / "outliers.csv")
    assert outliers.height == int(np.ceil(0.05 * 18 * DEFAULT_K)) and outliers["distance"].max() < 0.75


def test_api_run_on_a_ray_cluster_with_num_images(ray_local, sample, tmp_path):
    summary = fastdup_ray.run(
        str(sample.root), str(tmp_path), k=3, num_images=5, threshold=0.5, turi_param="ccthreshold=0.9"
    )
    names, _ = fastdup_ray.load_binary_features(tmp_path)
    bad = pl.read_csv(tmp_path / "features.bad.csv")
    assert summary.good + summary.bad == 5 == len(names) + bad.height
    assert summary.good == len(names)
    config = (tmp_path / "config.json").read_text()
    assert '"nearest_neighbors_k": 3' in config and '"ccthreshold": 0.9' in config


def test_gpu_asked_without_a_gpu_runs_on_cpu_with_the_cpu_model_and_says_so_once(sample, tmp_path, caplog):
    """This machine has no CUDA: the run embeds every shard with the int8 CPU model (not the
    fp16 GPU model on CPU), searches with faiss on CPU, and one warning line says why."""
    import logging

    from fastdup_ray.map.embed import cuda_available

    if cuda_available():
        pytest.skip("this machine has a CUDA GPU")
    with caplog.at_level(logging.WARNING, logger="fastdup_ray"):
        summary = fastdup_ray.run(str(sample.root), str(tmp_path), compute="gpu", k=3)
    warnings = [r.message for r in caplog.records if r.levelno >= logging.WARNING]
    assert (
        len(warnings) == 1
        and "no GPU was found" in warnings[0]
        and "efficientnet_lite0_int8_w7.onnx" in warnings[0]
    )
    assert '"model_file": "efficientnet_lite0_int8_w7.onnx"' in (tmp_path / "config.json").read_text()
    pairs = pl.read_csv(tmp_path / "similarity.csv")
    assert summary.good == len(sample.images) and {frozenset(p) for p in zip(pairs["from"], pairs["to"])} >= {
        frozenset((str(a), str(b))) for a, b in sample.duplicate_pairs
    }


def test_gpu_asked_where_cuda_is_listed_but_cannot_start_runs_the_cpu_model_and_says_why(
    sample, tmp_path, caplog, monkeypatch
):
    """As with onnxruntime-gpu on a machine whose CUDA libraries do not load: the provider
    is listed, a session made with it runs on CPU. The run must not embed with the fp16
    GPU model on the CPU provider (what it did): it warns once, with the reason, and
    records the CPU model it ran in config.json."""
    import logging

    import onnxruntime as ort

    from fastdup_ray.map import embed

    if embed.cuda_available():
        pytest.skip("this onnxruntime lists CUDA itself")
    listed = [embed.CUDA, *ort.get_available_providers()]
    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    embed.cuda_problem.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="fastdup_ray"):
            summary = fastdup_ray.run(str(sample.root), str(tmp_path), compute="gpu", executor="local", k=3)
    finally:
        embed.cuda_problem.cache_clear()
    warnings = [r.message for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "CUDA did not start" in warnings[0] and "int8" in warnings[0], warnings
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["compute"], config["model_file"]) == ("cpu", "efficientnet_lite0_int8_w7.onnx")
    assert summary.good == len(sample.images)


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "/no/such/folder", "--work-dir", "{tmp}"], "does not exist"),
        (["run", "{tmp}", "--work-dir", "{tmp}/out"], "no images found"),
        (["run", "{tmp}", "--work-dir", "{tmp}/out", "--threshold", "2"], "threshold"),
        (["run", "{tmp}", "--work-dir", "{tmp}/out", "--turi-param", "ccthreshold=x"], "ccthreshold"),
    ],
)
def test_cli_errors_are_one_clear_line(tmp_path, args, message):
    result = cli(*[a.replace("{tmp}", str(tmp_path)) for a in args], timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_evaluate_against_the_planted_groups(cli_run, sample, tmp_path):
    _, work = cli_run
    truth = tmp_path / "groups.csv"
    rows = ["filename,group"] + [f"{a},{i}\n{b},{i}" for i, (a, b) in enumerate(sample.duplicate_pairs)]
    truth.write_text("\n".join(rows) + "\n")
    result = cli("evaluate", str(work), "--groups", str(truth), timeout=120)
    assert result.returncode == 0, result.stderr
    scores = dict(line.split(": ") for line in result.stdout.splitlines())
    assert float(scores["precision"]) == 1.0 and float(scores["recall"]) == 1.0
    assert float(scores["average_precision"]) == 1.0 and float(scores["component_purity"]) == 1.0
    assert scores["true_pairs"] == "6"


def test_stats_one_row_per_image_with_flags(cli_run, sample):
    _, work = cli_run
    names, _ = fastdup_ray.load_binary_features(work)
    stats = pl.read_csv(work / "stats.csv")
    assert stats.columns[:2] == ["__id", "filename"] and stats["filename"].to_list() == names
    assert pl.read_parquet(work / "stats.parquet").equals(stats)
    row = dict(zip(stats.columns, stats.row(names.index(str(sample.images[0])))))
    assert (row["width"], row["height"]) == (320, 240) and row["file_size"] == sample.images[0].stat().st_size
    assert 0 <= row["min"] <= row["mean"] <= row["max"] <= 255 and row["unique_colors"] > 1000
    assert not any(row[c] for c in stats.columns if c.startswith("is_"))
    assert "is_grayscale" in stats.columns


def test_cli_dedup_keeps_one_image_per_planted_pair(cli_run, sample, tmp_path):
    import shutil

    work = tmp_path / "work"
    shutil.copytree(cli_run[1], work)  # keep the shared run's folder as the run left it
    result = cli("dedup", str(work), "--keep", "resolution", timeout=120)
    assert result.returncode == 0, result.stderr
    keep, remove = pl.read_csv(work / "keep.csv"), pl.read_csv(work / "remove.csv")
    assert remove.height == len(sample.duplicate_pairs) and keep.height == 12
    # The copies are smaller or equal in resolution, so the originals stay (ties: first in order).
    originals = {str(a) for a, _ in sample.duplicate_pairs}
    assert originals <= set(keep["filename"].to_list())

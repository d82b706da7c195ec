"""The engine layer: Ray only in its engine module; both engines' map gives what a plain
loop gives, for the reduce's kNN over index shards and the union-find rounds."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import fastdup_ray
from fastdup_ray.engine import open_engine

PACKAGE = Path(fastdup_ray.__file__).parent
IMPORTS_RAY = re.compile(r"^\s*(import ray\b|from ray\b)", re.MULTILINE)


def test_ray_is_imported_only_in_the_ray_engine():
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if IMPORTS_RAY.search(path.read_text())
    ]
    assert offenders == ["engine/ray.py"]


def test_a_local_run_never_imports_ray(tmp_path):
    import subprocess
    import sys

    from fastdup_ray.sample import jpeg_bytes, make_scene

    (tmp_path / "in").mkdir()
    for i in range(3):
        (tmp_path / "in" / f"{i}.jpg").write_bytes(jpeg_bytes(make_scene(i)))
    code = (
        "import sys, fastdup_ray; "
        f"fastdup_ray.run({str(tmp_path / 'in')!r}, {str(tmp_path / 'work')!r}, executor='local'); "
        "print('ray' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={"RAY_ADDRESS": "", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_a_driver_script_without_a_main_guard_runs_once(tmp_path):
    """Spawned workers must not run the caller's script again: most driver scripts have
    no ``if __name__ == "__main__":`` guard."""
    import subprocess
    import sys

    from fastdup_ray.sample import jpeg_bytes, make_scene

    (tmp_path / "in").mkdir()
    for i in range(4):
        (tmp_path / "in" / f"{i}.jpg").write_bytes(jpeg_bytes(make_scene(i)))
    script = tmp_path / "driver.py"
    script.write_text(
        "import fastdup_ray\n"
        f"summary = fastdup_ray.run({str(tmp_path / 'in')!r}, {str(tmp_path / 'work')!r}, "
        "executor='local', num_threads=2)\n"
        "print('runs finished:', summary.good)\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"RAY_ADDRESS": "", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("runs finished:") == 1 and "runs finished: 4" in result.stdout


@pytest.mark.integration
@pytest.mark.parametrize("engine_name", ["local", "ray"])
def test_either_engine_maps_a_partial_in_order(ray_local, engine_name):
    """The distributed reduce maps partials carrying its plan; Ray's remote() alone refuses them."""
    import operator
    from functools import partial

    engine = open_engine(engine_name, num_threads=2)
    try:
        assert list(engine.map(partial(operator.mul, 3), [1, 2, 3, 4])) == [3, 6, 9, 12]
        assert list(engine.map(partial(np.add, 1), [np.arange(2)]))[0].tolist() == [1, 2]
    finally:
        engine.close()


@pytest.mark.integration
def test_a_ray_gpu_whose_worker_cannot_start_cuda_embeds_with_the_cpu_model(tmp_path):
    """A cluster that offers a GPU whose worker cannot run CUDA (here: Ray told it has one
    GPU, on a machine without CUDA) must not start fp16 actors on the CPU: the run asks a
    GPU worker, warns with its answer and embeds with the CPU model, as config.json says."""
    import json
    import subprocess
    import sys

    pytest.importorskip("ray")
    from fastdup_ray.map.embed import cuda_available
    from fastdup_ray.sample import jpeg_bytes, make_scene

    if cuda_available():
        pytest.skip("this onnxruntime lists CUDA")
    (tmp_path / "in").mkdir()
    for i in range(4):
        (tmp_path / "in" / f"{i}.jpg").write_bytes(jpeg_bytes(make_scene(i)))
    code = (
        "import ray, fastdup_ray; "
        "ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level='WARNING'); "
        f"s = fastdup_ray.run({str(tmp_path / 'in')!r}, {str(tmp_path / 'work')!r}, "
        "executor='ray', compute='gpu', k=2); print('good', s.good)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={"RAY_ADDRESS": "", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "good 4" in result.stdout
    assert "compute='gpu' but no GPU was found: onnxruntime has no CUDAExecutionProvider" in result.stderr
    config = json.loads((tmp_path / "work" / "config.json").read_text())
    assert (config["compute"], config["model_file"]) == ("cpu", "efficientnet_lite0_int8.onnx")

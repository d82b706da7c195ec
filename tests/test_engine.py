"""The engine layer: Ray only in its engine module; both engines' map gives what a plain
loop gives, for the reduce's kNN over index shards and the union-find rounds."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import fastdup_ray
from fastdup_ray.engine import open_engine
from fastdup_ray.index import knn_search, sharded_knn

PACKAGE = Path(fastdup_ray.__file__).parent
IMPORTS_RAY = re.compile(r"^\s*(import ray\b|from ray\b)", re.MULTILINE)


def test_ray_is_imported_only_in_the_ray_engine():
    offenders = [str(path.relative_to(PACKAGE)) for path in sorted(PACKAGE.rglob("*.py")) if IMPORTS_RAY.search(path.read_text())]
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
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env={"RAY_ADDRESS": "", "PATH": "/usr/bin:/bin"})
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
        f"summary = fastdup_ray.run({str(tmp_path / 'in')!r}, {str(tmp_path / 'work')!r}, executor='local', num_threads=2)\n"
        "print('runs finished:', summary.good)\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env={"RAY_ADDRESS": "", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("runs finished:") == 1 and "runs finished: 4" in result.stdout


@pytest.mark.integration
@pytest.mark.parametrize("engine_name", ["local", "ray"])
def test_sharded_knn_through_either_engine_equals_exact(ray_local, engine_name):
    rng = np.random.default_rng(3)
    features = rng.normal(size=(600, 16)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    engine = open_engine(engine_name, num_threads=2)
    try:
        sims, ids = sharded_knn(np.split(features, [200, 400]), k=5, map_fn=engine.map)
    finally:
        engine.close()
    exact_sims, exact_ids = knn_search(features, 5)
    np.testing.assert_allclose(sims, exact_sims, atol=1e-5)
    assert (ids == exact_ids).mean() > 0.999

"""The engine layer: Ray only in its engine module; both engines' map gives what a plain
loop gives, for the reduce's kNN over index shards and the union-find rounds."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

import fastdup_ray
from fastdup_ray.engine import open_engine
from fastdup_ray.map.plan import DecodeSettings, EmbedSettings, MapPlan, MapSettings
from fastdup_ray.map.record import EMBEDDED, IMAGE, UNCOUNTED, UNIT_END
from fastdup_ray.sample import jpeg_bytes, make_scene

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


def test_a_local_wave_of_one_item_runs_in_a_worker_not_the_calling_process():
    """The reduce's one-item waves (train, outliers, the tables) hold a wave's data: in the
    calling process they would make the driver's peak grow with the run."""
    import os

    engine = open_engine("local", num_threads=2)
    try:
        (pid,) = engine.map(getpid_of, [0])
        assert pid != os.getpid()
        assert list(engine.map(getpid_of, [])) == []
    finally:
        engine.close()


def test_local_workers_run_faiss_on_one_thread_each(monkeypatch):
    """A worker per core, each running faiss on every core, oversubscribes the machine
    (benchmarks/reduce.py --scaling --executor local shows it): each worker gets one
    thread, as Ray's one-CPU tasks do; the calling process keeps its own setting, and a
    user's OMP_NUM_THREADS is passed on as it is."""
    import os

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    engine = open_engine("local", num_threads=2)
    try:
        assert set(engine.map(faiss_threads, [0, 1, 2, 3])) == {1}
    finally:
        engine.close()
    assert "OMP_NUM_THREADS" not in os.environ
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    engine = open_engine("local", num_threads=2)
    try:
        assert set(engine.map(faiss_threads, [0, 1])) == {2}
    finally:
        engine.close()


def faiss_threads(_: int) -> int:
    import faiss

    return faiss.omp_get_max_threads()


def getpid_of(_: int) -> int:
    import os

    return os.getpid()


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
    assert (config["compute"], config["model_file"]) == ("cpu", "efficientnet_lite0_int8_w7.onnx")


def map_modules_imported(path: Path) -> set[str]:
    """The fastdup_ray.map modules a source file imports, at any depth of it."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(
                f"{node.module}.{alias.name}" for alias in node.names if node.module == "fastdup_ray"
            )
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name == "fastdup_ray.map" or name.startswith("fastdup_ray.map.")}


def test_the_engines_import_nothing_of_the_map_but_its_plan():
    """An engine schedules what the map declares; a new map stage or setting touches no engine."""
    imported = {path.name: map_modules_imported(path) for path in sorted((PACKAGE / "engine").glob("*.py"))}
    assert imported == {
        "__init__.py": set(),
        "local.py": {"fastdup_ray.map.plan"},
        "ray.py": {"fastdup_ray.map.plan"},
    }


class RecordingSink:
    """A sink that keeps every batch an engine hands it, each checked against the record."""

    def __init__(self) -> None:
        self.batches = []

    def add(self, batch) -> None:
        self.batches.append(EMBEDDED.check(batch))

    def gave_up(self, unit: str) -> bool:
        return False

    def rows(self) -> dict[str, list[tuple[str, int, int]]]:
        """unit -> (path, control, unit_rows) of its rows, in the order they came."""
        out: dict[str, list] = {}
        for batch in self.batches:
            for unit, path, control, count in zip(
                batch["unit"], batch["path"], batch["control"], batch["unit_rows"]
            ):
                out.setdefault(str(unit), []).append((str(path), int(control), int(count)))
        return out


def small_plan(tmp_path) -> MapPlan:
    """A folder of 5 photos and a broken file, an archive of 3, and an empty unit, cut 2 rows at a time."""
    from conftest import write_tar

    from fastdup_ray.map.embed import Embedder
    from fastdup_ray.map.sources import ReadSettings, WorkUnit

    files = []
    for i in range(5):
        files.append(tmp_path / f"{i}.jpg")
        files[-1].write_bytes(jpeg_bytes(make_scene(i)))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    tar = write_tar(tmp_path / "t.tar", {f"m{i}.jpg": jpeg_bytes(make_scene(10 + i)) for i in range(3)})
    units = (
        WorkUnit("a.", "files", tuple(str(p) for p in [*files, tmp_path / "broken.jpg"])),
        WorkUnit("t.tar", "archive", (str(tar),)),
        WorkUnit("empty.", "files", ()),
    )
    model = Embedder()
    settings = MapSettings(
        ReadSettings(),
        DecodeSettings(model.image_size, 32),
        EmbedSettings(model.model_path, 320),
        batch_size=2,
    )
    return MapPlan(settings, units)


@pytest.mark.integration
def test_control_rows_round_trip_through_both_engines(ray_local, tmp_path):
    """Each unit's rows come in listing order, then exactly one UNIT_END row. On CPU, Ray's
    actors read an archive whole and count its rows; loose files are cut into pieces on
    both engines (so every worker has work), and a last cut cannot count them."""
    plan = small_plan(tmp_path)
    seen = {}
    for name in ("local", "ray"):
        engine, sink = open_engine(name, num_threads=2), RecordingSink()
        try:
            engine.extract(plan, sink)
        finally:
            engine.close()
        seen[name] = sink
        rows = sink.rows()
        assert list(rows) == ["a.", "t.tar", "empty."]
        # Ray reads an archive in one actor call; locally only the empty unit is a single cut.
        counted = (
            {"a.": UNCOUNTED, "t.tar": 3, "empty.": 0}
            if name == "ray"
            else {"a.": UNCOUNTED, "t.tar": UNCOUNTED, "empty.": 0}
        )
        for unit, unit_rows in rows.items():
            *images, (_, control, announced) = unit_rows
            assert control == UNIT_END and all(c == IMAGE for _, c, _ in images), unit
            assert announced == counted[unit] and len(images) == {"a.": 6, "t.tar": 3, "empty.": 0}[unit]
        assert [p.rsplit("/", 1)[-1] for p, _, _ in rows["t.tar"][:-1]] == ["m0.jpg", "m1.jpg", "m2.jpg"]
    vectors = {
        name: np.concatenate([b["embedding"][b["control"] == IMAGE] for b in sink.batches])
        for name, sink in seen.items()
    }
    assert np.allclose(vectors["local"], vectors["ray"], atol=1e-6) and vectors["ray"].shape == (9, 320)


@pytest.mark.integration
def test_a_ray_job_with_fewer_pieces_than_cores_starts_no_idle_actor(ray_local, tmp_path):
    """One archive on 2 CPUs is one piece of work: a second actor would only load the model
    and wait, a start-up every small job (a rerun of one shard) pays on a busy cluster."""
    from conftest import write_tar

    tar = write_tar(tmp_path / "one.tar", {f"m{i}.jpg": jpeg_bytes(make_scene(20 + i)) for i in range(3)})
    plan = small_plan(tmp_path)
    plan = MapPlan(plan.settings, (type(plan.units[0])("one.tar", "archive", (str(tar),)),))

    def stage_actors() -> set[str]:  # every actor the GCS knows of, the finished ones too
        actors = ray_local._private.state.actors()
        return {key for key, actor in actors.items() if "StageActor" in actor["ActorClassName"]}

    before = stage_actors()
    engine, sink = open_engine("ray"), RecordingSink()
    try:
        engine.extract(plan, sink)
    finally:
        engine.close()
    assert len(sink.rows()["one.tar"]) == 4  # its 3 images and the unit's end
    assert len(stage_actors() - before) == 1


def test_only_the_thread_count_ray_gives_a_job_driver_is_overridden():
    """`ray job submit` starts its entrypoint with OMP_NUM_THREADS=1 (Ray's default for
    the job supervisor, which asks no CPU): the run then searches on the node's cores. A
    value the job's runtime_env set, or one outside a job, is the user's and is kept."""
    import json

    from fastdup_ray.engine import ray_job_single_thread

    job = {"runtime_env": {"working_dir": "gcs://_ray_pkg_1.zip"}, "metadata": {}}
    asked = {"runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1"}}}
    assert ray_job_single_thread({"OMP_NUM_THREADS": "1", "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(job)})
    assert not ray_job_single_thread(
        {"OMP_NUM_THREADS": "1", "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(asked)}
    )
    assert not ray_job_single_thread({"OMP_NUM_THREADS": "1"})  # a shell's own setting
    assert not ray_job_single_thread({"OMP_NUM_THREADS": "4", "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(job)})
    assert not ray_job_single_thread({"OMP_NUM_THREADS": "1", "RAY_JOB_CONFIG_JSON_ENV_VAR": "not json"})

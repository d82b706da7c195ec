"""A real Ray cluster on loopback (a head and a worker node started with `ray start`),
`ray job submit`, and the faults a long run meets: a worker node dying during
extraction, the driver killed and the same command run again, the S3 server going away
for a few seconds. Each run's outputs must equal an undisturbed run's, with every input
in exactly one of the features and bad lists."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from loopback import LoopbackCluster

import fastdup_ray
from fastdup_ray.engine import available_cpus
from fastdup_ray.sample import jpeg_bytes, make_scene, near_duplicate

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
OUTPUTS = ("similarity.csv", "outliers.csv", "component_info.csv", "connected_components.csv", "stats.csv")


class Cluster(LoopbackCluster):
    """The rehearsal's loopback cluster (tests/loopback.py), with drivers started here."""

    def run(self, *args: str) -> subprocess.Popen:
        """``python -m fastdup_ray run ...`` as a driver joining this cluster."""
        env = dict(self.env, RAY_ADDRESS=f"127.0.0.1:{self.port}")
        return subprocess.Popen(
            [sys.executable, "-m", "fastdup_ray", "run", *args],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture(scope="module")
def cluster():
    started = Cluster()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """240 generated photos, 22 of them with a near-duplicate copy, and a broken JPEG:
    263 inputs, 14 shards of 20."""
    root = tmp_path_factory.mktemp("photos")
    for i in range(240):
        scene = make_scene(20_000 + i, material=i % 12)
        (root / f"p{i:04d}.jpg").write_bytes(jpeg_bytes(scene))
        if i % 11 == 0:
            (root / f"p{i:04d}_copy.jpg").write_bytes(jpeg_bytes(near_duplicate(scene, i)))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not a whole jpeg")
    return root


def outputs_of(work: Path) -> dict[str, str]:
    return {name: (work / name).read_text() for name in OUTPUTS}


def accounted(work: Path) -> list[str]:
    names, _ = fastdup_ray.load_binary_features(work)
    bad = pl.read_csv(work / "features.bad.csv", infer_schema=False)[
        "filename"
    ].to_list()  # every shard's, merged
    return sorted(names + bad)


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    _, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return err


@pytest.fixture(scope="module")
def undisturbed(cluster, photos, tmp_path_factory):
    work = tmp_path_factory.mktemp("undisturbed") / "work"
    finish(cluster.run(str(photos), "--work-dir", str(work), "--shard-size", "20"))
    return work


def wait_for_shards(work: Path, process: subprocess.Popen, count: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = len(list(work.glob("*features.done")))
        if done >= count:
            return done
        assert process.poll() is None, "the run ended before the fault could be injected"
        time.sleep(0.02)
    raise AssertionError("no shard finished in time")


def test_ray_job_submit_runs_the_cli_on_the_cluster(cluster, tmp_path):
    from fastdup_ray.sample import make_sample_dataset

    sample = make_sample_dataset(tmp_path / "sample")
    work = tmp_path / "work"
    deadline = time.monotonic() + 60
    while True:  # the head's job agent takes a few seconds to come up after `ray start`
        done = subprocess.run(
            [
                cluster.ray,
                "job",
                "submit",
                "--address",
                f"http://127.0.0.1:{cluster.dashboard_port}",
                "--working-dir",
                str(REPO),
                "--",
                "python",
                "-m",
                "fastdup_ray",
                "run",
                str(sample.root),
                "--work-dir",
                str(work),
            ],
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if "No available agent" not in done.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    said = done.stdout + done.stderr
    assert "succeeded" in said and "joining the Ray cluster" in said
    # Ray gives the job's driver OMP_NUM_THREADS=1; its kNN search still uses the node's cores.
    assert f"nearest-neighbour search on {available_cpus()} threads" in said, said[-3000:]
    similarity = pl.read_csv(work / "similarity.csv")
    assert {frozenset(p) for p in zip(similarity["from"], similarity["to"])} == {
        frozenset(map(str, p)) for p in sample.duplicate_pairs
    }


def test_worker_node_killed_during_extraction(cluster, photos, undisturbed, tmp_path):
    work = tmp_path / "work"
    run = cluster.run(str(photos), "--work-dir", str(work), "--shard-size", "20")
    try:
        finished_before = wait_for_shards(work, run, 1)
        assert cluster.kill_worker_node() == 1
        assert finished_before < 14 and run.poll() is None  # the node died mid-extraction
        finish(run)
    finally:
        run.kill()
        cluster.start_worker()  # for the tests after this one
    assert outputs_of(work) == outputs_of(undisturbed)
    assert accounted(work) == accounted(undisturbed) and len(set(accounted(work))) == 263


def test_driver_killed_then_the_same_command_resumes(cluster, photos, undisturbed, tmp_path):
    work = tmp_path / "work"
    run = cluster.run(str(photos), "--work-dir", str(work), "--shard-size", "20")
    wait_for_shards(work, run, 2)
    run.send_signal(signal.SIGKILL)  # no cleanup, no finally blocks: a crashed driver
    run.wait()
    finished = len(list(work.glob("*features.done")))
    assert 2 <= finished < 14
    err = finish(cluster.run(str(photos), "--work-dir", str(work), "--shard-size", "20"))
    skipped = int(err.split("already finished, skipped")[0].rsplit("(", 1)[1].strip())
    assert skipped >= finished - 1 and skipped > 0  # finished shards are not redone
    assert outputs_of(work) == outputs_of(undisturbed)
    assert accounted(work) == accounted(undisturbed)


def cluster_processes(raylets: list[int], port: int) -> list[int]:
    """Live processes a raylet of ``raylets`` started (their environment names it: workers
    and agents retitle themselves ``ray::...``), or that name the head's port."""
    found = []
    for path in Path("/proc").glob("[0-9]*"):
        try:
            environ = (path / "environ").read_bytes().split(b"\0")
            command = (path / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (path / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state == "Z":
            continue  # dead, waiting for its parent to read its status
        if any(f"RAY_RAYLET_PID={pid}".encode() in environ for pid in raylets) or f":{port} " in command:
            found.append(int(path.name))
    return found


def test_a_killed_node_and_a_stopped_cluster_leave_no_process_behind():
    """Each agent left running took a fifth of a core from every test after it."""
    started = LoopbackCluster()
    try:
        raylets, worker = started.raylets(), started.raylets(worker_only=True)
        assert len(raylets) == 2 and len(worker) == 1
        assert started.kill_worker_node() == 1
        time.sleep(1)
        assert cluster_processes(worker, port=-1) == []
    finally:
        started.stop()
    time.sleep(1)
    assert cluster_processes(raylets, started.port) == []

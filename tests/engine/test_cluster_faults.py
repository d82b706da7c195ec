"""A real Ray cluster on loopback (a head and a worker node started with `ray start`),
`ray job submit`, and the faults a long run meets: a worker node dying during
extraction, the driver killed and the same command run again, the S3 server going away
for a few seconds. Each run's outputs must equal an undisturbed run's, with every input
in exactly one of the features and bad lists."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pytest
from conftest import free_port

import fastdup_ray
from fastdup_ray.sample import jpeg_bytes, make_scene, near_duplicate

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
OUTPUTS = ("similarity.csv", "outliers.csv", "component_info.csv", "connected_components.csv", "stats.csv")


def processes_matching(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (read from /proc: no psutil needed)."""
    found = []
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command:
            found.append(int(path.split("/")[2]))
    return found


class LoopbackCluster:
    """`ray start --head` plus one worker node, in their own temp dir, stopped by killing
    exactly their processes (``ray stop`` would also stop the tests' own local Ray)."""

    def __init__(self) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="fdr-", dir="/tmp")  # short: Ray's socket paths
        self.port, self.dashboard_port, self.worker_port = free_port(), free_port(), free_port()
        bin_dir = os.path.dirname(sys.executable)
        # Token authentication is for clusters reachable from a network; this one is loopback only.
        self.env = dict(
            os.environ,
            PATH=f"{bin_dir}:{os.environ.get('PATH', '')}",
            RAY_AUTH_MODE="disabled",
            RAY_ADDRESS="",
        )
        self.ray = os.path.join(bin_dir, "ray")
        self._ray(
            "start",
            "--head",
            f"--port={self.port}",
            "--num-cpus=1",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}",
            *self.node_ports(),
        )
        self.start_worker()

    def node_ports(self) -> list[str]:
        """Ports of one node's agents: two nodes on one machine must not share the defaults
        (the job agent of the second would fail to bind, and job submission wait forever)."""
        return [
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
        ]

    def _ray(self, *args: str) -> None:
        done = subprocess.run([self.ray, *args], env=self.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]

    def start_worker(self) -> None:
        self._ray(
            "start",
            f"--address=127.0.0.1:{self.port}",
            "--num-cpus=2",
            f"--node-manager-port={self.worker_port}",
            *self.node_ports(),
        )

    def kill_worker_node(self) -> int:
        """SIGKILL the worker node's raylet: the node dies with every task and actor on it."""
        pids = [
            p
            for p in processes_matching(f"--node_manager_port={self.worker_port}")
            if "raylet" in open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")[0].decode()
        ]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        return len(pids)

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

    def stop(self) -> None:
        for pid in processes_matching(self.temp_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    started = LoopbackCluster()
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
    assert "succeeded" in done.stdout + done.stderr and "joining the Ray cluster" in done.stdout + done.stderr
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

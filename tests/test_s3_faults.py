"""S3 that fails: 503s retried by botocore's retry modes, a server gone for seconds, and an
outage past the retries that fails only the shards it hit (moto's server on loopback)."""

from __future__ import annotations

import io
import threading

import polars as pl
import pytest
from conftest import S3_KEY as KEY
from conftest import S3_SECRET as SECRET
from conftest import s3_options

import fastdup_ray
from fastdup_ray.errors import ConfigError
from fastdup_ray.rundir.storage import (
    StorageOptions,
    explain,
    read_bytes,
    storage_unavailable,
)

pytestmark = pytest.mark.integration


def test_storage_errors_are_explained_and_told_from_bad_data():
    import botocore.exceptions

    assert "access denied to s3://b/p" in str(explain("s3://b/p", PermissionError("AccessDenied")))
    assert storage_unavailable(botocore.exceptions.EndpointConnectionError(endpoint_url="http://s3"))
    assert not storage_unavailable(FileNotFoundError("x")) and not storage_unavailable(
        OSError("not a gzip file")
    )


class FailingRequests:
    """WSGI middleware in front of moto: answers ``failures`` requests with S3's 503
    ServiceUnavailable (or every ``every``-th request), then passes them on to moto."""

    BODY = (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b"<Error><Code>ServiceUnavailable</Code><Message>Please retry.</Message></Error>"
    )

    def __init__(self, app):
        self.app, self.failures, self.every, self.requests, self.failed = app, 0, 0, [], 0
        # An outage: once a request starting with ``down_after`` was passed on, every request
        # whose path starts with ``scope`` fails until ``down_after`` is set back to None.
        self.down_after, self.scope, self.down = None, "/", False
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            request = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}"
            self.requests.append(request)
            self.down = self.down and self.down_after is not None
            fail = (
                self.failures > 0
                or (self.every and len(self.requests) % self.every == 0)
                or (self.down and environ["PATH_INFO"].startswith(self.scope))
            )
            self.failures -= self.failures > 0
            self.failed += bool(fail)
            self.down = self.down or bool(
                self.down_after and not fail and request.startswith(self.down_after)
            )
        if fail:
            body = b"" if environ["REQUEST_METHOD"] == "HEAD" else self.BODY  # S3 answers HEAD without a body
            start_response(
                "503 Service Unavailable",
                [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return self.app(environ, start_response)


@pytest.fixture
def flaky_s3(s3_server):
    """A second endpoint on the same moto buckets (moto keeps them in this process) that
    fails requests on demand, as S3 does under load."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    faults = FailingRequests(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, faults, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", faults
    server.shutdown()
    thread.join()


@pytest.mark.parametrize("mode", ["standard", "adaptive"])
def test_503_answers_are_retried_by_botocores_retry_mode(flaky_s3, bucket, mode):
    endpoint, faults = flaky_s3
    bucket.pipe_file("fdr-test/flaky/photo.jpg", b"picture bytes")
    options = dict(endpoint_url=endpoint, key=KEY, secret=SECRET, region="us-east-1", retry_mode=mode)
    faults.failures = 2
    assert (
        read_bytes("s3://fdr-test/flaky/photo.jpg", StorageOptions(**options, max_attempts=3))
        == b"picture bytes"
    )
    first = faults.requests[0]
    assert faults.failed == 2 and faults.requests[:3] == [first] * 3  # one request, sent three times
    # With one attempt nothing else retries it: the read fails.
    faults.failures = 2
    with pytest.raises(OSError) as failure:
        read_bytes("s3://fdr-test/flaky/photo.jpg", StorageOptions(**options, max_attempts=1))
    assert storage_unavailable(failure.value)


def test_a_run_against_an_s3_failing_every_eighth_request_finds_what_an_undisturbed_run_finds(
    flaky_s3, bucket
):
    """Listing, archive reads and the S3 work dir all go through botocore's retries."""
    endpoint, faults = flaky_s3
    faults.every = 8
    summary = fastdup_ray.run("s3://fdr-test/data", "s3://fdr-test/flaky-work", **s3_options(endpoint))
    assert faults.failed >= 5 and (summary.good, summary.bad) == (
        8,
        1,
    )  # as in test_s3_archives_to_s3_work_dir_and_resume
    similarity = pl.read_csv(io.BytesIO(bucket.cat_file("fdr-test/flaky-work/similarity.csv")))
    assert {frozenset(p) for p in zip(similarity["from"], similarity["to"])} == {
        frozenset(("s3://fdr-test/data/00000.tar/000000002.jpg", "s3://fdr-test/data/more.zip/copy_of_2.jpg"))
    }


def test_retry_settings_come_from_aws_variables_and_are_checked(monkeypatch):
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "4")
    assert StorageOptions().botocore_config()["retries"] == {"mode": "adaptive", "total_max_attempts": 4}
    assert StorageOptions(retry_mode="standard", max_attempts=7).botocore_config()["retries"] == {
        "mode": "standard",
        "total_max_attempts": 7,
    }
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "lots")
    with pytest.raises(ConfigError, match="AWS_MAX_ATTEMPTS"):
        StorageOptions().botocore_config()
    with pytest.raises(ConfigError, match="retry_mode"):
        StorageOptions(retry_mode="eager", max_attempts=3).botocore_config()


def test_s3_server_gone_for_seconds_mid_run(ray_local, s3_server, bucket, tmp_path):
    """The server goes away for three seconds as the run starts listing, and again for
    four once the first shard is written: failed requests are retried, the run completes,
    and its outputs equal those of an undisturbed run."""
    import threading
    import time

    from conftest import s3_outage, write_tar

    from fastdup_ray.sample import jpeg_bytes, make_scene

    for t in range(6):
        path = write_tar(
            tmp_path / f"{t:05d}.tar",
            {
                f"{t:02d}{i:03d}.jpg": jpeg_bytes(make_scene(30_000 + 40 * t + i, material=(t + i) % 12))
                for i in range(40)
            },
        )
        bucket.put_file(str(path), f"fdr-test/outage/{path.name}")
    reference, work = tmp_path / "reference", tmp_path / "work"
    fastdup_ray.run("s3://fdr-test/outage", str(reference), **s3_options(s3_server))

    from conftest import S3_SERVERS

    back = {}

    def take_the_server_away():
        time.sleep(3.0)
        s3_outage(s3_server, 0.0)  # back after 3 s
        back["at"] = time.monotonic()
        wait_for(lambda: any(work.glob("*features.done")))
        s3_outage(s3_server, 4.0)

    S3_SERVERS[s3_server].stop()
    outages = threading.Thread(target=take_the_server_away)
    started = time.monotonic()
    outages.start()
    summary = fastdup_ray.run("s3://fdr-test/outage", str(work), **s3_options(s3_server))
    outages.join()
    # Listing waited (botocore's retries) until the server came back.
    assert summary.seconds["list"] >= back["at"] - started - 0.5
    assert (summary.good, summary.bad) == (240, 0)
    for name in ("similarity.csv", "outliers.csv", "connected_components.csv", "stats.csv"):
        assert (work / name).read_text() == (reference / name).read_text(), name
    names, _ = fastdup_ray.load_binary_features(work)
    assert len(names) == len(set(names)) == 240


def wait_for(condition, timeout: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.fixture(scope="module")
def outage_archives(bucket, tmp_path_factory):
    """s3://fdr-test/outage-mid/: 00000.tar (3 images) and 00001.tar, whose 9 MiB member
    between its 2nd and 3rd image makes s3fs (8 MiB blocks) send a second GET mid-archive."""
    from conftest import write_tar

    from fastdup_ray.sample import jpeg_bytes, make_scene, near_duplicate

    root = tmp_path_factory.mktemp("outage-mid")
    scenes = [make_scene(70_000 + i, material=i) for i in range(5)]
    write_tar(root / "00000.tar", {f"{i}.jpg": jpeg_bytes(scenes[i]) for i in range(3)})
    write_tar(
        root / "00001.tar",
        {
            "3.jpg": jpeg_bytes(scenes[3]),
            "4.jpg": jpeg_bytes(scenes[4]),
            "4.json": bytes(9 << 20),
            "copy_of_0.jpg": jpeg_bytes(near_duplicate(scenes[0], 0)),
        },
    )
    for path in sorted(root.iterdir()):
        bucket.put_file(str(path), f"fdr-test/outage-mid/{path.name}")
    return "s3://fdr-test/outage-mid"


def run_outputs(work) -> dict[str, str]:
    """Every table a run leaves in work_dir (shards' names and bad lists included), by name."""
    return {path.name: path.read_text() for path in sorted(work.iterdir()) if path.name.endswith(".csv")}


def assert_storage_failure(failure, work, failed: str, location: str, finished: list[str]) -> None:
    """The run raised one line naming the failed shard and where the storage failed; that
    shard left nothing in work_dir, the others are finished, no bad row blames the storage
    and there is no reduce (a shard is missing)."""
    from fastdup_ray.rundir.shards import list_shards
    from fastdup_ray.rundir.workdir import WorkDir

    message = str(failure.value)
    assert (
        failure.value.shards == [failed]
        and f"'{failed}'" in message
        and location in message
        and "\n" not in message
    )
    assert list_shards(WorkDir(str(work))) == finished and not any(failed in p.name for p in work.iterdir())
    for bad_list in work.glob("*features.bad.csv"):
        assert "storage" not in bad_list.read_text() and "ServiceUnavailable" not in bad_list.read_text()
    assert not (work / "similarity.csv").exists()


def test_storage_down_mid_archive_fails_only_that_shard_and_a_rerun_extracts_it(
    flaky_s3, outage_archives, tmp_path, monkeypatch
):
    """S3 answers 503 to everything from the middle of 00001.tar on, for longer than the
    retries (two attempts here): 00000.tar is finished, 00001.tar is not and is in no bad
    list, the run raises naming it. Once S3 is back, the same run extracts 00001.tar alone
    and the outputs equal an undisturbed run's."""
    from fastdup_ray.errors import StorageUnavailableError

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    endpoint, faults = flaky_s3
    options = dict(executor="local", num_threads=1, **s3_options(endpoint))
    reference, work = tmp_path / "reference", tmp_path / "work"
    fastdup_ray.run(outage_archives, str(reference), **options)
    faults.down_after = "GET /fdr-test/outage-mid/00001.tar"
    with pytest.raises(StorageUnavailableError) as failure:
        fastdup_ray.run(outage_archives, str(work), **options)
    assert faults.down and faults.failed >= 2
    assert_storage_failure(failure, work, "00001.tar", f"{outage_archives}/00001.tar", ["00000.tar"])
    finished = (work / "00000.tarfeatures.done").stat().st_mtime_ns
    faults.down_after = None  # S3 is back
    summary = fastdup_ray.run(outage_archives, str(work), **options)
    assert summary.skipped_shards == 1 and (work / "00000.tarfeatures.done").stat().st_mtime_ns == finished
    assert (summary.good, summary.bad) == (6, 0) and summary.similar_pairs == 1
    assert run_outputs(work) == run_outputs(reference)
    assert {
        "similarity.csv",
        "outliers.csv",
        "connected_components.csv",
        "component_info.csv",
        "features.bad.csv",
    } <= set(run_outputs(work))


def test_storage_down_mid_archive_on_the_ray_engine(
    ray_local, flaky_s3, outage_archives, tmp_path, monkeypatch
):
    """The same outage (scoped to 00001.tar's object) under Ray Data: the decode task
    carries the failure as a row, never as an exception that would end the dataset."""
    from fastdup_ray.errors import StorageUnavailableError

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    endpoint, faults = flaky_s3
    work = tmp_path / "work"
    faults.down_after, faults.scope = "GET /fdr-test/outage-mid/00001.tar", "/fdr-test/outage-mid/00001.tar"
    with pytest.raises(StorageUnavailableError) as failure:
        fastdup_ray.run(outage_archives, str(work), executor="ray", **s3_options(endpoint))
    assert_storage_failure(failure, work, "00001.tar", f"{outage_archives}/00001.tar", ["00000.tar"])
    faults.down_after = None
    summary = fastdup_ray.run(outage_archives, str(work), executor="ray", **s3_options(endpoint))
    assert (
        summary.skipped_shards == 1 and (summary.good, summary.bad) == (6, 0) and summary.similar_pairs == 1
    )


def image_list_on_a_dead_endpoint(tmp_path):
    """A local .txt naming three s3:// images, and an endpoint on loopback that refuses
    every connection (nothing listens there)."""
    from conftest import free_port

    listing = tmp_path / "images.txt"
    listing.write_text("".join(f"s3://fdr-test/photos/scene_{i:03d}.jpg\n" for i in range(3)))
    return listing, f"http://127.0.0.1:{free_port()}"


def test_image_list_with_the_endpoint_down_from_the_start(tmp_path, monkeypatch):
    from fastdup_ray.errors import StorageUnavailableError
    from fastdup_ray.rundir.shards import list_shards
    from fastdup_ray.rundir.workdir import WorkDir

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    listing, endpoint = image_list_on_a_dead_endpoint(tmp_path)
    work = tmp_path / "work"
    with pytest.raises(StorageUnavailableError) as failure:
        fastdup_ray.run(
            str(listing), str(work), executor="local", num_threads=1, shard_size=2, **s3_options(endpoint)
        )
    assert failure.value.shards == ["images-000000000-000000002.", "images-000000002-000000003."]
    assert "s3://fdr-test/photos/scene_00" in str(failure.value) and "EndpointConnectionError" in str(
        failure.value
    )
    assert list_shards(WorkDir(str(work))) == [] and not list(work.glob("*features.bad.csv"))


def test_cli_run_with_the_endpoint_down_is_one_line_and_a_failure(tmp_path):
    import os
    import subprocess
    import sys

    listing, endpoint = image_list_on_a_dead_endpoint(tmp_path)
    work = tmp_path / "work"
    env = dict(
        os.environ, AWS_MAX_ATTEMPTS="2", AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, RAY_ADDRESS=""
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastdup_ray",
            "run",
            str(listing),
            "--work-dir",
            str(work),
            "--executor",
            "local",
            "--num-threads",
            "1",
            "--s3-endpoint-url",
            endpoint,
            "--s3-region",
            "us-east-1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("fastdup-ray: error: ")]
    assert done.returncode != 0 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "'features.dat'" in errors[0] and "run the same command again" in errors[0]
    assert not (work / "features.bad.csv").exists() and not (work / "features.done").exists()

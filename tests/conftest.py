from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The loopback services (a `ray start` cluster, moto's S3 server) and the rehearsal's
# checks are test helpers here (tests/loopback.py, tests/rehearsal_checks.py), which
# benchmarks/rehearsal.py imports too; no test imports from benchmarks/.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from loopback import free_port  # noqa: E402, F401 - the tests import it from here

from fastdup_ray.sample import make_sample_dataset


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray runtime with 2 CPUs, shared by the integration tests."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def sample(tmp_path_factory):
    """12 photo-like scenes, 6 near-duplicate copies, a truncated JPEG, a nested folder."""
    return make_sample_dataset(tmp_path_factory.mktemp("sample"))


def write_tar(path, members: dict, mode: str = "w"):
    """A tar (or tgz with mode 'w:gz') holding ``members`` (name -> bytes)."""
    import io
    import tarfile

    with tarfile.open(path, mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="session")
def archive_dataset(tmp_path_factory):
    """Two webdataset shards, a tgz and a zip, built from distinct scenes; scene 2 also
    appears, re-encoded, in the zip (a planted cross-archive duplicate); one member is
    a corrupt JPEG. Returns (folder, planted pair, corrupt member, number of images)."""
    import zipfile

    from fastdup_ray.sample import jpeg_bytes, make_scene, near_duplicate

    root = tmp_path_factory.mktemp("archives")
    scenes = [make_scene(500 + i, material=i) for i in range(8)]
    write_tar(
        root / "00000.tar",
        {
            "000000000.jpg": jpeg_bytes(scenes[0]),
            "000000000.txt": b"a caption",
            "000000000.json": b"{}",
            "000000001.jpg": jpeg_bytes(scenes[1]),
            "000000001.txt": b"another",
            "000000002.jpg": jpeg_bytes(scenes[2]),
            "000000002.json": b"{}",
        },
    )
    write_tar(
        root / "00001.tar",
        {"000000003.jpg": jpeg_bytes(scenes[3]), "000000004.jpg": jpeg_bytes(scenes[4])[:500]},
    )
    write_tar(
        root / "extra.tgz", {"x/5.jpg": jpeg_bytes(scenes[5]), "x/6.jpg": jpeg_bytes(scenes[6])}, mode="w:gz"
    )
    with zipfile.ZipFile(root / "more.zip", "w") as archive:
        archive.writestr("7.jpg", jpeg_bytes(scenes[7]))
        archive.writestr("copy_of_2.jpg", jpeg_bytes(near_duplicate(scenes[2], 0)))
    planted = (f"{root}/00000.tar/000000002.jpg", f"{root}/more.zip/copy_of_2.jpg")
    corrupt = f"{root}/00001.tar/000000004.jpg"
    return root, planted, corrupt, 9


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on loopback: a real HTTP S3 endpoint, no mocked calls."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    S3_SERVERS[url] = server
    yield url
    S3_SERVERS.pop(url).stop()


# The running moto server behind each s3_server URL, for tests that take it away a while.
S3_SERVERS: dict = {}


def s3_outage(url: str, seconds: float) -> None:
    """Stop the S3 server at ``url`` and bring it back on the same port after ``seconds``
    (moto keeps its buckets in the process, so nothing is lost)."""
    import time

    from moto.server import ThreadedMotoServer

    try:
        S3_SERVERS[url].stop()
    except Exception:  # noqa: BLE001 - already stopped
        pass
    time.sleep(seconds)
    host, port = url.removeprefix("http://").split(":")
    S3_SERVERS[url] = ThreadedMotoServer(ip_address=host, port=int(port), verbose=False)
    S3_SERVERS[url].start()


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def chromium():
    """Debian's headless Chromium driven by Playwright (.ci/run installs both). Without it
    the browser tests skip on a developer machine and fail under CI."""
    import os
    import shutil

    executable = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if executable is None or sync_playwright is None:
        message = (
            "headless Chromium tests need Debian's chromium and the playwright package "
            "(.ci/run installs both)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            # The closed network refuses Chromium's background connections; keep it quiet.
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


S3_KEY, S3_SECRET = "AKIAFASTDUPTEST", "very-secret-value-123"


@pytest.fixture(scope="session")
def bucket(s3_server, archive_dataset, sample):
    """A bucket holding the archive dataset under data/ and the sample images under photos/."""
    import s3fs

    fs = s3fs.S3FileSystem(
        key=S3_KEY, secret=S3_SECRET, client_kwargs={"endpoint_url": s3_server, "region_name": "us-east-1"}
    )
    import boto3

    boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
    ).create_bucket(Bucket="fdr-test")
    root, _, _, _ = archive_dataset
    for path in sorted(root.iterdir()):
        fs.put_file(str(path), f"fdr-test/data/{path.name}")
    for path in sample.images + sample.corrupt:
        fs.put_file(str(path), f"fdr-test/photos/{path.relative_to(sample.root)}")
    return fs


def s3_options(endpoint):
    return dict(s3_endpoint_url=endpoint, s3_region="us-east-1", s3_key=S3_KEY, s3_secret=S3_SECRET)


def s3_environment(endpoint):
    """The same settings as AWS's own variables, as a reader of a finished run (the API,
    the CLI in a subprocess) finds them without run parameters."""
    return dict(
        AWS_ACCESS_KEY_ID=S3_KEY,
        AWS_SECRET_ACCESS_KEY=S3_SECRET,
        AWS_ENDPOINT_URL=endpoint,
        AWS_DEFAULT_REGION="us-east-1",
    )


def shows_file(picture: bytes, path: Path, size: int = 256) -> bool:
    """Whether a shown thumbnail is the image of ``path``: its longest side ``size`` (never
    enlarged), its aspect, and its pixels near those of the file shrunk to it."""
    import io

    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(picture)) as shown, Image.open(path) as original:
        wanted = original.size
        scale = min(1.0, size / max(wanted))
        scaled = (round(wanted[0] * scale), round(wanted[1] * scale))
        if shown.size != scaled:
            return False
        expected = original.convert("RGB").resize(shown.size, Image.Resampling.BOX)
        # Here the file shrunk is ~2-6 grey levels from its thumbnail, another scene 40 or more.
        pixels = np.asarray(shown.convert("RGB"), dtype=np.float32)
        return float(np.abs(pixels - np.asarray(expected, dtype=np.float32)).mean()) < 15

"""benchmarks/rehearsal.py --small: the LAION-style run rehearsed with real parts (moto's
S3 server, a `ray start` cluster of two nodes, `ray job submit`), a worker node killed and
an S3 outage past the retries on the way, checked against its ground truth; and the
checks it makes, on small cases."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


# Drawn collages rather than mosaics of the dev photos (../shared is not in CI); the
# collages are distinct for the shipped model by construction (rehearsal_data.py).
@pytest.mark.integration
def test_small_rehearsal_accounts_for_every_image_and_finds_the_planted_copies(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "rehearsal.py"),
            "--small",
            "--pictures",
            "collages",
            "--out",
            str(tmp_path),
        ],
        env=dict(os.environ, RAY_ADDRESS=""),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    last = done.stdout.strip().splitlines()[-1]
    found = re.match(
        r"accounted: (\d+) of (\d+) images once; copies recall ([\d.]+) precision ([\d.]+)", last
    )
    assert found, last
    once, total, recall, precision = found.groups()
    assert once == total == "1000" and float(recall) >= 0.99 and float(precision) >= 0.99, last
    assert "outputs equal the undisturbed run's" in last and "FAIL" not in done.stdout, last


def test_the_checks_catch_a_lost_a_doubled_and_a_stray_image():
    from rehearsal_checks import accounted

    images = ["00000.tar/0.jpg", "00000.tar/1.jpg", "00001.tar/2.jpg"]
    assert accounted(
        images, ["00000.tar/0.jpg", "00000.tar/1.jpg"], ["00001.tar/2.jpg", "00002.tar"], "00002.tar"
    ) == (
        3,
        [],
    )
    once, problems = accounted(images, ["00000.tar/0.jpg", "00000.tar/0.jpg", "x.jpg"], [], "00002.tar")
    assert once == 0 and problems == [
        "00000.tar/0.jpg: listed 2 times",
        "00000.tar/1.jpg: listed 0 times",
        "00001.tar/2.jpg: listed 0 times",
        "x.jpg: not an image of the data",
    ]


def test_copies_found_scores_pairs_either_way_round():
    from rehearsal_checks import copies_found

    planted = [["a", "b"], ["c", "d"]]
    assert copies_found(planted, [("b", "a"), ("c", "d")]) == (1.0, 1.0, 2, 2)
    assert copies_found(planted, [("a", "b"), ("a", "c")]) == (0.5, 0.5, 1, 2)


def test_deduplicated_shards_must_hold_each_kept_sample_once_with_its_members():
    import io
    import tarfile

    from rehearsal_checks import deduplicated_problems

    def tar(members):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for name in members:
                info = tarfile.TarInfo(name)
                info.size = 1
                archive.addfile(info, io.BytesIO(b"x"))
        return buffer.getvalue()

    whole = tar(["1.jpg", "1.txt", "1.json"])
    assert deduplicated_problems({"00000.tar": whole}, {"00000.tar/1.jpg"}) == (1, [])
    broken = tar(["1.jpg", "1.txt", "2.jpg", "2.txt", "2.json"])
    assert deduplicated_problems({"00000.tar": broken}, {"00000.tar/1.jpg", "00000.tar/3.jpg"}) == (
        2,
        [
            "00000.tar/1.jpg: members ['jpg', 'txt']",
            "00000.tar/3.jpg: kept but not written",
            "00000.tar/2.jpg: written but not kept",
        ],
    )


def test_s3_requests_are_classed_as_s3_bills_them():
    from loopback import request_kind

    assert request_kind("GET", "/bucket", "list-type=2&prefix=work/") == "LIST"
    assert request_kind("GET", "/bucket/tars/00000.tar", "") == "GET"
    assert request_kind("POST", "/bucket/work/x", "uploads") == "PUT"
    assert request_kind("HEAD", "/bucket/work/x", "") == "HEAD"

"""benchmarks/rehearsal.py --small: the LAION-style run rehearsed with real parts (moto's
S3 server, a `ray start` cluster of two nodes, `ray job submit`), a worker node killed and
an S3 outage past the retries on the way, checked against its ground truth."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]


def test_small_rehearsal_accounts_for_every_image_and_finds_the_planted_copies(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "rehearsal.py"), "--small", "--out", str(tmp_path)],
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
    assert once == total == "2000" and float(recall) >= 0.99 and float(precision) >= 0.99, last
    assert "outputs equal the undisturbed run's" in last and "FAIL" not in done.stdout, last

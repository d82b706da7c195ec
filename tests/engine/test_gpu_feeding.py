"""The GPU actor's feeding on the Ray engine: a stand-in embedder that takes a fixed time
per batch (as a GPU does, whatever the batch holds) must get full GPU batches and be busy
nearly all the time once decoding keeps up. Ray is told it has one GPU; nothing here needs
CUDA, the stand-in replaces only the model call."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration

DRIVER = textwrap.dedent(
    """
    import json, sys, time
    from dataclasses import dataclass
    from typing import ClassVar

    import numpy as np
    import ray

    from fastdup_ray.engine import open_engine
    from fastdup_ray.engine.ray import GPU_BATCH
    from fastdup_ray.map.batches import EmbedBatches
    from fastdup_ray.map.plan import ACTOR, DecodeSettings, EmbedSettings, MapPlan, MapSettings, ReadDecode
    from fastdup_ray.map.sources import ReadSettings, WorkUnit

    folder, log_path, seconds_per_batch = sys.argv[1], sys.argv[2], float(sys.argv[3])

    class FixedTimeModel:
        # A GPU's call: the same time for any batch up to its size; every call is logged.
        def embed(self, pixels):
            start = time.monotonic()
            time.sleep(seconds_per_batch)
            with open(log_path, "a") as log:
                log.write(json.dumps([start, time.monotonic(), len(pixels)]) + "\\n")
            return np.ones((len(pixels), 320), dtype=np.float32) / np.sqrt(320)

    @dataclass(frozen=True)
    class StandInEmbed:
        name: ClassVar[str] = "embed"
        placement: ClassVar[str] = ACTOR

        def open(self):
            session = EmbedBatches(None, 320, "cpu")
            session.embedder = FixedTimeModel()
            return lambda batch: iter((session(batch),))

    @dataclass(frozen=True)
    class StandInPlan(MapPlan):
        def stages(self, rows_per_batch):
            return (ReadDecode(self.settings.read, self.settings.decode, rows_per_batch), StandInEmbed())

    class CountingSink:
        rows = 0

        def add(self, batch):
            self.rows += int((batch["control"] == 0).sum())

        def gave_up(self, unit):
            return False

    import glob
    files = tuple(sorted(glob.glob(folder + "/*.jpg")))
    settings = MapSettings(ReadSettings(), DecodeSettings(176, 0), EmbedSettings("unused", 320, "gpu"))
    plan = StandInPlan(settings, (WorkUnit("a.", "files", files),))
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="WARNING")
    engine = open_engine("ray")
    sink = CountingSink()
    engine.extract(plan, sink)
    print(json.dumps({"rows": sink.rows, "gpu_batch": GPU_BATCH}))
    """
)


def test_the_gpu_actor_gets_full_batches_and_stays_busy(tmp_path):
    pytest.importorskip("ray")
    import numpy as np
    from PIL import Image

    from fastdup_ray.sample import jpeg_bytes

    folder = tmp_path / "in"
    folder.mkdir()
    # Distinct small JPEGs (byte-identical files would be decoded once): decoding 256 of them
    # takes well under the stand-in's call. Noise, not drawn scenes: the model is a stand-in,
    # and drawing 1,280 scenes took half the test's time.
    rng = np.random.default_rng(0)
    for i in range(1280):
        pixels = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)
        (folder / f"{i:05d}.jpg").write_bytes(jpeg_bytes(Image.fromarray(pixels)))
    script, calls = tmp_path / "driver.py", tmp_path / "calls.jsonl"
    script.write_text(DRIVER)
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(calls), "1.0"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"RAY_ADDRESS": "", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    log = [json.loads(line) for line in calls.read_text().splitlines()]
    sizes = [rows for _, _, rows in log]
    assert summary["rows"] == sum(sizes) == 1280
    assert sizes == [summary["gpu_batch"]] * 5, sizes
    busy = sum(end - start for start, end, _ in log)
    span = log[-1][1] - log[0][0]
    assert busy / span >= 0.9, f"the GPU was busy {busy:.2f} s of {span:.2f} s"

"""The batch functions of the map side, without Ray."""

import numpy as np

from fastdup_ray.config import RunConfig
from fastdup_ray.extract import EmbedBatches, decode_batch, plan_embedding
from fastdup_ray.sample import jpeg_bytes, make_scene


def test_decode_batch_marks_bad_rows_with_reasons(tmp_path):
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg_bytes(make_scene(0)))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    paths = np.array([str(good), str(empty), str(tmp_path / "vanished.jpg")], dtype=object)
    batch = decode_batch({"path": paths}, size=64)
    assert batch["ok"].tolist() == [True, False, False]
    assert batch["reason"][1] == "empty file"
    assert batch["reason"][2].startswith("cannot read file")
    assert batch["pixels"].shape == (3, 64, 64, 3) and batch["pixels"][0].std() > 0


def test_embed_batches_only_embeds_good_rows(tmp_path):
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg_bytes(make_scene(0)))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    batch = decode_batch({"path": np.array([str(good), str(bad)], dtype=object)}, size=224)
    out = EmbedBatches(model_path=None, d=1280, compute="cpu")(batch)
    assert np.linalg.norm(out["embedding"][0]) > 0.99 and not out["embedding"][1].any()
    assert out["ok"].tolist() == [True, False]


def test_plan_uses_every_cpu_and_falls_back_from_gpu(caplog):
    config = RunConfig("in", "out", compute="gpu")
    plan = plan_embedding(config, cluster_cpus=2, cluster_gpus=0)
    assert plan.compute == "cpu" and plan.actors == 2
    assert plan.actors * plan.actor_cpus + plan.decode_cpus <= 2
    assert "no GPU" in caplog.text
    gpu = plan_embedding(config, cluster_cpus=16, cluster_gpus=1)
    assert gpu.compute == "gpu" and gpu.actor_gpus == 1

"""The batch functions of the map side and the shard collector, without Ray."""

import json

import numpy as np
import pytest

from fastdup_ray.config import RunConfig
from fastdup_ray.extract import EmbedBatches, ShardCollector, decode_items, decode_units, plan_embedding
from fastdup_ray.features import list_shards, load_shards, read_bad_list, shard_is_complete
from fastdup_ray.sample import jpeg_bytes, make_scene
from fastdup_ray.sources import Item, ReadSettings
from fastdup_ray.workdir import WorkDir


def test_decode_items_marks_bad_rows_and_closes_the_unit():
    items = [Item("a.jpg", data=jpeg_bytes(make_scene(0))), Item("b.png", data=b""), Item("c.jpg", reason="cannot read file: gone"),
             Item("v.mp4/frame_0000.000s.jpg", pixels=np.full((10, 20, 3), 200, np.uint8))]
    batch = decode_items("u.", items, size=64, first_seq=10, total=4)
    assert batch["ok"].tolist() == [True, False, False, True, False]
    assert batch["reason"][1] == "empty file" and batch["reason"][2] == "cannot read file: gone"
    assert batch["end"].tolist() == [False] * 4 + [True] and batch["unit_rows"][-1] == 4
    assert batch["seq"].tolist() == [10, 11, 12, 13, 14]
    assert batch["pixels"].shape == (5, 64, 64, 3) and batch["pixels"][0].std() > 0 and (batch["pixels"][3] == 200).all()


def test_decode_units_streams_batches_of_a_unit(tmp_path):
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(jpeg_bytes(make_scene(i)))
    unit = {"name": np.array([""], dtype=object), "kind": np.array(["files"], dtype=object),
            "locations": np.array([json.dumps([str(p) for p in paths])], dtype=object)}
    batches = list(decode_units(unit, size=32, settings=ReadSettings(), rows_per_batch=2))
    assert [len(b["path"]) for b in batches] == [2, 2, 2]  # 2 + 2 + (1 image + end row)
    assert batches[-1]["end"].tolist() == [False, True] and batches[-1]["unit_rows"][-1] == 5


def test_embed_batches_only_embeds_good_rows():
    batch = decode_items("", [Item("good.jpg", data=jpeg_bytes(make_scene(0))), Item("bad.jpg", data=b"not a jpeg")], 224, 0)
    out = EmbedBatches(model_path=None, d=1280, compute="cpu")(batch)
    assert np.linalg.norm(out["embedding"][0]) > 0.99 and not out["embedding"][1].any()
    assert "pixels" not in out and out["ok"].tolist() == [True, False]


def fake_embedded(unit, names, ok, total=None, first_seq=0):
    batch = decode_items(unit, [Item(n) if good else Item(n, reason="bad") for n, good in zip(names, ok)], 4, first_seq, total)
    batch["ok"] = np.r_[np.asarray(ok, bool), [False] * (total is not None)]
    batch["reason"] = np.array(["" if good else "bad" for good in ok] + [""] * (total is not None), dtype=object)
    batch["embedding"] = np.ones((len(batch["path"]), 3), np.float32)
    del batch["pixels"]
    return batch


def test_collector_commits_each_unit_only_when_all_its_rows_arrived(tmp_path):
    work = WorkDir(str(tmp_path))
    collector = ShardCollector(work, d=3)
    collector.add(fake_embedded("a.tar", ["a/1", "a/2"], [True, False]))
    collector.add(fake_embedded("b.tar", ["b/1"], [True], total=1))
    assert list_shards(work) == ["b.tar"]
    collector.add(fake_embedded("a.tar", ["a/3"], [True], total=3, first_seq=2))
    collector.check_finished()
    assert list_shards(work) == ["a.tar", "b.tar"] and shard_is_complete(work, "a.tar", 3)
    names, vectors = load_shards(work, ["a.tar", "b.tar"], 3)
    assert names == ["a/1", "a/3", "b/1"] and vectors.shape == (3, 3)
    assert read_bad_list(tmp_path, "a.tar")["filename"].to_list() == ["a/2"]
    assert (collector.good, collector.bad) == (3, 1)


def test_collector_refuses_to_finish_with_missing_rows(tmp_path):
    collector = ShardCollector(WorkDir(str(tmp_path)), d=3)
    collector.add(fake_embedded("a.tar", ["a/1"], [True]))
    with pytest.raises(RuntimeError, match="unfinished shards"):
        collector.check_finished()
    assert list_shards(WorkDir(str(tmp_path))) == [] and not list(tmp_path.iterdir())


def test_plan_uses_every_cpu_and_falls_back_from_gpu(caplog):
    config = RunConfig("in", "out", compute="gpu")
    plan = plan_embedding(config, cluster_cpus=2, cluster_gpus=0)
    assert plan.compute == "cpu" and plan.actors == 2
    assert plan.actors * plan.actor_cpus + plan.decode_tasks * plan.decode_cpus <= 2
    assert "no GPU" in caplog.text
    gpu = plan_embedding(config, cluster_cpus=16, cluster_gpus=1)
    assert gpu.compute == "gpu" and gpu.actor_gpus == 1 and gpu.decode_tasks == 15


@pytest.mark.parametrize("node_cpus", [[2], [16], [1, 2], [1, 1, 1], [16, 16, 16, 16], [4, 1], [3, 5, 2]])
def test_plan_leaves_room_to_decode_however_actors_are_packed(node_cpus):
    """Place the actors first-fit onto the nodes, in the worst order for decoding (fullest
    first): some node must still fit a decode task, and decoding gets about a quarter."""
    plan = plan_embedding(RunConfig("in", "out"), cluster_cpus=sum(node_cpus), cluster_gpus=0, nodes=len(node_cpus))
    assert plan.actors == sum(node_cpus)
    for order in (sorted(node_cpus), sorted(node_cpus, reverse=True)):
        free = list(map(float, order))
        for _ in range(plan.actors):
            slot = next((i for i, f in enumerate(free) if f >= plan.actor_cpus - 1e-9), None)
            assert slot is not None, (order, free)  # every actor finds a place
            free[slot] -= plan.actor_cpus
        assert max(free) >= plan.decode_cpus - 1e-9, (order, free)
    assert plan.decode_tasks * 0.5 >= 0.2 * sum(node_cpus) or plan.decode_tasks >= len(node_cpus)

"""The batch functions and stages of the map side, the shard collector, the engine choice
and the local engine (worker processes), without Ray."""

import json
import os

import numpy as np
import pytest

from fastdup_ray.config import DEFAULT_D, RunConfig
from fastdup_ray.engine import available_cpus, choose
from fastdup_ray.engine.local import LocalEngine, run_stages
from fastdup_ray.engine.ray import plan_embedding
from fastdup_ray.map.batches import EmbedBatches, decode_items
from fastdup_ray.map.extract import ShardCollector, extract_units
from fastdup_ray.map.plan import DecodeSettings, EmbedSettings, MapPlan, MapSettings, ReadDecode, unit_pieces
from fastdup_ray.map.record import UNIT_END, ends, work_batch
from fastdup_ray.map.sources import Item, ReadSettings, WorkUnit
from fastdup_ray.rundir.shards import (
    list_shards,
    load_shards,
    read_bad_list,
    shard_is_complete,
)
from fastdup_ray.rundir.workdir import WorkDir
from fastdup_ray.sample import jpeg_bytes, make_scene


def test_decode_items_marks_bad_rows_and_closes_the_unit():
    items = [
        Item("a.jpg", data=jpeg_bytes(make_scene(0))),
        Item("b.png", data=b""),
        Item("c.jpg", reason="cannot read file: gone"),
        Item("v.mp4/frame_0000.000s.jpg", pixels=np.full((10, 20, 3), 200, np.uint8)),
    ]
    batch = decode_items("u.", items, size=64, first_seq=10, total=4)
    assert batch["ok"].tolist() == [True, False, False, True, False]
    assert batch["reason"][1] == "empty file" and batch["reason"][2] == "cannot read file: gone"
    assert ends(batch).tolist() == [False] * 4 + [True] and batch["unit_rows"][-1] == 4
    assert batch["control"][-1] == UNIT_END
    assert batch["seq"].tolist() == [10, 11, 12, 13, 14]
    assert (
        batch["pixels"].shape == (5, 64, 64, 3)
        and batch["pixels"][0].std() > 0
        and (batch["pixels"][3] == 200).all()
    )


def test_read_decode_streams_batches_of_a_unit(tmp_path):
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(jpeg_bytes(make_scene(i)))
    stage = ReadDecode(ReadSettings(), DecodeSettings(32), rows_per_batch=2)
    batches = list(stage.open()(work_batch("", "files", [str(p) for p in paths])))
    assert [len(b["path"]) for b in batches] == [2, 2, 2]  # 2 + 2 + (1 image + end row)
    assert ends(batches[-1]).tolist() == [False, True] and batches[-1]["unit_rows"][-1] == 5


def test_embed_batches_only_embeds_good_rows():
    batch = decode_items(
        "", [Item("good.jpg", data=jpeg_bytes(make_scene(0))), Item("bad.jpg", data=b"not a jpeg")], 176, 0
    )
    out = EmbedBatches(model_path=None, d=DEFAULT_D, compute="cpu")(batch)
    assert np.linalg.norm(out["embedding"][0]) > 0.99 and not out["embedding"][1].any()
    assert "pixels" not in out and out["ok"].tolist() == [True, False]


def fake_embedded(unit, names, ok, total=None, first_seq=0):
    batch = decode_items(
        unit, [Item(n) if good else Item(n, reason="bad") for n, good in zip(names, ok)], 4, first_seq, total
    )
    batch["ok"] = np.array(list(ok) + [False] * (total is not None), dtype=bool)
    batch["reason"] = np.array(
        ["" if good else "bad" for good in ok] + [""] * (total is not None), dtype=object
    )
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


def storage_failed_row(unit, name, first_seq):
    """A batch with one row whose read the storage failed (after the S3 client's retries)."""
    item = Item(
        name,
        reason="cannot read file, the storage failed despite retries: EndpointConnectionError: down",
        storage_failed=True,
    )
    batch = decode_items(unit, [item], 4, first_seq)
    batch["embedding"] = np.zeros((1, 3), np.float32)
    del batch["pixels"]
    return batch


def test_decode_items_carries_the_storage_failure_flag():
    batch = decode_items(
        "u.",
        [Item("a.jpg", reason="empty file"), Item("b.jpg", reason="down", storage_failed=True)],
        4,
        0,
        total=2,
    )
    assert batch["storage_failed"].tolist() == [False, True, False] and batch["ok"].tolist() == [
        False,
        False,
        False,
    ]


def test_collector_drops_a_unit_the_storage_failed_under_and_finishes_the_others(tmp_path):
    """No marker, no bad row and no half shard for that unit; its later rows, end row
    included, are ignored, and finishing does not call it rows gone missing."""
    work = WorkDir(str(tmp_path))
    collector = ShardCollector(work, d=3)
    collector.add(fake_embedded("a.tar", ["a/1", "a/2"], [True, False]))
    collector.add(fake_embedded("b.tar", ["b/1"], [True]))
    collector.add(storage_failed_row("a.tar", "s3://x/a.tar", 2))
    collector.add(fake_embedded("a.tar", ["a/3"], [True], total=4, first_seq=3))
    collector.add(fake_embedded("b.tar", ["b/2"], [False], total=2, first_seq=1))
    collector.check_finished()
    assert list_shards(work) == ["b.tar"]
    assert not any("a.tar" in p.name for p in [*tmp_path.iterdir(), *work.staging.iterdir()])  # temporary too
    assert list(collector.failed) == ["a.tar"] and collector.failed["a.tar"][0] == "s3://x/a.tar"
    assert "EndpointConnectionError" in collector.failed["a.tar"][1]
    assert (collector.good, collector.bad, collector.committed) == (1, 1, ["b.tar"])


class ScriptedEngine:
    """An engine that hands the collector prepared batches."""

    def __init__(self, batches):
        self.batches = batches

    def extract(self, plan, collector):
        for batch in self.batches:
            collector.add(batch)


def test_extract_units_returns_the_units_the_storage_failed_under(tmp_path):
    from fastdup_ray.errors import FastdupRayError, StorageUnavailableError

    units = [WorkUnit(name, "files", (f"s3://x/{name}1.jpg",)) for name in ("", "b.", "c.")]
    settings = MapSettings(ReadSettings(), DecodeSettings(4), EmbedSettings("model.onnx", 3))
    batches = [
        storage_failed_row("c.", "s3://x/c.1.jpg", 0),
        fake_embedded("b.", ["s3://x/b.1.jpg"], [True], total=1),
        storage_failed_row("", "s3://x/1.jpg", 0),
        fake_embedded("", [], [], total=1),
    ]
    result = extract_units(ScriptedEngine(batches), MapPlan(settings, tuple(units)), WorkDir(str(tmp_path)))
    assert result.shards == ["b."] and list(result.failed) == ["c.", ""]
    with pytest.raises(StorageUnavailableError) as failure:
        result.raise_if_failed()
    assert isinstance(failure.value, FastdupRayError) and failure.value.shards == ["", "c."]
    message = str(failure.value)
    assert "\n" not in message and "'features.dat'" in message and "'c.'" in message and "2 shards" in message
    assert (
        "s3://x/c.1.jpg" in message
        and "EndpointConnectionError" in message
        and "run the same command again" in message
    )
    extract_units(
        ScriptedEngine([fake_embedded("b.", ["s3://x/b.1.jpg"], [True], total=1)]),
        MapPlan(settings, tuple(units[1:2])),
        WorkDir(str(tmp_path / "ok")),
    ).raise_if_failed()


def test_plan_uses_every_cpu_and_falls_back_from_gpu(caplog):
    plan = plan_embedding("gpu", 0, cluster_cpus=2, cluster_gpus=0)
    assert plan.compute == "cpu" and plan.actors == 2
    assert plan.actors * plan.actor_cpus + plan.decode_tasks * plan.decode_cpus <= 2
    assert "no GPU" in caplog.text
    gpu = plan_embedding("gpu", 0, cluster_cpus=16, cluster_gpus=1)
    assert gpu.compute == "gpu" and gpu.actor_gpus == 1 and gpu.decode_tasks == 15


@pytest.mark.parametrize("node_cpus", [[2], [16], [1, 2], [1, 1, 1], [16, 16, 16, 16], [4, 1], [3, 5, 2]])
def test_a_cpu_plan_places_an_actor_on_every_core_however_they_are_packed(node_cpus):
    """On CPU each actor reads, decodes and embeds (the plan's fused stage): one per core,
    each asking for at most one CPU, so first-fit in any node order places all of them
    and no CPU is left to a pool of decode tasks that would wait for input."""
    plan = plan_embedding("cpu", 0, cluster_cpus=sum(node_cpus), cluster_gpus=0, nodes=len(node_cpus))
    assert plan.actors == sum(node_cpus) and plan.actor_cpus <= 1.0 and plan.decode_cpus == 0
    for order in (sorted(node_cpus), sorted(node_cpus, reverse=True)):
        free = list(map(float, order))
        for _ in range(plan.actors):
            slot = next((i for i, f in enumerate(free) if f >= plan.actor_cpus - 1e-9), None)
            assert slot is not None, (order, free)  # every actor finds a place
            free[slot] -= plan.actor_cpus
        assert sum(free) < 1e-6, (order, free)  # every core embeds
    fewer = plan_embedding("cpu", 3, cluster_cpus=sum(node_cpus), cluster_gpus=0, nodes=len(node_cpus))
    assert fewer.actors == 3 and fewer.actor_cpus == min(1.0, sum(node_cpus) / 3)


def test_auto_executor_is_local_unless_the_run_asks_for_ray(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if Ray were not started here
    local_inputs = ["/data/a.jpg", "/data/t.tar"]
    assert choose("auto", "cpu", local_inputs) == "local"
    assert choose("auto", "gpu", local_inputs) == "ray"
    assert choose("auto", "cpu", ["s3://b/t.tar"]) == "ray"
    assert choose("local", "cpu", ["s3://b/t.tar"]) == "local"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert choose("auto", "cpu", local_inputs) == "ray"
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)


def test_unit_pieces_cut_files_for_the_workers_and_stream_archive_members(tmp_path):
    files = WorkUnit("u.", "files", tuple(f"/x/{i}.jpg" for i in range(5)))
    pieces = list(unit_pieces(files, ReadSettings(), 2))
    assert [json.loads(p.work["locations"][0]) for p in pieces] == [
        ["/x/0.jpg", "/x/1.jpg"],
        ["/x/2.jpg", "/x/3.jpg"],
        ["/x/4.jpg"],
    ]
    assert [p.work["first_seq"][0] for p in pieces] == [0, 2, 4]
    assert [p.work["closes"][0] for p in pieces] == [False, False, True]  # the last closes the unit
    from conftest import write_tar

    tar = write_tar(tmp_path / "t.tar", {f"{i}.jpg": b"x" * (i + 1) for i in range(3)})
    pieces = list(unit_pieces(WorkUnit("t.", "archive", (str(tar),)), ReadSettings(), 2))
    assert [[item.location.rsplit("/", 1)[-1] for item in p.work["items"][0]] for p in pieces] == [
        ["0.jpg", "1.jpg"],
        ["2.jpg"],
    ]
    [empty] = list(unit_pieces(WorkUnit("e.", "files", ()), ReadSettings(), 2))
    assert empty.work["closes"][0] and json.loads(empty.work["locations"][0]) == []


def scene_files(folder, count):
    folder.mkdir()
    for i in range(count):
        (folder / f"{i:02d}.jpg").write_bytes(jpeg_bytes(make_scene(i)))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return sorted(str(p) for p in folder.iterdir())


def plan_for(config: RunConfig, units) -> MapPlan:
    from fastdup_ray.map.embed import Embedder

    size = Embedder(config.model_file()).image_size
    settings = MapSettings(
        ReadSettings(),
        DecodeSettings(size, config.thumbnail_size),
        EmbedSettings(config.model_file(), config.d, "cpu"),
        batch_size=config.batch_size,
    )
    return MapPlan(settings, tuple(units))


def extract_locally(config: RunConfig, units, work, piece_fn=run_stages):
    engine = LocalEngine(config.num_threads or 2, piece_fn=piece_fn)
    try:
        return extract_units(engine, plan_for(config, units), work)
    finally:
        engine.close()


def test_local_engine_writes_every_input_once_in_listing_order(tmp_path):
    locations = scene_files(tmp_path / "in", 9)
    units = [
        WorkUnit("a.", "files", tuple(locations[:6])),
        WorkUnit("b.", "files", tuple(locations[6:])),
        WorkUnit("empty.", "files", ()),
    ]
    work = WorkDir(str(tmp_path / "work"))
    config = RunConfig("in", str(tmp_path / "work"), batch_size=4, num_threads=2, thumbnail_size=32)
    result = extract_locally(config, units, work)
    assert (result.good, result.bad) == (9, 1) and sorted(result.shards) == ["a.", "b.", "empty."]
    names, vectors = load_shards(work, ["a.", "b.", "empty."], config.d)
    assert names == [p for p in locations if not p.endswith("broken.jpg")]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert read_bad_list(tmp_path / "work", "b.")["filename"].to_list() == [locations[-1]]
    # One worker process and batches cut differently: the same vectors.
    one = WorkDir(str(tmp_path / "one"))
    extract_locally(RunConfig("in", str(tmp_path / "one"), batch_size=64, num_threads=1), units, one)
    assert np.allclose(load_shards(one, ["a.", "b.", "empty."], config.d)[1], vectors, atol=1e-6)


def failing_piece(stages, work):
    """run_stages, but the piece holding 04.jpg fails in its worker process."""
    if "04.jpg" in work["locations"][0]:
        raise RuntimeError("disk on fire")
    return run_stages(stages, work)


def test_local_engine_commits_nothing_when_a_batch_fails(tmp_path):
    locations = scene_files(tmp_path / "in", 6)
    work = WorkDir(str(tmp_path / "work"))
    config = RunConfig("in", str(tmp_path / "work"), batch_size=2, num_threads=2)
    with pytest.raises(RuntimeError, match="disk on fire"):
        extract_locally(config, [WorkUnit("a.", "files", tuple(locations))], work, piece_fn=failing_piece)
    assert list_shards(work) == [] and not shard_is_complete(work, "a.", DEFAULT_D)


def test_local_engine_embeds_in_worker_processes(tmp_path):
    """The CPU time of extraction is spent in child processes, not in this one."""
    import resource

    locations = scene_files(tmp_path / "in", 24)
    config = RunConfig("in", str(tmp_path / "work"), batch_size=4, num_threads=2)
    before_self, before_children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    engine = LocalEngine(2)
    try:
        extract_units(
            engine,
            plan_for(config, [WorkUnit("a.", "files", tuple(locations))]),
            WorkDir(str(tmp_path / "work")),
        )
    finally:
        engine.close()  # children are waited for: their times are counted now
    after_self, after_children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    children = (after_children.ru_utime - before_children.ru_utime) + (
        after_children.ru_stime - before_children.ru_stime
    )
    mine = (after_self.ru_utime - before_self.ru_utime) + (after_self.ru_stime - before_self.ru_stime)
    assert children > 2 * mine, (children, mine)


def test_byte_identical_files_are_decoded_and_embedded_once():
    photo, other = jpeg_bytes(make_scene(1)), jpeg_bytes(make_scene(2))
    items = [
        Item("a.jpg", data=photo),
        Item("b.jpg", data=other),
        Item("a_copy.jpg", data=photo),
        Item("bad.jpg", data=b"x"),
        Item("bad_copy.jpg", data=b"x"),
    ]
    batch = decode_items("u.", items, size=176, first_seq=0)  # the shipped models' size
    assert batch["hash"][0] == batch["hash"][2] != batch["hash"][1] and len(batch["hash"][0]) == 32
    assert batch["copy_of"].tolist() == [-1, -1, 0, -1, 3]
    assert (
        batch["ok"].tolist() == [True, True, True, False, False] and batch["reason"][4] == batch["reason"][3]
    )
    assert batch["stat_blur"][2] == batch["stat_blur"][0] and batch["thumbnail"][2] == batch["thumbnail"][0]
    embed = EmbedBatches(None, DEFAULT_D, "cpu")
    seen = []
    real = embed.embedder.embed
    embed.embedder.embed = lambda pixels: seen.append(len(pixels)) or real(pixels)
    vectors = embed(batch)["embedding"]
    assert seen == [2]  # a.jpg and b.jpg; the copy takes a.jpg's vector
    assert np.array_equal(vectors[2], vectors[0]) and not vectors[3].any()
    # A later batch with the same content is not run through the model either.
    again = embed(decode_items("u.", [Item("c.jpg", data=other)], size=176, first_seq=5))["embedding"]
    assert seen == [2] and np.array_equal(again[0], vectors[1])

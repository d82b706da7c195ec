"""Parquet files of image bytes (LAION-style and Hugging Face datasets) as an input kind."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fastdup_ray.map.batches import decode_items
from fastdup_ray.map.plan import unit_pieces
from fastdup_ray.map.sources import ReadSettings, WorkUnit, list_inputs, plan_units, read_unit
from fastdup_ray.map.sources import parquet as parquet_source
from fastdup_ray.map.sources.kinds import KINDS, kind_of
from fastdup_ray.rundir.resume import check_no_overlap, plan_resume
from fastdup_ray.sample import jpeg_bytes, make_scene

HF_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def jpegs(count: int, first: int = 0) -> list[bytes]:
    return [
        jpeg_bytes(make_scene(900 + i, material=i % 12).resize((64, 64))) for i in range(first, first + count)
    ]


def write_parquet(path, columns: dict, row_group_size: int | None = None, schema=None):
    pq.write_table(pa.table(columns, schema=schema), path, row_group_size=row_group_size)
    return path


def read(path, **settings) -> list:
    return list(read_unit(WorkUnit(path.name, "parquet", (str(path),)), ReadSettings(**settings)))


def test_parquet_is_a_registered_kind_of_its_own():
    assert kind_of("s3://b/laion/00000.parquet") == kind_of("X.PARQUET") == "parquet"
    assert KINDS["parquet"].own_shard and KINDS["archive"].own_shard and not KINDS["image"].own_shard
    assert kind_of("a.jpg") == "image" and kind_of("a.tar.gz") == "archive" and kind_of("a.mp4") == "video"
    assert kind_of("notes.txt") is None


def test_jpg_column_rows_named_by_key_with_captions(tmp_path):
    images = jpegs(3)
    path = write_parquet(
        tmp_path / "laion.parquet",
        {"key": ["000000000", "000000001", "000000002"], "jpg": images, "caption": ["a", "b", None]},
    )
    items = read(path)
    assert [i.location for i in items] == [f"{path}/00000000{n}" for n in range(3)]
    assert [i.data for i in items] == images
    assert [i.annotations for i in items] == [
        {"key": "000000000", "caption": "a"},
        {"key": "000000001", "caption": "b"},
        {"key": "000000002", "caption": None},
    ]


def test_hugging_face_image_struct_rows_named_by_row_number(tmp_path):
    images = jpegs(2)
    path = write_parquet(
        tmp_path / "train-00000-of-00001.parquet",
        {
            "image": [{"bytes": images[0], "path": "cat.jpg"}, {"bytes": images[1], "path": None}],
            "label": [3, 7],
        },
        schema=pa.schema([("image", HF_IMAGE), ("label", pa.int64())]),
    )
    items = read(path)
    assert [i.location for i in items] == [f"{path}/0", f"{path}/1"]
    assert [i.data for i in items] == images and [i.annotations for i in items] == [
        {"label": 3},
        {"label": 7},
    ]


def test_column_order_jpg_png_image_bytes_and_dunder_key(tmp_path):
    jpg, png = jpegs(2)
    path = write_parquet(tmp_path / "x.parquet", {"__key__": ["s1"], "png": [png], "jpg": [jpg]})
    [item] = read(path)
    assert item.location == f"{path}/s1" and item.data == jpg and item.annotations == {"__key__": "s1"}
    only_bytes = write_parquet(tmp_path / "y.parquet", {"bytes": [png], "width": [64]})
    [item] = read(only_bytes)
    assert item.data == png and item.annotations == {"width": 64}


def test_row_groups_null_corrupt_and_missing_bytes_rows_are_accounted(tmp_path):
    images = jpegs(4)
    path = write_parquet(
        tmp_path / "groups.parquet",
        {
            "key": list("abcdefg"),
            "jpg": [images[0], None, b"not a jpeg", images[1], images[2], b"", images[3]],
        },
        row_group_size=2,
    )
    assert pq.ParquetFile(path).num_row_groups == 4
    items = read(path)
    assert [i.location.rsplit("/", 1)[1] for i in items] == list("abcdefg")
    assert "null" in items[1].reason and items[1].data is None
    decoded = decode_items("groups.parquet", items, 32, 0)
    assert decoded["ok"].tolist() == [True, False, False, True, True, False, True]
    assert all(decoded["reason"][i] for i in (1, 2, 5))
    struct = write_parquet(
        tmp_path / "hf.parquet",
        {"image": [{"bytes": None, "path": "elsewhere/cat.jpg"}, None]},
        schema=pa.schema([("image", HF_IMAGE)]),
    )
    first, second = read(struct)
    assert "no bytes" in first.reason and "elsewhere/cat.jpg" in first.reason
    assert "null" in second.reason


def test_a_big_file_is_read_one_row_group_at_a_time(tmp_path, monkeypatch):
    # 8 row groups of ~100 KB of incompressible bytes: the first row needs the first group only.
    rows = [os.urandom(50_000) for _ in range(16)]
    path = write_parquet(tmp_path / "big.parquet", {"jpg": rows}, row_group_size=2)
    read_so_far = []
    opened = parquet_source.open_archive_stream

    def counting(location, options, keep_dir):
        class Counting:
            def __init__(self, handle):
                self.handle = handle

            def read(self, *args):
                data = self.handle.read(*args)
                read_so_far.append(len(data))
                return data

            def __getattr__(self, name):
                return getattr(self.handle, name)

        manager = opened(location, options, keep_dir)

        class Wrapped:
            def __enter__(self):
                return Counting(manager.__enter__())

            def __exit__(self, *exc):
                return manager.__exit__(*exc)

        return Wrapped()

    monkeypatch.setattr(parquet_source, "open_archive_stream", counting)
    items = read_unit(WorkUnit("big.parquet", "parquet", (str(path),)), ReadSettings())
    assert next(items).data == rows[0]
    assert sum(read_so_far) < os.path.getsize(path) / 3
    assert [i.data for i in items] == rows[1:]


def test_duplicate_keys_are_named_by_occurrence_and_num_images_caps_rows(tmp_path):
    images = jpegs(3)
    path = write_parquet(tmp_path / "d.parquet", {"key": ["k", "k", "j"], "jpg": images})
    assert [i.location for i in read(path)] == [f"{path}/k", f"{path}/k#2", f"{path}/j"]
    assert len(read(path, max_items_per_archive=2)) == 2


def test_unreadable_files_are_one_bad_row_naming_the_file(tmp_path):
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 this is not parquet at all")
    [item] = read(garbage)
    assert item.location == str(garbage) and "Parquet" in item.reason and not item.storage_failed
    good = write_parquet(tmp_path / "good.parquet", {"jpg": jpegs(2)})
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[:-20])
    [item] = read(cut)
    assert item.location == str(cut) and item.reason
    [item] = read(tmp_path / "gone.parquet")
    assert item.location == str(tmp_path / "gone.parquet") and "cannot read" in item.reason
    no_image = write_parquet(tmp_path / "meta.parquet", {"url": ["http://x"], "caption": ["c"]})
    [item] = read(no_image)
    assert item.location == str(no_image) and "no image column" in item.reason and "url" in item.reason
    empty = write_parquet(tmp_path / "empty.parquet", {"jpg": pa.array([], pa.binary())})
    [item] = read(empty)
    assert item.location == str(empty) and "no rows" in item.reason


def test_a_storage_failure_is_not_bad_data(tmp_path, monkeypatch):
    path = write_parquet(tmp_path / "s.parquet", {"jpg": jpegs(1)})

    def broken(*args):
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(parquet_source, "open_archive_stream", broken)
    [item] = read(path)
    assert item.storage_failed and item.location == str(path) and "storage" in item.reason


def test_listing_plans_one_shard_per_file_fingerprinted_by_its_version(tmp_path):
    for name in ("a.parquet", "sub/b.PARQUET", "other/a.parquet"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        write_parquet(tmp_path / name, {"jpg": jpegs(1)})
    (tmp_path / "c.jpg").write_bytes(jpegs(1)[0])
    (tmp_path / "notes.txt").write_text("x")
    listing = list_inputs(str(tmp_path))
    assert sorted(os.path.basename(p) for p in listing.archives) == ["a.parquet", "a.parquet", "b.PARQUET"]
    units = plan_units(listing, shard_size=100)
    kinds = {u.name: u.kind for u in units}
    assert kinds["b.PARQUET"] == "parquet" and [k for k in kinds.values()].count("files") == 1
    shared = [name for name in kinds if name.startswith("a.parquet-")]
    assert len(shared) == 2  # two files of one name: the name plus a hash of the location
    before = {u.name: u.fingerprint for u in units}
    os.utime(tmp_path / "sub/b.PARQUET", ns=(1, 1))
    after = {u.name: u.fingerprint for u in plan_units(list_inputs(str(tmp_path)), shard_size=100)}
    assert [name for name in before if before[name] != after[name]] == ["b.PARQUET"]
    single = list_inputs(str(tmp_path / "sub/b.PARQUET"))
    assert [u.kind for u in plan_units(single, shard_size=100)] == ["parquet"]


def test_the_local_engine_reads_a_parquet_unit_in_order_like_an_archive(tmp_path):
    path = write_parquet(tmp_path / "p.parquet", {"jpg": jpegs(5)}, row_group_size=2)
    pieces = list(unit_pieces(WorkUnit("p.parquet", "parquet", (str(path),)), ReadSettings(), 2))
    assert [[i.location for i in piece.work["items"][0]] for piece in pieces] == [
        [f"{path}/0", f"{path}/1"],
        [f"{path}/2", f"{path}/3"],
        [f"{path}/4"],
    ]


def test_resume_treats_parquet_shards_as_one_file_each():
    unit = WorkUnit("a.parquet", "parquet", ("/d/a.parquet",), "f1")
    marker = {"inputs": "f1", "kind": "parquet", "first": "/d/a.parquet", "last": "/d/a.parquet", "count": 1}
    plan = plan_resume([unit], {"a.parquet": marker}, {"a.parquet"}, whole_run=False)
    assert plan.reused == ["a.parquet"] and not plan.todo
    # A slice that holds the file again under another shard name supersedes the old shard.
    renamed = WorkUnit("a.parquet-1234567890.", "parquet", ("/d/a.parquet",), "f1")
    plan = plan_resume([renamed], {"a.parquet": marker}, {"a.parquet"}, whole_run=False)
    assert plan.stale == ["a.parquet"]
    with pytest.raises(Exception, match="both made from /d/a.parquet"):
        check_no_overlap({"a.parquet": marker, "a.parquet-1234567890.": marker})


def test_columns_named_like_the_frames_own_are_kept_under_another_name(tmp_path):
    path = write_parquet(tmp_path / "r.parquet", {"jpg": jpegs(1), "filename": ["cat.jpg"], "index": [4]})
    [item] = read(path)
    assert item.annotations == {"parquet_filename": "cat.jpg", "parquet_index": 4}

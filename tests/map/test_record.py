"""The batch record: every producer makes, and every consumer accepts, only its declared columns."""

import numpy as np
import pytest

from fastdup_ray.map.batches import EmbedBatches, decode_items
from fastdup_ray.map.extract import ShardCollector
from fastdup_ray.map.record import (
    DECODED,
    EMBEDDED,
    UNCOUNTED,
    UNIT_END,
    WORK,
    RecordError,
    ends,
    unit_end,
    work_batch,
)
from fastdup_ray.map.sources import Item
from fastdup_ray.rundir.shards import list_shards, load_shards
from fastdup_ray.rundir.workdir import WorkDir
from fastdup_ray.sample import jpeg_bytes, make_scene


def test_decode_makes_exactly_the_decoded_record():
    batch = decode_items("u.", [Item("a.jpg", data=jpeg_bytes(make_scene(0)))], 32, 0, total=1)
    assert set(batch) == set(DECODED.names) and DECODED.check(batch) is batch
    assert batch["pixels"].shape == (2, 32, 32, 3) and batch["control"].tolist() == [0, UNIT_END]


def test_a_batch_missing_a_declared_column_is_an_error_naming_it(tmp_path):
    batch = decode_items("u.", [Item("a.jpg", reason="gone")], 4, 0)
    del batch["thumbnail"]
    with pytest.raises(RecordError, match=r"decoded batch .*missing \['thumbnail'\]"):
        EmbedBatches(None, 320, "cpu")(batch)
    embedded = unit_end("u.", 0, 0, d=3)
    del embedded["hash"]
    with pytest.raises(RecordError, match=r"missing \['hash'\]"):
        ShardCollector(WorkDir(str(tmp_path)), d=3).add(embedded)
    assert list_shards(WorkDir(str(tmp_path))) == []


def test_an_undeclared_column_or_a_wrong_kind_of_number_is_an_error():
    batch = unit_end("u.", 0, 0, d=3)
    with pytest.raises(RecordError, match=r"undeclared \['end'\]"):
        EMBEDDED.check({**batch, "end": np.ones(1, bool)})
    with pytest.raises(RecordError, match="'ok' of a embedded batch is float64, not bool"):
        EMBEDDED.check({**batch, "ok": np.zeros(1)})
    with pytest.raises(RecordError, match="different lengths"):
        EMBEDDED.check({**batch, "path": np.array(["a", "b"], dtype=object)})


def test_work_rows_carry_items_only_as_their_declared_optional_column():
    items = [Item("t.tar/0.jpg", data=b"x")]
    work = work_batch("t.", "archive", (), 4, False, items=items)
    assert WORK.check(work)["items"][0] is items and not work["closes"][0] and work["first_seq"][0] == 4
    assert "items" not in work_batch("u.", "files", ["/x/a.jpg"])


def test_an_uncounted_end_row_closes_its_unit_once_the_rows_before_it_are_in(tmp_path):
    """The local engine's last cut of a unit cannot count the unit's rows: the stream's
    order says they are in, so the shard is committed on its end row."""
    work = WorkDir(str(tmp_path))
    collector = ShardCollector(work, d=3)
    rows = decode_items("u.", [Item("a.jpg", data=jpeg_bytes(make_scene(0))), Item("b", reason="bad")], 4, 0)
    rows = {k: v for k, v in rows.items() if k != "pixels"} | {"embedding": np.ones((2, 3), np.float32)}
    collector.add(rows)
    assert list_shards(work) == []
    end = unit_end("u.", 2, UNCOUNTED, d=3)
    assert ends(end).tolist() == [True]
    collector.add(end)
    assert list_shards(work) == ["u."] and load_shards(work, ["u."], 3)[0] == ["a.jpg"]
    assert (collector.good, collector.bad) == (1, 1)

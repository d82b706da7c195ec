"""Runs over Parquet files of image bytes: a local folder, an S3 prefix, the Ray engine."""

from __future__ import annotations

import os

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fastdup_ray
from fastdup_ray.actions.dedup import write_deduplicated_webdataset, write_keep_remove
from fastdup_ray.actions.folder import changed_input, plan_actions
from fastdup_ray.errors import InputError
from fastdup_ray.rundir.results import read_input_annotations
from fastdup_ray.rundir.shards import list_shards, read_marker
from fastdup_ray.rundir.workdir import WorkDir
from fastdup_ray.sample import jpeg_bytes, make_scene, near_duplicate

pytestmark = pytest.mark.integration
HF_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
PARQUET_SHARDS = ["a.parquet", "b.parquet"]


def write_inputs(root) -> tuple[str, str]:
    """a.parquet (jpg column, key, caption, width; row groups of 2; a null and a corrupt
    row), b.parquet (Hugging Face image struct, no key; row 1 a near-duplicate of a's k0),
    a loose c.jpg and a notes.txt. Returns the planted pair's row names."""
    root.mkdir(parents=True, exist_ok=True)
    scenes = [make_scene(700 + i, material=i) for i in range(6)]
    a_images = [jpeg_bytes(scenes[0]), jpeg_bytes(scenes[1]), None, b"corrupt", jpeg_bytes(scenes[2])]
    pq.write_table(
        pa.table(
            {
                "key": [f"k{i}" for i in range(5)],
                "jpg": a_images,
                "caption": [f"caption {i}" for i in range(5)],
                "width": [256] * 5,
            }
        ),
        root / "a.parquet",
        row_group_size=2,
    )
    b_images = [jpeg_bytes(scenes[3]), jpeg_bytes(near_duplicate(scenes[0], 0)), jpeg_bytes(scenes[4])]
    pq.write_table(
        pa.table(
            {"image": [{"bytes": b, "path": None} for b in b_images], "caption": ["x", "copy of k0", "y"]},
            schema=pa.schema([("image", HF_IMAGE), ("caption", pa.string())]),
        ),
        root / "b.parquet",
    )
    (root / "c.jpg").write_bytes(jpeg_bytes(scenes[5]))
    (root / "notes.txt").write_text("not an input")
    return f"{root}/a.parquet/k0", f"{root}/b.parquet/1"


def every_row(work) -> list[str]:
    names, _ = fastdup_ray.load_binary_features(work)
    return names + pl.read_csv(work / "features.bad.csv", infer_schema=False)["filename"].to_list()


def pairs(work) -> set[frozenset]:
    similarity = pl.read_csv(work / "similarity.csv")
    return {frozenset(p) for p in zip(similarity["from"], similarity["to"])}


def test_a_folder_of_parquet_files_resumes_per_file_and_keeps_captions(tmp_path):
    root = tmp_path / "inputs"
    pair = write_inputs(root)
    work = tmp_path / "work"
    summary = fastdup_ray.run(str(root), str(work), executor="local")
    assert (summary.good, summary.bad) == (7, 2)
    rows = every_row(work)
    assert len(rows) == len(set(rows)) == 9
    assert set(rows) == {f"{root}/a.parquet/k{i}" for i in range(5)} | {
        f"{root}/b.parquet/{i}" for i in range(3)
    } | {f"{root}/c.jpg"}
    assert list_shards(WorkDir(str(work))) == [*PARQUET_SHARDS, "images-000000000-000000001."]
    assert pairs(work) == {frozenset(pair)}
    bad = dict(pl.read_csv(work / "features.bad.csv", infer_schema=False).iter_rows())
    assert (
        set(bad) == {f"{root}/a.parquet/k2", f"{root}/a.parquet/k3"} and "null" in bad[f"{root}/a.parquet/k2"]
    )

    captions = read_input_annotations(str(work))
    assert dict(zip(captions["filename"], captions["caption"]))[pair[1]] == "copy of k0"
    frame = fastdup_ray.create(str(work)).annotations(valid_only=False, as_polars=True)
    by_name = dict(zip(frame["filename"], frame["caption"]))
    assert by_name[pair[0]] == "caption 0" and by_name[f"{root}/a.parquet/k2"] == "caption 2"
    assert by_name[f"{root}/c.jpg"] is None

    again = fastdup_ray.run(str(root), str(work), executor="local")
    assert again.skipped_shards == 3 and (again.good, again.bad) == (7, 2)
    marker_a, marker_b = (work / f"{name}features.done" for name in PARQUET_SHARDS)
    before = marker_a.stat().st_mtime_ns, marker_b.stat().st_mtime_ns
    info = os.stat(root / "b.parquet")
    os.utime(root / "b.parquet", ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
    third = fastdup_ray.run(str(root), str(work), executor="local")
    assert third.skipped_shards == 2 and (third.good, third.bad) == (7, 2)
    assert marker_a.stat().st_mtime_ns == before[0] and marker_b.stat().st_mtime_ns != before[1]
    assert pairs(work) == {frozenset(pair)}

    _, remove_csv = write_keep_remove(str(work), keep="resolution")
    assert pl.read_csv(remove_csv)["filename"].to_list() == [pair[1]]  # the shrunk copy goes
    written = write_deduplicated_webdataset(str(work), str(tmp_path / "wds"))
    assert list(written) == [] and len(written.problems) == 1 and "Parquet" in written.problems[0]
    with pytest.raises(InputError, match="a row of the Parquet file"):
        plan_actions(str(work), "delete")
    # The folder actions' check that inputs are unchanged reads a Parquet shard's file, not its rows.
    shard = WorkDir(str(work))
    assert changed_input(shard, "a.parquet", read_marker(shard, "a.parquet"), {}) is None


def test_an_s3_prefix_of_parquet_files(s3_server, tmp_path):
    import boto3
    import s3fs

    key, secret = "AKIAFASTDUPTEST", "very-secret-value-123"
    boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    ).create_bucket(Bucket="fdr-parquet")
    fs = s3fs.S3FileSystem(
        key=key, secret=secret, client_kwargs={"endpoint_url": s3_server, "region_name": "us-east-1"}
    )
    write_inputs(tmp_path / "inputs")
    for name in PARQUET_SHARDS:
        fs.put_file(str(tmp_path / "inputs" / name), f"fdr-parquet/laion/{name}")
    options = dict(s3_endpoint_url=s3_server, s3_region="us-east-1", s3_key=key, s3_secret=secret)
    work = tmp_path / "work"
    summary = fastdup_ray.run("s3://fdr-parquet/laion", str(work), executor="local", **options)
    assert (summary.good, summary.bad) == (6, 2)
    assert pairs(work) == {
        frozenset(("s3://fdr-parquet/laion/a.parquet/k0", "s3://fdr-parquet/laion/b.parquet/1"))
    }
    assert list_shards(WorkDir(str(work))) == PARQUET_SHARDS
    again = fastdup_ray.run("s3://fdr-parquet/laion", str(work), executor="local", **options)
    assert again.skipped_shards == 2


def test_the_ray_engine_reads_parquet_files(ray_local, tmp_path):
    root = tmp_path / "inputs"
    pair = write_inputs(root)
    work = tmp_path / "work"
    summary = fastdup_ray.run(str(root), str(work), executor="ray")
    assert (summary.good, summary.bad) == (7, 2) and pairs(work) == {frozenset(pair)}
    assert len(set(every_row(work))) == 9
    captions = read_input_annotations(str(work), PARQUET_SHARDS)
    assert captions.height == 8 and set(captions["caption"]) >= {"caption 3", "copy of k0"}

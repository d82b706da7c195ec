"""s3:// and minio:// inputs and work dirs against moto's S3 server on loopback."""

from __future__ import annotations

import io
import json
import logging

import polars as pl
import pytest
from conftest import S3_KEY as KEY
from conftest import S3_SECRET as SECRET
from conftest import s3_environment, s3_options, shows_file

import fastdup_ray
from fastdup_ray.errors import InputError
from fastdup_ray.rundir.storage import (
    StorageOptions,
)

pytestmark = pytest.mark.integration


def test_s3_archives_to_s3_work_dir_and_resume(ray_local, s3_server, bucket, caplog):
    caplog.set_level(logging.DEBUG, logger="fastdup_ray")
    summary = fastdup_ray.run("s3://fdr-test/data", "s3://fdr-test/work", **s3_options(s3_server))
    assert (summary.good, summary.bad) == (8, 1)
    for name in (
        "00000.tarfeatures.dat",
        "more.zipfeatures.dat.csv",
        "00001.tarfeatures.bad.csv",
        "extra.tgzfeatures.done",
        "similarity.csv",
        "connected_components.csv",
    ):
        assert bucket.exists(f"fdr-test/work/{name}")
    similarity = pl.read_csv(io.BytesIO(bucket.cat_file("fdr-test/work/similarity.csv")))
    assert {frozenset(p) for p in zip(similarity["from"], similarity["to"])} == {
        frozenset(("s3://fdr-test/data/00000.tar/000000002.jpg", "s3://fdr-test/data/more.zip/copy_of_2.jpg"))
    }
    config = bucket.cat_file("fdr-test/work/config.json").decode()
    assert SECRET not in config and KEY not in config and json.loads(config)["s3_endpoint_url"] == s3_server
    assert SECRET not in caplog.text
    again = fastdup_ray.run("s3://fdr-test/data", "s3://fdr-test/work", **s3_options(s3_server))
    assert again.skipped_shards == 4
    assert bucket.cat_file("fdr-test/work/similarity.csv") == similarity.write_csv().encode()


def test_minio_folder_of_images_to_local_work_dir(ray_local, s3_server, bucket, sample, tmp_path):
    host = s3_server.removeprefix("http://")
    summary = fastdup_ray.run(
        f"minio://{host}/fdr-test/photos", str(tmp_path), s3_key=KEY, s3_secret=SECRET, s3_region="us-east-1"
    )
    assert (summary.good, summary.bad) == (len(sample.images), 1)
    names, _ = fastdup_ray.load_binary_features(tmp_path)
    assert all(n.startswith(f"minio://{host}/fdr-test/photos/") for n in names)
    assert summary.similar_pairs == len(sample.duplicate_pairs)


def test_galleries_of_s3_objects_extracted_without_thumbnails_read_the_objects(
    s3_server, bucket, sample, tmp_path, monkeypatch
):
    """thumbnail_size=0 on an s3:// folder, local work dir: the galleries make each
    thumbnail from its object, at the endpoint the run's config.json records."""
    import re

    work = tmp_path / "work"
    fastdup_ray.run(
        "s3://fdr-test/photos", str(work), executor="local", thumbnail_size=0, **s3_options(s3_server)
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)  # keys from the environment, as for any reader
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    page = fastdup_ray.create_stats_gallery(work, tmp_path / "g", num_images=len(sample.images))
    text = page.read_text()
    shown = re.findall(r'<img src="([^"]+)"[^>]*>.*?<div class="location">(.*?)</div>', text, re.S)
    assert len(shown) == len(sample.images)
    for source, location in shown:
        original = sample.root / location.removeprefix("s3://fdr-test/photos/")
        assert shows_file((page.parent / source).read_bytes(), original), location


def test_s3_file_list_with_a_missing_entry(ray_local, s3_server, bucket, tmp_path):
    bucket.pipe_file(
        "fdr-test/lists/some.txt",
        b"# two photos and a ghost\ns3://fdr-test/photos/scene_000.jpg\n\ns3://fdr-test/photos/scene_001.jpg\ns3://fdr-test/photos/ghost.jpg\n",
    )
    summary = fastdup_ray.run("s3://fdr-test/lists/some.txt", str(tmp_path), **s3_options(s3_server))
    assert (summary.good, summary.bad) == (2, 1)
    bad = pl.read_csv(tmp_path / "features.bad.csv")
    assert (
        bad["filename"].to_list() == ["s3://fdr-test/photos/ghost.jpg"]
        and "cannot read file" in bad["error"][0]
    )


def test_delete_tar_0_keeps_downloaded_archives_in_the_cache(ray_local, s3_server, bucket, tmp_path):
    cache = tmp_path / "cache"
    fastdup_ray.run(
        "s3://fdr-test/data/00000.tar",
        str(tmp_path / "work"),
        turi_param="delete_tar=0,delete_img=0",
        cache_dir=str(cache),
        **s3_options(s3_server),
    )
    from fastdup_ray.map.sources import cache_key

    entry = cache_key("s3://fdr-test/data/00000.tar")
    assert (cache / "archives" / entry).stat().st_size == bucket.size("fdr-test/data/00000.tar")
    assert sorted(p.name for p in (cache / "images" / entry).iterdir()) == [
        "000000000.jpg",
        "000000001.jpg",
        "000000002.jpg",
    ]
    fastdup_ray.run(
        "s3://fdr-test/data/00001.tar",
        str(tmp_path / "work2"),
        cache_dir=str(tmp_path / "cache2"),
        **s3_options(s3_server),
    )
    assert not (tmp_path / "cache2").exists()  # by default nothing is left behind


def test_missing_bucket_is_a_clear_error(s3_server):
    with pytest.raises(InputError, match="s3://no-such-bucket/x"):
        fastdup_ray.map.sources.list_inputs(
            "s3://no-such-bucket/x",
            StorageOptions(endpoint_url=s3_server, key=KEY, secret=SECRET, region="us-east-1"),
        )


def test_same_named_tars_in_two_prefixes_and_a_changed_object_on_rerun(
    ray_local, s3_server, bucket, tmp_path
):
    """s3://b/a/00000.tar and s3://b/b/00000.tar: two shards and two cache entries, each
    from its own bytes; re-uploading one object makes a rerun extract that shard again."""
    from conftest import write_tar

    from fastdup_ray.sample import jpeg_bytes, make_scene

    def upload(prefix, seeds):
        local = tmp_path / f"{prefix}.tar"
        write_tar(local, {f"{seed}.jpg": jpeg_bytes(make_scene(seed, material=seed % 9)) for seed in seeds})
        bucket.put_file(str(local), f"fdr-test/twins/{prefix}/00000.tar")

    upload("a", [900, 901])
    upload("b", [902, 903, 904])
    cache, work = tmp_path / "cache", tmp_path / "work"
    options = dict(cache_dir=str(cache), turi_param="delete_tar=0", executor="ray", **s3_options(s3_server))
    first = fastdup_ray.run("s3://fdr-test/twins", str(work), **options)
    names, _ = fastdup_ray.load_binary_features(work)
    assert first.good == 5 and sorted(n.rsplit("/", 2)[-2] + "/" + n.rsplit("/", 1)[-1] for n in names) == [
        "00000.tar/900.jpg",
        "00000.tar/901.jpg",
        "00000.tar/902.jpg",
        "00000.tar/903.jpg",
        "00000.tar/904.jpg",
    ]
    kept = [p for p in (cache / "archives").iterdir() if not p.name.endswith(".version")]
    assert sorted(p.stat().st_size for p in kept) == sorted(
        bucket.size(f"fdr-test/twins/{x}/00000.tar") for x in "ab"
    )
    upload("a", [905])
    again = fastdup_ray.run("s3://fdr-test/twins", str(work), **options)
    assert (again.skipped_shards, again.good) == (1, 4)
    assert sorted(n.rsplit("/", 1)[-1] for n in fastdup_ray.load_binary_features(work)[0]) == [
        "902.jpg",
        "903.jpg",
        "904.jpg",
        "905.jpg",
    ]


def test_dedup_of_an_s3_work_dir_writes_keep_remove_and_webdataset_copies_to_s3(s3_server, bucket):
    """`fastdup-ray dedup s3://work --webdataset-out s3://prefix`, as a user runs it on a
    cluster: keep.csv and remove.csv go to the S3 work dir, each archive's copy to the
    prefix without the removed sample, and a prefix holding the inputs is refused."""
    import os
    import subprocess
    import sys
    import tarfile
    import zipfile

    work = "s3://fdr-test/dedup-work"
    fastdup_ray.run("s3://fdr-test/data", work, executor="local", **s3_options(s3_server))
    env = dict(os.environ, **s3_environment(s3_server), RAY_ADDRESS="")

    def dedup(*args):
        command = [sys.executable, "-m", "fastdup_ray", "dedup", work, *args]
        return subprocess.run(command, env=env, capture_output=True, text=True)

    done = dedup("--webdataset-out", "s3://fdr-test/wds")
    assert done.returncode == 0, done.stderr
    removed = pl.read_csv(io.BytesIO(bucket.cat_file("fdr-test/dedup-work/remove.csv")))["filename"].to_list()
    assert removed == ["s3://fdr-test/data/more.zip/copy_of_2.jpg"]  # the shrunk copy
    assert len(pl.read_csv(io.BytesIO(bucket.cat_file("fdr-test/dedup-work/keep.csv")))) == 7
    assert sorted(p.rsplit("/", 1)[1] for p in bucket.ls("fdr-test/wds")) == [
        "00000.tar",
        "00001.tar",
        "extra.tgz",
        "more.zip",
    ]
    with zipfile.ZipFile(io.BytesIO(bucket.cat_file("fdr-test/wds/more.zip"))) as copy:
        assert copy.namelist() == ["7.jpg"]
    with tarfile.open(fileobj=io.BytesIO(bucket.cat_file("fdr-test/wds/00000.tar"))) as copy:
        assert [m.name for m in copy] == [
            "000000000.jpg",
            "000000000.txt",
            "000000000.json",
            "000000001.jpg",
            "000000001.txt",
            "000000002.jpg",
            "000000002.json",
        ]
        assert copy.extractfile("000000001.txt").read() == b"another"
    refused = dedup("--webdataset-out", "s3://fdr-test/data")
    assert refused.returncode != 0 and "is an input archive of the run" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_work_dir_sees_what_other_workers_wrote_after_it_listed(s3_server, bucket):
    """Workers write the same prefixes, so a work dir that listed its folder must still
    find a file another client wrote afterwards: no listing is answered from a cache,
    though every work dir of the process shares one S3 client."""
    from fastdup_ray.rundir.workdir import WorkDir

    options = StorageOptions(endpoint_url=s3_server, region="us-east-1", key=KEY, secret=SECRET)
    work = WorkDir("s3://fdr-test/listed", options)
    work.write_bytes("a.done", b"1")
    assert work.names() == ["a.done"]
    bucket.pipe_file("fdr-test/listed/b.done", b"2")  # another worker's client
    assert work.exists("b.done") and work.read_bytes("b.done") == b"2"
    assert work.names() == ["a.done", "b.done"]
    assert WorkDir("s3://fdr-test/listed", options).fs is work.fs


def test_reading_a_work_dir_file_back_is_one_get_and_no_head():
    """The run reads thousands of small files back (markers, names, stats, exchange
    parts): each must cost one GET, not a HEAD for its size first, and a missing one
    one request too. Counted by the loopback S3 server's middleware."""
    from loopback import LoopbackS3

    server = LoopbackS3()
    try:
        work = counted_work_dir(server, "counted")
        for name in ("a.done", "b.csv"):
            work.write_bytes(name, name.encode())
        server.phase("reads")
        assert work.read_bytes("a.done") == b"a.done" and work.read_if_present("b.csv") == b"b.csv"
        assert work.read_if_present("c.done") is None
        counted = server.counts()["reads"]
        assert (counted.get("requests_GET"), counted.get("requests_HEAD", 0)) == (3, 0)
    finally:
        server.stop()


def test_the_resume_check_of_an_s3_work_dir_is_one_listing_and_a_get_per_shard():
    """A rerun asks which shards are finished before extracting anything: every shard's
    files and the data file's size come from one listing (it holds the sizes), so a work
    dir of thousands of shards costs no HEAD each. A data file of the wrong size is not
    finished. Counted by the loopback S3 server's middleware."""
    from loopback import LoopbackS3

    from fastdup_ray.rundir.shards import finished_shards, shard_names

    server = LoopbackS3()
    try:
        work = counted_work_dir(server, "resumed")
        for prefix, data_bytes in (("a.tar", 2 * 3 * 4), ("b.tar", 5)):
            data, names, bad, done = shard_names(prefix)
            work.write_bytes(data, b"\0" * data_bytes)
            work.write_bytes(names, b"filename\nx\ny\n")
            work.write_bytes(bad, b"filename,error\n")
            work.write_bytes(done, json.dumps({"d": 3, "good": 2}).encode())
        work.write_bytes("config.json", b"{}")
        server.phase("resume")
        markers, complete = finished_shards(work, 3)
        assert sorted(markers) == ["a.tar", "b.tar"] and complete == {"a.tar"}
        counted = server.counts()["resume"]
        requests = {kind: counted.get(f"requests_{kind}", 0) for kind in ("LIST", "GET", "HEAD")}
        assert requests == {"LIST": 1, "GET": 2, "HEAD": 0}  # the listing, the two markers
    finally:
        server.stop()


def test_a_distributed_reduce_on_an_s3_work_dir_leaves_nothing_in_the_temp_dir(
    s3_server, bucket, tmp_path, monkeypatch
):
    """The reduce's tasks copy a table's remote parts to local disk to stream them (the
    CSVs, the outliers): on a cluster those copies are as large as the run's tables and
    must not stay in a worker's temp dir once the task is done, nor in the reader's."""
    import tempfile

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # the local engine's worker processes
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # this process
    work = "s3://fdr-test/distributed-work"
    summary = fastdup_ray.run(
        "s3://fdr-test/data",
        work,
        executor="local",
        reduce_strategy="distributed",
        rows_per_partition=3,
        **s3_options(s3_server),
    )
    assert summary.similar_pairs == 1
    for name, value in s3_environment(s3_server).items():
        monkeypatch.setenv(name, value)
    fd = fastdup_ray.create(work_dir=work)
    assert len(fd.connected_components()[0]) == summary.grouped_images == 2 and len(fd.outliers()) > 0
    assert fastdup_ray.load_binary_features(work)[1].shape[0] == summary.good
    left = sorted(str(p.relative_to(temp)) for p in temp.rglob("*") if "fastdup_ray" in str(p))
    assert left == [], "\n".join(left)


def test_fastdup_features_in_an_s3_folder_load_with_their_names(s3_server, bucket, monkeypatch):
    """A plain features.dat + features.dat.csv (fastdup's own output, copied to S3) reads
    back from the folder's s3:// address as it does from a local folder."""
    import numpy as np

    for name, value in s3_environment(s3_server).items():
        monkeypatch.setenv(name, value)
    vectors = np.arange(12, dtype="<f4").reshape(3, 4)
    names_csv = b"index,filename\n0,a.jpg\n1,b.jpg\n2,c.jpg\n"
    bucket.pipe_file("fdr-test/fastdup-out/features.dat", vectors.tobytes())
    bucket.pipe_file("fdr-test/fastdup-out/features.dat.csv", names_csv)
    names, loaded = fastdup_ray.load_binary_features("s3://fdr-test/fastdup-out")
    assert names == ["a.jpg", "b.jpg", "c.jpg"] and loaded.tolist() == vectors.tolist()

    # A features.dat cut short is named by the address the user gave, not a temporary copy.
    bucket.pipe_file("fdr-test/fastdup-short/features.dat", vectors.tobytes()[:-4])
    bucket.pipe_file("fdr-test/fastdup-short/features.dat.csv", names_csv)
    with pytest.raises(fastdup_ray.errors.InputError) as error:
        fastdup_ray.load_binary_features("s3://fdr-test/fastdup-short", d=4)
    assert str(error.value).startswith("s3://fdr-test/fastdup-short/features.dat holds 44 bytes")


def test_thumbnails_of_a_few_rows_are_read_without_their_whole_shard():
    """A gallery shows a few rows of each of many shards (a LAION run's galleries with
    num_images): it must read those rows' part of a thumbnails file, not the whole file
    (~110 MB for a shard of 10,000 images at 256 px) for each. Counted by the loopback S3 server."""
    import numpy as np
    from loopback import LoopbackS3

    from fastdup_ray.rundir.shards import THUMBNAILS_FILE, FeatureShardWriter, load_thumbnails

    server = LoopbackS3()
    try:
        work = counted_work_dir(server, "thumbs")
        rng = np.random.default_rng(0)
        thumbnails = [rng.bytes(4000) for _ in range(640)]
        with FeatureShardWriter(work, d=2, prefix="a.tar") as writer:
            for start in range(0, 640, 64):  # one batch of the sink at a time, as a run writes
                names = [f"a.tar/{i}.jpg" for i in range(start, start + 64)]
                writer.add_good(names, np.zeros((64, 2)), thumbnails=thumbnails[start : start + 64])
        size = work.size(f"a.tar{THUMBNAILS_FILE}")
        server.phase("gallery")
        assert load_thumbnails(work, ["a.tar"], [3, 600]) == {3: thumbnails[3], 600: thumbnails[600]}
        read = server.counts()["gallery"]["bytes_out"]
        assert read < size / 3, f"read {read} bytes of a {size}-byte thumbnails file for 2 of its 640 rows"
        server.phase("every row")
        assert load_thumbnails(work, ["a.tar"], range(640)) == dict(enumerate(thumbnails))
        counted = server.counts()["every row"]
        # The shard's marker (its rows), then the file in one read, not a read per row group.
        assert counted["requests_GET"] == 2
    finally:
        server.stop()


def counted_work_dir(server, bucket: str):
    """An s3:// work dir in a new bucket of the loopback S3 server, whose requests it counts."""
    from fastdup_ray.rundir.workdir import WorkDir

    server.create_bucket(bucket)
    options = StorageOptions(endpoint_url=server.endpoint, region="us-east-1", key=KEY, secret=SECRET)
    return WorkDir(f"s3://{bucket}/work", options)

"""dedup --webdataset-out: every input archive of a run rewritten beside the inputs without
the removed samples. Each test builds real archives of generated JPEGs, runs fastdup_ray
on them and reads the outputs back member by member, as a user would."""

from __future__ import annotations

import gzip
import io
import logging
import tarfile
import zipfile

import polars as pl
import pytest

import fastdup_ray
from fastdup_ray.actions.dedup import write_deduplicated_webdataset
from fastdup_ray.errors import InputError
from fastdup_ray.rundir import results
from fastdup_ray.rundir.layout import SIMILARITY_FILE
from fastdup_ray.sample import jpeg_bytes, make_scene, near_duplicate

# Image bytes -> their scene's name, so a failing comparison reads '<A.jpeg>', not bytes.
LABELS: dict[bytes, str] = {}


@pytest.fixture(scope="module")
def jpegs():
    """Five distinct scenes A..E and a near copy of each (A2..E2). Tests put a copy in the
    archive of its original: which of two archives' copies a run keeps first is its shard
    order, not the listing's."""
    scenes = {name: make_scene(700 + i, material=i) for i, name in enumerate("ABCDE")}
    images = {name: jpeg_bytes(scene) for name, scene in scenes.items()}
    images.update({f"{name}2": jpeg_bytes(near_duplicate(scene, 0)) for name, scene in scenes.items()})
    LABELS.update({data: f"<{name}.jpeg>" for name, data in images.items()})
    return images


def shown(members: list[tuple[str, bytes]]) -> list[tuple[str, bytes | str]]:
    return [(name, LABELS.get(data, data)) for name, data in members]


def write_members(path, members: list[tuple[str, bytes]]):
    """A tar (gzip for .tgz/.tar.gz) or zip of ``members`` in order; names may repeat."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.lower().endswith(".zip"):
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in members:
                archive.writestr(name, data)
        return path
    mode = "w:gz" if path.name.lower().endswith((".tgz", ".tar.gz")) else "w"
    with tarfile.open(path, mode) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def members_of(path) -> list[tuple[str, bytes | str]]:
    """(name, content) of every file member of an output archive, in archive order."""
    if path.name.lower().endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            return shown(
                [(info.filename, archive.read(info)) for info in archive.infolist() if not info.is_dir()]
            )
    with tarfile.open(path) as archive:
        return shown([(m.name, archive.extractfile(m).read()) for m in archive.getmembers() if m.isfile()])


def dedup(root, tmp_path):
    """A real run over ``root`` (local executor, k=2) and its deduplicated archives."""
    work = tmp_path / "work"
    fastdup_ray.run(str(root), str(work), k=2, executor="local")
    return write_deduplicated_webdataset(str(work), str(tmp_path / "out"), keep="first")


def test_key_repeated_back_to_back_keeps_both_samples(tmp_path, jpegs):
    # Sample 000 appears twice in a row with different pictures: two samples, not one
    # whose members overwrite each other. 002 is a near copy of the first 000: removed.
    root = tmp_path / "in"
    shard = [
        ("000.jpg", jpegs["A"]),
        ("000.txt", b"first"),
        ("000.jpg", jpegs["B"]),
        ("000.txt", b"second"),
        ("001.jpg", jpegs["C"]),
        ("001.txt", b"c"),
        ("002.jpg", jpegs["A2"]),
        ("002.txt", b"copy of first"),
    ]
    write_members(root / "00000.tar", shard)
    written = dedup(root, tmp_path)
    assert written == [tmp_path / "out" / "00000.tar"]
    assert members_of(written[0]) == shown(shard[:6])


def test_repeated_image_name_decided_per_occurrence(tmp_path, jpegs):
    # The same member name twice, the second a near copy of the first: the reader embeds
    # the second as '000.jpg#2', so the first survives and the second goes with its caption.
    root = tmp_path / "in"
    shard = [
        ("000.jpg", jpegs["A"]),
        ("000.txt", b"first"),
        ("000.jpg", jpegs["A2"]),
        ("000.txt", b"second"),
        ("001.jpg", jpegs["C"]),
    ]
    write_members(root / "00000.tar", shard)
    written = dedup(root, tmp_path)
    assert members_of(written[0]) == shown(shard[:2] + shard[4:])


def retried_sample(jpegs) -> list[tuple[str, bytes]]:
    """A shard whose writer wrote sample 000 again, same picture, after sample 001."""
    return [
        ("000.jpg", jpegs["A"]),
        ("000.txt", b"first"),
        ("000.json", b'{"try": 1}'),
        ("001.jpg", jpegs["C"]),
        ("001.txt", b"c"),
        ("000.jpg", jpegs["A"]),
        ("000.txt", b"retry"),
        ("000.json", b'{"try": 2}'),
    ]


def test_retried_sample_is_an_exact_pair(tmp_path, jpegs):
    # The repeated member is an image of its own, '000.jpg#2', byte-identical to the first.
    root = tmp_path / "in"
    write_members(root / "00000.tar", retried_sample(jpegs))
    work = tmp_path / "work"
    summary = fastdup_ray.run(str(root), str(work), k=2, executor="local")
    shard = f"{root}/00000.tar"
    assert (summary.good, summary.bad) == (3, 0)
    first, retry = f"{shard}/000.jpg", f"{shard}/000.jpg#2"
    assert fastdup_ray.load_binary_features(work)[0] == [first, f"{shard}/001.jpg", retry]
    exact = results.read_table(str(work), SIMILARITY_FILE).filter(pl.col("exact"))
    assert {frozenset(pair) for pair in exact.select("from", "to").iter_rows()} == {frozenset((first, retry))}
    assert (exact["distance"] == 1.0).all()


@pytest.mark.parametrize("shard_name", ["00000.tar", "00000.zip"])
def test_retried_sample_with_the_same_bytes_is_written_once(tmp_path, jpegs, shard_name):
    # The first sample 000 is kept with its own caption and json; its retry goes whole.
    root = tmp_path / "in"
    shard = retried_sample(jpegs)
    write_members(root / shard_name, shard)
    written = dedup(root, tmp_path)
    assert members_of(written[0]) == shown(shard[:5])


def test_repeated_name_with_other_pictures_keeps_each_with_its_own_members(tmp_path, jpegs):
    # Sample 000 four times over, each a different picture: the n-th '000.jpg' is judged
    # as row '000.jpg#<n>'. The 1st and 4th are near copies of earlier images (removed with
    # their own .txt/.json), the 2nd and 3rd are kept with theirs. 'a#2.jpg' is a member
    # named so, not an occurrence.
    root = tmp_path / "in"
    shard = [
        ("001.jpg", jpegs["A"]),
        ("001.txt", b"a"),
        ("000.jpg", jpegs["A2"]),
        ("000.txt", b"copy of a"),
        ("000.json", b'{"n": 1}'),
        ("000.jpg", jpegs["B"]),
        ("000.txt", b"b"),
        ("000.json", b'{"n": 2}'),
        ("000.jpg", jpegs["C"]),
        ("000.txt", b"c"),
        ("000.json", b'{"n": 3}'),
        ("000.jpg", jpegs["B2"]),
        ("000.txt", b"copy of b"),
        ("000.json", b'{"n": 4}'),
        ("a#2.jpg", jpegs["D"]),
        ("a#2.txt", b"d"),
    ]
    write_members(root / "00000.tar", shard)
    written = dedup(root, tmp_path)
    assert members_of(written[0]) == shown(shard[:2] + shard[5:11] + shard[14:])
    removed = pl.read_csv(tmp_path / "work" / "remove.csv")["filename"].to_list()
    assert removed == [f"{root}/00000.tar/000.jpg", f"{root}/00000.tar/000.jpg#4"]


def test_same_shard_name_in_two_folders_mirrors_both(tmp_path, jpegs):
    root = tmp_path / "in"
    part1 = [("000.jpg", jpegs["A"]), ("000.txt", b"a"), ("001.jpg", jpegs["A2"]), ("001.txt", b"copy of a")]
    part2 = [("000.jpg", jpegs["B"]), ("000.txt", b"b"), ("001.jpg", jpegs["C"]), ("001.txt", b"c")]
    write_members(root / "part1" / "00000.tar", part1)
    write_members(root / "part2" / "00000.tar", part2)
    written = dedup(root, tmp_path)
    out = tmp_path / "out"
    assert written == [out / "part1" / "00000.tar", out / "part2" / "00000.tar"]
    assert members_of(written[0]) == shown(part1[:2])
    assert members_of(written[1]) == shown(part2)


def test_compressed_zip_and_upper_case_archives_written_in_their_format(tmp_path, jpegs):
    root = tmp_path / "in"
    plain = [("000.jpg", jpegs["A"]), ("000.txt", b"a")]
    targz = [("010.jpg", jpegs["B"]), ("010.json", b"{}"), ("011.jpg", jpegs["B2"]), ("011.json", b"{}")]
    tgz = [("x/020.jpg", jpegs["C"]), ("x/020.cls", b"3")]
    zipped = [("030.jpg", jpegs["D"]), ("030.txt", b"d"), ("031.jpg", jpegs["D2"]), ("031.txt", b"copy of d")]
    upper = [("040.jpg", jpegs["E"]), ("040.txt", b"e")]
    for name, members in (
        ("a.tar", plain),
        ("b.tar.gz", targz),
        ("c.tgz", tgz),
        ("d.zip", zipped),
        ("e.TAR", upper),
    ):
        write_members(root / name, members)
    written = dedup(root, tmp_path)
    out = tmp_path / "out"
    assert written == [out / "a.tar", out / "b.tar.gz", out / "c.tgz", out / "d.zip", out / "e.TAR"]
    assert members_of(out / "a.tar") == shown(plain)
    assert members_of(out / "b.tar.gz") == shown(targz[:2])
    assert members_of(out / "c.tgz") == shown(tgz)
    assert members_of(out / "d.zip") == shown(zipped[:2])
    assert members_of(out / "e.TAR") == shown(upper)
    for name in ("b.tar.gz", "c.tgz"):  # gzip again, not a plain tar under a .tgz name
        assert gzip.decompress((out / name).read_bytes())[257:262] == b"ustar"
    assert zipfile.is_zipfile(out / "d.zip")


def folder_of_shards(tmp_path, jpegs):
    root = tmp_path / "in"
    write_members(root / "00000.tar", [("000.jpg", jpegs["A"]), ("001.jpg", jpegs["A2"])])
    return root, root


def folder_of_parts(tmp_path, jpegs):
    root = tmp_path / "in"
    write_members(root / "part1" / "00000.tar", [("000.jpg", jpegs["A"]), ("001.jpg", jpegs["A2"])])
    write_members(root / "part2" / "00000.tar", [("000.jpg", jpegs["B"])])
    return root, root


def link_to_the_inputs(tmp_path, jpegs):
    root, _ = folder_of_shards(tmp_path, jpegs)
    (tmp_path / "link").symlink_to(root, target_is_directory=True)
    return root, tmp_path / "link"


@pytest.mark.parametrize("layout", [folder_of_shards, folder_of_parts, link_to_the_inputs])
def test_output_over_the_inputs_is_refused_before_writing(tmp_path, jpegs, layout):
    root, out = layout(tmp_path, jpegs)
    work = tmp_path / "work"
    fastdup_ray.run(str(root), str(work), k=2, executor="local")
    before = {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    with pytest.raises(InputError, match=r"00000\.tar") as refused:
        write_deduplicated_webdataset(str(work), str(out), keep="first")
    assert "\n" not in str(refused.value)
    assert {
        p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    } == before  # nothing rewritten, no temp left
    assert not (work / "keep.csv").exists()  # refused before anything was written


def test_cut_off_and_unreadable_archives_are_reported(tmp_path, jpegs, caplog):
    root = tmp_path / "in"
    whole = write_members(root / "00000.tar", [("000.jpg", jpegs["A"]), ("000.txt", b"a")])
    cut = [
        ("100.jpg", jpegs["B"]),
        ("100.txt", b"b"),
        ("101.jpg", jpegs["C"]),
        ("101.txt", b"c"),
        ("102.jpg", jpegs["D"]),
    ]
    data = write_members(root / "00001.tar", cut).read_bytes()
    (root / "00001.tar").write_bytes(data[: len(data) - 1024 - len(jpegs["D"]) // 2])  # 102.jpg cut in half
    write_members(root / "00002.tar", [("200.jpg", jpegs["E"])])
    work = tmp_path / "work"
    fastdup_ray.run(str(root), str(work), k=2, executor="local")
    (root / "00002.tar").unlink()  # gone between the run and the dedup
    caplog.set_level(logging.WARNING, logger="fastdup_ray")
    out = tmp_path / "out"
    written = write_deduplicated_webdataset(str(work), str(out), keep="first")
    assert written == [out / "00000.tar", out / "00001.tar"]
    assert members_of(out / "00000.tar") == members_of(whole)
    assert members_of(out / "00001.tar") == shown(cut[:4])  # the samples read before the cut
    problems = written.problems
    assert len(problems) == 2
    assert "00001.tar" in problems[0] and "cut off or corrupt" in problems[0]
    assert "00002.tar" in problems[1] and "not written" in problems[1]
    assert not (out / "00002.tar").exists() and not list(out.glob(".*"))
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "fastdup_ray"
    ]
    assert all(any(p in w for w in warnings) for p in problems)
    # The command line says the same and exits 1: the output is partial.
    import subprocess
    import sys

    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastdup_ray",
            "dedup",
            str(work),
            "--keep",
            "first",
            "--webdataset-out",
            str(tmp_path / "out2"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 1 and "Traceback" not in cli.stderr
    assert [
        line for line in cli.stderr.splitlines() if line.startswith("fastdup-ray: not copied whole: ")
    ] == [f"fastdup-ray: not copied whole: {p}" for p in problems]


def test_archive_without_a_good_image_is_still_written(tmp_path, jpegs):
    # Its only image is corrupt, so the run has no feature row in it; its samples are
    # not judged, so they are kept, not left out of the output.
    root = tmp_path / "in"
    write_members(root / "00000.tar", [("000.jpg", jpegs["A"])])
    broken = write_members(
        root / "00001.tar", [("100.jpg", jpegs["B"][:300]), ("100.txt", b"broken picture")]
    )
    written = dedup(root, tmp_path)
    assert written == [tmp_path / "out" / "00000.tar", tmp_path / "out" / "00001.tar"]
    assert members_of(written[1]) == members_of(broken)
    assert written.problems == []


@pytest.mark.integration
def test_s3_archives_copied_to_a_local_folder(tmp_path, jpegs, s3_server):
    import boto3

    from fastdup_ray.rundir.storage import StorageOptions

    key, secret = "AKIAFASTDUPTEST", "very-secret-value-123"
    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )
    client.create_bucket(Bucket="fdr-wds")
    part1 = [("000.jpg", jpegs["A"]), ("000.txt", b"a"), ("001.jpg", jpegs["B"])]
    part2 = [("x/000.jpg", jpegs["C"]), ("x/000.txt", b"c"), ("x/001.jpg", jpegs["C2"])]
    for name, members in (("part1/00000.tar", part1), ("part2/00000.tgz", part2)):
        client.put_object(
            Bucket="fdr-wds",
            Key=f"data/{name}",
            Body=write_members(tmp_path / "staging" / name, members).read_bytes(),
        )
    work, out = tmp_path / "work", tmp_path / "out"
    fastdup_ray.run(
        "s3://fdr-wds/data",
        str(work),
        k=2,
        executor="local",
        s3_endpoint_url=s3_server,
        s3_region="us-east-1",
        s3_key=key,
        s3_secret=secret,
    )
    storage = StorageOptions(endpoint_url=s3_server, region="us-east-1", key=key, secret=secret)
    written = write_deduplicated_webdataset(str(work), str(out), keep="first", storage=storage)
    assert written == [out / "part1" / "00000.tar", out / "part2" / "00000.tgz"] and written.problems == []
    assert members_of(written[0]) == shown(part1)
    assert members_of(written[1]) == shown(part2[:2])

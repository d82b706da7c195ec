import io
import os
import tarfile
import warnings
import zipfile

import pytest

from fastdup_ray.errors import InputError
from fastdup_ray.map.sources import (
    ReadSettings,
    WorkUnit,
    list_inputs,
    plan_units,
    read_file_list,
    read_unit,
)
from fastdup_ray.map.sources.archives import unsafe_reason


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_recursive_any_case_extensions_sorted(tmp_path):
    images = [
        "b.JPG",
        "a.png",
        "sub/c.Jpeg",
        "sub/deep/d.tif",
        "e.TIFF",
        "f.gif",
        "g.bmp",
        "h.webp",
        "i.HEIC",
        "j.heif",
        "k.hif",
        "l.avif",
    ]
    for name in images + ["notes.txt", "sub/x.csv"]:
        touch(tmp_path / name)
    listing = list_inputs(str(tmp_path))
    names = [os.path.relpath(p, tmp_path) for p in listing.files]
    assert names == sorted(names)
    assert set(names) == set(images)
    assert all(os.path.isabs(p) for p in listing.files)


def test_archives_and_videos_are_classified(tmp_path):
    for name in ["00000.tar", "00001.TGZ", "x.tar.gz", "y.zip", "clip.mp4", "film.AVI", "a.jpg"]:
        touch(tmp_path / name)
    listing = list_inputs(str(tmp_path))
    assert [os.path.basename(p) for p in listing.archives] == ["00000.tar", "00001.TGZ", "x.tar.gz", "y.zip"]
    assert [os.path.basename(p) for p in listing.files] == ["a.jpg", "clip.mp4", "film.AVI"]


def test_missing_and_empty_inputs_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        list_inputs(str(tmp_path / "nope"))
    touch(tmp_path / "readme.md")
    with pytest.raises(InputError, match="no images found"):
        list_inputs(str(tmp_path))


def test_non_utf8_name_goes_to_the_bad_list(tmp_path):
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg")
    with open(raw, "wb") as handle:
        handle.write(b"x")
    touch(tmp_path / "ok.jpg")
    listing = list_inputs(str(tmp_path))
    assert [os.path.basename(p) for p in listing.files] == ["ok.jpg"]
    assert len(listing.bad) == 1 and "UTF-8" in listing.bad[0][1] and "\\xe9" in listing.bad[0][0]


def test_file_list_ignores_blanks_and_comments_and_resolves_relative_paths(tmp_path):
    touch(tmp_path / "a.jpg")
    (tmp_path / "list.txt").write_text(f"# my images\n\na.jpg\n  {tmp_path}/missing.png  \nnotes.doc\n")
    listing = list_inputs(str(tmp_path / "list.txt"))
    assert listing.files == sorted([str(tmp_path / "a.jpg"), str(tmp_path / "missing.png")])
    assert listing.bad == [
        (
            str(tmp_path / "notes.doc"),
            "not an input of any kind (image, archive, video, parquet): unknown extension",
        )
    ]
    (tmp_path / "list.csv").write_text("filename\na.jpg\n")
    assert read_file_list(str(tmp_path / "list.csv")) == [str(tmp_path / "a.jpg")]


def test_missing_list_entry_becomes_a_bad_item_not_a_crash(tmp_path):
    unit = WorkUnit("", "files", (str(tmp_path / "missing.png"),))
    [item] = list(read_unit(unit, ReadSettings()))
    assert not item.ok and "cannot read file" in item.reason


def test_units_shards_and_offsets(tmp_path):
    from fastdup_ray.map.sources import Listing

    files = [f"/d/img{i:02d}.jpg" for i in range(10)]
    archives = ["/d/a.tar", "/d/b.tar"]
    listing = Listing(archives=archives, files=files)
    whole = plan_units(listing, shard_size=100)
    # Beside archives the loose files get a named shard: the top-level features.bad.csv
    # is then the merged list of every shard's, not one shard's own.
    assert [u.name for u in whole] == ["a.tar", "b.tar", "images-000000000-000000010."]
    assert [u.name for u in plan_units(Listing(files=files), shard_size=100)] == [""]
    sharded = plan_units(listing, shard_size=4)
    assert [u.name for u in sharded] == [
        "a.tar",
        "b.tar",
        "images-000000000-000000004.",
        "images-000000004-000000008.",
        "images-000000008-000000010.",
    ]
    # Offsets slice the sorted inputs (archives and loose files together), max exclusive.
    first, second = plan_units(listing, 4, 0, 5), plan_units(listing, 4, 5, None)
    covered = [loc for u in first + second for loc in u.locations]
    assert sorted(covered) == sorted(files + archives) and len(covered) == len(set(covered))
    # A shard's name says where its images sit in the full listing, so two jobs never collide.
    assert [u.name for u in first] == ["a.tar", "b.tar", "images-000000000-000000003."]
    assert [u.name for u in second][0] == "images-000000003-000000004."
    assert plan_units(listing, 4, 0, 1)[0].name == "a.tar"


def test_shard_and_cache_names_are_unique_and_short_for_any_locations():
    from fastdup_ray.map.sources import Listing, cache_key

    archives = ["/r/x/data.tar", "/r/y/data.tar", "/r/x__data.tar", "/r/" + "L" * 240 + ".tar"]
    names = [u.name for u in plan_units(Listing(archives=archives), shard_size=10)]
    assert len(set(names)) == 4 and "x__data.tar" in names
    assert all(len(f".{name}features.thumbnails.parquet.tmp-12345678".encode()) <= 255 for name in names)
    keys = {cache_key(loc) for loc in ["s3://b/a/00000.tar", "s3://b/b/00000.tar", "/r/00000.tar"]}
    assert len(keys) == 3 and all(key.startswith("00000.tar-") for key in keys)


def test_fingerprints_change_with_the_inputs(tmp_path):
    touch(tmp_path / "a.jpg", b"one")
    before = plan_units(list_inputs(str(tmp_path)), shard_size=10)[0].fingerprint
    touch(tmp_path / "a.jpg", b"two!")
    after = plan_units(list_inputs(str(tmp_path)), shard_size=10)[0].fingerprint
    assert before and after and before != after
    assert plan_units(list_inputs(str(tmp_path)), shard_size=10)[0].fingerprint == after


def test_special_files_symlink_loops_and_excluded_folders(tmp_path):
    touch(tmp_path / "in" / "a.jpg")
    touch(tmp_path / "in" / "work" / "thumbnails" / "1.jpg")
    os.mkfifo(tmp_path / "in" / "pipe.jpg")
    os.symlink(tmp_path / "in", tmp_path / "in" / "loop")
    listing = list_inputs(str(tmp_path / "in"), exclude=[str(tmp_path / "in" / "work")])
    assert listing.files == [str(tmp_path / "in" / "a.jpg")]
    assert listing.bad == [
        (
            str(tmp_path / "in" / "pipe.jpg"),
            "not a regular file (FIFO): skipped, a read could block or never end",
        )
    ]


def archive_with(path, members):
    """A tar (tgz for .tgz) or zip of ``members`` (name, bytes) in order; names may repeat."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as archive, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": repeats are the point
            for name, data in members:
                archive.writestr(name, data)
        return path
    with tarfile.open(path, "w:gz" if path.suffix == ".tgz" else "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def read_archive(path, **settings):
    return list(read_unit(WorkUnit(path.name, "archive", (str(path),)), ReadSettings(**settings)))


@pytest.mark.parametrize("suffix", [".tar", ".tgz", ".zip"])
def test_repeated_member_name_is_an_image_per_occurrence(tmp_path, suffix):
    # A writer's retried sample (same bytes) and another picture under one name (other
    # bytes) are images; so are the images of an inner archive repeated.
    inner = archive_with(tmp_path / "inner.tar", [("deep.jpg", b"D")]).read_bytes()
    members = [
        ("a.jpg", b"A"),
        ("b.jpg", b"B"),
        ("a.jpg", b"A"),
        ("a.txt", b"caption"),
        ("a.jpg", b"A3"),
        ("in.tar", inner),
        ("in.tar", inner),
    ]
    path = archive_with(tmp_path / f"shard{suffix}", members)
    got = [(i.location.removeprefix(str(path)), i.data, i.ok) for i in read_archive(path)]
    assert got == [
        ("/a.jpg", b"A", True),
        ("/b.jpg", b"B", True),
        ("/a.jpg#2", b"A", True),
        ("/a.jpg#3", b"A3", True),
        ("/in.tar/deep.jpg", b"D", True),
        ("/in.tar#2/deep.jpg", b"D", True),
    ]


def test_kept_images_of_a_repeated_name_are_each_kept(tmp_path):
    # delete_img=0 keeps every extracted image: the second 'a.jpg' must not overwrite the first.
    path = archive_with(tmp_path / "shard.tar", [("a.jpg", b"A"), ("a.jpg", b"A2")])
    read_archive(path, cache_dir=str(tmp_path / "cache"), keep_images=True)
    (kept,) = (tmp_path / "cache" / "images").iterdir()
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == {"a.jpg": b"A", "a.jpg#2": b"A2"}


def test_unreadable_repeat_is_named_by_its_occurrence(tmp_path):
    # A repeat that cannot be read is on the bad list under its own row name, not the first's.
    zipped = archive_with(tmp_path / "shard.zip", [("a.jpg", b"AAAA"), ("a.jpg", b"BBBB")])
    raw = zipped.read_bytes()
    zipped.write_bytes(raw.replace(b"BBBB", b"XXXX"))  # the second member's CRC no longer matches
    cut = archive_with(tmp_path / "shard.tar", [("a.jpg", b"A" * 600), ("a.jpg", b"B" * 5000)])
    cut.write_bytes(cut.read_bytes()[: 2048 + 512 + 1000])  # inside the second member's data
    for path, why in ((zipped, "corrupt archive member"), (cut, "truncated or corrupt archive")):
        got = [(i.location.removeprefix(str(path)), i.ok) for i in read_archive(path)]
        assert got == [("/a.jpg", True), ("/a.jpg#2", False)], path
        assert why in read_archive(path)[1].reason


def test_nested_repeated_and_empty_archive_members(tmp_path):
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as archive:
        for name, data in (("deep.jpg", b"D"),):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    outer = tmp_path / "outer.tar"
    with tarfile.open(outer, "w") as archive:
        for name, data in (
            ("a.jpg", b"A"),
            ("inner.tar", inner.getvalue()),
            ("a.jpg", b"A2"),
            ("notes.txt", b"x"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    items = list(read_unit(WorkUnit("outer.tar", "archive", (str(outer),)), ReadSettings()))
    assert [(i.location.removeprefix(str(outer)), i.data, i.ok) for i in items] == [
        ("/a.jpg", b"A", True),
        ("/inner.tar/deep.jpg", b"D", True),
        ("/a.jpg#2", b"A2", True),
    ]
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    (only,) = read_unit(WorkUnit("empty.tar", "archive", (str(empty),)), ReadSettings())
    assert only.location == str(empty) and "no images" in only.reason


def test_unsafe_member_names():
    assert unsafe_reason("/etc/passwd.jpg") and "absolute" in unsafe_reason("/etc/passwd.jpg")
    assert "contains .." in unsafe_reason("a/../../x.jpg")
    assert unsafe_reason("dir/ok..name.jpg") is None and unsafe_reason("000000001.jpg") is None


def tar_bytes(members: dict[str, bytes], mode="w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_webdataset_tar_uses_image_members_only(tmp_path):
    path = tmp_path / "00000.tar"
    path.write_bytes(
        tar_bytes(
            {
                "000000000.jpg": b"img0",
                "000000000.txt": b"caption",
                "000000000.json": b"{}",
                "000000001.png": b"img1",
            }
        )
    )
    items = list(read_unit(WorkUnit("00000.tar", "archive", (str(path),)), ReadSettings()))
    assert [(i.location, i.data) for i in items] == [
        (f"{path}/000000000.jpg", b"img0"),
        (f"{path}/000000001.png", b"img1"),
    ]


def test_bad_archives_report_reasons_and_keep_the_good_members(tmp_path):
    tgz = tmp_path / "part.tgz"
    tgz.write_bytes(tar_bytes({"a.jpg": b"A" * 5000, "b.jpg": os.urandom(200_000)}, mode="w:gz")[:-60_000])
    items = list(read_unit(WorkUnit("part.tgz", "archive", (str(tgz),)), ReadSettings()))
    assert items[0].location.endswith("/a.jpg") and items[0].ok
    assert not items[-1].ok and "truncated or corrupt archive" in items[-1].reason
    broken_zip = tmp_path / "broken.zip"
    broken_zip.write_bytes(b"PK\x03\x04 not really a zip")
    [item] = list(read_unit(WorkUnit("broken.zip", "archive", (str(broken_zip),)), ReadSettings()))
    assert item.location == str(broken_zip) and "corrupt zip" in item.reason


def test_unsafe_members_are_never_written_outside_the_cache(tmp_path):
    path = tmp_path / "evil.tar"
    path.write_bytes(
        tar_bytes({"../escape.jpg": b"x", "/abs/evil.jpg": b"y", "fine/ok.jpg": b"z", "caf\udce9.jpg": b"w"})
    )
    cache = tmp_path / "cache"
    items = list(
        read_unit(
            WorkUnit("evil.tar", "archive", (str(path),)),
            ReadSettings(cache_dir=str(cache), keep_images=True),
        )
    )
    reasons = {os.path.basename(i.location): i.reason for i in items}
    assert "contains .." in reasons["escape.jpg"] and "absolute" in reasons["evil.jpg"]
    assert reasons["ok.jpg"] is None and "UTF-8" in reasons["caf\\xe9.jpg"]
    kept = [p.relative_to(cache) for p in cache.rglob("*") if p.is_file()]
    from fastdup_ray.map.sources import cache_key

    assert [str(p) for p in kept] == [f"images/{cache_key(str(path))}/fine/ok.jpg"]
    assert not (tmp_path / "escape.jpg").exists()


def test_zip_members_and_zip_bomb(tmp_path, monkeypatch):
    import fastdup_ray.map.sources.archives as archives

    path = tmp_path / "photos.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x/1.jpg", b"one")
        archive.writestr("bomb.png", b"\0" * 100_000)
    monkeypatch.setattr(archives, "MAX_MEMBER_BYTES", 1000)
    items = list(read_unit(WorkUnit("photos.zip", "archive", (str(path),)), ReadSettings()))
    assert items[0].location == f"{path}/x/1.jpg" and items[0].data == b"one"
    assert "too large" in items[1].reason


def test_a_storage_failure_mid_archive_is_reported_as_such_not_as_a_corrupt_archive(monkeypatch):
    """The S3 client retries requests and broken bodies itself (storage.py); a failure that
    outlasts its retries keeps the images read before it and says the storage failed, on
    an item flagged as a storage failure (its shard is run again, never listed bad)."""
    import contextlib

    import botocore.exceptions

    import fastdup_ray.map.sources.archives as archives

    data = tar_bytes({f"{i:03d}.jpg": bytes([i]) * 3000 for i in range(6)})

    class FailsHalfway(io.BytesIO):
        def read(self, size=-1):
            if self.tell() > len(data) // 2:
                raise botocore.exceptions.ReadTimeoutError(endpoint_url="http://s3")
            return super().read(size)

    @contextlib.contextmanager
    def failing_stream(location, options, keep_dir):
        yield FailsHalfway(data)

    monkeypatch.setattr(archives, "open_archive_stream", failing_stream)
    *good, failure = archives.iter_archive("s3://bucket/00000.tar")
    assert (
        0 < len(good) < 6
        and [i.location.rsplit("/", 1)[1] for i in good] == [f"{i:03d}.jpg" for i in range(len(good))]
        and all(i.ok for i in good)
    )
    assert failure.location == "s3://bucket/00000.tar"
    assert failure.reason.startswith(
        f"cannot read archive, the storage failed after {len(good)} images despite retries: ReadTimeoutError"
    )
    assert failure.storage_failed and not failure.ok and not any(i.storage_failed for i in good)
    # The same bytes cut short by the archive itself are a truncated archive.
    monkeypatch.setattr(
        archives, "open_archive_stream", lambda *a: contextlib.nullcontext(io.BytesIO(data[: len(data) // 2]))
    )
    truncated = list(archives.iter_archive("s3://bucket/00001.tar"))[-1]
    assert "truncated or corrupt archive" in truncated.reason and not truncated.storage_failed


def test_a_loose_file_the_storage_cannot_serve_is_flagged_and_ends_its_unit(monkeypatch, tmp_path):
    """A read that outlasts the S3 client's retries is no bad image: the item says the
    storage failed, and the unit's other files are not tried (its shard is run again)."""
    import botocore.exceptions

    import fastdup_ray.map.sources.files as files

    def read_bytes(location, options=None):
        if location.endswith("2.jpg"):
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://s3")
        return b"bytes of " + location.encode()

    monkeypatch.setattr(files, "read_bytes", read_bytes)
    unit = WorkUnit("images.", "files", ("s3://b/1.jpg", "s3://b/2.jpg", "s3://b/3.jpg"))
    first, failed = read_unit(unit, ReadSettings())
    assert first.ok and not first.storage_failed
    assert failed.location == "s3://b/2.jpg" and failed.storage_failed and not failed.ok
    assert failed.reason.startswith(
        "cannot read file, the storage failed despite retries: EndpointConnectionError"
    )
    # A file that is not there is bad data, as before.
    monkeypatch.undo()
    [missing] = read_unit(WorkUnit("images.", "files", (str(tmp_path / "gone.jpg"),)), ReadSettings())
    assert missing.reason.startswith("cannot read file") and not missing.storage_failed


def test_without_pillow_heif_a_heic_photo_is_a_bad_row_that_names_the_extra(tmp_path, monkeypatch):
    """Listed by its extension, read, then given the reason features.bad.csv records."""
    import pillow_heif

    import fastdup_ray.map.decode as decode
    from fastdup_ray.map.batches import decode_items
    from fastdup_ray.sample import jpeg_bytes, make_scene

    pillow_heif.register_heif_opener()  # only to write the file
    make_scene(1).save(tmp_path / "IMG_0001.HEIC", "HEIF")
    touch(tmp_path / "IMG_0002.jpg", jpeg_bytes(make_scene(2)))
    monkeypatch.setattr(decode, "heif_decoder_ready", lambda: False)  # as if pillow-heif were not installed
    [unit] = plan_units(list_inputs(str(tmp_path)), shard_size=10)
    batch = decode_items(unit.name, list(read_unit(unit, ReadSettings())), size=32, first_seq=0)
    assert [os.path.basename(p) for p in batch["path"][:2]] == ["IMG_0001.HEIC", "IMG_0002.jpg"] and batch[
        "ok"
    ][:2].tolist() == [False, True]
    assert (
        batch["reason"][0] == "HEIC/HEIF image skipped: no HEIF decoder installed "
        "(pip install 'fastdup_ray[heif]', which adds pillow-heif)"
    )

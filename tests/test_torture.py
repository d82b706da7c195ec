"""A torture corpus, generated here, through a whole run: no crash, every readable image
embedded exactly once (EXIF orientation applied), every unreadable one in the bad list
with its reason, and nothing written outside work_dir and the cache folder."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile

import numpy as np
import polars as pl
import pytest
from PIL import Image

import fastdup_ray
from fastdup_ray.sample import jpeg_bytes, make_scene

pytestmark = pytest.mark.integration


def png(image: Image.Image, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **params)
    return out.getvalue()


def build_corpus(root):
    """Returns (corpus folder, names expected good, {name suffix: reason fragment} expected bad)."""
    corpus = root / "corpus"
    corpus.mkdir()
    scene = make_scene(4242, material=3)
    files = {
        "plain.jpg": jpeg_bytes(scene),
        "truncated.jpg": jpeg_bytes(scene)[:700],
        "empty.jpg": b"",
        "text.jpg": b"this is a text file, not a JPEG\n",
        "bomb.png": png(Image.new("1", (10_000, 10_000))),  # 100 megapixels in a few KB
        "cmyk.jpg": jpeg_bytes(scene.convert("CMYK")),
        "deep16.png": png(
            Image.fromarray((np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20).astype(np.uint16))
        ),
        "palette_alpha.png": png(scene.convert("P"), transparency=0),
        "one_pixel.png": png(Image.new("RGB", (1, 1), (10, 200, 30))),
        "long.png": png(scene.resize((4000, 8))),
        'with space \'and "quotes".jpg': jpeg_bytes(make_scene(4243, material=4)),
        "naïve café 写真.jpg": jpeg_bytes(make_scene(4244, material=5)),
    }
    frames = [make_scene(4245 + i, material=6) for i in range(2)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    files["animated.gif"] = gif.getvalue()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    rotated = io.BytesIO()
    Image.new("RGB", (40, 80), (200, 50, 50)).save(rotated, format="JPEG", exif=exif)
    files["rotated.jpg"] = rotated.getvalue()
    for name, data in files.items():
        (corpus / name).write_bytes(data)
    with open(os.path.join(os.fsencode(corpus), b"caf\xe9.jpg"), "wb") as handle:  # not UTF-8
        handle.write(jpeg_bytes(scene))

    def tar_with(path, members):
        with tarfile.open(path, "w") as archive:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))

    tar_with(
        corpus / "evil.tar",
        {
            "../escape.jpg": jpeg_bytes(scene),
            "/abs/evil.jpg": jpeg_bytes(scene),
            "fine/ok.jpg": jpeg_bytes(make_scene(4250, material=7)),
        },
    )
    whole = io.BytesIO()
    with tarfile.open(fileobj=whole, mode="w") as archive:
        for name, data in (
            ("first.jpg", jpeg_bytes(make_scene(4251, material=8))),
            ("second.jpg", os.urandom(60_000)),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    (corpus / "cut.tar").write_bytes(whole.getvalue()[:40_000])  # ends inside second.jpg
    with zipfile.ZipFile(
        corpus / "bomb.zip", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9
    ) as archive:
        archive.writestr("inner_ok.jpg", jpeg_bytes(make_scene(4252, material=9)))
        with archive.open("zeros.png", "w", force_zip64=True) as member:  # 300 MB of zeros, ~300 KB zipped
            block = b"\0" * (1 << 20)
            for _ in range(300):
                member.write(block)

    # Archives that hold nothing usable, and the file system's own oddities.
    tar_with(corpus / "empty_members.tar", {})
    (corpus / "zero_bytes.tar").write_bytes(b"")
    tar_with(corpus / "all_broken.tar", {"a.jpg": b"not a jpeg", "b.png": b""})
    (corpus / "corrupt.zip").write_bytes(b"PK\x03\x04 not really a zip")
    whole_zip = io.BytesIO()
    with zipfile.ZipFile(whole_zip, "w") as archive:
        archive.writestr("z.jpg", jpeg_bytes(make_scene(4253, material=1)))
    (corpus / "truncated.zip").write_bytes(whole_zip.getvalue()[:-30])
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as archive:
        data = jpeg_bytes(make_scene(4254, material=2))
        info = tarfile.TarInfo("in.jpg")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    tar_with(
        corpus / "nest.tar",
        {
            "inner.tar": inner.getvalue(),
            "dup.jpg": jpeg_bytes(make_scene(4255, material=3)),
            "x/../../dup.jpg": b"",
        },
    )
    with tarfile.open(corpus / "repeat.tar", "w") as archive:
        for data in (jpeg_bytes(make_scene(4256, material=4)), jpeg_bytes(make_scene(4257, material=5))):
            info = tarfile.TarInfo("same.jpg")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    long_tar = "T" * 236 + ".tar"
    tar_with(corpus / long_tar, {"long.jpg": jpeg_bytes(make_scene(4258, material=6))})
    os.mkfifo(corpus / "pipe.jpg")
    os.symlink("/dev/zero", corpus / "zeros.png")

    good = [
        "plain.jpg",
        "cmyk.jpg",
        "deep16.png",
        "palette_alpha.png",
        "one_pixel.png",
        "long.png",
        'with space \'and "quotes".jpg',
        "naïve café 写真.jpg",
        "animated.gif",
        "rotated.jpg",
        "evil.tar/fine/ok.jpg",
        "cut.tar/first.jpg",
        "bomb.zip/inner_ok.jpg",
        "nest.tar/inner.tar/in.jpg",
        "nest.tar/dup.jpg",
        "repeat.tar/same.jpg",
        "repeat.tar/same.jpg#2",
        f"{long_tar}/long.jpg",
    ]
    bad = {
        "truncated.jpg": "truncated",
        "empty.jpg": "empty file",
        "text.jpg": "not an image",
        "bomb.png": "decompression bomb",
        "caf\\xe9.jpg": "UTF-8",
        "evil.tar/../escape.jpg": "contains ..",
        "evil.tar//abs/evil.jpg": "absolute",
        "cut.tar/second.jpg": "truncated or corrupt archive",
        "bomb.zip/zeros.png": "too large",
        "empty_members.tar": "no images",
        "zero_bytes.tar": "truncated or corrupt archive",
        "all_broken.tar/a.jpg": "not an image",
        "all_broken.tar/b.png": "empty file",
        "corrupt.zip": "corrupt zip",
        "truncated.zip": "corrupt zip",
        "nest.tar/x/../../dup.jpg": "contains ..",
        "pipe.jpg": "not a regular file (FIFO)",
        "zeros.png": "not a regular file (device)",
    }
    # Plain string joins: a member named "/abs/evil.jpg" is listed as "evil.tar//abs/evil.jpg".
    return (
        corpus,
        [f"{corpus}/{name}" for name in good],
        {f"{corpus}/{name}": why for name, why in bad.items()},
    )


def every_file(root):
    return {os.path.join(folder, name) for folder, _, names in os.walk(os.fsencode(root)) for name in names}


def test_torture_corpus(ray_local, tmp_path):
    corpus, good, bad = build_corpus(tmp_path)
    before = every_file(tmp_path)
    work, cache = tmp_path / "work", tmp_path / "cache"
    summary = fastdup_ray.run(
        str(corpus),
        str(work),
        cache_dir=str(cache),
        turi_param="delete_tar=0,delete_img=0",
        k=3,
        executor="ray",
    )

    names, vectors = fastdup_ray.load_binary_features(work)
    assert sorted(names) == sorted(good) and len(set(names)) == len(names)  # each readable image once
    assert np.isfinite(vectors).all() and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    bad_rows = pl.read_csv(work / "features.bad.csv", infer_schema=False)  # every shard's, merged
    reasons = dict(zip(bad_rows["filename"], bad_rows["error"]))
    assert set(reasons) == set(bad), sorted(set(reasons) ^ set(bad))
    for location, fragment in bad.items():
        assert fragment in reasons[location], (location, reasons[location])
    assert (summary.good, summary.bad) == (len(good), len(bad))

    stats = pl.read_csv(work / "stats.csv").join(
        pl.DataFrame({"filename": names}).with_row_index("__id").with_columns(pl.col("__id").cast(pl.Int64)),
        on="__id",
    )
    size = {
        row["filename_right"] if "filename_right" in row else row["filename"]: (row["width"], row["height"])
        for row in stats.iter_rows(named=True)
    }
    assert size[str(corpus / "rotated.jpg")] == (80, 40)  # EXIF orientation applied
    assert size[str(corpus / "long.png")] == (4000, 8) and size[str(corpus / "one_pixel.png")] == (1, 1)

    created = {os.fsdecode(p) for p in every_file(tmp_path) - before}
    outside = [
        p for p in created if not (p.startswith(str(work) + os.sep) or p.startswith(str(cache) + os.sep))
    ]
    assert outside == []
    assert not (tmp_path / "escape.jpg").exists() and not (corpus.parent / "abs").exists()
    kept = {os.path.relpath(p, cache) for p in created if p.startswith(str(cache) + os.sep)}
    from fastdup_ray.map.sources import cache_key

    assert {
        f"images/{cache_key(str(corpus / archive))}/{member}"
        for archive, member in (
            ("evil.tar", "fine/ok.jpg"),
            ("cut.tar", "first.jpg"),
            ("bomb.zip", "inner_ok.jpg"),
        )
    } <= kept


def test_torture_corpus_through_the_cli_then_run_mode_2(tmp_path):
    """The same corpus from the command line (local executor): exit 0, no traceback, one
    line per input in the merged features.bad.csv, and a reduce on its own reads it back."""
    import subprocess
    import sys

    corpus, good, bad = build_corpus(tmp_path)
    work = tmp_path / "work"
    env = dict(os.environ, RAY_ADDRESS="")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastdup_ray",
            "run",
            str(corpus),
            "--work-dir",
            str(work),
            "--run-mode",
            "1",
            "--executor",
            "local",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    reduce = subprocess.run(
        [sys.executable, "-m", "fastdup_ray", "run", "unused", "--work-dir", str(work), "--run-mode", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert reduce.returncode == 0 and "Traceback" not in reduce.stderr, reduce.stderr
    names, _ = fastdup_ray.load_binary_features(work)
    listed = pl.read_csv(work / "features.bad.csv", infer_schema=False)["filename"].to_list()
    assert sorted(names) == sorted(good) and sorted(listed) == sorted(bad)
    assert f"images: {len(good)} good, {len(bad)} bad" in reduce.stderr

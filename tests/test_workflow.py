"""The big-run workflow as users run it: reruns into one work_dir, offset slices, archives
with clashing names, broken or empty archives, users' own vectors, test sets. Each test
is a bug that was once reproduced on main (issue 12); the runs use the local executor."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import polars as pl
import pytest

import fastdup_ray
from fastdup_ray.errors import ConfigError, InputError
from fastdup_ray.sample import jpeg_bytes, make_scene, near_duplicate

pytestmark = pytest.mark.integration

LOCAL = {"executor": "local", "num_threads": 2, "k": 3}


def scenes(folder, names, seed=0):
    """Distinct generated photos named ``names`` in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg_bytes(make_scene(seed * 1000 + i, material=i % 9)))
        paths.append(str(path))
    return paths


def tar_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def all_listed(work) -> list[str]:
    """Every location the run accounted for: its feature rows and its bad list (the
    top-level features.bad.csv: a single shard's own, or the merged list of many)."""
    names, _ = fastdup_ray.load_binary_features(work)
    lists = (
        [work / "features.bad.csv"]
        if (work / "features.bad.csv").exists()
        else sorted(work.glob("*features.bad.csv"))
    )
    return names + [n for f in lists for n in pl.read_csv(f, infer_schema=False)["filename"].to_list()]


def similarity(work) -> pl.DataFrame:
    return pl.read_csv(work / "similarity.csv", schema_overrides={"from": pl.String, "to": pl.String})


def assert_one_row_each(work, expected):
    listed = all_listed(work)
    assert sorted(listed) == sorted(expected), sorted(set(listed) ^ set(expected))
    assert len(listed) == len(set(listed))
    pairs = similarity(work)
    assert pairs.filter(pl.col("from") == pl.col("to")).height == 0
    names, _ = fastdup_ray.load_binary_features(work)
    assert pl.read_csv(work / "connected_components.csv").height == len(names)


# 1. A rerun never returns stale results.


def test_rerun_after_adding_removing_and_changing_images_uses_the_inputs_as_they_are_now(tmp_path):
    folder, work = tmp_path / "photos", tmp_path / "work"
    paths = scenes(folder, [f"{c}.jpg" for c in "acegik"])
    first = fastdup_ray.run(str(folder), str(work), shard_size=3, **LOCAL)
    assert first.good == 6
    # An exact copy and a new photo that sort between the old ones, one photo gone,
    # and one replaced by other content under the same name.
    (folder / "b.jpg").write_bytes((folder / "a.jpg").read_bytes())
    scenes(folder, ["d.jpg"], seed=7)
    os.remove(folder / "k.jpg")
    (folder / "e.jpg").write_bytes(jpeg_bytes(make_scene(999, material=2)))
    os.utime(folder / "e.jpg", (1, 1))  # a different mtime even on a coarse clock
    second = fastdup_ray.run(str(folder), str(work), shard_size=3, **LOCAL)
    now = sorted(str(p) for p in folder.iterdir())
    assert_one_row_each(work, now)
    assert second.good == 7
    pairs = similarity(work)
    assert {(r["from"], r["to"]) for r in pairs.iter_rows(named=True)} >= {(paths[0], str(folder / "b.jpg"))}
    # Unchanged inputs are not extracted again: a third run skips every shard.
    third = fastdup_ray.run(str(folder), str(work), shard_size=3, **LOCAL)
    assert third.skipped_shards == third.shards - ("listing." in os.listdir(work))


def test_rerun_with_another_input_dir_is_refused_unless_overwrite(tmp_path):
    a, b, work = tmp_path / "a", tmp_path / "b", tmp_path / "work"
    scenes(a, ["1.jpg", "2.jpg"])
    b_paths = scenes(b, ["3.jpg", "4.jpg", "5.jpg"], seed=3)
    fastdup_ray.run(str(a), str(work), **LOCAL)
    with pytest.raises(ConfigError, match="input_dir"):
        fastdup_ray.run(str(b), str(work), **LOCAL)
    fastdup_ray.run(str(b), str(work), overwrite=True, **LOCAL)
    names, _ = fastdup_ray.load_binary_features(work)
    assert sorted(names) == sorted(b_paths)
    assert json.loads((work / "config.json").read_text())["input_dir"] == str(b)


def test_a_run_begun_with_the_earlier_int8_model_is_not_resumed_with_the_new_one(tmp_path):
    """The int8 weights changed on 2026-12-07 (7-bit pointwise convolutions): shards embedded
    with the earlier file must not mix with new ones in one run."""
    folder, work = tmp_path / "in", tmp_path / "work"
    scenes(folder, ["1.jpg", "2.jpg"])
    fastdup_ray.run(str(folder), str(work), **LOCAL)
    config = json.loads((work / "config.json").read_text())
    config["model_file"] = "efficientnet_lite0_int8.onnx"  # what a run of an earlier release recorded
    (work / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ConfigError, match="model_file: 'efficientnet_lite0_int8.onnx' .* but 'efficientnet_lite0_int8_w7"
    ):
        fastdup_ray.run(str(folder), str(work), **LOCAL)


def test_another_model_saved_under_the_same_file_name_does_not_resume_the_run(tmp_path):
    """A user's model retrained and saved over the same path (or another folder's file of
    the same name): the shards of the first model must not be reused as if they were the
    second's, which would put two models' vectors in one kNN."""
    from fastdup_ray.map.embed import default_model_path

    folder, work, model = tmp_path / "in", tmp_path / "work", tmp_path / "model.onnx"
    scenes(folder, ["1.jpg", "2.jpg", "3.jpg"])
    model.write_bytes(open(default_model_path("int8"), "rb").read())
    fastdup_ray.run(str(folder), str(work), model_path=str(model), **LOCAL)
    model.write_bytes(open(default_model_path("fp32"), "rb").read())  # same width, other weights
    with pytest.raises(ConfigError, match=r"model_sha256: '[0-9a-f]{64}' in .* but '[0-9a-f]{64}' now"):
        fastdup_ray.run(str(folder), str(work), model_path=str(model), **LOCAL)
    fastdup_ray.run(str(folder), str(work), model_path=str(model), overwrite=True, **LOCAL)
    recorded = json.loads((work / "config.json").read_text())
    assert recorded["model_file"] == "model.onnx" and len(recorded["model_sha256"]) == 64


def test_cli_overwrite_option(tmp_path):
    a, b, work = tmp_path / "a", tmp_path / "b", tmp_path / "work"
    scenes(a, ["1.jpg", "2.jpg"])
    scenes(b, ["3.jpg", "4.jpg"], seed=3)
    assert cli("run", str(a), "--work-dir", str(work), "--executor", "local").returncode == 0
    refused = cli("run", str(b), "--work-dir", str(work), "--executor", "local")
    assert refused.returncode == 2 and "--overwrite" in refused.stderr and "Traceback" not in refused.stderr
    assert cli("run", str(b), "--work-dir", str(work), "--executor", "local", "--overwrite").returncode == 0


def test_a_second_test_dir_does_not_reuse_the_first_ones_features(tmp_path):
    train, t1, t2, work = tmp_path / "train", tmp_path / "t1", tmp_path / "t2", tmp_path / "work"
    scenes(train, ["1.jpg", "2.jpg", "3.jpg"])
    first_tests = scenes(t1, ["x.jpg"], seed=5)
    second_tests = scenes(t2, ["y.jpg", "z.jpg"], seed=6)
    fastdup_ray.run(str(train), str(work), **LOCAL)
    fastdup_ray.run(str(train), str(work), run_mode=3, test_dir=str(t1), threshold=0.0, **LOCAL)
    summary = fastdup_ray.run(str(train), str(work), run_mode=3, test_dir=str(t2), threshold=0.0, **LOCAL)
    assert summary.good == 2
    pairs = pl.read_csv(work / "test_results" / "similarity.csv")
    assert set(pairs["from"]) == set(second_tests) and not set(pairs["from"]) & set(first_tests)


# 2. One input, one row.


def test_overlapping_offset_slices_never_double_a_row(tmp_path):
    folder, work = tmp_path / "photos", tmp_path / "work"
    paths = scenes(folder, [f"{i:02d}.jpg" for i in range(10)])
    fastdup_ray.run(str(folder), str(work), run_mode=1, min_offset=0, max_offset=5, **LOCAL)
    fastdup_ray.run(str(folder), str(work), run_mode=1, min_offset=5, **LOCAL)
    try:
        fastdup_ray.run(str(folder), str(work), run_mode=1, min_offset=0, max_offset=3, **LOCAL)
    except (ConfigError, InputError) as refused:
        assert "images-" in str(refused)  # names the shard it would overlap
    fastdup_ray.run("unused", str(work), run_mode=2, k=3)
    assert_one_row_each(work, paths)


def test_archives_with_one_file_name_in_different_folders_keep_every_image(tmp_path):
    root, work = tmp_path / "tars", tmp_path / "work"
    (root / "x").mkdir(parents=True)
    (root / "y").mkdir()
    members = {}
    for i, path in enumerate(["x/data.tar", "y/data.tar", "x__data.tar"]):
        data = {
            f"{j}.jpg": jpeg_bytes(make_scene(100 + 10 * i + j, material=(i * 2 + j) % 9)) for j in range(2)
        }
        (root / path).write_bytes(tar_bytes(data))
        members.update({f"{root}/{path}/{name}": blob for name, blob in data.items()})
    cache = tmp_path / "cache"
    fastdup_ray.run(str(root), str(work), cache_dir=str(cache), turi_param="delete_img=0", **LOCAL)
    assert_one_row_each(work, list(members))
    # Each archive's kept images are its own, not another archive's of the same name.
    kept = sorted(p for p in cache.rglob("*.jpg"))
    assert sorted(p.read_bytes() for p in kept) == sorted(members.values())


# 3. A broken or empty archive never stops a run.


def broken_corpus(root):
    """Good tars beside broken archives; returns (expected feature rows, expected bad rows)."""
    root.mkdir()
    good = {f"good.tar/{i}.jpg": jpeg_bytes(make_scene(300 + i, material=i)) for i in range(3)}
    (root / "good.tar").write_bytes(tar_bytes({k.split("/", 1)[1]: v for k, v in good.items()}))
    (root / "empty.tar").write_bytes(b"")
    (root / "no_members.tar").write_bytes(tar_bytes({}))
    (root / "all_broken.tar").write_bytes(tar_bytes({"a.jpg": b"not a jpeg", "b.jpg": b""}))
    (root / "corrupt.zip").write_bytes(b"PK\x03\x04 this is not a zip at all")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("z.jpg", jpeg_bytes(make_scene(310, material=4)))
    (root / "truncated.zip").write_bytes(buffer.getvalue()[:-30])
    (root / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    inner = tar_bytes(
        {
            "in1.jpg": jpeg_bytes(make_scene(320, material=5)),
            "in2.jpg": jpeg_bytes(make_scene(321, material=6)),
        }
    )
    (root / "outer.tar").write_bytes(
        tar_bytes({"nested.tar": inner, "top.jpg": jpeg_bytes(make_scene(322, material=7))})
    )
    long_name = "L" * 236 + ".tar"  # a legal name; <name>features.dat.csv is not
    (root / long_name).write_bytes(tar_bytes({"long.jpg": jpeg_bytes(make_scene(323, material=8))}))
    rows = [f"{root}/{k}" for k in good] + [
        f"{root}/outer.tar/nested.tar/in1.jpg",
        f"{root}/outer.tar/nested.tar/in2.jpg",
        f"{root}/outer.tar/top.jpg",
        f"{root}/{long_name}/long.jpg",
    ]
    bad = [
        f"{root}/{name}"
        for name in (
            "empty.tar",
            "no_members.tar",
            "all_broken.tar/a.jpg",
            "all_broken.tar/b.jpg",
            "corrupt.zip",
            "truncated.zip",
            "broken.jpg",
        )
    ]
    return rows, bad


@pytest.mark.parametrize("split", [False, True])
def test_broken_and_empty_archives_are_listed_and_the_run_goes_on(tmp_path, split):
    rows, bad = broken_corpus(tmp_path / "in")
    work = tmp_path / "work"
    if split:
        fastdup_ray.run(str(tmp_path / "in"), str(work), run_mode=1, **LOCAL)
        summary = fastdup_ray.run("unused", str(work), run_mode=2, k=3)
    else:
        summary = fastdup_ray.run(str(tmp_path / "in"), str(work), **LOCAL)
    assert (summary.good, summary.bad) == (len(rows), len(bad))
    names, _ = fastdup_ray.load_binary_features(work)
    assert sorted(names) == sorted(rows)
    reasons = dict(pl.read_csv(work / "features.bad.csv", infer_schema=False).iter_rows())
    assert sorted(reasons) == sorted(bad)
    assert "no images" in reasons[f"{tmp_path}/in/no_members.tar"]
    assert (work / "stats.csv").exists() and pl.read_csv(work / "stats.csv").height == len(rows)


def test_special_files_never_hang_a_run(tmp_path):
    folder, work = tmp_path / "photos", tmp_path / "work"
    paths = scenes(folder, ["a.jpg", "b.jpg"])
    os.mkfifo(folder / "pipe.jpg")
    os.symlink("/dev/zero", folder / "zeros.jpg")
    result = cli("run", str(folder), "--work-dir", str(work), "--executor", "local", timeout=120)
    assert result.returncode == 0, result.stderr
    reasons = dict(pl.read_csv(work / "features.bad.csv", infer_schema=False).iter_rows())
    assert set(reasons) == {str(folder / "pipe.jpg"), str(folder / "zeros.jpg")}
    assert all("not a regular file" in why for why in reasons.values())
    assert sorted(fastdup_ray.load_binary_features(work)[0]) == paths


# 4. Your own features mean cosine.


def test_own_features_are_compared_by_cosine(tmp_path):
    work = tmp_path / "own"
    fastdup_ray.save_binary_feature(
        work, ["a", "b", "c"], np.array([[3, 4, 0, 0], [6, 8, 0, 0], [0, 0.1, 0.1, 0]], dtype=np.float32)
    )
    fastdup_ray.run("unused", str(work), run_mode=2, threshold=0.0, k=2)
    pairs = {(r["from"], r["to"]): r["distance"] for r in similarity(work).iter_rows(named=True)}
    assert pairs[("a", "b")] == pytest.approx(1.0)
    assert pairs[("a", "c")] == pytest.approx(0.565685, abs=1e-5)
    assert pairs[("b", "c")] == pytest.approx(0.565685, abs=1e-5)


# 5. Outputs of one run belong together.


def test_test_set_results_leave_the_train_run_intact(tmp_path):
    train, tests, work = tmp_path / "train", tmp_path / "tests", tmp_path / "work"
    scenes(train, ["1.jpg", "2.jpg", "3.jpg"])
    (tests).mkdir()
    (tests / "copy.jpg").write_bytes((train / "1.jpg").read_bytes())
    fastdup_ray.run(str(train), str(work), **LOCAL)
    before = {
        name: (work / name).read_bytes()
        for name in ("similarity.csv", "outliers.csv", "connected_components.csv")
    }
    fastdup_ray.run(str(train), str(work), run_mode=3, test_dir=str(tests), **LOCAL)
    assert {name: (work / name).read_bytes() for name in before} == before
    pairs = pl.read_csv(work / "test_results" / "similarity.csv")
    assert pairs.row(0)[:2] == (str(tests / "copy.jpg"), str(train / "1.jpg"))
    meta = json.loads((work / "test_results" / "test_run.json").read_text())
    assert meta["train_work_dir"] == str(work) and meta["test_features"] == str(work / "test_features")
    fastdup_ray.run(str(train), str(work), run_mode=4, test_dir=str(work / "test_features"))
    assert pl.read_csv(work / "test_results" / "similarity.csv").row(0)[:2] == (
        str(tests / "copy.jpg"),
        str(train / "1.jpg"),
    )


# 6. Outliers are images far from everything; components follow similarity.csv.


def test_an_image_with_a_close_copy_is_never_an_outlier(tmp_path):
    folder, work = tmp_path / "photos", tmp_path / "work"
    scenes(folder, [f"{i}.jpg" for i in range(8)])
    (folder / "0_copy.jpg").write_bytes(jpeg_bytes(near_duplicate(make_scene(0, material=0), 0)))
    fastdup_ray.run(str(folder), str(work), executor="local", k=4, lower_threshold=0.5)
    outliers = pl.read_csv(work / "outliers.csv")
    assert outliers["from"].n_unique() == outliers.height  # one row per image
    assert outliers.height == min(9, int(np.ceil(0.5 * 9 * 4)))
    nearest = similarity(work).filter(
        pl.col("from").str.ends_with("0.jpg") | pl.col("to").str.ends_with("0.jpg")
    )
    assert nearest.height and nearest["distance"].max() > 0.9
    copies = {str(folder / "0.jpg"), str(folder / "0_copy.jpg")}
    # Rows go from least to most outlying: the pair of copies comes first...
    assert set(outliers["from"].to_list()[:2]) == copies
    assert outliers["distance"].is_sorted(descending=True)
    # ... and is never among the outliers when fewer rows are asked for.
    fastdup_ray.run("unused", str(work), run_mode=2, k=4, lower_threshold=0.1)
    fewer = pl.read_csv(work / "outliers.csv")
    assert fewer.height == int(np.ceil(0.1 * 9 * 4)) and not set(fewer["from"]) & copies


def test_components_are_built_from_the_pairs_of_similarity_csv(tmp_path):
    work = tmp_path / "own"
    vectors = np.array([[1, 0, 0], [0.9, 0.436, 0], [0, 0, 1]], dtype=np.float32)  # a-b cosine 0.9
    fastdup_ray.save_binary_feature(work, ["a", "b", "c"], vectors)
    fastdup_ray.run("unused", str(work), run_mode=2, k=2, threshold=0.95, turi_param="ccthreshold=0.5")
    components = pl.read_csv(work / "connected_components.csv")
    assert components["component_id"].n_unique() == 3  # a-b is below threshold: not in similarity.csv
    assert components["filename"].to_list() == ["a", "b", "c"]


# 7. fastdup-style calls get what fastdup gives, or a one-line error.


def test_run_mode_2_on_a_features_dat_file(tmp_path):
    path = fastdup_ray.save_binary_feature(
        tmp_path / "mine", ["a", "b"], np.array([[1, 0], [1, 0.01]], dtype=np.float32)
    )
    summary = fastdup_ray.run("unused", str(path), run_mode=2, k=1)
    assert summary.similar_pairs == 1
    assert similarity(tmp_path / "mine").row(0)[:2] == ("a", "b")


def test_an_invalid_nnf_mode_is_refused_before_extraction(tmp_path):
    folder, work = tmp_path / "photos", tmp_path / "work"
    scenes(folder, ["a.jpg", "b.jpg"])
    with pytest.raises(ConfigError, match="nnf_mode"):
        fastdup_ray.run(str(folder), str(work), nnf_mode="IVFnot,Valid", **LOCAL)
    assert not list(work.glob("*features.dat")) if work.exists() else True


def test_multi_shard_run_writes_the_merged_bad_list(tmp_path):
    folder, work = tmp_path / "photos", tmp_path / "work"
    scenes(folder, ["a.jpg", "b.jpg", "c.jpg"])
    (folder / "bad1.jpg").write_bytes(b"nope")
    (folder / "z.tar").write_bytes(
        tar_bytes({"bad2.jpg": b"nope", "ok.jpg": jpeg_bytes(make_scene(55, material=1))})
    )
    summary = fastdup_ray.run(str(folder), str(work), **LOCAL)
    bad = pl.read_csv(work / "features.bad.csv", infer_schema=False)
    assert sorted(bad["filename"]) == [str(folder / "bad1.jpg"), str(folder / "z.tar/bad2.jpg")]
    assert summary.bad == 2


# 8. The file system as users have it.


def test_symlinked_folders_are_followed_once_and_the_work_dir_is_not_an_input(tmp_path):
    folder = tmp_path / "photos"
    paths = scenes(folder, ["a.jpg", "sub/b.jpg"])
    os.symlink(folder / "sub", folder / "link_to_sub")
    os.symlink(folder, folder / "sub" / "loop")
    outside = scenes(tmp_path / "elsewhere", ["c.jpg"], seed=4)
    os.symlink(tmp_path / "elsewhere", folder / "more")
    work = folder / "work"
    fastdup_ray.run(str(folder), str(work), thumbnail_size=64, **LOCAL)
    names, _ = fastdup_ray.load_binary_features(work)
    expected = sorted(paths + [str(folder / "more" / "c.jpg")])
    assert sorted(names) == expected and outside
    fastdup_ray.create_duplicates_gallery(str(work), str(work / "gallery"))
    again = fastdup_ray.run(str(folder), str(work), thumbnail_size=64, **LOCAL)
    assert sorted(fastdup_ray.load_binary_features(work)[0]) == expected and again.bad == 0


def test_a_second_run_on_a_busy_work_dir_is_refused(tmp_path):
    from fastdup_ray.rundir.workdir import WorkDir, run_lock

    folder, work = tmp_path / "photos", tmp_path / "work"
    scenes(folder, ["a.jpg", "b.jpg"])
    with run_lock(WorkDir(str(work))):
        result = cli("run", str(folder), "--work-dir", str(work), "--executor", "local")
    assert (
        result.returncode == 2
        and "another fastdup_ray run" in result.stderr
        and "Traceback" not in result.stderr
    )
    assert not (work / "similarity.csv").exists()


def test_leftover_temporary_files_are_removed_by_the_next_run(tmp_path):
    folder, work = tmp_path / "photos", tmp_path / "work"
    scenes(folder, ["a.jpg", "b.jpg"])
    work.mkdir()
    (work / ".features.dat.tmp-deadbeef").write_bytes(b"x" * 100)
    (work / ".similarity.csv.tmp-0badf00d").write_bytes(b"half")
    fastdup_ray.run(str(folder), str(work), **LOCAL)
    assert not list(work.glob(".*.tmp-*"))


@pytest.mark.parametrize("case", ["work_dir", "model"])
def test_unusable_work_dir_or_model_is_one_line(tmp_path, case):
    folder = tmp_path / "photos"
    scenes(folder, ["a.jpg"])
    (tmp_path / "a_file").write_text("x")
    fake_model = tmp_path / "model.onnx"
    fake_model.write_text("not onnx")
    args = ["run", str(folder), "--executor", "local"]
    if case == "work_dir":
        args += ["--work-dir", str(tmp_path / "a_file" / "work")]
    else:
        args += ["--work-dir", str(tmp_path / "work"), "--model-path", str(fake_model)]
    result = cli(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (error,) = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert error.startswith("fastdup-ray: error: ")
    assert ("work_dir" in error) if case == "work_dir" else ("model_path" in error)


# 9. Security of shared paths.


def test_default_cache_is_private_and_a_planted_link_is_refused(tmp_path, monkeypatch):
    import tempfile

    from fastdup_ray.pipeline import default_cache_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "shared_tmp"))
    (tmp_path / "shared_tmp").mkdir()
    cache = default_cache_dir()
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    # Someone else plants the cache name as a link to their folder before we create it.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "other_tmp"))
    (tmp_path / "other_tmp").mkdir()
    (tmp_path / "attacker").mkdir()
    os.symlink(tmp_path / "attacker", os.path.join(tmp_path / "other_tmp", os.path.basename(cache)))
    with pytest.raises(InputError, match="cache"):
        default_cache_dir()


def cli(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_ADDRESS="")
    return subprocess.run(
        [sys.executable, "-m", "fastdup_ray", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


# Issue 15: exact duplicates before the model.


def test_byte_identical_files_are_reported_as_exact_duplicates(tmp_path):
    folder, work = tmp_path / "photos", tmp_path / "work"
    paths = scenes(folder, ["a.jpg", "b.jpg", "c.jpg"])
    copies = [folder / f"a_copy{i}.jpg" for i in range(3)]
    for copy in copies:
        copy.write_bytes((folder / "a.jpg").read_bytes())
    fastdup_ray.run(str(folder), str(work), executor="local", k=1)  # k=1: the kNN alone cannot pair all four
    pairs = similarity(work)
    exact = pairs.filter(pl.col("exact"))
    group = {paths[0], *map(str, copies)}
    assert (
        exact.height == 3
        and set(exact["from"]) | set(exact["to"]) == group
        and (exact["distance"] == 1.0).all()
    )
    components = pl.read_csv(work / "connected_components.csv")
    assert components.filter(pl.col("filename").is_in(list(group)))["component_id"].n_unique() == 1
    stats = pl.read_csv(work / "stats.csv")
    assert (
        "hash" in stats.columns
        and stats.filter(pl.col("filename").is_in(list(group)))["hash"].n_unique() == 1
    )

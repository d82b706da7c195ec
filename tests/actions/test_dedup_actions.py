"""dedup --move-to / --symlink-to / --delete / --dry-run on a real run of a folder of
generated JPEGs, through the command line's main, asserting what a user looks at: which
files remain, where the others went, and that a refused command changed nothing."""

from __future__ import annotations

import io
import os
import tarfile
import time

import polars as pl
import pytest

import fastdup_ray
from fastdup_ray.cli import main
from fastdup_ray.sample import jpeg_bytes, make_scene, near_duplicate

# Three distinct pictures; a shrunk copy of A and of B in sub-folders: with --keep
# resolution the originals stay and the copies are removed.
ORIGINALS = ("a.jpg", "b.jpg", "c.jpg")
COPIES = ("sub/a_copy.jpg", "sub/deeper/b_copy.jpg")


def write_images(root):
    scenes = {name: make_scene(900 + i, material=i) for i, name in enumerate("abc")}
    files = {f"{name}.jpg": jpeg_bytes(scene) for name, scene in scenes.items()}
    files["sub/a_copy.jpg"] = jpeg_bytes(near_duplicate(scenes["a"], 0))
    files["sub/deeper/b_copy.jpg"] = jpeg_bytes(near_duplicate(scenes["b"], 0))
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


@pytest.fixture
def finished(tmp_path):
    """(input folder, work dir, {relative name: bytes}) of a finished local run."""
    root, work = tmp_path / "photos", tmp_path / "work"
    files = write_images(root)
    fastdup_ray.run(str(root), str(work), k=2, executor="local")
    return root, work, files


def contents(folder) -> dict[str, bytes]:
    """Every file below ``folder`` (links followed) by its path relative to it."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def dedup(*args) -> int:
    return main(["dedup", *map(str, args)])


def test_move_to_mirrors_the_folders_and_logs_each_move(finished, tmp_path, capsys):
    root, work, files = finished
    assert dedup(work, "--move-to", tmp_path / "dups") == 0
    assert contents(root) == {name: files[name] for name in ORIGINALS}
    assert contents(tmp_path / "dups") == {name: files[name] for name in COPIES}
    log = pl.read_csv(work / "dedup_actions.csv")
    assert log.columns == ["action", "source", "target", "bytes"]
    assert log.rows() == [
        ("move", str(root / name), str(tmp_path / "dups" / name), len(files[name])) for name in COPIES
    ]
    summary = capsys.readouterr().out.splitlines()[-1]
    assert (
        summary.startswith(f"3 kept, 2 moved to {tmp_path / 'dups'} (")
        and str(work / "dedup_actions.csv") in summary
    )


def test_symlink_to_links_the_removed_images_and_leaves_the_inputs(finished, tmp_path, capsys):
    root, work, files = finished
    assert dedup(work, "--symlink-to", tmp_path / "links") == 0
    assert contents(root) == files
    for name in COPIES:
        link = tmp_path / "links" / name
        assert link.is_symlink() and link.resolve() == root / name
    assert contents(tmp_path / "links") == {name: files[name] for name in COPIES}
    assert "3 kept, 2 linked in" in capsys.readouterr().out


def test_delete_removes_the_copies_and_says_what_it_freed(finished, capsys):
    root, work, files = finished
    assert dedup(work, "--delete") == 0
    assert contents(root) == {name: files[name] for name in ORIGINALS}
    assert not (root / "sub" / "a_copy.jpg").exists()
    freed = sum(len(files[name]) for name in COPIES) / 1000
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"3 kept, 2 deleted ({freed:.1f} KB freed)")
    assert pl.read_csv(work / "dedup_actions.csv")["action"].to_list() == ["delete", "delete"]


@pytest.mark.parametrize(
    "option, verb",
    [("--move-to", "would move"), ("--symlink-to", "would link"), ("--delete", "would delete")],
)
def test_dry_run_prints_each_step_and_changes_nothing(finished, tmp_path, capsys, option, verb):
    root, work, files = finished
    target = [tmp_path / "out"] if option != "--delete" else []
    assert dedup(work, option, *target, "--dry-run") == 0
    assert contents(root) == files
    assert not (tmp_path / "out").exists() and not (work / "dedup_actions.csv").exists()
    out = capsys.readouterr().out.splitlines()
    steps = [line for line in out if line.startswith("would ")]
    assert len(steps) == 2 and all(line.startswith(verb) for line in steps)
    assert [name for name in COPIES if any(str(root / name) in line for line in steps)] == list(COPIES)
    assert out[-1].startswith("dry run, nothing changed: 3 kept, 2 would be ")


def rewrite_a_copy(root):
    (root / "sub" / "a_copy.jpg").write_bytes(jpeg_bytes(make_scene(42)))
    return "sub/a_copy.jpg"


def touch_a_kept_image(root):
    # Same size, only a newer modification time: still not the file the run read.
    later = time.time() + 60
    os.utime(root / "b.jpg", (later, later))
    return "b.jpg"


def remove_a_kept_image(root):
    (root / "a.jpg").unlink()
    return "a.jpg"


@pytest.mark.parametrize("change", [rewrite_a_copy, touch_a_kept_image, remove_a_kept_image])
def test_inputs_changed_since_the_run_refuse_before_anything_changes(finished, tmp_path, capsys, change):
    root, work, _ = finished
    changed = change(root)
    before = contents(root)
    for option in (["--delete"], ["--move-to", tmp_path / "dups"]):
        assert dedup(work, *option) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and str(root / changed) in error and "nothing was changed" in error
    assert contents(root) == before
    assert not (tmp_path / "dups").exists() and not (work / "dedup_actions.csv").exists()


def doctored_row_with_dotdot(root, work, tmp_path):
    """A names file whose row for the copy of A climbs out of the folder with '..'."""
    outside = tmp_path / "elsewhere" / "a_copy.jpg"
    outside.parent.mkdir()
    outside.write_bytes((root / "sub" / "a_copy.jpg").read_bytes())
    names = work / "features.dat.csv"
    names.write_text(
        names.read_text().replace(str(root / "sub" / "a_copy.jpg"), f"{root}/sub/../../elsewhere/a_copy.jpg")
    )
    return outside


@pytest.fixture
def linked_folder(tmp_path):
    """A real run whose input folder holds a link to a folder elsewhere with a copy in it:
    the run reads the copy through the link, but it is not a file of the input folder."""
    root, work = tmp_path / "photos", tmp_path / "work"
    write_images(root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "sub" / "a_copy.jpg").rename(elsewhere / "a_copy.jpg")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    fastdup_ray.run(str(root), str(work), k=2, executor="local")
    return root, work, elsewhere / "a_copy.jpg"


def test_a_row_outside_the_input_folder_is_refused(finished, tmp_path, capsys):
    root, work, files = finished
    outside = doctored_row_with_dotdot(root, work, tmp_path)
    assert dedup(work, "--delete") == 2
    error = capsys.readouterr().err
    assert "elsewhere/a_copy.jpg lies outside the run's input folder" in error and error.count("\n") == 1
    assert outside.exists() and contents(root) == files


def test_a_copy_read_through_a_linked_folder_is_not_touched(linked_folder, capsys):
    root, work, outside = linked_folder
    before = contents(root)
    assert dedup(work, "--delete") == 2
    assert f"{root}/linked/a_copy.jpg lies outside the run's input folder" in capsys.readouterr().err
    assert outside.exists() and contents(root) == before


def test_an_existing_target_is_never_overwritten(finished, tmp_path, capsys):
    root, work, files = finished
    taken = tmp_path / "dups" / "sub" / "deeper" / "b_copy.jpg"
    taken.parent.mkdir(parents=True)
    taken.write_bytes(b"someone's file")
    assert dedup(work, "--move-to", tmp_path / "dups") == 2
    assert f"{taken} exists already" in capsys.readouterr().err
    assert contents(root) == files and taken.read_bytes() == b"someone's file"
    assert not (tmp_path / "dups" / "sub" / "a_copy.jpg").exists()  # refused before the first move


def test_a_target_inside_the_input_folder_is_refused(finished, capsys):
    root, work, files = finished
    assert dedup(work, "--move-to", root / "dups") == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert contents(root) == files


def tar_of_images(path, files):
    with tarfile.open(path, "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name.replace("/", "_"))
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("input_kind", ["folder of archives", "one archive", "file list"])
def test_inputs_other_than_a_folder_of_images_point_at_webdataset_out(tmp_path, capsys, input_kind):
    files = write_images(tmp_path / "photos")
    if input_kind == "file list":
        source = tmp_path / "list.txt"
        source.write_text("".join(f"{tmp_path / 'photos' / name}\n" for name in files))
    else:
        (tmp_path / "shards").mkdir()
        source = tar_of_images(tmp_path / "shards" / "00000.tar", files)
        source = source.parent if input_kind == "folder of archives" else source
    work = tmp_path / "work"
    fastdup_ray.run(str(source), str(work), k=2, executor="local")
    assert dedup(work, "--delete") == 2
    error = capsys.readouterr().err
    assert "--webdataset-out" in error and error.count("\n") == 1
    assert contents(tmp_path / "photos") == files


def test_dry_run_alone_is_an_error(finished, capsys):
    _, work, _ = finished
    assert dedup(work, "--dry-run") == 2
    assert "--dry-run goes with --move-to, --symlink-to or --delete" in capsys.readouterr().err


def test_the_file_behind_a_kept_link_is_left_alone(tmp_path, capsys):
    # 0_link.jpg -> c.jpg sorts first, so the run keeps the link and removes c.jpg:
    # deleting c.jpg would leave the kept image a dangling link.
    root, work = tmp_path / "photos", tmp_path / "work"
    files = write_images(root)
    (root / "0_link.jpg").symlink_to(root / "c.jpg")
    fastdup_ray.run(str(root), str(work), k=2, executor="local")
    assert dedup(work, "--keep", "first", "--delete") == 0
    assert contents(root) == {"0_link.jpg": files["c.jpg"], **{name: files[name] for name in ORIGINALS}}
    summary = capsys.readouterr().out.splitlines()[-1]
    assert (
        summary.startswith("3 kept, 2 deleted")
        and f"1 left alone ({root / 'c.jpg'}: the same file as a kept image" in summary
    )

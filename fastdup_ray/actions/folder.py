"""dedup --move-to / --symlink-to / --delete: act on the images a finished run of a local
folder would remove (remove.csv under the ``keep`` rule), keeping one per component.

Every check runs before the first file is touched, and any failed check refuses the whole
command: the input must be the local folder recorded in the run's config.json; every
file acted on must lie inside it (its folder resolved through links and '..'; a link is
acted on as a link, never through it); every input must still be as the run saw it (the
resume rule's per-shard fingerprints of size and mtime); a target must not exist yet.
What was done is appended to work_dir/dedup_actions.csv (action, source, target, bytes).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field

import polars as pl

from fastdup_ray.actions.dedup import archive_of, keep_and_remove, parquet_of
from fastdup_ray.errors import InputError
from fastdup_ray.map.sources import fingerprint, record_local_version
from fastdup_ray.map.sources.items import LIST_EXTENSIONS, kind_of
from fastdup_ray.map.sources.kinds import own_shard
from fastdup_ray.rundir import layout, results
from fastdup_ray.rundir.shards import list_shards, read_marker, shard_names
from fastdup_ray.rundir.storage import is_remote
from fastdup_ray.rundir.summary import human_bytes
from fastdup_ray.rundir.workdir import WorkDir, run_lock

log = logging.getLogger("fastdup_ray")

# The option of each action, as error messages name it.
OPTIONS = {"move": "--move-to", "symlink": "--symlink-to", "delete": "--delete"}
LOG_COLUMNS = ("action", "source", "target", "bytes")


@dataclass(frozen=True)
class FileAction:
    """One file to move, link or delete; ``target`` is '' for a delete."""

    action: str
    source: str
    target: str
    size: int  # bytes the source holds in the input folder (0 for a link)


@dataclass
class ActionPlan:
    """What a dedup action does: the files, how many images stay, what is left alone."""

    action: str
    input_dir: str
    target_dir: str | None
    kept: int
    actions: list[FileAction] = field(default_factory=list)
    left_alone: list[str] = field(default_factory=list)  # one reason per row not acted on

    def summary(self, dry_run: bool = False) -> str:
        """One line: N kept, M moved/linked/deleted, bytes, what was left alone."""
        count, size = len(self.actions), human_bytes(sum(a.size for a in self.actions))
        would = "would be " if dry_run else ""
        done = {
            "move": f"{would}moved to {self.target_dir} ({size} out of the input folder)",
            "symlink": f"{would}linked in {self.target_dir} (inputs unchanged)",
            "delete": f"{would}deleted ({size} {would}freed)",
        }[self.action]
        line = f"{self.kept} kept, {count} {done}"
        if self.left_alone:
            more = ", ..." if len(self.left_alone) > 1 else ""
            line += f", {len(self.left_alone)} left alone ({self.left_alone[0]}{more})"
        return f"dry run, nothing changed: {line}" if dry_run else line


def folder_input(work: WorkDir, action: str) -> str:
    """The run's input_dir when it is a local folder; else an error pointing at
    --webdataset-out, which writes deduplicated copies of archives."""
    if not results.has_config(work):
        raise InputError(f"no finished run in {work.location}: {layout.CONFIG_FILE} is missing")
    input_dir = results.read_config(work).get("input_dir")
    what = None
    if isinstance(input_dir, list):
        what = "a list of locations"
    elif not isinstance(input_dir, str) or not input_dir:
        what = "not recorded"
    elif is_remote(input_dir):
        what = "remote storage"
    elif os.path.isfile(input_dir):
        what = (
            "a file list"
            if input_dir.lower().endswith(LIST_EXTENSIONS)
            else f"a single {kind_of(input_dir) or 'file'}"
        )
    elif not os.path.isdir(input_dir):
        raise InputError(f"the run's input folder {input_dir} no longer exists: nothing to {action}")
    if what:
        raise InputError(
            f"{OPTIONS[action]} acts on a run of a local folder; this run's input_dir {input_dir!r} "
            f"is {what}: for archives write deduplicated copies with --webdataset-out DIR, otherwise "
            "act on remove.csv yourself"
        )
    return os.path.abspath(input_dir)


def inside(root: str, location: str) -> str:
    """``location`` with its folder resolved (links, '..'), when it lies inside ``root`` (resolved);
    the file itself is not resolved, so a link is acted on as the link."""
    folder, name = os.path.split(location)
    resolved = os.path.join(os.path.realpath(folder), name)
    if name in ("", ".", "..") or os.path.commonpath([root, resolved]) != root or resolved == root:
        raise InputError(
            f"refused: {location} lies outside the run's input folder {root}; nothing was changed"
        )
    return resolved


def frame_video(name: str) -> str | None:
    """The video a frame row was cut from ('<video>/frame_<s>s.jpg'), else None."""
    folder, base = os.path.split(name)
    return folder if base.startswith("frame_") and kind_of(folder) == "video" else None


def shard_locations(work: WorkDir, prefix: str) -> list[str]:
    """The input files a shard was cut from, in listing order: its rows' files (a video's
    frames stand for the video) and its bad rows."""
    names = results.read_names(work, [prefix]) + results.read_bad_list(work, [prefix])["filename"].to_list()
    return sorted({frame_video(name) or name for name in names})


def changed_input(work: WorkDir, prefix: str, marker: dict, sizes: dict[str, int]) -> str | None:
    """None when the shard's inputs are as the run saw them (same fingerprint); else what
    changed, naming the file where it can be found (the marker holds one hash per shard)."""
    if "inputs" not in marker:
        return (
            f"shard {prefix or 'features.dat'} records no fingerprint of its inputs (features made "
            "elsewhere), so they cannot be checked"
        )
    # A shard of one archive or Parquet file was fingerprinted by that file, not its rows.
    own = own_shard(marker.get("kind"))
    locations = [marker.get("first", "")] if own else shard_locations(work, prefix)
    versions: dict[str, str] = {}
    for location in locations:
        record_local_version(location, versions)
    if fingerprint(tuple(locations), versions) == marker["inputs"]:
        return None
    marker_time = os.stat(work.path(shard_names(prefix)[3])).st_mtime_ns
    for location in locations:
        if versions.get(location) == "missing":
            return f"{location} is gone since the run"
    for location in locations:
        size, _, mtime = versions.get(location, "::").partition(":")
        if location in sizes and size.isdigit() and int(size) != sizes[location]:
            return f"{location} changed since the run (size {sizes[location]} -> {size} bytes)"
        if mtime.isdigit() and int(mtime) > marker_time:
            return f"{location} changed since the run (modified after the run read it)"
    among = f"{marker.get('first')} .. {marker.get('last')}"
    return f"an input among {among} changed since the run (size or modification time)"


def check_inputs_unchanged(work: WorkDir, input_dir: str, action: str) -> None:
    """Refuse, naming the file, when any input of the run vanished or changed since."""
    stats = results.read_stats(work, ("filename", "file_size")) if results.has_stats(work) else None
    sizes = (
        dict(zip(stats["filename"].to_list(), stats["file_size"].cast(pl.Int64).to_list()))
        if stats is not None
        else {}
    )
    for prefix in list_shards(work):
        marker = read_marker(work, prefix) or {}
        if prefix == layout.LISTING_SHARD:
            continue  # inputs rejected while listing: none is acted on or decided from
        problem = changed_input(work, prefix, marker, sizes)
        if problem:
            raise InputError(
                f"refused to {action}: {problem}; nothing was changed. Rerun `fastdup-ray run {input_dir} "
                f"--work-dir {work.location}` "
                "(unchanged shards are reused), then dedup again"
            )


def plan_actions(
    work_dir: str, action: str, target_dir: str | None = None, keep: str = "resolution"
) -> ActionPlan:
    """Check everything and list the file actions, touching nothing. ``action`` is 'move'
    or 'symlink' (into ``target_dir``, mirroring the folders below the input folder) or
    'delete'. Raises InputError naming the file or setting that refuses it."""
    if action not in OPTIONS:
        raise ValueError(f"action must be one of {tuple(OPTIONS)}, got {action!r}")
    work = WorkDir(work_dir)
    if work.remote:
        raise InputError(f"{OPTIONS[action]} needs a local work dir, not {work_dir}")
    input_dir = folder_input(work, action)
    root = os.path.realpath(input_dir)
    target_root = None
    if action != "delete":
        if not target_dir:
            raise InputError(f"{OPTIONS[action]} needs a folder to write to")
        target_root = os.path.realpath(target_dir)
        if os.path.exists(target_root) and not os.path.isdir(target_root):
            raise InputError(f"{OPTIONS[action]} {target_dir} is a file, not a folder")
        if os.path.commonpath([root, target_root]) == root:
            raise InputError(
                f"{OPTIONS[action]} {target_dir} lies inside the input folder {input_dir}: the next run "
                "would read it as input; choose a folder outside"
            )
    keepers, removed = keep_and_remove(work_dir, keep)
    plan = ActionPlan(action, input_dir, target_root, kept=len(keepers))
    kept_files = {os.path.realpath(name) for name in keepers["filename"].to_list() if not frame_video(name)}
    sources: list[str] = []
    for name in removed["filename"].to_list():
        if frame_video(name):
            plan.left_alone.append(f"{name}: a video frame, not a file")
            continue
        table = parquet_of(name)
        if table and not os.path.isdir(table):
            raise InputError(
                f"{OPTIONS[action]} acts on loose files; {name} is a row of the Parquet file {table}: "
                "drop the rows of remove.csv from it yourself"
            )
        found = archive_of(name)
        if found and not os.path.isdir(found[0]):
            raise InputError(
                f"{OPTIONS[action]} acts on loose files; {name} is inside the archive {found[0]}: "
                "write deduplicated archives with --webdataset-out DIR instead"
            )
        source = inside(root, name)
        if os.path.realpath(source) in kept_files:
            plan.left_alone.append(f"{name}: the same file as a kept image (a link)")
            continue
        sources.append(source)
    check_inputs_unchanged(work, input_dir, action)
    for source in sources:
        size = 0 if os.path.islink(source) else os.lstat(source).st_size
        target = os.path.join(target_root, os.path.relpath(source, root)) if target_root else ""
        if target and os.path.lexists(target):
            raise InputError(
                f"refused: {target} exists already ({OPTIONS[action]} never overwrites); nothing was changed"
            )
        plan.actions.append(FileAction(action, source, target, size))
    return plan


def act(action: FileAction) -> None:
    if action.action == "delete":
        os.unlink(action.source)
        return
    os.makedirs(os.path.dirname(action.target), exist_ok=True)
    if os.path.lexists(action.target):  # appeared since the plan: still never overwrite
        raise FileExistsError(f"{action.target} exists already")
    if action.action == "move":
        shutil.move(action.source, action.target)
    else:
        os.symlink(os.path.abspath(action.source), action.target)


def append_log(work: WorkDir, done: list[FileAction]) -> None:
    """Append the actions done to dedup_actions.csv, rewriting it whole (atomically)."""
    table = pl.DataFrame(
        [(a.action, a.source, a.target, a.size) for a in done], schema=list(LOG_COLUMNS), orient="row"
    )
    previous = work.read_if_present(layout.DEDUP_ACTIONS_FILE) or b""
    work.write_bytes(
        layout.DEDUP_ACTIONS_FILE, previous + table.write_csv(include_header=not previous).encode("utf-8")
    )


def apply_plan(work_dir: str, plan: ActionPlan) -> str:
    """Do the planned actions under the work dir's run lock (no run rewrites the tables
    meanwhile), log each one done, and return the log's path. A failure stops at that
    file, with the actions done so far logged."""
    work = WorkDir(work_dir)
    done: list[FileAction] = []
    with run_lock(work):
        try:
            for action in plan.actions:
                act(action)
                done.append(action)
        except OSError as exc:
            raise InputError(
                f"stopped after {len(done)} of {len(plan.actions)} files at {action.source}: "
                f"{exc.strerror or exc}; "
                f"what was done is in {work.path(layout.DEDUP_ACTIONS_FILE)}"
            ) from None
        finally:
            if done:
                append_log(work, done)
    log.info("%s: %d files", plan.action, len(done))
    return work.path(layout.DEDUP_ACTIONS_FILE)

"""Deduplicated outputs: which image of each component to keep, which to remove.

Rules (``keep``): 'resolution' keeps the image with the most pixels, 'file_size' the
largest file, 'first' the first in features.dat order (shards in name order, each in
listing order; two archives of one file name are ordered by the hash in their shard
names). Ties go to the first in that order, so the choice is repeatable.
"""

from __future__ import annotations

import io
import logging
import os
import re
import tarfile
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import polars as pl

from fastdup_ray.errors import InputError
from fastdup_ray.map.sources.archives import open_archive_stream
from fastdup_ray.map.sources.items import kind_of
from fastdup_ray.map.sources.parquet import PARQUET_EXTENSIONS
from fastdup_ray.rundir import layout, results
from fastdup_ray.rundir.shards import list_shards
from fastdup_ray.rundir.storage import StorageOptions, is_remote, storage_unavailable
from fastdup_ray.rundir.workdir import WorkDir

log = logging.getLogger("fastdup_ray")

KEEP_RULES = ("resolution", "file_size", "first")


def choose_keepers(
    components: pl.DataFrame, names: list[str], stats: pl.DataFrame | None, keep: str = "resolution"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(keep, remove) tables of ``filename,component_id``: one kept image per component."""
    if keep not in KEEP_RULES:
        raise ValueError(f"keep must be one of {KEEP_RULES}, got {keep!r}")
    table = components.select("__id", "component_id").with_columns(
        pl.Series("filename", names, dtype=pl.String)
    )
    if keep == "first":
        score = pl.lit(0)
    else:
        if stats is None:
            raise ValueError(f"keep={keep!r} needs stats.csv (written by runs that extract images)")
        table = table.join(stats.select("__id", "width", "height", "file_size"), on="__id", how="left")
        score = (pl.col("width") * pl.col("height")) if keep == "resolution" else pl.col("file_size")
    ranked = table.with_columns(score.fill_null(0).alias("_score")).sort(
        ["component_id", "_score", "__id"], descending=[False, True, False]
    )
    first = ranked.group_by("component_id", maintain_order=True).head(1)
    kept_ids = set(first["__id"].to_list())
    keepers = ranked.filter(pl.col("__id").is_in(kept_ids)).sort("__id").select("filename", "component_id")
    removed = ranked.filter(~pl.col("__id").is_in(kept_ids)).sort("__id").select("filename", "component_id")
    return keepers, removed


def write_keep_remove(work_dir: str, keep: str = "resolution") -> tuple[str, str]:
    """keep.csv and remove.csv in ``work_dir`` (local or remote) from a finished run's
    components; returns their locations."""
    work = WorkDir(work_dir)
    keepers, removed = keep_and_remove(work_dir, keep)
    for name, frame in ((layout.KEEP_FILE, keepers), (layout.REMOVE_FILE, removed)):
        work.write_bytes(name, frame.write_csv().encode())
    return work.path(layout.KEEP_FILE), work.path(layout.REMOVE_FILE)


def keep_and_remove(
    work_dir: str, keep: str = "resolution", names: list[str] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """choose_keepers over a finished run's components (CSV or Parquet parts) and stats;
    ``names`` stand for the rows (default: the run's row names)."""
    names = run_names(work_dir) if names is None else names
    components = results.read_table(
        work_dir, layout.CONNECTED_COMPONENTS_FILE, ("__id", "component_id")
    ).sort("__id")
    stats = (
        results.read_stats(work_dir, ("__id", "width", "height", "file_size"))
        if results.has_stats(work_dir)
        else None
    )
    if len(components) != len(names):
        raise InputError(
            f"{layout.CONNECTED_COMPONENTS_FILE} of {work_dir} has {len(components)} rows for {len(names)} "
            "images: rerun the neighbours step (run_mode 2)"
        )
    return choose_keepers(components, names, stats, keep)


# The outer archive of a row's name: the shortest prefix ending in an archive extension
# followed by '/' (an image row) or by nothing (a bad row naming the archive itself).
ARCHIVE_PREFIX = re.compile(r"^(.*?\.(?:tar|tgz|tar\.gz|zip))(?:/(.*))?$", re.IGNORECASE | re.DOTALL)
# The Parquet file of a row read from one ('<file>.parquet/<key>'), or of a bad row naming it.
PARQUET_PREFIX = re.compile(
    rf"^(.*?(?:{'|'.join(re.escape(e) for e in PARQUET_EXTENSIONS)}))(?:/.*)?$", re.IGNORECASE | re.DOTALL
)
# The n-th occurrence (n >= 2) of a member name repeated in one archive is the row
# '<name>#<n>' (sources/archives.py): the suffix follows the image's extension.
OCCURRENCE = re.compile(r"^(.*)#([2-9]|[1-9][0-9]+)$", re.DOTALL)
# Errors of reading an archive (not of writing its copy): the copy stops there.
READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error)


def webdataset_key(member: str) -> tuple[str, str]:
    """(key, extension) of a webdataset member: '000000001.jpg' -> ('000000001', 'jpg');
    the key runs to the first dot of the file name, as webdataset groups samples."""
    folder, _, base = member.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


def archive_of(name: str) -> tuple[str, str] | None:
    """(archive, member) of a row named inside an archive; member is '' for the archive itself."""
    match = ARCHIVE_PREFIX.match(name)
    return (match.group(1), match.group(2) or "") if match else None


def parquet_of(name: str) -> str | None:
    """The Parquet file a row was read from, or None."""
    match = PARQUET_PREFIX.match(name)
    return match.group(1) if match else None


def parquet_left_out(names: list[str]) -> list[str]:
    """One problem line when the run read Parquet files: --webdataset-out does not rewrite them."""
    files = sorted({found for found in map(parquet_of, names) if found})
    if not files:
        return []
    more = ", ..." if len(files) > 1 else ""
    return [
        f"{len(files)} Parquet input(s) not rewritten ({files[0]}{more}): --webdataset-out rewrites "
        "tar and zip archives; the rows to drop are in remove.csv, named <file>.parquet/<key or row number>"
    ]


def member_occurrence(member: str) -> tuple[str, int]:
    """(member name, occurrence counted from 0) of a row's member part: 'a.jpg#2' ->
    ('a.jpg', 1). A member named 'x#2.jpg' is itself; 'a.jpg#2' is never a member's own
    name among the rows, as a name ending so is no image."""
    match = OCCURRENCE.match(member)
    if match and kind_of(match.group(1)):
        return match.group(1), int(match.group(2)) - 1
    return member, 0


class WrittenArchives(list):
    """The deduplicated archives written (Paths, or locations for a remote ``out_dir``, in
    input order), and ``problems``: one line for each input archive, or member, that could
    not be copied whole."""

    def __init__(self, paths=(), problems=()) -> None:
        super().__init__(paths)
        self.problems: list[str] = list(problems)


@dataclass
class Member:
    """One archive member: its name, its bytes (None for a folder, link or other non-file)
    and its tar or zip header, written back as it was."""

    name: str
    data: bytes | None
    info: tarfile.TarInfo | zipfile.ZipInfo


def removed_rows(work_dir: str, keep: str) -> tuple[list[str], list[bool]]:
    """The run's row names and, for each row, whether ``keep`` removes it. Rows are told
    apart by position, not name: one name may stand for two rows."""
    names = run_names(work_dir)
    _, removed = keep_and_remove(work_dir, keep, [str(row) for row in range(len(names))])
    gone = {int(row) for row in removed["filename"].to_list()}
    return names, [row in gone for row in range(len(names))]


def run_names(work_dir: str) -> list[str]:
    """Row names of the run, in features.dat order, without reading its vectors."""
    return results.read_names(work_dir)


def bad_names(work_dir: str) -> list[str]:
    """Every name on the run's bad lists: an archive of only bad images is an input too."""
    return results.read_bad_list(work_dir, list_shards(WorkDir(work_dir)))["filename"].to_list()


def removals_by_archive(names: list[str], removed: list[bool]) -> dict[str, dict[str, list[bool]]]:
    """archive -> member -> removed flag of each occurrence of that member name, in the
    order the archive was read in ('a.jpg#2' is the second 'a.jpg'), so the n-th occurrence
    of a name gets the n-th decision. An occurrence without a row (bad) is not removed."""
    by_archive: dict[str, dict[str, list[bool]]] = {}
    for name, gone in zip(names, removed):
        found = archive_of(name)
        if found and found[1]:
            member, occurrence = member_occurrence(found[1])
            flags = by_archive.setdefault(found[0], {}).setdefault(member, [])
            flags += [False] * (occurrence - len(flags))
            flags.append(gone)
    return by_archive


def run_archives(names: list[str]) -> list[str]:
    """The archives the run's rows were read from, sorted; a local folder named like an
    archive is a folder, not an archive."""
    archives = {found[0] for found in map(archive_of, names) if found}
    return sorted(a for a in archives if is_remote(a) or not os.path.isdir(a))


def _location_parts(location: str) -> list[str]:
    if is_remote(location):
        scheme, _, rest = location.partition("://")
        return [scheme, *rest.split("/")]
    return os.path.abspath(location).split(os.sep)


def output_paths(archives: list[str], out_dir: Path) -> dict[str, Path]:
    """Where each archive's copy goes: its path below the common folder of all the archives,
    so part1/00000.tar and part2/00000.tar stay two files."""
    parts = {archive: _location_parts(archive) for archive in archives}
    common = os.path.commonprefix([p[:-1] for p in parts.values()])  # element-wise on lists
    return {archive: out_dir.joinpath(*p[len(common) :]) for archive, p in parts.items()}


def refuse_overwriting_inputs(targets: dict[str, Path], remote: dict[str, str] | None = None) -> None:
    """An output that is an input archive (after links) would destroy it while it is read;
    ``remote``: archive -> its copy's remote location, when the copies go to a bucket."""
    for location in (remote or {}).values():
        if location in remote:
            raise InputError(
                f"webdataset output {location} is an input archive of the run; write to a prefix "
                "outside the inputs"
            )
    inputs = {os.path.realpath(archive): archive for archive in targets if not is_remote(archive)}
    for target in targets.values():
        archive = inputs.get(os.path.realpath(target))
        if archive is not None:
            raise InputError(
                f"webdataset output {target} would overwrite the input archive {archive}; write to a folder "
                "outside the inputs"
            )


def webdataset_samples(members: Iterable[Member]) -> Iterator[list[Member]]:
    """Members grouped as webdataset groups them: consecutive members with one key. A key
    repeated back to back starts a new sample at a repeated extension, so no member
    overwrites another; a folder entry stands alone."""
    sample: list[Member] = []
    extensions: set[str] = set()
    for member in members:
        key, ext = webdataset_key(member.name)
        folder = member.name.endswith("/") or (
            isinstance(member.info, tarfile.TarInfo) and member.info.isdir()
        )
        if sample and (folder or key != webdataset_key(sample[0].name)[0] or ext.lower() in extensions):
            yield sample
            sample, extensions = [], set()
        if folder:
            yield [member]
            continue
        sample.append(member)
        extensions.add(ext.lower())
    if sample:
        yield sample


def kept_members(
    members: Iterable[Member], removals: dict[str, list[bool]], counts: Counter
) -> Iterator[Member]:
    """The members of every sample not removed. A sample is removed when it has images and
    each one is removed; an image without a decision (bad or not judged) keeps its sample.
    A repeated image name is matched to its decisions by occurrence (removals_by_archive)."""
    seen: Counter = Counter()
    for sample in webdataset_samples(members):
        decisions = []
        for member in sample:
            if member.data is not None and kind_of(member.name) == "image":
                flags = removals.get(member.name, [])
                decisions.append(seen[member.name] < len(flags) and flags[seen[member.name]])
                seen[member.name] += 1
        if decisions and all(decisions):
            counts["removed"] += 1
            continue
        counts["kept"] += 1
        yield from sample


def tar_members(stream: BinaryIO) -> Iterator[Member]:
    with tarfile.open(fileobj=stream, mode="r|*") as source:
        for info in source:
            yield Member(info.name, source.extractfile(info).read() if info.isfile() else None, info)


def zip_members(stream: BinaryIO, archive: str, problems: list[str]) -> Iterator[Member]:
    with zipfile.ZipFile(stream) as source:
        for info in source.infolist():
            if info.is_dir():
                yield Member(info.filename, None, info)
                continue
            try:
                data = source.read(info)
            except (zipfile.BadZipFile, zlib.error, NotImplementedError) as exc:
                problems.append(
                    f"{archive}/{info.filename}: unreadable member left out ({type(exc).__name__}: {exc})"
                )
                continue
            yield Member(info.filename, data, info)


def read_members(archive: str, storage: StorageOptions | None, problems: list[str]) -> Iterator[Member]:
    """Every member of the archive, in order; opening it happens here too, so that every
    read error comes out of this iterator and none out of the writer."""
    with open_archive_stream(archive, storage, None) as stream:
        if archive.lower().endswith(".zip"):
            yield from zip_members(stream, archive, problems)
        else:
            yield from tar_members(stream)


def until_unreadable(
    members: Iterator[Member], archive: str, counts: Counter, problems: list[str]
) -> Iterator[Member]:
    """The members up to a read error, which becomes a problem line; a storage failure
    (the S3 client's retries spent) is raised instead: the archive is not at fault."""
    try:
        for member in members:
            counts["read"] += 1
            yield member
    except READ_ERRORS as exc:
        if storage_unavailable(exc):
            raise
        if counts["read"]:
            problems.append(
                f"{archive}: cut off or corrupt after {counts['read']} members ({type(exc).__name__}: "
                f"{exc}); the samples read before it were written"
            )
        else:
            problems.append(f"{archive}: not written, it cannot be read ({type(exc).__name__}: {exc})")
            counts["unreadable"] = 1


def write_tar(path: Path, members: Iterable[Member], compress: bool) -> None:
    with tarfile.open(path, "w:gz" if compress else "w") as sink:
        for member in members:
            sink.addfile(member.info, io.BytesIO(member.data) if member.data is not None else None)


def write_zip(path: Path, members: Iterable[Member]) -> None:
    with zipfile.ZipFile(path, "w") as sink, warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "Duplicate name", UserWarning
        )  # repeated names are copied as they came
        for member in members:
            source = member.info
            info = zipfile.ZipInfo(source.filename, source.date_time)  # fresh: no stale sizes or extra fields
            info.compress_type, info.external_attr, info.comment = (
                source.compress_type,
                source.external_attr,
                source.comment,
            )
            sink.writestr(info, member.data or b"")


def copy_archive(
    archive: str, target: Path, removals: dict[str, list[bool]], storage: StorageOptions | None
) -> tuple[bool, list[str]]:
    """Write ``archive`` without its removed samples to ``target``, in its own format.
    Returns (written, problems); S3 requests are retried by the S3 client (storage.py), and
    a storage failure that outlasts its retries is a problem line, the archive unwritten."""
    try:
        return copy_once(archive, target, removals, storage)
    except Exception as exc:  # noqa: BLE001 - only a storage failure is a problem line
        if not storage_unavailable(exc):
            raise
        return False, [
            f"{archive}: not written, the storage failed despite retries ({type(exc).__name__}: {exc})"
        ]


def copy_once(
    archive: str, target: Path, removals: dict[str, list[bool]], storage: StorageOptions | None
) -> tuple[bool, list[str]]:
    """One copy, under a temporary name renamed when complete, so a copy cut short is never
    taken for a finished one."""
    temp = target.with_name(f".{target.name}.tmp")
    problems: list[str] = []
    counts: Counter = Counter()
    members = kept_members(
        until_unreadable(read_members(archive, storage, problems), archive, counts, problems),
        removals,
        counts,
    )
    lower = archive.lower()
    try:
        if lower.endswith(".zip"):
            write_zip(temp, members)
        else:
            write_tar(temp, members, compress=lower.endswith((".tgz", ".tar.gz")))
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if counts["unreadable"]:
        temp.unlink()
        return False, problems
    os.replace(temp, target)
    log.info("%s: %d samples kept, %d removed -> %s", archive, counts["kept"], counts["removed"], target)
    return True, problems


def write_deduplicated_webdataset(
    work_dir: str,
    out_dir: str,
    keep: str = "resolution",
    storage: StorageOptions | None = None,
    executor: str = "auto",
) -> WrittenArchives:
    """Copy every archive of a finished run (tar, tgz/tar.gz, zip; local or remote) to
    ``out_dir`` without the samples whose image is on the remove list; kept samples keep
    all their members (.txt, .json, ...), each exactly once. A sample repeated in an archive
    is judged per occurrence ('<name>#<n>' rows): a kept repeat is written under its name as
    it came, so a copy may hold a name twice, as its input did. Copies mirror the archives'
    folders below their common folder, keep their format, and never replace an input
    (InputError, before anything is written). What could not be copied whole is logged
    and listed in the result's ``problems``; keep.csv and remove.csv are written too.

    The archives are copied in parallel, one a task: for a remote ``out_dir`` on the
    cluster when one is given (each node stages its own copies), else in worker processes
    of this machine, as always for a local ``out_dir`` (a local folder is this machine's)."""
    names, removed = removed_rows(work_dir, keep)
    everything = names + bad_names(work_dir)
    remote = is_remote(out_dir)
    # A remote copy is built in a local staging folder of the task, then uploaded whole.
    local_out = Path(out_dir) if not remote else Path("/")
    targets = output_paths(run_archives(everything), local_out)
    relative = {a: t.relative_to(local_out).as_posix() for a, t in targets.items()}
    out = WorkDir(out_dir, storage) if remote else None
    locations = {a: out.path(r) for a, r in relative.items()} if out else {}
    refuse_overwriting_inputs({} if remote else targets, locations)
    write_keep_remove(work_dir, keep)
    removals = removals_by_archive(names, removed)
    jobs = [
        ArchiveCopy(archive, out_dir, relative[archive], removals.get(archive, {}), storage)
        for archive in targets
    ]
    result = WrittenArchives()
    for job, (written, problems) in zip(jobs, copy_all(jobs, executor if remote else "local")):
        if written:
            result.append(locations[job.archive] if remote else targets[job.archive])
        for problem in problems:
            log.warning("webdataset output: %s", problem)
        result.problems += problems
    for problem in parquet_left_out(everything):
        log.warning("webdataset output: %s", problem)
        result.problems.append(problem)
    return result


@dataclass(frozen=True)
class ArchiveCopy:
    """One archive to copy: where from, to which out_dir and name in it, and its removals."""

    archive: str
    out_dir: str
    name: str
    removals: dict[str, list[bool]]
    storage: StorageOptions | None


def copy_all(jobs: list[ArchiveCopy], executor: str) -> Iterator[tuple[bool, list[str]]]:
    """(written, problems) of each job, in order: in this process for a single archive,
    else one task an archive on the engine ``executor`` names ('auto': Ray's when a
    cluster is given, as in a `ray job submit` job, else this machine's worker processes)."""
    if len(jobs) <= 1:
        yield from map(copy_one, jobs)
        return
    from fastdup_ray.engine import open_engine, ray_cluster_given

    engine = open_engine(executor if executor != "auto" else "ray" if ray_cluster_given() else "local")
    try:
        yield from engine.map(copy_one, jobs)
    finally:
        engine.close()


def copy_one(job: ArchiveCopy) -> tuple[bool, list[str]]:
    """Copy one archive to its place: a local target directly (temporary name, renamed),
    a remote one staged in a folder of this task's own and uploaded whole."""
    out = WorkDir(job.out_dir, job.storage)
    target = out.staging / job.name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        written, problems = copy_archive(job.archive, target, job.removals, job.storage)
        if written and out.remote:
            out.put(target, job.name)
        return written, problems
    finally:
        if out.remote:
            out.close()

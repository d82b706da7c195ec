"""The run's output folder, local or remote (s3:// or minio://), with atomic writes.

Locally a file is written under a temporary name and renamed; on S3 an object appears
only once its upload completes, so a single PUT is already atomic. Either way a reader
never sees half a file under its final name. A local work dir is held by one run at a
time (:func:`run_lock`), which also clears the temporary files a killed run left.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from fsspec.utils import merge_offset_ranges

from fastdup_ray.errors import InputError
from fastdup_ray.rundir.storage import StorageOptions, is_remote, join, resolve

LOCK_FILE = ".fastdup_ray.lock"
# What every temporary name of this package looks like: ".<final name>.tmp-<8 hex>".
TEMPORARY_PATTERN = ".*.tmp-*"


def write_file_atomically(path: Path, data: bytes) -> None:
    """Write a local file under a temporary name, then rename it into place, so a reader
    never sees half of it (no fsync: for reports, which can be rebuilt)."""
    temp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        temp.write_bytes(data)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


# Ranges of a file fetched together closer than this are fetched as one (a gap costs
# less than a request).
MERGE_GAP = 64 * 1024


class WorkDir:
    def __init__(self, location: str, options: StorageOptions | None = None) -> None:
        self.location = location
        self.remote = is_remote(location)
        self.options = options
        if self.remote:
            self.fs, self.root = resolve(location, options)
            self._staging = None
        else:
            try:
                Path(location).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"work_dir {location!r} cannot be created: {exc.strerror or exc}") from None

    def __reduce__(self):
        return (WorkDir, (self.location, self.options))

    def path(self, name: str) -> str:
        return join(self.location, name)

    def sub(self, name: str) -> "WorkDir":
        """The folder ``name`` inside this one, as a WorkDir of its own (created locally)."""
        return WorkDir(join(self.location, name), self.options)

    def _remote_path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    @property
    def staging(self) -> Path:
        """A local folder where files are built before they go to their final place."""
        if not self.remote:
            return Path(self.location)
        if self._staging is None:
            self._staging = Path(tempfile.mkdtemp(prefix="fastdup_ray_staging_"))
            # A task on a worker gets its own unpickled WorkDir and never closes it: the
            # folder goes when the object does (or the process exits), not at the reboot.
            self._remove_staging = weakref.finalize(self, shutil.rmtree, self._staging, ignore_errors=True)
        return self._staging

    def exists(self, name: str) -> bool:
        if self.remote:
            return self.fs.exists(self._remote_path(name))
        return os.path.exists(self.path(name))

    def size(self, name: str) -> int:
        if self.remote:
            return int(self.fs.size(self._remote_path(name)))
        return os.path.getsize(self.path(name))

    def read_bytes(self, name: str) -> bytes:
        if self.remote:
            # One GET: with concurrency s3fs first asks the size (a HEAD on every read,
            # twice the requests of the many small files a run reads back).
            return self.fs.cat_file(self._remote_path(name), max_concurrency=1)
        return Path(self.path(name)).read_bytes()

    def read_if_present(self, name: str) -> bytes | None:
        """The file's bytes, or None where there is no such file: one request on S3
        where exists() then read_bytes() would make two (a storage failure still raises)."""
        try:
            return self.read_bytes(name)
        except FileNotFoundError:
            return None

    def read_range(self, name: str, start: int, stop: int) -> bytes:
        """Bytes start..stop-1 of ``name`` (a row range of a features.dat, say)."""
        if self.remote:
            return self.fs.cat_file(self._remote_path(name), start=start, end=stop)
        with open(self.path(name), "rb") as handle:
            handle.seek(start)
            return handle.read(stop - start)

    def read_tail(self, name: str, size: int) -> bytes:
        """The last ``size`` bytes of ``name``, all of it where it is shorter (on S3 one
        suffix-ranged GET, no HEAD): a Parquet file's footer, say."""
        if self.remote:
            return self.fs.cat_file(self._remote_path(name), start=-size)
        with open(self.path(name), "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, end - size))
            return handle.read()

    def open_with_parts(self, name: str, ranges: Sequence[tuple[int, int]]) -> BinaryIO:
        """``name`` open for reading, its byte ``ranges`` (start, stop) fetched first, all
        at once (on S3 concurrently, neighbours merged), so that a reader of those parts
        asks nothing more of the store. FileNotFoundError where there is no such file."""
        if not self.remote:
            return open(self.path(name), "rb")
        path = self._remote_path(name)
        paths, starts, stops = merge_offset_ranges(
            [path] * len(ranges), [r[0] for r in ranges], [r[1] for r in ranges], max_gap=MERGE_GAP
        )
        parts = self.fs.cat_ranges(paths, starts, stops, on_error="raise")
        known = {(start, stop): part for start, stop, part in zip(starts, stops, parts)}
        return self.fs.open(path, "rb", cache_type="parts", cache_options={"data": known})

    def write_bytes(self, name: str, data: bytes) -> None:
        if self.remote:
            self.fs.pipe_file(self._remote_path(name), data)
            return
        temp = Path(self.location) / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path(name))
        finally:
            temp.unlink(missing_ok=True)

    def remove(self, name: str) -> None:
        """Delete ``name`` if it exists (a stale output of an earlier run)."""
        if self.remote:
            self.fs.rm_file(self._remote_path(name))  # S3 deletes a missing key without complaint
            return
        Path(self.path(name)).unlink(missing_ok=True)

    def remove_tree(self, name: str) -> None:
        """Delete the folder ``name`` and everything in it, if it exists."""
        if self.remote:
            try:
                self.fs.rm(self._remote_path(name), recursive=True)
            except FileNotFoundError:
                pass  # no such folder: nothing to remove
            return
        shutil.rmtree(self.path(name), ignore_errors=True)

    def remove_leftovers(self) -> int:
        """Remove the temporary files a killed run left here (and in its sub-folders, such
        as test_features); call only while holding run_lock. Returns how many."""
        if self.remote:
            return 0  # nothing is staged remotely: an upload appears whole or not at all
        leftovers = list(Path(self.location).rglob(TEMPORARY_PATTERN))
        for path in leftovers:
            path.unlink(missing_ok=True)
        return len(leftovers)

    def put(self, local_file: Path, name: str) -> None:
        """Move a finished local file to ``name`` (rename locally, upload remotely)."""
        if self.remote:
            self.fs.put_file(str(local_file), self._remote_path(name))
            local_file.unlink(missing_ok=True)
        else:
            os.replace(local_file, self.path(name))

    @contextmanager
    def local_copies(self, names: Sequence[str]) -> Iterator[list[str]]:
        """Local paths holding the files ``names`` while the block runs: the files
        themselves when local; else copies, removed when the block ends (a reduce task's
        copies of a table's parts are as large as the table, on a worker's disk)."""
        if not self.remote:
            yield [self.path(name) for name in names]
            return
        with tempfile.TemporaryDirectory(prefix="fastdup_ray_read_") as folder:
            paths = [str(Path(folder) / name) for name in names]
            for name, target in zip(names, paths):
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(self._remote_path(name), target)
            yield paths

    def names(self) -> list[str]:
        """File names directly in the work dir."""
        return sorted(self.file_sizes())

    def file_sizes(self) -> dict[str, int]:
        """Size of every file directly in the work dir, from one listing (an S3 LIST
        carries the sizes, so no HEAD per file)."""
        if self.remote:
            try:
                entries = self.fs.ls(self.root, detail=True, refresh=True)
            except FileNotFoundError:
                return {}
            return {
                e["name"].rstrip("/").rsplit("/", 1)[-1]: int(e.get("size") or 0)
                for e in entries
                if e.get("type") != "directory"
            }
        return {p.name: p.stat().st_size for p in Path(self.location).iterdir() if p.is_file()}

    def close(self) -> None:
        if self.remote and self._staging is not None:
            self._remove_staging()
            self._staging = None


@contextmanager
def run_lock(work: WorkDir) -> Iterator[None]:
    """Hold the work dir for one run: a second run on it is refused at once, naming the
    holder's pid, rather than interleaving shards. Remote work dirs have no lock (S3 has
    none); their writes are whole objects."""
    if work.remote:
        yield
        return
    path = Path(work.location) / LOCK_FILE
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise InputError(
                f"another fastdup_ray run (pid {holder}) is using work_dir {work.location}; "
                "wait for it to finish, or use another work_dir"
            ) from None
        try:
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                break  # still the lock file: a run that just ended did not remove it under us
        except FileNotFoundError:
            pass
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()

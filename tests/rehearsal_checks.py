"""The rehearsal's checks against its ground truth, and the peak memory of a cluster's
processes sampled in a thread. Pure functions over names and tables, apart from the sampler."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from collections import Counter, defaultdict


def accounted(images: list[str], good: list[str], bad: list[str], empty_tar: str) -> tuple[int, list[str]]:
    """(images found exactly once in good + bad, problems): an image missing, listed twice,
    or a row that is no image of the data (the empty tar's own row excepted)."""
    seen = Counter(good) + Counter(bad)
    problems = [f"{name}: listed {seen[name]} times" for name in images if seen[name] != 1]
    known = set(images)
    problems += [
        f"{name}: not an image of the data" for name in seen if name not in known and name != empty_tar
    ]
    return sum(seen[name] == 1 for name in images), problems


def copies_found(planted: list[list[str]], found: list[tuple[str, str]]) -> tuple[float, float, int, int]:
    """(recall, precision, planted pairs found, pairs found): a found pair is right when it
    is a planted pair, either way round."""
    truth = {frozenset(pair) for pair in planted}
    pairs = {frozenset(pair) for pair in found}
    hits = len(truth & pairs)
    return hits / max(1, len(truth)), hits / max(1, len(pairs)), hits, len(pairs)


def tar_samples(data: bytes) -> dict[str, list[str]]:
    """key -> extensions of one tar's members, in order (a key written twice shows twice)."""
    samples: dict[str, list[str]] = defaultdict(list)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive:
            key, _, extension = member.name.partition(".")
            samples[key].append(extension)
    return samples


def deduplicated_problems(shards: dict[str, bytes], expected: set[str]) -> tuple[int, list[str]]:
    """(samples written, problems) of dedup's webdataset copies: each expected image
    ('00003.tar/000003017.jpg') once, with its .txt and .json, and nothing else."""
    written, problems = set(), []
    for tar, data in shards.items():
        for key, extensions in tar_samples(data).items():
            name = f"{tar}/{key}.jpg"
            if sorted(extensions) != ["jpg", "json", "txt"]:
                problems.append(f"{name}: members {sorted(extensions)}")
            written.add(name)
    problems += [f"{name}: kept but not written" for name in sorted(expected - written)]
    problems += [f"{name}: written but not kept" for name in sorted(written - expected)]
    return len(written), problems


class PeakMemory:
    """Samples, every ``interval`` s, the RSS of every process below the cluster's own
    (those whose command line names its temp dir): the job driver, Ray's workers, and the
    rest (raylets, GCS, dashboard: the head's own needs). Peaks are kept per phase."""

    def __init__(self, marker: str, interval: float = 0.5) -> None:
        self.marker, self.interval = marker, interval
        self.phase, self.peaks = "setup", defaultdict(lambda: {"driver": 0, "worker": 0, "ray": 0})
        self.worker_name: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _processes(self):
        import psutil

        roots = [
            p for p in psutil.process_iter(["cmdline"]) if self.marker in " ".join(p.info["cmdline"] or [])
        ]
        seen = {}
        for root in roots:
            try:
                for process in [root, *root.children(recursive=True)]:
                    seen[process.pid] = process
            except psutil.Error:
                continue
        return seen.values()

    def sample(self) -> None:
        import psutil

        peaks, ray_total = self.peaks[self.phase], 0
        for process in self._processes():
            try:
                command, rss = " ".join(process.cmdline()), process.memory_info().rss
            except psutil.Error:
                continue
            if "fastdup_ray" in command and not command.startswith("ray::"):
                peaks["driver"] = max(peaks["driver"], rss)
            elif command.startswith("ray::") and "JobSupervisor" not in command:
                if rss > peaks["worker"]:
                    peaks["worker"], self.worker_name[self.phase] = rss, command.split()[0]
            else:
                ray_total += rss
        peaks["ray"] = max(peaks["ray"], ray_total)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a process ending mid-sample; the next sample counts
                pass
            time.sleep(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

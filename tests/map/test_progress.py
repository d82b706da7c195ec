"""Progress: a bar on a terminal, a log line every few seconds elsewhere."""

from __future__ import annotations

import io
import logging

from fastdup_ray.map.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines_when_not_a_terminal(caplog):
    with caplog.at_level(logging.INFO, logger="fastdup_ray"):
        progress = Progress(shards=2, skipped=1, images=10, stream=io.StringIO(), log_every=0)
        progress.images(5)
        progress.shard_done()
        progress.close()
    lines = [r.message for r in caplog.records]
    assert (
        lines[0].startswith("images 5/10 (50%), ")
        and "img/s, ETA" in lines[0]
        and lines[0].endswith("shards 0/2 (1 skipped)")
    )
    assert lines[-1].endswith("shards 1/2 (1 skipped)")


def test_unknown_total_shows_counts_without_eta(caplog):
    progress = Progress(shards=3, skipped=0, images=None, stream=io.StringIO(), log_every=3600)
    progress.images(7)
    assert progress.line().startswith("images 7, ") and "ETA" not in progress.line()


def test_a_terminal_gets_a_bar():
    screen = Terminal()
    progress = Progress(shards=1, skipped=0, images=4, stream=screen)
    progress.images(4)
    progress.shard_done()
    progress.close()
    text = screen.getvalue()
    assert "4/4" in text and "img/s" in text and "shards 1/1" in text

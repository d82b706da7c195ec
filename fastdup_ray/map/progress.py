"""Progress you can watch: images done (of how many, where the listing knows), img/s,
ETA, shards done and skipped. A terminal gets a tqdm bar; anything else (a log file,
``ray job submit`` logs) gets one log line every few seconds."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("fastdup_ray")
LOG_EVERY_SECONDS = 5.0


class Progress:
    def __init__(
        self, shards: int, skipped: int, images: int | None, stream=None, log_every: float = LOG_EVERY_SECONDS
    ) -> None:
        """``shards`` to extract in this run, ``skipped`` already finished, ``images`` the
        run's total where the listing knows it (loose files), else None (archives)."""
        self.shards, self.skipped, self.total = shards, skipped, images
        self.done_images = self.done_shards = 0
        self.start = self.last_line = time.monotonic()
        self.log_every = log_every
        stream = stream if stream is not None else sys.stderr
        self.bar = None
        if stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=images, unit="img", desc="extract", file=stream, dynamic_ncols=True, smoothing=0.1
            )
            self._postfix()

    def _postfix(self) -> None:
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        self.bar.set_postfix_str(f"shards {self.done_shards}/{self.shards}{skipped}", refresh=False)

    def images(self, count: int) -> None:
        self.done_images += count
        if self.bar is not None:
            self.bar.update(count)
        elif time.monotonic() - self.last_line >= self.log_every:
            self.last_line = time.monotonic()
            log.info("%s", self.line())

    def shard_done(self) -> None:
        self.done_shards += 1
        if self.bar is not None:
            self._postfix()
            self.bar.refresh()

    def line(self) -> str:
        """``images 1200/5000 (24%), 412 img/s, ETA 9s, shards 1/5 (2 skipped)``."""
        elapsed = max(1e-9, time.monotonic() - self.start)
        rate = self.done_images / elapsed
        if self.total:
            left = max(0, self.total - self.done_images)
            eta = f", ETA {left / rate:.0f}s" if rate > 0 else ""
            images = f"images {self.done_images}/{self.total} ({100 * self.done_images / self.total:.0f}%)"
        else:
            images, eta = f"images {self.done_images}", ""
        skipped = f" ({self.skipped} skipped)" if self.skipped else ""
        return f"{images}, {rate:.0f} img/s{eta}, shards {self.done_shards}/{self.shards}{skipped}"

    def close(self) -> None:
        """The bar's last state, or one closing line in a log."""
        if self.bar is not None:
            self.bar.close()
        else:
            log.info("%s", self.line())

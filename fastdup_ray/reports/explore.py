"""``fd.explore()``: the run's index page and galleries served on a local port by the
standard library's ThreadingHTTPServer (bound to 127.0.0.1 only), built first when they
are missing. fastdup opens its hosted explorer here; this tool serves what it wrote.

The server runs on a daemon thread and the call returns a handle (``.url``, ``.stop()``,
a context manager) in a notebook, so the cell returns; in a script it serves until Ctrl-C.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fastdup_ray.errors import ConfigError
from fastdup_ray.reports.overview import INDEX_PAGE, create_galleries
from fastdup_ray.reports.vis import gallery_folder, in_notebook

log = logging.getLogger("fastdup_ray")

LOOPBACK = "127.0.0.1"  # never another interface: the pages name the run's files


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves one folder; its request lines go to the package log at debug level, not stderr."""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("explore: " + format, *args)


class ExploreServer:
    """A running explore server: ``url`` to open, ``stop()`` (or leave a ``with`` block) to
    close its port."""

    def __init__(self, folder: Path, port: int = 0) -> None:
        handler = functools.partial(QuietHandler, directory=str(folder))
        try:
            self._server = ThreadingHTTPServer((LOOPBACK, port), handler)
        except OSError as exc:
            raise ConfigError(f"port {port} cannot be used for explore: {exc.strerror or exc}") from None
        self._server.daemon_threads = True
        self.folder = folder
        self.port = int(self._server.server_address[1])
        self.url = f"http://{LOOPBACK}:{self.port}/{INDEX_PAGE}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fastdup-explore", daemon=True
        )
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop serving and close the port (again: nothing)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def wait(self) -> None:
        """Serve until Ctrl-C, then stop."""
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> ExploreServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ExploreServer({self.url!r}, running={self.running})"


def has_display() -> bool:
    """Whether a browser can be shown here: not under CI, and a desktop (macOS, Windows, or
    an X11 / Wayland display)."""
    if os.environ.get("CI"):
        return False
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def explore(
    work_dir: str | os.PathLike,
    input_dir=None,
    dataset_name: str | None = None,
    overwrite: bool = False,
    verbose: bool = False,
    port: int = 0,
    open_browser: bool | None = None,
    block: bool | None = None,
    save_path: str | os.PathLike | None = None,
) -> ExploreServer:
    """Serve the galleries of the run in ``work_dir`` (``save_path``, default
    ``<work_dir>/galleries``; built when index.html is missing, rebuilt with ``overwrite``)
    on http://127.0.0.1:<port>/ (0: a free port). ``open_browser`` (default: where there is
    a display) opens the page; ``block`` (default: outside a notebook) serves until Ctrl-C.
    ``input_dir`` and ``dataset_name`` are fastdup's and unused: the run's outputs hold all."""
    del input_dir, dataset_name, verbose
    work_dir = os.fspath(work_dir)
    folder = gallery_folder(work_dir, save_path)
    if overwrite or not (folder / INDEX_PAGE).is_file():
        create_galleries(work_dir, folder)
    server = ExploreServer(folder, port)
    # The URL is what the call is for: shown whether or not logging is set up.
    print(f"fastdup_ray explore: serving {folder} at {server.url} (Ctrl-C or .stop() to stop)")
    if open_browser if open_browser is not None else has_display():
        import webbrowser

        try:
            webbrowser.open(server.url)
        except webbrowser.Error as exc:
            log.warning("explore: could not open a browser (%s); open %s", exc, server.url)
    if block if block is not None else not in_notebook():
        server.wait()
    return server

"""fd.explore(): the run's index page and galleries served on 127.0.0.1, opened in
headless Chromium; after stop() the port is closed."""

from __future__ import annotations

import socket
import threading
import time

import pytest

import fastdup_ray
from fastdup_ray.errors import ConfigError
from fastdup_ray.reports import explore as explore_module
from fastdup_ray.sample import jpeg_bytes, make_scene, near_duplicate

LOCAL = {"executor": "local", "num_threads": 2, "k": 3}


@pytest.fixture(scope="module")
def explored_run(tmp_path_factory):
    """Four scenes and a near copy of one, run to the end, galleries not yet built."""
    root = tmp_path_factory.mktemp("explore")
    images = root / "images"
    images.mkdir()
    for i in range(4):
        (images / f"scene_{i}.jpg").write_bytes(jpeg_bytes(make_scene(700 + i, material=i)))
    (images / "copy_of_1.jpg").write_bytes(jpeg_bytes(near_duplicate(make_scene(701, material=1), 0)))
    work = root / "work"
    fastdup_ray.run(str(images), str(work), **LOCAL)
    return work


def port_is_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_explore_serves_the_index_and_galleries_to_a_browser_then_closes_its_port(
    explored_run, chromium, capsys
):
    fd = fastdup_ray.create(explored_run)
    assert not (explored_run / "galleries" / "index.html").exists()
    server = fd.explore(open_browser=False, block=False)
    assert (explored_run / "galleries" / "index.html").is_file()  # built because it was missing
    assert (
        server.url == f"http://127.0.0.1:{server.port}/index.html" and server.url in capsys.readouterr().out
    )
    page = chromium.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    assert page.goto(server.url).status == 200
    assert "Duplicates" in page.inner_text("body")
    page.click("a[href='duplicates.html']")
    page.wait_for_load_state("load")
    assert page.url == f"http://127.0.0.1:{server.port}/duplicates.html"
    assert "copy_of_1.jpg" in page.inner_text("body")
    widths = page.evaluate("Array.from(document.images).map(img => img.complete ? img.naturalWidth : 0)")
    assert widths and all(width > 0 for width in widths), widths
    page.close()
    assert errors == []
    server.stop()
    assert not server.running and not port_is_open(server.port)
    server.stop()  # a second stop does nothing


def test_explore_as_a_context_manager_on_a_given_port_opens_the_browser_where_asked(
    explored_run, monkeypatch
):
    opened = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with fastdup_ray.explore(explored_run, port=port, open_browser=True, block=False) as server:
        assert server.port == port and port_is_open(port) and opened == [server.url]
        with pytest.raises(ConfigError, match=f"port {port} cannot be used"):
            fastdup_ray.explore(explored_run, port=port, open_browser=False, block=False)
    assert not port_is_open(port)


def test_explore_blocks_outside_a_notebook_until_interrupted(explored_run, monkeypatch):
    started = []
    real_init = explore_module.ExploreServer.__init__

    def remember(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        started.append(self)

    monkeypatch.setattr(explore_module.ExploreServer, "__init__", remember)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("webbrowser.open", lambda url: pytest.fail("no display: no browser"))
    done = []
    caller = threading.Thread(target=lambda: done.append(fastdup_ray.explore(explored_run)), daemon=True)
    caller.start()
    deadline = time.time() + 20
    while not started and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert started and caller.is_alive() and port_is_open(started[0].port)  # still serving
    started[0].stop()  # what Ctrl-C ends in
    caller.join(10)
    assert done and not done[0].running and not port_is_open(started[0].port)

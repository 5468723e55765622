"""The jupyter route in a real JupyterLab and Chromium, as on a hub (issue 12).

JupyterLab runs under ``--ServerApp.base_url=/user/alice/`` with the livewidget server extension, and
the page is opened at ``http://lab.test:PORT/user/alice/`` (Chromium maps ``lab.test`` to 127.0.0.1,
``CHROMIUM_ARGS``): a hostname that is not loopback, so the kernel's loopback Pusher server must not be
tried directly. The Feed must come live through ``/user/alice/livewidget/...`` while a cell runs, its
header must say ``jupyter``, a private channel must be signed by the kernel through the extension
(``/user/alice/livewidget/auth/...``) while the cell runs, the kernel must learn the route
(``feed.route``), and the page must never open a WebSocket (or any request) to the Pusher server's own
port, or to anything on 127.0.0.1. Opened at http://127.0.0.1 instead (a local Jupyter), the direct
route is taken, unless the kernel forces ``jupyter`` with ``livewidget.connect(route=...)``.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pusher
import pytest

from livewidget.server import LocalServer

from .conftest import PAGE_HOST, JupyterLab, NotebookPage, hub_like_lab, wait_until, write_notebook
from .test_feed_e2e import subscribers, wait_row

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BASE_URL = "/user/alice/"
SLEEP = 12  # s the busy cell sleeps; the route must be confirmed and the events shown within it
FEED = ".jp-NotebookPanel:visible .lw-feed"


@pytest.fixture(scope="module")
def alice_lab(
    chromium: Any, artifacts: Any, pusher_server: LocalServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JupyterLab]:
    extensions = {"livewidget.jupyter": True}
    with hub_like_lab(pusher_server, tmp_path_factory.mktemp("alice-lab"), extensions) as lab:
        yield lab


def test_feed_is_live_through_the_jupyter_route_from_a_remote_hostname(
    alice_lab: JupyterLab, browser: Any, sdk: pusher.Pusher, pusher_server: LocalServer, frontend: str
) -> None:
    mark = f"route-{uuid.uuid4().hex[:8]}"
    channel = f"route-news-{mark}"
    name = write_notebook(
        alice_lab.root,
        "route_feed.ipynb",
        [
            "import json, time\nimport livewidget\n"
            f'feed = livewidget.Feed(["{channel}", "private-{channel}"])\nfeed',
            f'print("SLEEPING", flush=True)\ntime.sleep({SLEEP})\nprint("WOKE")',
        ],
    )
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    sockets: list[str] = []
    try:
        page = context.new_page()
        page.on("websocket", lambda ws: sockets.append(ws.url))
        nb = NotebookPage(alice_lab, page, name)
        try:
            _check_live_through_jupyter(nb, sdk, pusher_server, channel, mark, sockets)
        except BaseException:
            nb.save_failure_artifacts("route-jupyter")
            raise
    finally:
        with contextlib.suppress(Exception):
            context.close()
        with contextlib.suppress(Exception):
            alice_lab.shutdown_notebook_kernel(name)


def _check_live_through_jupyter(
    nb: NotebookPage, sdk: pusher.Pusher, server: LocalServer, channel: str, mark: str, sockets: list[str]
) -> None:
    nb.open()
    assert nb.page.url.startswith(f"http://{PAGE_HOST}:{nb.lab.port}{BASE_URL}"), nb.page.url
    nb.run_all()
    nb.widget(".lw-feed", timeout=30)
    nb.wait_output(1, "SLEEPING", timeout=30)
    slept_at = time.monotonic()

    # The route is confirmed (connected through the extension) while the kernel is busy.
    label = nb.page.locator(f'{FEED} .lw-route[data-route="jupyter"]').first
    label.wait_for(state="visible", timeout=10_000)
    assert label.inner_text().strip() == "jupyter"
    nb.page.locator(f'{FEED} .lw-state[data-state="connected"]').wait_for(state="visible", timeout=10_000)
    wait_until(lambda: subscribers(sdk, channel) >= 2, 8, "the browser to subscribe through the route")
    # the private channel is signed by the kernel through the extension, while the cell runs
    wait_until(lambda: subscribers(sdk, f"private-{channel}") >= 2, 8, "the browser's private subscription")

    for n in range(3):
        sdk.trigger([channel], "headline", {"marker": mark, "n": n})
    sdk.trigger([f"private-{channel}"], "deploy", {"marker": mark, "n": 9})
    for n in range(3):
        wait_row(nb, channel, "headline", f'"n":{n}')
    wait_row(nb, f"private-{channel}", "deploy", '"n":9')
    signed = [r for r in nb.requests if r.method == "POST" and f"{BASE_URL}livewidget/auth/" in r.url]
    assert signed and signed[-1].response().status == 200, [r.url for r in nb.requests if r.method == "POST"]
    assert nb.is_running(1), f"the cell should still run: {nb.cell_state(1)}"
    assert time.monotonic() - slept_at < SLEEP
    nb.screenshot("route-jupyter-feed", FEED)

    # The kernel learns the route once the cell ends (browser-to-kernel messages wait for it).
    nb.wait_cell_done(1, timeout=SLEEP + 30)
    route = wait_until(
        lambda: nb.kernel_json("print(json.dumps(feed.route))") or None, 15, "feed.route in the kernel"
    )
    assert route == "jupyter"

    # Every WebSocket of the page went to the Jupyter server; none to the Pusher server's own port.
    pusher_port = f":{server.port}"
    assert any(f"{PAGE_HOST}:{nb.lab.port}{BASE_URL}livewidget/" in url for url in sockets), sockets
    assert not [url for url in sockets if pusher_port in url], sockets
    assert all(url.startswith(f"ws://{PAGE_HOST}:{nb.lab.port}/") for url in sockets), sockets
    assert not [r.url for r in nb.requests if pusher_port in r.url or "127.0.0.1" in r.url]
    leaks = nb.secret_leaks(server.secret)
    assert not leaks, leaks


def test_a_loopback_page_goes_direct_unless_the_kernel_forces_the_jupyter_route(
    alice_lab: JupyterLab, browser: Any, sdk: pusher.Pusher, pusher_server: LocalServer, frontend: str
) -> None:
    """The same lab opened at http://127.0.0.1 (a local Jupyter): ``direct`` is tried first and taken;
    a Feed created after ``livewidget.connect(route="jupyter")`` goes through the extension instead."""
    mark = uuid.uuid4().hex[:8]
    name = write_notebook(
        alice_lab.root,
        "route_local.ipynb",
        [
            f'import json\nimport livewidget\nfeed_a = livewidget.Feed("local-a-{mark}")\nfeed_a',
            f'livewidget.connect(route="jupyter")\nfeed_b = livewidget.Feed("local-b-{mark}")\nfeed_b',
        ],
    )
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    sockets: list[str] = []
    page_url = alice_lab.page_url
    alice_lab.page_url = alice_lab.url  # http://127.0.0.1:PORT/user/alice
    try:
        page = context.new_page()
        page.on("websocket", lambda ws: sockets.append(ws.url))
        nb = NotebookPage(alice_lab, page, name)
        try:
            nb.open()
            nb.run_all()
            routes = nb.page.locator(".jp-NotebookPanel:visible .lw-feed .lw-route")
            wait_until(
                lambda: routes.count() == 2 and routes.nth(1).inner_text().strip() == "jupyter",
                30,
                "2 routes",
            )
            assert routes.nth(0).inner_text().strip() == "direct"
            assert routes.nth(0).get_attribute("data-route") == "direct"
            for channel in (f"local-a-{mark}", f"local-b-{mark}"):
                wait_until(lambda ch=channel: subscribers(sdk, ch) >= 2, 10, f"the browser on {channel}")
                sdk.trigger([channel], "ping", {"mark": mark})
                wait_row(nb, channel, "ping", mark)
            wait_until(
                lambda: (
                    nb.kernel_json("print(json.dumps([feed_a.route, feed_b.route]))") == ["direct", "jupyter"]
                ),
                15,
                "the kernel to learn both routes",
            )
            assert any(f"127.0.0.1:{pusher_server.port}/app/" in url for url in sockets), sockets
            assert any(f"{BASE_URL}livewidget/" in url for url in sockets), sockets
        except BaseException:
            nb.save_failure_artifacts("route-local")
            raise
    finally:
        alice_lab.page_url = page_url
        with contextlib.suppress(Exception):
            context.close()
        with contextlib.suppress(Exception):
            alice_lab.shutdown_notebook_kernel(name)

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

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pusher
import pytest

from livewidget.server import LocalServer

from .conftest import (
    PAGE_HOST,
    JupyterLab,
    NotebookPage,
    hub_like_lab,
    notebook_page,
    sleeping_cell,
    wait_until,
    write_notebook,
)
from .test_feed_e2e import rows, subscribers, wait_row

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
            sleeping_cell(SLEEP),
        ],
    )
    with notebook_page(alice_lab, browser, name, "route-jupyter") as (nb, sockets):
        _check_live_through_jupyter(nb, sdk, pusher_server, channel, mark, sockets)


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
    with notebook_page(alice_lab, browser, name, "route-local", local=True) as (nb, sockets):
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


BUSY_EVENTS = 300  # published by the busy cell at ~20 a second: ~15 s
LIVEWIDGET_SOCKET = re.compile(r"/user/alice/livewidget/[^/]+/app/")


def test_a_route_failing_while_a_cell_runs_falls_back_to_the_relay_and_stays_live(
    alice_lab: JupyterLab, browser: Any, pusher_server: LocalServer, frontend: str
) -> None:
    """The Feed is on ``jupyter`` and the kernel knows it (so it no longer relays it); then a cell
    publishes ~20 events/s for ~15 s and, midway, the page's livewidget WebSocket breaks (closed, and
    every reconnection refused, by Playwright's WebSocket routing). The browser's request to be relayed
    waits for the cell, so the view must go on from the kernel's standby relay: it says ``relay`` and
    keeps updating before the cell ends, and at the end it shows every event exactly once."""
    mark = f"busy-{uuid.uuid4().hex[:8]}"
    channel = f"busy-news-{mark}"
    name = write_notebook(
        alice_lab.root,
        "route_busy.ipynb",
        [
            f'import json, time\nimport livewidget\nfeed = livewidget.Feed("{channel}", max_log=1000)\nfeed',
            'print("PUBLISHING", flush=True)\n'
            f"for n in range({BUSY_EVENTS}):\n"
            f'    feed.send("tick", {{"marker": "{mark}", "n": n}})\n'
            "    time.sleep(0.05)\n"
            'print("DONE")',
        ],
    )
    routed: list[Any] = []  # the page's livewidget WebSockets (through the Jupyter extension)
    seen: set[int] = set()  # every event the Feed showed at some point (its DOM keeps the newest 200)
    broken = False

    def route(ws: Any) -> None:
        if broken:  # the route is down: every reconnection is closed at once
            ws.close()
            return
        ws.connect_to_server()  # forwarded both ways, untouched
        routed.append(ws)

    with notebook_page(alice_lab, browser, name, "route-busy") as (nb, _):
        nb.page.route_web_socket(LIVEWIDGET_SOCKET, route)
        nb.open()
        _run_cell(nb, 0)
        nb.widget(".lw-feed", timeout=30)
        label = nb.page.locator(f"{FEED} .lw-route").first
        wait_until(lambda: label.get_attribute("data-route") == "jupyter", 20, "the jupyter route")
        wait_until(
            lambda: nb.kernel_json("print(json.dumps(feed.route))") == "jupyter",
            15,
            "the kernel to learn the route (it relays the Feed no more)",
        )
        assert routed, "the Feed's socket was not routed through the test"

        _run_cell(nb, 1)
        nb.wait_output(1, "PUBLISHING", timeout=30)
        wait_until(lambda: len(_shown(nb, mark, seen)) >= 60, 15, "events through the jupyter route")
        assert label.get_attribute("data-route") == "jupyter"
        broken = True
        for ws in routed:
            ws.close()  # the page's side: pusher-js sees its socket closed, and retries in vain
        broke_at = max(_shown(nb, mark, seen))

        wait_until(lambda: label.get_attribute("data-route") == "relay", 10, "the fallback to relay")
        assert nb.is_running(1), "the fallback came only after the cell"
        wait_until(lambda: max(_shown(nb, mark, seen)) >= broke_at + 40, 8, "the Feed to update on the relay")
        assert nb.is_running(1), f"the Feed updated only once the cell ended: {nb.cell_state(1)}"
        nb.page.locator(f'{FEED} .lw-state[data-state="connected"]').wait_for(state="visible", timeout=5000)
        nb.screenshot("route-busy-fallback", FEED)

        # until the cell ends, watch every row go by (seen)
        wait_until(lambda: _shown(nb, mark, seen) and not nb.is_running(1), 60, "the cell's end")
        nb.wait_cell_done(1, timeout=30)
        count = nb.page.locator(f"{FEED} .lw-count").first
        wait_until(lambda: int(count.inner_text()) >= BUSY_EVENTS, 20, "every event shown")
        nb.page.wait_for_timeout(2500)  # a late duplicate (relay, kernel history) would show by now
        shown = _shown(nb, mark, seen)
        # the view keeps its newest MAX_DOM_ROWS (200) rows in the DOM; `seen` gathered the earlier
        # ones while they were there, and the view's own count says no row came twice
        assert shown == list(range(BUSY_EVENTS - len(shown), BUSY_EVENTS)), shown
        missing = sorted(set(range(BUSY_EVENTS)) - seen)
        assert not missing, f"never shown: {missing[:40]} (broke after {broke_at})"
        assert int(count.inner_text()) == BUSY_EVENTS, "an event was shown twice"
        wait_until(
            lambda: nb.kernel_json("print(json.dumps(feed.route))") == "relay",
            15,
            "the kernel to learn the fallback",
        )


def _run_cell(nb: NotebookPage, index: int) -> None:
    """Run cell ``index`` alone (JupyterLab's run-cell on it), returning at once."""
    nb.evaluate_panel("panel.activate(); panel.content.activeCellIndex = arg;", index)
    nb.command("notebook:run-cell")


def _shown(nb: NotebookPage, mark: str, seen: set[int]) -> list[int]:
    """The ``n`` of every row of this test's events the Feed shows, oldest first; added to ``seen``.
    No snapshot may show an event twice."""
    found = [
        int(m.group(1))
        for row in rows(nb)
        if mark in row["data"]
        for m in [re.search(r'"n":\s*(\d+)', row["data"])]
        if m
    ]
    assert len(found) == len(set(found)), f"shown twice: {sorted(n for n in found if found.count(n) > 1)}"
    seen.update(found)
    return sorted(found)

"""The relay route in a real JupyterLab and Chromium (issue 12): through the kernel's comm.

JupyterLab runs under ``--ServerApp.base_url=/user/alice/`` **without** the livewidget server extension
(and without jupyter-server-proxy), and the page is opened at ``http://lab.test:PORT/user/alice/``
(Chromium maps ``lab.test`` to 127.0.0.1): a remote-looking page that cannot reach the kernel's loopback
Pusher server, with no same-origin route either, as a Jupyter server without the extension on a hub.
The Feed must fall back to ``relay`` by itself and update while a cell runs (kernel-to-browser comm
messages flow during a busy cell), the page must open no WebSocket but Jupyter's own kernel channels,
and the kernel must learn the route. Opened at http://127.0.0.1 (where ``direct`` would work), a
kernel that forces ``livewidget.connect(route="relay")`` gets the relay all the same.
"""

from __future__ import annotations

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
from .test_feed_e2e import subscribers, wait_row

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BASE_URL = "/user/alice/"
SLEEP = 25  # s the busy cell sleeps: the jupyter routes fail (up to ROUTE_TRIAL_MS), then the relay
FEED = ".jp-NotebookPanel:visible .lw-feed"


@pytest.fixture(scope="module")
def bare_lab(
    chromium: Any, artifacts: Any, pusher_server: LocalServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JupyterLab]:
    extensions = {"livewidget.jupyter": False, "jupyter_server_proxy": False}
    with hub_like_lab(pusher_server, tmp_path_factory.mktemp("bare-lab"), extensions) as lab:
        yield lab


def _kernel_sockets_only(nb: NotebookPage, sockets: list[str], server: LocalServer, tried: str = "") -> None:
    """The page's WebSockets: Jupyter's own (and the same-origin routes it tried first, ``tried``)."""
    assert sockets, "the page opened no WebSocket at all"
    origin = nb.page.url.split(BASE_URL)[0].split("://")[1]
    allowed = (f"{BASE_URL}api/", *((f"{BASE_URL}{tried}",) if tried else ()))
    assert all(url.split("://")[1].startswith(f"{origin}{BASE_URL}") for url in sockets), sockets
    assert all(any(a in url for a in allowed) for url in sockets), sockets
    assert not [url for url in sockets if f":{server.port}" in url], sockets
    assert not [r.url for r in nb.requests if f":{server.port}" in r.url]
    leaks = nb.secret_leaks(server.secret)
    assert not leaks, leaks


def test_without_the_extension_the_feed_goes_relay_and_is_live_while_a_cell_runs(
    bare_lab: JupyterLab, browser: Any, sdk: pusher.Pusher, pusher_server: LocalServer, frontend: str
) -> None:
    mark = f"relay-{uuid.uuid4().hex[:8]}"
    channel = f"relay-news-{mark}"
    name = write_notebook(
        bare_lab.root,
        "relay_feed.ipynb",
        [
            "import json, time\nimport livewidget\n"
            f'feed = livewidget.Feed(["{channel}", "private-{channel}"])\nfeed',
            sleeping_cell(SLEEP),
        ],
    )
    with notebook_page(bare_lab, browser, name, "relay-auto") as (nb, sockets):
        nb.open()
        assert nb.page.url.startswith(f"http://{PAGE_HOST}:{bare_lab.port}{BASE_URL}"), nb.page.url
        nb.run_all()
        nb.widget(".lw-feed", timeout=30)
        nb.wait_output(1, "SLEEPING", timeout=30)
        slept_at = time.monotonic()
        # the kernel's receiver is the only subscriber: the browser reaches nothing but Jupyter
        wait_until(lambda: subscribers(sdk, channel) >= 1, 10, "the kernel's subscription")
        label = nb.page.locator(f'{FEED} .lw-route[data-route="relay"]').first
        label.wait_for(state="visible", timeout=(SLEEP - 8) * 1000)
        assert label.inner_text().strip() == "relay"
        nb.page.locator(f'{FEED} .lw-state[data-state="connected"]').wait_for(state="visible", timeout=5000)
        assert subscribers(sdk, channel) == 1
        for n in range(3):
            sdk.trigger([channel], "headline", {"marker": mark, "n": n})
        sdk.trigger([f"private-{channel}"], "deploy", {"marker": mark, "n": 9})
        for n in range(3):
            wait_row(nb, channel, "headline", f'"n":{n}', timeout=5)
        wait_row(nb, f"private-{channel}", "deploy", '"n":9', timeout=5)
        assert nb.is_running(1), f"the cell should still run: {nb.cell_state(1)}"
        assert time.monotonic() - slept_at < SLEEP
        nb.screenshot("relay-feed", FEED)

        nb.wait_cell_done(1, timeout=SLEEP + 30)
        route = wait_until(
            lambda: nb.kernel_json("print(json.dumps(feed.route))") or None,
            15,
            "feed.route in the kernel",
        )
        assert route == "relay"
        # jupyter-server-proxy's route was tried (same origin) and failed: no proxy on this server
        _kernel_sockets_only(nb, sockets, pusher_server, tried="proxy/")


def test_a_forced_relay_is_taken_even_where_direct_would_work(
    bare_lab: JupyterLab, browser: Any, sdk: pusher.Pusher, pusher_server: LocalServer, frontend: str
) -> None:
    mark = uuid.uuid4().hex[:8]
    channel = f"relay-forced-{mark}"
    name = write_notebook(
        bare_lab.root,
        "relay_forced.ipynb",
        [
            'import json, time\nimport livewidget\nlivewidget.connect(route="relay")\n'
            f'feed = livewidget.Feed("{channel}")\nfeed',
            'print("SLEEPING", flush=True)\ntime.sleep(10)\nprint("WOKE")',
        ],
    )
    with notebook_page(bare_lab, browser, name, "relay-forced", local=True) as (nb, sockets):
        nb.open()
        nb.run_all()
        nb.widget(".lw-feed", timeout=30)
        nb.wait_output(1, "SLEEPING", timeout=30)
        label = nb.page.locator(f'{FEED} .lw-route[data-route="relay"]').first
        label.wait_for(state="visible", timeout=6000)  # no other route tried first
        sdk.trigger([channel], "ping", {"mark": mark})
        wait_row(nb, channel, "ping", mark, timeout=5)
        assert nb.is_running(1), f"the cell should still run: {nb.cell_state(1)}"
        assert subscribers(sdk, channel) == 1
        nb.wait_cell_done(1, timeout=40)
        wait_until(
            lambda: nb.kernel_json("print(json.dumps(feed.route))") == "relay",
            15,
            "feed.route in the kernel",
        )
        _kernel_sockets_only(nb, sockets, pusher_server)


def test_chat_on_the_relay_waits_for_the_kernel_with_a_note_and_loses_nothing(
    bare_lab: JupyterLab, browser: Any, pusher_server: LocalServer, frontend: str
) -> None:
    """A message typed while the kernel is busy goes through the kernel (the only route here): the
    header says it waits, and once the cell ends the kernel's connection sends it, in order."""
    from livewidget._config import resolve
    from livewidget.receiver import Receiver

    room = f"relay-{uuid.uuid4().hex[:6]}"
    channel = f"presence-chat-{room}"
    s = pusher_server
    heard: list[Any] = []
    other = Receiver(
        resolve(host=s.host, port=s.port, app_id=s.app_id, key=s.key, secret=s.secret),
        [channel],
        heard.append,
        user={"id": "bob", "info": {"name": "Bob"}},
    ).start()
    name = write_notebook(
        bare_lab.root,
        "relay_chat.ipynb",
        [
            "import time\nimport livewidget\n"
            f'chat = livewidget.Chat("{room}", user={{"id": "ann", "name": "Ann"}})\nchat',
            'print("SLEEPING", flush=True)\ntime.sleep(20)\nprint("WOKE")',
        ],
    )
    chat = ".jp-NotebookPanel:visible .lw-chat"
    try:
        with notebook_page(bare_lab, browser, name, "relay-chat") as (nb, _):
            nb.open()
            nb.run_all()
            nb.widget(".lw-chat", timeout=30)
            nb.wait_output(1, "SLEEPING", timeout=30)
            nb.page.locator(f'{chat} .lw-route[data-route="relay"]').first.wait_for(timeout=15_000)
            # Ann is online in her own view (present through her kernel), and sees Bob
            online = nb.page.locator(f"{chat} .lw-chat-members .lw-member")
            wait_until(
                lambda: (
                    online.evaluate_all("(els) => els.map((e) => e.getAttribute('data-user-id'))")
                    == ["ann", "bob"]
                ),
                15,
                "Ann and Bob online",
            )
            box = nb.page.locator(f"{chat} .lw-chat-input").first
            for text in ("first through the kernel", "second through the kernel"):
                box.fill(text)
                box.press("Enter")
            note = nb.page.locator(f"{chat} .lw-route-note").first
            note.wait_for(state="visible", timeout=5000)
            assert "sent through the kernel: done when it is idle" in note.inner_text()
            assert nb.is_running(1)
            assert not [e for e in heard if e.event == "client-chat-message"], "sent before the cell ended?"
            nb.screenshot("relay-chat-waiting", chat)
            nb.wait_cell_done(1, timeout=60)
            wait_until(
                lambda: len([e for e in heard if e.event == "client-chat-message"]) >= 2,
                20,
                "both messages from the kernel's connection",
            )
            said = [e.data.get("text") for e in heard if e.event == "client-chat-message"]
            assert said == ["first through the kernel", "second through the kernel"], said
            assert {e.user_id for e in heard if e.event == "client-chat-message"} == {"ann:kernel"}
            note.wait_for(state="hidden", timeout=10_000)
    finally:
        other.stop()

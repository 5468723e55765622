"""``Feed`` in a real JupyterLab and Chromium: live events while a cell runs, the record, reopening, errors.

The test publishes from outside (the official SDK) while the notebook sleeps in a cell: the browser's
own pusher-js connection shows the events at once, including a private channel signed by the kernel's
HTTP endpoint (comm messages would wait for the cell to end). Afterwards the kernel's record
(``feed.df``) must hold the same events, a page opened later must show them first, and no byte of
the app secret may reach the browser (checked for every page by the ``notebooks`` fixture, and in
depth by ``test_secret_never_reaches_the_browser``).

Screenshots (light and dark theme) go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pusher
import pytest

from livewidget.server import LocalServer

from .conftest import BUNDLE, NotebookPage, free_port, sleeping_cell, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SLEEP = 10  # s the busy cell sleeps; everything "live" must happen within it
FEED = ".jp-NotebookPanel:visible .lw-feed"


def subscribers(sdk: pusher.Pusher, channel: str) -> int:
    """Connections subscribed to ``channel`` on the server (the kernel's receiver counts as one)."""
    return int(sdk.channel_info(channel, ["subscription_count"]).get("subscription_count", 0))


def rows(nb: NotebookPage) -> list[dict[str, str]]:
    """The rows of the feed's log: ``{channel, event, data}``."""
    return list(
        nb.evaluate_panel(
            """
            return [...panel.node.querySelectorAll('.lw-feed .lw-log .lw-row')].map((r) => ({
                channel: r.dataset.channel, event: r.dataset.event,
                data: r.querySelector('.lw-data')?.textContent ?? ''}));
            """
        )
    )


def wait_row(nb: NotebookPage, channel: str, event: str, text: str, timeout: float = 10.0) -> Any:
    """Wait for a log row of ``channel``/``event`` whose ``.lw-data`` contains ``text``."""
    row = nb.page.locator(f'{FEED} .lw-log .lw-row[data-channel="{channel}"][data-event="{event}"]')
    locator = row.filter(has=nb.page.locator(".lw-data", has_text=text)).first
    locator.wait_for(state="attached", timeout=timeout * 1000)
    return locator


def data_state(nb: NotebookPage, selector: str) -> str | None:
    locator = nb.page.locator(f"{FEED} {selector}").first
    return locator.get_attribute("data-state") if locator.count() else None


def latest_t(nb: NotebookPage) -> float:
    """The newest event's receive time (ms since the epoch) from the root's ``data-latest-t``; 0 if none."""
    value = nb.page.locator(FEED).first.get_attribute("data-latest-t")
    return float(value) if value else 0.0


def number(text: str) -> float:
    digits = "".join(c for c in text if c.isdigit() or c == ".")
    return float(digits) if digits.strip(".") else -1.0


def test_feed_is_live_while_a_cell_runs_then_recorded_and_replayed(
    notebooks: Any, sdk: pusher.Pusher, pusher_server: LocalServer, frontend: str
) -> None:
    mark = f"e2e-{uuid.uuid4().hex[:8]}"
    nb = notebooks(
        "feed_live.ipynb",
        [
            'import json, time\nimport livewidget\nfeed = livewidget.Feed(["news", "private-ops"])\nfeed',
            sleeping_cell(SLEEP),
        ],
    )
    nb.run_all()
    nb.widget(".lw-feed", timeout=30)
    nb.wait_output(1, "SLEEPING", timeout=30)
    slept_at = time.monotonic()
    assert nb.is_running(1), f"the sleeping cell should be running: {nb.cell_state(1)}"

    # The browser subscribes to both channels while the kernel is busy (kernel receiver + browser = 2);
    # the private one is signed by the kernel's HTTP endpoint, since comm messages wait for the cell.
    nb.page.locator(f'{FEED} .lw-state[data-state="connected"]').wait_for(state="visible", timeout=10_000)
    for channel in ("news", "private-ops"):
        wait_until(lambda ch=channel: subscribers(sdk, ch) >= 2, 8, f"the browser to subscribe to {channel}")

    sdk.trigger(["news"], "headline", {"marker": mark, "n": 1, "meta": {"src": "e2e"}})
    sdk.trigger(["private-ops"], "deploy", {"marker": mark, "n": 2, "meta": {"src": "e2e"}})
    news = wait_row(nb, "news", "headline", mark)
    private = wait_row(nb, "private-ops", "deploy", mark)
    during = nb.cell_state(1)
    elapsed = time.monotonic() - slept_at
    # (not the kernel's status: with comms over subshells, a subshell's `idle` shows while the cell runs)
    assert during["prompt"] == "[*]:" and during["count"] is None, f"cell finished too early: {during}"
    assert during["executionState"] in ("running", None), during
    assert elapsed < SLEEP, f"events shown {elapsed:.1f} s into a {SLEEP} s cell"
    assert private.is_visible() and news.is_visible()
    assert abs(latest_t(nb) / 1000 - time.time()) < 5, "data-latest-t should be the newest event's time"

    auth = [
        r
        for r in nb.requests
        if r.method == "POST" and "private-ops" in (r.post_data or "") and f":{nb.lab.port}/" not in r.url
    ]
    assert auth, "the browser should have asked the kernel's endpoint to sign private-ops"
    answer = auth[-1].response()
    assert answer is not None and answer.status == 200, f"auth endpoint answered {answer and answer.status}"
    assert json.loads(answer.text())["auth"].startswith(pusher_server.key + ":")

    # Status hooks while live.
    assert data_state(nb, ".lw-state") == "connected"
    wait_until(lambda: data_state(nb, ".lw-kernel-status") == "connected", 5, "the kernel status")
    wait_until(
        lambda: number(nb.page.locator(f"{FEED} .lw-count").first.inner_text()) >= 2, 5, ".lw-count >= 2"
    )
    assert nb.page.locator(f"{FEED} .lw-rate").first.is_visible()
    error = nb.page.locator(f"{FEED} .lw-error").first
    assert not error.count() or not error.is_visible() or not error.inner_text().strip()
    nb.screenshot("feed-live-light")
    nb.screenshot("feed-live-light-widget", FEED)

    # The kernel recorded the same events, once each, with the data flattened into columns.
    nb.wait_cell_done(1, timeout=SLEEP + 30)
    assert "WOKE" in nb.output_text(1)
    record = nb.kernel_json(
        "df = feed.df\n"
        "print(json.dumps({'len': len(df), 'columns': list(df.columns),\n"
        "    'rows': df[['channel', 'event', 'marker', 'n', 'meta.src']].astype(str).values.tolist()}))"
    )
    assert record["len"] == 2, record
    assert {"time", "channel", "event", "data", "marker", "n", "meta.src"} <= set(record["columns"]), record
    assert sorted(record["rows"]) == [
        ["news", "headline", mark, "1", "e2e"],
        ["private-ops", "deploy", mark, "2", "e2e"],
    ]

    # Reopened in a new page (same kernel): the history is shown before anything new is published,
    # then new events arrive live.
    nb.save()
    kernel = nb.kernel_id()
    again = notebooks("feed_live.ipynb")
    assert again.kernel_id() == kernel, "the reopened notebook should use the same kernel"
    again.widget(".lw-feed", timeout=30)
    wait_until(
        lambda: (
            {(r["channel"], r["event"]) for r in rows(again) if mark in r["data"]}
            >= {("news", "headline"), ("private-ops", "deploy")}
        ),
        10,
        "the history (2 rows) in the reopened page",
    )
    history_t = latest_t(again)
    assert history_t > 0
    again.page.locator(f'{FEED} .lw-state[data-state="connected"]').wait_for(state="visible", timeout=10_000)
    wait_until(lambda: subscribers(sdk, "news") >= 3, 8, "the second page to subscribe to news")
    sdk.trigger(["news"], "breaking", {"marker": mark, "n": 3})
    wait_row(again, "news", "breaking", mark)
    wait_row(nb, "news", "breaking", mark)  # the first page is still live too
    wait_until(lambda: latest_t(again) > history_t, 5, "data-latest-t to move to the live event")
    assert len([r for r in rows(again) if mark in r["data"]]) == 3
    assert again.kernel_json("print(json.dumps(len(feed.df)))") == 3

    again.screenshot("feed-reopened-light")
    again.screenshot("feed-reopened-light-widget", FEED)
    try:
        again.set_theme("JupyterLab Dark")
        again.screenshot("feed-reopened-dark")
        again.screenshot("feed-reopened-dark-widget", FEED)
    finally:
        again.set_theme("JupyterLab Light")

    # The filter narrows the log; a click on a row shows its whole data (nested object included).
    again.page.locator(f"{FEED} .lw-filter").first.fill("deploy")
    wait_until(
        lambda: [(r["channel"], r["event"]) for r in rows(again)] == [("private-ops", "deploy")], 5, "filter"
    )
    again.page.locator(f"{FEED} .lw-filter").first.fill("")
    wait_until(lambda: len(rows(again)) == 3, 5, "the filter to be cleared")
    headline = wait_row(again, "news", "headline", mark)
    headline.click()
    wait_until(lambda: '"src"' in headline.locator(".lw-data").inner_text(), 5, "the row's whole data")
    assert "e2e" in headline.locator(".lw-data").inner_text().split('"src"', 1)[1]

    for page in (nb, again):
        assert page.secret_leaks(pusher_server.secret) == []


def test_secret_never_reaches_the_browser(
    notebooks: Any, sdk: pusher.Pusher, pusher_server: LocalServer, frontend: str
) -> None:
    secret = pusher_server.secret
    mark = f"audit-{uuid.uuid4().hex[:8]}"
    nb = notebooks(
        "feed_audit.ipynb",
        [
            "import json, time\nimport livewidget\n"
            'feed = livewidget.Feed(["audit", "private-audit", "presence-audit"])\nfeed',
            'print("SLEEPING", flush=True)\ntime.sleep(6)\nprint("WOKE")',
        ],
    )
    nb.run_all()
    nb.widget(".lw-feed", timeout=30)
    nb.wait_output(1, "SLEEPING", timeout=30)
    for channel in ("audit", "private-audit"):
        wait_until(lambda ch=channel: subscribers(sdk, ch) >= 2, 8, f"the browser to subscribe to {channel}")
    wait_until(
        lambda: sdk.channel_info("presence-audit", ["user_count"]).get("user_count", 0) >= 2,
        8,
        "the browser to join presence-audit",
    )
    for channel in ("audit", "private-audit", "presence-audit"):
        sdk.trigger([channel], "ping", {"marker": mark})
        wait_row(nb, channel, "ping", mark)
    nb.wait_cell_done(1, timeout=30)
    assert nb.kernel_json("print(json.dumps(len(feed.df)))") == 3
    nb.save()
    reopened = notebooks("feed_audit.ipynb")
    reopened.widget(".lw-feed", timeout=30)
    wait_until(lambda: len([r for r in rows(reopened) if mark in r["data"]]) == 3, 10, "the history")

    # The capture works: the kernel's and Pusher's websockets were recorded, with the public key,
    # the widget's module (the bundle travels in the comm, as the `_esm` trait) and signed subscriptions.
    for page in (nb, reopened):
        urls = {url for _, url, _ in page.frames}
        assert any("/api/kernels/" in u for u in urls), urls
        assert any(f"/app/{pusher_server.key}" in u for u in urls), urls
        blob = b"".join(p.encode() if isinstance(p, str) else bytes(p) for _, _, p in page.frames)
        assert pusher_server.key.encode() in blob
        assert b"_esm" in blob
    sent = " ".join(str(p) for d, u, p in nb.frames if d == "sent" and f"/app/{pusher_server.key}" in u)
    assert "pusher:subscribe" in sent and "private-audit" in sent and f"{pusher_server.key}:" in sent

    # ... and the audit finds what is there (the public key: in frames, the websocket URL, the DOM?) ...
    for page in (nb, reopened):
        found = page.secret_leaks(pusher_server.key)
        assert any(leak.startswith("websocket frame") for leak in found), found
        assert page.audited["frames"] > 10 and page.audited["bodies"] > 10, page.audited

    # ... but not the secret: frames, requests, responses (the bundle included), DOM, inputs, storage.
    for page in (nb, reopened):
        assert page.secret_leaks(secret) == []
    for built in BUNDLE.parent.iterdir():
        assert secret not in built.read_text(), built
    state = nb.kernel_json(
        "state = {k: v for k, v in feed.get_state().items() if isinstance(v, (str, dict, list))}\n"
        "print(json.dumps(state, default=str))"
    )
    assert secret not in json.dumps(state)
    assert "secret" not in state["_connection"]


def test_bad_channel_name_is_a_clear_python_error(notebooks: Any) -> None:
    nb = notebooks("feed_bad_channel.ipynb", ['import livewidget\nlivewidget.Feed(["news", "bad channel!"])'])
    nb.run_all()
    text = nb.wait_output(0, "ValueError", timeout=30)
    assert "invalid channel name 'bad channel!'" in text, text
    nb.wait_cell_done(0, timeout=10)
    assert nb.page.locator(FEED).count() == 0
    nb.screenshot("feed-bad-channel")


def test_unreachable_server_is_shown_not_blank(notebooks: Any, frontend: str) -> None:
    port = free_port()  # nothing listens there
    nb = notebooks(
        "feed_unreachable.ipynb",
        [
            "import livewidget\n"
            f'feed = livewidget.Feed("news", host="127.0.0.1", port={port},\n'
            '                        app_id="1", key="nokey", secret="s")\n'
            "feed"
        ],
    )
    nb.run_all()
    feed = nb.widget(".lw-feed", timeout=30)
    bad = ("unavailable", "failed")
    wait_until(
        lambda: data_state(nb, ".lw-kernel-status") in bad and data_state(nb, ".lw-state") in bad,
        40,
        "both the browser and the kernel connection to be reported unavailable/failed",
        interval=0.5,
    )
    state = nb.page.locator(f"{FEED} .lw-state").first
    assert state.is_visible() and state.inner_text().strip(), "the connection state should be visible text"
    error = nb.page.locator(f"{FEED} .lw-error").first
    assert error.is_visible(), "the error should be visible"
    assert str(port) in error.inner_text() or "reach" in error.inner_text().lower(), error.inner_text()
    assert feed.inner_text().strip()
    nb.screenshot("feed-unreachable")
    nb.screenshot("feed-unreachable-widget", FEED)

"""``Chat`` in a real JupyterLab and Chromium: two people in two browser contexts, notebooks and kernels.

Ann's notebook runs a long cell the whole time: chat goes browser to browser as client events over
pusher-js, so it must not wait for her kernel. Both see each other online, see each other typing,
exchange messages both ways, an XSS payload shows as text (no dialog, the sentinel stays unset), a
message from ``chat.send`` in a kernel appears in both, a third person joining late sees the history,
and when Bob leaves, the others' member lists update. Screenshots (light and dark) go to
``test-artifacts/``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pusher
import pytest

from .conftest import NotebookPage, sleeping_cell, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

CHAT = ".jp-NotebookPanel:visible .lw-chat"
SLEEP = 45  # s Ann's busy cell sleeps; the live exchange happens within it
XSS = [
    '<img src=x onerror="window.__lw_xss=1;alert(1)">',
    "<script>window.__lw_xss=1;alert(1)</script>",
    '<svg onload="window.__lw_xss=1;alert(1)"></svg>',
    "[click me](javascript:window.__lw_xss=1;alert(1))",
    "&lt;b&gt;entity&lt;/b&gt; &#60;i&#62;",
]


def user_cell(room: str, uid: str, name: str, color: str) -> str:
    return (
        "import json, time\nimport livewidget\n"
        f'chat = livewidget.Chat("{room}", user={{"id": "{uid}", "name": "{name}", "color": "{color}"}})\n'
        "chat"
    )


def members(nb: NotebookPage) -> list[str]:
    return list(
        nb.page.locator(f"{CHAT} .lw-chat-members .lw-member").evaluate_all(
            "(els) => els.map((e) => e.getAttribute('data-user-id'))"
        )
    )


def count(nb: NotebookPage) -> str:
    return str(nb.page.locator(f"{CHAT} .lw-member-count").first.inner_text())


def texts(nb: NotebookPage) -> list[str]:
    return list(
        nb.page.locator(f"{CHAT} .lw-msg .lw-msg-text").evaluate_all("(els) => els.map((e) => e.textContent)")
    )


def wait_text(nb: NotebookPage, text: str, timeout: float = 10.0) -> Any:
    locator = nb.page.locator(f"{CHAT} .lw-msg", has=nb.page.locator(".lw-msg-text", has_text=text)).first
    locator.wait_for(state="attached", timeout=timeout * 1000)
    return locator


def say(nb: NotebookPage, text: str) -> None:
    box = nb.page.locator(f"{CHAT} .lw-chat-input").first
    box.fill(text)
    box.press("Enter")


def guard(nb: NotebookPage) -> list[str]:
    """Record every dialog (none may open); dismiss it so the page goes on."""
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    nb.page.on("dialog", on_dialog)
    return dialogs


def _is_error(frame: str | bytes, code: int) -> bool:
    """Whether ``frame`` is a ``pusher:error`` carrying ``code`` (protocol: pusher:error data.code)."""
    try:
        msg = json.loads(frame)
    except ValueError:
        return False
    if not isinstance(msg, dict) or msg.get("event") != "pusher:error":
        return False
    data = msg.get("data")
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return False
    return isinstance(data, dict) and data.get("code") == code


def test_two_people_chat_while_a_cell_runs(notebooks: Any, sdk: pusher.Pusher, frontend: str) -> None:
    room = f"e2e-{uuid.uuid4().hex[:6]}"
    channel = f"presence-chat-{room}"
    ann = notebooks(
        "chat_ann.ipynb",
        [
            user_cell(room, "ann", "Ann Example", "#e5484d"),
            sleeping_cell(SLEEP),
        ],
    )
    bob = notebooks("chat_bob.ipynb", [user_cell(room, "bob", "Bob Builder", "#0090ff")])
    dialogs_ann, dialogs_bob = guard(ann), guard(bob)
    bob.run_all()
    bob.widget(".lw-chat", timeout=30)
    ann.run_all()
    ann.widget(".lw-chat", timeout=30)
    ann.wait_output(1, "SLEEPING", timeout=30)
    started = time.monotonic()

    # Both online, each counted once (kernels hidden), me first.
    wait_until(lambda: members(ann) == ["ann", "bob"], 15, "Ann to see Bob online")
    wait_until(lambda: members(bob) == ["bob", "ann"], 15, "Bob to see Ann online")
    assert count(ann) == "2" and count(bob) == "2"
    users = sdk.channel_info(channel, ["user_count"])["user_count"]
    assert users == 4, f"ann, bob and their two kernels: {users}"
    ann.screenshot("chat-ann-empty-light-widget", CHAT)

    # Typing, then messages both ways; your own shows at once.
    ann_box = ann.page.locator(f"{CHAT} .lw-chat-input").first
    ann_box.press_sequentially("Hel", delay=60)
    bob.page.locator(f"{CHAT} .lw-typing", has_text="Ann Example is typing").wait_for(timeout=10_000)
    bob.screenshot("chat-bob-typing-widget", CHAT)
    ann_box.fill("")
    say(ann, "Hello **Bob**, see [the docs](https://example.com/docs)")
    sent = wait_text(ann, "Hello Bob", timeout=2)
    assert sent.get_attribute("data-user-id") == "ann"
    got = wait_text(bob, "Hello Bob")
    assert got.locator("strong").inner_text() == "Bob"
    link = got.locator("a").first
    assert link.get_attribute("href") == "https://example.com/docs"
    assert (
        link.get_attribute("target") == "_blank"
        and link.get_attribute("rel") == "noopener noreferrer nofollow"
    )
    assert bob.page.locator(f"{CHAT} .lw-typing").first.inner_text().strip() == "", "a message ends typing"
    say(bob, "Hi Ann! `code` and\n- a list")
    wait_text(ann, "Hi Ann!")
    assert got.locator(".lw-msg-time").inner_text().count(":") == 1

    # XSS payloads show as text: no dialog, no script ran, no element made from them.
    for payload in XSS:
        say(bob, payload)
    for payload in XSS:
        for nb in (ann, bob):
            wait_text(nb, payload.split("(")[0][:20])
    for nb in (ann, bob):
        shown = texts(nb)
        for payload in XSS:
            assert payload in shown, (payload, shown)
        bad = nb.page.locator(f"{CHAT} .lw-msg-text").locator("img, script, svg, iframe").count()
        assert bad == 0
        hrefs = nb.page.locator(f"{CHAT} .lw-msg-text a").evaluate_all("(els) => els.map((e) => e.href)")
        assert all(h.startswith(("https:", "http:", "mailto:")) for h in hrefs), hrefs
        assert nb.page.evaluate("() => window.__lw_xss") is None
    ann.page.wait_for_timeout(500)
    assert dialogs_ann == [] and dialogs_bob == []

    # A burst faster than Pusher's 10 client events a second: queued, all delivered, in order, and
    # the server never had to refuse one (no pusher:error 4301 reached Ann's page).
    for i in range(15):
        say(ann, f"burst {i:02d}")
    wait_text(bob, "burst 14")
    burst = [t for t in texts(bob) if t.startswith("burst ")]
    assert burst == [f"burst {i:02d}" for i in range(15)], burst
    # Match the frame, not a substring: a timestamp such as "t":1796433564301 contains "4301" too.
    refused = [p for d, u, p in ann.frames if d == "received" and "/app/" in u and _is_error(p, 4301)]
    assert refused == [], refused

    # All of it while Ann's cell was running.
    assert ann.is_running(1), "Ann's cell should still be running"
    assert time.monotonic() - started < SLEEP
    ann.screenshot("chat-ann-light")
    ann.screenshot("chat-ann-light-widget", CHAT)
    bob.screenshot("chat-bob-light-widget", CHAT)

    # Python posts (Bob's kernel is idle): shown in both, marked as from Python.
    bob.kernel_exec('chat.send("Job **finished** in 42 s")')
    for nb in (ann, bob):
        posted = wait_text(nb, "Job finished in 42 s")
        assert posted.get_attribute("data-via") == "python"
    record = bob.kernel_json(
        "import json\ndf = chat.df\nprint(json.dumps({'n': len(df), 'users': sorted(set(df.user_id)), "
        "'texts': df.text.tolist(), 'members': [m['id'] for m in chat.members]}))"
    )
    assert record["users"] == ["ann", "bob"] and record["n"] == 3 + len(XSS) + 15, record
    assert record["texts"][0].startswith("Hello **Bob**") and record["members"] == ["ann", "bob"]

    # A late joiner sees what was said before.
    carol = notebooks("chat_carol.ipynb", [user_cell(room, "carol", "Carol", "#46a758")])
    dialogs_carol = guard(carol)
    carol.run_all()
    carol.widget(".lw-chat", timeout=30)
    wait_until(lambda: len(texts(carol)) >= 3 + len(XSS) + 15, 20, "Carol to get the history")
    assert texts(carol)[0].startswith("Hello Bob") and "Job finished in 42 s" in texts(carol)
    for payload in XSS:
        assert payload in texts(carol)
    wait_until(lambda: members(ann) == ["ann", "bob", "carol"], 15, "Ann to see Carol")
    say(carol, "Hi all, I just arrived")
    wait_text(ann, "I just arrived")
    wait_text(bob, "I just arrived")
    carol.screenshot("chat-carol-late-joiner-widget", CHAT)

    # Bob leaves (his tab closes; his kernel still runs, hidden): the others' lists update.
    bob.page.close()
    wait_until(lambda: members(ann) == ["ann", "carol"], 15, "Ann's list to drop Bob")
    wait_until(lambda: members(carol) == ["carol", "ann"], 15, "Carol's list to drop Bob")
    assert count(ann) == "2"

    try:
        ann.set_theme("JupyterLab Dark")
        ann.screenshot("chat-ann-dark")
        ann.screenshot("chat-ann-dark-widget", CHAT)
    finally:
        ann.set_theme("JupyterLab Light")
    assert dialogs_carol == [] and carol.page.evaluate("() => window.__lw_xss") is None

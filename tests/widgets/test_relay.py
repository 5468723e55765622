"""The relay route, kernel side (livewidget/_relay.py): one coalesced stream per kernel over a comm."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest

from livewidget import _relay
from livewidget.widgets import _cells

from .conftest import simulate_custom, wait_for

FLOOD_RATE = 10_000  # events per second, over all widgets
FLOOD_SECONDS = 2.0
WIDGETS = 8  # more than 30/s / FLUSH_EVERY's 4/s: the kernel-wide flush budget must hold them


def relay_messages(comms: list[Any]) -> list[tuple[float, dict[str, Any], list[dict[str, Any]]]]:
    """Every relay message sent: (time, content, decoded parts)."""
    out = []
    for at, kind, data, buffers in comms:
        content = (data or {}).get("content") if kind == "comm_msg" else None
        if isinstance(content, dict) and content.get("type") == "relay":
            out.append((at, content, json.loads(bytes(buffers[0]))))
    return out


def relayed_rows(comms: list[Any], relay_id: str) -> list[list[Any]]:
    return [
        row
        for _, _, parts in relay_messages(comms)
        for p in parts
        if p["id"] == relay_id
        for row in p["rows"]
    ]


def drained(comms: list[Any], relay_id: str, n: int) -> bool:
    return len(relayed_rows(comms, relay_id)) >= n


def test_a_flood_across_widgets_is_one_stream_of_at_most_ten_messages_a_second(make_feed, server, comms):
    """10,000 events/s for 2 s over eight widgets: every event relayed, in order, in <= 10 messages/s,
    and all comm messages of the kernel (relay plus the widgets' coalesced traits) under 30/s."""
    channels = [f"relay-flood-{i}" for i in range(WIDGETS)]
    feeds = [make_feed(ch, max_log=20) for ch in channels]
    hub = server.server.apps.by_key[server.key]
    batch = 100  # events per call on the server's loop (a Python loop of single calls cannot reach 10k/s)

    def burst(start: int) -> None:
        actions = []
        for i in range(start, start + batch):
            data = json.dumps({"i": i})
            actions += hub.trigger("tick", data, [channels[i % WIDGETS]], time.time())
        server.server._run(hub, actions)

    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < FLOOD_SECONDS:
        server.call(burst, sent)
        sent += batch
        ahead = sent / FLOOD_RATE - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
    flood_end = time.monotonic()
    assert sent / (flood_end - start) > FLOOD_RATE * 0.6, f"only {sent / (flood_end - start):.0f} events/s"
    for n, feed in enumerate(feeds):
        feed.wait(len(range(n, sent, WIDGETS)), timeout=30)
    for n, feed in enumerate(feeds):
        wait_for(lambda f=feed, n=n: drained(comms, f._relay_id, len(range(n, sent, WIDGETS))), timeout=15)
    end = time.monotonic()

    # nothing lost, nothing twice, in order, per widget
    for n, feed in enumerate(feeds):
        rows = relayed_rows(comms, feed._relay_id)
        assert [json.loads(r[3])["i"] for r in rows] == list(range(n, sent, WIDGETS))
        assert {(r[1], r[2]) for r in rows} == {(channels[n], "tick")}
        # the server's positions travel along, for the browser's dedupe across a route switch
        serials = [r[5] for r in rows]
        assert serials == sorted(set(serials)) and len({r[6] for r in rows}) == 1, serials[:5]
    msgs = relay_messages(comms)
    assert [c["seq"] for _, c, _ in msgs] == sorted(c["seq"] for _, c, _ in msgs)
    assert not [p for _, _, parts in msgs for p in parts if p.get("lost")]
    # one stream: messages carry several widgets' events, never closer together than RELAY_EVERY
    assert max(len(parts) for _, _, parts in msgs) == WIDGETS
    during = [at for at, _, _ in msgs if start <= at <= end]
    gaps = [b - a for a, b in itertools.pairwise(during)]
    assert min(gaps) >= _relay.RELAY_EVERY * 0.9, min(gaps)
    seconds = end - start
    assert len(during) / seconds <= 1 / _relay.RELAY_EVERY + 1, (
        f"{len(during)} relay messages in {seconds:.1f} s"
    )
    everything = [m for m in comms if m[1] == "comm_msg" and start <= m[0] <= end]
    assert len(everything) / seconds <= 30, f"{len(everything)} comm messages in {seconds:.1f} s"
    # bulk data in a binary buffer, the JSON content stays small
    assert all(set(c) == {"type", "seq", "ids"} for _, c, _ in msgs)


def test_relay_state_members_and_client_events_through_the_kernel(make_feed, server, comms):
    """The stream carries the receiver's state and presence members; a client event the browser asks
    the kernel to send (when idle) is sent by the kernel's own connection and acknowledged."""
    feed = make_feed(["presence-relay-room"], user={"id": "ann", "info": {"name": "Ann"}})
    other = make_feed(["presence-relay-room"], user={"id": "bob", "info": {"name": "Bob"}})

    def last_state() -> dict[str, Any] | None:
        states = [
            p["state"]
            for _, _, ps in relay_messages(comms)
            for p in ps
            if p["id"] == feed._relay_id and "state" in p
        ]
        return states[-1] if states else None

    wait_for(lambda: (last_state() or {}).get("status") == "connected", timeout=10)
    wait_for(
        lambda: len((last_state() or {}).get("members", {}).get("presence-relay-room", [])) == 3, timeout=10
    )
    assert last_state()["channels"] == {"presence-relay-room": True}  # type: ignore[index]
    ids = {m["id"] for m in last_state()["members"]["presence-relay-room"]}  # type: ignore[index]
    # Ann's browser has no socket of its own on the relay: she is present through her kernel
    assert ids == {"ann:kernel", "bob:kernel", "ann"}

    simulate_custom(
        feed,
        {
            "type": "relay_trigger",
            "id": "a1",
            "channel": "presence-relay-room",
            "event": "client-hello",
            "data": {"text": "hi"},
        },
    )
    other.wait(1, timeout=10)
    assert other.events[-1]["event"] == "client-hello"
    assert other.events[-1]["data"] == {"text": "hi"}
    assert other.events[-1]["user_id"] == "ann:kernel"
    simulate_custom(
        feed,
        {
            "type": "relay_trigger",
            "id": "a2",
            "channel": "presence-elsewhere",
            "event": "client-x",
            "data": {},
        },
    )

    def acks() -> list[list[str]]:
        return [
            a
            for _, _, ps in relay_messages(comms)
            for p in ps
            if p["id"] == feed._relay_id
            for a in p.get("acks", [])
        ]

    wait_for(lambda: len(acks()) == 2, timeout=5)
    assert acks()[0] == ["a1", ""]
    assert acks()[1][0] == "a2" and "cannot send" in acks()[1][1]


def test_the_route_decides_whether_the_kernel_relays(make_feed, monkeypatch: pytest.MonkeyPatch):
    """auto: relayed until the browser reports another route; direct: never; relay: always, even when
    the browser says otherwise; a browser falling back asks again ({"type": "relay", "on": true})."""
    auto = make_feed("relay-route-a")  # connected before it is closed (as every widget of these tests)
    assert auto._relaying and auto._connection["relayId"] == auto._relay_id
    auto.route = "direct"
    assert not auto._relaying
    simulate_custom(auto, {"type": "relay", "on": True})
    assert auto._relaying
    auto.close()
    assert auto._relay_id not in _relay.session()._widgets
    monkeypatch.setenv("LIVEWIDGET_ROUTE", "direct")
    direct = make_feed("relay-route-d")
    assert not direct._relaying
    simulate_custom(direct, {"type": "relay", "on": True})
    assert not direct._relaying
    monkeypatch.setenv("LIVEWIDGET_ROUTE", "relay")
    forced = make_feed("relay-route-r")
    forced.route = "jupyter"
    assert forced._relaying


def test_bad_relay_messages_from_the_browser_are_refused_not_fatal(make_feed, comms):
    """Malformed relay requests change nothing and never stop the widget: a client event on a channel
    the widget did not ask for, a non-client event, wrong types; an acknowledgement says why."""
    feed = make_feed(["private-relay-bad"])
    bad: list[dict[str, Any]] = [
        {"type": "relay_trigger", "id": "b1", "channel": "private-other", "event": "client-x", "data": {}},
        {
            "type": "relay_trigger",
            "id": "b2",
            "channel": "private-relay-bad",
            "event": "not-client",
            "data": 1,
        },
        {"type": "relay_trigger", "id": "b3", "channel": 5, "event": None},
        {"type": "relay_trigger", "id": ["not", "a", "string"], "channel": "private-relay-bad"},
        {"type": "relay_trigger", "id": "x" * 10_000, "channel": None, "event": "client-x"},
        {"type": "relay", "on": "yes please"},
        {"type": "relay"},
    ]
    for content in bad:
        simulate_custom(feed, content)

    def acks() -> list[list[str]]:
        parts = [p for _, _, ps in relay_messages(comms) for p in ps if p["id"] == feed._relay_id]
        return [a for p in parts for a in p.get("acks", [])]

    wait_for(lambda: len(acks()) == 4, timeout=5)
    assert [a[0] for a in acks()] == ["b1", "b2", "b3", "x" * 64]
    assert all("cannot send" in a[1] for a in acks())
    assert feed._relaying and feed._receiver.state == "connected"


def test_an_idle_relay_wakes_at_most_ten_times_a_second(make_feed):
    """Regression: with a widget relayed and nothing to send, the session re-armed its timer with no
    delay (it measured from the last message sent), spinning the kernel's I/O loop (~190,000 wakeups a
    second, a whole core). Now an idle tick is spaced like a message."""
    feed = make_feed("relay-idle")
    assert feed._relaying
    s = _relay.session()
    time.sleep(0.3)
    before, start = s.ticks, time.monotonic()
    time.sleep(1.0)
    per_second = (s.ticks - before) / (time.monotonic() - start)
    assert per_second <= 1 / _relay.RELAY_EVERY + 2, per_second


@pytest.fixture
def shell(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A real IPython shell (as in ipykernel, which subclasses it): its cells fire pre/post_run_cell."""
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.setattr(_cells, "_watching", None)
    monkeypatch.setattr(_relay, "STANDBY_GRACE", 0.5)
    sh = InteractiveShell.instance()
    yield sh
    for event, fn in (("pre_run_cell", _cells._cell_starts), ("post_run_cell", _cells._cell_ends)):
        if fn in sh.events.callbacks[event]:
            sh.events.unregister(event, fn)
    monkeypatch.setattr(_relay, "STANDBY_GRACE", 0.0)
    _relay.session().busy(False)  # no standby left over for the next tests
    InteractiveShell.clear_instance()


def standby_of(comms: list[Any], relay_id: str) -> list[tuple[int, bool]]:
    """``(i, standby)`` of each row relayed for ``relay_id``, in order."""
    return [
        (json.loads(row[3])["i"], bool(p.get("standby")))
        for _, _, parts in relay_messages(comms)
        for p in parts
        if p["id"] == relay_id
        for row in p["rows"]
    ]


def test_a_widget_on_another_route_is_relayed_on_standby_while_a_cell_runs(make_feed, comms, shell):
    """The browser took ``jupyter``: not relayed while idle; relayed on standby (marked) from
    pre_run_cell to post_run_cell plus the grace; the browser's request to be relayed (it fell back,
    the request waited for the cell) takes over with nothing lost or twice."""
    feed = make_feed("relay-standby")
    shell.user_ns["feed"] = feed
    feed.route = "jupyter"  # reported by the browser: relayed no more (but on standby)
    assert not feed._relaying and feed._relay_id in _relay.session()._spare
    rid = feed._relay_id

    feed.send("tick", {"i": 0})
    feed.wait(1, timeout=10)
    time.sleep(0.4)
    assert standby_of(comms, rid) == [], "idle: nothing relayed"

    cell = (
        "import time\n"
        "for i in range(1, 6):\n"
        "    feed.send('tick', {'i': i})\n"
        "feed.wait(6, timeout=10)\n"
        "time.sleep(0.4)\n"  # a relay message goes out while the cell still runs
        "sent_in_cell = time.monotonic()\n"
    )
    assert shell.run_cell(cell).success
    ended = shell.user_ns["sent_in_cell"]
    assert standby_of(comms, rid) == [(i, True) for i in range(1, 6)]
    during = [at for at, _, parts in relay_messages(comms) if any(p["id"] == rid for p in parts)]
    assert during and during[0] < ended, "relayed while the cell ran"
    states = [p for _, _, ps in relay_messages(comms) for p in ps if p["id"] == rid and "state" in p]
    assert states and states[0]["state"]["channels"] == {"relay-standby": True} and states[0]["standby"]

    time.sleep(_relay.STANDBY_GRACE + 0.2)  # the cell ended a grace ago: standby is over
    feed.send("tick", {"i": 6})
    feed.wait(7, timeout=10)
    time.sleep(0.4)
    assert [i for i, _ in standby_of(comms, rid)] == [1, 2, 3, 4, 5]

    cell = "for i in range(7, 10):\n    feed.send('tick', {'i': i})\nfeed.wait(10, timeout=10)\n"
    assert shell.run_cell(cell).success
    # right after the cell, its queued messages: the browser fell back and asks to be relayed
    simulate_custom(feed, {"type": "relay", "on": True})
    assert feed._relaying
    feed.send("tick", {"i": 10})
    feed.wait(11, timeout=10)
    wait_for(lambda: len(standby_of(comms, rid)) >= 9, timeout=5)
    time.sleep(0.3)
    rows = standby_of(comms, rid)
    assert [i for i, _ in rows] == [1, 2, 3, 4, 5, 7, 8, 9, 10], "each once, in order"
    assert rows[-1] == (10, False), "relayed for good now"


def test_standby_is_bounded_per_widget_by_rows_and_bytes(make_feed, comms, monkeypatch):
    """Between two messages a spare widget queues at most STANDBY_ROWS rows and STANDBY_BYTES of
    payload (the oldest beyond are dropped and counted in ``lost``); nothing once the cell is over."""
    monkeypatch.setattr(_relay, "STANDBY_ROWS", 100)
    monkeypatch.setattr(_relay, "STANDBY_BYTES", 5000)
    monkeypatch.setattr(_relay, "STANDBY_GRACE", 0.0)
    feed = make_feed("relay-standby-bounds")
    feed.route = "direct"
    s = _relay.RelaySession(every=3600)  # its own session: after its first tick, nothing is sent by itself
    s.spare(feed._relay_id, feed)
    s.busy(True)
    time.sleep(0.3)
    sent = s.messages
    rid = feed._relay_id
    for i in range(150):
        s.row(rid, [i, "relay-standby-bounds", "tick", json.dumps({"i": i}), None, i + 1, "s"])
    assert s.flush()
    parts = relay_messages(comms)[-1][2]
    part = next(p for p in parts if p["id"] == rid)
    assert [json.loads(r[3])["i"] for r in part["rows"]] == list(range(50, 150)), "the newest 100"
    assert part["standby"] is True and part["lost"] == 50
    for i in range(10):
        s.row(rid, [i, "relay-standby-bounds", "tick", json.dumps({"i": i, "pad": "x" * 980}), None, None])
    assert s.flush()
    part = next(p for p in relay_messages(comms)[-1][2] if p["id"] == rid)
    assert [json.loads(r[3])["i"] for r in part["rows"]] == [5, 6, 7, 8, 9], "5,000 bytes of text"
    assert part["lost"] == 5
    assert s.standby_rows == 105 and s.messages == sent + 2
    s.busy(False)  # the cell is over (no grace here): a spare widget's events are not wanted
    assert not s.relays(rid)
    s.row(rid, [0, "relay-standby-bounds", "tick", "{}", None])
    assert not s._standby_rows


def test_outside_ipython_nothing_is_relayed_on_standby(make_feed):
    """No IPython shell (a script): the cells cannot be followed, spare widgets are never relayed."""
    feed = make_feed("relay-no-shell")
    feed.route = "direct"
    assert _cells.watch_cells() is False
    assert not _relay.session().relays(feed._relay_id)

"""The relay route, kernel side (livewidget/_relay.py): one coalesced stream per kernel over a comm."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest

from livewidget import _relay

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

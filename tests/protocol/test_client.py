"""The client side of the protocol, without sockets, against the server core (client ⇄ hub)."""

from __future__ import annotations

import json
import random
import time

import pytest

from livewidget.protocol import AppConfig, Hub, Send
from livewidget.protocol.client import PROTOCOL_ERROR, ClientProtocol, ClientState


def pair(**client_kwargs):
    """A client wired to a hub in memory: returns (client, deliver) where deliver() pumps frames."""
    hub = Hub(AppConfig("1", "key", "secret"))
    client = ClientProtocol("key", **client_kwargs)
    conn, actions = hub.open(0.0)
    client.connection_opened(0.0)
    heard = []

    def run(actions):
        for a in actions:
            if isinstance(a, Send) and conn in a.targets:
                heard.extend(client.receive(a.frame, 0.0))

    def pump():
        run(actions)
        actions.clear()
        for frame in client.data_to_send():
            run(hub.receive(conn, frame, 0.0))
        return heard

    return client, hub, conn, pump


def test_connect_and_subscribe_signed_locally():
    """With the secret, private and presence subscriptions are signed by the client itself."""
    client, hub, conn, pump = pair(secret="secret", user={"id": "u1", "info": {"n": 1}})
    for ch in ("pub", "private-p", "presence-q"):
        client.subscribe(ch)
    pump()
    heard = pump()
    assert client.state is ClientState.CONNECTED and client.socket_id == conn.socket_id
    assert [e.event for e in heard if e.event != "pusher:connection_established"] == [
        "pusher:subscription_succeeded"
    ] * 3
    assert all(client.channels.values())
    assert hub.channels["presence-q"].members["u1"][0] == {"n": 1}


def test_events_decoded_like_pusher_js():
    """JSON data is decoded, plain strings kept, user_id carried (pusher-js decodeMessage)."""
    client = ClientProtocol("key")
    client.connection_opened(0.0)
    client.receive(
        json.dumps(
            {
                "event": "pusher:connection_established",
                "data": json.dumps({"socket_id": "1.2", "activity_timeout": 30}),
            }
        ),
        0.0,
    )
    (e,) = client.receive(json.dumps({"event": "ev", "channel": "c", "data": '{"a": 1}'}), 0.0)
    assert (e.event, e.channel, e.data, e.raw) == ("ev", "c", {"a": 1}, '{"a": 1}')
    (e,) = client.receive(json.dumps({"event": "ev", "channel": "c", "data": "hi", "user_id": 5}), 0.0)
    assert (e.data, e.user_id) == ("hi", "5")
    (bad,) = client.receive("not json", 0.0)
    assert bad.event == "livewidget:bad_frame"
    assert client.activity_timeout == 30


def test_heartbeat_and_pong():
    """The client pings after activity_timeout of silence, reports death without a pong, answers pings."""
    client = ClientProtocol("key", pong_timeout=5)
    client.connection_opened(0.0)
    client.receive(
        json.dumps(
            {
                "event": "pusher:connection_established",
                "data": json.dumps({"socket_id": "1.2", "activity_timeout": 10}),
            }
        ),
        0.0,
    )
    assert client.tick(5.0) and client.data_to_send() == []
    assert client.tick(10.0)
    assert [json.loads(f)["event"] for f in client.data_to_send()] == ["pusher:ping"]
    assert client.tick(14.0)
    assert not client.tick(15.0)
    client.receive(json.dumps({"event": "pusher:ping", "data": {}}), 16.0)
    assert [json.loads(f)["event"] for f in client.data_to_send()] == ["pusher:pong"]
    assert client.tick(17.0)


def test_resubscribes_after_reconnection_and_unsubscribe():
    """Subscriptions survive a lost connection and are sent again; unsubscribe sends one frame."""
    client = ClientProtocol("key")
    client.subscribe("a")
    client.connection_opened(0.0)
    est = json.dumps(
        {
            "event": "pusher:connection_established",
            "data": json.dumps({"socket_id": "1.2", "activity_timeout": 120}),
        }
    )
    client.receive(est, 0.0)
    assert [json.loads(f)["data"]["channel"] for f in client.data_to_send()] == ["a"]
    client.connection_lost()
    client.connection_opened(1.0)
    client.receive(est, 1.0)
    assert [json.loads(f)["data"]["channel"] for f in client.data_to_send()] == ["a"]
    client.unsubscribe("a")
    assert json.loads(client.data_to_send()[0]) == {"event": "pusher:unsubscribe", "data": {"channel": "a"}}


def test_local_auth_failures_and_bad_names():
    """No secret and no authorizer: a local subscription_error; bad names raise ValueError."""
    client = ClientProtocol("key")
    client.connection_opened(0.0)
    client.receive(
        json.dumps(
            {
                "event": "pusher:connection_established",
                "data": json.dumps({"socket_id": "1.2", "activity_timeout": 120}),
            }
        ),
        0.0,
    )
    (err,) = client.subscribe("private-x")
    assert err.event == "pusher:subscription_error" and "secret or an authorizer" in err.data["error"]
    presence = ClientProtocol("key", secret="secret")
    presence.connection_opened(0.0)
    presence.receive(
        client_established := json.dumps(
            {
                "event": "pusher:connection_established",
                "data": json.dumps({"socket_id": "1.2", "activity_timeout": 120}),
            }
        ),
        0.0,
    )
    (err,) = presence.subscribe("presence-x")
    assert "needs a member" in err.data["error"]
    assert client_established
    with pytest.raises(ValueError, match="invalid channel name"):
        client.subscribe("no spaces")
    with pytest.raises(ValueError, match="client-"):
        client.trigger("private-x", "typing", {})


# ------------------------------------------------------------------ hostile input (issue 15 item 1)

DEEP = "[" * 1000 + "]" * 1000


def connected() -> ClientProtocol:
    client = ClientProtocol("key", secret="secret", user={"id": "u"})
    client.connection_opened(0.0)
    client.receive(
        json.dumps({"event": "pusher:connection_established", "data": json.dumps({"socket_id": "1.2"})}), 0.0
    )
    assert client.state is ClientState.CONNECTED
    return client


HOSTILE_FRAMES = [
    DEEP,
    "[" * 100_000,
    json.dumps({"event": "e", "channel": "c", "data": DEEP}),
    json.dumps({"event": "e", "channel": "c", "data": json.loads("[" * 200 + "]" * 200)}),
    json.dumps({"event": "e", "channel": "c", "data": "[" * 101 + "]" * 101}),
    json.dumps({"event": "e", "channel": ["c"], "data": "{}"}),
    json.dumps({"event": "e", "channel": {"c": 1}, "data": "{}"}),
    json.dumps({"event": "e", "channel": "c", "data": "{}", "user_id": {"x": 1}}),
    json.dumps({"event": "e", "channel": "c", "data": "{}", "user_id": True}),
    json.dumps({"event": "pusher_internal:subscription_succeeded", "channel": ["x"], "data": "{}"}),
    json.dumps({"event": "pusher_internal:member_added", "channel": "presence-x", "data": DEEP}),
    json.dumps({"event": "pusher:connection_established", "data": "{}"}),
    json.dumps({"event": "pusher:connection_established", "data": "[1]"}),
    json.dumps({"event": "pusher:connection_established", "data": {"socket_id": None}}),
    json.dumps(
        {
            "event": "pusher:connection_established",
            "data": json.dumps({"socket_id": "1.2", "activity_timeout": "x"}),
        }
    ),
    json.dumps({"event": 5}),
    json.dumps([1, 2]),
    "null",
    "",
    "\ud800",
    '{"event": "e", "data": "\\ud800"}',
]


@pytest.mark.parametrize("frame", HOSTILE_FRAMES, ids=range(len(HOSTILE_FRAMES)))
def test_receive_never_raises_on_hostile_frames(frame):
    """Whatever the server sends, receive() returns events (bad ones marked and counted), never raises."""
    client = connected()
    events = client.receive(frame, 1.0)
    assert isinstance(events, list)
    for event in events:
        if event.error is not None:
            assert client.undecodable >= 1
    # and the client still works afterwards
    after = client.receive(json.dumps({"event": "ok", "channel": "c", "data": '{"n": 1}'}), 2.0)
    assert [(e.event, e.data) for e in after] == [("ok", {"n": 1})]


def test_deep_data_is_kept_as_text_and_said_why():
    """Event data nested deeper than MAX_DEPTH is handed on as its raw text with the reason, counted."""
    client = connected()
    (event,) = client.receive(json.dumps({"event": "e", "channel": "c", "data": DEEP}), 1.0)
    assert event.data == DEEP and event.raw == DEEP and "nested" in (event.error or "")
    (ok,) = client.receive(json.dumps({"event": "e", "channel": "c", "data": "[" * 50 + "]" * 50}), 1.0)
    assert ok.error is None and isinstance(ok.data, list)
    assert client.undecodable == 1


@pytest.mark.parametrize("data", ["{}", "[1]", '{"socket_id": 5}', DEEP, None])
def test_malformed_handshake_is_a_protocol_error_not_an_exception(data):
    """A malformed connection_established leaves the client CONNECTING and says so (reconnect)."""
    client = ClientProtocol("key")
    client.connection_opened(0.0)
    client.subscribe("c")
    frame = {"event": "pusher:connection_established"} | ({} if data is None else {"data": data})
    (event,) = client.receive(json.dumps(frame), 0.0)
    assert event.event == PROTOCOL_ERROR and "malformed" in (event.error or "")
    assert client.state is ClientState.CONNECTING and client.socket_id is None
    assert client.data_to_send() == []  # nothing subscribed on a connection without a socket id


def test_bounded_fuzz_of_mutated_frames():
    """Random mutations of real frames (bounded in count): receive() never raises."""
    rng = random.Random(15)
    seeds = [
        json.dumps({"event": "pusher:connection_established", "data": json.dumps({"socket_id": "1.2"})}),
        json.dumps(
            {"event": "pusher_internal:subscription_succeeded", "channel": "presence-a", "data": "{}"}
        ),
        json.dumps(
            {"event": "e", "channel": "c", "data": json.dumps({"a": [1, {"b": None}]}), "user_id": "u"}
        ),
    ]
    alphabet = '[]{}",:\\0123456789abcnul \ud7ff'
    deadline = time.monotonic() + 10
    for _ in range(3000):
        if time.monotonic() > deadline:
            break
        text = list(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(text) + 1)
            op = rng.random()
            if op < 0.4:
                text.insert(i, rng.choice(alphabet) * rng.choice((1, 1, 300)))
            elif op < 0.8 and text:
                del text[min(i, len(text) - 1)]
            elif text:
                text[min(i, len(text) - 1)] = rng.choice(alphabet)
        client = ClientProtocol("key", secret="s", user={"id": "u"})
        client.connection_opened(0.0)
        client.subscribe("presence-a")
        assert isinstance(client.receive("".join(text), 0.0), list)

"""The client side of the protocol, without sockets, against the server core (client ⇄ hub)."""

from __future__ import annotations

import json

import pytest

from livewidget.protocol import AppConfig, Hub, Send
from livewidget.protocol.client import ClientProtocol, ClientState


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

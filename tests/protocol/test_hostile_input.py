"""Hostile input to the sans-I/O core (issue 14 items 7, 9, 10): refused with a clear error, never a crash."""

from __future__ import annotations

import json

import pytest

from livewidget.protocol import Apps, CloseCode, ConnectionState, Send

from .test_hub import KEY, SECRET, connect, events, frames, make_hub, send, subscribe
from .test_rest import make_apps, request

DEEP = "[" * 1000 + "]" * 1000  # about 2 KB: nests past the stdlib parser's recursion limit


def test_deeply_nested_frame_is_a_pusher_error_and_the_connection_stays():
    """Was: RecursionError out of Hub.receive (the transport closed 1011 and logged a traceback)."""
    hub = make_hub()
    conn = connect(hub)
    for text in (DEEP, '{"event":"client-x","channel":"private-a","data":' + DEEP + "}", "{" * 50_000):
        (err,) = frames(hub.receive(conn, text, 0.0), conn)
        assert err["event"] == "pusher:error"
        assert err["data"]["code"] is None  # as for any invalid JSON (hosted style, reference §1.5)
        assert "nested" in err["data"]["message"] and "limit is 128" in err["data"]["message"]
        assert conn.state is ConnectionState.OPEN
    assert events(send(hub, conn, {"event": "pusher:ping", "data": {}}), conn) == ["pusher:pong"]


def test_deeply_nested_channel_data_and_user_data_are_refused():
    """JSON inside JSON strings (presence channel_data, signin user_data) is bounded too."""
    from livewidget.protocol.signatures import channel_auth, signin_auth

    hub = make_hub()
    conn = connect(hub)
    channel_data = '{"user_id":"1","user_info":' + DEEP + "}"
    auth = channel_auth(KEY, SECRET, conn.socket_id, "presence-x", channel_data)
    data = {"channel": "presence-x", "auth": auth, "channel_data": channel_data}
    out = frames(send(hub, conn, {"event": "pusher:subscribe", "data": data}), conn)
    assert [f["event"] for f in out] == ["pusher:error", "pusher:subscription_error"]
    assert "nested" in out[0]["data"]["message"]
    user_data = '{"id":"1","user_info":' + DEEP + "}"
    auth = signin_auth(KEY, SECRET, conn.socket_id, user_data)
    signin = {"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}
    (err,) = frames(send(hub, conn, signin), conn)
    assert err["event"] == "pusher:error" and "nested" in err["data"]["message"]
    assert conn.state is ConnectionState.OPEN and conn.user_id is None


def test_deeply_nested_rest_body_is_400_naming_the_problem():
    """Was: a RecursionError answered 500."""
    apps = make_apps()
    body = ('{"name":"e","channel":"c","data":"x","info":' + DEEP + "}").encode()
    resp = request(apps, "POST", "/apps/1/events", body)
    assert resp.status == 400
    assert "not valid JSON" in resp.body["error"] and "nested 1001 levels" in resp.body["error"]
    batch = ('{"batch":' + "[" * 5000).encode()
    resp = request(apps, "POST", "/apps/1/batch_events", batch)
    assert resp.status == 400 and "limit is 128" in resp.body["error"]


def _signin(hub, conn, user_data: dict | str):
    from livewidget.protocol.signatures import signin_auth

    text = user_data if isinstance(user_data, str) else json.dumps(user_data)
    auth = signin_auth(KEY, SECRET, conn.socket_id, text)
    return send(hub, conn, {"event": "pusher:signin", "data": {"auth": auth, "user_data": text}})


@pytest.mark.parametrize("limit", [128, 20])
def test_signin_user_id_length_is_limited(limit):
    """A signed-in user id is held to max_user_id_length, as a presence member's is (reference §1.12)."""
    hub = make_hub(max_user_id_length=limit)
    conn = connect(hub)
    (err,) = frames(_signin(hub, conn, {"id": "u" * (limit + 1)}), conn)
    assert err["event"] == "pusher:error"
    assert err["data"]["code"] == CloseCode.UNAUTHORIZED
    assert f"the limit is {limit}" in err["data"]["message"]
    assert conn.user_id is None and not hub.users
    assert events(_signin(hub, conn, {"id": "u" * limit}), conn) == ["pusher:signin_success"]
    assert conn.user_id == "u" * limit


def test_signin_user_info_size_is_limited():
    """user_info over max_presence_user_info bytes is refused (4100, as for presence channel_data)."""
    hub = make_hub(max_presence_user_info=100)
    conn = connect(hub)
    big = {"name": "é" * 60}  # 60 characters, 120+ bytes in UTF-8
    (err,) = frames(_signin(hub, conn, {"id": "a", "user_info": big}), conn)
    assert err["event"] == "pusher:error"
    assert err["data"]["code"] == CloseCode.OVER_CAPACITY
    assert "bytes; the limit is 100" in err["data"]["message"]
    assert conn.user_id is None and conn.user_info is None
    ok = {"id": "a", "user_info": {"name": "é" * 10}}
    assert events(_signin(hub, conn, ok), conn) == ["pusher:signin_success"]
    assert conn.user_info == {"name": "é" * 10}
    # no limit configured: any size
    hub = make_hub(max_presence_user_info=None)
    conn = connect(hub)
    assert events(_signin(hub, conn, {"id": "a", "user_info": {"x": "y" * 5000}}), conn) == [
        "pusher:signin_success"
    ]


def test_signed_in_presence_without_channel_data_never_joins_with_oversized_info():
    """The signin limit also bounds what a presence subscription without channel_data joins with."""
    hub = make_hub(max_presence_user_info=50)
    conn = connect(hub)
    _signin(hub, conn, {"id": "a", "user_info": {"bio": "x" * 500}})
    assert conn.user_id is None
    assert "pusher:subscription_error" in events(subscribe(hub, conn, "presence-room", None), conn)
    assert not hub.channels


def test_shutdown_sends_pusher_error_4200_before_the_close():
    """Soketi, Reverb and Sockudo send pusher:error {4200} first; pysher reconnects only on it."""
    hub = make_hub()
    a, b = connect(hub), connect(hub)
    actions = hub.shutdown()
    assert [(c.conn, c.code) for c in actions] == [(a, 4200), (b, 4200)]
    for close in actions:
        assert close.frame is not None
        frame = json.loads(close.frame)
        assert frame["event"] == "pusher:error"
        assert frame["data"] == {"code": 4200, "message": "Server is shutting down; reconnect"}
    assert not any(isinstance(x, Send) for x in actions)


def test_apps_are_unaffected():
    """Bounded decoding leaves ordinary input alone (a 3-deep protocol frame, a nested REST body)."""
    apps: Apps = make_apps()
    body = {"name": "e", "channels": ["c"], "data": json.dumps({"a": [[[[1]]]]})}
    assert request(apps, "POST", "/apps/1/events", body).status == 200

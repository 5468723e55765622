"""The per-app state machine, without sockets: frames in, actions out (Reverb's FakeConnection style)."""

from __future__ import annotations

import contextlib
import itertools
import json
from typing import Any

import pytest

from livewidget.protocol import AppConfig, Close, CloseCode, Connection, Hub, Send, Webhook
from livewidget.protocol.signatures import channel_auth, signin_auth

KEY, SECRET = "k3y", "s3cret"


def make_hub(**settings: Any) -> Hub:
    counter = itertools.count(1)
    return Hub(AppConfig("1", KEY, SECRET, **settings), new_socket_id=lambda: f"{next(counter)}.1")


def frames(actions: list[Any], conn: Connection) -> list[dict[str, Any]]:
    """Frames sent to ``conn``, decoded, with string ``data`` decoded too when it is JSON."""
    out = []
    for a in actions:
        if isinstance(a, Send) and any(t is conn for t in a.targets):
            msg = json.loads(a.frame)
            if isinstance(msg.get("data"), str):
                with contextlib.suppress(ValueError):
                    msg["data"] = json.loads(msg["data"])
            out.append(msg)
    return out


def events(actions: list[Any], conn: Connection) -> list[str]:
    return [f["event"] for f in frames(actions, conn)]


def send(hub: Hub, conn: Connection, message: Any, now: float = 0.0) -> list[Any]:
    return hub.receive(conn, json.dumps(message), now)


def connect(hub: Hub, now: float = 0.0) -> Connection:
    conn, actions = hub.open(now)
    assert events(actions, conn) == ["pusher:connection_established"]
    return conn


def subscribe(hub: Hub, conn: Connection, channel: str, user_id: str | None = None, info: Any = None):
    data: dict[str, Any] = {"channel": channel}
    if channel.startswith("presence-"):
        data["channel_data"] = json.dumps({"user_id": user_id, "user_info": info})
        data["auth"] = channel_auth(KEY, SECRET, conn.socket_id, channel, data["channel_data"])
    elif channel.startswith("private-"):
        data["auth"] = channel_auth(KEY, SECRET, conn.socket_id, channel)
    return send(hub, conn, {"event": "pusher:subscribe", "data": data})


def test_handshake_has_string_data_and_activity_timeout():
    """connection_established carries a JSON string with socket_id and a non-zero activity_timeout."""
    hub = make_hub(activity_timeout=30)
    _conn, actions = hub.open(0.0)
    (action,) = actions
    raw = json.loads(action.frame)
    assert isinstance(raw["data"], str)
    assert json.loads(raw["data"]) == {"socket_id": "1.1", "activity_timeout": 30}


def test_ping_pong_and_unknown_events():
    """pusher:ping is answered; unknown and reserved events get pusher:error, connection stays."""
    hub = make_hub()
    conn = connect(hub)
    assert events(send(hub, conn, {"event": "pusher:ping", "data": {}}), conn) == ["pusher:pong"]
    assert send(hub, conn, {"event": "pusher:pong", "data": {}}) == []
    (err,) = frames(send(hub, conn, {"event": "my-event", "data": {}}), conn)
    assert err["event"] == "pusher:error"
    assert "Unsupported event" in err["data"]["message"]
    (err,) = frames(send(hub, conn, {"event": "pusher_internal:member_added", "data": {}}), conn)
    assert "reserved" in err["data"]["message"]


@pytest.mark.parametrize(
    "raw",
    ["not json", "[]", "42", '{"event": 3}', '{"data": {}}', b"\x00binary"],
)
def test_malformed_frames_get_an_error(raw):
    """Malformed frames are answered with pusher:error and change nothing."""
    hub = make_hub()
    conn = connect(hub)
    (err,) = frames(hub.receive(conn, raw, 0.0), conn)
    assert err["event"] == "pusher:error"
    assert hub.connections == {conn.socket_id: conn}


@pytest.mark.parametrize("data", ["x", 1, None, [], {"channel": 5}, {"channel": "bad name!"}, {}])
def test_subscribe_with_bad_data(data):
    """Bad subscribe data is refused with pusher:error and the connection remains open."""
    hub = make_hub()
    conn = connect(hub)
    out = events(send(hub, conn, {"event": "pusher:subscribe", "data": data}), conn)
    assert out[0] == "pusher:error"
    assert hub.channels == {}


def test_channel_name_rules():
    """Names use the Pusher charset and are at most max_channel_name_length characters."""
    hub = make_hub()
    conn = connect(hub)
    assert events(subscribe(hub, conn, "a" * 200), conn) == ["pusher_internal:subscription_succeeded"]
    assert events(subscribe(hub, conn, "a" * 201), conn)[0] == "pusher:error"
    assert events(subscribe(hub, conn, "-_=@,.;AZaz09"), conn)[0] == "pusher_internal:subscription_succeeded"
    assert events(subscribe(hub, conn, "#nope"), conn)[0] == "pusher:error"
    strict = make_hub(max_channel_name_length=164)
    c2 = connect(strict)
    assert events(subscribe(strict, c2, "a" * 165), c2)[0] == "pusher:error"


def test_public_subscribe_is_idempotent_and_delivers_once():
    """A second subscribe confirms again; a trigger is delivered once."""
    hub = make_hub()
    conn = connect(hub)
    for _ in range(2):
        (ok,) = frames(subscribe(hub, conn, "news"), conn)
        assert ok == {"event": "pusher_internal:subscription_succeeded", "channel": "news", "data": {}}
    actions = hub.trigger("ev", '{"a": 1}', ["news"], 0.0)
    (frame,) = [a for a in actions if isinstance(a, Send)]
    assert frame.targets == (conn,)
    assert json.loads(frame.frame) == {"event": "ev", "channel": "news", "data": '{"a": 1}'}


def test_unsubscribe_stops_delivery_without_reply():
    """pusher:unsubscribe has no reply; the channel is vacated and gets nothing more."""
    hub = make_hub()
    conn = connect(hub)
    subscribe(hub, conn, "news")
    assert send(hub, conn, {"event": "pusher:unsubscribe", "data": {"channel": "news"}}) == []
    assert hub.trigger("ev", "x", ["news"], 0.0) == []
    assert "news" not in hub.channels


def test_private_signature_checked_and_error_names_input():
    """A wrong private signature is refused the hosted way, naming the signed string only."""
    hub = make_hub()
    conn = connect(hub)
    bad = {"channel": "private-x", "auth": f"{KEY}:{'0' * 64}"}
    out = frames(send(hub, conn, {"event": "pusher:subscribe", "data": bad}), conn)
    assert [f["event"] for f in out] == ["pusher:error", "pusher:subscription_error"]
    assert out[0]["data"]["code"] is None
    assert f"Expected HMAC SHA256 hex digest of {conn.socket_id}:private-x" in out[0]["data"]["message"]
    right = channel_auth(KEY, SECRET, conn.socket_id, "private-x").split(":")[1]
    assert right not in out[0]["data"]["message"]
    assert out[1]["channel"] == "private-x"
    assert out[1]["data"]["status"] == 401
    # wrong key, missing auth
    out = frames(send(hub, conn, {"event": "pusher:subscribe", "data": {**bad, "auth": "other:abc"}}), conn)
    assert "Invalid key" in out[0]["data"]["message"]
    out = frames(send(hub, conn, {"event": "pusher:subscribe", "data": {"channel": "private-x"}}), conn)
    assert out[0]["event"] == "pusher:error"
    assert events(subscribe(hub, conn, "private-x"), conn) == ["pusher_internal:subscription_succeeded"]


def test_signature_of_another_socket_is_refused():
    """An auth signed for one socket id does not work on another connection."""
    hub = make_hub()
    a, b = connect(hub), connect(hub)
    auth = channel_auth(KEY, SECRET, a.socket_id, "private-x")
    out = send(hub, b, {"event": "pusher:subscribe", "data": {"channel": "private-x", "auth": auth}})
    assert events(out, b)[0] == "pusher:error"


def test_presence_members_counted_once_per_user():
    """One member per user id whatever its connections; added on first, removed when the last leaves."""
    hub = make_hub()
    a1, a2, b = connect(hub), connect(hub), connect(hub)
    subscribe(hub, b, "presence-room", "bob", {"name": "Bob"})
    out = subscribe(hub, a1, "presence-room", 7, {"name": "Ann"})  # numeric id becomes "7"
    (ok,) = frames(out, a1)
    assert ok["data"]["presence"] == {
        "ids": ["bob", "7"],
        "hash": {"bob": {"name": "Bob"}, "7": {"name": "Ann"}},
        "count": 2,
    }
    (added,) = frames(out, b)
    assert added == {
        "event": "pusher_internal:member_added",
        "channel": "presence-room",
        "data": {"user_id": "7", "user_info": {"name": "Ann"}},
    }
    out = subscribe(hub, a2, "presence-room", 7, {"name": "Ann"})
    assert frames(out, b) == []  # second connection of user 7: nobody is told
    assert frames(out, a2)[0]["data"]["presence"]["count"] == 2
    assert events(hub.close(a1, 1.0), b) == []  # user 7 still has a2
    removed = hub.close(a2, 2.0)
    assert frames(removed, b) == [
        {"event": "pusher_internal:member_removed", "channel": "presence-room", "data": {"user_id": "7"}}
    ]
    assert hub.user_count("presence-room") == 1


def test_presence_limits():
    """Presence refuses a 101st member and user_info over 1 KB, with LimitReached."""
    hub = make_hub(max_presence_members=2)
    conns = [connect(hub) for _ in range(3)]
    subscribe(hub, conns[0], "presence-p", "1")
    subscribe(hub, conns[1], "presence-p", "2")
    out = frames(subscribe(hub, conns[2], "presence-p", "3"), conns[2])
    assert out[0]["event"] == "pusher:error"
    assert out[1]["data"]["type"] == "LimitReached"
    # an existing member joining from another connection is not a new member
    assert events(subscribe(hub, conns[2], "presence-p", "2"), conns[2]) == [
        "pusher_internal:subscription_succeeded"
    ]
    hub = make_hub()
    conn = connect(hub)
    out = frames(subscribe(hub, conn, "presence-q", "1", {"blob": "x" * 1100}), conn)
    assert "user_info is" in out[0]["data"]["message"]
    assert make_hub().config.max_presence_members == 100


def test_presence_channel_data_validation():
    """channel_data must be a JSON string with a user_id, and is signed as sent."""
    hub = make_hub()
    conn = connect(hub)
    for channel_data in ["nope", json.dumps({"x": 1}), json.dumps({"user_id": ""}), json.dumps([1])]:
        auth = channel_auth(KEY, SECRET, conn.socket_id, "presence-v", channel_data)
        data = {"channel": "presence-v", "auth": auth, "channel_data": channel_data}
        assert events(send(hub, conn, {"event": "pusher:subscribe", "data": data}), conn)[0] == "pusher:error"
    data = {"channel": "presence-v", "auth": channel_auth(KEY, SECRET, conn.socket_id, "presence-v")}
    assert events(send(hub, conn, {"event": "pusher:subscribe", "data": data}), conn)[0] == "pusher:error"


def test_cache_channel_replays_last_event_or_cache_miss():
    """Cache channels replay the last event on subscribe until its TTL, else pusher:cache_miss."""
    hub = make_hub(cache_ttl=100)
    a = connect(hub)
    assert events(subscribe(hub, a, "cache-x"), a) == [
        "pusher_internal:subscription_succeeded",
        "pusher:cache_miss",
    ]
    hub.trigger("price", '{"v": 1}', ["cache-x"], 10.0)
    b = connect(hub)
    out = frames(
        hub.receive(b, json.dumps({"event": "pusher:subscribe", "data": {"channel": "cache-x"}}), 20), b
    )
    assert out[1] == {"event": "price", "channel": "cache-x", "data": {"v": 1}}
    assert hub.cache_info("cache-x", 20.0) == {"event": "price", "data": '{"v": 1}', "ttl": 90}
    c = connect(hub, 200.0)
    out = hub.receive(c, json.dumps({"event": "pusher:subscribe", "data": {"channel": "cache-x"}}), 200.0)
    assert events(out, c)[1] == "pusher:cache_miss"


def test_client_events_rules():
    """client- events: private/presence only, subscribed, never echoed, user_id on presence."""
    hub = make_hub()
    a, b = connect(hub), connect(hub)
    for conn in (a, b):
        subscribe(hub, conn, "private-c")
        subscribe(hub, conn, "news")
    out = send(hub, a, {"event": "client-typing", "channel": "private-c", "data": {"x": 1}})
    assert frames(out, a) == []
    assert frames(out, b) == [{"event": "client-typing", "channel": "private-c", "data": {"x": 1}}]
    (err,) = frames(send(hub, a, {"event": "client-x", "channel": "news", "data": {}}), a)
    assert "private and presence" in err["data"]["message"]
    (err,) = frames(send(hub, a, {"event": "client-x", "channel": "private-other", "data": {}}), a)
    assert "not subscribed" in err["data"]["message"]
    subscribe(hub, a, "presence-r", "ann")
    subscribe(hub, b, "presence-r", "bob")
    out = send(hub, b, {"event": "client-hi", "channel": "presence-r", "data": "plain"})
    (got,) = [json.loads(x.frame) for x in out if isinstance(x, Send)]
    assert got == {"event": "client-hi", "channel": "presence-r", "data": "plain", "user_id": "bob"}


def test_client_events_switch_and_size():
    """Client events can be switched off; data over the limit is refused."""
    hub = make_hub(client_events=False)
    a = connect(hub)
    subscribe(hub, a, "private-c")
    (err,) = frames(send(hub, a, {"event": "client-x", "channel": "private-c", "data": {}}), a)
    assert "disabled" in err["data"]["message"]
    hub = make_hub(max_data_size=10)
    a = connect(hub)
    subscribe(hub, a, "private-c")
    (err,) = frames(send(hub, a, {"event": "client-x", "channel": "private-c", "data": "x" * 11}), a)
    assert "limit is 10" in err["data"]["message"]


def test_client_event_rate_limit_is_a_token_bucket():
    """More than 10 client events in a second get pusher:error 4301; tokens come back over time."""
    hub = make_hub()
    a, b = connect(hub), connect(hub)
    subscribe(hub, a, "private-r")
    subscribe(hub, b, "private-r")
    msg = {"event": "client-x", "channel": "private-r", "data": {}}
    delivered = sum(bool(frames(send(hub, a, msg, 0.0), b)) for _ in range(12))
    assert delivered == 10
    (err,) = frames(send(hub, a, msg, 0.01), a)
    assert err["data"]["code"] == CloseCode.CLIENT_EVENT_RATE_LIMIT == 4301
    assert frames(send(hub, a, msg, 0.5), b)  # 5 tokens refilled after half a second


def test_signin_user_channel_and_terminate():
    """Signin succeeds with the right HMAC; #server-to-user-<id> is for that user only; terminate closes."""
    hub = make_hub()
    a, other = connect(hub), connect(hub)
    user_data = json.dumps({"id": "u1", "user_info": {"n": 1}})
    bad = {"auth": f"{KEY}:{'0' * 64}", "user_data": user_data}
    (err,) = frames(send(hub, a, {"event": "pusher:signin", "data": bad}), a)
    assert f"{a.socket_id}::user::{user_data}" in err["data"]["message"]
    good = {"auth": signin_auth(KEY, SECRET, a.socket_id, user_data), "user_data": user_data}
    (ok,) = frames(send(hub, a, {"event": "pusher:signin", "data": good}), a)
    assert ok == {"event": "pusher:signin_success", "data": {"user_data": user_data}}
    sub = {"event": "pusher:subscribe", "data": {"channel": "#server-to-user-u1", "auth": ""}}
    assert events(send(hub, a, sub), a) == ["pusher_internal:subscription_succeeded"]
    assert events(send(hub, other, sub), other)[0] == "pusher:error"
    out = hub.send_to_user("u1", "note", '"hi"', 0.0)
    assert frames(out, a) == [{"event": "note", "channel": "#server-to-user-u1", "data": "hi"}]
    (close,) = hub.terminate_user("u1")
    assert isinstance(close, Close)
    assert (close.conn, close.code) == (a, 4009)
    assert hub.terminate_user("nobody") == []


def test_watchlist_online_offline():
    """Watchers hear online/offline of the users they watch; over 100 ids gives 4302."""
    hub = make_hub(max_watchlist=2)
    watcher, w2 = connect(hub), connect(hub)

    def signin(conn: Connection, data: dict[str, Any]) -> list[Any]:
        ud = json.dumps(data)
        auth = signin_auth(KEY, SECRET, conn.socket_id, ud)
        return send(hub, conn, {"event": "pusher:signin", "data": {"auth": auth, "user_data": ud}})

    out = frames(signin(watcher, {"id": "w", "watchlist": ["a", "b", "c"]}), watcher)
    assert out[1]["data"]["code"] == 4302
    assert out[2]["data"] == {"events": [{"name": "offline", "user_ids": ["a", "b"]}]}
    out = signin(w2, {"id": "a"})
    assert frames(out, watcher) == [
        {
            "event": "pusher_internal:watchlist_events",
            "data": {"events": [{"name": "online", "user_ids": ["a"]}]},
        }
    ]
    out = hub.close(w2, 1.0)
    assert frames(out, watcher)[0]["data"]["events"][0]["name"] == "offline"


def test_trigger_excludes_socket_and_relays_data_verbatim():
    """REST triggers skip socket_id and relay the data string exactly as received."""
    hub = make_hub()
    a, b = connect(hub), connect(hub)
    subscribe(hub, a, "c")
    subscribe(hub, b, "c")
    (send_action,) = hub.trigger("e", '{"hello":  "world"}', ["c"], 0.0, exclude_socket_id=a.socket_id)
    assert list(send_action.targets) == [b]
    assert json.loads(send_action.frame)["data"] == '{"hello":  "world"}'


def test_heartbeat_ping_then_4201():
    """An idle connection is pinged after activity_timeout and closed 4201 without a pong."""
    hub = make_hub(activity_timeout=10, pong_timeout=5)
    a = connect(hub)
    assert hub.tick(5.0) == []
    (ping,) = hub.tick(10.0)
    assert events([ping], a) == ["pusher:ping"]
    assert hub.tick(12.0) == []
    (close,) = hub.tick(15.0)
    assert (close.conn, close.code) == (a, 4201)
    b = connect(hub, 20.0)
    hub.tick(30.0)
    send(hub, b, {"event": "pusher:pong", "data": {}}, 31.0)  # the pong clears the ping
    assert hub.tick(36.0) == []


def test_webhooks_occupied_vacated_delay_and_cancel():
    """Vacated and member_removed wait webhook_delay; a quick rejoin cancels them."""
    hub = make_hub(webhook_urls=("http://x",), webhook_delay=3.0)
    a = connect(hub)
    out = subscribe(hub, a, "presence-w", "u")
    names = [x.event["name"] for x in out if isinstance(x, Webhook)]
    assert names == ["channel_occupied", "member_added"]
    out = hub.close(a, 10.0)
    assert [x for x in out if isinstance(x, Webhook)] == []
    b = connect(hub, 11.0)
    out = hub.receive(b, json.dumps(_presence_sub(b, "presence-w", "u")), 11.0)
    assert [x for x in out if isinstance(x, Webhook)] == []  # rejoin within 3 s: nothing
    hub.close(b, 20.0)
    assert hub.tick(22.0) == []
    due = [x.event["name"] for x in hub.tick(23.0) if isinstance(x, Webhook)]
    assert sorted(due) == ["channel_vacated", "member_removed"]


def _presence_sub(conn: Connection, channel: str, uid: str) -> dict[str, Any]:
    cd = json.dumps({"user_id": uid})
    return {
        "event": "pusher:subscribe",
        "data": {
            "channel": channel,
            "channel_data": cd,
            "auth": channel_auth(KEY, SECRET, conn.socket_id, channel, cd),
        },
    }


def test_client_event_webhook_and_cache_miss_dedup():
    """client_event webhooks carry data, socket_id and user_id on presence; cache_miss is sent once."""
    hub = make_hub(webhook_urls=("http://x",))
    a, b = connect(hub), connect(hub)
    subscribe(hub, a, "presence-z", "ann")
    subscribe(hub, b, "presence-z", "bob")
    out = send(hub, a, {"event": "client-e", "channel": "presence-z", "data": {"q": 1}})
    (hook,) = [x.event for x in out if isinstance(x, Webhook)]
    assert hook == {
        "name": "client_event",
        "channel": "presence-z",
        "event": "client-e",
        "data": '{"q":1}',
        "socket_id": a.socket_id,
        "user_id": "ann",
    }
    misses = [
        x.event["name"]
        for conn in (a, b)
        for x in subscribe(hub, conn, "cache-m")
        if isinstance(x, Webhook) and x.event["name"] == "cache_miss"
    ]
    assert misses == ["cache_miss"]


def test_subscription_count_opt_in():
    """With subscription_count on, subscribers hear pusher_internal:subscription_count."""
    hub = make_hub(subscription_count=True)
    a, b = connect(hub), connect(hub)
    subscribe(hub, a, "sc")
    out = subscribe(hub, b, "sc")
    counts = [f for f in frames(out, a) if f["event"] == "pusher_internal:subscription_count"]
    assert counts == [
        {"event": "pusher_internal:subscription_count", "channel": "sc", "data": {"subscription_count": 2}}
    ]
    assert all(
        f["event"] != "pusher_internal:subscription_count" for f in frames(subscribe(make_hub(), a, "sc"), a)
    )


def test_close_cleans_everything_and_is_idempotent():
    """Closing leaves all channels, user and watch lists; closing twice does nothing."""
    hub = make_hub()
    a = connect(hub)
    subscribe(hub, a, "x")
    subscribe(hub, a, "presence-y", "u")
    hub.close(a, 1.0)
    assert hub.channels == {} and hub.connections == {} and hub.users == {}
    assert hub.close(a, 2.0) == []
    assert hub.receive(a, '{"event":"pusher:ping"}', 3.0) == []


def test_connection_quota_and_shutdown():
    """Over max_connections a client is closed 4004; shutdown closes everyone 4200."""
    hub = make_hub(max_connections=1)
    a = connect(hub)
    b, actions = hub.open(0.0)
    (close,) = actions
    assert (close.conn, close.code) == (b, 4004)
    assert [(c.conn, c.code) for c in hub.shutdown()] == [(a, 4200)]

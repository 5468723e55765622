"""ClusterHub without I/O: what it asks the adapter for, and what bus messages do to its clients."""

from __future__ import annotations

import json
from typing import Any

from livewidget.protocol import AppConfig, Send
from livewidget.protocol.cluster import ClusterHub, Publish, SyncChannel, SyncMember, SyncUser
from livewidget.protocol.signatures import channel_auth

NOW = 1_000_000.0


def hub(**settings: Any) -> ClusterHub:
    ids = iter(f"1.{i}" for i in range(1, 1000))
    return ClusterHub(AppConfig("1", "key", "secret", **settings), new_socket_id=lambda: next(ids))


def join(h: ClusterHub, channel: str, user_id: str) -> tuple[Any, list[Any]]:
    conn, _ = h.open(NOW)
    data = json.dumps({"user_id": user_id})
    auth = channel_auth("key", "secret", conn.socket_id, channel, data)
    frame = {"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth, "channel_data": data}}
    return conn, h.receive(conn, json.dumps(frame), NOW)


def frames(actions: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(a.frame) for a in actions if isinstance(a, Send)]


def test_trigger_and_terminate_are_published_not_delivered() -> None:
    h = hub()
    assert h.trigger("e", "d", ["a", "b"], NOW, "1.9") == [Publish(["e", [["e", "d", ["a", "b"], "1.9"]]])]
    assert h.terminate_user("u") == [Publish(["t", "u"])]


def test_first_local_member_is_synced_and_listed_before_the_bus_confirms() -> None:
    h = hub()
    conn, actions = join(h, "presence-x", "u1")
    assert SyncMember("presence-x", "u1", True, None, conn.socket_id) in actions
    assert SyncChannel("presence-x", 1) in actions
    ok = next(f for f in frames(actions) if f["event"] == "pusher_internal:subscription_succeeded")
    assert json.loads(ok["data"])["presence"]["ids"] == ["u1"]
    # the bus confirms: nobody else here to tell, the joiner is excluded
    assert h.apply_member_added("presence-x", "u1", None, conn.socket_id) == []
    # a second tab of u1 here: no new fact
    _, again = join(h, "presence-x", "u1")
    assert not [a for a in again if isinstance(a, SyncMember)]


def test_bus_member_events_reach_local_subscribers_once() -> None:
    h = hub()
    join(h, "presence-x", "u1")
    h.apply_member_added("presence-x", "u1", None, "")
    added = frames(h.apply_member_added("presence-x", "u2", {"n": 2}, "9.9"))
    assert [f["event"] for f in added] == ["pusher_internal:member_added"]
    assert h.apply_member_added("presence-x", "u2", {"n": 2}, "") == []  # duplicate: nothing
    removed = frames(h.apply_member_removed("presence-x", "u2"))
    assert [f["event"] for f in removed] == ["pusher_internal:member_removed"]
    assert h.apply_member_removed("presence-x", "u2") == []


def test_leaving_syncs_member_and_channel() -> None:
    h = hub()
    conn, _ = join(h, "presence-x", "u1")
    actions = h.close(conn, NOW)
    assert SyncMember("presence-x", "u1", False) in actions and SyncChannel("presence-x", 0) in actions


def test_signin_syncs_user_and_watchlist_uses_the_cluster() -> None:
    h = hub()
    h.apply_online("friend", True)
    assert h._is_online("friend")
    out: list[Any] = []
    h._user_online("me", out)
    assert out == [SyncUser("me", True)]


def test_reconcile_reports_what_the_bus_lost() -> None:
    h = hub()
    join(h, "presence-x", "u1")
    h.apply_member_added("presence-x", "u1", None, "")
    h.apply_member_added("presence-x", "ghost", None, "")
    events = [f["event"] for f in frames(h.reconcile({"presence-x": {"u1": None, "new": {"a": 1}}}, []))]
    assert sorted(events) == ["pusher_internal:member_added", "pusher_internal:member_removed"]
    assert set(h.replica["presence-x"]) == {"u1", "new"}
    state = h.local_state()
    assert state.channels == {"presence-x": 1} and list(state.members) == [("presence-x", "u1")]


def test_needs_barrier_only_for_replica_reads() -> None:
    assert ClusterHub.needs_barrier('{"event":"pusher:subscribe","data":{"channel":"presence-a"}}')
    assert ClusterHub.needs_barrier('{"event":"pusher:subscribe","data":{"channel":"cache-a"}}')
    assert ClusterHub.needs_barrier('{"event":"pusher:signin","data":{}}')
    assert not ClusterHub.needs_barrier('{"event":"pusher:subscribe","data":{"channel":"a"}}')
    assert not ClusterHub.needs_barrier('{"event":"client-x","channel":"private-a"}')

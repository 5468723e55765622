"""Channel history, sans-I/O: positions, limits, the global cap, rewind and recovery decisions, and the
hub hooks that use them (frames in, actions out; time passed in)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from livewidget.exceptions import ConfigurationError
from livewidget.protocol import AppConfig, Hub, Send
from livewidget.protocol.history import (
    LOG_OVERHEAD,
    Budget,
    Forget,
    History,
    HistoryLimits,
    Position,
    Rewind,
    RewindError,
    Store,
    parse_rewind,
)
from livewidget.protocol.rest import Apps, handle_rest
from livewidget.protocol.signatures import channel_auth, hmac_hex, rest_string_to_sign

from .test_hub import KEY, SECRET, connect, events, frames, send, subscribe


def stream_ids() -> Any:
    counter = itertools.count(1)
    return lambda: f"s{next(counter)}"


def make_history(**kwargs: Any) -> History:
    kwargs.setdefault("new_stream_id", stream_ids())
    return History(**kwargs)


def fill(history: History, channel: str, n: int, start: float = 0.0, step: float = 1.0) -> None:
    for i in range(n):
        history.append(channel, "e", str(i + 1), start + i * step)


def serials(replay_or_entries: Any) -> list[int]:
    entries = getattr(replay_or_entries, "entries", replay_or_entries)
    return [e.serial for e in entries]


# ---------------------------------------------------------------------------------------------- positions


def test_serials_grow_per_channel_and_each_channel_has_its_own_stream():
    h = make_history()
    a1, sa = h.append("a", "e", "1", 0.0)
    a2, _ = h.append("a", "e", "2", 0.0)
    b1, sb = h.append("b", "e", "1", 0.0)
    assert (a1.serial, a2.serial, b1.serial) == (1, 2, 1)
    assert sa != sb
    assert h.position("a") == Position(2, sa)
    assert h.position("nothing") is None


def test_positions_continue_when_events_are_dropped_by_limits():
    h = make_history(limits=HistoryLimits(max_events=2))
    fill(h, "a", 5)
    entry, _ = h.append("a", "e", "6", 5.0)
    assert entry.serial == 6
    assert serials(h.logs["a"].entries) == [5, 6]


def test_zero_events_keeps_positions_but_no_history():
    h = make_history(limits=HistoryLimits(max_events=0))
    fill(h, "a", 3)
    assert h.position("a").serial == 3
    replay = h.replay("a", Rewind(count=10), 3.0)
    assert replay.entries == [] and replay.position.serial == 3


# ---------------------------------------------------------------------------------------------- limits


def test_count_age_and_byte_limits_each_trim_oldest_first():
    h = make_history(limits=HistoryLimits(max_events=3, max_age=10, max_bytes=10**6))
    fill(h, "a", 5)
    assert serials(h.logs["a"].entries) == [3, 4, 5]
    # age: at t=14.5 everything before t=4.5 is gone (event 5 was at t=4)
    assert serials(h.replay("a", Rewind(count=10), 14.5)) == []
    h2 = make_history(limits=HistoryLimits(max_bytes=3 * (160 + 2)))
    for i in range(5):
        h2.append("b", "e", "x", float(i))
    assert serials(h2.logs["b"].entries) == [3, 4, 5]
    assert h2.trimmed == 2


def test_prefix_overrides_longest_match_wins():
    h = make_history(
        limits=HistoryLimits(max_events=5),
        overrides=[("chat-", HistoryLimits(max_events=2)), ("chat-big-", HistoryLimits(max_events=4))],
    )
    for ch in ("chat-x", "chat-big-x", "other"):
        fill(h, ch, 10)
    assert [len(h.logs[c].entries) for c in ("chat-x", "chat-big-x", "other")] == [2, 4, 5]


def test_global_cap_drops_the_oldest_events_of_any_channel_first_and_counts_them():
    size = 160 + 1 + 1  # entry overhead + event "e" + one-character data
    budget = Budget(max_bytes=3 * LOG_OVERHEAD + 6 * size)
    h = make_history(budget=budget)
    h.append("old", "e", "1", 0.0)
    h.append("old", "e", "2", 1.0)
    for i in range(3):
        h.append("mid", "e", "x", 2.0 + i)
    h.append("new", "e", "y", 10.0)
    h.append("new", "e", "z", 11.0)  # 7 events: one over the cap
    assert budget.used <= budget.max_bytes
    assert serials(h.logs["old"].entries) == [2]
    h.append("new", "e", "w", 12.0)
    h.append("new", "e", "v", 13.0)
    # "old" lost its last event, then (empty, idle since t=1, older than any event) its stream
    assert "old" not in h.logs
    assert serials(h.logs["mid"].entries) == [1, 2, 3]
    assert budget.dropped == 2 and h.evicted == 2 and budget.streams_dropped == 1
    assert h.stats()["dropped_over_cap"] == 2


def test_global_cap_under_many_channels_stays_within_bounds():
    budget = Budget(max_bytes=200_000)
    h = make_history(budget=budget)
    for i in range(5000):
        h.append(f"ch-{i}", "update", "x" * 50, float(i))
    assert budget.used <= budget.max_bytes
    # the newest events survive; the oldest went first, and then their empty streams, counted
    assert h.logs["ch-4999"].entries and "ch-0" not in h.logs
    assert len(h.logs) < 5000
    stats = budget.stats()
    assert stats["dropped_over_cap"] > 0 and stats["streams_dropped_over_cap"] > 0
    assert stats["dropped_over_cap"] + len([lg for lg in h.logs.values() if lg.entries]) >= 5000


def test_expire_forgets_idle_empty_streams_and_a_new_stream_starts():
    h = make_history(limits=HistoryLimits(max_age=10), deferred=True)
    entry, first = h.append("a", "e", "1", 0.0)
    h.committed("a", first, entry.serial)
    h.expire(5.0)
    assert "a" in h.logs
    h.expire(20.0)
    assert "a" not in h.logs
    assert h.take_forgotten() == {"a": -1}
    entry, second = h.append("a", "e", "again", 21.0)
    assert entry.serial == 1 and second != first


# ---------------------------------------------------------------------------------------------- rewind


def test_parse_rewind_accepts_sockudo_objects_and_ably_strings():
    assert parse_rewind({"count": 10}, 100) == Rewind(count=10)
    assert parse_rewind({"seconds": 30}, 100) == Rewind(seconds=30.0)
    assert parse_rewind(5, 100) == Rewind(count=5)
    assert parse_rewind("7", 100) == Rewind(count=7)
    assert parse_rewind("30s", 100) == Rewind(seconds=30.0)
    assert parse_rewind("2m", 100) == Rewind(seconds=120.0)
    r = parse_rewind({"serial": 4, "stream_id": "abc", "count": 3}, 100)
    assert r.after == Position(4, "abc") and r.count == 3


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"count": 101}, "over the limit of 100"),
        ({"count": -1}, "count must be an integer"),
        ({"count": 1.5}, "count must be an integer"),
        ({"seconds": "x"}, "seconds must be a number"),
        ({"seconds": float("inf")}, "seconds must be a number"),
        ({"serial": 3}, "stream_id must be a string"),
        ({"stream_id": "a"}, "serial must be an integer"),
        ({"serial": 1, "stream_id": "x" * 65}, "stream_id must be a string"),
        ({"from": 1}, "unknown rewind field"),
        ({}, "needs count, seconds, or serial"),
        ("ten", "not a count"),
        (True, "must be a count"),
        ([1], "must be a count"),
        ("9" * 30, "too long"),
    ],
)
def test_parse_rewind_names_the_problem(value: Any, words: str):
    with pytest.raises(RewindError, match=words):
        parse_rewind(value, 100)


def test_rewind_last_n_in_order_and_complete_flags():
    h = make_history()
    fill(h, "a", 5)
    r = h.replay("a", Rewind(count=3), 5.0)
    assert serials(r) == [3, 4, 5] and r.complete and r.reason is None
    r = h.replay("a", Rewind(count=10), 5.0)
    assert serials(r) == [1, 2, 3, 4, 5] and r.complete  # the stream's whole history: nothing lost
    h2 = make_history(limits=HistoryLimits(max_events=2))
    fill(h2, "a", 5)
    r = h2.replay("a", Rewind(count=10), 5.0)
    assert serials(r) == [4, 5] and not r.complete and r.reason == "truncated"
    assert r.summary() == {
        "complete": False,
        "historical_count": 2,
        "serial": 5,
        "stream_id": "s1",
        "reason": "truncated",
    }


def test_rewind_last_seconds():
    h = make_history(limits=HistoryLimits(max_events=3))
    fill(h, "a", 6, start=0.0, step=10.0)  # t = 0, 10, ..., 50; events 1-3 dropped (newest at t=20)
    r = h.replay("a", Rewind(seconds=25), 55.0)  # since t=30
    assert serials(r) == [4, 5, 6] and r.complete
    r = h.replay("a", Rewind(seconds=40), 55.0)  # since t=15: event 3 (t=20) was dropped
    assert serials(r) == [4, 5, 6] and not r.complete
    r = h.replay("a", Rewind(seconds=40, count=2), 55.0)
    assert serials(r) == [5, 6] and r.complete


def test_rewind_after_position_recovers_exactly():
    h = make_history()
    fill(h, "a", 5)
    r = h.replay("a", Rewind(after=Position(2, "s1")), 5.0)
    assert serials(r) == [3, 4, 5] and r.complete
    r = h.replay("a", Rewind(after=Position(5, "s1")), 5.0)
    assert serials(r) == [] and r.complete and r.position == Position(5, "s1")


def test_rewind_after_position_too_old_stream_reset_or_unknown():
    h = make_history(limits=HistoryLimits(max_events=2))
    fill(h, "a", 5)
    r = h.replay("a", Rewind(after=Position(1, "s1")), 5.0)
    assert serials(r) == [4, 5] and not r.complete and r.reason == "truncated"
    r = h.replay("a", Rewind(after=Position(1, "gone")), 5.0)
    assert serials(r) == [] and not r.complete and r.reason == "stream_reset"
    r = h.replay("a", Rewind(after=Position(9, "s1")), 5.0)
    assert serials(r) == [] and r.reason == "unknown_position"
    # with a fallback count, a reset stream still gives the newest events, marked incomplete
    r = h.replay("a", Rewind(after=Position(1, "gone"), count=1), 5.0)
    assert serials(r) == [5] and not r.complete and r.reason == "stream_reset"


def test_replay_on_a_channel_without_history_starts_a_stream_to_resume_from():
    h = make_history()
    r = h.replay("new", Rewind(count=5), 0.0)
    assert r.entries == [] and r.complete and r.position == Position(0, "s1")
    entry, stream = h.append("new", "e", "1", 1.0)
    assert (entry.serial, stream) == (1, "s1")


def test_deferred_history_replays_only_stored_events():
    h = make_history(deferred=True)
    e1, sid = h.append("a", "e", "1", 0.0)
    h.append("a", "e", "2", 0.0)
    assert serials(h.replay("a", Rewind(count=5), 0.0)) == []
    h.committed("a", sid, e1.serial)
    r = h.replay("a", Rewind(count=5), 0.0)
    assert serials(r) == [1] and r.position == Position(1, sid)


def test_query_directions_bounds_and_limit():
    h = make_history()
    fill(h, "a", 10, start=100.0)  # t = 100..109
    events, pos, first = h.query("a", 110.0, limit=3)
    assert serials(events) == [10, 9, 8] and pos == Position(10, "s1") and first == 1
    events, _, _ = h.query("a", 110.0, limit=3, before=8)
    assert serials(events) == [7, 6, 5]
    events, _, _ = h.query("a", 110.0, limit=3, after=8, newest_first=False)
    assert serials(events) == [9, 10]
    events, _, _ = h.query("a", 110.0, start=102.0, end=104.0, newest_first=False)
    assert serials(events) == [3, 4, 5]
    assert h.query("none", 0.0) == ([], None, 1)


def test_restore_continues_the_stream():
    from livewidget.protocol.history import Entry

    h = make_history(limits=HistoryLimits(max_events=2))
    h.restore("a", "old", 7, [Entry(5, 1.0, "e", "5"), Entry(6, 2.0, "e", "6"), Entry(7, 3.0, "e", "7")], 4.0)
    assert serials(h.logs["a"].entries) == [6, 7]
    entry, stream = h.append("a", "e", "8", 5.0)
    assert (entry.serial, stream) == (8, "old")
    r = h.replay("a", Rewind(after=Position(6, "old")), 5.0)
    assert serials(r) == [7, 8] and r.complete
    r = h.replay("a", Rewind(count=10), 5.0)
    assert not r.complete  # serials 1-6 are gone


def test_limits_and_config_validation():
    with pytest.raises(ValueError, match="max_events"):
        HistoryLimits(max_events=-1)
    with pytest.raises(ConfigurationError, match="history_max_age"):
        AppConfig("1", "k", "s", history_max_age=0)
    cfg = AppConfig.from_mapping(
        {
            "id": 1,
            "key": "k",
            "secret": "s",
            "history_max_events": 50,
            "history_overrides": {"chat-": {"max_age": 60}},
        }
    )
    assert cfg.history_overrides == (("chat-", HistoryLimits(max_events=50, max_age=60)),)
    with pytest.raises(ConfigurationError, match="unknown history setting"):
        AppConfig.from_mapping({"id": 1, "key": "k", "secret": "s", "history_overrides": {"x": {"size": 1}}})


# ---------------------------------------------------------------------------------------------- the hub


def history_hub(deferred: bool = False, **settings: Any) -> Hub:
    counter = itertools.count(1)
    config = AppConfig("1", KEY, SECRET, **settings)
    history = History(
        config.history_limits(),
        config.history_overrides,
        deferred=deferred,
        max_rewind=config.history_max_rewind,
        new_stream_id=stream_ids(),
    )
    return Hub(config, new_socket_id=lambda: f"{next(counter)}.1", history=history)


def subscribe_rewind(hub: Hub, conn: Any, channel: str, rewind: Any, now: float = 0.0) -> list[Any]:
    data: dict[str, Any] = {"channel": channel, "rewind": rewind}
    if channel.startswith("private-"):
        data["auth"] = channel_auth(KEY, SECRET, conn.socket_id, channel)
    return send(hub, conn, {"event": "pusher:subscribe", "data": data}, now)


def test_delivered_events_carry_serial_and_stream_id():
    hub = history_hub()
    conn = connect(hub)
    subscribe(hub, conn, "jobs")
    actions = hub.trigger("done", '{"id":1}', ["jobs"], 1.0)
    assert frames(actions, conn) == [
        {"event": "done", "channel": "jobs", "data": {"id": 1}, "serial": 1, "stream_id": "s1"}
    ]


def test_a_hub_without_history_is_unchanged():
    hub = Hub(AppConfig("1", KEY, SECRET))
    conn = connect(hub)
    subscribe(hub, conn, "jobs")
    actions = hub.trigger("done", "{}", ["jobs"], 1.0)
    assert [a.frame for a in actions if isinstance(a, Send)] == [
        '{"event":"done","channel":"jobs","data":"{}"}'
    ]
    # asking for a rewind there is answered: nothing is available
    actions = subscribe_rewind(hub, conn, "other", 5)
    assert frames(actions, conn)[-1]["data"] == {
        "complete": False,
        "historical_count": 0,
        "reason": "unavailable",
    }


def test_send_to_user_gets_no_position():
    hub = history_hub()
    hub.send_to_user("u1", "hi", "{}", 0.0)
    assert hub.history is not None and hub.history.logs == {}


def test_rewind_on_subscribe_replays_before_live_then_says_complete():
    hub = history_hub()
    for i in range(5):
        hub.trigger("tick", str(i), ["jobs"], float(i))
    conn = connect(hub)
    actions = subscribe_rewind(hub, conn, "jobs", {"count": 2}, 5.0)
    got = frames(actions, conn)
    assert [f["event"] for f in got] == [
        "pusher_internal:subscription_succeeded",
        "tick",
        "tick",
        "pusher:rewind_complete",
    ]
    assert [f.get("serial") for f in got[1:3]] == [4, 5]
    assert got[3] == {
        "event": "pusher:rewind_complete",
        "channel": "jobs",
        "data": {"complete": True, "historical_count": 2, "serial": 5, "stream_id": "s1"},
    }
    live = frames(hub.trigger("tick", "5", ["jobs"], 6.0), conn)
    assert [f["serial"] for f in live] == [6]


def test_rewind_after_position_on_resubscribe_gives_exactly_what_was_missed():
    hub = history_hub()
    conn = connect(hub)
    subscribe(hub, conn, "jobs")
    seen = [f["serial"] for f in frames(hub.trigger("e", "1", ["jobs"], 0.0), conn)]
    hub.close(conn, 1.0)
    for i in range(3):
        hub.trigger("e", str(i), ["jobs"], 2.0)
    conn2 = connect(hub)
    actions = subscribe_rewind(hub, conn2, "jobs", {"serial": seen[-1], "stream_id": "s1"}, 3.0)
    got = frames(actions, conn2)
    assert [f.get("serial") for f in got if f["event"] == "e"] == [2, 3, 4]
    assert got[-1]["data"]["complete"] is True


def test_private_channel_rewind_needs_the_same_auth_as_the_subscription():
    hub = history_hub()
    hub.trigger("secret", "x", ["private-room"], 0.0)
    conn = connect(hub)
    actions = send(
        hub, conn, {"event": "pusher:subscribe", "data": {"channel": "private-room", "rewind": 10}}
    )
    assert "secret" not in events(actions, conn)
    assert events(actions, conn) == ["pusher:error", "pusher:subscription_error"]
    actions = subscribe_rewind(hub, conn, "private-room", 10)
    assert events(actions, conn) == [
        "pusher_internal:subscription_succeeded",
        "secret",
        "pusher:rewind_complete",
    ]


def test_malformed_or_too_large_rewind_is_refused_by_name():
    hub = history_hub(history_max_rewind=50)
    conn = connect(hub)
    actions = subscribe_rewind(hub, conn, "jobs", {"count": 51})
    got = frames(actions, conn)
    assert got[0]["event"] == "pusher:error"
    assert (
        "Invalid rewind for jobs: rewind count 51 is over the limit of 50 events" in got[0]["data"]["message"]
    )
    assert got[1]["event"] == "pusher:subscription_error" and got[1]["data"]["type"] == "InvalidRewind"
    assert "jobs" not in hub.channels  # not subscribed
    actions = subscribe_rewind(hub, conn, "jobs", {"serial": "x", "stream_id": "s"})
    assert "serial must be an integer" in frames(actions, conn)[0]["data"]["message"]


def test_client_events_get_positions_and_user_id_and_are_not_echoed():
    hub = history_hub()
    a, b = connect(hub), connect(hub)
    for conn, uid in ((a, "ua"), (b, "ub")):
        subscribe(hub, conn, "presence-room", uid)
    actions = send(hub, a, {"event": "client-typing", "channel": "presence-room", "data": {"x": 1}}, 1.0)
    assert frames(actions, a) == []
    (got,) = frames(actions, b)
    assert got["serial"] == 1 and got["user_id"] == "ua" and got["stream_id"] == "s1"
    c = connect(hub)
    actions = subscribe_rewind(hub, c, "presence-room", 5)  # presence needs channel_data
    assert events(actions, c)[0] == "pusher:error"


def test_deferred_hub_delivers_only_once_stored_and_replay_plus_live_is_exactly_once():
    hub = history_hub(deferred=True)
    early = connect(hub)
    subscribe(hub, early, "jobs")
    actions = hub.trigger("e", "1", ["jobs"], 0.0, None)
    (store,) = [a for a in actions if isinstance(a, Store)]
    assert not [a for a in actions if isinstance(a, Send)]  # nothing delivered before storage
    # a subscriber arrives while event 1 is being stored: its replay must not contain it ...
    late = connect(hub)
    got = frames(subscribe_rewind(hub, late, "jobs", {"count": 10}), late)
    assert [f.get("serial") for f in got if f["event"] == "e"] == []
    # ... and it gets it live, once, when storage confirms (with the early subscriber)
    delivered = hub.deliver(store, 0.1)
    assert [f["serial"] for f in frames(delivered, late)] == [1]
    assert [f["serial"] for f in frames(delivered, early)] == [1]
    # a third one now gets it by replay
    third = connect(hub)
    got = frames(subscribe_rewind(hub, third, "jobs", {"count": 10}), third)
    assert [f.get("serial") for f in got if f["event"] == "e"] == [1]


def test_deferred_hub_reports_what_storage_may_forget():
    hub = history_hub(deferred=True, history_max_events=1)
    for i in range(3):
        for a in hub.trigger("e", str(i), ["jobs"], float(i)):
            if isinstance(a, Store):
                hub.deliver(a, float(i))
    forgets = [a for a in hub.tick(10.0) if isinstance(a, Forget)]
    assert forgets == [Forget("1", {"jobs": 2})]


def test_exclude_socket_id_holds_for_deferred_delivery():
    hub = history_hub(deferred=True)
    a, b = connect(hub), connect(hub)
    subscribe(hub, a, "jobs")
    subscribe(hub, b, "jobs")
    (store,) = [x for x in hub.trigger("e", "1", ["jobs"], 0.0, a.socket_id) if isinstance(x, Store)]
    delivered = hub.deliver(store, 0.0)
    assert frames(delivered, a) == [] and len(frames(delivered, b)) == 1


# ---------------------------------------------------------------------------------------------- REST


def signed(path: str, params: dict[str, str], now: int = 1000) -> list[tuple[str, str]]:
    query = {**params, "auth_key": KEY, "auth_timestamp": str(now), "auth_version": "1.0"}
    pairs = sorted(query.items())
    sig = hmac_hex(SECRET, rest_string_to_sign("GET", path, pairs))
    return [*pairs, ("auth_signature", sig)]


def history_apps(**settings: Any) -> Apps:
    return Apps(
        [AppConfig("1", KEY, SECRET, **settings)],
        history=lambda cfg: History(cfg.history_limits(), new_stream_id=stream_ids()),
    )


def get(apps: Apps, channel: str, now: float = 1000.0, **params: str) -> tuple[int, dict[str, Any]]:
    path = f"/apps/1/channels/{channel}/events"
    resp = handle_rest(apps, "GET", path, signed(path, params), b"", now)
    return resp.status, resp.body


def test_history_api_pages_newest_first_and_oldest_first():
    apps = history_apps()
    hub = apps.by_id["1"]
    for i in range(5):
        hub.trigger("e", json.dumps(i), ["jobs"], 990.0 + i)
    status, body = get(apps, "jobs", limit="2")
    assert status == 200
    assert [e["serial"] for e in body["events"]] == [5, 4]
    assert body["events"][0] == {"serial": 5, "event": "e", "data": "4", "time_ms": 994000}
    assert (body["stream_id"], body["serial"], body["first_serial"]) == ("s1", 5, 1)
    status, body = get(apps, "jobs", limit="2", before="4")
    assert [e["serial"] for e in body["events"]] == [3, 2]
    status, body = get(apps, "jobs", direction="oldest_first", after="3")
    assert [e["serial"] for e in body["events"]] == [4, 5]
    status, body = get(apps, "jobs", direction="oldest_first", start="991000", end="992000")
    assert [e["serial"] for e in body["events"]] == [2, 3]
    status, body = get(apps, "empty")
    assert status == 200 and body["events"] == [] and body["stream_id"] is None


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"limit": "0"}, 400, "limit must be between 1 and 1000"),
        ({"limit": "1001"}, 400, "limit must be between 1 and 1000"),
        ({"before": "x"}, 400, "before must be an integer"),
        ({"direction": "up"}, 400, "direction must be newest_first or oldest_first"),
        ({"stream_id": "nope"}, 410, "is gone"),
    ],
)
def test_history_api_errors_are_status_and_json(params: dict[str, str], status: int, words: str):
    apps = history_apps()
    apps.by_id["1"].trigger("e", "1", ["jobs"], 999.0)
    got, body = get(apps, "jobs", **params)
    assert got == status and words in body["error"]


def test_history_api_needs_a_signature_and_history():
    apps = history_apps()
    resp = handle_rest(apps, "GET", "/apps/1/channels/jobs/events", [("auth_key", KEY)], b"", 1000.0)
    assert resp.status == 401
    plain = Apps([AppConfig("1", KEY, SECRET)])
    path = "/apps/1/channels/jobs/events"
    resp = handle_rest(plain, "GET", path, signed(path, {}), b"", 1000.0)
    assert resp.status == 501 and "not enabled" in resp.body["error"]


# ---------------------------------------------------------------------------------------------- SSE


def test_sse_event_cannot_be_split_by_its_data_or_name():
    from livewidget.protocol.history import Entry, sse_event

    text = sse_event("s1", Entry(7, 0.0, "ev\nid: 99", "a\r\nb\rc\nd"))
    assert text == b"id: s1:7\nevent: ev id: 99\ndata: a\ndata: b\ndata: c\ndata: d\n\n"


def test_last_event_id_is_a_position():
    from livewidget.protocol.history import parse_last_event_id

    assert parse_last_event_id("k3f9:42") == Position(42, "k3f9")
    for bad in ("42", "k3f9:", ":4", "k3f9:-1", "x" * 70 + ":1", "a:" + "9" * 30):
        with pytest.raises(RewindError, match="not a position"):
            parse_last_event_id(bad)


def test_route_stream_auth_and_resume():
    from livewidget.exceptions import RestError
    from livewidget.protocol.rest import is_stream, route_stream

    apps = history_apps()
    path = "/apps/1/channels/feed/stream"
    assert is_stream("GET", path) and not is_stream("POST", path) and not is_stream("GET", "/apps/1/events")
    _, name, rewind = route_stream(apps, path, [("auth_key", KEY)], 1000.0, last_event_id="s1:3")
    assert name == "feed" and rewind == Rewind(after=Position(3, "s1"))
    _, _, rewind = route_stream(apps, path, [("auth_key", KEY), ("rewind", "30s")], 1000.0)
    assert rewind == Rewind(seconds=30.0)
    for query, status in (([("auth_key", "nope")], 401), ([("auth_key", KEY), ("rewind", "x")], 400)):
        with pytest.raises(RestError) as err:
            route_stream(apps, path, query, 1000.0)
        assert err.value.status == status
    private = "/apps/1/channels/private-x/stream"
    with pytest.raises(RestError) as err:
        route_stream(apps, private, [("auth_key", KEY)], 1000.0)
    assert err.value.status == 401
    assert route_stream(apps, private, signed(private, {}), 1000.0)[1] == "private-x"


def test_rewind_on_a_user_channel_says_unavailable():
    from livewidget.protocol.signatures import signin_auth

    hub = history_hub()
    conn = connect(hub)
    user_data = json.dumps({"id": "u1"})
    send(
        hub,
        conn,
        {
            "event": "pusher:signin",
            "data": {"auth": signin_auth(KEY, SECRET, conn.socket_id, user_data), "user_data": user_data},
        },
    )
    got = frames(subscribe_rewind(hub, conn, "#server-to-user-u1", 5), conn)
    assert got[-1]["data"]["reason"] == "unavailable"
    assert hub.history is not None and hub.history.logs == {}

"""Widgets rewind the channel's history when they subscribe, and resume after a reconnection."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path
from typing import Any

import pusher
import pytest

import livewidget
from livewidget.protocol.client import ClientProtocol
from livewidget.server import LocalServer
from livewidget.server.history.sqlite import SQLiteHistory
from livewidget.widgets._base import rewind_for

from .conftest import creds, wait_for


def sdk(server: LocalServer) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=server.app_id,
        key=server.key,
        secret=server.secret,
        host=server.host,
        port=server.port,
        ssl=False,
    )


def test_feed_shows_the_last_events_published_before_it_existed(make_feed, server):
    """Feed("jobs", history=100) in a new widget records the channel's last 100 events first, marked."""
    client = sdk(server)
    for i in range(130):
        client.trigger("hist-jobs", "e", {"n": i})
    feed = make_feed("hist-jobs", history=100)
    wait_for(lambda: feed.total >= 100)
    client.trigger("hist-jobs", "e", {"n": 130})
    feed.wait(101)
    df = feed.df
    assert list(df["n"]) == list(range(30, 131))  # the last 100, then live: no gap, no duplicate
    assert list(df["history"]) == [True] * 100 + [False]
    events = feed.events
    assert events[-1]["data"] == {"n": 130} and not events[-1].get("history")
    assert events[-2].get("history") is True and events[-2]["serial"] == 130
    # the browser's record says where history ends, and positions for its dedupe
    wait_for(lambda: feed._history.count(b"\n") >= 100, timeout=8)
    assert b'"history": true' in feed._history and b'"serial": 131' in feed._history
    assert feed._rewind == {"count": 100}


def test_history_zero_and_timedelta(make_feed, server):
    """history=0 rewinds nothing; a timedelta rewinds that span."""
    client = sdk(server)
    client.trigger("hist-span", "e", {"n": 1})
    none = make_feed("hist-span", history=0)
    span = make_feed("hist-span", history=dt.timedelta(minutes=5))
    wait_for(lambda: span.total == 1)
    assert span.df["history"].tolist() == [True] and span._rewind == {"seconds": 300.0}
    client.trigger("hist-span", "e", {"n": 2})
    none.wait(1)
    assert none.df["n"].tolist() == [2] and none.df["history"].tolist() == [False]


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (-1, ValueError, "between 0"),
        (1001, ValueError, "between 0 .*and 1000 events"),
        ("100", TypeError, "number of events.*timedelta, not str"),
        (True, TypeError, "number of events"),
        (dt.timedelta(seconds=-1), ValueError, "negative"),
    ],
)
def test_bad_history_is_refused_plainly(value, error, match, server, comms):
    with pytest.raises(error, match=match):
        livewidget.Feed("hist-bad", history=value, **creds(server))
    with pytest.raises(error, match=match):
        rewind_for(value)


def test_per_widget_defaults(server, comms):
    """Feed 100, Chat 50, ProgressBoard 1000, LiveChart its window (none on a receive-time axis)."""
    made = [
        livewidget.Feed("hist-d", record=False, **creds(server)),
        livewidget.Chat("hist-d", record=False, **creds(server)),
        livewidget.ProgressBoard("hist-d", record=False, **creds(server)),
        livewidget.LiveChart("hist-d", x="step", y="v", window=200, record=False, **creds(server)),
        livewidget.LiveChart("hist-d", x="step", y="v", window=5000, record=False, **creds(server)),
        livewidget.LiveChart("hist-d", y="v", record=False, **creds(server)),  # receive time: none
        livewidget.LiveChart("hist-d", y="v", history=7, record=False, **creds(server)),
    ]
    try:
        assert [w._rewind for w in made] == [
            {"count": 100},
            {"count": 50},
            {"count": 1000},
            {"count": 200},
            {"count": 1000},
            {"count": 0},
            {"count": 7},
        ]
    finally:
        for w in made:
            w.close()


def test_a_board_and_a_chart_opened_later_start_from_history(server, comms):
    """A ProgressBoard shows finished jobs published before it existed; a chart's record its window."""
    client = sdk(server)
    for job, status in (("a", "done"), ("b", "failed")):
        for n in (1, 2):
            state = {"job": job, "n": n, "total": 2, "status": "running" if n == 1 else status, "t": 1.0}
            client.trigger("hist-board", "progress", state)
    for i in range(20):
        client.trigger("hist-chart", "m", {"step": i, "v": i})
    board = livewidget.ProgressBoard("hist-board", **creds(server))
    chart = livewidget.LiveChart("hist-chart", x="step", y="v", window=10, **creds(server))
    try:
        wait_for(lambda: len(board.df) == 2 and chart.total == 10)
        assert dict(zip(board.df["job"], board.df["status"], strict=True)) == {"a": "done", "b": "failed"}
        assert chart.df["v"].tolist() == list(range(10, 20)) and chart.df["history"].all()
    finally:
        board.close()
        chart.close()


def test_chat_shows_the_last_messages_from_history(server, comms):
    """Messages sent while nobody was in the room come back from the server's history, marked."""
    client = sdk(server)
    for i in range(3):
        piece = {"id": f"m{i}", "text": f"hello {i}", "t": 1_700_000_000_000 + i, "user": {"id": "bot"}}
        client.trigger("presence-chat-histroom", "chat-message", piece)
    chat = livewidget.Chat("histroom", user="ann", **creds(server))
    try:
        wait_for(lambda: len(chat.df) == 3)
        df = chat.df
        assert df["text"].tolist() == ["hello 0", "hello 1", "hello 2"] and df["history"].all()
    finally:
        chat.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore:livewidget:RuntimeWarning")  # the restart is said as it happens
def test_receiver_recovers_across_a_server_restart_without_gap_or_duplicate(tmp_path: Path, comms):
    """The server restarts (same port, same history folder) while events keep being published: the
    kernel resubscribes from its last position and records each event exactly once, in order."""
    port = free_port()
    server = LocalServer(port=port, history=SQLiteHistory(tmp_path)).start()
    feed = None
    try:
        client = sdk(server)
        for i in range(5):
            client.trigger("hist-recover", "e", {"n": i})
        feed = livewidget.Feed("hist-recover", history=3, **creds(server))
        feed.wait(3)
        client.trigger("hist-recover", "e", {"n": 5})
        feed.wait(4)
        server.stop()
        wait_for(lambda: feed._receiver.state != "connected", timeout=10)
        server = LocalServer(port=port, apps=server.apps, history=SQLiteHistory(tmp_path)).start()
        client = sdk(server)
        for i in range(6, 9):  # published before the kernel is back: recovered from history
            client.trigger("hist-recover", "e", {"n": i})
        feed.wait(7, timeout=30)
        client.trigger("hist-recover", "e", {"n": 9})
        feed.wait(8)
        assert feed.df["n"].tolist() == list(range(2, 10))
        assert feed.df["history"].tolist() == [True] * 3 + [False] * 5
        assert "may be missing" not in feed.error  # 4200 "Server is shutting down" is said, no gap
    finally:
        if feed is not None:
            feed.close()
        server.stop()


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore:livewidget:RuntimeWarning")  # the restart is said as it happens
def test_history_lost_in_a_restart_is_said_once(comms):
    """A server restarted without its history (in memory only): the widget says events may be missing."""
    port = free_port()
    server = LocalServer(port=port).start()
    feed = None
    try:
        client = sdk(server)
        feed = livewidget.Feed("hist-lost", **creds(server))
        wait_for(lambda: all(feed._receiver.protocol.channels.values()))
        client.trigger("hist-lost", "e", {"n": 1})
        feed.wait(1)
        server.stop()
        wait_for(lambda: feed._receiver.state != "connected", timeout=10)
        server = LocalServer(port=port, apps=server.apps).start()
        sdk(server).trigger("hist-lost", "e", {"n": 2})  # on the new stream, before the kernel is back
        feed.wait(2, timeout=30)
        wait_for(lambda: "may be missing" in feed.error, timeout=5)
        assert "hist-lost" in feed.error and "history was lost" in feed.error
        assert feed.df["n"].tolist() == [1, 2]  # the new stream's events, from the fallback rewind
    finally:
        if feed is not None:
            feed.close()
        server.stop()


def test_protocol_without_history_server_works_as_before():
    """Events without positions (hosted Pusher, Soketi): nothing is marked, nothing deduplicated, and
    resubscriptions carry no rewind."""
    proto = ClientProtocol("key", "secret")
    proto.subscribe("plain", {"count": 10})
    proto.connection_opened(0.0)
    proto.receive('{"event":"pusher:connection_established","data":"{\\"socket_id\\":\\"1.2\\"}"}', 0.0)
    sent = proto.data_to_send()
    assert '"rewind": {"count": 10}' in sent[0]
    proto.receive('{"event":"pusher_internal:subscription_succeeded","channel":"plain","data":"{}"}', 0.0)
    a = proto.receive('{"event":"e","channel":"plain","data":"1"}', 0.0)
    b = proto.receive('{"event":"e","channel":"plain","data":"1"}', 0.0)
    assert [e.history for e in a + b] == [False, False] and len(a + b) == 2
    assert proto.history_available == {"plain": False}
    proto.connection_lost()
    proto.connection_opened(1.0)
    proto.receive('{"event":"pusher:connection_established","data":"{\\"socket_id\\":\\"1.3\\"}"}', 1.0)
    assert "rewind" not in proto.data_to_send()[0]


def test_protocol_dedupes_by_position_and_resumes_from_it():
    proto = ClientProtocol("key")
    proto.subscribe("c", {"count": 2})
    proto.connection_opened(0.0)
    proto.receive('{"event":"pusher:connection_established","data":"{\\"socket_id\\":\\"1.2\\"}"}', 0.0)
    proto.data_to_send()
    proto.receive('{"event":"pusher_internal:subscription_succeeded","channel":"c","data":"{}"}', 0.0)

    def ev(serial: int) -> list[Any]:
        frame = f'{{"event":"e","channel":"c","data":"{serial}","serial":{serial},"stream_id":"s1"}}'
        return proto.receive(frame, 0.0)

    replayed = ev(4) + ev(5)
    done = '{"event":"pusher:rewind_complete","channel":"c","data":{"complete":false,"historical_count":2,'
    proto.receive(done + '"serial":5,"stream_id":"s1","reason":"truncated"}}', 0.0)
    live = ev(6) + ev(6) + ev(5)  # a repeat is dropped
    assert [(e.serial, e.history) for e in replayed + live] == [(4, True), (5, True), (6, False)]
    proto.connection_lost()
    proto.connection_opened(1.0)
    proto.receive('{"event":"pusher:connection_established","data":"{\\"socket_id\\":\\"1.3\\"}"}', 1.0)
    frame = proto.data_to_send()[0]
    assert '"rewind": {"count": 2, "serial": 6, "stream_id": "s1"}' in frame
    proto.receive('{"event":"pusher_internal:subscription_succeeded","channel":"c","data":"{}"}', 1.0)
    assert [(e.serial, e.history) for e in ev(7)] == [(7, False)]  # recovered, not first history
    gap = proto.receive(done + '"serial":7,"stream_id":"s1","reason":"truncated"}}', 1.0)
    assert [e.event for e in gap] == ["pusher:rewind_complete", "livewidget:history_gap"]

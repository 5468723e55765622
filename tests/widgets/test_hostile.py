"""Hostile input to the kernel side: deeply nested events, malformed handshakes, a failing handler.

Issue 15 item 1: one event nested ~1,000 levels (over REST, or a presence member's client event) used
to end the kernel receiver for good while the widget still said ``connected``; a malformed
``pusher:connection_established`` ended it too. Here the real server and real publishers send them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from livewidget._config import Settings
from livewidget._loop import submit
from livewidget._publish import Publisher
from livewidget.receiver import Receiver
from livewidget.server import LocalServer

from .conftest import creds, wait_for

DEEP = "[" * 1000 + "]" * 1000  # 2 KB, far under the size limit


def settings_of(server: LocalServer) -> Settings:
    return Settings(
        app_id=server.app_id, key=server.key, secret=server.secret, host=server.host, port=server.port
    )


def test_deep_rest_events_are_recorded_as_undecodable_and_the_feed_goes_on(server, make_feed):
    """Three deep events over REST: kept as raw text, counted, said once; later events recorded."""
    feed = make_feed("hostile-rest")
    pub = Publisher(settings_of(server))
    with pytest.warns(RuntimeWarning, match="could not be decoded") as caught:
        for _ in range(3):
            pub.publish("hostile-rest", "deep", DEEP, wait=True)
        pub.publish("hostile-rest", "fine", {"ok": 1}, wait=True)
        feed.wait(4, timeout=10)
        wait_for(lambda: "could not be decoded" in feed.error)
    assert len([w for w in caught if "could not be decoded" in str(w.message)]) == 1
    assert [e["event"] for e in feed.events] == ["deep", "deep", "deep", "fine"]
    assert feed.events[0]["data"] == DEEP and feed.events[-1]["data"] == {"ok": 1}
    assert feed._receiver is not None and feed._receiver.undecodable == 3
    assert feed._receiver.state == "connected" and feed.status == "connected"
    pub.close()


def test_deep_client_event_from_a_presence_member(server, comms):
    """A member of a presence room sends a deep client event: the Chat and a Feed on it go on."""
    import livewidget

    room = "hostile-room"
    channel = f"presence-chat-{room}"
    with pytest.warns(RuntimeWarning, match="could not be decoded"):
        chat = livewidget.Chat(room, user="bob", **creds(server))
        feed = livewidget.Feed(channel, user={"id": "carol"}, **creds(server))
        try:
            for w in (chat, feed):
                assert w._receiver is not None
                wait_for(
                    lambda w=w: (
                        w._receiver.state == "connected" and all(w._receiver.protocol.channels.values())
                    )
                )
            mallory = Receiver(settings_of(server), [channel], lambda e: None, user={"id": "mallory"}).start()
            try:
                wait_for(lambda: mallory.state == "connected" and all(mallory.protocol.channels.values()))
                for name in ("client-chat-message", "client-chat-history", "client-x"):
                    mallory.trigger(channel, name, DEEP)
                piece = {"id": "m-1", "t": int(time.time() * 1000), "text": "still here"}
                time.sleep(0.3)  # the server allows 10 client events a second
                mallory.trigger(channel, "client-chat-message", piece)
                wait_for(lambda: [m["text"] for m in chat.messages] == ["still here"], timeout=10)
                assert chat.messages[0]["user_id"] == "mallory"
                feed.wait(4, timeout=10)
                assert feed.events[0]["data"] == DEEP and feed.status == "connected"
                wait_for(lambda: chat.status == "connected" and "could not be decoded" in chat.error)
            finally:
                mallory.stop()
        finally:
            chat.close()
            feed.close()


class FakeServer:
    """A WebSocket server that sends ``first`` as the handshake of its first connection, then behaves."""

    def __init__(self, first: str) -> None:
        self.first = first
        self.connections = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        if self.connections == 1:
            await ws.send_str(self.first)
        else:
            await ws.send_str(
                json.dumps(
                    {"event": "pusher:connection_established", "data": json.dumps({"socket_id": "1.2"})}
                )
            )
            async for msg in ws:
                frame = json.loads(msg.data)
                if frame.get("event") == "pusher:subscribe":
                    name = frame["data"]["channel"]
                    await ws.send_str(
                        json.dumps(
                            {"event": "pusher_internal:subscription_succeeded", "channel": name, "data": "{}"}
                        )
                    )
                    await ws.send_str(json.dumps({"event": "after", "channel": name, "data": '{"n": 1}'}))
        async for _ in ws:  # keep the first connection open: the client must close it
            pass
        return ws

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/app/{key}", self._ws)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
def fake_server(request: pytest.FixtureRequest) -> Iterator[FakeServer]:
    srv = FakeServer(request.param)
    submit(srv.start()).result(10)
    yield srv
    submit(srv.stop()).result(10)


BAD_HANDSHAKES = [
    json.dumps({"event": "pusher:connection_established", "data": "{}"}),
    json.dumps({"event": "pusher:connection_established", "data": "[1]"}),
    json.dumps({"event": "pusher:connection_established", "data": json.dumps({"socket_id": 5})}),
    json.dumps({"event": "pusher:connection_established", "data": DEEP}),
    json.dumps({"event": "pusher:connection_established"}),
]


@pytest.mark.parametrize(
    "fake_server", BAD_HANDSHAKES, indirect=True, ids=["obj", "list", "int", "deep", "none"]
)
def test_malformed_handshake_never_looks_connected_and_reconnects(fake_server):
    """A malformed connection_established: 'unavailable' (never 'connected'), then a new connection."""
    settings = Settings(app_id="1", key="k", secret="s", host="127.0.0.1", port=fake_server.port)
    states: list[tuple[str, str]] = []
    events: list[Any] = []
    receiver = Receiver(settings, ["c"], events.append, lambda s, d: states.append((s, d))).start()
    try:
        wait_for(lambda: bool(events), timeout=15)
        assert events[0].event == "after" and events[0].data == {"n": 1}
        names = [s for s, _ in states]
        assert names.index("unavailable") < names.index("connected")
        assert names[: names.index("unavailable")] == ["connecting"]  # never 'connected' on the bad one
        assert any("malformed pusher:connection_established" in d for s, d in states if s == "unavailable")
        assert fake_server.connections == 2
    finally:
        receiver.stop()


def test_a_failing_handler_stays_with_its_frame_and_the_receiver_reconnects(server):
    """An unexpected exception while handling a frame ends that connection only: the receiver says
    'unavailable' (never stays 'connected'), reconnects with backoff and receives again."""
    states: list[str] = []
    got: list[Any] = []
    receiver = Receiver(
        settings_of(server), ["hostile-bug"], got.append, lambda s, d: states.append(s)
    ).start()
    try:
        wait_for(lambda: receiver.state == "connected" and all(receiver.protocol.channels.values()))
        real = receiver.protocol.receive
        broken = threading.Event()

        def receive(text: str, now: float) -> Any:
            if "boom" in text and not broken.is_set():
                broken.set()
                raise RuntimeError("a bug")
            return real(text, now)

        receiver.protocol.receive = receive  # type: ignore[method-assign]
        pub = Publisher(settings_of(server))
        pub.publish("hostile-bug", "boom", 1, wait=True)
        wait_for(lambda: broken.is_set() and receiver.state != "connected", timeout=5)
        assert receiver.state == "unavailable"
        wait_for(
            lambda: receiver.state == "connected" and all(receiver.protocol.channels.values()), timeout=15
        )
        pub.publish("hostile-bug", "after", 2, wait=True)
        wait_for(lambda: [e.event for e in got] == ["after"], timeout=10)
        pub.close()
    finally:
        receiver.stop()


HOSTILE_DATA = [
    '{"job": "j1", "status": ["running"]}',
    '{"job": "j2", "status": {"x": 1}, "parent": "p"}',
    '{"job": "j3", "status": "running", "n": "abc", "total": [1], "parent": "p", "rate": "fast"}',
    '{"job": "j4", "status": "done", "parent": "p", "t": 1e400, "elapsed": -1e400, "n": 1e400}',
    '{"job": "j5", "parent": ["p"], "desc": {"a": 1}, "host": [1]}',
    '{"x": NaN, "step": Infinity, "loss": -Infinity}',
    "NaN",
    '{"step": "a", "loss": {"x": 1}}',
    '[{"step": 1}, {"step": null, "loss": 2}, 5, "x", [1, 2]]',
    '{"step": 1e400, "loss": 1e400}',
    '{"step": 1, "loss": 0.5, "series": ["a"]}',
    "[" * 99 + "]" * 99,
    '{"id": 5, "text": ["x"], "user": "mallory", "t": "now"}',
]


def test_hostile_data_never_breaks_a_widget(server, comms):
    """Odd but valid JSON (wrong types, NaN/Infinity, overflowing numbers, lists of anything) sent to a
    Feed, a LiveChart and a ProgressBoard on one channel: each keeps recording, and its coalesced
    flush (what reaches the views) keeps working."""
    import livewidget

    channel = "hostile-data"
    widgets = [
        livewidget.Feed(channel, **creds(server)),
        livewidget.LiveChart(channel, "progress", y="loss", x="step", by="series", **creds(server)),
        livewidget.ProgressBoard(channel, **creds(server)),
    ]
    try:
        for w in widgets:
            wait_for(
                lambda w=w: w._receiver.state == "connected" and all(w._receiver.protocol.channels.values())
            )
        pub = Publisher(settings_of(server))
        for text in HOSTILE_DATA:
            pub.publish(channel, "progress", text, wait=True)
        pub.publish(
            channel, "progress", {"job": "ok", "status": "running", "step": 2, "loss": 0.25}, wait=True
        )
        pub.close()
        for w in widgets:
            w.wait(len(HOSTILE_DATA) + 1, timeout=15)
            w._flush()  # raises if a recorded state poisoned it
            w._dirty = w._history_dirty = True
            w._last_history = 0.0
            w._flush()
            assert w.status == "connected" and w._receiver.callback_failures == 0
            # what the views parse is strict JSON (JSON.parse refuses NaN and Infinity)
            for line in [json.dumps(w.last, allow_nan=False), *w._history.decode().splitlines()]:
                json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in a view's JSON"))
        board = widgets[2]
        board._flush()
        assert board.jobs["ok"]["status"] == "running"
        assert isinstance(board._groups, dict)
    finally:
        for w in widgets:
            w.close()

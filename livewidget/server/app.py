"""The asyncio transport: WebSocket (protocol 7) and the REST API on one port.

Thin on purpose: bytes are parsed by :mod:`._wire` (sans-I/O HTTP/1.1 and WebSocket), frames and
requests go to :mod:`livewidget.protocol` with the current time, and the actions it returns are carried
out here. The only decisions made here are about sockets: how to write one frame to many clients
cheaply, when a client that does not read must go (4100), and when an idle or slow socket is closed.

One small :class:`asyncio.Protocol` per socket, driven by callbacks: an idle WebSocket is that object,
its frame parser and the protocol's :class:`~livewidget.protocol.Connection`, with no task, no coroutine
frame and no retained HTTP request (what decides how many idle clients a process holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import struct
import time
from collections.abc import Iterable
from typing import Any

from ..exceptions import RestError
from ..protocol import Action, AppConfig, Apps, Close, CloseCode, Connection, Hub, RestResponse, Send, Webhook
from ..protocol.history import Forget, Store, StreamEvent, sse_event
from ..protocol.messages import dumps, error_frame
from ..protocol.rest import handle_rest, is_stream, route_stream
from ._wire import (
    FrameParser,
    HttpError,
    Request,
    RequestParser,
    WsClose,
    WsFail,
    WsMessage,
    WsPing,
    close_frame,
    handshake,
    pong_frame,
    response,
    response_bytes,
    text_frame,
    upgrade_required,
)
from .adapters import Adapter, LocalAdapter
from .history import HistoryDriver, MemoryHistory
from .webhooks import WebhookSender

__all__ = ["PusherServer"]

log = logging.getLogger("livewidget.server")

# /app/{key}, after any path prefix (pusher-js wsPath; reference §1.1)
_WS_PATH = re.compile(r"\A(?:.*)/app/([^/]+)/?\Z")
_FRAME_TOO_BIG_FACTOR = 4  # the hard cap on a message, as a multiple of max_frame_size
_LINGER = 3.0  # seconds a closing client gets to finish sending and to answer our close frame
_REQUEST_TIMEOUT = 10.0  # seconds for a request head, or without progress in a body (slowloris)
_KEEPALIVE_TIMEOUT = 75.0  # seconds an idle HTTP keep-alive connection is kept
_DEFAULT_CAP = 64 * 1024 * _FRAME_TOO_BIG_FACTOR  # for a refused (unknown) app key
_OK = response(200, {"ok": True})
_EMPTY = response_bytes(200, b"{}")  # what a successful trigger answers
_HEALTH = ("/", "/ready", "/health")
_text_frame = text_frame  # the fan-out's encoder (kept under its old name)
_SSE_KEEPALIVE = 15.0  # seconds between comments on an idle event stream, so proxies keep it open
# A stream's answer has no length: it ends when the connection does (RFC 9112 §6.3). No buffering by
# proxies (nginx honours X-Accel-Buffering), no caching.
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-store\r\n"
    b"X-Accel-Buffering: no\r\nConnection: close\r\n\r\nretry: 1000\n\n"
)


class _Conn(asyncio.Protocol):
    """One socket: HTTP requests until an upgrade, then a WebSocket (the protocol's ``conn.transport``).

    ``closing`` and ``transport`` are read by :meth:`PusherServer._run`'s fan-out loop.
    """

    __slots__ = (
        "closing",
        "conn",
        "hub",
        "parser",
        "pending",
        "server",
        "sse",
        "t_last",
        "t_start",
        "timer",
        "transport",
        "ws",
    )

    def __init__(self, server: PusherServer) -> None:
        self.server = server
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.closing = False  # a close frame was sent or the socket is going: write nothing more
        self.parser: RequestParser | None = None  # HTTP mode
        self.ws: FrameParser | None = None  # WebSocket mode
        self.hub: Hub | None = None  # the app, until the WebSocket has ended
        self.conn: Connection | None = None
        # HTTP: a REST call awaiting the cluster; WebSocket: frames queued behind one (kept in order)
        self.pending: Any = None
        self.t_start = 0.0  # monotonic time the current HTTP request began (0: none in progress)
        self.t_last = 0.0  # monotonic time of the last bytes received in HTTP mode
        self.timer: asyncio.TimerHandle | None = None
        self.sse: str | None = None  # Server-Sent Events mode: the channel this socket streams

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio and uvloop both set TCP_NODELAY on accepted sockets: frames are written whole.
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.parser = RequestParser(self.server._max_request)
        self.t_last = time.monotonic()
        self.server._http.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            if self.ws is not None:
                self._ws_data(data)
            elif self.parser is not None:
                self.t_last = time.monotonic()
                self.parser.feed(data)
                if type(self.pending) is int:  # a publish awaiting its commit: hold the rest
                    self.transport.pause_reading()
                self._http_loop()
            # else: lingering after a refusal; input is read and dropped (see _linger)
        except Exception:
            log.exception("error on a connection; closing it")
            self._crash()

    def eof_received(self) -> bool | None:
        # The client will send nothing more. A REST answer still on its way is written first; the
        # sweep then closes the connection as idle (t_last: long ago).
        if self.parser is not None and self.pending is not None:
            self.t_last = -1e9
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        server._http.discard(self)
        server._ws.discard(self)
        self.closing = True
        self.parser = None
        if self.sse is not None:
            server._sse.discard(self)
            if self.hub is not None:
                self.hub.close_stream(self, self.sse)
            self.hub = None
            self.sse = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            self._ws_ended()
        except Exception:  # pragma: no cover - a bug must not leak the connection's state silently
            log.exception("error closing a connection")

    # ------------------------------------------------------------------ HTTP

    def _http_loop(self) -> None:
        """Answer the complete requests received so far, in order (pipelining, RFC 9112 §9.3.2)."""
        parser = self.parser
        while parser is not None and self.pending is None and not self.transport.is_closing():
            try:
                req = parser.next()
            except HttpError as exc:
                self._refuse(exc.status, exc.message)
                return
            if req is None:
                if parser.expects_continue():
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # RFC 9110 §10.1.1
                break
            self._request(req)
            parser = self.parser  # None after an upgrade or a close
        if parser is not None:
            busy = parser.in_head or parser.in_body
            if not busy:
                self.t_start = 0.0
            elif not self.t_start:
                self.t_start = time.monotonic()

    def _request(self, req: Request) -> None:
        self.t_start = 0.0
        server = self.server
        path = req.path
        try:
            m = _WS_PATH.match(path)
            if m is not None and req.headers.get("upgrade", "").lower() == "websocket":
                self._upgrade(req, m[1])
                return
            head = req.method == "HEAD"
            if req.method == "GET" and path in _HEALTH:
                self._reply(req, _OK)
            elif req.method == "GET" and path == "/stats":
                self._reply(req, response(200, server.stats(), keep_alive=req.keep_alive))
            elif is_stream(req.method, path):
                self._stream(req)
            elif server._cluster is not None:
                self._cluster_rest(req)
            else:
                # handle_rest is synchronous: the local adapter answers inline, without a task.
                resp = handle_rest(
                    server.apps, req.method, path, req.query(), req.body, time.time(), raw_path=req.raw_path
                )
                ticket = 0
                if resp.hub is not None and resp.actions:
                    ticket = server._carry_out(resp.hub, resp.actions)
                if ticket:
                    self._reply_when_stored(req, resp, ticket)
                else:
                    self._reply(req, self._encode(resp, req, head))
        except Exception:
            log.exception("error handling %s %s", req.method, req.raw_path)
            self._refuse(500, "Internal server error")

    @staticmethod
    def _encode(resp: RestResponse, req: Request, head: bool) -> bytes:
        if resp.status == 200 and not resp.body and req.keep_alive and not head:
            return _EMPTY
        return response(resp.status, resp.body, keep_alive=req.keep_alive, head=head)

    def _reply(self, req: Request, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if req.keep_alive:
            self.transport.write(data)
            return
        if data is _OK:
            data = response(200, {"ok": True}, keep_alive=False)
        self.transport.write(data)
        self._linger()

    def _reply_when_stored(self, req: Request, resp: RestResponse, ticket: int) -> None:
        """Answer a publish once the history holds its events: a 2xx means stored (it survives a crash).

        Requests behind it wait (answers stay in order); meanwhile other publishers share the commit.
        """
        history = self.server.history
        assert history is not None
        # Reading goes on (no pause/resume system calls per publish); data_received pauses it if the
        # client sends more meanwhile, so what waits stays small.
        self.pending = ticket

        def stored(error: str | None) -> None:
            self.pending = None
            if self.transport.is_closing():
                return
            if not self.transport.is_reading():
                self.transport.resume_reading()
            try:
                if error is not None:
                    self._reply(req, response(507, {"error": error}, keep_alive=req.keep_alive))
                else:
                    self._reply(req, self._encode(resp, req, req.method == "HEAD"))
                self._http_loop()
            except Exception:  # pragma: no cover - as in data_received
                log.exception("error on a connection; closing it")
                self._crash()

        history.when_stored(ticket, stored)

    def _stream(self, req: Request) -> None:
        """``GET /apps/{id}/channels/{name}/stream``: this socket becomes a Server-Sent Events stream
        (WHATWG HTML, server-sent events) of the channel: what it asked to replay, then live events."""
        server = self.server
        now = time.time()
        try:
            hub, name, rewind = route_stream(
                server.apps, req.path, req.query(), now, req.raw_path, req.headers.get("last-event-id")
            )
        except RestError as exc:
            self._reply(req, response(exc.status, {"error": exc.message}, keep_alive=req.keep_alive))
            return
        self.parser = None  # nothing more is read from this socket; what arrives is dropped
        server._http.discard(self)
        server._sse.add(self)
        self.hub = hub
        self.sse = name
        replay = hub.open_stream(self, name, rewind, now)
        out = [_SSE_HEAD]
        if replay is not None:
            stream_id = replay.position.stream_id
            out += [sse_event(stream_id, entry) for entry in replay.entries]
            out.append(b"event: pusher:rewind_complete\ndata: %s\n\n" % dumps(replay.summary()).encode())
        self.transport.write(b"".join(out))

    def _cluster_rest(self, req: Request) -> None:
        """A REST call through the clustered adapter: one at a time per connection, answered in order."""
        cluster = self.server._cluster
        assert cluster is not None
        self.transport.pause_reading()
        coro = cluster.rest(
            self.server.apps, req.method, req.path, req.query(), req.body, time.time(), req.raw_path
        )
        task = self.server._spawn(coro)
        self.pending = task

        def done(task: asyncio.Task[RestResponse]) -> None:
            self.pending = None
            if task.cancelled() or self.transport.is_closing():
                return
            self.transport.resume_reading()
            try:
                resp = task.result()
            except Exception:
                log.exception("error handling %s %s", req.method, req.raw_path)
                self._refuse(500, "Internal server error")
                return
            try:
                self._reply(req, self._encode(resp, req, req.method == "HEAD"))
                self._http_loop()  # requests pipelined behind this one
            except Exception:  # pragma: no cover - as in data_received
                log.exception("error on a connection; closing it")
                self._crash()

        task.add_done_callback(done)

    def _refuse(self, status: int, message: str) -> None:
        """Answer an HTTP error and close the connection (the input cannot be trusted any more)."""
        if not self.transport.is_closing():
            self.transport.write(response(status, {"error": message}, keep_alive=False))
        self._linger()

    def _linger(self) -> None:
        """Close after an answer without resetting it away (RFC 9112 §9.6).

        Closing a socket with unread input makes the kernel send a reset, which can destroy the answer
        before the client reads it. So our side is shut down (the client sees the end of the answer),
        what still arrives is read and dropped, and the socket is closed when the client closes or
        after :data:`_LINGER` seconds.
        """
        self.parser = None  # stays in server._http (for stop()); the sweep skips it
        tr = self.transport
        if tr.is_closing():
            return
        if tr.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                tr.write_eof()
        self._close_later()

    def _close_later(self) -> None:
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(_LINGER, self.transport.close)

    def _crash(self) -> None:
        """An unexpected error in this connection's handling: close it, never the server."""
        tr = self.transport
        if not tr.is_closing():
            with contextlib.suppress(Exception):
                if self.ws is not None and not self.closing:
                    tr.write(close_frame(1011, "Internal server error"))  # RFC 6455 §7.4.1
                elif self.parser is not None and self.pending is None:
                    tr.write(response(500, {"error": "Internal server error"}, keep_alive=False))
        self.closing = True
        tr.close()

    # ------------------------------------------------------------------ WebSocket

    def _upgrade(self, req: Request, key: str) -> None:
        server = self.server
        try:
            accept = handshake(req)
        except HttpError as exc:
            if exc.status == 426:
                self.transport.write(upgrade_required(exc.message))
                self._linger()
            else:
                self._refuse(exc.status, exc.message)
            return
        assert self.parser is not None
        rest = self.parser.take_rest()
        self.parser = None
        server._http.discard(self)
        server._ws.add(self)
        self.t_start = self.t_last = 0.0
        self.transport.write(accept)
        hub = server.apps.by_key.get(key)
        # Over the hard cap a message is refused with 4100 (pusher-js backs off and reconnects, only
        # this connection is affected); between max_frame_size and the cap it gets a pusher:error.
        self.ws = FrameParser(server._frame_caps.get(key, _DEFAULT_CAP), CloseCode.OVER_CAPACITY)
        refusal = server._refusal(hub, key, req.query_get("protocol"))
        if refusal is not None:
            code, reason = refusal
            self.transport.write(text_frame(error_frame(reason, code).encode()))
            self._send_close(code, reason)
        else:
            assert hub is not None
            self.hub = hub
            self.conn, actions = hub.open(time.time(), self)
            server._run(hub, actions)
        if rest:
            self._ws_data(rest)

    def _ws_data(self, data: bytes) -> None:
        ws = self.ws
        assert ws is not None
        for event in ws.feed(data):
            kind = type(event)
            if kind is WsMessage:
                if not self.closing:
                    self._message(event)  # type: ignore[arg-type]
            elif kind is WsPing:
                if not self.closing:
                    self.transport.write(pong_frame(event.payload))  # type: ignore[union-attr]
            elif kind is WsClose:
                # RFC 6455 §5.5.1, §7.1.1: answer with the same code, then the server closes the TCP
                # connection first.
                if not self.closing:
                    self.closing = True
                    self.transport.write(close_frame(event.code))  # type: ignore[union-attr]
                self._ws_ended()
                self.transport.close()
                return
            elif kind is WsFail:
                assert isinstance(event, WsFail)
                if event.code == CloseCode.OVER_CAPACITY:
                    # Refused from its header while the client may still be sending it. The parser
                    # drops the rest as it arrives and still reads the client's close frame: closing
                    # now, with input unread, would make the kernel answer with a reset that destroys
                    # our 4100 close frame before the client reads it (RFC 6455 §7.1.1).
                    log.info("refused a message over the size limit: %s", event.reason)
                    reason = "Frame over the size limit"
                else:
                    reason = event.reason
                self._send_close(event.code, reason)
                if ws.failed and self.transport.can_write_eof():
                    # Nothing more can be parsed, not even the client's close frame: shut our side so
                    # the client sees the end at once and closes too (RFC 6455 §7.1.1, §7.1.7).
                    with contextlib.suppress(OSError, RuntimeError):
                        self.transport.write_eof()
                self._ws_ended()

    def _message(self, event: WsMessage) -> None:
        hub, conn = self.hub, self.conn
        if hub is None or conn is None:
            return  # a refused connection: nothing is read any more
        server = self.server
        max_frame = hub.config.max_frame_size
        if event.size > max_frame:
            msg = f"Frame of {event.size} bytes is over the limit of {max_frame}"
            server._run(hub, [Send((conn,), error_frame(msg, None))])
            return
        cluster = server._cluster
        if cluster is None:
            server._run(hub, hub.receive(conn, event.data, time.time()))
        elif self.pending is not None:
            self.pending.append(event.data)
        else:
            # The cluster's answer is awaited before the next frame of this socket is handled: frames
            # of one connection stay in order. Reading pauses meanwhile, so the queue stays short.
            self.pending = [event.data]
            self.transport.pause_reading()
            server._spawn(self._drain(hub, conn))

    async def _drain(self, hub: Hub, conn: Connection) -> None:
        cluster = self.server._cluster
        assert cluster is not None
        queue: list[str | bytes] = self.pending
        try:
            while queue:
                data = queue.pop(0)
                try:
                    await cluster.receive(hub, conn, data, time.time())
                except Exception:
                    log.exception("error handling a frame from %s", conn.socket_id)
        finally:
            self.pending = None
            if self.hub is None:  # the socket ended meanwhile: the hub learns it after the frames
                cluster.closed(hub, conn, time.time())
            elif not self.transport.is_closing():
                self.transport.resume_reading()

    def _send_close(self, code: int, reason: str) -> None:
        """Start the closing handshake (RFC 6455 §7.1.2): our close frame, then wait (bounded) for the
        client's, reading and dropping what arrives before it."""
        if not self.closing and not self.transport.is_closing():
            self.transport.write(close_frame(code, reason))
        self.closing = True
        self._close_later()

    def _ws_ended(self) -> None:
        """Tell the hub, once, that this connection is gone."""
        hub, conn = self.hub, self.conn
        if hub is None or conn is None:
            return
        self.hub = None
        if self.pending is not None:
            return  # _drain tells it once the queued frames are handled
        cluster = self.server._cluster
        if cluster is None:
            self.server._run(hub, hub.close(conn, time.time()))
        else:
            cluster.closed(hub, conn, time.time())


class PusherServer:
    """A Pusher-compatible server for ``apps``, listening on ``host:port`` (0 picks a free port).

    ``adapter`` shares the apps with other processes (:class:`~.adapters.RedisAdapter`); by default
    this process serves them alone (:class:`~.adapters.LocalAdapter`).

    ``history`` keeps each channel's recent events (positions, rewind, the history API): in memory by
    default (:class:`~.history.MemoryHistory`), on disk with :class:`~.history.SQLiteHistory`; ``False``
    turns it off (a plain Pusher server). With a clustered adapter, the adapter's (Redis) is used.
    """

    def __init__(
        self,
        apps: Iterable[AppConfig],
        *,
        host: str = "127.0.0.1",
        port: int = 6001,
        reuse_port: bool = False,
        adapter: Adapter | None = None,
        history: HistoryDriver | bool | None = None,
    ) -> None:
        self.adapter = adapter or LocalAdapter()
        # The clustered adapter, when frames and REST calls must go through it (else a shortcut).
        self._cluster = self.adapter if self.adapter.clustered else None
        if self._cluster is not None:
            # A cluster's history is shared through the adapter's store (Redis), or there is none.
            self.history: HistoryDriver | None = self.adapter.history if history is not False else None
        elif history is None or history is True:
            self.history = MemoryHistory()
        else:
            self.history = history or None
        make = self.history.history_for if self.history is not None else None
        self.apps = Apps(apps, hub_class=self.adapter.hub_class, history=make)
        self.host = host
        self.port = port
        self._reuse_port = reuse_port
        self._server: asyncio.Server | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._http: set[_Conn] = set()  # sockets not upgraded (HTTP timeouts apply while parser is set)
        self._ws: set[_Conn] = set()  # upgraded sockets
        self._sse: set[_Conn] = set()  # Server-Sent Events streams
        self._sse_keepalive = 0.0
        self._background: set[asyncio.Task[Any]] = set()
        self.webhooks: WebhookSender | None = None
        configs = [hub.config for hub in self.apps]
        self._max_request = max(c.max_request_size for c in configs)
        # one int per app, shared by its connections' frame parsers
        self._frame_caps = {c.key: c.max_frame_size * _FRAME_TOO_BIG_FACTOR for c in configs}
        self._tick_every = min(
            [1.0]
            + [c.pong_timeout / 4 for c in configs]
            + [c.activity_timeout / 4 for c in configs]
            + [c.webhook_delay / 4 for c in configs if c.webhook_urls]
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind and start serving; ``self.port`` is the real port afterwards."""
        self.webhooks = WebhookSender()
        if self.history is not None:
            await self.history.start(self.apps, self._run)
        await self.adapter.start(self.apps, self._run)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Conn(self), self.host, self.port, reuse_port=self._reuse_port or None, backlog=4096
        )
        sockets = self._server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._tick_task = loop.create_task(self._ticker())
        log.info("livewidget server listening on %s:%d", self.host, self.port)

    async def stop(self, grace: float = 2.0) -> None:
        """Tell every client to reconnect (4200), then stop within about ``grace`` seconds."""
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
        if self._server is not None:
            self._server.close()  # no new connections
        for hub in self.apps:
            self._run(hub, hub.shutdown())
        deadline = time.monotonic() + grace
        while self._ws and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # clients answer the 4200 close frame, then we close
        for c in list(self._ws) + list(self._http) + list(self._sse):
            c.closing = True
            c.transport.abort()
        await asyncio.sleep(0)  # let connection_lost run
        if self._background:  # frames and REST calls still with the cluster: bounded
            left = max(0.1, deadline - time.monotonic())
            _, late = await asyncio.wait(list(self._background), timeout=left)
            for task in late:
                task.cancel()
        await self.adapter.stop()
        if self.history is not None:
            await self.history.stop()
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), max(0.1, deadline - time.monotonic()))
            self._server = None
        if self.webhooks is not None:
            await self.webhooks.close(grace)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self._tick_every)
            now = time.time()
            for hub in self.apps:
                try:
                    self._run(hub, hub.tick(now))
                except Exception:  # pragma: no cover - a bug must not stop heartbeats
                    log.exception("tick failed")
            try:
                self._sweep(time.monotonic())
            except Exception:  # pragma: no cover
                log.exception("sweep failed")
            if self._sse and time.monotonic() >= self._sse_keepalive:
                self._sse_keepalive = time.monotonic() + _SSE_KEEPALIVE
                for c in list(self._sse):
                    if not c.closing:
                        c.transport.write(b": keep-alive\n\n")

    def _sweep(self, now: float) -> None:
        """Close HTTP connections that are idle too long or send a request too slowly (slowloris)."""
        for c in list(self._http):
            parser = c.parser
            if parser is None or c.pending is not None:
                continue
            if parser.in_head and now - c.t_start > _REQUEST_TIMEOUT:
                c._refuse(408, f"Request head not received within {_REQUEST_TIMEOUT:g} s")
            elif parser.in_body and now - c.t_last > _REQUEST_TIMEOUT:
                c._refuse(408, f"Request body stalled for {_REQUEST_TIMEOUT:g} s")
            elif not parser.in_head and not parser.in_body and now - c.t_last > _KEEPALIVE_TIMEOUT:
                self._http.discard(c)
                c.transport.close()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # ------------------------------------------------------------------ carrying out actions

    def _run(self, hub: Hub, actions: list[Action]) -> None:
        self._carry_out(hub, actions)

    def _carry_out(self, hub: Hub, actions: list[Action]) -> int:
        """Carry out ``actions``; returns the history ticket of the last events stored (0: none)."""
        ticket = 0
        for action in actions:
            if type(action) is Send:
                data = _text_frame(action.frame.encode())
                limit = hub.config.max_send_buffer
                for conn in action.targets:
                    peer: _Conn = conn.transport
                    if peer.closing:
                        continue
                    tr = peer.transport
                    tr.write(data)
                    if tr.get_write_buffer_size() > limit:
                        # A client that stops reading must not grow our memory without bound.
                        self._abort(conn, CloseCode.OVER_CAPACITY, "Client is not reading fast enough")
            elif type(action) is Close:
                self._close(action.conn, action.code, action.reason, action.frame)
            elif type(action) is Webhook:
                assert self.webhooks is not None
                self.webhooks.submit(hub.config, action.event)
            elif type(action) is Store:
                assert self.history is not None
                ticket = self.history.store(hub, action)
            elif type(action) is Forget:
                assert self.history is not None
                self.history.forget(action)
            elif type(action) is StreamEvent:
                self._stream_event(hub, action)
        return ticket

    def _stream_event(self, hub: Hub, action: StreamEvent) -> None:
        data = sse_event(action.stream_id, action.entry)
        limit = hub.config.max_send_buffer
        for peer in action.targets:
            tr = peer.transport
            if peer.closing or tr.is_closing():
                continue
            tr.write(data)
            if tr.get_write_buffer_size() > limit:
                # A stream nobody reads must not grow our memory: it ends (EventSource reconnects and
                # resumes from its Last-Event-ID).
                peer.closing = True
                tr.abort()

    def _close(self, conn: Connection, code: int, reason: str, frame: str | None = None) -> None:
        peer: _Conn | None = conn.transport
        if peer is None or peer.closing:
            return
        if frame is not None and not peer.transport.is_closing():
            peer.transport.write(_text_frame(frame.encode()))
        peer._send_close(code, reason)

    def _abort(self, conn: Connection, code: int, reason: str) -> None:
        peer: _Conn = conn.transport
        peer.closing = True
        payload = struct.pack("!H", code) + reason.encode()[:120]
        tr = peer.transport
        # The close frame joins the unread queue; the client may never read it, so drop the socket.
        tr.write(bytes((0x88, len(payload))) + payload)
        tr.abort()
        log.info("closed %s (%d): %s", conn.socket_id, code, reason)

    def stats(self) -> dict[str, Any]:
        """Counters for ``GET /stats``: connections, webhooks, and the adapter's deliveries."""
        webhooks = self.webhooks
        return {
            "connections": sum(len(hub.connections) for hub in self.apps),
            "streams": len(self._sse),
            "webhooks": {"delivered": webhooks.delivered, "failed": webhooks.failed} if webhooks else {},
            "adapter": self.adapter.stats(),
            "history": self._history_stats(),
        }

    def _history_stats(self) -> dict[str, Any]:
        if self.history is None:
            return {}
        apps = {hub.config.app_id: hub.history.stats() for hub in self.apps if hub.history is not None}
        return {**self.history.stats(), "apps": apps}

    @staticmethod
    def _refusal(hub: Hub | None, key: str, protocol: str | None) -> tuple[int, str] | None:
        if hub is None:
            return CloseCode.APP_NOT_FOUND, f"App key {key} does not exist"
        if not hub.config.enabled:
            return CloseCode.APP_DISABLED, "Application disabled"
        if protocol is not None:
            # poxa accepts 5-7 (reference §1.1); absent is tolerated.
            if not protocol.isdigit():
                return CloseCode.INVALID_VERSION, f"Invalid protocol version {protocol!r}"
            if not 5 <= int(protocol) <= 7:
                return CloseCode.UNSUPPORTED_PROTOCOL, f"Unsupported protocol version {protocol}"
        return None

"""The asyncio transport: WebSocket (protocol 7) and the REST API on one port.

Thin on purpose: bytes are parsed by :mod:`._wire` (sans-I/O HTTP/1.1 and WebSocket), frames and
requests go to :mod:`livewidget.protocol` with the current time, and the actions it returns are carried
out here. The only decisions made here are about sockets: how to write one frame to many clients
cheaply, when a client that does not read must go (4100), and when an idle or slow socket is closed.

One small :class:`asyncio.Protocol` per socket, driven by callbacks: an idle WebSocket is that object,
its frame parser and the protocol's :class:`~livewidget.protocol.Connection`, with no task, no coroutine
frame and no retained HTTP request (what decides how many idle clients a process holds).

What one connection may cost is bounded (issue 14; the numbers are :class:`ServerLimits` and the app's
:class:`AppConfig`): bytes buffered for reading (a request's head and body, a WebSocket message in bytes
and in frames), bytes queued for writing (one budget for responses, pongs and events: HTTP stops reading
when its answers are not read, a WebSocket over the budget is closed 4100), the time to send a request,
the time idle before the first byte, and connections per remote address. The server accepts its own
connections so that running out of descriptors sheds idle connections and backs off instead of spinning.
An error while handling one request or frame is answered and counted, and logged at most once per kind
and interval: it never closes another connection, nor floods the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import heapq
import ipaddress
import logging
import re
import socket
import struct
import sys
import time
from collections.abc import Iterable
from typing import Any

from ..exceptions import RestError
from ..protocol import Action, AppConfig, Apps, Close, CloseCode, Connection, Hub, RestResponse, Send, Webhook
from ..protocol.config import ServerLimits
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
_ACCEPT_BATCH = 128  # connections accepted per readiness callback (others wait for the next turn)
_SHED = 16  # idle HTTP connections closed when accept() finds no free descriptor
_OUT_OF_FDS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
# why a connection's reading is paused (bits of _Conn.paused); _STORE: a publish awaits its commit
_WRITE, _READ, _CLUSTER, _STORE = 1, 2, 4, 8
_DEFAULT_CAP = 64 * 1024 * _FRAME_TOO_BIG_FACTOR  # for a refused (unknown) app key
_OK = response(200, {"ok": True})
_EMPTY = response_bytes(200, b"{}")  # what a successful trigger answers
_HEALTH = ("/", "/ready", "/health")
_text_frame = text_frame  # the fan-out's encoder (kept under its old name)
_TOO_MANY = response(429, {"error": "Too many connections from this address"}, keep_alive=False)
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
        "ip",
        "parser",
        "paused",
        "pending",
        "server",
        "sse",
        "t_last",
        "t_open",
        "t_start",
        "timer",
        "transport",
        "ws",
    )

    def __init__(self, server: PusherServer, ip: str = "") -> None:
        self.server = server
        self.ip = ip  # the remote address, counted in server._per_ip while the socket is open
        self.paused = 0  # why reading is paused: _WRITE | _READ | _CLUSTER bits
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.closing = False  # a close frame was sent or the socket is going: write nothing more
        self.parser: RequestParser | None = None  # HTTP mode
        self.ws: FrameParser | None = None  # WebSocket mode
        self.hub: Hub | None = None  # the app, until the WebSocket has ended
        self.conn: Connection | None = None
        # HTTP: a REST call awaiting the cluster; WebSocket: frames queued behind one (kept in order)
        self.pending: Any = None
        self.t_open = time.monotonic()
        self.t_start = 0.0  # monotonic time the current HTTP request began (0: none in progress)
        self.t_last = 0.0  # monotonic time of the last bytes received in HTTP mode (0: none yet)
        self.timer: asyncio.TimerHandle | None = None
        self.sse: str | None = None  # Server-Sent Events mode: the channel this socket streams

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # TCP_NODELAY was set by PusherServer._accept: frames are written whole.
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        server = self.server
        self.parser = RequestParser(server._max_request, server.limits.max_head_size)
        server._http.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            if self.ws is not None:
                self._ws_data(data)
            elif self.parser is not None:
                self.t_last = time.monotonic()
                self.parser.feed(data)
                if type(self.pending) is int:  # a publish awaiting its commit: hold the rest
                    self._pause(_STORE)
                self._http_loop()
            # else: lingering after a refusal; input is read and dropped (see _linger)
        except Exception:
            self.server._note("internal", "error on a connection; closing it", exc_info=True)
            self._crash()

    def pause_writing(self) -> None:
        # The transport's queue is over its high-water mark: the client is not reading our answers.
        # An HTTP client then gets no more answers (and we read no more requests: pipelining obeys
        # backpressure) until it reads. A WebSocket is held to its send budget instead (_Conn._budget):
        # its reading is not paused, so that a slow reader still gets its close handshake.
        if self.ws is None:
            self._pause(_WRITE)

    def resume_writing(self) -> None:
        if self.paused & _WRITE:
            self._resume(_WRITE)
            if self.parser is not None:
                try:
                    self._http_loop()  # the pipelined requests that waited
                except Exception:  # pragma: no cover - as in data_received
                    self.server._note("internal", "error on a connection; closing it", exc_info=True)
                    self._crash()

    def _drop_parser(self) -> None:
        parser, self.parser = self.parser, None
        if parser is not None:
            parser.close()  # llhttp holds its callbacks: free both now, not at the next GC pass

    def _pause(self, why: int) -> None:
        if not self.paused and not self.transport.is_closing():
            self.transport.pause_reading()
        self.paused |= why

    def _resume(self, why: int) -> None:
        if not self.paused & why:
            return
        self.paused &= ~why
        if not self.paused and not self.transport.is_closing():
            self.transport.resume_reading()

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
        server._left(self.ip)
        self.closing = True
        self._drop_parser()
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
            server._note("internal", "error closing a connection", exc_info=True)

    # ------------------------------------------------------------------ HTTP

    def _http_loop(self) -> None:
        """Answer the complete requests received so far, in order (pipelining, RFC 9112 §9.3.2)."""
        parser = self.parser
        tr = self.transport
        while parser is not None and self.pending is None and not self.paused & _WRITE:
            if tr.is_closing():
                return
            try:
                req = parser.next()
            except HttpError as exc:
                self.server._note("http_refused", "refused a request: %d %s", exc.status, exc.message)
                self._refuse(exc.status, exc.message)
                return
            if req is None:
                if parser.expects_continue():
                    tr.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # RFC 9110 §10.1.1
                break
            self._request(req)
            parser = self.parser  # None after an upgrade or a close
        if parser is not None:
            busy = parser.in_head or parser.in_body
            if not busy:
                self.t_start = 0.0
            elif not self.t_start:
                self.t_start = time.monotonic()  # request_timeout runs from the first byte
            # Bytes waiting to be parsed (pipelined behind unread answers) are bounded: stop reading.
            if parser.buffered > self.server.limits.max_read_buffer:
                self._pause(_READ)
            else:
                self._resume(_READ)

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
            server._note("rest_error", "error handling %s %s", req.method, req.raw_path, exc_info=True)
            self._refuse(500, "Internal server error")

    @staticmethod
    def _encode(resp: RestResponse, req: Request, head: bool) -> bytes:
        if resp.status == 200 and not resp.body and req.keep_alive and not head:
            return _EMPTY
        return response(resp.status, resp.body, keep_alive=req.keep_alive, head=head)

    def _reply(self, req: Request, data: bytes) -> None:
        tr = self.transport
        if tr.is_closing():
            return
        if req.keep_alive:
            tr.write(data)
            if tr.get_write_buffer_size() > self.server._max_send:
                self._over_budget()  # one answer bigger than the whole budget: not by backpressure
            return
        if data is _OK:
            data = response(200, {"ok": True}, keep_alive=False)
        tr.write(data)
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
            self._resume(_STORE)
            try:
                if error is not None:
                    self._reply(req, response(507, {"error": error}, keep_alive=req.keep_alive))
                else:
                    self._reply(req, self._encode(resp, req, req.method == "HEAD"))
                self._http_loop()
            except Exception:  # pragma: no cover - as in data_received
                self.server._note("internal", "error on a connection; closing it", exc_info=True)
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
        self._drop_parser()  # nothing more is read from this socket; what arrives is dropped
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
        self._pause(_CLUSTER)
        coro = cluster.rest(
            self.server.apps, req.method, req.path, req.query(), req.body, time.time(), req.raw_path
        )
        task = self.server._spawn(coro)
        self.pending = task

        def done(task: asyncio.Task[RestResponse]) -> None:
            self.pending = None
            if task.cancelled() or self.transport.is_closing():
                return
            self._resume(_CLUSTER)
            server = self.server
            try:
                resp = task.result()
            except Exception:
                server._note("rest_error", "error handling %s %s", req.method, req.raw_path, exc_info=True)
                self._refuse(500, "Internal server error")
                return
            try:
                self._reply(req, self._encode(resp, req, req.method == "HEAD"))
                self._http_loop()  # requests pipelined behind this one
            except Exception:  # pragma: no cover - as in data_received
                server._note("internal", "error on a connection; closing it", exc_info=True)
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
        self._drop_parser()  # stays in server._http (for stop()); the sweep skips it
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

    def _over_budget(self) -> None:
        """More unread bytes queued for this client than its write budget (responses, pongs and events
        together): close it (4100 for a WebSocket, as the fan-out does), never grow memory."""
        tr = self.transport
        self.server._note(
            "over_budget", "closed a client that does not read (%d bytes queued)", tr.get_write_buffer_size()
        )
        if self.ws is not None and not self.closing:
            with contextlib.suppress(Exception):
                tr.write(close_frame(CloseCode.OVER_CAPACITY, "Client is not reading fast enough"))
        self.closing = True
        tr.abort()

    def _budget(self) -> int:
        hub = self.hub
        return hub.config.max_send_buffer if hub is not None else self.server._max_send

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
        self._drop_parser()
        self._resume(_READ)
        server._http.discard(self)
        server._ws.add(self)
        self.t_start = self.t_last = 0.0
        self.transport.write(accept)
        hub = server.apps.by_key.get(key)
        # Over the hard cap a message is refused with 4100 (pusher-js backs off and reconnects, only
        # this connection is affected); between max_frame_size and the cap it gets a pusher:error.
        self.ws = FrameParser(
            server._frame_caps.get(key, _DEFAULT_CAP), CloseCode.OVER_CAPACITY, server.limits.max_fragments
        )
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
                    try:
                        self._message(event)  # type: ignore[arg-type]
                    except Exception:
                        self._frame_error()
            elif kind is WsPing:
                if not self.closing:
                    tr = self.transport
                    tr.write(pong_frame(event.payload))  # type: ignore[union-attr]
                    # Pongs share the send budget with events (issue 14 item 5: a ping flood whose
                    # pongs are never read grew memory without bound).
                    if tr.get_write_buffer_size() > self._budget():
                        self._over_budget()
                        return
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
                    self.server._note("ws_too_big", "refused a message over the size limit: %s", event.reason)
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

    def _frame_error(self) -> None:
        """An error while handling one frame: answered on this connection only (``pusher:error``, as
        Reverb's ``Server::error`` does for what is not a known Pusher error), counted, rate-limited in
        the log; the connection stays open."""
        self.server._note("frame_error", "error handling a frame", exc_info=True)
        conn = self.conn
        if conn is not None and not self.closing:
            self.transport.write(text_frame(error_frame("Internal server error", None).encode()))
            if self.transport.get_write_buffer_size() > self._budget():
                self._over_budget()

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
            self._pause(_CLUSTER)
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
                    self._frame_error()
        finally:
            self.pending = None
            if self.hub is None:  # the socket ended meanwhile: the hub learns it after the frames
                cluster.closed(hub, conn, time.time())
            else:
                self._resume(_CLUSTER)

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
    this process serves them alone (:class:`~.adapters.LocalAdapter`). ``limits`` bounds what one
    connection may cost (:class:`ServerLimits`: timeouts, buffers, connections per address, log rate);
    the per-app limits are in each :class:`AppConfig`.

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
        limits: ServerLimits | None = None,
        history: HistoryDriver | bool | None = None,
    ) -> None:
        self.limits = limits or ServerLimits()
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
        self._listeners: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._per_ip: dict[str, int] = {}  # open connections per remote address
        self._counts: dict[str, int] = {}  # refusals and errors by kind, for /stats
        self._logged: dict[str, list[float]] = {}  # kind -> [time last logged, lines suppressed since]
        self._tick_task: asyncio.Task[None] | None = None
        self._http: set[_Conn] = set()  # sockets not upgraded (HTTP timeouts apply while parser is set)
        self._ws: set[_Conn] = set()  # upgraded sockets
        self._sse: set[_Conn] = set()  # Server-Sent Events streams
        self._sse_keepalive = 0.0
        self._background: set[asyncio.Task[Any]] = set()
        self.webhooks: WebhookSender | None = None
        configs = [hub.config for hub in self.apps]
        self._max_request = max(c.max_request_size for c in configs)
        self._max_send = max(c.max_send_buffer for c in configs)  # an HTTP connection's write budget
        # one int per app, shared by its connections' frame parsers
        self._frame_caps = {c.key: c.max_frame_size * _FRAME_TOO_BIG_FACTOR for c in configs}
        lim = self.limits
        timeouts = (lim.first_byte_timeout, lim.request_timeout, lim.keepalive_timeout)
        self._tick_every = min(
            [1.0]
            + [t / 4 for t in timeouts if t is not None]
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
        loop = self._loop = asyncio.get_running_loop()
        self._listeners = _bind(self.host, self.port, self._reuse_port)
        self.port = self._listeners[0].getsockname()[1]
        for sock in self._listeners:
            loop.add_reader(sock.fileno(), self._accept, sock)
        self._tick_task = loop.create_task(self._ticker())
        log.info("livewidget server listening on %s:%d", self.host, self.port)

    async def stop(self, grace: float = 2.0) -> None:
        """Tell every client to reconnect (4200), then stop within about ``grace`` seconds."""
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
        self._close_listeners()  # no new connections
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
                    self._note("internal", "tick failed", exc_info=True)
            try:
                self._sweep(time.monotonic())
            except Exception:  # pragma: no cover
                self._note("internal", "sweep failed", exc_info=True)
            if self._sse and time.monotonic() >= self._sse_keepalive:
                self._sse_keepalive = time.monotonic() + _SSE_KEEPALIVE
                for c in list(self._sse):
                    if not c.closing:
                        c.transport.write(b": keep-alive\n\n")

    def _sweep(self, now: float) -> None:
        """Close HTTP connections that stay silent, send a request too slowly (slowloris: a deadline for
        the whole request, not per byte) or stay idle between requests too long."""
        lim = self.limits
        first, request, keepalive = lim.first_byte_timeout, lim.request_timeout, lim.keepalive_timeout
        for c in list(self._http):
            parser = c.parser
            if parser is None or c.pending is not None:
                continue
            if parser.in_head or parser.in_body:
                if request is not None and c.t_start and now - c.t_start > request:
                    self._note("http_timeout", "request not received within %g s", request)
                    c._refuse(408, f"Request not received within {request:g} s")
            elif c.t_last == 0.0:
                if first is not None and now - c.t_open > first:
                    self._http.discard(c)
                    c.closing = True
                    c.transport.close()
            elif keepalive is not None and now - c.t_last > keepalive:
                self._http.discard(c)
                c.transport.close()

    # ------------------------------------------------------------------ accepting connections

    def _accept(self, listener: socket.socket) -> None:
        """Accept what is waiting (a bounded batch per turn of the loop), each into a :class:`_Conn`."""
        loop = self._loop
        assert loop is not None
        lim = self.limits
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_FDS:
                    self._out_of_descriptors(listener, exc)
                else:  # ECONNABORTED and the like: that client's problem
                    self._note("accept_error", "accept() failed: %s", exc)
                return
            ip = sys.intern(addr[0]) if isinstance(addr, tuple) else ""  # one string per address
            n = self._per_ip.get(ip, 0)
            cap = lim.max_connections_per_loopback_ip if _loopback(ip) else lim.max_connections_per_ip
            if cap is not None and n >= cap:
                self._note("per_ip_cap", "refused a connection from %s: %d open (the cap)", ip, n)
                with contextlib.suppress(OSError):
                    sock.setblocking(False)
                    sock.send(_TOO_MANY)
                sock.close()
                continue
            self._per_ip[ip] = n + 1
            try:
                sock.setblocking(False)
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # frames are written whole
                self._spawn(self._connect(sock, ip))
            except Exception:  # pragma: no cover - e.g. the loop is closing
                self._left(ip)
                sock.close()
                raise

    async def _connect(self, sock: socket.socket, ip: str) -> None:
        assert self._loop is not None
        try:
            await self._loop.connect_accepted_socket(lambda: _Conn(self, ip), sock)
        except Exception as exc:  # the client reset it meanwhile, or no memory for a transport
            self._left(ip)
            sock.close()
            self._note("accept_error", "could not set up an accepted connection: %s", exc)

    def _left(self, ip: str) -> None:
        n = self._per_ip.get(ip, 0) - 1
        if n > 0:
            self._per_ip[ip] = n
        else:
            self._per_ip.pop(ip, None)

    def _out_of_descriptors(self, listener: socket.socket, exc: OSError) -> None:
        """``accept()`` found no free descriptor (EMFILE/ENFILE). The listening socket stays readable,
        so retrying at once would spin (issue 14 item 4: 100 % CPU and a traceback per attempt). Close
        the oldest HTTP connections that are not serving anything (never sent a request, lingering, or
        idle between requests: slowloris clients among them) and retry soon; with none to close, stop
        accepting for ``accept_backoff`` seconds. Established WebSockets are never shed."""
        loop = self._loop
        assert loop is not None
        shed = self._shed(_SHED)
        self._note(
            "out_of_fds",
            "out of file descriptors (%s) with %d connections open: closed %d idle HTTP connections",
            exc.strerror,
            len(self._http) + len(self._ws) + shed,
            shed,
        )
        with contextlib.suppress(Exception):
            loop.remove_reader(listener.fileno())
        delay = 0.01 if shed else self.limits.accept_backoff
        loop.call_later(delay, self._resume_accepting, listener)

    def _resume_accepting(self, listener: socket.socket) -> None:
        if listener in self._listeners and self._loop is not None:
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    def _shed(self, count: int) -> int:
        candidates = [c for c in self._http if c.pending is None and not c.transport.is_closing()]
        # lingering after a refusal first, then the oldest
        victims = heapq.nsmallest(count, candidates, key=lambda c: (c.parser is not None, c.t_open))
        for c in victims:
            self._http.discard(c)
            c.closing = True
            c.transport.abort()
        return len(victims)

    def _close_listeners(self) -> None:
        listeners, self._listeners = self._listeners, []
        for sock in listeners:
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(sock.fileno())
            sock.close()

    # ------------------------------------------------------------------ logs and counters

    def _note(self, kind: str, msg: str, *args: Any, exc_info: bool = False) -> None:
        """Count an event of ``kind`` and log it, at most one line per kind per ``log_interval``
        (a hostile client must not be able to fill the disk, issue 14 item 4)."""
        self._counts[kind] = self._counts.get(kind, 0) + 1
        now = time.monotonic()
        seen = self._logged.get(kind)
        if seen is not None and now - seen[0] < self.limits.log_interval:
            seen[1] += 1
            return
        suppressed = int(seen[1]) if seen is not None else 0
        self._logged[kind] = [now, 0]
        level = logging.ERROR if exc_info or kind in ("internal", "frame_error") else logging.WARNING
        if kind in ("http_refused", "ws_too_big", "per_ip_cap", "http_timeout"):
            level = logging.INFO
        if suppressed:
            msg += f" ({suppressed} more like it in the last {self.limits.log_interval:g} s)"
        log.log(level, msg, *args, exc_info=exc_info)

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
        self._note("over_budget", "closed %s (%d): %s", conn.socket_id, code, reason)

    def stats(self) -> dict[str, Any]:
        """Counters for ``GET /stats``: connections, webhooks, the adapter's deliveries, and the
        transport's sockets and its refusals and errors by kind (``incidents``)."""
        webhooks = self.webhooks
        return {
            "connections": sum(len(hub.connections) for hub in self.apps),
            "sockets": {"http": len(self._http), "websocket": len(self._ws)},
            "incidents": dict(self._counts),
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


def _loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return ip == ""  # a Unix socket


def _bind(host: str, port: int, reuse_port: bool, backlog: int = 4096) -> list[socket.socket]:
    """Listening sockets for ``host`` (every address it resolves to), all on one port."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, kind, proto, _, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if len(socks) > 1 and port == 0:  # the same free port for every address
                addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
            sock.bind(addr)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks

"""The aiohttp transport: WebSocket (protocol 7) and the REST API on one port.

Thin on purpose: it feeds frames and requests to :mod:`livewidget.protocol` with the current time and
carries out the actions it returns. The only decisions made here are about sockets: how to write one
frame to many clients cheaply, and when a client that does not read must go (4100).
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

from aiohttp import WSCloseCode, WSMsgType, web

from ..protocol import Action, AppConfig, Apps, Close, CloseCode, Connection, Hub, Send, Webhook
from ..protocol.messages import error_frame
from ..protocol.rest import handle_rest
from .adapters import Adapter, LocalAdapter
from .webhooks import WebhookSender

__all__ = ["PusherServer"]

log = logging.getLogger("livewidget.server")

# /app/{key}, after any path prefix (pusher-js wsPath; reference §1.1)
_WS_PATH = re.compile(r"\A(?:.*)/app/([^/]+)/?\Z")
_FRAME_TOO_BIG_FACTOR = 4  # aiohttp's own hard cap, as a multiple of max_frame_size
_LINGER = 3.0  # seconds a refused client gets to finish sending and read its close frame


def _text_frame(payload: bytes) -> bytes:
    """An unmasked, uncompressed server-to-client text frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class _PusherWebSocket(web.WebSocketResponse):
    """aiohttp closes an oversized frame with 1009; the protocol wants a 4xxx code (reference §1.11).

    aiohttp refuses such a frame from its header, while the client is still sending the rest. Closing the
    socket then, with bytes unread, makes the kernel answer with a reset that destroys the close frame
    before the client reads it. So after a refusal the transport stays open, its input discarded (aiohttp
    drops what arrives once the parser has failed), until the client closes or :data:`_LINGER` passes:
    RFC 6455 §7.1.1, the server waits for the client to close the TCP connection.
    """

    refused_frame = False

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG:
            # 4100: pusher-js backs off and reconnects; only this connection is affected.
            code, message = CloseCode.OVER_CAPACITY, b"Frame over the size limit"
            self.refused_frame = True
        return await super().close(code=code, message=message, drain=drain)

    def _close_transport(self) -> None:
        if not self.refused_frame:  # after a refusal, linger() closes it
            super()._close_transport()

    async def linger(self, transport: asyncio.Transport) -> None:
        """Wait (bounded) for the client to close after a refused frame, then close the transport."""
        deadline = time.monotonic() + _LINGER
        while not transport.is_closing() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # aiohttp offers no connection-lost future to wait on
        transport.close()


class _Peer:
    """What the transport keeps for one socket (the protocol's ``Connection.transport``)."""

    __slots__ = ("closing", "transport", "ws")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport) -> None:
        self.ws = ws
        self.transport = transport
        self.closing = False


class PusherServer:
    """A Pusher-compatible server for ``apps``, listening on ``host:port`` (0 picks a free port).

    ``adapter`` shares the apps with other processes (:class:`~.adapters.RedisAdapter`); by default
    this process serves them alone (:class:`~.adapters.LocalAdapter`).
    """

    def __init__(
        self,
        apps: Iterable[AppConfig],
        *,
        host: str = "127.0.0.1",
        port: int = 6001,
        reuse_port: bool = False,
        adapter: Adapter | None = None,
    ) -> None:
        self.adapter = adapter or LocalAdapter()
        # The clustered adapter, when frames and REST calls must go through it (else a shortcut).
        self._cluster = self.adapter if self.adapter.clustered else None
        self.apps = Apps(apps, hub_class=self.adapter.hub_class)
        self.host = host
        self.port = port
        self._reuse_port = reuse_port
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self.webhooks: WebhookSender | None = None
        configs = [hub.config for hub in self.apps]
        self._max_request = max(c.max_request_size for c in configs)
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
        await self.adapter.start(self.apps, self._run)
        app = web.Application(client_max_size=self._max_request + 1024, handler_args=None)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(
            self._runner, self.host, self.port, reuse_port=self._reuse_port or None, backlog=4096
        )
        await self._site.start()
        server = self._site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._tick_task = asyncio.get_running_loop().create_task(self._ticker())
        log.info("livewidget server listening on %s:%d", self.host, self.port)

    async def stop(self, grace: float = 2.0) -> None:
        """Tell every client to reconnect (4200), then stop within about ``grace`` seconds."""
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
        for hub in self.apps:
            self._run(hub, hub.shutdown())
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=grace)
        await self.adapter.stop()
        if self._runner is not None:
            await self._runner.cleanup()
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

    # ------------------------------------------------------------------ carrying out actions

    def _run(self, hub: Hub, actions: list[Action]) -> None:
        for action in actions:
            if type(action) is Send:
                data = _text_frame(action.frame.encode())
                limit = hub.config.max_send_buffer
                for conn in action.targets:
                    peer: _Peer = conn.transport
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

    def _close(self, conn: Connection, code: int, reason: str, frame: str | None = None) -> None:
        peer: _Peer | None = conn.transport
        if peer is None or peer.closing:
            return
        peer.closing = True
        if frame is not None and not peer.transport.is_closing():
            peer.transport.write(_text_frame(frame.encode()))
        task = asyncio.get_running_loop().create_task(peer.ws.close(code=code, message=reason.encode()[:120]))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _abort(self, conn: Connection, code: int, reason: str) -> None:
        peer: _Peer = conn.transport
        peer.closing = True
        payload = struct.pack("!H", code) + reason.encode()[:120]
        tr = peer.transport
        # The close frame joins the unread queue; the client may never read it, so drop the socket.
        tr.write(bytes((0x88, len(payload))) + payload)
        tr.abort()
        log.info("closed %s (%d): %s", conn.socket_id, code, reason)

    # ------------------------------------------------------------------ HTTP

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            m = _WS_PATH.match(request.path)
            if m is not None and request.headers.get("Upgrade", "").lower() == "websocket":
                return await self._websocket(request, m[1])
            if request.method == "GET" and request.path in ("/", "/ready", "/health"):
                return web.json_response({"ok": True})
            if request.method == "GET" and request.path == "/stats":
                return web.json_response(self.stats())
            return await self._rest(request)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("error handling %s %s", request.method, request.path)
            return web.json_response({"error": "Internal server error"}, status=500)
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _rest(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response(
                {"error": f"Request body over the limit of {self._max_request} bytes"}, status=413
            )
        if len(body) > self._max_request:
            return web.json_response(
                {"error": f"Request body over the limit of {self._max_request} bytes"}, status=413
            )
        raw_path = request.raw_path.split("?", 1)[0]
        if self._cluster is not None:
            query = list(request.query.items())
            resp = await self._cluster.rest(
                self.apps, request.method, request.path, query, body, time.time(), raw_path
            )
            return web.json_response(resp.body, status=resp.status)
        resp = handle_rest(
            self.apps,
            request.method,
            request.path,
            list(request.query.items()),
            body,
            time.time(),
            raw_path=raw_path,
        )
        if resp.hub is not None and resp.actions:
            self._run(resp.hub, resp.actions)
        return web.json_response(resp.body, status=resp.status)

    # ------------------------------------------------------------------ WebSocket

    async def _websocket(self, request: web.Request, key: str) -> web.WebSocketResponse:
        hub = self.apps.by_key.get(key)
        max_frame = hub.config.max_frame_size if hub else 64 * 1024
        ws = _PusherWebSocket(
            compress=False,  # frames are written pre-encoded to many sockets at once
            max_msg_size=max_frame * _FRAME_TOO_BIG_FACTOR,
            autoping=True,
        )
        await ws.prepare(request)
        refusal = self._refusal(hub, key, request.query.get("protocol"))
        if refusal is not None:
            code, reason = refusal
            await ws.send_str(error_frame(reason, code))
            await ws.close(code=code, message=reason.encode()[:120])
            return ws
        assert hub is not None
        transport = request.transport
        assert transport is not None
        conn, actions = hub.open(time.time(), _Peer(ws, transport))
        self._run(hub, actions)
        cluster = self._cluster
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    data: str | bytes = msg.data
                    if len(msg.data) > max_frame:
                        ws_error = error_frame(
                            f"Frame of {len(msg.data)} bytes is over the limit of {max_frame}", None
                        )
                        self._run(hub, [Send((conn,), ws_error)])
                        continue
                    if cluster is None:
                        self._run(hub, hub.receive(conn, data, time.time()))
                    else:
                        await cluster.receive(hub, conn, data, time.time())
                elif msg.type is WSMsgType.BINARY:
                    self._run(hub, hub.receive(conn, msg.data, time.time()))
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            if cluster is None:
                self._run(hub, hub.close(conn, time.time()))
            else:
                cluster.closed(hub, conn, time.time())
        if ws.refused_frame:
            await ws.linger(transport)
        return ws

    def stats(self) -> dict[str, Any]:
        """Counters for ``GET /stats``: connections, webhooks, and the adapter's deliveries."""
        webhooks = self.webhooks
        return {
            "connections": sum(len(hub.connections) for hub in self.apps),
            "webhooks": {"delivered": webhooks.delivered, "failed": webhooks.failed} if webhooks else {},
            "adapter": self.adapter.stats(),
        }

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

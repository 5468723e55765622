"""The kernel-side subscriber: the client protocol core over an aiohttp WebSocket, on the I/O thread.

It keeps a connection to the server, subscribes to its channels, reconnects with backoff (as
pusher-js does), and hands every application event to ``on_event`` exactly once, in arrival order,
on the I/O thread (``livewidget-io``), whatever the notebook's main thread is doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from ._config import Settings
from ._loop import io_loop, submit
from .protocol.client import ClientEvent, ClientProtocol, ClientState

__all__ = ["Receiver"]

log = logging.getLogger("livewidget.receiver")

# pusher-js close-code bands (protocol.ts getCloseAction): 4000-4099 refused, others retry.
_REFUSED = range(4000, 4100)
_MEMBERSHIP = frozenset({"pusher:subscription_succeeded", "pusher:member_added", "pusher:member_removed"})
_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


class Receiver:
    """Subscribe to ``channels`` and report events and connection status.

    Parameters
    ----------
    settings:
        Where to connect (the secret, when present, signs private and presence channels here).
    on_event:
        Called with each :class:`~livewidget.protocol.client.ClientEvent` that is not a protocol
        event, on the I/O thread.
    on_status:
        Called with ``(state, detail)``: ``connecting``, ``connected``, ``unavailable`` (retrying),
        ``failed`` (gave up: refused by the server), ``closed``; and ``error`` for a channel refusal.
    user:
        ``{"id", "info"}`` for presence channels.
    on_internal:
        Called with each ``pusher:subscription_succeeded``, ``pusher:member_added`` and
        ``pusher:member_removed`` event (presence bookkeeping), on the I/O thread.
    """

    def __init__(
        self,
        settings: Settings,
        channels: list[str],
        on_event: Callable[[ClientEvent], None],
        on_status: Callable[[str, str], None] = lambda state, detail: None,
        *,
        user: dict[str, Any] | None = None,
        on_internal: Callable[[ClientEvent], None] | None = None,
    ) -> None:
        self.settings = settings
        self.protocol = ClientProtocol(settings.key, settings.secret, user=user)
        for channel in channels:
            self.protocol.subscribe(channel)
        self._on_event = on_event
        self._on_status = on_status
        self._on_internal = on_internal
        self._task: asyncio.Task[None] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.state = "idle"
        self.socket_id: str | None = None

    def start(self) -> Receiver:
        """Start on the shared I/O loop; returns at once."""
        loop = io_loop()

        def create() -> None:
            self._task = loop.create_task(self._run())

        loop.call_soon_threadsafe(create)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect and stop; waits up to ``timeout`` seconds."""

        async def cancel() -> None:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

        with contextlib.suppress(Exception):
            submit(cancel()).result(timeout)
        self._status("closed", "")

    def subscribe(self, channel: str) -> None:
        """Add a channel (thread-safe)."""
        io_loop().call_soon_threadsafe(self._apply, lambda: self.protocol.subscribe(channel))

    def unsubscribe(self, channel: str) -> None:
        """Remove a channel (thread-safe)."""
        io_loop().call_soon_threadsafe(self._apply, lambda: self.protocol.unsubscribe(channel))

    def trigger(self, channel: str, event: str, data: Any) -> None:
        """Send a client event (``client-...`` on a private or presence channel; thread-safe).

        Dropped when not connected (client events are not queued by Pusher either); the server
        limits them to 10 a second per connection (pusher:error 4301 above it): pace them.
        """

        def send() -> None:
            if self.protocol.state is ClientState.CONNECTED:
                self.protocol.trigger(channel, event, data)

        io_loop().call_soon_threadsafe(self._apply, send)

    def _apply(self, change: Callable[[], Any]) -> None:
        events = change() or []
        for event in events:
            self._dispatch(event)
        self._flush()

    def _status(self, state: str, detail: str) -> None:
        self.state = state
        try:
            self._on_status(state, detail)
        except Exception:  # a user callback must not kill the receiver
            log.exception("status callback failed")

    def _dispatch(self, event: ClientEvent) -> None:
        if event.event == "pusher:subscription_error":
            data = event.data if isinstance(event.data, dict) else {}
            self._status("error", f"cannot subscribe to {event.channel}: {data.get('error', event.data)}")
            return
        if event.event == "pusher:error":
            data = event.data if isinstance(event.data, dict) else {}
            code = data.get("code")
            message = str(data.get("message", event.data))
            self._status("error", f"{message} (code {code})" if code else message)
            return
        if event.event in _MEMBERSHIP:
            if self._on_internal is not None:
                try:
                    self._on_internal(event)
                except Exception:
                    log.exception("internal event callback failed")
            return
        if event.event.startswith("pusher:") or event.event == "livewidget:bad_frame":
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("event callback failed")

    def _flush(self) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return
        for frame in self.protocol.data_to_send():
            # send_str of an uncompressed frame writes synchronously; the coroutine has no await.
            task = asyncio.ensure_future(ws.send_str(frame))
            task.add_done_callback(lambda t: t.exception())

    async def _run(self) -> None:
        backoff = 1.0
        async with aiohttp.ClientSession() as session:
            while True:
                self._status("connecting", self.settings.ws_url.split("?")[0])
                refused = None
                try:
                    refused = await self._connect_once(session)
                    backoff = 1.0
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    detail = f"cannot reach {self.settings.ws_host}:{self.settings.ws_port}: {exc}"
                    self._status("unavailable", detail)
                if refused is not None:
                    self._status("failed", refused)
                    return
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 30.0)

    async def _connect_once(self, session: aiohttp.ClientSession) -> str | None:
        """One connection's life; returns a reason when the server refused us for good."""
        proto = self.protocol
        async with session.ws_connect(self.settings.ws_url, autoping=True, heartbeat=None) as ws:
            self._ws = ws
            proto.connection_opened(time.time())
            try:
                while True:
                    try:
                        msg = await ws.receive(timeout=1.0)
                    except TimeoutError:
                        if not proto.tick(time.time()):
                            return None  # no pong: reconnect
                        self._flush()
                        continue
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        for event in proto.receive(msg.data, time.time()):
                            if event.event == "pusher:connection_established":
                                self.socket_id = proto.socket_id
                                self._status("connected", proto.socket_id or "")
                            else:
                                self._dispatch(event)
                        self._flush()
                    elif msg.type in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.CLOSED,
                    ):
                        code = ws.close_code
                        if code is not None and code in _REFUSED:
                            return f"refused by the server (close {code}: {msg.extra or ''})"
                        self._status("unavailable", f"connection closed ({code}); reconnecting")
                        return None
                    elif msg.type is aiohttp.WSMsgType.ERROR:
                        return None
            finally:
                self._ws = None
                proto.connection_lost()

"""The kernel-side subscriber: the client protocol core over an aiohttp WebSocket, on the I/O thread.

It keeps a connection to the server, subscribes to its channels, reconnects with backoff (as
pusher-js does), and hands every application event to ``on_event`` exactly once, in arrival order,
on the I/O thread (``livewidget-io``), whatever the notebook's main thread is doing.

Nothing a peer sends stops it: the client protocol never raises on input, an event whose data
cannot be decoded is still handed on (its ``error`` says why, ``data`` is the raw text), counted in
``undecodable`` and reported once with the ``warning`` status; a malformed handshake or an
unexpected failure closes the connection and reconnects with backoff. Only a refusal by the server
(close codes 4000-4099) ends it, as ``failed``. With the embedded server, a daemon that died is
started again on the same port (:func:`livewidget._embedded.revive`).

With a server that keeps channel history, ``rewind`` replays the channel's recent events first
(handed on with ``history=True``), and every resubscription after a reconnection (a network drop, a
server restart) resumes from the last event heard: no gap, no duplicate. When the server could not
resume that far back, the ``warning`` status says so, once per channel.
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

from ._check import scrub
from ._config import Settings
from ._loop import io_loop, submit
from .protocol.client import BAD_FRAME, HISTORY_GAP, PROTOCOL_ERROR, ClientEvent, ClientProtocol, ClientState

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
        ``failed`` (gave up: refused by the server), ``closed``; ``error`` for a channel refusal;
        ``warning`` (once) when an event could not be decoded (the connection state is unchanged).
    user:
        ``{"id", "info"}`` for presence channels.
    on_internal:
        Called with each ``pusher:subscription_succeeded``, ``pusher:member_added`` and
        ``pusher:member_removed`` event (presence bookkeeping), on the I/O thread.
    rewind:
        ``{"count": n}`` or ``{"seconds": s}``: history to replay when first subscribing (servers
        with history; others ignore it).
    """

    def __init__(
        self,
        settings: Settings,
        channels: list[str],
        on_event: Callable[[ClientEvent], None],
        on_status: Callable[[str, str], None] | None = None,
        *,
        user: dict[str, Any] | None = None,
        on_internal: Callable[[ClientEvent], None] | None = None,
        rewind: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.protocol = ClientProtocol(settings.key, settings.secret, user=user)
        for channel in channels:
            self.protocol.subscribe(channel, rewind)
        self._on_event = on_event
        self._on_status = on_status or (lambda state, detail: None)
        self._says_status = on_status is not None  # else warnings go to the log
        self._on_internal = on_internal
        self._task: asyncio.Task[None] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.state = "idle"
        self.socket_id: str | None = None
        self.undecodable = 0  # events and frames that could not be decoded
        self.callback_failures = 0  # events whose on_event raised
        self._was_connected = False
        self._gaps: set[str] = set()  # channels whose missed events could not all be recovered (said once)

    def start(self) -> Receiver:
        """Start on the shared I/O loop; returns at once."""
        loop = io_loop()

        def create() -> None:
            self._task = loop.create_task(self._run())
            self._task.add_done_callback(self._ended)

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

    def _ended(self, task: asyncio.Task[None]) -> None:
        # Whatever ends the task, the receiver must not keep looking connected.
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("receiver stopped: %s: %s", type(exc).__name__, exc)
            self._status("failed", f"receiver stopped: {type(exc).__name__}: {exc}")
        elif self.state not in ("failed", "closed"):
            self._status("failed", "receiver stopped")

    def _undecodable(self, event: ClientEvent) -> None:
        self.undecodable += 1
        if self.undecodable == 1:
            where = f" on {event.channel}" if event.channel else ""
            name = "a frame" if event.event == BAD_FRAME else f"event {event.event!r}{where}"
            detail = f"{name} could not be decoded ({event.error}); further ones are counted, not shown"
            # Shown once: by whoever listens to the status (a widget's error, tail's stderr), else logged.
            log.log(logging.DEBUG if self._says_status else logging.WARNING, "%s", detail)
            try:
                self._on_status("warning", detail)
            except Exception:
                log.exception("status callback failed")

    def _status(self, state: str, detail: str) -> None:
        self.state = state
        try:
            self._on_status(state, detail)
        except Exception:  # a user callback must not kill the receiver
            log.exception("status callback failed")

    def _dispatch(self, event: ClientEvent) -> None:
        if event.error is not None:
            self._undecodable(event)
        if event.event == "pusher:subscription_error":
            data = event.data if isinstance(event.data, dict) else {}
            why = scrub(str(data.get("error", event.data)), self.settings.secret)  # servers echo signatures
            self._status("error", f"cannot subscribe to {event.channel}: {why}")
            return
        if event.event == "pusher:error":
            data = event.data if isinstance(event.data, dict) else {}
            code = data.get("code")
            message = scrub(str(data.get("message", event.data)), self.settings.secret)
            self._status("error", f"{message} (code {code})" if code else message)
            return
        if event.event in _MEMBERSHIP:
            if self._on_internal is not None:
                try:
                    self._on_internal(event)
                except Exception:
                    log.exception("internal event callback failed")
            return
        if event.event == HISTORY_GAP:
            if event.channel not in self._gaps:
                self._gaps.add(event.channel or "")
                data = event.data if isinstance(event.data, dict) else {}
                reasons = {"truncated": "history did not reach back that far"}
                reasons["stream_reset"] = "its history was lost"
                reason = reasons.get(str(data.get("reason")), str(data.get("reason", "unknown")))
                detail = f"{event.channel}: events sent while disconnected may be missing ({reason})"
                log.log(logging.DEBUG if self._says_status else logging.WARNING, "%s", detail)
                try:  # a warning leaves the connection state as it is
                    self._on_status("warning", detail)
                except Exception:
                    log.exception("status callback failed")
            return
        if event.event.startswith(("pusher:", "livewidget:")):
            return
        try:
            self._on_event(event)
        except Exception:
            # The failure stays with this event; said once with its traceback, then counted.
            self.callback_failures += 1
            if self.callback_failures == 1:
                log.exception("event callback failed on %s (further failures are counted)", event.event)
            else:
                log.debug("event callback failed on %s", event.event, exc_info=True)

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
                self._was_connected = False
                try:
                    refused = await self._connect_once(session)
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    detail = f"cannot reach {self.settings.ws_host}:{self.settings.ws_port}: {exc}"
                    self._status("unavailable", detail)
                    await self._revive()
                except Exception as exc:  # a bug: this connection only; say it and reconnect
                    log.exception("receiver connection failed")
                    problem = f"{type(exc).__name__}: {exc}"
                    self._status("unavailable", f"connection failed ({problem}); reconnecting")
                if self._was_connected:
                    backoff = 1.0
                if refused is not None:
                    self._status("failed", refused)
                    return
                if self.state == "connected":
                    self._status("unavailable", "connection lost; reconnecting")
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 30.0)

    async def _revive(self) -> None:
        """The embedded server's daemon died: start it again on its port (other sources: nothing)."""
        if self.settings.source != "embedded":
            return
        from ._embedded import revive

        try:
            info = await asyncio.get_running_loop().run_in_executor(None, revive)
        except Exception as exc:
            log.warning("could not restart the embedded server: %s", exc)
            return
        if info is not None and (info["host"], int(info["port"])) != (self.settings.host, self.settings.port):
            from dataclasses import replace

            self.settings = replace(self.settings, host=info["host"], port=int(info["port"]))

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
                                self._was_connected = True
                                self._status("connected", proto.socket_id or "")
                            elif event.event == PROTOCOL_ERROR:  # said by the status, counted
                                self.undecodable += 1
                                self._status("unavailable", event.error or "protocol error; reconnecting")
                                return None
                            else:
                                self._dispatch(event)
                        self._flush()
                    elif msg.type in _CLOSED:
                        code = ws.close_code
                        if code is not None and code in _REFUSED:
                            return f"refused by the server (close {code}: {msg.extra or ''})"
                        self._status("unavailable", f"connection closed ({code}); reconnecting")
                        return None
                    elif msg.type is aiohttp.WSMsgType.ERROR:
                        self._status("unavailable", f"connection error ({ws.exception()}); reconnecting")
                        return None
                    else:  # binary frames are not Pusher's: counted, as the protocol counts bad text
                        self._undecodable(ClientEvent(BAD_FRAME, None, None, None, error="binary frame"))
            finally:
                self._ws = None
                proto.connection_lost()

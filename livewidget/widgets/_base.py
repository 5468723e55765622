"""What every livewidget widget shares: connection, browser authorization, the kernel-side record.

The contract with the front end (``js/src``; one bundle, ``livewidget/static/widget.js``, which
dispatches on ``_kind``):

Synced traits, kernel → browser
    ``_kind``        which front end ("feed", ...)
    ``_connection``  pusher-js options: ``{key, cluster, forceTLS, wsHost?, wsPort?, wssPort?,
                     enabledTransports?}``. Never the secret.
    ``channels``     channels to subscribe to
    ``event_filter`` event names to show (empty: all but ``pusher:`` ones)
    ``_auth``        ``{url, token}``: POST ``{"token", "socket_id", "channel_name"}`` as the body
                     (``Content-Type: text/plain`` keeps it a simple CORS request) to ``url`` and get
                     ``{"auth", "channel_data"?}`` or ``{"error"}`` (403 when refused). ``url`` is
                     on 127.0.0.1 in the kernel and answers while cells run. When it cannot be
                     reached, fall back to the comm (below).
    ``status``       the kernel receiver's state: ``connecting``, ``connected``, ``unavailable``,
                     ``failed``, ``closed``, or ``disabled`` (recording off)
    ``error``        a problem to show (empty when none)
    ``count``, ``dropped``, ``rate``   rows recorded by the kernel (one per event, or per object of
                     an event whose data is an array of objects), dropped rows (``max_rows``),
                     kernel-side events per second
    ``last``         the last event recorded: ``{time, channel, event, data, user_id}``
    ``_history``     bytes: the last ``max_log`` recorded rows, one JSON object per line
                     ``{"t": ms since epoch, "channel", "event", "data", "user_id"}``; refreshed at
                     most every ``HISTORY_EVERY`` seconds, so a view opened later shows what was
                     recorded before it (then continues live from its own pusher-js connection)
    ``max_log``      rows the view keeps and shows
    ``title``        heading

Custom messages
    browser → kernel ``{"type": "auth", "id", "socket_id", "channel_name"}``;
    kernel → browser ``{"type": "auth", "id", "auth"?, "channel_data"?, "error"?}``.

Kernel → browser traffic is coalesced: traits change at most ``FLUSH_EVERY`` seconds apart (a few
messages per second per widget whatever the event rate), far under Jupyter's 1000 messages/s limit.
"""

from __future__ import annotations

import getpass
import json
import logging
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from .._authserver import endpoint
from .._config import Settings, resolve
from .._frames import EventStore
from .._loop import io_loop
from ..exceptions import ConfigurationError, LivewidgetError
from ..protocol import signatures
from ..protocol.channels import ChannelKind, channel_kind, is_valid_channel_name, is_valid_socket_id
from ..protocol.client import ClientEvent
from ..receiver import Receiver

__all__ = ["LiveWidget"]

log = logging.getLogger("livewidget.widgets")

STATIC = Path(__file__).parent.parent / "static"
FLUSH_EVERY = 0.25  # seconds between coalesced trait updates
HISTORY_EVERY = 2.0  # seconds between _history refreshes


def _default_user() -> dict[str, Any]:
    try:
        login = getpass.getuser()
    except Exception:
        login = "user"
    return {"id": login, "info": {"name": login}}


class LiveWidget(anywidget.AnyWidget):
    """Base of the livewidget widgets; see the module docstring for the front-end contract."""

    _esm = STATIC / "widget.js"
    _css = STATIC / "widget.css"

    _kind = traitlets.Unicode("").tag(sync=True)
    _connection = traitlets.Dict().tag(sync=True)
    channels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    event_filter = traitlets.List(traitlets.Unicode()).tag(sync=True)
    _auth = traitlets.Dict().tag(sync=True)
    status = traitlets.Unicode("connecting").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    count = traitlets.Int(0).tag(sync=True)
    dropped = traitlets.Int(0).tag(sync=True)
    rate = traitlets.Float(0.0).tag(sync=True)
    last = traitlets.Dict(allow_none=True, default_value=None).tag(sync=True)
    _history = traitlets.Bytes(b"").tag(sync=True)
    max_log = traitlets.Int(500).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        channels: str | Sequence[str],
        events: str | Sequence[str] | None = None,
        *,
        max_rows: int | None = 1_000_000,
        keep: int = 100,
        max_log: int = 500,
        record: bool = True,
        authorize: Callable[[str], bool] | None = None,
        user: dict[str, Any] | None = None,
        title: str | None = None,
        url: str | None = None,
        app_id: str | None = None,
        key: str | None = None,
        secret: str | None = None,
        cluster: str | None = None,
        host: str | None = None,
        port: int | None = None,
        use_tls: bool | None = None,
        **kwargs: Any,
    ) -> None:
        self._closed = True  # until fully started: close() (also from __del__) has nothing to free
        names = [channels] if isinstance(channels, str) else list(channels)
        if not names:
            raise ValueError("give at least one channel name")
        for name in names:
            if not is_valid_channel_name(name):
                raise ValueError(
                    f"invalid channel name {name!r}: use up to 200 of a-z A-Z 0-9 _ - = @ , . ; "
                    "(private-, presence- and cache- prefixes as usual)"
                )
            if channel_kind(name) is ChannelKind.USER:
                raise ValueError(f"{name}: server-to-user channels are for signed-in users only")
        filt = [] if events is None else ([events] if isinstance(events, str) else list(events))
        self._settings: Settings = resolve(
            url, app_id=app_id, key=key, secret=secret, cluster=cluster, host=host, port=port, use_tls=use_tls
        )
        if user is not None and "id" not in user:
            raise ValueError("user must be a dict with an 'id' (and optional 'info')")
        self._user = user or _default_user()
        self._authorize_cb = authorize
        self._store = EventStore(max_rows)
        self._keep = keep
        self._recent: deque[dict[str, Any]] = deque(maxlen=max(keep, max_log))
        self._callbacks: dict[str, list[Callable[[dict[str, Any]], Any]]] = {}
        self._cond = threading.Condition()
        self._dirty = False
        self._history_dirty = False
        self._last_history = 0.0
        self._rate_window: deque[float] = deque()
        self._pending_status: tuple[str, str] | None = None
        self._pending_error: str | None = None
        self._publisher: Any = None
        token_url: dict[str, str] = {}
        if self._settings.secret:
            ep = endpoint()
            self._token = ep.register(self._sign)
            token_url = {"url": ep.url, "token": self._token}
        else:
            self._token = ""
        super().__init__(
            channels=names,
            event_filter=filt,
            _connection=self._settings.browser_config(),
            _auth=token_url,
            max_log=max_log,
            title=title or ", ".join(names),
            **kwargs,
        )
        self.on_msg(self._on_custom_msg)
        self._closed = False
        self._receiver: Receiver | None = None
        if record:
            self._receiver = Receiver(
                self._settings,
                names,
                self._on_event,
                self._on_status,
                user=self._kernel_member(),
                on_internal=self._on_internal,
            ).start()
        else:
            self.status = "disabled"
        io_loop().call_soon_threadsafe(self._schedule_flush)

    # ------------------------------------------------------------------ authorization

    def _kernel_member(self) -> dict[str, Any]:
        """How the kernel's own receiver appears on presence channels (marked, so UIs can hide it)."""
        info = dict(self._user.get("info") or {})
        info["livewidget_kernel"] = True
        return {"id": f"{self._user['id']}:kernel", "info": info}

    def _sign(self, socket_id: str, channel: str) -> dict[str, Any]:
        """Sign ``channel`` for the browser's ``socket_id`` (raises PermissionError to refuse)."""
        if channel not in self.channels:
            raise PermissionError(f"this widget did not ask for {channel}")
        if not is_valid_socket_id(socket_id):
            raise PermissionError(f"invalid socket id {socket_id!r}")
        if self._authorize_cb is not None and not self._authorize_cb(channel):
            raise PermissionError(f"authorize= refused {channel}")
        secret = self._settings.require_secret("signing private and presence channels")
        key = self._settings.key
        if channel_kind(channel) is ChannelKind.PRESENCE:
            channel_data = json.dumps({"user_id": str(self._user["id"]), "user_info": self._user.get("info")})
            return {
                "auth": signatures.channel_auth(key, secret, socket_id, channel, channel_data),
                "channel_data": channel_data,
            }
        return {"auth": signatures.channel_auth(key, secret, socket_id, channel)}

    def _on_custom_msg(self, _widget: Any, content: Any, buffers: Any) -> None:
        if not isinstance(content, dict) or content.get("type") != "auth":
            return
        reply: dict[str, Any] = {"type": "auth", "id": content.get("id")}
        try:
            reply.update(self._sign(str(content.get("socket_id")), str(content.get("channel_name"))))
        except (PermissionError, ConfigurationError) as exc:
            reply["error"] = str(exc)
        self._message(reply)

    def _message(self, content: dict[str, Any], buffers: list[bytes] | None = None) -> None:
        """A custom message to the front end (``send`` is the public publishing method here)."""
        anywidget.AnyWidget.send(self, content, buffers)

    # ------------------------------------------------------------------ receiving

    def _on_status(self, state: str, detail: str) -> None:
        if state == "error":
            self._set_error(detail)
            return
        if state in ("unavailable", "failed") and self.status not in ("unavailable", "failed"):
            warnings.warn(f"livewidget: {self.title}: {state}: {detail}", RuntimeWarning, stacklevel=1)
        self._pending_status = (state, detail if state in ("unavailable", "failed") else "")
        self._dirty = True

    def _set_error(self, message: str) -> None:
        warnings.warn(f"livewidget: {self.title}: {message}", RuntimeWarning, stacklevel=1)
        self._pending_error = message
        self._dirty = True

    def _on_internal(self, event: ClientEvent) -> None:
        """Presence bookkeeping from the receiver (subscription_succeeded, member_added/removed)."""

    def _accepts(self, event: ClientEvent) -> bool:
        return not self.event_filter or event.event in self.event_filter

    def _on_event(self, event: ClientEvent) -> None:
        """On the I/O thread: record, call back, wake waiters (trait updates are coalesced).

        An event whose data is a JSON array of objects carries several points or records (packed by
        :class:`~livewidget.ChartPublisher` and :class:`~livewidget.LogHandler`): each becomes its own
        row, in ``df``, ``events``, the history and the callbacks, as if published one by one.
        """
        if not self._accepts(event):
            return
        now = time.time()
        for data in unpack(event.data):
            self._store.append(now, event.channel, event.event, data, event.user_id)
            row = {"time": now, "channel": event.channel, "event": event.event, "data": data}
            row["user_id"] = event.user_id
            self._recent.append(row)
            for name in (event.event, "*"):
                for callback in self._callbacks.get(name, ()):
                    try:
                        callback(row)
                    except Exception:
                        log.exception("callback for %s failed", name)
        self._rate_window.append(now)
        self._dirty = self._history_dirty = True
        with self._cond:
            self._cond.notify_all()

    def _schedule_flush(self) -> None:
        if self._closed:
            return
        try:
            self._flush()
        except Exception:
            log.exception("flush failed")
        io_loop().call_later(FLUSH_EVERY, self._schedule_flush)

    def _flush(self) -> None:
        """At most every FLUSH_EVERY seconds: one message with everything that changed."""
        if not self._dirty:
            return
        self._dirty = False
        now = time.time()
        window = self._rate_window
        while window and window[0] < now - 5:
            window.popleft()
        with self.hold_sync():
            status = self._pending_status
            if status is not None:
                self._pending_status = None
                self.status = status[0]
                if status[1]:
                    self.error = status[1]
                elif status[0] == "connected" and self.error.startswith("cannot reach"):
                    self.error = ""
            err = self._pending_error
            if err is not None:
                self._pending_error = None
                self.error = err
            self.count = self._store.total
            self.dropped = self._store.dropped
            self.rate = round(len(window) / 5.0, 2)
            if self._recent:
                self.last = _jsonable(self._recent[-1])
            if self._history_dirty and now - self._last_history >= HISTORY_EVERY:
                self._history_dirty = False
                self._last_history = now
                self._history = _history_bytes(list(self._recent)[-self.max_log :])
            elif self._history_dirty:
                self._dirty = True  # come back for the history later

    # ------------------------------------------------------------------ public API

    @property
    def df(self) -> Any:
        """Every recorded event (up to ``max_rows``) as a pandas DataFrame, oldest first."""
        return self._store.to_frame()

    @property
    def events(self) -> list[dict[str, Any]]:
        """The last ``keep`` recorded events, oldest first."""
        return list(self._recent)[-self._keep :]

    @property
    def total(self) -> int:
        """Events recorded since creation (including dropped ones)."""
        return self._store.total

    def on(self, event: str, callback: Callable[[dict[str, Any]], Any]) -> Callable[[], None]:
        """Call ``callback(row)`` for each recorded ``event`` (``"*"``: all), on the receiver thread.

        Returns a function that removes the callback.
        """
        self._callbacks.setdefault(event, []).append(callback)

        def remove() -> None:
            callbacks = self._callbacks.get(event, [])
            if callback in callbacks:
                callbacks.remove(callback)

        return remove

    def wait(self, n: int | None = None, timeout: float | None = 30.0) -> int:
        """Block until ``n`` events have been recorded in all (``None``: one more than now).

        Returns the total; raises ``TimeoutError`` after ``timeout`` seconds.
        """
        if self._receiver is None:
            raise LivewidgetError("this widget does not record (record=False): nothing to wait for")
        target = self._store.total + 1 if n is None else n
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._store.total < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"{self._store.total} of {target} events after {timeout} s "
                        f"(receiver {self._receiver.state}{': ' + self.error if self.error else ''})"
                    )
                self._cond.wait(remaining)
        return self._store.total

    def send(self, event: str, data: Any = None, channel: str | None = None) -> None:
        """Publish ``event`` on ``channel`` (default: the first channel); returns at once."""
        from .._publish import Publisher

        if self._publisher is None:
            self._publisher = Publisher(self._settings)
        self._publisher.publish(channel or self.channels[0], event, data)

    def close(self) -> None:
        """Unsubscribe, stop receiving, free the record, and close the widget."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        if self._receiver is not None:
            self._receiver.stop()
        if self._token:
            endpoint().unregister(self._token)
        if self._publisher is not None:
            self._publisher.close()
        self._store.clear()
        self._recent.clear()
        super().close()


def unpack(data: Any) -> list[Any]:
    """The rows of an event's data: each object of a non-empty JSON array of objects, else the data."""
    if isinstance(data, list) and data and all(isinstance(item, dict) for item in data):
        return data
    return [data]


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "time": row["time"],
        "channel": row["channel"],
        "event": row["event"],
        "data": row["data"],
        "user_id": row["user_id"],
    }


def _history_bytes(rows: list[dict[str, Any]]) -> bytes:
    lines = []
    for r in rows:
        item = {"t": int(r["time"] * 1000), "channel": r["channel"], "event": r["event"], "data": r["data"]}
        if r["user_id"] is not None:
            item["user_id"] = r["user_id"]
        lines.append(json.dumps(item, default=str))
    return ("\n".join(lines)).encode()

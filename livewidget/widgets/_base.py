"""What every livewidget widget shares: connection, browser authorization, the kernel-side record.

The contract with the front end (``js/src``; one ES module per widget class, ``livewidget/static/<kind>.js``
and ``<kind>.css``, each with pusher-js and only that class's front end, dispatching on ``_kind``):

Synced traits, kernel → browser
    ``_kind``        which front end ("feed", ...)
    ``_connection``  pusher-js options: ``{key, cluster, forceTLS, wsHost?, wsPort?, wssPort?,
                     enabledTransports?}`` and the route hints ``{route, serverId?, appId?}``
                     (``Settings.browser_config``), and ``relayId``: this widget's name in the
                     kernel's relay stream (random, not a secret). Never the secret.
    ``channels``     channels to subscribe to. The kernel keeps its own copy: what it signs, records
                     and publishes to never follows a change made to a synced trait by the browser
    ``event_filter`` event names to show (empty: all but ``pusher:`` ones)
    ``_auth``        ``{url, token}``: POST ``{"token", "socket_id", "channel_name"}`` as the body
                     (``Content-Type: text/plain`` keeps it a simple CORS request) to ``url`` and get
                     ``{"auth", "channel_data"?}`` or ``{"error"}`` (403 when refused). ``url`` is
                     on 127.0.0.1 in the kernel and answers while cells run. ``id`` names it to
                     the Jupyter extension: a page that is not on loopback POSTs the same body to
                     ``{base_url}livewidget/auth/{id}``. When neither can be reached, fall back to
                     the comm (below).
    ``status``       the kernel receiver's state: ``connecting``, ``connected``, ``unavailable``,
                     ``failed``, ``closed``, or ``disabled`` (recording off)
    ``error``        a problem to show (empty when none)
    ``count``, ``dropped``, ``rate``   rows recorded by the kernel (one per event, or per object of
                     an event whose data is an array of objects), dropped rows (``max_rows``),
                     kernel-side events per second
    ``last``         the last event recorded: ``{time, channel, event, data, user_id}``
    ``_history``     bytes: the last ``max_log`` recorded rows, one JSON object per line
                     ``{"t": ms since epoch, "channel", "event", "data", "user_id", "serial"?,
                     "stream_id"?, "history"?}`` (position, rewound mark: servers with history); refreshed at
                     most every ``HISTORY_EVERY`` seconds, so a view opened later shows what was
                     recorded before it (then continues live from its own pusher-js connection)
    ``max_log``      rows the view keeps and shows
    ``title``        heading
    ``_rewind``      the rewind the view sends in ``pusher:subscribe`` (``{"count"}`` or ``{"seconds"}``,
                     from ``history=``; README "Channel history"): rewound rows are marked, the log
                     shows where history ends and live begins, and resubscriptions resume from the
                     last position (deduplicated by serial with ``_history``)

Synced trait, browser → kernel
    ``route``        the route the browser's connection took once the server confirmed it:
                     ``direct``, ``jupyter`` or ``relay`` (empty until then). Informational only: it
                     never changes what the kernel signs or forwards (``_sign`` does not read it).

Custom messages
    browser → kernel ``{"type": "auth", "id", "socket_id", "channel_name"}``;
    kernel → browser ``{"type": "auth", "id", "auth"?, "channel_data"?, "error"?}``.
    The relay route (:mod:`livewidget._relay`):
    kernel → browser ``{"type": "relay", "seq", "ids"}`` + one binary buffer: the kernel's ONE stream,
    every relayed widget's new events (``[t_ms, channel, event, data_text, user_id]``), receiver
    state, presence members and acknowledgements, keyed by ``relayId``; sent on one open widget's
    comm (any), at most every ``_relay.RELAY_EVERY`` seconds (10/s) however many widgets and events.
    The browser's front end of any livewidget model hands each part to the model it names.
    browser → kernel ``{"type": "relay", "on": true}`` (relay me: the browser fell back to it) and
    ``{"type": "relay_trigger", "id", "channel", "event", "data"}``: a client event the kernel's own
    connection sends (it arrives once the running cell ends; acknowledged in the stream's ``acks``).
    The kernel relays a widget whose route is ``relay``, or ``auto`` until the browser reports
    ``direct`` or ``jupyter`` (it cannot wait to be asked: the request would wait for the cell), and
    then, while a cell runs, on standby (parts marked ``"standby": true``), for a fallback.

Kernel → browser traffic is coalesced: traits change at most ``FLUSH_EVERY`` seconds apart (a few
messages per second per widget whatever the event rate; with more than a few live widgets each
flushes less often, ``KERNEL_FLUSHES_PER_SECOND`` for the whole kernel), and the relay stream is at
most 10 messages a second per kernel: about 26 a second in all, however many widgets, far under
Jupyter's 1000 messages/s limit.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import json
import logging
import threading
import time
import uuid
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from .. import _check
from .._authserver import endpoint
from .._config import Settings, resolve
from .._frames import EventStore
from .._loop import io_loop
from .._relay import data_text, session as relay_session
from .._routes import register
from ..exceptions import ConfigurationError, LivewidgetError
from ..protocol import signatures
from ..protocol.channels import ChannelKind, channel_kind, is_valid_channel_name, is_valid_socket_id
from ..protocol.client import ClientEvent
from ..receiver import Receiver
from ._cells import watch_cells

__all__ = ["LiveWidget"]

log = logging.getLogger("livewidget.widgets")

STATIC = Path(__file__).parent.parent / "static"


def _front_end(kind: str) -> tuple[Path, Path]:
    """The built ES module and stylesheet of the widget class whose ``_kind`` is ``kind``."""
    return STATIC / f"{kind}.js", STATIC / f"{kind}.css"


FLUSH_EVERY = 0.25  # seconds between coalesced trait updates
# Trait flushes per second for the whole kernel: with more than 4 live widgets each flushes less often,
# so widgets' traits plus the relay stream (_relay, <= 10/s) stay under ~30 comm messages a second
# however many widgets there are (Jupyter's iopub limit is 1000/s, shared with print).
KERNEL_FLUSHES_PER_SECOND = 16
_live: weakref.WeakSet[Any] = weakref.WeakSet()


def _flush_period() -> float:
    """Seconds between one widget's flushes: FLUSH_EVERY, longer when many widgets share the budget."""
    return max(FLUSH_EVERY, len(_live) / KERNEL_FLUSHES_PER_SECOND)


HISTORY_EVERY = 2.0  # seconds between _history refreshes
_BROWSER_ROUTES = ("", "direct", "jupyter", "relay")
MAX_HISTORY = 1000  # events a rewind may ask for (the server's default limit, history_max_rewind)
History = int | _dt.timedelta


def rewind_for(history: Any) -> dict[str, Any]:
    """The ``rewind`` of ``pusher:subscribe`` for ``history=``: a number of events (0 to
    ``MAX_HISTORY``; 0: none) or a :class:`~datetime.timedelta`. Raises naming the problem."""
    if isinstance(history, _dt.timedelta):
        seconds = history.total_seconds()
        if seconds < 0:
            raise ValueError(f"history must not be a negative time span, got {history!r}")
        return {"seconds": seconds}
    if isinstance(history, bool) or not isinstance(history, int):
        raise TypeError(
            f"history must be a number of events (0 to {MAX_HISTORY}) or a datetime.timedelta, "
            f"not {type(history).__name__}"
        )
    if not 0 <= history <= MAX_HISTORY:
        raise ValueError(
            f"history must be between 0 (none) and {MAX_HISTORY} events, got {history}; "
            "for more, give a time span (datetime.timedelta)"
        )
    return {"count": history}


def _default_user() -> dict[str, Any]:
    try:
        login = getpass.getuser()
    except Exception:
        login = "user"
    return {"id": login, "info": {"name": login}}


class LiveWidget(anywidget.AnyWidget):
    """Base of the livewidget widgets; see the module docstring for the front-end contract."""

    # Each class sets its own module (anywidget loads one `_esm` per class): see `_front_end`.

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
    route = traitlets.Unicode("").tag(sync=True)
    _rewind = traitlets.Dict().tag(sync=True)
    _default_history: History = 100  # each class sets its own (see history=)

    @traitlets.validate("route")
    def _valid_route(self, proposal: Any) -> str:
        # Set by the browser: anything but a known route name is shown as unknown (""), never kept.
        value = proposal["value"]
        return value if value in _BROWSER_ROUTES else ""

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
        as_member: bool = False,
        history: History | None = None,
        **kwargs: Any,
    ) -> None:
        self._closed = True  # until fully started: close() (also from __del__) has nothing to free
        self._as_member = as_member
        names = _check.names(channels, "channels")
        for name in names:
            if not is_valid_channel_name(name):
                raise ValueError(
                    f"invalid channel name {name!r}: use up to 200 of a-z A-Z 0-9 _ - = @ , . ; "
                    "(private-, presence- and cache- prefixes as usual)"
                )
            if channel_kind(name) is ChannelKind.USER:
                raise ValueError(f"{name}: server-to-user channels are for signed-in users only")
        filt = _check.names(events, "events", allow_none=True, allow_empty=True)
        _check.check_int(max_rows, "max_rows", minimum=1, allow_none=True)
        _check.check_int(keep, "keep", minimum=0)
        _check.check_int(max_log, "max_log", minimum=0, maximum=100_000)
        _check.check_bool(record, "record")
        _check.check_callable(authorize, "authorize")
        _check.check_str(title, "title", allow_none=True)
        rewind = rewind_for(self._default_history if history is None else history)
        user_value: Any = user  # typed dict, checked: callers may pass anything
        if user_value is not None and (
            not isinstance(user_value, dict) or user_value.get("id") in (None, "")
        ):
            raise ValueError(f"user must be a dict with an 'id' (and optional 'info'), got {user!r}")
        self._settings: Settings = resolve(
            url, app_id=app_id, key=key, secret=secret, cluster=cluster, host=host, port=port, use_tls=use_tls
        )
        # What the kernel signs, records and publishes to comes from Python only: the synced traits
        # (channels, event_filter, max_log) may be changed by the browser, which must never widen it.
        self._channel_names = tuple(names)
        self._event_filter = frozenset(filt)
        self._max_log = max_log
        if self._settings.server_id and self._settings.source != "embedded":
            # a server on loopback that is not the embedded daemon: tell the Jupyter extension (_routes)
            with contextlib.suppress(OSError):
                s = self._settings
                register(s.app_id, s.key, s.host or "", s.ws_port)
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
            token_url = {"url": ep.url, "token": self._token, "id": ep.id}
        else:
            self._token = ""
        # relayId names this widget in the kernel's relay stream (livewidget/_relay.py); not a secret
        self._relay_id = uuid.uuid4().hex
        self._relaying = False
        self._relay_members: dict[str, dict[str, Any]] = {}
        super().__init__(
            channels=names,
            event_filter=filt,
            _connection={**self._settings.browser_config(), "relayId": self._relay_id},
            _auth=token_url,
            max_log=max_log,
            title=title or ", ".join(names),
            _rewind=rewind,
            **kwargs,
        )
        self.on_msg(self._on_custom_msg)
        self._closed = False
        _live.add(self)
        self._receiver: Receiver | None = None
        if record:
            self._receiver = Receiver(
                self._settings,
                names,
                self._on_event,
                self._on_status,
                user=self._kernel_member(),
                on_internal=self._internal,
                rewind=rewind,
            ).start()
            if self._settings.route in ("auto", "relay"):
                # with auto too: the browser's request would wait for the running cell (see _relay)
                self._relay_on()
            if self._settings.route == "auto":
                watch_cells()  # standby relay while a cell runs, should its other route fail (_relay)
        else:
            self.status = "disabled"
        io_loop().call_soon_threadsafe(self._schedule_flush)

    # ------------------------------------------------------------------ authorization

    def _kernel_member(self) -> dict[str, Any]:
        """How the kernel's own receiver appears on presence channels: marked, so UIs can hide it (the
        person is there through the browser's view), or as ``user`` itself with ``as_member=True`` (a
        bot, with no browser view: it is then shown online like anyone else)."""
        info = dict(self._user.get("info") or {})
        if self._as_member:
            return {"id": str(self._user["id"]), "info": info}
        info["livewidget_kernel"] = True
        return {"id": f"{self._user['id']}:kernel", "info": info}

    def _sign(self, socket_id: str, channel: str) -> dict[str, Any]:
        """Sign ``channel`` for the browser's ``socket_id`` (raises PermissionError to refuse)."""
        if channel not in self._channel_names:  # not the synced trait: the browser may change that
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
        if isinstance(content, dict) and content.get("type") in ("relay", "relay_trigger"):
            self._on_relay_msg(content)
            return
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

    # ------------------------------------------------------------------ the relay route (_relay)

    def _relay_on(self) -> None:
        if self._closed or self._receiver is None:
            return
        self._relaying = True
        relay_session().add(self._relay_id, self)
        relay_session().state(self._relay_id, self._relay_state())

    def _relay_off(self) -> None:
        """Neither relayed nor spare (closed)."""
        self._relaying = False
        relay_session().remove(self._relay_id)

    def _relay_spare(self) -> None:
        """The browser took another route: relayed only on standby while a cell runs (_relay)."""
        self._relaying = False
        relay_session().spare(self._relay_id, self)

    def _relay_state(self) -> dict[str, Any]:
        """What the browser's relay connection shows: the kernel receiver's state, channels, members."""
        r = self._receiver
        me, person = self._kernel_member()["id"], str(self._user["id"])
        members = {}
        for ch, m in self._relay_members.items():
            members[ch] = [{"id": k, "info": v} for k, v in m.items()]
            if me in m and me != person and person not in m:
                # the person at this browser is present through the kernel (their view has no socket)
                members[ch].append(
                    {"id": person, "info": {**(self._user.get("info") or {}), "via": "kernel"}}
                )
        return {
            "status": r.state if r is not None else "disabled",
            "error": self.error,
            "channels": dict(r.protocol.channels) if r is not None else {},
            "members": members,
        }

    @traitlets.observe("route")
    def _route_reported(self, change: Any) -> None:
        # the browser took another route: stop relaying (unless forced), but for standby while a cell
        # runs (its request to be relayed again, should the route fail, waits for the cell; see _relay)
        if change["new"] in ("direct", "jupyter") and self._settings.route == "auto" and self._relaying:
            self._relay_spare()

    def _on_relay_msg(self, content: dict[str, Any]) -> None:
        """From the browser's relay connection (they arrive once the running cell ends)."""
        if content.get("type") == "relay":
            if content.get("on") and self._settings.route != "direct" and self._settings.route != "jupyter":
                self._relay_on()
            return
        # relay_trigger: a client event the browser could not send itself; the kernel's own connection
        # sends it (the server stamps the kernel's user id), and acknowledges it in the relay stream
        channel, event = content.get("channel"), content.get("event")
        ack = content.get("id")
        ok = (
            self._receiver is not None
            and isinstance(channel, str)
            and channel in self._channel_names
            and isinstance(event, str)
            and event.startswith("client-")
            and channel_kind(channel) in (ChannelKind.PRIVATE, ChannelKind.PRESENCE)
        )
        if ok and self._receiver is not None:
            self._receiver.trigger(str(channel), str(event), content.get("data"))
        if self._relaying and isinstance(ack, str):
            relay_session().ack(
                self._relay_id, ack[:64], "" if ok else f"cannot send {event!r} on {channel!r}"
            )

    def _internal(self, event: ClientEvent) -> None:
        """Presence bookkeeping for the relay, then the widget's own (_on_internal).

        Kept whether or not the widget is relayed now: the first subscription may come before the
        relay starts (or the browser may fall back to it later), and members arrive only once."""
        if event.channel:
            data = event.data if isinstance(event.data, dict) else {}
            members = self._relay_members.setdefault(event.channel, {})
            if event.event == "pusher:subscription_succeeded":
                hash_ = (
                    (data.get("presence") or {}).get("hash")
                    if isinstance(data.get("presence"), dict)
                    else None
                )
                members.clear()
                if isinstance(hash_, dict):
                    members.update({str(k): v for k, v in hash_.items()})
                elif not data.get("presence"):
                    self._relay_members.pop(event.channel, None)
            elif event.event == "pusher:member_added" and data.get("user_id") is not None:
                members[str(data["user_id"])] = data.get("user_info")
            elif event.event == "pusher:member_removed" and data.get("user_id") is not None:
                members.pop(str(data["user_id"]), None)
            if relay_session().relays(self._relay_id):
                relay_session().state(self._relay_id, self._relay_state())
        self._on_internal(event)

    def _on_status(self, state: str, detail: str) -> None:
        if relay_session().relays(self._relay_id):
            relay_session().state(self._relay_id, {**self._relay_state(), "status": state, "detail": detail})
        if state in ("error", "warning"):  # warning: an undecodable event (the receiver says it once)
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
        return not self._event_filter or event.event in self._event_filter

    def _on_event(self, event: ClientEvent) -> None:
        """On the I/O thread: record, call back, wake waiters (trait updates are coalesced).

        An event whose data is a JSON array of objects carries several points or records (packed by
        :class:`~livewidget.ChartPublisher` and :class:`~livewidget.LogHandler`): each becomes its own
        row, in ``df``, ``events``, the history and the callbacks, as if published one by one.
        """
        now = time.time()
        if relay_session().relays(self._relay_id):  # every event, as the browser's connection gets them
            text = data_text(event.raw, event.data)
            relayed = [int(now * 1000), event.channel, event.event, text, event.user_id]
            if event.serial is not None:  # the browser dedupes by it across a route switch
                relayed += [event.serial, event.stream_id]
            relay_session().row(self._relay_id, relayed)
        if not self._accepts(event):
            return
        for data in unpack(event.data):
            self._store.append(now, event.channel, event.event, data, event.user_id, event.history)
            row = {"time": now, "channel": event.channel, "event": event.event, "data": data}
            row["user_id"] = event.user_id
            if event.serial is not None:
                row["serial"], row["stream_id"] = event.serial, event.stream_id
            if event.history:
                row["history"] = True
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
        io_loop().call_later(_flush_period(), self._schedule_flush)

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
                self._history = _history_bytes(list(self._recent)[-self._max_log :] if self._max_log else [])
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
        self._publisher.publish(channel or self._channel_names[0], event, data)

    def close(self) -> None:
        """Unsubscribe, stop receiving, free the record, and close the widget."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        _live.discard(self)
        self._relay_off()  # relayed or spare
        if self._receiver is not None:
            self._receiver.stop()
        if self._token:
            endpoint().unregister(self._token)
        if self._publisher is not None:
            self._publisher.close()
        self._store.clear()
        self._recent.clear()
        super().close()


def _json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as ``null``: the browser's JSON.parse refuses them (an
    overflowing number such as 1e400 decodes to infinity), and one such row must not break a view."""
    if isinstance(value, float):
        return None if value != value or value in (float("inf"), float("-inf")) else value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _dumps(item: Any) -> str:
    try:
        return json.dumps(item, default=str, allow_nan=False)
    except ValueError:  # NaN or infinity somewhere (rare: clean only then)
        return json.dumps(_json_safe(item), default=str, allow_nan=False)


def unpack(data: Any) -> list[Any]:
    """The rows of an event's data: each object of a non-empty JSON array of objects, else the data."""
    if isinstance(data, list) and data and all(isinstance(item, dict) for item in data):
        return data
    return [data]


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    data = row["data"]
    try:
        json.dumps(data, default=str, allow_nan=False)
    except ValueError:
        data = _json_safe(data)
    return {
        "time": row["time"],
        "channel": row["channel"],
        "event": row["event"],
        "data": data,
        "user_id": row["user_id"],
    }


def _history_bytes(rows: list[dict[str, Any]]) -> bytes:
    lines = []
    for r in rows:
        item = {"t": int(r["time"] * 1000), "channel": r["channel"], "event": r["event"], "data": r["data"]}
        if r["user_id"] is not None:
            item["user_id"] = r["user_id"]
        for name in ("serial", "stream_id", "history"):  # views deduplicate by serial and mark rewound rows
            if name in r:
                item[name] = r[name]
        lines.append(_dumps(item))
    return ("\n".join(lines)).encode()

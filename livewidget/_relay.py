"""The relay route: the kernel forwards what its receivers hear to the browser over a widget's comm.

For front ends where the browser can reach neither the Pusher server nor the Jupyter server's
livewidget extension (Colab, VS Code remote, a Jupyter server without the extension, issue 12). Every
widget's kernel-side :class:`~livewidget.receiver.Receiver` already hears every event; the kernel's one
:class:`RelaySession` collects them from all widgets and sends them on, from the I/O thread, as **one
coalesced stream per kernel**: at most one comm message every ``RELAY_EVERY`` seconds (10 a second)
whatever the number of widgets and events, each carrying every widget's new events keyed by the
widget's ``relayId``, the bulk in one binary buffer. Jupyter's iopub limit (1000 messages/s over 3 s,
shared with ``print``; jupyter_server ``channels.py``) is never approached, and kernel-to-browser
messages are not held while a cell runs (ipykernel's IOPub thread), so relayed views stay live.

The message (``type`` ``relay``), sent on one open widget's comm (the "carrier": the browser's front
end of every livewidget model hands it to a page-wide hub, which routes each part by ``relayId``)::

    content  {"type": "relay", "seq": n, "ids": [relayId, ...]}
    buffers  [UTF-8 JSON: [{"id": relayId,
                            "rows": [[t_ms, channel, event, data_text, user_id, serial?, stream_id?]],
                            "lost"?: n, "acks"?: [[action id, error]],
                            "state"?: {"status", "detail"?, "error", "channels": {name: subscribed},
                                       "members": {channel: [{"id", "info"}]}}}, ...]]

``serial`` and ``stream_id`` come when the server stamps positions (README "Channel history"): the
browser uses them to show no event twice when it switches between the relay and a direct or jupyter
connection. ``data_text`` is the event's payload text as the server sent it (the browser decodes
it as pusher-js does: JSON when it parses, else the string). ``state`` comes only when it changed.
``seq`` grows by one per message, so the browser can tell a gap (it never happens on a healthy
comm). Rows wait in a bounded queue (``MAX_PENDING``); beyond it the oldest are dropped and counted
in ``lost`` (the kernel's own record, ``widget.df``, still has them).

Which widgets are relayed: those whose route is forced to ``relay``, and, with ``auto``, every widget
until its browser reports another route (``route`` trait): the kernel cannot wait to be asked, since
the browser's request would wait for the running cell. The cost when unused is at most 10 small
messages a second.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections import deque
from typing import Any

from ._loop import io_loop

__all__ = ["RELAY_EVERY", "RelaySession", "session"]

log = logging.getLogger("livewidget.relay")

RELAY_EVERY = 0.1  # seconds between relay messages: at most 10 a second per kernel
MAX_PENDING = 200_000  # rows waiting per kernel; beyond, the oldest are dropped and counted
MAX_ROWS_PER_MESSAGE = 50_000  # the rest waits for the next message (bounded message size)
STATE_EVERY = 2.0  # seconds between full states of every relayed widget (a view opened later, a heartbeat)


class RelaySession:
    """The kernel's one relay stream (see the module docstring). Thread-safe; sends on the I/O loop."""

    def __init__(self, every: float = RELAY_EVERY) -> None:
        self.every = every
        self._lock = threading.Lock()
        self._widgets: dict[str, weakref.ref[Any]] = {}  # relayId -> widget, in registration order
        self._rows: deque[tuple[str, list[Any]]] = deque()
        self._lost: dict[str, int] = {}
        self._state: dict[str, dict[str, Any]] = {}  # relayId -> state not sent yet
        self._acks: dict[str, list[list[str]]] = {}  # relayId -> [[id, error]] of browser actions done
        self._last_full = 0.0
        self._scheduled = False
        self._last_sent = 0.0
        self.seq = 0
        self.messages = 0  # relay messages sent (for tests and the bench)

    # ------------------------------------------------------------------ from the widgets

    def add(self, relay_id: str, widget: Any) -> None:
        with self._lock:
            self._widgets[relay_id] = weakref.ref(widget)
        self._wake()

    def remove(self, relay_id: str) -> None:
        with self._lock:
            self._widgets.pop(relay_id, None)
            self._state.pop(relay_id, None)
            self._acks.pop(relay_id, None)
            self._lost.pop(relay_id, None)
            if any(rid == relay_id for rid, _ in self._rows):
                self._rows = deque(item for item in self._rows if item[0] != relay_id)

    def row(self, relay_id: str, row: list[Any]) -> None:
        """Queue one event ``[t_ms, channel, event, data_text, user_id]`` (any thread)."""
        with self._lock:
            if relay_id not in self._widgets:
                return
            if len(self._rows) >= MAX_PENDING:
                old, _ = self._rows.popleft()
                self._lost[old] = self._lost.get(old, 0) + 1
            self._rows.append((relay_id, row))
        self._wake()

    def state(self, relay_id: str, state: dict[str, Any]) -> None:
        """The widget's receiver state changed: sent with the next message."""
        with self._lock:
            if relay_id not in self._widgets:
                return
            self._state[relay_id] = state
        self._wake()

    def ack(self, relay_id: str, action: str, error: str = "") -> None:
        """A browser action (``relay_trigger``) was carried out (or refused: ``error``)."""
        with self._lock:
            if relay_id not in self._widgets:
                return
            self._acks.setdefault(relay_id, []).append([action, error])
        self._wake()

    # ------------------------------------------------------------------ sending

    def _wake(self) -> None:
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        io_loop().call_soon_threadsafe(self._schedule)

    def _schedule(self) -> None:
        # on the I/O loop: never two messages less than `every` apart
        delay = max(0.0, self._last_sent + self.every - time.monotonic())
        io_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        try:
            self.flush()
        except Exception:
            log.exception("relay flush failed")
        with self._lock:
            more = bool(self._widgets)  # ticking while any widget is relayed (at most 1/every a second)
            self._scheduled = more
        if more:
            self._schedule()

    def _full_states(self) -> None:
        """Every relayed widget's state, every STATE_EVERY seconds (lock held)."""
        now = time.monotonic()
        if now - self._last_full < STATE_EVERY:
            return
        self._last_full = now
        for rid, ref in list(self._widgets.items()):
            widget = ref()
            if widget is None:
                self._widgets.pop(rid, None)
                continue
            try:
                self._state[rid] = widget._relay_state()
            except Exception:
                log.debug("relay state failed", exc_info=True)

    def _carrier(self) -> Any:
        for ref in list(self._widgets.values()):
            widget = ref()
            if widget is not None and getattr(widget, "comm", None) is not None and not widget._closed:
                return widget
        return None

    def flush(self) -> bool:
        """Send one message with what is pending (on the I/O loop); whether one was sent."""
        with self._lock:
            carrier = self._carrier()
            if carrier is None:
                return False
            self._full_states()
            if not (self._rows or self._state or self._acks):
                return False
            parts: dict[str, dict[str, Any]] = {}
            n = 0
            while self._rows and n < MAX_ROWS_PER_MESSAGE:
                rid, row = self._rows.popleft()
                parts.setdefault(rid, {"id": rid, "rows": []})["rows"].append(row)
                n += 1
            for rid, lost in self._lost.items():
                parts.setdefault(rid, {"id": rid, "rows": []})["lost"] = lost
            self._lost = {}
            for rid, state in self._state.items():
                parts.setdefault(rid, {"id": rid, "rows": []})["state"] = state
            self._state = {}
            for rid, acks in self._acks.items():
                parts.setdefault(rid, {"id": rid, "rows": []})["acks"] = acks
            self._acks = {}
            self.seq += 1
            seq = self.seq
        payload = json.dumps(list(parts.values()), separators=(",", ":"), default=str).encode()
        self._last_sent = time.monotonic()
        carrier._message({"type": "relay", "seq": seq, "ids": list(parts)}, [payload])
        self.messages += 1
        return True


_session: RelaySession | None = None
_session_lock = threading.Lock()


def session() -> RelaySession:
    """This kernel's relay session (made on first use)."""
    global _session
    with _session_lock:
        if _session is None:
            _session = RelaySession()
        return _session


def data_text(raw: str | None, data: Any) -> str:
    """The payload text for the browser: as the server sent it, else ``data`` encoded."""
    if isinstance(raw, str):
        return raw
    if isinstance(data, str):
        return data
    try:
        return json.dumps(data, default=str)
    except ValueError:
        return json.dumps(str(data))

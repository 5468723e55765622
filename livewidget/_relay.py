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
                            "lost"?: n, "acks"?: [[action id, error]], "standby"?: true,
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

**Standby while a cell runs.** A widget whose browser reported ``direct`` or ``jupyter`` (``spare``) is
not relayed; if that route fails later, the browser falls back to the relay, but its ``{"type": "relay",
"on": true}`` waits in the shell queue until the running cell ends. So from IPython's ``pre_run_cell``
to ``post_run_cell`` (followed by ``livewidget.widgets._cells``), and ``STANDBY_GRACE`` seconds more
(for that queued request to be handled), spare widgets are relayed too, their parts marked ``"standby":
true``. The browser keeps only the newest standby rows (bounded by count and age) while its own route is
healthy, and shows them only when it falls back: those newer than what pusher-js showed (by position),
then the live stream. Standby rows wait in a bounded queue per widget (``STANDBY_ROWS`` rows and
``STANDBY_BYTES`` of payload text between two messages; beyond, the oldest are dropped and counted in
``lost``) and travel in the same messages (still at most 10 a second). Outside IPython nothing is
relayed on standby. The cost when nothing fails: each spare widget's events sent once more over iopub
while a cell runs (README "Routes"; ``standby_rows``/``standby_bytes``)."""

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
STANDBY_ROWS = 2_000  # standby rows queued per widget between two messages (20,000 events/s); oldest dropped
STANDBY_BYTES = 256 * 1024  # their payload text per widget between two messages (2.5 MB/s at most)
STANDBY_GRACE = 2.0  # s standby goes on after a cell ends: the browser's queued relay request lands first


class RelaySession:
    """The kernel's one relay stream (see the module docstring). Thread-safe; sends on the I/O loop."""

    def __init__(self, every: float = RELAY_EVERY) -> None:
        self.every = every
        self._lock = threading.Lock()
        self._widgets: dict[str, weakref.ref[Any]] = {}  # relayId -> widget, in registration order
        # relayId -> widget whose browser took another route: relayed on standby while a cell runs
        self._spare: dict[str, weakref.ref[Any]] = {}
        self._rows: deque[tuple[str, list[Any]]] = deque()
        self._standby_rows: dict[str, deque[list[Any]]] = {}  # relayId -> standby rows not sent yet
        self._standby_bytes: dict[str, int] = {}  # relayId -> payload text in _standby_rows
        self._lost: dict[str, int] = {}
        self._state: dict[str, dict[str, Any]] = {}  # relayId -> state not sent yet
        self._acks: dict[str, list[list[str]]] = {}  # relayId -> [[id, error]] of browser actions done
        self._busy = False  # a cell runs (IPython's pre_run_cell .. post_run_cell, widgets/_cells.py)
        self._busy_until = 0.0  # monotonic: standby goes on until then after the cell (STANDBY_GRACE)
        self._last_full = 0.0
        self._scheduled = False
        self._last_sent = 0.0
        self._last_tick = 0.0
        self.ticks = 0  # timer wakeups (at most 1/every a second: tests)
        self.seq = 0
        self.messages = 0  # relay messages sent (for tests and the bench)
        self.standby_rows = 0  # standby rows sent (the cost when nothing fails: tests and the bench)
        self.standby_bytes = 0  # their payload text

    # ------------------------------------------------------------------ from the widgets

    def add(self, relay_id: str, widget: Any) -> None:
        """Relay ``widget``: its browser is on the relay, or may be (module docstring)."""
        with self._lock:
            self._widgets[relay_id] = weakref.ref(widget)
            self._spare.pop(relay_id, None)
            # standby rows not sent yet go first: nothing is lost or reordered across the switch
            rows = self._standby_rows.pop(relay_id, None)
            self._standby_bytes.pop(relay_id, None)
            if rows:
                self._rows.extendleft((relay_id, row) for row in reversed(rows))
        self._wake()

    def spare(self, relay_id: str, widget: Any) -> None:
        """``widget``'s browser took another route: relayed only on standby, while a cell runs."""
        with self._lock:
            self._widgets.pop(relay_id, None)
            self._spare[relay_id] = weakref.ref(widget)
        self._wake()

    def remove(self, relay_id: str) -> None:
        with self._lock:
            self._widgets.pop(relay_id, None)
            self._spare.pop(relay_id, None)
            self._standby_rows.pop(relay_id, None)
            self._standby_bytes.pop(relay_id, None)
            self._state.pop(relay_id, None)
            self._acks.pop(relay_id, None)
            self._lost.pop(relay_id, None)
            if any(rid == relay_id for rid, _ in self._rows):
                self._rows = deque(item for item in self._rows if item[0] != relay_id)

    def busy(self, running: bool) -> None:
        """A cell starts (``True``) or ends: spare widgets are relayed on standby meanwhile."""
        with self._lock:
            self._busy = running
            if running:
                self._last_full = 0.0  # every widget's state with the next message (for a fallback)
            else:
                self._busy_until = time.monotonic() + STANDBY_GRACE
        self._wake()

    def standby(self) -> bool:
        """Whether spare widgets are relayed now (a cell runs, or ended less than STANDBY_GRACE ago)."""
        return self._busy or time.monotonic() < self._busy_until

    def relays(self, relay_id: str) -> bool:
        """Whether events of ``relay_id`` are wanted now (relayed, or spare while a cell runs)."""
        return relay_id in self._widgets or (relay_id in self._spare and self.standby())

    def row(self, relay_id: str, row: list[Any]) -> None:
        """Queue one event ``[t_ms, channel, event, data_text, user_id]`` (any thread)."""
        with self._lock:
            if relay_id in self._widgets:
                if len(self._rows) >= MAX_PENDING:
                    old, _ = self._rows.popleft()
                    self._lost[old] = self._lost.get(old, 0) + 1
                self._rows.append((relay_id, row))
            elif relay_id in self._spare and self.standby():
                self._standby_row(relay_id, row)
            else:
                return
        self._wake()

    def _standby_row(self, relay_id: str, row: list[Any]) -> None:
        """Queue a standby row, within STANDBY_ROWS and STANDBY_BYTES for this widget (lock held)."""
        rows = self._standby_rows.setdefault(relay_id, deque())
        size = len(row[3]) if isinstance(row[3], str) else 0
        used = self._standby_bytes.get(relay_id, 0) + size
        rows.append(row)
        dropped = 0
        while rows and (len(rows) > STANDBY_ROWS or used > STANDBY_BYTES):
            old = rows.popleft()
            used -= len(old[3]) if isinstance(old[3], str) else 0
            dropped += 1
        self._standby_bytes[relay_id] = used
        if dropped:
            self._lost[relay_id] = self._lost.get(relay_id, 0) + dropped

    def state(self, relay_id: str, state: dict[str, Any]) -> None:
        """The widget's receiver state changed: sent with the next message."""
        with self._lock:
            if not self.relays(relay_id):
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
        # on the I/O loop: never two messages (nor two ticks: an idle tick sends nothing, and must not
        # spin the loop) less than `every` apart
        delay = max(0.0, max(self._last_sent, self._last_tick) + self.every - time.monotonic())
        io_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        self._last_tick = time.monotonic()
        self.ticks += 1
        try:
            self.flush()
        except Exception:
            log.exception("relay flush failed")
        with self._lock:
            # ticking while any widget is relayed (at most 1/every a second), or on standby
            more = bool(self._widgets) or bool(self._spare and (self.standby() or self._standby_rows))
            self._scheduled = more
        if more:
            self._schedule()

    def _full_states(self) -> None:
        """Every relayed widget's state (spare ones too on standby), every STATE_EVERY seconds (lock held)."""
        now = time.monotonic()
        if now - self._last_full < STATE_EVERY:
            return
        self._last_full = now
        registries = (self._widgets, self._spare) if self.standby() else (self._widgets,)
        for registry in registries:
            for rid, ref in list(registry.items()):
                widget = ref()
                if widget is None:
                    registry.pop(rid, None)
                    continue
                try:
                    self._state[rid] = widget._relay_state()
                except Exception:
                    log.debug("relay state failed", exc_info=True)

    def _carrier(self) -> Any:
        for ref in [*self._widgets.values(), *self._spare.values()]:
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
            if not (self._rows or self._standby_rows or self._state or self._acks):
                return False
            parts: dict[str, dict[str, Any]] = {}
            n = 0
            while self._rows and n < MAX_ROWS_PER_MESSAGE:
                rid, row = self._rows.popleft()
                parts.setdefault(rid, {"id": rid, "rows": []})["rows"].append(row)
                n += 1
            for rid, rows in self._standby_rows.items():
                parts[rid] = {"id": rid, "rows": list(rows), "standby": True}
                self.standby_rows += len(rows)
                self.standby_bytes += self._standby_bytes.get(rid, 0)
            self._standby_rows = {}
            self._standby_bytes = {}
            for rid, lost in self._lost.items():
                parts.setdefault(rid, {"id": rid, "rows": []})["lost"] = lost
            self._lost = {}
            for rid, state in self._state.items():
                part = parts.setdefault(rid, {"id": rid, "rows": []})
                part["state"] = state
                if rid in self._spare:
                    part["standby"] = True
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

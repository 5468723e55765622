"""Channel history, sans-I/O: positions, bounded per-channel logs, rewind and recovery decisions.

Every event published on a channel (REST trigger or batch, client event; not ``send_to_user``) gets a
**position**: ``serial``, an offset that only grows, within ``stream_id``, an epoch that changes when
the channel's history is lost (a new stream starts at serial 1). This is Centrifugo's offset + epoch,
spelled as Sockudo's protocol v2 spells it on delivered events::

    {"event": "done", "channel": "jobs", "data": "{...}", "serial": 42, "stream_id": "k3f9a0c2"}

pusher-js and other stock clients read ``event``, ``channel``, ``data`` and ``user_id`` only, so the two
extra top-level fields are invisible to them.

Each channel keeps a bounded log (the last ``max_events`` events, none older than ``max_age`` seconds,
at most ``max_bytes``; per-app defaults, overridden per channel-name prefix) and every log of the
process shares one :class:`Budget`, a global memory cap that drops the oldest events first and counts
what it dropped.

Nothing here touches a clock, a file or a socket: time is passed in. A history whose storage answers
later (SQLite, Redis) is ``deferred``: the hub then returns a :class:`Store` action and delivers the
events once the driver says they are stored (:meth:`History.committed`), so nothing a client ever saw
can be lost by a crash. What was dropped from memory is reported to the driver as :class:`Forget`.
"""

from __future__ import annotations

import heapq
import math
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .messages import Action, dumps

__all__ = [
    "Budget",
    "Entry",
    "Forget",
    "History",
    "HistoryLimits",
    "Position",
    "Replay",
    "Rewind",
    "RewindError",
    "Store",
    "StreamEvent",
    "parse_last_event_id",
    "parse_rewind",
    "sse_event",
]

ENTRY_OVERHEAD = 160  # bytes charged per event beyond its strings (objects, deque slot)
LOG_OVERHEAD = 400  # bytes charged per channel log (its object, dict slot, heap item)
MAX_STREAM_ID = 64  # characters of a stream_id a client may send back


def _new_stream_id() -> str:
    return secrets.token_hex(4)


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    """How much history one channel keeps. ``0`` events keeps positions but no history.

    The defaults suit notebooks: a day of a job board or a chat, at most about a megabyte a channel.
    """

    max_events: int = 1000
    max_age: float = 24 * 3600.0
    max_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        # Values come from config files too: check them at run time.
        values: dict[str, object] = {"max_events": self.max_events, "max_bytes": self.max_bytes}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        age: object = self.max_age
        if isinstance(age, bool) or not isinstance(age, (int, float)) or not 0 < age < math.inf:
            raise ValueError(f"max_age must be a positive number of seconds, got {age!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base: HistoryLimits | None = None) -> HistoryLimits:
        """Limits from a config table (``max_events``, ``max_age``, ``max_bytes``), the rest from ``base``."""
        base = base or cls()
        unknown = sorted(set(data) - {"max_events", "max_age", "max_bytes"})
        if unknown:
            raise ValueError(
                f"unknown history setting(s) {', '.join(unknown)}; known: max_age, max_bytes, max_events"
            )
        return cls(
            max_events=data.get("max_events", base.max_events),
            max_age=data.get("max_age", base.max_age),
            max_bytes=data.get("max_bytes", base.max_bytes),
        )


class Position(tuple[int, str]):
    """``(serial, stream_id)``: the last event a client has, in which stream."""

    __slots__ = ()

    def __new__(cls, serial: int, stream_id: str) -> Position:
        return super().__new__(cls, (serial, stream_id))

    @property
    def serial(self) -> int:
        return self[0]

    @property
    def stream_id(self) -> str:
        return self[1]


class Entry:
    """One stored event. ``exclude`` (a connection) lives only until the event is delivered."""

    __slots__ = ("data", "event", "exclude", "serial", "size", "time", "user_id")

    def __init__(
        self, serial: int, time: float, event: str, data: str, user_id: str | None = None, exclude: Any = None
    ) -> None:
        self.serial = serial
        self.time = time
        self.event = event
        self.data = data
        self.user_id = user_id
        self.exclude = exclude
        self.size = ENTRY_OVERHEAD + len(event) + len(data) + (len(user_id) if user_id else 0)

    def __repr__(self) -> str:
        return f"<Entry {self.serial} {self.event!r} at {self.time}>"

    def frame(self, channel: str, stream_id: str) -> str:
        """The frame delivered to subscribers (live or replayed): the Pusher event plus its position."""
        out: dict[str, Any] = {"event": self.event, "channel": channel, "data": self.data}
        if self.user_id is not None:
            out["user_id"] = self.user_id
        out["serial"] = self.serial
        out["stream_id"] = stream_id
        return dumps(out)

    def as_json(self) -> dict[str, Any]:
        """The event as the history REST API lists it."""
        out: dict[str, Any] = {
            "serial": self.serial,
            "event": self.event,
            "data": self.data,
            "time_ms": int(self.time * 1000),
        }
        if self.user_id is not None:
            out["user_id"] = self.user_id
        return out


class _Log:
    """One channel's stream: its epoch, last serial and retained events (oldest first)."""

    __slots__ = (
        "committed",
        "dropped",
        "dropped_time",
        "entries",
        "last",
        "last_time",
        "limits",
        "name",
        "nbytes",
        "owner",
        "queued",
        "stream_id",
    )

    def __init__(self, owner: History, name: str, stream_id: str, limits: HistoryLimits, now: float) -> None:
        self.owner = owner
        self.name = name
        self.stream_id = stream_id
        self.limits = limits
        self.last = 0  # the last serial given out
        self.committed = 0  # the last serial the storage holds (== last when not deferred)
        self.entries: deque[Entry] = deque()
        self.nbytes = 0
        self.dropped = 0  # the highest serial dropped from this stream (0: nothing lost yet)
        self.dropped_time = -math.inf  # the time of the newest event dropped
        self.last_time = now  # when an event was last appended (or the log was made)
        self.queued = False  # has an item in the budget's heap

    @property
    def first(self) -> int:
        """The oldest serial still held (``last + 1`` when nothing is)."""
        return self.entries[0].serial if self.entries else self.last + 1

    def position(self) -> Position:
        return Position(self.committed, self.stream_id)

    def drop_oldest(self) -> Entry:
        entry = self.entries.popleft()
        self.nbytes -= entry.size
        self.dropped = entry.serial
        self.dropped_time = entry.time
        self.owner._dropped(self, entry)
        if not self.entries:
            self.owner.budget._empty[self] = None
        return entry


class Budget:
    """The global memory cap shared by every channel log of a server (all apps): oldest first.

    What goes first is whatever is oldest: an event (the oldest of any channel), or an empty stream idle
    since longer (its position is forgotten: its next event starts a new stream, and a client resuming
    from the old one is told so). ``dropped`` counts the events it removed (shown in ``/stats``).
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        if max_bytes < 0:
            raise ValueError("the history memory cap must be >= 0 bytes")
        self.max_bytes = max_bytes
        self.used = 0
        self.dropped = 0
        self.streams_dropped = 0
        self._heap: list[tuple[float, int, _Log]] = []  # (time of its oldest event when pushed, seq, log)
        self._seq = 0
        self._empty: dict[_Log, None] = {}  # logs without events, in the order they became empty

    def _track(self, log: _Log) -> None:
        """``log`` just got an event: it can now be evicted from."""
        if log.entries:
            self._empty.pop(log, None)
            if not log.queued:
                log.queued = True
                self._seq += 1
                heapq.heappush(self._heap, (log.entries[0].time, self._seq, log))

    def _oldest_empty(self) -> _Log | None:
        empty = self._empty
        while empty:
            log = next(iter(empty))
            if not log.entries and log.committed == log.last and log.owner.logs.get(log.name) is log:
                return log
            del empty[log]  # it got events since, or is gone, or has events being stored
        return None

    def enforce(self) -> None:
        """Drop the globally oldest events (or idle empty streams) until usage is under the cap.

        Each non-empty log has one heap item whose key is at most its oldest event's time (the oldest
        only gets newer), so a popped item whose key is current is the true global minimum.
        """
        heap = self._heap
        while self.used > self.max_bytes:
            empty = self._oldest_empty()
            if not heap and empty is None:
                return
            if heap:
                key, _, log = heap[0]
                if not log.entries:
                    heapq.heappop(heap)
                    log.queued = False
                    continue
                oldest = log.entries[0].time
                if oldest != key:
                    self._seq += 1
                    heapq.heapreplace(heap, (oldest, self._seq, log))
                    continue
            if empty is not None and (not heap or empty.last_time <= heap[0][0]):
                del self._empty[empty]
                empty.owner._forget_log(empty)
                self.streams_dropped += 1
                continue
            log.drop_oldest()
            self.dropped += 1
            log.owner.evicted += 1
            if log.entries:
                self._seq += 1
                heapq.heapreplace(heap, (log.entries[0].time, self._seq, log))
            else:
                heapq.heappop(heap)
                log.queued = False

    def stats(self) -> dict[str, int]:
        return {
            "bytes": self.used,
            "max_bytes": self.max_bytes,
            "dropped_over_cap": self.dropped,
            "streams_dropped_over_cap": self.streams_dropped,
        }


# ---------------------------------------------------------------------------------------------- rewind


class RewindError(ValueError):
    """A rewind request is malformed or too large; the message names the problem."""


@dataclass(frozen=True, slots=True)
class Rewind:
    """What a subscriber asked to be replayed.

    ``after``: every event after that position (recovery). ``count`` / ``seconds``: the last ``count``
    events and/or those of the last ``seconds`` (Ably's ``rewind``); with ``after`` they are the
    fallback used when the position cannot be resumed from (another stream, or history too short).
    """

    count: int | None = None
    seconds: float | None = None
    after: Position | None = None


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rewind(value: object, max_count: int) -> Rewind:
    """Parse the ``rewind`` field of ``pusher:subscribe`` data.

    Accepted forms (Sockudo's object, Ably's string)::

        {"count": 10}  {"seconds": 30}  {"count": 100, "seconds": 600}
        {"serial": 42, "stream_id": "k3f9a0c2"}           (everything after this position)
        {"serial": 42, "stream_id": "k3f9a0c2", "count": 50}   (... or the last 50 if it cannot)
        10   "10"   "30s"   "5m"   "1h"

    Raises :class:`RewindError` naming the problem.
    """
    if isinstance(value, bool):
        raise RewindError("rewind must be a count, a duration like '30s', or an object")
    if isinstance(value, int):
        value = {"count": value}
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > 20:
            raise RewindError("rewind string is too long")
        unit = _UNITS.get(text[-1:])
        number = text[:-1] if unit else text
        try:
            amount = float(number) if unit else int(number)
        except ValueError:
            raise RewindError(
                f"rewind {value!r} is not a count ('10') or a duration ('30s', '5m', '1h')"
            ) from None
        value = {"seconds": amount * unit} if unit else {"count": amount}
    if not isinstance(value, dict):
        raise RewindError("rewind must be a count, a duration like '30s', or an object")
    unknown = sorted(set(value) - {"count", "seconds", "serial", "stream_id"})
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise RewindError(f"unknown rewind field(s) {names}; known: count, seconds, serial, stream_id")
    count = value.get("count")
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise RewindError(f"rewind count must be an integer >= 0, got {count!r}")
        if count > max_count:
            raise RewindError(f"rewind count {count} is over the limit of {max_count} events")
    seconds = value.get("seconds")
    if seconds is not None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < math.inf:
            raise RewindError(f"rewind seconds must be a number >= 0, got {seconds!r}")
        seconds = float(seconds)
    after = None
    if "serial" in value or "stream_id" in value:
        serial, stream_id = value.get("serial"), value.get("stream_id")
        if isinstance(serial, bool) or not isinstance(serial, int) or serial < 0:
            raise RewindError(f"rewind serial must be an integer >= 0, got {serial!r}")
        if not isinstance(stream_id, str) or not 0 < len(stream_id) <= MAX_STREAM_ID:
            raise RewindError(
                f"rewind stream_id must be a string of 1 to {MAX_STREAM_ID} characters, given with serial"
            )
        after = Position(serial, stream_id)
    if count is None and seconds is None and after is None:
        raise RewindError("rewind needs count, seconds, or serial with stream_id")
    return Rewind(count, seconds, after)


@dataclass(slots=True)
class Replay:
    """The answer to a rewind: what to replay (oldest first), and whether it is everything asked for.

    ``reason`` when incomplete: ``"truncated"`` (history did not reach that far back),
    ``"stream_reset"`` (the position is from a stream whose history is gone), ``"unknown_position"``
    (a serial this stream never gave out). ``position`` is where live events continue from.
    """

    entries: list[Entry]
    complete: bool
    position: Position
    reason: str | None = None

    def summary(self) -> dict[str, Any]:
        """The data of ``pusher:rewind_complete`` (Sockudo's ``historical_count``/``complete``)."""
        out: dict[str, Any] = {
            "complete": self.complete,
            "historical_count": len(self.entries),
            "serial": self.position.serial,
            "stream_id": self.position.stream_id,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        return out


# ---------------------------------------------------------------------------------------------- actions


@dataclass(slots=True)
class Store(Action):
    """Persist ``entries`` (``(channel, stream_id, entry)``, in order), then tell the hub
    (:meth:`~livewidget.protocol.hub.Hub.deliver`): only then are they delivered."""

    app_id: str
    entries: list[tuple[str, str, Entry]]


@dataclass(slots=True)
class Forget(Action):
    """Delete from storage: ``{channel: serial}`` every event up to ``serial``; ``-1``: the whole stream."""

    app_id: str
    upto: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class StreamEvent(Action):
    """Write ``entry`` of ``channel`` to the Server-Sent Events streams ``targets`` (transport handles)."""

    targets: tuple[Any, ...]
    channel: str
    stream_id: str
    entry: Entry


# ---------------------------------------------------------------------------------------------- SSE


def _sse_field(name: str, value: str) -> str:
    # One "name: value" line per line of value (WHATWG HTML, server-sent events: a CR, LF or CRLF ends a
    # line, so a value can never inject a field of its own).
    return "".join(
        f"{name}: {line}\n" for line in value.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    )


def sse_event(stream_id: str, entry: Entry) -> bytes:
    """One SSE event: ``id`` is the position (``<stream_id>:<serial>``), ``event`` and ``data`` the
    Pusher event's (a ``data`` of several lines is sent as several ``data:`` lines, joined back with
    newlines by the client)."""
    event = entry.event.replace("\r", " ").replace("\n", " ")
    return (
        f"id: {stream_id}:{entry.serial}\nevent: {event}\n" + _sse_field("data", entry.data) + "\n"
    ).encode()


def parse_last_event_id(value: str) -> Position:
    """``<stream_id>:<serial>`` (an SSE ``id``) as a position; raises :class:`RewindError`."""
    stream_id, sep, serial = value.strip().rpartition(":")
    if not sep or not serial.isdigit() or not 0 < len(stream_id) <= MAX_STREAM_ID or len(serial) > 18:
        raise RewindError(f"Last-Event-ID {value[:80]!r} is not a position '<stream_id>:<serial>'")
    return Position(int(serial), stream_id)


# ---------------------------------------------------------------------------------------------- history


class History:
    """The history of one app's channels, in memory (the storage driver mirrors it).

    Parameters
    ----------
    limits, overrides:
        Per-channel limits; ``overrides`` are ``(prefix, limits)`` pairs, the longest matching prefix wins.
    budget:
        The global memory cap, shared by every app of the server.
    deferred:
        True when the storage answers later: events are delivered by :meth:`committed`.
    max_rewind:
        The largest ``count`` a subscriber may ask for.
    """

    def __init__(
        self,
        limits: HistoryLimits | None = None,
        overrides: Sequence[tuple[str, HistoryLimits]] = (),
        *,
        budget: Budget | None = None,
        deferred: bool = False,
        max_rewind: int = 1000,
        new_stream_id: Callable[[], str] = _new_stream_id,
    ) -> None:
        self.limits = limits or HistoryLimits()
        self.overrides = sorted(overrides, key=lambda o: len(o[0]), reverse=True)
        self.budget = budget if budget is not None else Budget()
        self.deferred = deferred
        self.max_rewind = max_rewind
        self._new_stream_id = new_stream_id
        self.logs: dict[str, _Log] = {}
        self._forget: dict[str, int] = {}
        self.appended = 0
        self.evicted = 0  # dropped by the global cap
        self.trimmed = 0  # dropped by a channel's own limits

    # ------------------------------------------------------------------ limits and logs

    def limits_for(self, channel: str) -> HistoryLimits:
        for prefix, limits in self.overrides:
            if channel.startswith(prefix):
                return limits
        return self.limits

    def _log(self, channel: str, now: float) -> _Log:
        log = self.logs.get(channel)
        if log is None:
            log = self.logs[channel] = _Log(
                self, channel, self._new_stream_id(), self.limits_for(channel), now
            )
            self.budget.used += LOG_OVERHEAD
            self.budget._empty[log] = None
        return log

    def _forget_log(self, log: _Log) -> None:
        """Forget an empty stream (its next event starts a new one)."""
        if self.logs.get(log.name) is log:
            del self.logs[log.name]
            self.budget.used -= LOG_OVERHEAD
            self.budget._empty.pop(log, None)
            if self.deferred:
                self._forget[log.name] = -1

    def position(self, channel: str) -> Position | None:
        """Where ``channel``'s stream is (last delivered serial), or None if it has none."""
        log = self.logs.get(channel)
        return log.position() if log is not None else None

    def _dropped(self, log: _Log, entry: Entry) -> None:
        self.budget.used -= entry.size
        if self.deferred:
            self._forget[log.name] = entry.serial

    def _trim(self, log: _Log, now: float) -> None:
        """Apply ``log``'s own limits (count, bytes, age)."""
        limits = log.limits
        entries = log.entries
        horizon = now - limits.max_age
        while entries and (
            len(entries) > limits.max_events or log.nbytes > limits.max_bytes or entries[0].time < horizon
        ):
            log.drop_oldest()
            self.trimmed += 1

    # ------------------------------------------------------------------ publishing

    def append(
        self, channel: str, event: str, data: str, now: float, user_id: str | None = None, exclude: Any = None
    ) -> tuple[Entry, str]:
        """Give the next position of ``channel`` to an event; returns it and its stream id."""
        log = self._log(channel, now)
        log.last += 1
        entry = Entry(log.last, now, event, data, user_id, exclude)
        self._add(log, entry, now)
        return entry, log.stream_id

    def mirror(
        self,
        channel: str,
        serial: int,
        stream_id: str,
        time: float,
        event: str,
        data: str,
        user_id: str | None = None,
    ) -> Entry | None:
        """Record an event whose position was given elsewhere (a cluster's shared store); None if it is
        already held. Another stream replaces this one; a gap (missed events) drops what was held, so
        no replay ever spans it."""
        log = self._log(channel, time)
        if log.stream_id != stream_id or serial > log.last + 1:
            if log.stream_id != stream_id and log.last == 0 and not log.entries and serial == 1:
                log.stream_id = stream_id  # a stream made only to answer a rewind: adopt the real one
            else:
                while log.entries:
                    log.drop_oldest()
                    self.trimmed += 1
                log.stream_id = stream_id
                log.dropped = serial - 1
                log.dropped_time = time
            log.last = log.committed = serial - 1
        elif serial <= log.last:
            return None
        log.last = serial
        entry = Entry(serial, time, event, data, user_id)
        self._add(log, entry, time)
        return entry

    def _add(self, log: _Log, entry: Entry, now: float) -> None:
        if not self.deferred:
            log.committed = log.last
        log.last_time = now
        self.appended += 1
        if log.limits.max_events:
            log.entries.append(entry)
            log.nbytes += entry.size
            self.budget.used += entry.size
            self._trim(log, now)
            self.budget._track(log)
            if self.budget.used > self.budget.max_bytes:
                self.budget.enforce()
        else:
            if self.deferred:
                self._forget[log.name] = entry.serial
            if self.budget.used > self.budget.max_bytes:
                self.budget.enforce()

    def committed(self, channel: str, stream_id: str, serial: int) -> bool:
        """The storage holds ``channel``'s events up to ``serial``. False if that stream is gone."""
        log = self.logs.get(channel)
        if log is None or log.stream_id != stream_id:
            return False
        if serial > log.committed:
            log.committed = serial
        return True

    # ------------------------------------------------------------------ reading

    def _held(self, log: _Log, now: float) -> Iterator[Entry]:
        """Retained, stored events, oldest first (expired ones are trimmed first)."""
        self._trim(log, now)
        committed = log.committed
        for entry in log.entries:
            if entry.serial > committed:
                break
            yield entry

    def replay(self, channel: str, rewind: Rewind, now: float) -> Replay:
        """What a subscriber that asked for ``rewind`` gets before live events."""
        log = self._log(channel, now)  # a stream now exists, so the client learns its position
        after = rewind.after
        if after is not None and after.serial == 0:
            # "I have nothing": the whole current stream (complete if it lost nothing)
            return self._last(log, Rewind(count=rewind.count), now)
        if after is not None:
            if after.stream_id != log.stream_id:
                reason = "stream_reset"
            elif after.serial > log.committed:
                reason = "unknown_position"
            else:
                entries = [e for e in self._held(log, now) if e.serial > after.serial]
                first = entries[0].serial if entries else log.committed + 1
                if first == after.serial + 1:
                    return Replay(entries, True, log.position())
                if rewind.count is None and rewind.seconds is None:
                    return Replay(entries, False, log.position(), "truncated")
                reason = "truncated"
            if rewind.count is None and rewind.seconds is None:
                return Replay([], False, log.position(), reason)
            fallback = self._last(log, rewind, now)
            fallback.complete = False
            fallback.reason = reason
            return fallback
        return self._last(log, rewind, now)

    def _last(self, log: _Log, rewind: Rewind, now: float) -> Replay:
        held = list(self._held(log, now))
        start = 0
        if rewind.seconds is not None:
            horizon = now - rewind.seconds
            while start < len(held) and held[start].time < horizon:
                start += 1
        if rewind.count is not None:
            start = max(start, len(held) - rewind.count)
        entries = held[start:]
        if rewind.count is not None and len(entries) == rewind.count:
            complete = True
        elif rewind.seconds is not None:
            complete = log.dropped_time < now - rewind.seconds
        else:
            complete = log.dropped == 0
        return Replay(entries, complete, log.position(), None if complete else "truncated")

    def query(
        self,
        channel: str,
        now: float,
        *,
        limit: int = 100,
        before: int | None = None,
        after: int | None = None,
        start: float | None = None,
        end: float | None = None,
        newest_first: bool = True,
    ) -> tuple[list[Entry], Position | None, int]:
        """Events for the history REST API: ``(events, position, first serial held)``.

        ``before``/``after`` are serials (exclusive), ``start``/``end`` times (inclusive).
        """
        log = self.logs.get(channel)
        if log is None:
            return [], None, 1
        out: list[Entry] = []
        held = list(self._held(log, now))
        for entry in reversed(held) if newest_first else held:
            if before is not None and entry.serial >= before:
                continue
            if after is not None and entry.serial <= after:
                continue
            if start is not None and entry.time < start:
                continue
            if end is not None and entry.time > end:
                continue
            out.append(entry)
            if len(out) >= limit:
                break
        first = held[0].serial if held else log.committed + 1
        return out, log.position(), first

    # ------------------------------------------------------------------ housekeeping

    def expire(self, now: float) -> None:
        """Drop events older than their channel's ``max_age``, and streams idle (and empty) that long.

        A forgotten stream's next event starts a new stream (new ``stream_id``, serial 1): a client
        resuming from the old one is told so (``stream_reset``).
        """
        for log in list(self.logs.values()):
            self._trim(log, now)
            if not log.entries and log.committed == log.last and now - log.last_time > log.limits.max_age:
                self._forget_log(log)

    def take_forgotten(self) -> dict[str, int]:
        """What storage may delete since the last call (``{channel: serial}``, ``-1``: the stream)."""
        out, self._forget = self._forget, {}
        return out

    def restore(self, channel: str, stream_id: str, last: int, entries: Iterable[Entry], now: float) -> None:
        """Load a stream from storage at start-up (its events oldest first, all stored)."""
        log = self.logs.get(channel)
        if log is None:
            log = self.logs[channel] = _Log(self, channel, stream_id, self.limits_for(channel), now)
            self.budget.used += LOG_OVERHEAD
        log.stream_id = stream_id
        for entry in entries:
            log.entries.append(entry)
            log.nbytes += entry.size
            self.budget.used += entry.size
            log.last_time = max(log.last_time, entry.time)
        log.last = log.committed = max(last, log.entries[-1].serial if log.entries else 0)
        if log.first > 1:  # what came before the first event held is gone, at unknown times: say so
            log.dropped = log.first - 1
            log.dropped_time = log.entries[0].time if log.entries else now
        self._trim(log, now)
        if log.entries:
            self.budget._track(log)
        else:
            self.budget._empty[log] = None
        self.budget.enforce()

    def stats(self) -> dict[str, int]:
        return {
            "channels": len(self.logs),
            "events": sum(len(log.entries) for log in self.logs.values()),
            "appended": self.appended,
            "trimmed": self.trimmed,
            "dropped_over_cap": self.evicted,
        }

"""``LiveChart``: a streaming chart of the points published on channels, drawn in the browser by uPlot.

Contract with the front end (``_kind == "chart"``, ``js/src/chart.js``), in addition to :mod:`._base`'s:

Points
    An event's ``data`` is one point (a JSON object) or several (a JSON array of objects); the browser
    receives them straight from Pusher, the kernel records them (one row per point in ``chart.df``).
    ``x`` names the x field (``None``: the time the point was received), ``y`` the y fields (one series
    each), ``by`` a field whose values split the series (one per value). Field names may be dotted
    paths into nested objects (``"metrics.loss"``), as ``chart.df``'s columns are.

    Values: x is a number, or on a time axis an ISO 8601 string or seconds (or milliseconds) since the
    epoch. A missing y field draws nothing there; a y that is null, NaN, not a number (or not positive
    on a log axis) is a *bad value*, drawn as a gap (``missing="skip"``: joined over) and counted; a
    point that is not an object, has no usable x or no usable y is *skipped* and counted. The counts
    are shown on the chart.

Synced traits
    ``x``, ``y``, ``by``, ``x_type`` (``auto``: decided by the first usable x), ``kind`` (``line``,
    ``scatter``, ``area``, ``bar``, ``step``), ``window_points`` (0: no limit but ``max_points``),
    ``window_span`` (x units, seconds on a time axis; 0: none), ``max_points``, ``x_label``,
    ``y_label``, ``log_x``, ``log_y``, ``xlim`` and ``ylim`` (``[lo, hi]``, ``None`` for automatic),
    ``missing``, ``height`` (px), ``colors`` (CSS colours; empty: the theme's palette).

``_backfill`` (bytes, sent as a binary buffer)
    The kernel's window, as columns, so a view opened later draws what was recorded before it:
    ``b"LWC1"``, u32 header length, header JSON ``{n, fields, groups, x_kind, skipped, bad}``, zero
    padding to 8 bytes, f64 ``t[n]`` (receive time, ms since the epoch), f64 ``x[n]``, f64 ``y[n]`` per
    field (NaN: a bad value, -inf: absent), and when ``groups`` is not null i32 ``g[n]`` (index into
    ``groups``); little-endian. Refreshed at most every ``BACKFILL_EVERY`` seconds (longer for large
    windows). The browser takes the rows newer than what it took before and older than its own live
    start, so nothing is drawn twice.

Custom message kernel → browser
    ``{"type": "points", "reset"?: bool}`` with one buffer in the format above: points added by
    :meth:`LiveChart.extend` (drawn at once by open views).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import struct
import sys
import threading
import time
import uuid
from array import array
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import traitlets

from .. import _check
from .._frames import records
from ..protocol.client import ClientEvent
from . import _base
from ._base import MAX_HISTORY, LiveWidget, _front_end

__all__ = ["LiveChart"]

KINDS = ("line", "scatter", "area", "bar", "step")
BACKFILL_EVERY = 2.0  # s between _backfill refreshes (at least; more for large windows)
BACKFILL_RATE = 50_000  # points encoded per second of refresh interval beyond BACKFILL_EVERY
DEFAULT_MAX_POINTS = 1_000_000
_MAGIC = b"LWC1"
_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}
_SPAN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]+)\s*$")


def parse_window(window: int | str | _dt.timedelta | None) -> tuple[int, float]:
    """``(points, span in seconds)`` from ``window``: a number of points, ``"30s"``/``"5min"``/
    ``"2h"``/``"1d"``, a :class:`~datetime.timedelta`, or ``None`` (no window, only ``max_points``)."""
    if window is None:
        return 0, 0.0
    if isinstance(window, _dt.timedelta):
        span = window.total_seconds()
        if span <= 0:
            raise ValueError("window must be a positive time span")
        return 0, span
    if isinstance(window, str):
        match = _SPAN.match(window.lower())
        if not match or match.group(2) not in _UNITS:
            raise ValueError(
                f"window={window!r}: give a number of points, or a time span such as "
                "'30s', '5min', '2h', '1d'"
            )
        span = float(match.group(1)) * _UNITS[match.group(2)]
        if span <= 0:
            raise ValueError("window must be a positive time span")
        return 0, span
    if isinstance(window, bool) or not isinstance(window, int):
        raise TypeError(
            f"window must be a number of points (int), a time span ('30s', timedelta) or None, "
            f"not {type(window).__name__}; for a span of x units use window_x="
        )
    if window <= 0:
        raise ValueError("window must be a positive number of points")
    return window, 0.0


def _number(v: Any) -> float | None:
    """A finite float from a JSON value (numbers, numeric strings), else None (as chart.js toNumber)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, str) and v.strip():
        try:
            f = float(v)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def _time(v: Any) -> float | None:
    """Seconds since the epoch from an x value on a time axis (as chart.js toTime)."""
    if isinstance(v, _dt.datetime):
        return v.timestamp()
    f = _number(v)
    if f is not None:
        return f / 1000 if abs(f) > 1e11 else f
    if isinstance(v, str) and v.strip():
        text = v.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = _dt.datetime.fromisoformat(text)
        except ValueError:
            return None
        if parsed.tzinfo is None and len(text) <= 10:  # a date alone is UTC midnight, as Date.parse
            parsed = parsed.replace(tzinfo=_dt.UTC)
        return parsed.timestamp()
    return None


_ABSENT = object()


def _field(point: Mapping[str, Any], name: str) -> Any:
    """``point[name]``, or the nested value for a dotted name; ``_ABSENT`` when there is none."""
    if name in point:
        return point[name]
    if "." not in name:
        return _ABSENT
    value: Any = point
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _ABSENT
        value = value[part]
    return value


def _group(v: Any) -> str:
    if v is _ABSENT or v is None:
        return "(none)"
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), default=str)


class LiveChart(LiveWidget):
    """A live chart of the points published on ``channel``, drawn in the browser, recorded in the kernel.

    ``LiveChart("train", x="step", y=["loss", "val_loss"])``, then from anywhere (this kernel, a worker
    process, another machine with the credentials)::

        with livewidget.points("train") as pts:      # packs many points per event
            pts.add(step=i, loss=loss)
        livewidget.publish("train", "point", {"step": i, "loss": loss})   # one point per event

    The browser receives the points straight from Pusher (not through the kernel), so the chart stays
    live while a cell runs, at thousands of points per second; redraws are coalesced to animation
    frames. Hover shows the values, a legend click hides a series, dragging zooms and shift-dragging
    pans (both pause the live view: a click resumes it).

    Parameters
    ----------
    channel:
        The channel (or channels) the points are published on.
    event:
        Event name(s) carrying points; ``None``: every event.
    x:
        The x field; ``None`` (default): the time each point was received (a time axis).
    y:
        The y field, or several (one series each).
    by:
        A field whose values split each y into series (one line per run id, say).
    kind:
        ``"line"``, ``"scatter"``, ``"area"``, ``"bar"`` or ``"step"``.
    window:
        What is kept and shown: a number of points (the ones with the largest x), a time span on a time
        axis (``"30s"``, ``"5min"``, a ``timedelta``), or ``None`` for up to ``max_points``.
    window_x:
        Keep the points within this distance of the largest x (x units, e.g. the last 1000 steps).
    x_type:
        ``"auto"`` (the first usable x decides: a number, or a date string for a time axis),
        ``"number"`` or ``"time"`` (numbers are then seconds, or milliseconds, since the epoch).
    title, x_label, y_label:
        The chart's heading (default: the y fields and the channel) and axis labels.
    log_x, log_y:
        Logarithmic axes (values that are not positive are counted as bad values).
    xlim, ylim:
        Fixed limits ``(lo, hi)``; either may be ``None`` for automatic.
    missing:
        What a bad y value does: ``"gap"`` breaks the line, ``"skip"`` joins over it.
    height:
        Plot height in pixels (the width follows the notebook).
    colors:
        Series colours (CSS); default: a palette for the light or dark theme.
    max_points:
        Points the browser and the kernel's window keep at most, whatever ``window``.
    max_rows:
        Points kept in the kernel's record (``chart.df``); ``None``: all.
    history:
        Events the server's channel history replays when subscribing, so a chart opened later (a
        new kernel, a second browser) starts with its window: a number of events or a
        ``datetime.timedelta``; default: the window's points (at most 1000 events) when ``x`` is
        given, none on a receive-time axis (``x=None``: replayed events carry no publish time, so
        they would all be drawn at the moment of subscribing); ``0``: none. Rewound rows are marked
        (``chart.df["history"]``).
    **kwargs:
        As for :class:`~livewidget.Feed`: connection keywords (``url``, ``key``, ``secret``, ``host``...),
        ``authorize``, ``user``, ``record``...
    """

    _kind = traitlets.Unicode("chart").tag(sync=True)
    _esm, _css = _front_end("chart")
    x = traitlets.Unicode(None, allow_none=True).tag(sync=True)
    y = traitlets.List(traitlets.Unicode()).tag(sync=True)
    by = traitlets.Unicode(None, allow_none=True).tag(sync=True)
    kind = traitlets.Enum(KINDS, "line").tag(sync=True)
    window_points = traitlets.Int(0).tag(sync=True)
    window_span = traitlets.Float(0.0).tag(sync=True)
    max_points = traitlets.Int(DEFAULT_MAX_POINTS).tag(sync=True)
    x_type = traitlets.Enum(("auto", "number", "time"), "auto").tag(sync=True)
    x_label = traitlets.Unicode("").tag(sync=True)
    y_label = traitlets.Unicode("").tag(sync=True)
    log_x = traitlets.Bool(False).tag(sync=True)
    log_y = traitlets.Bool(False).tag(sync=True)
    xlim: traitlets.List[Any] = traitlets.List(allow_none=True, default_value=None).tag(sync=True)
    ylim: traitlets.List[Any] = traitlets.List(allow_none=True, default_value=None).tag(sync=True)
    missing = traitlets.Enum(("gap", "skip"), "gap").tag(sync=True)
    height = traitlets.Int(320).tag(sync=True)
    colors = traitlets.List(traitlets.Unicode()).tag(sync=True)
    _backfill = traitlets.Bytes(b"").tag(sync=True)

    def __init__(
        self,
        channel: str | Sequence[str],
        event: str | Sequence[str] | None = None,
        *,
        y: str | Sequence[str],
        x: str | None = None,
        by: str | None = None,
        kind: str = "line",
        window: int | str | _dt.timedelta | None = 10_000,
        window_x: float | None = None,
        x_type: str = "auto",
        title: str | None = None,
        x_label: str | None = None,
        y_label: str | None = None,
        log_x: bool = False,
        log_y: bool = False,
        xlim: Sequence[float | None] | None = None,
        ylim: Sequence[float | None] | None = None,
        missing: str = "gap",
        height: int = 320,
        colors: Sequence[str] | None = None,
        max_points: int = DEFAULT_MAX_POINTS,
        max_rows: int | None = 1_000_000,
        **kwargs: Any,
    ) -> None:
        fields = _check.names(y, "y", allow_empty=True)
        if not fields or not all(fields):
            raise ValueError("y must name at least one field (non-empty names)")
        _check.check_str(x, "x", allow_none=True)
        _check.check_str(by, "by", allow_none=True)
        _check.check_str(kind, "kind")
        _check.check_int(max_points, "max_points", minimum=1)
        _check.check_int(height, "height", minimum=50, maximum=10_000)
        _check.check_bool(log_x, "log_x")
        _check.check_bool(log_y, "log_y")
        _check.check_number(window_x, "window_x", allow_none=True, positive=True)
        if colors is not None:
            _check.names(colors, "colors", allow_empty=True)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        points, span = parse_window(window)
        if window_x is not None:
            if not window_x > 0:
                raise ValueError("window_x must be a positive number of x units")
            span = float(window_x)
        if max_points <= 0:
            raise ValueError("max_points must be positive")
        lims = {name: _limits(name, value) for name, value in (("xlim", xlim), ("ylim", ylim))}
        names = _check.names(channel, "channel")
        # Kernel-side state, ready before the receiver (started by the base) delivers the first event.
        self._lock_points = threading.Lock()
        self._window: deque[tuple[float, float, str, tuple[float, ...]]] = deque(
            maxlen=min(points, max_points) if points else max_points
        )
        self._fields = fields
        self._x_field = x
        self._by_field = by
        self._x_kind: str | None = {"number": "number", "time": "time"}.get(x_type)
        if x is None:
            self._x_kind = "time"
        self._span = span
        self._skipped = 0
        self._bad = 0
        self._backfill_dirty = False
        self._last_backfill = 0.0
        # extend() calls so far: the record (`_backfill`) says how many it includes, so a view that
        # got the record first ignores the `points` messages it already covers (they race).
        self._extend_seq = 0
        default_title = f"{', '.join(fields)} · {', '.join(names)}"
        if kwargs.get("history") is None:  # the window's points
            # Not on a receive-time axis (x=None): a replayed event carries no publish time, so its
            # points would all land at the moment of subscribing.
            kwargs["history"] = 0 if x is None else min(points, MAX_HISTORY) if points else MAX_HISTORY
        super().__init__(
            channel,
            event,
            max_rows=max_rows,
            title=title or default_title,
            y=fields,
            x=x,
            by=by,
            kind=kind,
            window_points=points,
            window_span=span,
            max_points=max_points,
            x_type=x_type,
            x_label=x_label if x_label is not None else (x or ""),
            y_label=y_label if y_label is not None else (fields[0] if len(fields) == 1 else ""),
            log_x=log_x,
            log_y=log_y,
            xlim=lims["xlim"],
            ylim=lims["ylim"],
            missing=missing,
            height=height,
            colors=list(colors or []),
            **kwargs,
        )

    # ------------------------------------------------------------------ receiving

    def _parse(self, point: Any, t: float) -> tuple[float, float, str, tuple[float, ...]] | None:
        """One point received at ``t`` (s) as ``(t ms, x, group, ys)`` for the window; None if skipped.

        The same rules as chart.js ``ChartStore.addPoint`` (counts included).
        """
        if not isinstance(point, Mapping):
            self._skipped += 1
            return None
        if self._x_field is None:
            x: float | None = t
        else:
            raw = _field(point, self._x_field)
            if self._x_kind is None:
                if _number(raw) is not None:
                    self._x_kind = "number"
                elif _time(raw) is not None:
                    self._x_kind = "time"
            x = _time(raw) if self._x_kind == "time" else _number(raw)
        if x is None or (self.log_x and x <= 0):
            self._skipped += 1
            return None
        ys: list[float] = []
        usable = bad = 0
        for name in self._fields:
            raw = _field(point, name)
            if raw is _ABSENT:
                ys.append(-math.inf)
                continue
            y = _number(raw)
            if y is None or (self.log_y and y <= 0):
                ys.append(math.nan)
                bad += 1
            else:
                ys.append(y)
                usable += 1
        if not usable:
            self._skipped += 1
            if not bad or self.missing == "skip":
                return None
        else:
            self._bad += bad
        group = "" if self._by_field is None else _group(_field(point, self._by_field))
        return (t * 1000.0, x, group, tuple(ys))

    def _on_event(self, event: ClientEvent) -> None:
        """On the I/O thread: one row per point in the record, the window for later views, callbacks."""
        if not self._accepts(event):
            return
        now = time.time()
        data = event.data
        items = data if isinstance(data, list) else [data]
        with self._lock_points:
            for point in items:
                self._store.append(now, event.channel, event.event, point, event.user_id, event.history)
                parsed = self._parse(point, now)
                if parsed is not None:
                    self._window.append(parsed)
            self._backfill_dirty = True
        row = {"time": now, "channel": event.channel, "event": event.event, "data": data}
        row["user_id"] = event.user_id
        self._recent.append(row)
        self._rate_window.append(now)
        self._dirty = True
        for name in (event.event, "*"):
            for callback in self._callbacks.get(name, ()):
                try:
                    callback(row)
                except Exception:
                    _base.log.exception("callback for %s failed", name)
        with self._cond:
            self._cond.notify_all()

    def _flush(self) -> None:
        super()._flush()
        if not self._backfill_dirty:
            return
        now = time.time()
        every = max(BACKFILL_EVERY, len(self._window) / BACKFILL_RATE)
        if now - self._last_backfill < every:
            self._dirty = True  # come back for it
            return
        self._backfill_dirty = False
        self._last_backfill = now
        self._backfill = self._encode_window()

    def _encode_window(self) -> bytes:
        with self._lock_points:
            rows = list(self._window)
            skipped, bad, extends = self._skipped, self._bad, self._extend_seq
        if self._span > 0 and rows:
            newest = max(r[1] for r in rows)
            rows = [r for r in rows if r[1] >= newest - self._span]
        return encode_columns(
            rows, self._fields, self._by_field is not None, self._x_kind, skipped, bad, extends
        )

    # ------------------------------------------------------------------ public API

    @property
    def skipped(self) -> int:
        """Points the kernel could not plot (not an object, no usable x or y)."""
        return self._skipped

    @property
    def bad_values(self) -> int:
        """y values the kernel saw as gaps (null, NaN, not a number)."""
        return self._bad

    def extend(self, data: Any, *, reset: bool = False) -> int:
        """Add points recorded elsewhere: a DataFrame (or dict of columns, or list of point dicts).

        They join the kernel's record (``chart.df``) and the window, and open views draw them at once;
        views opened later get them with the rest of the window. Date columns become a time axis.
        ``reset=True`` forgets the points recorded so far (in the kernel and in open views).
        Returns the number of points drawn (skipped ones are counted as for live points).
        """
        columns = [c for c in (self._x_field, self._by_field, *self._fields) if c is not None]
        if isinstance(data, list) and all(isinstance(p, Mapping) for p in data):
            rows: list[Any] = [dict(p) for p in data]
            dates: set[str] = set()
        else:
            rows, dates = records(data, columns)
        if self._x_field is not None and self._x_field in dates and self._x_kind is None:
            self._x_kind = "time"
        now = time.time()
        added: list[tuple[float, float, str, tuple[float, ...]]] = []
        with self._lock_points:
            self._extend_seq += 1
            seq = self._extend_seq
            if reset:
                self._window.clear()
                self._store.clear()
                self._skipped = self._bad = 0
            for point in rows:
                self._store.append(now, None, "extend", point, None)
                parsed = self._parse(point, now)
                if parsed is not None:
                    self._window.append(parsed)
                    added.append(parsed)
            self._backfill_dirty = True
            skipped, bad = self._skipped, self._bad
        limit = self._window.maxlen or len(added)
        payload = encode_columns(
            added[-limit:], self._fields, self._by_field is not None, self._x_kind, skipped, bad
        )
        message: dict[str, Any] = {"type": "points", "seq": seq}
        if reset:
            message["reset"] = True
        if not self._closed:
            self._message(message, [payload])
        self._dirty = True
        self._last_backfill = 0.0  # refresh the record for later views at the next flush
        return len(added)

    @classmethod
    def from_dataframe(
        cls,
        frame: Any,
        channel: str | Sequence[str] | None = None,
        event: str | Sequence[str] | None = None,
        *,
        y: str | Sequence[str] | None = None,
        x: str | None = None,
        **kwargs: Any,
    ) -> LiveChart:
        """A chart drawing ``frame`` first, then the points published on ``channel`` (default: a new one).

        ``y`` defaults to the numeric columns other than ``x`` and ``by``; ``x`` to the index when it
        is named or holds dates (else the index name ``"index"``).
        """
        import pandas as pd  # the caller has a DataFrame: pandas is loaded already

        df = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
        if x is None:  # the index, as a column
            x = str(df.index.name or "index")
            df = df.reset_index()
        by = kwargs.get("by")
        if y is None:
            y = [
                str(c)
                for c in df.columns
                if c not in (x, by)
                and pd.api.types.is_numeric_dtype(df[c].dtype)
                and not pd.api.types.is_bool_dtype(df[c].dtype)
            ]
            if not y:
                raise ValueError("the DataFrame has no numeric column to plot: give y=")
        kwargs.setdefault("window", None if len(df) > 10_000 else 10_000)
        chart = cls(channel or f"chart-{uuid.uuid4().hex[:12]}", event, x=x, y=y, **kwargs)
        chart.extend(df)
        return chart

    def clear(self) -> None:
        """Forget every point, in the kernel and in open views."""
        self.extend([], reset=True)


def _limits(name: str, value: Sequence[float | None] | None) -> list[float | None] | None:
    if value is None:
        return None
    items = list(value)
    if len(items) != 2:
        raise ValueError(f"{name} must be (lo, hi), either may be None")
    out = [None if v is None else float(v) for v in items]
    if out[0] is not None and out[1] is not None and not out[0] < out[1]:
        raise ValueError(f"{name}: lo must be below hi, got {items}")
    return out


def encode_columns(
    rows: Iterable[tuple[float, float, str, tuple[float, ...]]],
    fields: Sequence[str],
    grouped: bool,
    x_kind: str | None,
    skipped: int = 0,
    bad: int = 0,
    extends: int = 0,
) -> bytes:
    """Points ``(t ms, x, group, ys)`` in the binary column format of the module docstring.

    ``extends`` is the number of :meth:`LiveChart.extend` calls the record includes.
    """
    rows = list(rows)
    n = len(rows)
    groups: dict[str, int] = {}
    t = array("d", [r[0] for r in rows])
    xs = array("d", [r[1] for r in rows])
    ys = [array("d", [r[3][i] for r in rows]) for i in range(len(fields))]
    codes = array("i", [groups.setdefault(r[2], len(groups)) for r in rows]) if grouped else None
    header = {
        "n": n,
        "fields": list(fields),
        "groups": list(groups) if grouped else None,
        "x_kind": x_kind,
        "skipped": skipped,
        "bad": bad,
        "extends": extends,
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    parts = [_MAGIC, struct.pack("<I", len(head)), head, b"\0" * (-(8 + len(head)) % 8)]
    columns: list[array[Any]] = [t, xs, *ys]
    if codes is not None:
        columns.append(codes)
    for col in columns:
        if sys.byteorder != "little":
            col.byteswap()
        parts.append(col.tobytes())
    return b"".join(parts)

"""``Feed``: the generic live widget, a Pusher "debug console" for channels, with a DataFrame."""

from __future__ import annotations

import traitlets

from ._base import LiveWidget, _front_end

__all__ = ["Feed"]


class Feed(LiveWidget):
    """Subscribe to ``channels`` in the browser and in the kernel; show and record every event.

    ``Feed("sensors")`` or ``Feed(["private-jobs", "presence-team"], events=["done"])``.

    In the browser, pusher-js (bundled; no CDN) shows the connection state, events received with their
    rate, and a filterable log of recent events, live even while the kernel is busy. In the kernel, a
    receiver thread records every event once, in arrival order, whether or not a view is open:
    ``feed.df`` (a DataFrame, one row per event; JSON-object data flattened into columns; an event
    whose data is an array of objects, as :func:`livewidget.points` and :class:`livewidget.LogHandler`
    pack them, gives one row per object, in the browser's log too), ``feed.last``,
    ``feed.events`` (the last ``keep``), ``feed.on(event, callback)``, ``feed.wait(n)``. The
    record keeps ``max_rows`` rows (oldest dropped, counted in ``feed.dropped``).

    Rows whose data has a string ``level`` (records of :class:`livewidget.LogHandler`) are coloured
    by it in the browser (warning, error, critical); the filter box matches levels, loggers and text.

    Private and presence channels are signed in the kernel; the secret never reaches the browser.
    ``authorize=lambda channel: ...`` may refuse a channel; ``user={"id": ..., "info": {...}}`` is
    who the browser is on presence channels (default: the login name).

    ``history=`` (default 100; ``0``: none) replays that many of the channel's past events when
    subscribing, or those of a ``datetime.timedelta``, on servers that keep channel history (the
    embedded one, ``livewidget serve``; not hosted Pusher or Soketi, where the header says so):
    ``Feed("jobs", history=100)`` in a new kernel shows the last 100 events, marked in the log up to
    where live begins and in ``feed.df["history"]``. After a network drop or a server restart the
    kernel and the view resume from the last event heard: no gap, no duplicate.

    Connection keywords (``url``, ``app_id``, ``key``, ``secret``, ``cluster``, ``host``, ``port``,
    ``use_tls``) override :func:`livewidget.connect` and the environment; with none, the embedded
    server is used (started on first use).
    """

    _kind = traitlets.Unicode("feed").tag(sync=True)
    _esm, _css = _front_end("feed")

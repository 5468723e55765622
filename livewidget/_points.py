"""Publishing points for a :class:`~livewidget.LiveChart`, several per event when they come fast.

One point is one event (``livewidget.publish(channel, "point", {"step": 1, "loss": 0.3})`` works, and
a :class:`LiveChart` reads it), but an event per point stops scaling at a few hundred per second:
hosted Pusher counts messages, and each is an HTTP request's share and a websocket frame. A
:class:`ChartPublisher` queues points and, every ``interval`` seconds, sends what was queued as a JSON
array of points (the chart reads an array as several points), split so no event is over
``max_data_size``. A lone point is sent as an object, so slow producers publish exactly what
``publish`` would.

``add()`` encodes the point on the caller's thread (bad data raises at once, naming the field) and
returns after appending a string to a list; a background thread does the packing and hands events to
a :class:`~livewidget.Publisher` (which batches requests and retries). The thread sleeps while nothing
is queued: the first point wakes it, and it sends what came within one ``interval``. Like the
publisher, it survives ``os.fork()``: in the child the queue starts empty and the thread starts on
the first ``add``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from ._check import check_int, check_number
from ._config import resolve
from ._publish import MAX_DATA_SIZE, Publisher, _default_publisher, check_names, encode_data

__all__ = ["ChartPublisher", "points"]

DEFAULT_EVENT = "point"
DEFAULT_INTERVAL = 0.05  # s between packed events: 20 events/s per publisher at most
# The pusher library refuses batched events whose `sys.getsizeof(data)` is over 10240: that counts the
# str object's header (about 50 bytes) and 2 or 4 bytes per character for non-ASCII text.
PACK_SIZE = MAX_DATA_SIZE - 240


class ChartPublisher:
    """Queue points for ``channel`` and publish them packed, at most every ``interval`` seconds.

    ``with livewidget.points("train") as pts: pts.add(step=i, loss=loss)``.

    Parameters
    ----------
    channel:
        Where to publish.
    event:
        The event name (a :class:`LiveChart` with ``event=None`` takes every event name).
    interval:
        Seconds between sends; points added meanwhile go in the same events. ``0`` sends from the
        background thread as soon as it wakes (still packing what accumulated).
    max_data_size:
        Bytes of JSON per event (hosted Pusher: 10 KB, less a margin); a single point over it raises
        ``ValueError``.
    publisher:
        The :class:`~livewidget.Publisher` to send through (default: the process's shared one for the
        connection settings).
    **connection:
        Connection keywords, as for :func:`livewidget.connect`.
    """

    def __init__(
        self,
        channel: str,
        event: str = DEFAULT_EVENT,
        *,
        interval: float = DEFAULT_INTERVAL,
        max_data_size: int = PACK_SIZE,
        publisher: Publisher | None = None,
        **connection: Any,
    ) -> None:
        check_names(channel, event)
        check_number(interval, "interval", minimum=0)
        check_int(max_data_size, "max_data_size", minimum=64)
        if publisher is not None and not isinstance(publisher, Publisher):
            raise TypeError(f"publisher must be a livewidget.Publisher, not {type(publisher).__name__}")
        self.channel = channel
        self.event = event
        self.interval = interval
        self.max_data_size = max_data_size
        self._publisher = publisher or _default_publisher(resolve(**connection))
        self.points = 0  # points added
        self.events = 0  # events handed to the publisher
        self._lock = threading.Condition()
        self._queue: list[str] = []
        self._closed = False
        self._thread: threading.Thread | None = None
        _live.add(self)

    # ------------------------------------------------------------------ caller side

    def add(self, point: Mapping[str, Any] | None = None, /, **fields: Any) -> None:
        """Queue one point: a mapping, or keywords (``add(step=3, loss=0.1)``); returns at once."""
        if point is not None and fields:
            data: Any = {**point, **fields}
        else:
            data = point if point is not None else fields
        if not isinstance(data, Mapping):
            raise TypeError(f"a point is a mapping of field names to values, not {type(data).__name__}")
        text = encode_data(dict(data), self.max_data_size - 2)
        with self._lock:
            if self._closed:
                raise RuntimeError("this ChartPublisher is closed")
            self._queue.append(text)
            self.points += 1
            if self._thread is None:
                self._start()
            if self.interval == 0 or len(self._queue) == 1:
                self._lock.notify()  # wake the idle packer (it then gathers for one interval)

    def extend(self, points: Iterable[Mapping[str, Any]]) -> None:
        """Queue several points (e.g. ``df.to_dict("records")``)."""
        for point in points:
            self.add(point)

    def flush(self, timeout: float | None = 30.0) -> None:
        """Send everything queued now and wait until the publisher has delivered it."""
        self._send(self._take())
        self._publisher._flush_owned(timeout, self)  # raises only for this block's points

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, then stop the background thread (the shared publisher stays open)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        self.flush(timeout)
        _live.discard(self)

    def __enter__(self) -> ChartPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ packing

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="livewidget-points", daemon=True)
        self._thread.start()

    def _take(self) -> list[str]:
        with self._lock:
            queued, self._queue = self._queue, []
        return queued

    def _run(self) -> None:
        while True:
            with self._lock:
                # Idle (nothing queued): sleep until a point comes, rather than waking every interval,
                # which would take the GIL from a training loop 1/interval times a second for nothing.
                while not self._queue and not self._closed:
                    self._lock.wait()
                if self.interval and not self._closed:
                    self._lock.wait(self.interval)  # gather what comes within one interval
                closed = self._closed
            try:
                self._send(self._take())
            except Exception as exc:  # the publisher reports delivery; this is a bug, say it and go on
                self._publisher.errors.append(f"packing points failed: {exc!r}")
            if closed:
                return

    def _send(self, queued: list[str]) -> None:
        """Pack encoded points into events of at most ``max_data_size`` bytes."""
        if not queued:
            return
        if len(queued) == 1:
            self._publish(queued[0])
            return
        limit = self.max_data_size
        chunk: list[str] = []
        size = 2  # the brackets
        for text in queued:
            n = len(text) if text.isascii() else 4 * len(text)
            if chunk and size + n + 1 > limit:
                self._publish("[" + ",".join(chunk) + "]")
                chunk, size = [], 2
            chunk.append(text)
            size += n + 1
        if len(chunk) == 1:
            self._publish(chunk[0])
        elif chunk:
            self._publish("[" + ",".join(chunk) + "]")

    def _publish(self, text: str) -> None:
        self._publisher._publish_owned(self.channel, self.event, text, None, False, self)
        self.events += 1

    def _after_fork(self) -> None:
        self._lock = threading.Condition()
        self._queue = []
        self._thread = None


def points(
    channel: str,
    event: str = DEFAULT_EVENT,
    *,
    interval: float = DEFAULT_INTERVAL,
    **connection: Any,
) -> ChartPublisher:
    """A :class:`ChartPublisher` for ``channel``: ``pts.add(step=1, loss=0.3)``, packed per ``interval``."""
    return ChartPublisher(channel, event, interval=interval, **connection)


_live: weakref.WeakSet[ChartPublisher] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pub in list(_live):
        pub._after_fork()


@atexit.register  # registered after _publish's: runs first, so the publisher's exit flush sends these
def _flush_at_exit() -> None:
    for pub in list(_live):
        with contextlib.suppress(Exception):
            pub._send(pub._take())


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)

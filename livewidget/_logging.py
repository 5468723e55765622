"""``LogHandler``: Python's logging records, published to a channel for a :class:`~livewidget.Feed`.

Records are encoded on the logging thread and queued; a background thread sends what was queued
every ``interval`` seconds as one event (a JSON array of records, split to stay under the event size
limit), through the same packing as :func:`livewidget.points`: a busy logger costs a few events per
second, and ``emit`` never waits for the network. A ``Feed`` shows one row per record (level colours
in the browser, ``feed.df`` with one column per field).

Worker processes: a handler inherited through ``fork`` starts afresh in the child; in a spawned worker,
add one in the pool's ``initializer``. A multiprocessing child delivers what it logged when it exits
normally (``Process``, ``ProcessPoolExecutor``, ``Pool.close()``/``join()``); a pool that terminates
its workers (``with Pool() as p``) needs ``handler.flush()`` at the end of each task.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from typing import Any

from ._points import ChartPublisher

__all__ = ["LogHandler"]

EVENT = "log"
MAX_TEXT = 4000  # characters kept of a message and of an exception's text (events stay under 10 KB)
# A LogRecord's own attributes: anything else in its __dict__ came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_SCALARS = (str, int, float, bool, type(None))


class LogHandler(logging.Handler):
    """A ``logging.Handler`` that publishes each record to ``channel`` (event ``"log"``), coalesced.

    ``logging.getLogger().addHandler(livewidget.LogHandler("logs"))``, then ``livewidget.Feed("logs")``.

    Each record is a JSON object: ``level`` (``"INFO"``...), ``logger``, ``message`` (formatted with
    the record's args; the handler's formatter is not used), ``exc`` (the traceback text, or null),
    ``created`` (epoch seconds), ``levelno``, ``host``, ``pid``, ``process`` and ``thread`` (names), and
    every ``extra=`` field (values that are not JSON scalars, lists or dicts are sent as ``repr``).

    Parameters
    ----------
    channel:
        Where to publish.
    level:
        The handler's level, as for any handler.
    interval:
        Seconds between sends; records logged meanwhile go in the same event.
    event:
        The event name.
    **connection:
        Connection keywords, as for :func:`livewidget.connect`.

    Records of livewidget's own loggers are not published (a delivery problem would feed itself).
    """

    def __init__(
        self,
        channel: str = "logs",
        level: int | str = logging.NOTSET,
        *,
        interval: float = 0.1,
        event: str = EVENT,
        **connection: Any,
    ) -> None:
        super().__init__(level)
        self.channel = channel
        self._points = ChartPublisher(channel, event, interval=interval, **connection)
        self._host = socket.gethostname()
        self._inside = threading.local()
        self._finalizer_pid = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "livewidget" or record.name.startswith("livewidget."):
            return
        if getattr(self._inside, "on", False):
            return  # logging from inside emit (e.g. a warning while encoding): never recurse
        self._inside.on = True
        try:
            self._points.add(self.record(record))
            self._exit_hook()
        except Exception:
            self.handleError(record)
        finally:
            self._inside.on = False

    def record(self, record: logging.LogRecord) -> dict[str, Any]:
        """The JSON object published for ``record``."""
        message = record.getMessage()
        exc = record.exc_text
        if exc is None and record.exc_info and record.exc_info[0] is not None:
            exc = logging.Formatter().formatException(record.exc_info)
        if record.stack_info:
            exc = f"{exc}\n{record.stack_info}" if exc else record.stack_info
        data: dict[str, Any] = {  # what a Feed row previews first comes first
            "level": record.levelname,
            "logger": record.name,
            "message": message[:MAX_TEXT],
            "exc": exc[-MAX_TEXT:] if exc else None,
            "created": record.created,
            "levelno": record.levelno,
            "host": self._host,
            "pid": record.process if record.process is not None else os.getpid(),
            "process": record.processName,
            "thread": record.threadName,
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key in data or key.startswith("_"):
                continue
            data[key] = value if isinstance(value, (*_SCALARS, list, dict)) else repr(value)
        return data

    def flush(self) -> None:
        """Send what is queued and wait (at most 10 s) until it is delivered."""
        try:
            self._points.flush(10)
        except Exception as exc:  # flush is called by logging.shutdown at exit: report, never raise
            import warnings

            warnings.warn(f"livewidget.LogHandler: {exc}", RuntimeWarning, stacklevel=2)

    def close(self) -> None:
        """Deliver what is queued, then stop the handler's packing thread."""
        with contextlib.suppress(Exception):
            self._points.close(10)
        super().close()

    def _exit_hook(self) -> None:
        """In a multiprocessing child, deliver before it exits: it leaves through os._exit, which
        skips atexit, but runs multiprocessing's finalizers first."""
        pid = os.getpid()
        if self._finalizer_pid == pid:
            return
        self._finalizer_pid = pid
        from ._progress import _in_worker

        if _in_worker():
            from multiprocessing import util

            util.Finalize(self, self.flush, exitpriority=10)

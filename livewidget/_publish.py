"""Publishing through the official ``pusher`` library, off the caller's thread (the only module importing it).

``publish()`` encodes and checks the event on the caller's thread (so bad data raises at once, naming
the field), queues it, and returns. A background sender thread takes everything queued, groups it into
``batch_events`` requests within the server's limits, and sends them over one keep-alive connection.
Failures are retried with backoff, then reported three ways: an exception from :meth:`Publisher.flush`,
a warning, and :attr:`Publisher.errors`. Queued events are flushed at interpreter exit.

A publisher survives ``os.fork()`` (multiprocessing's fork start method): the sender thread does not,
so in the child it starts afresh, with an empty queue (what the parent had queued is the parent's to
send) and a new HTTP connection.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import json
import math
import os
import queue
import re
import sys
import threading
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

from ._config import Settings, resolve
from .exceptions import ConfigurationError, LivewidgetError

__all__ = ["PublishError", "Publisher", "encode_data", "publish"]

MAX_DATA_SIZE = 10 * 1024  # bytes of `data` per event: hosted Pusher's limit (HTTP 413 above it)
MAX_BATCH = 10  # events per batch_events request: hosted Pusher's multi-tenant limit
RETRIES = 4
# A signed REST query (auth_key=...&auth_signature=...&body_md5=...), as requests' errors quote the URL:
# replayable for the timestamp window, and noise in a notebook's warning.
_SIGNED_QUERY = re.compile(r"\?[^\s'\"()]*auth_signature=[^\s'\"()]*")
FIRST_BACKOFF = 0.25


class PublishError(LivewidgetError):
    """Events could not be delivered to the server (after retries); ``errors`` lists why."""


@dataclass(frozen=True, slots=True)
class _Event:
    channel: str
    name: str
    data: str
    socket_id: str | None


def _default(obj: Any) -> Any:
    # numpy and pandas values, without importing either
    module = type(obj).__module__
    if module == "numpy" or module.startswith("numpy."):
        if hasattr(obj, "tolist"):
            return obj.tolist()
        if hasattr(obj, "item"):
            return obj.item()
    if hasattr(obj, "isoformat") and (module.startswith("pandas") or isinstance(obj, (_dt.date, _dt.time))):
        if module.startswith("pandas") and str(obj) == "NaT":
            return None
        return obj.isoformat()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if module.startswith("pandas") and hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(type(obj).__name__)


def _clean_floats(value: Any) -> Any:
    """NaN and infinities become null (JSON has neither)."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {k: _clean_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_floats(v) for v in value]
    return value


def _find_unencodable(value: Any, path: str) -> tuple[str, Any] | None:
    try:
        json.dumps(value, default=_default)
        return None
    except (TypeError, ValueError):
        pass
    if isinstance(value, dict):
        for k, v in value.items():
            found = _find_unencodable(v, f"{path}[{k!r}]")
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _find_unencodable(v, f"{path}[{i}]")
            if found:
                return found
    return path, value


def encode_data(data: Any, max_size: int | None = MAX_DATA_SIZE) -> str:
    """``data`` as the JSON string sent on the wire (a string is sent as is).

    numpy scalars and arrays, pandas timestamps, sets and tuples are converted; NaN and infinities
    become ``null``. Raises ``TypeError`` naming the field that cannot be encoded, and
    ``ValueError`` with the size and the limit when the result is over ``max_size`` bytes.
    """
    if isinstance(data, str):
        text = data
    else:
        try:
            text = json.dumps(data, default=_default, allow_nan=False, separators=(",", ":"))
        except ValueError:
            text = json.dumps(
                _clean_floats(json.loads(json.dumps(data, default=_default))), separators=(",", ":")
            )
        except TypeError:
            found = _find_unencodable(data, "data")
            where, value = found if found else ("data", data)
            raise TypeError(
                f"cannot encode {where} ({type(value).__name__}) as JSON; convert it to a string, "
                "number, list or dict first"
            ) from None
    size = len(text.encode())
    if max_size is not None and size > max_size:
        raise ValueError(
            f"event data is {size} bytes, over the limit of {max_size}; send less per event or raise "
            "the server's max_data_size (hosted Pusher allows 10 KB)"
        )
    return text


class Publisher:
    """Publishes events from a background thread; ``publish`` never blocks on the network.

    Parameters
    ----------
    settings:
        Where to publish (default: the resolution order of :func:`livewidget.connection`).
    max_data_size:
        Bytes of ``data`` per event, checked before queueing. ``None`` disables the check.
    max_batch:
        Events per ``batch_events`` request (hosted Pusher: 10).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        max_data_size: int | None = MAX_DATA_SIZE,
        max_batch: int = MAX_BATCH,
        **connection: Any,
    ) -> None:
        self.settings = settings or resolve(**connection)
        self.settings.require_secret("publishing")
        self.max_data_size = max_data_size
        self.max_batch = max_batch
        self.errors: list[str] = []
        self.sent = 0
        self._queue: queue.SimpleQueue[_Event | None] = queue.SimpleQueue()
        self._pending = 0
        self._cond = threading.Condition()
        self._unreported: list[str] = []
        self._closed = False
        self._pid = os.getpid()
        self._client = self._make_client()
        self._thread: threading.Thread | None = None
        self._start_sender()
        _live_publishers.add(self)

    def _start_sender(self) -> None:
        self._thread = threading.Thread(target=self._run, name="livewidget-publisher", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        # In the child of os.fork(): no sender thread, and locks possibly held by threads that are gone.
        self._queue = queue.SimpleQueue()
        self._pending = 0
        self._cond = threading.Condition()
        self._unreported = []
        self._pid = os.getpid()
        self._thread = None  # started by the first publish()
        if not self._closed:
            self._client = self._make_client()  # not the parent's keep-alive socket

    def _make_client(self) -> Any:
        import pusher

        s = self.settings
        kwargs: dict[str, Any] = {"app_id": s.app_id, "key": s.key, "secret": s.secret, "ssl": s.tls}
        if s.host:
            kwargs.update(host=s.host, port=s.ws_port)
        else:
            kwargs["cluster"] = s.cluster or "mt1"
        try:
            return pusher.Pusher(**kwargs)
        except ValueError as exc:
            raise ConfigurationError(f"the pusher library refused these settings: {exc}") from exc

    # ------------------------------------------------------------------ caller side

    def publish(
        self,
        channel: str,
        event: str,
        data: Any = None,
        *,
        socket_id: str | None = None,
        wait: bool = False,
    ) -> Any:
        """Queue ``event`` on ``channel``; returns at once (``None``).

        With ``wait=True`` it is sent now, on this thread, and the server's answer is returned.
        """
        if self._closed:
            raise PublishError("this Publisher is closed")
        if not channel or not isinstance(channel, str):
            raise ValueError("channel must be a non-empty string")
        if not event or not isinstance(event, str):
            raise ValueError("event must be a non-empty string")
        text = encode_data(data, self.max_data_size)
        if wait:
            try:
                return self._client.trigger([channel], event, text, socket_id)
            except Exception as exc:
                raise PublishError(f"publishing {event!r} to {channel!r} failed: {_problem(exc)}") from exc
        with self._cond:
            self._pending += 1
            if self._thread is None:
                self._start_sender()
        self._queue.put(_Event(channel, event, text, socket_id))
        return None

    def flush(self, timeout: float | None = 30.0) -> None:
        """Wait until everything queued so far is sent; raise :class:`PublishError` on failures."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise PublishError(f"{self._pending} event(s) still queued after {timeout} s")
                self._cond.wait(remaining)
            failures, self._unreported = self._unreported, []
        if failures:
            raise PublishError("; ".join(failures))

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, then stop the sender thread."""
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            self._closed = True
            self._queue.put(None)
            if self._thread is not None:
                self._thread.join(5)
            _live_publishers.discard(self)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ sender thread

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            # pusher-http-python checks batch events with sys.getsizeof (the str object, ~50 bytes of
            # header and up to 4 bytes a character) against 10240: send such events on their own,
            # where its limit is 30720 and the server's byte limit is what counts.
            small = [e for e in batch if sys.getsizeof(e.data) <= 10240]
            for part in [small] + [[e] for e in batch if sys.getsizeof(e.data) > 10240]:
                if part:
                    self._send(part)
            with self._cond:
                self._pending -= len(batch)
                self._cond.notify_all()
            if stop:
                return

    def _send(self, batch: list[_Event]) -> None:
        backoff = FIRST_BACKOFF
        for attempt in range(RETRIES + 1):
            try:
                if len(batch) == 1:
                    e = batch[0]
                    self._client.trigger([e.channel], e.name, e.data, e.socket_id)
                else:
                    self._client.trigger_batch(
                        [
                            {"channel": e.channel, "name": e.name, "data": e.data}
                            | ({"socket_id": e.socket_id} if e.socket_id else {})
                            for e in batch
                        ]
                    )
                self.sent += len(batch)
                return
            except Exception as exc:
                problem = f"{type(exc).__name__}: {_problem(exc)}"
                permanent = type(exc).__name__ in ("PusherBadRequest", "PusherBadAuth", "PusherForbidden")
                if permanent or attempt == RETRIES:
                    channels = sorted({e.channel for e in batch})
                    message = f"{len(batch)} event(s) to {channels} not delivered: {problem}"
                    self.errors.append(message)
                    with self._cond:
                        self._unreported.append(message)
                    self._report(message)
                    return
                time.sleep(backoff)
                backoff *= 2

    def _report(self, message: str) -> None:
        """Say that a batch was not delivered (on the sender thread): a warning; subclasses may differ."""
        warnings.warn(f"livewidget: {message}", RuntimeWarning, stacklevel=1)


def _problem(exc: BaseException) -> str:
    """``str(exc)`` without a signed query string in it."""
    return _SIGNED_QUERY.sub("", str(exc))


_live_publishers: weakref.WeakSet[Publisher] = weakref.WeakSet()
_default_lock = threading.Lock()
_defaults: dict[Settings, Publisher] = {}


def _default_publisher(settings: Settings) -> Publisher:
    with _default_lock:
        pub = _defaults.get(settings)
        if pub is None or pub._closed:
            pub = _defaults[settings] = Publisher(settings)
        return pub


def publish(channel: str, event: str, data: Any = None, *, wait: bool = False, **connection: Any) -> Any:
    """Publish ``event`` with ``data`` on ``channel``; returns at once (see :class:`Publisher`).

    ``connection`` takes the same keywords as :func:`livewidget.connect` for a one-off target.
    """
    return _default_publisher(resolve(**connection)).publish(channel, event, data, wait=wait)


def _after_fork_in_child() -> None:
    global _default_lock
    _default_lock = threading.Lock()
    for pub in list(_live_publishers):
        pub._after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _flush_at_exit() -> None:
    for pub in list(_live_publishers):
        try:
            pub.close(timeout=10)
        except PublishError as exc:
            warnings.warn(f"livewidget: at exit: {exc}", RuntimeWarning, stacklevel=1)

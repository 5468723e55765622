"""Publishing through the official ``pusher`` library, off the caller's thread (the only module importing it).

``publish()`` checks the channel and event names and encodes the data on the caller's thread (so
bad input raises at once, naming the problem), queues it, and returns. A background sender thread
takes everything queued, groups it into ``batch_events`` requests within the server's limits, and
sends them over one keep-alive connection. Failures are retried with backoff, then reported once,
naming the channels and events: raised by the :meth:`Publisher.flush` of whoever published them if it
is waiting, else a warning; always listed in :attr:`Publisher.errors`. A failure is never raised from
an unrelated later call: ``flush()`` raises only failures of events published by the same owner
(the Publisher's own callers; a ``points()`` block; never those of the module's ``publish()``,
which are warned about). Error texts never carry the signed query string or the secret.

Queued events are flushed at interpreter exit, waiting at most ``LIVEWIDGET_EXIT_TIMEOUT`` seconds
(default ``EXIT_TIMEOUT``); what could not be delivered is counted in one warning.

With the embedded server, a delivery failure first revives the daemon if it was killed (on the
same port: :func:`livewidget._embedded.revive`), then retries.

A publisher survives ``os.fork()`` (multiprocessing's fork start method): the sender thread does not,
so in the child it starts afresh, with an empty queue (what the parent had queued is the parent's to
send) and a new HTTP connection.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import json
import math
import os
import queue
import sys
import threading
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

from ._check import scrub
from ._config import Settings, resolve
from .exceptions import ConfigurationError, LivewidgetError
from .protocol.channels import is_valid_channel_name
from .protocol.client import MAX_DEPTH, _too_deep

__all__ = ["PublishError", "Publisher", "check_names", "encode_data", "publish"]

MAX_DATA_SIZE = 10 * 1024  # bytes of `data` per event: hosted Pusher's limit (HTTP 413 above it)
MAX_BATCH = 10  # events per batch_events request: hosted Pusher's multi-tenant limit
RETRIES = 4
FIRST_BACKOFF = 0.25
EXIT_TIMEOUT = 2.0  # s waited at interpreter exit for queued events (LIVEWIDGET_EXIT_TIMEOUT)
MAX_EVENT_NAME = 200  # characters (hosted Pusher and the embedded server)
_NOBODY = object()  # owner of module-level publish() events: failures warned, never raised


class PublishError(LivewidgetError):
    """Events could not be delivered to the server (after retries); ``errors`` lists why."""


@dataclass(frozen=True, slots=True)
class _Event:
    channel: str
    name: str
    data: str
    socket_id: str | None
    owner: Any = None  # whose flush() raises its failure (None: the Publisher's own callers)


def check_names(channel: Any, event: Any) -> None:
    """Raise ``ValueError`` naming the problem and the fix for a bad channel or event name."""
    if not isinstance(channel, str):
        raise TypeError(f"channel must be a string (a channel name), not {type(channel).__name__}")
    if not is_valid_channel_name(channel):
        raise ValueError(
            f"invalid channel name {channel!r}: use 1 to 200 of a-z A-Z 0-9 _ - = @ , . ; "
            "(no spaces; private-, presence- and cache- prefixes as usual)"
        )
    if not isinstance(event, str):
        raise TypeError(f"event must be a string (an event name), not {type(event).__name__}")
    if not event:
        raise ValueError("event name is empty: give a name such as 'update'")
    if len(event) > MAX_EVENT_NAME:
        raise ValueError(f"event name is {len(event)} characters; at most {MAX_EVENT_NAME}")
    if event.startswith(("pusher:", "pusher_internal:")):
        raise ValueError(f"event name {event!r}: names starting with 'pusher:' are reserved by Pusher")


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
        if _too_deep(data, MAX_DEPTH):
            raise ValueError(
                f"event data is nested deeper than {MAX_DEPTH} levels; flatten it (receivers refuse "
                "deeper data)"
            )
        try:
            text = json.dumps(data, default=_default, allow_nan=False, separators=(",", ":"))
        except RecursionError:
            raise ValueError("event data is nested too deeply (or refers to itself); flatten it") from None
        except ValueError as exc:
            if "Circular reference" in str(exc):
                raise ValueError("event data refers to itself (a circular reference)") from None
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

    _always_report = False  # report even failures that a waiting flush() raises (subclasses)

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
        self._unreported: dict[Any, list[str]] = {}  # owner -> failures its flush() will raise
        self._flushing: dict[Any, int] = {}  # owner -> flush() calls waiting now
        self.failed = 0  # events not delivered
        self._abandon = False  # at exit, past the deadline: stop retrying
        self._exiting = False  # at exit: failures are counted in the one exit message, not warned
        self._pending_at_exit = 0
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
        self._unreported = {}
        self._flushing = {}
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

        Raises ``ValueError`` (``TypeError`` for a wrong type) at once for a bad channel or event
        name (the rules of :class:`~livewidget.Feed`) or data that cannot be sent, naming the fix.
        With ``wait=True`` it is sent now, on this thread, and the server's answer is returned.
        """
        return self._publish_owned(channel, event, data, socket_id, wait, None)

    def _publish_owned(
        self, channel: str, event: str, data: Any, socket_id: str | None, wait: bool, owner: Any
    ) -> Any:
        """:meth:`publish` for ``owner``: its failures are raised by ``_flush_owned(owner)`` only."""
        if self._closed:
            raise PublishError("this Publisher is closed")
        check_names(channel, event)
        if socket_id is not None and not isinstance(socket_id, str):
            raise TypeError(f"socket_id must be a string such as '123.456', not {type(socket_id).__name__}")
        text = encode_data(data, self.max_data_size)
        if wait:
            try:
                return self._client.trigger([channel], event, text, socket_id)
            except Exception as exc:
                problem = scrub(f"{type(exc).__name__}: {exc}", self.settings.secret)
                raise PublishError(f"publishing {event!r} to {channel!r} failed: {problem}") from None
        with self._cond:
            self._pending += 1
            if self._thread is None:
                self._start_sender()
        self._queue.put(_Event(channel, event, text, socket_id, owner))
        return None

    def flush(self, timeout: float | None = 30.0) -> None:
        """Wait until everything queued so far is sent; raise :class:`PublishError` for events of this
        Publisher's callers that were not delivered (failures of others, e.g. of the module's
        ``publish()`` or a ``points()`` block, are theirs to report)."""
        self._flush_owned(timeout, None)

    def _flush_owned(self, timeout: float | None, _owner: Any) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flushing[_owner] = self._flushing.get(_owner, 0) + 1
            try:
                while self._pending:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise PublishError(f"{self._pending} event(s) still queued after {timeout} s")
                    self._cond.wait(remaining)
            finally:
                self._flushing[_owner] -= 1
            failures = self._unreported.pop(_owner, [])
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
                self._pending = max(0, self._pending - len(batch))  # 0 already if abandoned at exit
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
                problem = scrub(f"{type(exc).__name__}: {exc}", self.settings.secret)
                permanent = type(exc).__name__ in ("PusherBadRequest", "PusherBadAuth", "PusherForbidden")
                if permanent or attempt == RETRIES or self._abandon:
                    self._failed(batch, problem)
                    return
                if self.settings.source == "embedded" and attempt == 0:
                    self._revive()
                time.sleep(backoff)
                backoff *= 2

    def _revive(self) -> None:
        """The embedded daemon may have been killed: start it again (same port) and follow it."""
        from ._embedded import revive

        try:
            info = revive()
        except Exception:
            return
        if info is not None and (info["host"], int(info["port"])) != (self.settings.host, self.settings.port):
            from dataclasses import replace

            self.settings = replace(self.settings, host=info["host"], port=int(info["port"]))
            self._client = self._make_client()

    def _failed(self, batch: list[_Event], problem: str) -> None:
        """Report an undelivered batch once: to the flush() of its owner if waiting, else a warning."""
        pairs = list(dict.fromkeys((e.name, e.channel) for e in batch))
        what = ", ".join(f"{name!r} on {channel!r}" for name, channel in pairs[:3])
        if len(pairs) > 3:
            what += f" and {len(pairs) - 3} more"
        message = f"{len(batch)} event(s) not delivered ({what}): {problem}"
        self.errors.append(message)
        warn = False
        with self._cond:
            self.failed += len(batch)
            if self._exiting:
                return  # at exit: counted in the one exit message
            for owner in dict.fromkeys(e.owner for e in batch):
                if owner is not _NOBODY:
                    self._unreported.setdefault(owner, []).append(message)
                if owner is _NOBODY or not self._flushing.get(owner) or self._always_report:
                    warn = True
        if warn:
            self._report(message)

    def _report(self, message: str) -> None:
        """Say that a batch was not delivered (on the sender thread): a warning; subclasses may differ."""
        warnings.warn(f"livewidget: {message}", RuntimeWarning, stacklevel=1)


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

    Bad names or data raise ``ValueError``/``TypeError`` here, at the call. A delivery failure is
    reported once, as a warning naming the channel and event (never raised by a later, unrelated
    call). ``connection`` takes the same keywords as :func:`livewidget.connect` for a one-off target.
    """
    check_names(channel, event)  # before anything is resolved or started
    if not isinstance(wait, bool):
        raise TypeError(f"wait must be True or False, not {type(wait).__name__}")
    return _default_publisher(resolve(**connection))._publish_owned(channel, event, data, None, wait, _NOBODY)


def _after_fork_in_child() -> None:
    global _default_lock
    _default_lock = threading.Lock()
    for pub in list(_live_publishers):
        pub._after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def exit_timeout() -> float:
    """Seconds to wait for queued events at interpreter exit: ``LIVEWIDGET_EXIT_TIMEOUT`` or 2."""
    text = os.environ.get("LIVEWIDGET_EXIT_TIMEOUT", "")
    try:
        value = float(text) if text else EXIT_TIMEOUT
    except ValueError:
        return EXIT_TIMEOUT
    return value if value >= 0 and value == value else EXIT_TIMEOUT


@atexit.register
def _flush_at_exit() -> None:
    """Deliver what is queued, for at most exit_timeout() seconds; count the rest in one warning."""
    timeout = exit_timeout()
    deadline = time.monotonic() + timeout
    pubs = [p for p in list(_live_publishers) if not p._closed]
    before: dict[int, tuple[int, int]] = {}
    for pub in pubs:
        with pub._cond:
            pub._exiting = True
            before[id(pub)] = (pub.failed, len(pub.errors))  # those were reported already
    lost = still = 0
    targets: set[str] = set()
    problems: list[str] = []
    for pub in pubs:
        failed_before, errors_before = before[id(pub)]
        with pub._cond:
            while pub._pending and time.monotonic() < deadline:
                pub._cond.wait(max(0.0, deadline - time.monotonic()))
            pub._abandon = True  # whatever is left is lost: no more retries or warnings
            n = pub._pending + pub.failed - failed_before
            pub._pending_at_exit = pub._pending
            pub._pending = 0
            pub._cond.notify_all()
        pub._closed = True
        pub._queue.put(None)
        if n:
            lost += n
            still += pub._pending_at_exit
            targets.add(
                pub.settings.rest_url if pub.settings.host else f"Pusher cluster {pub.settings.cluster}"
            )
            problems += pub.errors[errors_before:][-1:]
    if lost:
        parts = []
        if lost - still:
            last = f" (last error: {problems[-1].split('): ', 1)[-1]})" if problems else ""
            parts.append(f"{lost - still} failed{last}")
        if still:
            parts.append(f"{still} still queued after {timeout:g} s (LIVEWIDGET_EXIT_TIMEOUT)")
        message = (
            f"livewidget: at exit, {lost} event(s) were not delivered to {', '.join(sorted(targets))}: "
            + "; ".join(parts)
        )
        with contextlib.suppress(Exception):
            print(message, file=sys.stderr, flush=True)

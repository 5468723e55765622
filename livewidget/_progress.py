"""``progress``: tqdm's progress bar that also publishes its state, for a :class:`ProgressBoard`.

:class:`progress` subclasses the class ``tqdm.auto`` picks (the notebook bar in a kernel, the text bar
elsewhere) and overrides only ``__init__``, ``display``, ``close`` and ``__exit__``; every tqdm argument
and method keeps working, and nothing is added to the per-iteration path.

When events go out
    - at start (``__init__``) and at the end (``close``), always;
    - in between from ``display()``, which tqdm already calls at most every ``mininterval`` from
      ``update()`` and iteration (its ``miniters`` + ``mininterval`` gate), plus on explicit refreshes
      (``set_description``, ``set_postfix``...). A display less than ``mininterval`` (and never less
      than ``MIN_INTERVAL``) after the last event is not sent at once: a trailing timer sends the
      newest state when the interval is up (the newest update wins, as tqdm's ``MonoWorker``), so
      the board never stays on a stale description or postfix.

With tqdm's ``delay``, nothing is published before ``delay`` seconds either, and a bar that ends
``done`` within it is never published (one that fails is): the way to keep many short inner bars
off the board and off the network.

Sending never blocks the loop: events go through a background :class:`~livewidget.Publisher`
(one per process and settings, remade after ``fork``). A failure to reach the server is reported
once (a ``RuntimeWarning``) and the loop goes on. In a worker process (multiprocessing, including
``concurrent.futures`` and joblib), closing the outermost open bar waits (at most ``CLOSE_FLUSH``
seconds, and not again after a failure) until its events are delivered, so a worker terminated
right after its task still reports ``done``; elsewhere the sender delivers in the background and
flushes at interpreter exit.

How a bar ends (``status``)
    ``done`` on a normal close; ``failed`` with ``"Type: message"`` when the ``with`` block or the
    iterable raised, or when ``close()`` is called while that exception propagates (``finally:``);
    ``cancelled`` on ``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit`` or asyncio
    cancellation. An exception raised in the *body* of ``for x in progress(...)`` never reaches the
    iterator (Python only closes it, as for ``break``), so a loop left early with ``n < total`` is
    reported ``failed`` with "stopped at n of total"; in IPython the exception that ends the cell
    (in a script, the one that ends it) then corrects that event, ``cancelled`` for an interrupt.
    Call ``bar.close()`` before a deliberate ``break`` to end as ``done``, or use
    ``with progress(...) as bar:`` for exact errors everywhere (worker processes included).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import sys
import threading
import time
import uuid
import warnings
import weakref
from typing import Any

from tqdm.auto import tqdm as _AutoTqdm

from ._config import Settings, resolve
from ._publish import Publisher, PublishError
from .protocol.channels import is_valid_channel_name

__all__ = ["CLOSE_FLUSH", "EVENT", "progress"]

EVENT = "progress"  # the event name on the channel
CLOSE_FLUSH = 5.0  # seconds the outermost bar's close() waits for delivery, in a worker process
MIN_INTERVAL = 0.05  # seconds: the least time between two events of a bar, whatever mininterval says
SLACK = 0.005  # seconds: a display this close to its interval is sent now (tqdm's clock runs a bit ahead)
PARENT_ENV = "LIVEWIDGET_PARENT_JOB"
MAX_TEXT = 1000  # characters kept of desc, postfix and error (events stay far under the 10 KB limit)
_ENV_KEYS = (
    *("LIVEWIDGET_URL", "PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET"),
    *("PUSHER_CLUSTER", "PUSHER_HOST", "PUSHER_PORT", "PUSHER_USE_TLS"),
)
_CANCELLED = ("KeyboardInterrupt", "SystemExit", "GeneratorExit", "CancelledError")
_NOTEBOOK = any(cls.__module__ == "tqdm.notebook" for cls in _AutoTqdm.__mro__)


# ---------------------------------------------------------------------------------------- process state


class _State:
    """Everything per process; replaced in the child after ``fork`` (threads and locks do not survive it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.publishers: dict[tuple[Any, ...], Publisher] = {}
        self.open: dict[int, int] = {}  # id(publisher) -> bars open on it
        self.degraded: set[int] = set()  # id(publisher) whose delivery failed once: close() waits no more
        self.warned: set[str] = set()
        self.trailer = _Trailer()
        # (publisher, channel, last event) of loops left early, waiting for the exception that ended them
        self.unsure: list[tuple[Publisher, str, dict[str, Any]]] = []
        self.hooked = False
        self.host = ""


def _warn_once(kind: str, message: str) -> None:
    with _state.lock:
        if kind in _state.warned:
            return
        _state.warned.add(kind)
    # warnings turned into errors must not break the loop or kill a thread
    with contextlib.suppress(Exception):
        warnings.warn(f"livewidget.progress: {message}", RuntimeWarning, stacklevel=3)


class _ProgressPublisher(Publisher):
    """The shared publisher of progress bars: a failed delivery is reported once per process."""

    _always_report = True  # by the one warning of _report(), also while a worker waits in flush()

    def _report(self, message: str) -> None:
        _warn_once(
            "network",
            f"{message}; the loops go on, further failures are not reported here (see publisher.errors)",
        )

    def close(self, timeout: float | None = 30.0) -> None:
        """As Publisher's, without reporting again (at exit) failures already warned about."""
        try:
            super().close(timeout)
        except PublishError:
            if "network" not in _state.warned:
                raise


def _publisher_for(explicit: Publisher | None) -> Publisher:
    if explicit is not None:
        return explicit
    from . import _config

    env = os.environ
    key = (_config._process_settings, *(env.get(k) for k in _ENV_KEYS))
    with _state.lock:
        pub = _state.publishers.get(key)
        if pub is None or pub._closed:
            settings: Settings = resolve()
            pub = _state.publishers[key] = _ProgressPublisher(settings)
        return pub


class _Trailer:
    """One daemon thread that sends a bar's newest state once its interval is up (started on demand)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: list[tuple[float, weakref.ref[progress]]] = []
        self._thread: threading.Thread | None = None

    def schedule(self, bar: progress, due: float) -> None:
        """Send ``bar``'s state at ``due`` (monotonic seconds), unless it is already waiting."""
        with self._cond:
            if bar._lw_waiting:
                return  # it sends whatever the state is then: the newest wins
            bar._lw_waiting = True
            self._due.append((due, weakref.ref(bar)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="livewidget-progress", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due:
                    self._cond.wait()
                now = time.monotonic()
                first = min(due for due, _ in self._due)
                if first > now:
                    self._cond.wait(first - now)
                    continue
                ready = [ref for due, ref in self._due if due <= now]
                self._due = [item for item in self._due if item[0] > now]
            for ref in ready:
                bar = ref()
                if bar is None:
                    continue
                bar._lw_waiting = False
                with contextlib.suppress(Exception):  # one bar must not stop the others' updates
                    bar._lw_send("running")


_state = _State()


def _after_fork_in_child() -> None:
    global _state
    host = _state.host
    _state = _State()
    _state.host = host


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _in_worker() -> bool:
    """Whether this is a multiprocessing (or concurrent.futures, joblib/loky) child process."""
    mp = sys.modules.get("multiprocessing")
    return mp is not None and mp.parent_process() is not None


def _outcome(exc: BaseException | None) -> tuple[str, str | None]:
    """``(status, error)`` for a bar that ended with ``exc`` (``None``: normally)."""
    if exc is None or isinstance(exc, (StopIteration, StopAsyncIteration)):
        return "done", None
    name = type(exc).__name__
    text = f"{name}: {exc}" if str(exc) else name
    status = "cancelled" if name in _CANCELLED else "failed"
    return status, text[:MAX_TEXT]


def _refine(exc: BaseException | None) -> None:
    """The exception a loop left early was (most likely) left by: update those bars' last event."""
    with _state.lock:
        loops, _state.unsure = _state.unsure, []
    if exc is None:
        return
    status, error = _outcome(exc)
    for pub, channel, state in loops:
        with contextlib.suppress(Exception):  # closed at exit, or warned about already
            pub.publish(channel, EVENT, {**state, "status": status, "error": error, "t": time.time()})


def _after_cell(result: Any) -> None:
    _refine(getattr(result, "error_in_exec", None))


def _at_exit() -> None:
    _refine(getattr(sys, "last_exc", None) or getattr(sys, "last_value", None))


def _watch_for_the_exception() -> None:
    """Learn the exception of the cell (IPython) or the script (exit) that left a loop early."""
    with _state.lock:
        if _state.hooked:
            return
        _state.hooked = True
    shell = None
    ipython = sys.modules.get("IPython")
    if ipython is not None:
        try:
            shell = ipython.get_ipython()
            if shell is not None:
                shell.events.register("post_run_cell", _after_cell)
        except Exception:
            shell = None
    if shell is None:
        atexit.register(_at_exit)  # after Publisher's flush at exit was registered: runs before it


class _NullFile:
    """Where the local bar goes when ``disable=None`` finds no terminal: nowhere."""

    encoding = "utf-8"

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


# ---------------------------------------------------------------------------------------- the bar


class progress(_AutoTqdm):  # type: ignore[misc]  # lower case, like `tqdm`
    """A drop-in for ``tqdm.auto.tqdm`` that also publishes its state to ``channel``.

    ``for x in progress(items, desc="train"): ...``, ``with progress(total=n) as bar: bar.update()``:
    every tqdm argument and method works and the usual local bar shows. In addition, each bar is a
    *job* on ``channel`` (event ``"progress"``), shown live by :class:`livewidget.ProgressBoard`.

    Parameters
    ----------
    iterable, *args, **tqdm_kwargs:
        As for tqdm (``total``, ``desc``, ``leave``, ``disable``, ``position``, ``unit``,
        ``unit_scale``, ``postfix``, ``mininterval``, ``file``...). ``mininterval`` (seconds, tqdm's
        default 0.1) is also the least time between two published events. ``disable=True`` turns
        everything off, publishing included; ``disable=None`` hides the local bar when not on a
        terminal (as in tqdm) but still publishes.
    channel:
        Where to publish (a public channel by default; ``private-...`` works with the secret).
    job:
        This bar's id on the board (default: a new random id; the same id again replaces the row).
    parent:
        The job this one belongs to (the board groups children under it). Default: the environment
        variable ``LIVEWIDGET_PARENT_JOB``, which worker processes inherit: set it (e.g. to an outer
        bar's ``job``) before starting a pool.
    publisher:
        A :class:`~livewidget.Publisher` to send with. Default: one shared per process and
        connection settings (:func:`livewidget.connect`, ``LIVEWIDGET_URL`` / ``PUSHER_*``, or the
        embedded server), so a worker with only the credentials in its environment works unchanged.

    The event's data (the contract with the board)::

        {"job", "parent": str | null, "desc", "n", "total": number | null, "unit",
         "unit_scale": bool | number, "unit_divisor", "rate": n per second | null (tqdm's smoothed
         rate; the overall average in the last event), "elapsed": s, "remaining": s | null,
         "postfix": str | null, "host", "pid", "status": "running" | "done" | "failed" | "cancelled",
         "error": str | null, "leave": bool | null (tqdm's), "t": epoch seconds}
    """

    # Defaults for a bar that does not publish (disabled, or tqdm's __init__ has not finished).
    _lw_on = False
    _lw_quiet = False
    _lw_waiting = False
    _lw_pub: Publisher | None = None
    _lw_unsure = False
    _lw_started = False
    _lw_outcome: tuple[str, str | None] | None = None

    def __init__(
        self,
        iterable: Any = None,
        *args: Any,
        channel: str = "progress",
        job: str | None = None,
        parent: str | None = None,
        publisher: Publisher | None = None,
        **tqdm_kwargs: Any,
    ) -> None:
        if not isinstance(channel, str):
            raise TypeError(f"channel must be a string (a channel name), not {type(channel).__name__}")
        if not is_valid_channel_name(channel):
            raise ValueError(
                f"invalid channel name {channel!r}: use 1 to 200 of a-z A-Z 0-9 _ - = @ , . ; (no spaces)"
            )
        if parent is not None and not isinstance(parent, str):
            raise TypeError(f"parent must be a job id (a string) or None, not {type(parent).__name__}")
        if publisher is not None and not isinstance(publisher, Publisher):
            raise TypeError(f"publisher must be a livewidget.Publisher, not {type(publisher).__name__}")
        if "disable" in tqdm_kwargs and tqdm_kwargs["disable"] is None and not _NOTEBOOK:
            out = tqdm_kwargs.get("file") or sys.stderr
            isatty = getattr(out, "isatty", None)
            if not (isatty is not None and isatty()):
                # tqdm would disable everything off a terminal; keep counting (and publishing) quietly
                tqdm_kwargs.update(disable=False, file=_NullFile())
                self._lw_quiet = True
        super().__init__(iterable, *args, **tqdm_kwargs)
        self.channel = channel
        self.job = str(job) if job is not None else uuid.uuid4().hex[:16]
        self.parent = parent if parent is not None else (os.environ.get(PARENT_ENV) or None)
        if self.disable:
            return
        self._lw_pid = os.getpid()
        self._lw_lock = threading.Lock()
        self._lw_last = started = time.monotonic()
        try:
            self._lw_pub = _publisher_for(publisher)
            if not _state.host:
                _state.host = socket.gethostname()
        except Exception as exc:  # no settings, no server: the local bar still works
            _warn_once("setup", f"not publishing progress: {exc}")
            return
        with _state.lock:
            key = id(self._lw_pub)
            _state.open[key] = _state.open.get(key, 0) + 1
        self._lw_on = True
        if self.delay > 0:
            # tqdm shows nothing before `delay`; neither does the board (a bar done by then never shows)
            self._lw_last = started + self.delay - max(self.mininterval, MIN_INTERVAL)
            _state.trailer.schedule(self, started + self.delay)
        else:
            self._lw_send("running")
            self._lw_last = started  # the interval counts from tqdm's start, as its own display does

    # ------------------------------------------------------------------ tqdm hooks

    def display(self, *args: Any, **kwargs: Any) -> Any:
        """tqdm's display (already throttled by tqdm), plus publishing at most every ``mininterval``."""
        if self._lw_on:
            now = time.monotonic()
            due = self._lw_last + max(self.mininterval, MIN_INTERVAL)
            if due - now <= SLACK:
                self._lw_send("running")
            else:
                _state.trailer.schedule(self, due)
        if self._lw_quiet:
            return True
        return super().display(*args, **kwargs)

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> Any:
        if self._lw_on:
            self._lw_outcome = _outcome(exc_value)
        return super().__exit__(exc_type, exc_value, traceback)

    def close(self) -> None:
        """Close as tqdm does, and publish the final state (``done``, ``failed`` or ``cancelled``)."""
        ended = False
        if self._lw_on:
            try:
                status, error = self._lw_outcome or self._lw_guess(sys._getframe(1))
                ended = self._lw_send(status, error)
            except Exception as exc:
                _warn_once("close", f"cannot publish the end of a progress bar: {exc}")
        super().close()
        if ended:
            self._lw_closed()

    # ------------------------------------------------------------------ publishing

    def _lw_guess(self, caller: Any) -> tuple[str, str | None]:
        """How the bar ended when close() was called without a with-block telling."""
        exc = sys.exc_info()[1]
        if exc is None:
            return "done", None
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame is not caller:
            tb = tb.tb_next
        if tb is None:
            return "done", None  # an exception handled around the bar, not by it
        if not isinstance(exc, GeneratorExit):
            return _outcome(exc)  # the iterable raised, or close() in a `finally:`/`except:`
        # A for loop over this bar was left early: break, return, or an exception in its body.
        if threading.current_thread() is threading.main_thread():
            self._lw_unsure = True
            _watch_for_the_exception()
        if self.total is not None and self.n < self.total:
            return "failed", f"stopped at {self.n} of {self.total} (left the loop early)"
        return "done", None

    def _lw_state(self, status: str, error: str | None) -> dict[str, Any]:
        n, total = self.n, self.total
        elapsed = max(self._time() - self.start_t, 0.0)
        average = (n - self.initial) / elapsed if elapsed > 0 and n > self.initial else None
        if status == "running":
            dt = self._ema_dt()
            rate = self._ema_dn() / dt if dt else average
        else:
            rate = average
        if status == "done":
            remaining: float | None = 0.0
        elif rate and total is not None and total >= n:
            remaining = (total - n) / rate
        else:
            remaining = None
        desc = self.desc[:-2] if self.desc.endswith(": ") else self.desc
        postfix = self.postfix
        return {
            "job": self.job,
            "parent": self.parent,
            "desc": desc[:MAX_TEXT],
            "n": n,
            "total": total,
            "unit": self.unit,
            "unit_scale": self.unit_scale,
            "unit_divisor": self.unit_divisor,
            "rate": rate,
            "elapsed": round(elapsed, 3),
            "remaining": remaining,
            "postfix": str(postfix)[:MAX_TEXT] if postfix else None,
            "host": _state.host,
            "pid": self._lw_pid,
            "status": status,
            "error": error,
            "leave": self.leave,
            "t": time.time(),
        }

    def _lw_send(self, status: str, error: str | None = None) -> bool:
        """Publish the current state; a final one (returns True) when ``status`` is not ``running``."""
        if os.getpid() != self._lw_pid:
            return False  # a bar inherited through fork belongs to the parent
        with self._lw_lock:
            if not self._lw_on:
                return False
            final = status != "running"
            if final:
                self._lw_on = False
                if status == "done" and not self._lw_started:
                    return True  # ended within tqdm's `delay`: shown neither here nor on the board
            state = self._lw_state(status, error)
            self._lw_last = time.monotonic()
            self._lw_started = True
            self._lw_publish(state)
            if final and self._lw_unsure and self._lw_pub is not None:
                with _state.lock:  # to be corrected when the exception that ended the loop is known
                    _state.unsure = [*_state.unsure[-999:], (self._lw_pub, self.channel, state)]
            return final

    def _lw_publish(self, state: dict[str, Any]) -> None:
        pub = self._lw_pub
        if pub is None:
            return
        try:
            pub.publish(self.channel, EVENT, state)
        except PublishError:
            pass  # closed at interpreter exit
        except Exception as exc:
            _warn_once("publish", f"cannot publish progress: {exc}")

    def _lw_closed(self) -> None:
        """One bar fewer open. In a worker process, after the last one, wait for delivery: a pool
        terminates its workers (SIGTERM: no exit handlers) as soon as their tasks return."""
        pub = self._lw_pub
        if pub is None or os.getpid() != self._lw_pid:
            return
        key = id(pub)
        with _state.lock:
            left = _state.open.get(key, 1) - 1
            _state.open[key] = left
            if left > 0 or key in _state.degraded or pub._closed or not _in_worker():
                return
        try:
            pub.flush(CLOSE_FLUSH)
        except PublishError as exc:
            with _state.lock:
                _state.degraded.add(key)
            _warn_once("network", f"progress events not delivered: {exc}; the loops go on")

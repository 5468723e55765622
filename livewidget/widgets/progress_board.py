"""``ProgressBoard``: every job publishing progress on a channel, live, one row per job."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import traitlets

from .. import _check
from .._frames import table
from ..protocol.client import ClientEvent
from ._base import LiveWidget, _front_end

__all__ = ["ProgressBoard"]

EVENT = "progress"
FINISHED = frozenset({"done", "failed", "cancelled"})
COLUMNS = (
    *("job", "parent", "desc", "n", "total", "status", "rate", "elapsed", "remaining"),
    *("host", "pid", "error", "updated", "unit", "postfix"),
)
GROUP_COLUMNS = (
    *("parent", "desc", "jobs", "running", "done", "failed", "cancelled", "n", "total"),
    *("status", "rate", "elapsed", "remaining", "hosts", "updated"),
)


class ProgressBoard(LiveWidget):
    """The jobs that publish :func:`livewidget.progress` on ``channel``, live, with their latest state.

    ``board = ProgressBoard()`` then, anywhere (this kernel, a worker process, a script on another
    machine with the credentials): ``for x in livewidget.progress(items): ...``. In the kernel:
    ``board.df`` (one row per job, latest state), ``board.groups`` (one row per parent),
    ``board.clear()``, and the :class:`~livewidget.Feed` API (``on``, ``wait``, ``events``, ``last``).

    Parameters
    ----------
    channel:
        The channel (or channels) the jobs publish to.
    max_jobs:
        Jobs kept; beyond it the oldest finished ones go first, then the oldest.
    notify:
        Ask the browser for desktop notifications when a job ends (``done``/``failed``).
    max_rows:
        Progress events kept in the raw record (``board.events``); the jobs table is separate.
    history:
        Progress events the server's channel history replays when subscribing (default 1000, the
        most it gives; or a ``datetime.timedelta``; ``0``: none), so a board opened after the jobs'
        kernel ended shows their final states.
    **kwargs:
        As for :class:`~livewidget.Feed`: connection keywords (``url``, ``key``, ``secret``, ``host``,
        ...), ``title``, ``authorize``, ``user``, ``record``...

    Contract with the front end (``_kind == "progress"``), in addition to :mod:`._base`'s:

    Live events
        pusher-js on ``channels``, event ``"progress"``; ``data`` is one job's state::

            {"job": id, "parent": id | null, "desc", "n", "total": number | null, "unit",
             "unit_scale": bool | number, "unit_divisor", "rate": per second | null,
             "elapsed": s, "remaining": s | null, "postfix": str | null, "host", "pid",
             "status": "running" | "done" | "failed" | "cancelled", "error": str | null,
             "leave": bool | null, "t": epoch seconds}

        Keep the latest per ``job`` (the last received wins, a finished job may be corrected). A
        job that ends ``done`` with ``leave === false`` is removed (tqdm's ``leave=False``). Format
        as tqdm does: ``unit_scale`` true → SI prefixes on ``n``, ``total`` and ``rate``
        (``unit_divisor`` 1000 or 1024); a number → multiply them by it first.
    ``jobs`` (trait, kernel → browser)
        ``{job: state}`` as above: what the kernel knows, refreshed with the coalesced flush (a
        view opened later starts from it; then it follows the live events). Replace the view's
        table with it when it changes (after :meth:`clear` it is smaller). Keys are ordered from
        least to most recently updated.
    ``_groups`` (trait, kernel → browser)
        ``{parent: aggregate}`` over the jobs whose ``parent`` is that id (its children only)::

            {"parent", "desc" (the parent job's own desc when it is a job, else the id), "jobs",
             "running", "done", "failed", "cancelled" (counts), "n" (sum), "total" (sum, null when
             one is unknown), "rate" (sum over running children, null when none),
             "elapsed" (latest t - earliest start, s), "remaining" ((total - n) / rate | null;
             0 when all done), "status" (failed > running > cancelled > done), "hosts" (sorted),
             "updated" (latest t)}

        Show one row per parent that expands to its children; recompute on live events with the
        same rules (:func:`aggregate` is the reference).
    ``notify`` (trait, both ways)
        Whether to raise a desktop notification (Notification API, after asking permission) when a
        job becomes ``done`` or ``failed``; the view may offer a toggle and save it.
    Custom message browser → kernel
        ``{"type": "clear", "finished": true}``: forget finished jobs (``false``: all), as
        :meth:`clear`; the kernel answers by updating ``jobs`` and ``_groups``.
    """

    _kind = traitlets.Unicode("progress").tag(sync=True)
    _esm, _css = _front_end("progress")
    jobs = traitlets.Dict().tag(sync=True)
    _groups = traitlets.Dict().tag(sync=True)
    notify = traitlets.Bool(False).tag(sync=True)
    _default_history = 1000  # the most a rewind gives: enough for the current jobs' latest states

    def __init__(
        self,
        channel: str | Sequence[str] = "progress",
        *,
        max_jobs: int = 500,
        notify: bool = False,
        max_rows: int | None = 10_000,
        title: str | None = None,
        **kwargs: Any,
    ) -> None:
        _check.check_int(max_jobs, "max_jobs", minimum=1)
        _check.check_bool(notify, "notify")
        # Set before the base starts the receiver, which may deliver events at once.
        self._jobs_lock = threading.Lock()
        self._states: dict[str, dict[str, Any]] = {}
        self._jobs_dirty = False
        self._max_jobs = max_jobs
        names = _check.names(channel, "channel")
        super().__init__(
            names,
            events=[EVENT],
            max_rows=max_rows,
            title=title or f"progress: {', '.join(names)}",
            notify=notify,
            **kwargs,
        )

    # ------------------------------------------------------------------ receiving

    def _on_event(self, event: ClientEvent) -> None:
        if self._accepts(event):
            self._take(event.data)
        super()._on_event(event)

    def _take(self, data: Any) -> None:
        """Keep ``data`` as its job's latest state (on the I/O thread)."""
        if not isinstance(data, dict) or not isinstance(data.get("job"), str):
            return
        if not isinstance(data.get("status"), (str, type(None))):
            return  # not a progress state (a hostile or foreign one must not poison the board)
        job = data["job"]
        state = dict(data)
        with self._jobs_lock:
            self._states.pop(job, None)  # re-inserted last: the dict stays ordered by recency
            if not (state.get("status") == "done" and state.get("leave") is False):
                self._states[job] = state
            while len(self._states) > self._max_jobs:
                oldest = next((k for k, s in self._states.items() if s.get("status") in FINISHED), None)
                del self._states[oldest if oldest is not None else next(iter(self._states))]
            self._jobs_dirty = True
        self._dirty = True

    def _flush(self) -> None:
        super()._flush()
        if not self._jobs_dirty:
            return
        with self._jobs_lock:
            self._jobs_dirty = False
            jobs = {job: dict(state) for job, state in self._states.items()}
        with self.hold_sync():
            self.jobs = jobs
            self._groups = aggregate(jobs)

    def _on_custom_msg(self, widget: Any, content: Any, buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "clear":
            self.clear(finished=content.get("finished", True) is not False)
            return
        super()._on_custom_msg(widget, content, buffers)

    # ------------------------------------------------------------------ public API

    @property
    def df(self) -> Any:
        """The latest state of every job as a DataFrame, one row per job, least recently updated first.

        Columns: job, parent, desc, n, total, status, rate, elapsed, remaining, host, pid, error,
        updated (UTC, from the event's ``t``), unit, postfix.
        """
        with self._jobs_lock:
            rows = [{**state, "updated": state.get("t")} for state in self._states.values()]
        return table(rows, COLUMNS, times=("updated",))

    @property
    def groups(self) -> Any:
        """One row per parent id: the aggregate of its children (see the class docstring)."""
        with self._jobs_lock:
            states = {job: dict(state) for job, state in self._states.items()}
        rows = [{**agg, "hosts": ", ".join(agg["hosts"])} for agg in aggregate(states).values()]
        return table(rows, GROUP_COLUMNS, times=("updated",))

    def clear(self, finished: bool = True) -> int:
        """Forget the finished jobs (``done``, ``failed``, ``cancelled``), or all with ``finished=False``.

        Returns how many were removed; views follow within a flush. A job that publishes again
        comes back.
        """
        with self._jobs_lock:
            gone = [job for job, s in self._states.items() if not finished or s.get("status") in FINISHED]
            for job in gone:
                del self._states[job]
            self._jobs_dirty = True
        self._dirty = True
        return len(gone)


def aggregate(states: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{parent: aggregate}`` of the jobs in ``states`` that have a parent (rules: class docstring)."""
    children: dict[str, list[dict[str, Any]]] = {}
    for state in states.values():
        parent = state.get("parent")
        if isinstance(parent, str) and parent:
            children.setdefault(parent, []).append(state)
    out: dict[str, dict[str, Any]] = {}
    for parent, kids in children.items():
        counts = {s: 0 for s in ("running", "done", "failed", "cancelled")}
        for kid in kids:
            status = kid.get("status")
            if isinstance(status, str) and status in counts:
                counts[status] += 1
        n = sum(_number(kid.get("n")) or 0 for kid in kids)
        totals = [_number(kid.get("total")) for kid in kids]
        total = None if any(t is None for t in totals) else sum(t for t in totals if t is not None)
        rates = [_number(kid.get("rate")) for kid in kids if kid.get("status") == "running"]
        rate = sum(r for r in rates if r) if any(rates) else None
        times = [_number(kid.get("t")) or 0.0 for kid in kids]
        starts = [t - (_number(kid.get("elapsed")) or 0.0) for t, kid in zip(times, kids, strict=True)]
        if counts["failed"]:
            status = "failed"
        elif counts["running"]:
            status = "running"
        elif counts["cancelled"]:
            status = "cancelled"
        else:
            status = "done"
        if status == "done":
            remaining: float | None = 0.0
        elif rate and total is not None and total >= n:
            remaining = (total - n) / rate
        else:
            remaining = None
        own = states.get(parent)
        out[parent] = {
            "parent": parent,
            "desc": (own.get("desc") if own else None) or parent,
            "jobs": len(kids),
            **counts,
            "n": n,
            "total": total,
            "status": status,
            "rate": rate,
            "elapsed": round(max(times) - min(starts), 3),
            "remaining": remaining,
            "hosts": sorted({str(kid.get("host")) for kid in kids if kid.get("host")}),
            "updated": max(times),
        }
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value

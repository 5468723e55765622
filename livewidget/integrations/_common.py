"""What the integrations share: the missing-extra error, numbers from framework values, and a run
(points published with :func:`livewidget.points`, rows on a board with :class:`livewidget.progress`)."""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import socket
import uuid
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from .._config import resolve
from .._points import ChartPublisher
from .._progress import _NOTEBOOK, CLOSE_FLUSH, _in_worker, _NullFile, progress
from .._publish import _default_publisher

__all__ = ["Run", "number", "require"]


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module``, or raise an ImportError saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"livewidget.integrations.{extra} needs {what}: pip install 'livewidget[{extra}]' "
            f"(or install {what} yourself) [{exc}]"
        ) from exc


def number(value: Any) -> float | None:
    """A metric as a float (NumPy and framework scalars included), ``None`` when it is not one number."""
    if isinstance(value, bool):
        return float(value)
    try:
        out = float(value)
    except (TypeError, ValueError):
        item = getattr(value, "item", None)  # a 1-element array or tensor
        try:
            out = float(item()) if callable(item) else math.nan
        except (TypeError, ValueError, RuntimeError):
            return None
    return out if math.isfinite(out) else None


def run_id() -> str:
    """An id for one training run, unique across processes and machines."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Run:
    """One training run's publishing: points on ``channel``, bars on ``progress_channel``.

    ``show_bar=False`` keeps tqdm's own local bar out of the output (the framework usually prints its
    own); the board still gets every row.
    """

    def __init__(
        self,
        channel: str,
        *,
        progress_channel: str | None,
        run: str | None,
        interval: float,
        show_bar: bool,
        connection: Mapping[str, Any],
    ) -> None:
        self.channel = channel
        self.run = run or run_id()
        self.progress_channel = progress_channel
        self.show_bar = show_bar
        self.points = ChartPublisher(channel, interval=interval, **connection)
        self._connection = dict(connection)

    def bar(
        self,
        *,
        total: float | None,
        desc: str,
        initial: float = 0,
        job: str,
        parent: str | None = None,
        unit: str = "it",
        leave: bool = True,
    ) -> progress | None:
        """A :class:`livewidget.progress` bar on the board (``None`` when there is no board)."""
        if self.progress_channel is None:
            return None
        quiet: dict[str, Any] = {}
        if not self.show_bar:
            quiet = {"display": False} if _NOTEBOOK else {"file": _NullFile()}
        publisher = _default_publisher(resolve(**self._connection)) if self._connection else None
        return progress(
            total=total,
            initial=initial,
            publisher=publisher,
            desc=desc,
            channel=self.progress_channel,
            job=job,
            parent=parent,
            unit=unit,
            leave=leave,
            mininterval=0.2,
            **quiet,
        )

    def add(self, point: dict[str, Any]) -> None:
        self.points.add(point)

    def close(self) -> None:
        """The run is over: send the queued points now. Waits for delivery (at most ``CLOSE_FLUSH``
        seconds) only in a worker process, which its pool may terminate as soon as the task returns;
        elsewhere the background sender delivers them (and at interpreter exit)."""
        pts = self.points
        if _in_worker():
            with contextlib.suppress(Exception):
                pts.close(CLOSE_FLUSH)
            return
        with pts._lock:  # close() without joining the packing thread or waiting for delivery
            if pts._closed:
                return
            pts._closed = True
            pts._lock.notify()
        if pts._thread is None:
            pts._send(pts._take())

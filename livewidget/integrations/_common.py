"""What the integrations share: the missing-extra error, numbers from framework values, and a run
(points published with :func:`livewidget.points`, rows on a board with :class:`livewidget.progress`)."""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from .._config import resolve
from .._points import ChartPublisher
from .._progress import _NOTEBOOK, CLOSE_FLUSH, _in_worker, _NullFile, progress
from .._publish import _default_publisher

__all__ = ["EpochLoop", "Run", "fields", "metrics", "number", "require"]


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


def metrics(values: Mapping[str, Any] | None) -> dict[str, float]:
    """A framework's metrics (Keras logs, Lightning's tensors...) as ``{name: float}``; values that are
    not one number are left out."""
    out: dict[str, float] = {}
    for name, value in (values or {}).items():
        v = number(value)
        if v is not None:
            out[str(name)] = v
    return out


def fields(y: str | Sequence[str]) -> list[str]:
    return [y] if isinstance(y, str) else list(y)


class EpochLoop:
    """What the epoch-and-batch callbacks (Keras, Lightning) share: a point per epoch on ``channel``,
    throttled batch points on ``batch_channel``, and board rows for the epochs and the current epoch's
    steps. Each framework's callback translates its own hooks into ``_begin``, ``_epoch_begin``,
    ``_batch_due``, ``_epoch_end``, ``_stopped_early`` and ``_close``, and sets the defaults below."""

    chart_y: tuple[str, ...] = ("loss", "val_loss")  # the epoch chart's default series
    batch_y: str = "loss"  # the batch chart's default series
    step_unit: str = "step"  # what the current epoch's row counts

    def __init__(
        self,
        channel: str = "train",
        *,
        batch_channel: str | None = "",
        batch_interval: float = 0.25,
        progress_channel: str | None = "progress",
        run: str | None = None,
        show_bar: bool = False,
        **connection: Any,
    ) -> None:
        super().__init__()  # the framework's Callback, next in the subclass's bases
        self.channel = channel
        self.batch_channel = f"{channel}-batch" if batch_channel == "" else batch_channel
        self.batch_interval = batch_interval
        self.progress_channel = progress_channel
        self.run_id = run
        self.show_bar = show_bar
        self._connection = connection
        self._run: Run | None = None
        self._batches: Run | None = None
        self._epochs_bar: Any = None
        self._steps_bar: Any = None
        self._last_batch = 0.0

    def _begin(self, *, epochs: int | None, initial: int = 0) -> None:
        """Training starts: a new run (points, board row for the epochs)."""
        self._close()
        run = self._run = Run(
            self.channel,
            progress_channel=self.progress_channel,
            run=self.run_id,
            interval=0.05,
            show_bar=self.show_bar,
            connection=self._connection,
        )
        if self.batch_channel:
            self._batches = Run(
                self.batch_channel,
                progress_channel=None,
                run=run.run,
                interval=0.05,
                show_bar=False,
                connection=self._connection,
            )
        self._last_batch = 0.0
        self._epochs_bar = run.bar(
            total=epochs, initial=initial, desc=f"{self.channel}: epochs", job=run.run, unit="epoch"
        )

    def _epoch_begin(self, epoch: int, total: int | None) -> None:
        """An epoch starts (``epoch`` as the framework prints it): a board row for its steps."""
        if self._run is None:
            return
        if self._steps_bar is not None:
            self._steps_bar.close()
        self._steps_bar = self._run.bar(
            total=total,
            desc=f"epoch {epoch}",
            job=f"{self._run.run}/epoch-{epoch}",
            parent=self._run.run,
            unit=self.step_unit,
            leave=False,
        )

    def _batch_due(self) -> Run | None:
        """A batch ended: count it; the batch run when a batch point is due (at most one per
        ``batch_interval``), else ``None``."""
        if self._steps_bar is not None:
            self._steps_bar.update(1)
        if self._batches is None:
            return None
        now = time.monotonic()
        if now - self._last_batch < self.batch_interval:
            return None
        self._last_batch = now
        return self._batches

    def _epoch_end(self, point: dict[str, Any], values: dict[str, float]) -> None:
        """An epoch ended: its point (``values`` are its metrics, also shown on the board's row)."""
        if self._run is None:
            return
        self._run.add({**point, "run": self._run.run, **values})
        if self._steps_bar is not None:
            self._steps_bar.close()
            self._steps_bar = None
        bar = self._epochs_bar
        if bar is not None:
            bar.set_postfix({k: f"{v:.4g}" for k, v in list(values.items())[:6]}, refresh=False)
            bar.update(1)

    def _stopped_early(self, epoch: int) -> None:
        bar = self._epochs_bar
        if bar is not None:
            bar.set_postfix_str(f"{bar.postfix or ''}, stopped early at epoch {epoch}".lstrip(", "))

    # ------------------------------------------------------------------ showing it

    def chart(self, y: str | Sequence[str] | None = None, **kwargs: Any) -> Any:
        """A :class:`~livewidget.LiveChart` of the epoch points (x: epoch)."""
        from ..widgets import LiveChart

        kwargs.setdefault("title", f"{self.channel}: per epoch")
        y = self.chart_y if y is None else y
        return LiveChart(self.channel, x="epoch", y=fields(y), **{**self._connection, **kwargs})

    def batch_chart(self, y: str | Sequence[str] | None = None, **kwargs: Any) -> Any:
        """A :class:`~livewidget.LiveChart` of the batch points (x: step)."""
        from ..widgets import LiveChart

        if not self.batch_channel:
            raise ValueError("this callback publishes no batch points (batch_channel=None)")
        kwargs.setdefault("title", f"{self.channel}: per batch")
        y = self.batch_y if y is None else y
        return LiveChart(self.batch_channel, x="step", y=fields(y), **{**self._connection, **kwargs})

    def board(self, **kwargs: Any) -> Any:
        """A :class:`~livewidget.ProgressBoard` of the runs (epochs and the current epoch's steps)."""
        from ..widgets import ProgressBoard

        if self.progress_channel is None:
            raise ValueError("this callback publishes no progress (progress_channel=None)")
        return ProgressBoard(self.progress_channel, **{**self._connection, **kwargs})

    def view(self, y: str | Sequence[str] | None = None, batch_y: str | Sequence[str] | None = None) -> Any:
        """The epoch chart, the batch chart and the board, one above the other."""
        from ..widgets._layout import column

        parts = [self.chart(y)]
        if self.batch_channel:
            parts.append(self.batch_chart(batch_y))
        if self.progress_channel is not None:
            parts.append(self.board())
        return column(*parts)

    def _close(self) -> None:
        for bar in (self._steps_bar, self._epochs_bar):
            if bar is not None:
                bar.close()
        self._steps_bar = self._epochs_bar = None
        for run in (self._run, self._batches):
            if run is not None:
                run.close()
        self._run = self._batches = None

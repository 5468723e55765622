"""Keras 3 (any backend): ``model.fit(..., callbacks=[LiveCallback("train")])``.

Publishes, while ``fit`` runs and without blocking it:

- one point per epoch on ``channel``: ``{"epoch": 1, "step", "run", "loss", "val_loss", "accuracy",
  "val_accuracy", ...}`` (every metric under Keras's own name; ``epoch`` counts from 1 as Keras
  prints it), so ``LiveChart("train", x="epoch", y=["loss", "val_loss"])`` shows train and validation
  side by side;
- batch points on ``batch_channel`` (default ``"<channel>-batch"``), at most one per ``batch_interval``
  seconds: ``{"step" (batches since the start), "epoch", "batch", "run", "loss", ...}``
  (``LiveChart("train-batch", x="step", y="loss")``);
- the run on a :class:`~livewidget.ProgressBoard` (``progress_channel``): a row for the epochs (the
  last epoch's metrics as postfix, "stopped early" when a callback stopped training) and one for the
  current epoch's steps.

``cb.view()`` shows all three (``cb.chart()``, ``cb.batch_chart()``, ``cb.board()`` one by one).
``run`` (default: host, pid and a random suffix) is in every point: ``LiveChart(..., by="run")``
draws runs from several processes or machines as separate lines.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._common import Run, number, require


def _default_backend() -> None:
    """Keras picks TensorFlow unless told otherwise (``KERAS_BACKEND``, ``~/.keras/keras.json``); the
    ``keras`` extra installs PyTorch instead, so use it when the configured backend is not installed."""
    import importlib.util
    import json
    import sys

    if "keras" in sys.modules or os.environ.get("KERAS_BACKEND"):
        return
    config = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "keras.json"
    try:
        backend = str(json.loads(config.read_text()).get("backend") or "tensorflow")
    except (OSError, ValueError, AttributeError):
        backend = "tensorflow"
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch", "numpy": "numpy"}.get(
        backend, backend
    )
    if importlib.util.find_spec(module) is None and importlib.util.find_spec("torch") is not None:
        os.environ["KERAS_BACKEND"] = "torch"


_default_backend()
keras = require("keras", "keras", "Keras 3 and a backend (PyTorch, JAX or TensorFlow)")

__all__ = ["LiveCallback"]


class LiveCallback(keras.callbacks.Callback):  # type: ignore[misc,name-defined]
    """A Keras callback that publishes the training live: ``callbacks=[LiveCallback("train")]``.

    Parameters
    ----------
    channel:
        Where the epoch points go.
    batch_channel:
        Where the batch points go (default ``"<channel>-batch"``; ``None``: no batch points).
    batch_interval:
        Seconds between two batch points at least (the newest batch's metrics are sent).
    progress_channel:
        The :class:`~livewidget.ProgressBoard`'s channel (``None``: no board rows).
    run:
        This run's id, in every point and as the board's job id (default: unique per run).
    show_bar:
        Also show tqdm's local bars (off: Keras prints its own progress).
    **connection:
        Connection keywords, as for :func:`livewidget.connect`.
    """

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
        super().__init__()
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
        self._epoch = 0
        self._step = 0
        self._last_batch = 0.0

    # ------------------------------------------------------------------ Keras hooks

    def on_train_begin(self, logs: Any = None) -> None:
        """Keras calls this (see the module docstring for what is published)."""
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
        params = self.params or {}
        self._step = 0
        self._last_batch = 0.0
        self._epochs_bar = run.bar(
            total=params.get("epochs"), desc=f"{self.channel}: epochs", job=run.run, unit="epoch"
        )

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        """Keras calls this (see the module docstring for what is published)."""
        if self._run is None:
            return
        self._epoch = epoch + 1
        if self._steps_bar is not None:
            self._steps_bar.close()
        self._steps_bar = self._run.bar(
            total=(self.params or {}).get("steps"),
            desc=f"epoch {self._epoch}",
            job=f"{self._run.run}/epoch-{self._epoch}",
            parent=self._run.run,
            unit="step",
            leave=False,
        )

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        """Keras calls this (see the module docstring for what is published)."""
        self._step += 1
        if self._steps_bar is not None:
            self._steps_bar.update(1)
        if self._batches is None:
            return
        now = time.monotonic()
        if now - self._last_batch < self.batch_interval:
            return
        self._last_batch = now
        point = {"step": self._step, "epoch": self._epoch, "batch": batch + 1, "run": self._batches.run}
        point.update(_metrics(logs))
        self._batches.add(point)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        """Keras calls this (see the module docstring for what is published)."""
        if self._run is None:
            return
        metrics = _metrics(logs)
        self._run.add({"epoch": epoch + 1, "step": self._step, "run": self._run.run, **metrics})
        if self._steps_bar is not None:
            self._steps_bar.close()
            self._steps_bar = None
        bar = self._epochs_bar
        if bar is not None:
            bar.set_postfix({k: f"{v:.4g}" for k, v in list(metrics.items())[:6]}, refresh=False)
            bar.update(1)

    def on_train_end(self, logs: Any = None) -> None:
        """Keras calls this (see the module docstring for what is published)."""
        model = getattr(self, "_model", None) or getattr(self, "model", None)
        if self._epochs_bar is not None and getattr(model, "stop_training", False):
            bar = self._epochs_bar
            bar.set_postfix_str(f"{bar.postfix or ''}, stopped early at epoch {self._epoch}".lstrip(", "))
        self._close()

    # ------------------------------------------------------------------ showing it

    def chart(self, y: str | Sequence[str] = ("loss", "val_loss"), **kwargs: Any) -> Any:
        """A :class:`~livewidget.LiveChart` of the epoch points (x: epoch)."""
        from ..widgets import LiveChart

        kwargs.setdefault("title", f"{self.channel}: per epoch")
        return LiveChart(self.channel, x="epoch", y=_fields(y), **{**self._connection, **kwargs})

    def batch_chart(self, y: str | Sequence[str] = "loss", **kwargs: Any) -> Any:
        """A :class:`~livewidget.LiveChart` of the batch points (x: step)."""
        from ..widgets import LiveChart

        if not self.batch_channel:
            raise ValueError("this callback publishes no batch points (batch_channel=None)")
        kwargs.setdefault("title", f"{self.channel}: per batch")
        return LiveChart(self.batch_channel, x="step", y=_fields(y), **{**self._connection, **kwargs})

    def board(self, **kwargs: Any) -> Any:
        """A :class:`~livewidget.ProgressBoard` of the runs (epochs and the current epoch's steps)."""
        from ..widgets import ProgressBoard

        if self.progress_channel is None:
            raise ValueError("this callback publishes no progress (progress_channel=None)")
        return ProgressBoard(self.progress_channel, **{**self._connection, **kwargs})

    def view(
        self, y: str | Sequence[str] = ("loss", "val_loss"), batch_y: str | Sequence[str] = "loss"
    ) -> Any:
        """The epoch chart, the batch chart and the board, one above the other."""
        from ..widgets._layout import column

        parts = [self.chart(y)]
        if self.batch_channel:
            parts.append(self.batch_chart(batch_y))
        if self.progress_channel is not None:
            parts.append(self.board())
        return column(*parts)

    # ------------------------------------------------------------------ internals

    def _close(self) -> None:
        for bar in (self._steps_bar, self._epochs_bar):
            if bar is not None:
                bar.close()
        self._steps_bar = self._epochs_bar = None
        for run in (self._run, self._batches):
            if run is not None:
                run.close()
        self._run = self._batches = None


def _fields(y: str | Sequence[str]) -> list[str]:
    return [y] if isinstance(y, str) else list(y)


def _metrics(logs: Any) -> dict[str, float]:
    """Keras's logs as ``{name: float}`` (values that are not one number are left out)."""
    out: dict[str, float] = {}
    if not logs:
        return out
    for name, value in logs.items():
        v = number(value)
        if v is not None:
            out[str(name)] = v
    return out

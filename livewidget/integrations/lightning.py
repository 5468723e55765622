"""PyTorch Lightning: ``Trainer(callbacks=[LiveCallback("train")])``.

Publishes, while ``trainer.fit`` runs and without blocking it:

- one point per epoch on ``channel``, after validation: ``{"epoch": 0, "step", "run", ...}`` with
  every metric in ``trainer.callback_metrics`` under the name it was logged with (``train_loss``,
  ``val_loss``, ``train_loss_epoch``...); ``epoch`` counts from 0 as Lightning prints it;
- batch points on ``batch_channel`` (default ``"<channel>-batch"``), at most one per
  ``batch_interval`` seconds: ``{"step" (trainer.global_step), "epoch", "batch", "run", ...}`` with
  the metrics logged per step;
- the run on a :class:`~livewidget.ProgressBoard`: a row for the epochs ("stopped early" when a
  callback stopped it, ``failed`` when fit raised) and one for the current epoch's batches.

``cb.chart()``, ``cb.batch_chart()`` and ``cb.board()`` show them (``cb.view()``: all three).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from .._progress import _outcome
from ._common import Run, number, require

pl = require("lightning.pytorch", "lightning", "PyTorch Lightning (the `lightning` package)")

__all__ = ["LiveCallback"]


class LiveCallback(pl.callbacks.Callback):  # type: ignore[misc,name-defined]
    """A Lightning callback that publishes the training live (parameters as for the Keras one).

    Parameters
    ----------
    channel:
        Where the epoch points go.
    batch_channel:
        Where the batch points go (default ``"<channel>-batch"``; ``None``: no batch points).
    batch_interval:
        Seconds between two batch points at least.
    progress_channel:
        The :class:`~livewidget.ProgressBoard`'s channel (``None``: no board rows).
    run:
        This run's id, in every point and as the board's job id (default: unique per run).
    show_bar:
        Also show tqdm's local bars (Lightning shows its own).
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
        self._last_batch = 0.0

    # ------------------------------------------------------------------ Lightning hooks

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Lightning calls this (see the module docstring for what is published)."""
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
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        self._epochs_bar = run.bar(
            total=epochs,
            initial=trainer.current_epoch,
            desc=f"{self.channel}: epochs",
            job=run.run,
            unit="epoch",
        )

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Lightning calls this (see the module docstring for what is published)."""
        if self._run is None:
            return
        if self._steps_bar is not None:
            self._steps_bar.close()
        total = trainer.num_training_batches
        self._steps_bar = self._run.bar(
            total=total if isinstance(total, int) else None,
            desc=f"epoch {trainer.current_epoch}",
            job=f"{self._run.run}/epoch-{trainer.current_epoch}",
            parent=self._run.run,
            unit="batch",
            leave=False,
        )

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Lightning calls this (see the module docstring for what is published)."""
        if self._steps_bar is not None:
            self._steps_bar.update(1)
        if self._batches is None:
            return
        now = time.monotonic()
        if now - self._last_batch < self.batch_interval:
            return
        self._last_batch = now
        point = {
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "batch": batch_idx + 1,
            "run": self._batches.run,
        }
        point.update(_metrics(trainer.callback_metrics))
        self._batches.add(point)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Lightning calls this (see the module docstring for what is published)."""
        if self._run is None:
            return
        metrics = _metrics(trainer.callback_metrics)
        self._run.add(
            {"epoch": trainer.current_epoch, "step": trainer.global_step, "run": self._run.run, **metrics}
        )
        if self._steps_bar is not None:
            self._steps_bar.close()
            self._steps_bar = None
        bar = self._epochs_bar
        if bar is not None:
            bar.set_postfix({k: f"{v:.4g}" for k, v in list(metrics.items())[:6]}, refresh=False)
            bar.update(1)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Lightning calls this (see the module docstring for what is published)."""
        bar = self._epochs_bar
        if bar is not None and trainer.should_stop and bar.total and bar.n < bar.total:
            bar.set_postfix_str(
                f"{bar.postfix or ''}, stopped early at epoch {trainer.current_epoch}".lstrip(", ")
            )
        self._close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Lightning calls this (see the module docstring for what is published)."""
        for bar in (self._steps_bar, self._epochs_bar):
            if bar is not None:
                bar._lw_outcome = _outcome(exception)  # failed, or cancelled on KeyboardInterrupt
        self._close()

    # ------------------------------------------------------------------ showing it

    def chart(self, y: str | Sequence[str] = ("train_loss", "val_loss"), **kwargs: Any) -> Any:
        """A :class:`~livewidget.LiveChart` of the epoch points (x: epoch)."""
        from ..widgets import LiveChart

        kwargs.setdefault("title", f"{self.channel}: per epoch")
        return LiveChart(self.channel, x="epoch", y=_fields(y), **{**self._connection, **kwargs})

    def batch_chart(self, y: str | Sequence[str] = "train_loss_step", **kwargs: Any) -> Any:
        """A :class:`~livewidget.LiveChart` of the batch points (x: step)."""
        from ..widgets import LiveChart

        if not self.batch_channel:
            raise ValueError("this callback publishes no batch points (batch_channel=None)")
        kwargs.setdefault("title", f"{self.channel}: per batch")
        return LiveChart(self.batch_channel, x="step", y=_fields(y), **{**self._connection, **kwargs})

    def board(self, **kwargs: Any) -> Any:
        """A :class:`~livewidget.ProgressBoard` of the runs (epochs and the current epoch's batches)."""
        from ..widgets import ProgressBoard

        if self.progress_channel is None:
            raise ValueError("this callback publishes no progress (progress_channel=None)")
        return ProgressBoard(self.progress_channel, **{**self._connection, **kwargs})

    def view(
        self,
        y: str | Sequence[str] = ("train_loss", "val_loss"),
        batch_y: str | Sequence[str] = "train_loss_step",
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


def _metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``trainer.callback_metrics`` (tensors) as ``{name: float}``."""
    out: dict[str, float] = {}
    for name, value in (metrics or {}).items():
        v = number(value)
        if v is not None:
            out[str(name)] = v
    return out

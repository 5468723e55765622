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

from typing import Any

from .._progress import _outcome
from ._common import EpochLoop, metrics, require

pl = require("lightning.pytorch", "lightning", "PyTorch Lightning (the `lightning` package)")

__all__ = ["LiveCallback"]


class LiveCallback(EpochLoop, pl.callbacks.Callback):  # type: ignore[misc,name-defined]
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

    chart_y = ("train_loss", "val_loss")
    batch_y = "train_loss_step"
    step_unit = "batch"

    # ------------------------------------------------------------------ Lightning hooks

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Lightning calls this (see the module docstring for what is published)."""
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        self._begin(epochs=epochs, initial=trainer.current_epoch)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Lightning calls this (see the module docstring for what is published)."""
        total = trainer.num_training_batches
        self._epoch_begin(trainer.current_epoch, total if isinstance(total, int) else None)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Lightning calls this (see the module docstring for what is published)."""
        batches = self._batch_due()
        if batches is not None:
            point = {
                "step": trainer.global_step,
                "epoch": trainer.current_epoch,
                "batch": batch_idx + 1,
                "run": batches.run,
            }
            batches.add({**point, **metrics(trainer.callback_metrics)})

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Lightning calls this (see the module docstring for what is published)."""
        point = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        self._epoch_end(point, metrics(trainer.callback_metrics))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Lightning calls this (see the module docstring for what is published)."""
        bar = self._epochs_bar
        if bar is not None and trainer.should_stop and bar.total and bar.n < bar.total:
            self._stopped_early(trainer.current_epoch)
        self._close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Lightning calls this (see the module docstring for what is published)."""
        for bar in (self._steps_bar, self._epochs_bar):
            if bar is not None:
                bar._lw_outcome = _outcome(exception)  # failed, or cancelled on KeyboardInterrupt
        self._close()

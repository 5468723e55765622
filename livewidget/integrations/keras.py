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
from pathlib import Path
from typing import Any

from ._common import EpochLoop, metrics, require


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


class LiveCallback(EpochLoop, keras.callbacks.Callback):  # type: ignore[misc,name-defined]
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

    _epoch = 0  # the current epoch, as Keras prints it (from 1)
    _step = 0  # batches since the start of fit

    # ------------------------------------------------------------------ Keras hooks

    def on_train_begin(self, logs: Any = None) -> None:
        """Keras calls this (see the module docstring for what is published)."""
        self._step = 0
        self._begin(epochs=(self.params or {}).get("epochs"))

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        """Keras calls this (see the module docstring for what is published)."""
        self._epoch = epoch + 1  # as Keras prints it
        self._epoch_begin(self._epoch, (self.params or {}).get("steps"))

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        """Keras calls this (see the module docstring for what is published)."""
        self._step += 1
        batches = self._batch_due()
        if batches is not None:
            point = {"step": self._step, "epoch": self._epoch, "batch": batch + 1, "run": batches.run}
            batches.add({**point, **metrics(logs)})

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        """Keras calls this (see the module docstring for what is published)."""
        self._epoch_end({"epoch": epoch + 1, "step": self._step}, metrics(logs))

    def on_train_end(self, logs: Any = None) -> None:
        """Keras calls this (see the module docstring for what is published)."""
        model = getattr(self, "_model", None) or getattr(self, "model", None)
        if getattr(model, "stop_training", False):
            self._stopped_early(self._epoch)
        self._close()

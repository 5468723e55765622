"""Optuna: ``study.optimize(objective, n_trials=100, callbacks=[LiveCallback("study")])``.

Publishes, as each trial ends and without blocking the study, one point on ``channel``:
``{"trial": 7, "study", "state": "COMPLETE", "value", "best_value", "duration", "params_x": ...,
"params_y": ...}`` (multi-objective studies: ``values_0``, ``values_1``...; parameter fields named as
``study.trials_dataframe()`` names them), so ``LiveChart("study", x="trial", y=["value",
"best_value"])`` charts each trial and the best so far, and ``Feed("study").df`` is the trials table.
Each trial is also a row on a :class:`~livewidget.ProgressBoard` (``progress_channel``): ``done``
when complete, ``cancelled`` when pruned, ``failed`` when it raised, grouped under the study.

Works with ``n_jobs > 1`` (Optuna calls the callback from each worker thread) and with several
processes sharing a storage: each process adds its own callback, trial numbers and the best value
come from the storage, so all the trials land on one chart and one board.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

from .._config import resolve
from .._progress import EVENT as PROGRESS_EVENT
from .._publish import _default_publisher
from ._common import Run, number, require

optuna = require("optuna", "optuna", "Optuna")

__all__ = ["LiveCallback"]

_BOARD_STATUS = {"COMPLETE": "done", "PRUNED": "cancelled", "FAIL": "failed"}


class LiveCallback:
    """An Optuna study callback that charts each trial and the best value, and shows trials on a board.

    Parameters
    ----------
    channel:
        Where the trial points go.
    progress_channel:
        The :class:`~livewidget.ProgressBoard`'s channel (``None``: no board rows).
    **connection:
        Connection keywords, as for :func:`livewidget.connect`.
    """

    def __init__(
        self, channel: str = "study", *, progress_channel: str | None = "progress", **connection: Any
    ) -> None:
        self.channel = channel
        self.progress_channel = progress_channel
        self._connection = connection
        self._run = Run(
            channel, progress_channel=None, run=None, interval=0.05, show_bar=False, connection=connection
        )
        self._host = socket.gethostname()

    def __call__(self, study: Any, trial: Any) -> None:
        """Called by Optuna as each trial ends (on the thread that ran it)."""
        state = trial.state.name
        point: dict[str, Any] = {"trial": trial.number, "study": study.study_name, "state": state}
        values = trial.values
        if values is not None and len(values) == 1:
            point["value"] = number(values[0])
        elif values is not None:
            for i, v in enumerate(values):
                point[f"values_{i}"] = number(v)
        if len(study.directions) == 1:
            try:
                point["best_value"] = number(study.best_value)  # from the storage: every process's trials
                point["best_trial"] = study.best_trial.number
            except ValueError:
                pass  # no trial completed yet
        duration = trial.duration.total_seconds() if trial.duration is not None else None
        point["duration"] = duration
        for name, value in trial.params.items():
            point[f"params_{name}"] = value if isinstance(value, int | float | str | bool) else str(value)
        point["host"], point["pid"] = self._host, os.getpid()
        self._run.add(point)
        if self.progress_channel is not None:
            self._board(study, trial, state, point.get("value"), duration)

    def _board(self, study: Any, trial: Any, state: str, value: Any, duration: float | None) -> None:
        """The trial's row, in :class:`livewidget.progress`'s event format (one final event)."""
        status = _BOARD_STATUS.get(state, "done")
        error = None
        if state == "FAIL":
            error = str(trial.system_attrs.get("fail_reason") or "the trial raised (Optuna logs why)")[:1000]
        elif state == "PRUNED":
            error = "pruned"
        shown = (
            "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"value={value:.6g}"
        )
        event = {
            "job": f"{study.study_name}/trial-{trial.number}",
            "parent": study.study_name,
            "desc": f"trial {trial.number}",
            "n": 1,
            "total": 1,
            "unit": "trial",
            "unit_scale": False,
            "unit_divisor": 1000,
            "rate": None,
            "elapsed": duration or 0.0,
            "remaining": 0.0 if status == "done" else None,
            "postfix": shown or None,
            "host": self._host,
            "pid": os.getpid(),
            "status": status,
            "error": error,
            "leave": True,
            "t": time.time(),
        }
        _default_publisher(resolve(**self._connection)).publish(
            self.progress_channel or "", PROGRESS_EVENT, event
        )

    def chart(self, y: str | Sequence[str] = ("value", "best_value"), **kwargs: Any) -> Any:
        """A :class:`~livewidget.LiveChart` of the trials (x: trial number, as scatter and best line)."""
        from ..widgets import LiveChart

        kwargs.setdefault("kind", "scatter")
        return LiveChart(self.channel, x="trial", y=y, **{**self._connection, **kwargs})

    def board(self, **kwargs: Any) -> Any:
        """A :class:`~livewidget.ProgressBoard` of the trials, grouped by study."""
        from ..widgets import ProgressBoard

        return ProgressBoard(self.progress_channel or "progress", **{**self._connection, **kwargs})

    def close(self) -> None:
        """Send what is queued now (the sender delivers it; also at interpreter exit)."""
        self._run.close()

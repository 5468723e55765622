"""XGBoost: ``xgb.train(..., callbacks=[LiveCallback("boost")])`` (or an estimator's ``callbacks=``).

Publishes, without blocking the training, one point per boosting round on ``channel``:
``{"iteration": 0, "run", "train-rmse": ..., "eval-rmse": ...}``: one field per evaluation set and
metric, named ``<eval set>-<metric>`` as XGBoost prints them, and ``iteration`` counted as XGBoost
prints it (from 0). ``xgb.cv`` results add ``<eval set>-<metric>-std``. The rounds are a row on a
:class:`~livewidget.ProgressBoard` (``progress_channel``; give ``total`` for a bar with an end).

Early stopping (``early_stopping_rounds`` / ``xgboost.callback.EarlyStopping``) is marked: the last
point has ``best_iteration`` and ``best_score``, and the board's row says "stopped early at round N,
best round M".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._common import Run, number, require

xgb = require("xgboost", "xgboost", "XGBoost")

__all__ = ["LiveCallback"]


class LiveCallback(xgb.callback.TrainingCallback):  # type: ignore[misc,name-defined]
    """An XGBoost training callback that charts each evaluation set's metrics per round.

    Parameters
    ----------
    channel:
        Where the points go (``LiveChart(channel, x="iteration", y=["train-rmse", "eval-rmse"])``).
    total:
        The number of boosting rounds, for the board's bar (XGBoost does not tell callbacks).
    progress_channel:
        The :class:`~livewidget.ProgressBoard`'s channel (``None``: no board row).
    run:
        This run's id, in every point and as the board's job id (default: unique per run).
    show_bar:
        Also show tqdm's local bar.
    **connection:
        Connection keywords, as for :func:`livewidget.connect`.
    """

    def __init__(
        self,
        channel: str = "boost",
        *,
        total: int | None = None,
        progress_channel: str | None = "progress",
        run: str | None = None,
        show_bar: bool = False,
        **connection: Any,
    ) -> None:
        super().__init__()
        self.channel = channel
        self.total = total
        self.progress_channel = progress_channel
        self.run_id = run
        self.show_bar = show_bar
        self._connection = connection
        self._run: Run | None = None
        self._bar: Any = None
        self._last: dict[str, Any] = {}

    def before_training(self, model: Any) -> Any:
        """XGBoost calls this (see the module docstring for what is published)."""
        self._run = Run(
            self.channel,
            progress_channel=self.progress_channel,
            run=self.run_id,
            interval=0.05,
            show_bar=self.show_bar,
            connection=self._connection,
        )
        self._last = {}
        self._bar = self._run.bar(
            total=self.total, desc=f"{self.channel}: rounds", job=self._run.run, unit="round"
        )
        return model

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        """XGBoost calls this (see the module docstring for what is published)."""
        run = self._run
        if run is None:
            return False
        point: dict[str, Any] = {"iteration": epoch, "run": run.run}
        for data, metrics in (evals_log or {}).items():
            for metric, history in metrics.items():
                if not history:
                    continue
                last = history[-1]
                if isinstance(last, tuple | list):  # xgb.cv: (mean, std)
                    point[f"{data}-{metric}"] = number(last[0])
                    point[f"{data}-{metric}-std"] = number(last[1])
                else:
                    point[f"{data}-{metric}"] = number(last)
        self._last = point
        run.add(point)
        if self._bar is not None:
            self._bar.update(1)
        return False  # never stops the training

    def after_training(self, model: Any) -> Any:
        """XGBoost calls this (see the module docstring for what is published)."""
        run, bar = self._run, self._bar
        if run is None:
            return model
        best = _attr(model, "best_iteration")
        if best is not None and self._last:
            stopped = self._last["iteration"]
            score = number(_attr(model, "best_score"))
            run.add({**self._last, "best_iteration": int(best), "best_score": score, "stopped_early": True})
            if bar is not None:
                bar.set_postfix_str(
                    f"stopped early at round {stopped}, best round {int(best)}", refresh=False
                )
        if bar is not None:
            bar.close()
        run.close()
        self._run = self._bar = None
        return model

    def chart(self, y: str | Sequence[str], **kwargs: Any) -> Any:
        """A :class:`~livewidget.LiveChart` of the points (x: iteration)."""
        from ..widgets import LiveChart

        return LiveChart(self.channel, x="iteration", y=y, **{**self._connection, **kwargs})


def _attr(model: Any, name: str) -> Any:
    """A Booster attribute set by early stopping (``None`` when absent)."""
    try:
        value = model.attr(name)
    except Exception:
        return None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None

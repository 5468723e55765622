"""LightGBM: ``lgb.train(..., callbacks=[live_callback("boost")])`` (or an estimator's ``fit(callbacks=)``).

Publishes, without blocking the training, one point per boosting round on ``channel``:
``{"iteration": 1, "run", "training-l2": ..., "valid_0-l2": ...}``: one field per validation set and
metric, named ``<eval set>-<metric>`` (LightGBM prints ``valid_0's l2``), and ``iteration`` counted
as LightGBM prints it (from 1). ``lgb.cv`` results add ``<eval set>-<metric>-stdv``. The rounds are a
row on a :class:`~livewidget.ProgressBoard` (``progress_channel``).

LightGBM calls callbacks after each round only, and ``early_stopping`` ends the training by raising
past them, so the end of a run is seen when the last round is reached, or else when the callback is
dropped (at once after ``lgb.train(..., callbacks=[live_callback(...)])`` returns, in CPython) or
closed (``cb.close()``). A run that ended before its last round is marked: the board's row says
"stopped early at round N, best round M" and a last point repeats the final round with
``best_iteration`` and ``stopped_early``.
"""

from __future__ import annotations

import weakref
from typing import Any

from ._common import Run, number, require

lgb = require("lightgbm", "lightgbm", "LightGBM")

__all__ = ["live_callback"]


class _State:
    """What the finalizer needs (it must not hold the callback itself)."""

    def __init__(self) -> None:
        self.run: Run | None = None
        self.bar: Any = None
        self.last: dict[str, Any] = {}
        self.end = 0
        self.booster: Any = None  # a weakref to the Booster

    def close(self) -> None:
        run, bar, last = self.run, self.bar, self.last
        if run is None:
            return
        self.run = self.bar = None
        if last and last["iteration"] < self.end:
            booster = self.booster() if self.booster is not None else None
            best = getattr(booster, "best_iteration", 0) or None
            run.add({**last, "best_iteration": best, "stopped_early": True})
            if bar is not None:
                tail = f", best round {best}" if best else ""
                bar.set_postfix_str(f"stopped early at round {last['iteration']}{tail}", refresh=False)
        if bar is not None:
            bar.close()
        run.close()


class LiveCallback:
    """The callback :func:`live_callback` returns (a callable, as LightGBM's own callbacks are)."""

    order = 25  # after LightGBM's log_evaluation (10) and record_evaluation (20), before early_stopping (30)
    before_iteration = False

    def __init__(
        self,
        channel: str,
        *,
        progress_channel: str | None,
        run: str | None,
        show_bar: bool,
        connection: dict[str, Any],
    ) -> None:
        self.channel = channel
        self.progress_channel = progress_channel
        self.run_id = run
        self.show_bar = show_bar
        self._connection = connection
        self._state = _State()
        self._finalizer = weakref.finalize(self, self._state.close)

    def __call__(self, env: Any) -> None:
        state = self._state
        if state.run is None or env.iteration == env.begin_iteration:
            state.close()
            state.run = Run(
                self.channel,
                progress_channel=self.progress_channel,
                run=self.run_id,
                interval=0.05,
                show_bar=self.show_bar,
                connection=self._connection,
            )
            state.end = env.end_iteration - env.begin_iteration
            state.bar = state.run.bar(
                total=state.end, desc=f"{self.channel}: rounds", job=state.run.run, unit="round"
            )
            state.booster = weakref.ref(env.model) if env.model is not None else None
        it = env.iteration - env.begin_iteration + 1
        point: dict[str, Any] = {"iteration": it, "run": state.run.run}
        for item in env.evaluation_result_list or ():
            data, metric, value = item[0], item[1], item[2]
            point[f"{data}-{metric}"] = number(value)
            if len(item) > 4:  # lgb.cv: (data, metric, mean, higher_better, stdv)
                point[f"{data}-{metric}-stdv"] = number(item[4])
        state.last = point
        state.run.add(point)
        if state.bar is not None:
            state.bar.update(1)
        if it >= state.end:
            state.close()

    def close(self) -> None:
        """End the run now (when the callback is kept after training; see the module docstring)."""
        self._state.close()


def live_callback(
    channel: str = "boost",
    *,
    progress_channel: str | None = "progress",
    run: str | None = None,
    show_bar: bool = False,
    **connection: Any,
) -> LiveCallback:
    """A LightGBM callback that charts each validation set's metrics per round.

    ``LiveChart(channel, x="iteration", y=["valid_0-l2"])`` shows it. ``progress_channel``: the
    :class:`~livewidget.ProgressBoard`'s channel (``None``: no board row); ``run``: this run's id (in
    every point, and the board's job id); ``show_bar``: also show tqdm's local bar; ``connection``:
    as for :func:`livewidget.connect`.
    """
    return LiveCallback(
        channel, progress_channel=progress_channel, run=run, show_bar=show_bar, connection=dict(connection)
    )

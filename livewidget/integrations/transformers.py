"""Hugging Face ``Trainer``: ``Trainer(..., callbacks=[LiveCallback("train")])``.

Publishes, while ``trainer.train()`` runs and without blocking it, every dict the Trainer logs (each
``logging_steps``, and each evaluation) as a point on ``channel``: ``{"step" (state.global_step),
"epoch" (fractional, as the Trainer logs it), "run", "loss", "grad_norm", "learning_rate", ...}``
and ``{"step", "epoch", "run", "eval_loss", "eval_runtime", ...}`` for evaluations, under the
Trainer's own names, so ``LiveChart("train", x="step", y=["loss", "eval_loss"])`` shows training
and evaluation loss side by side. The run is a row on a :class:`~livewidget.ProgressBoard` (steps
out of ``state.max_steps``, the last logged values as postfix, "stopped early" when a callback such
as ``EarlyStoppingCallback`` stopped it). Only the main process publishes (``state.is_world_process_zero``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._common import Run, number, require

transformers = require("transformers", "transformers", "Hugging Face transformers (and accelerate)")

__all__ = ["LiveCallback"]


class LiveCallback(transformers.TrainerCallback):  # type: ignore[misc,name-defined]
    """A ``TrainerCallback`` that publishes the Trainer's logs live.

    Parameters
    ----------
    channel:
        Where the points go.
    progress_channel:
        The :class:`~livewidget.ProgressBoard`'s channel (``None``: no board row).
    run:
        This run's id, in every point and as the board's job id (default: unique per run).
    show_bar:
        Also show tqdm's local bar (the Trainer shows its own).
    **connection:
        Connection keywords, as for :func:`livewidget.connect`.
    """

    def __init__(
        self,
        channel: str = "train",
        *,
        progress_channel: str | None = "progress",
        run: str | None = None,
        show_bar: bool = False,
        **connection: Any,
    ) -> None:
        self.channel = channel
        self.progress_channel = progress_channel
        self.run_id = run
        self.show_bar = show_bar
        self._connection = connection
        self._run: Run | None = None
        self._bar: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Trainer calls this (see the module docstring for what is published)."""
        self._close()
        if not state.is_world_process_zero:
            return
        self._run = Run(
            self.channel,
            progress_channel=self.progress_channel,
            run=self.run_id,
            interval=0.05,
            show_bar=self.show_bar,
            connection=self._connection,
        )
        total = state.max_steps if state.max_steps and state.max_steps > 0 else None
        self._bar = self._run.bar(
            total=total,
            initial=state.global_step,
            desc=f"{self.channel}: steps",
            job=self._run.run,
            unit="step",
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Trainer calls this (see the module docstring for what is published)."""
        bar = self._bar
        if bar is not None and state.global_step > bar.n:
            bar.update(state.global_step - bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        """Trainer calls this (see the module docstring for what is published)."""
        run = self._run
        if run is None or not logs:
            return
        point: dict[str, Any] = {"step": state.global_step, "epoch": number(state.epoch), "run": run.run}
        values = {str(k): v for k, v in ((k, number(raw)) for k, raw in logs.items()) if v is not None}
        point.update(values)
        run.add(point)
        if self._bar is not None:
            shown = {k: f"{v:.4g}" for k, v in values.items() if k in ("loss", "eval_loss", "learning_rate")}
            if shown:
                self._bar.set_postfix(shown, refresh=False)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Trainer calls this (see the module docstring for what is published)."""
        bar = self._bar
        if bar is not None and bar.total and state.global_step < bar.total:
            bar.set_postfix_str(
                f"{bar.postfix or ''}, stopped early at step {state.global_step}".lstrip(", ")
            )
        self._close()

    def chart(self, y: str | Sequence[str] = ("loss", "eval_loss"), **kwargs: Any) -> Any:
        """A :class:`~livewidget.LiveChart` of the logs (x: step)."""
        from ..widgets import LiveChart

        kwargs.setdefault("title", f"{self.channel}: Trainer logs")
        kwargs.setdefault("missing", "skip")
        return LiveChart(self.channel, x="step", y=y, **{**self._connection, **kwargs})

    def board(self, **kwargs: Any) -> Any:
        """A :class:`~livewidget.ProgressBoard` of the runs."""
        from ..widgets import ProgressBoard

        return ProgressBoard(self.progress_channel or "progress", **{**self._connection, **kwargs})

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._run is not None:
            self._run.close()
        self._run = self._bar = None

"""History in memory only: bounded, gone when the process ends (``livewidget serve --no-data``)."""

from __future__ import annotations

from typing import Any

from .base import HistoryDriver

__all__ = ["MemoryHistory"]


class MemoryHistory(HistoryDriver):
    """Events are delivered at once; a restart starts new streams (clients resuming are told so)."""

    deferred = False

    def stats(self) -> dict[str, Any]:
        return {"driver": "memory", **self.budget.stats()}

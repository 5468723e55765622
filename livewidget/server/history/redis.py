"""History shared by a cluster's processes through Redis (``livewidget serve --redis``).

The positions are given by Redis, in the script that publishes each event on the cluster's bus
(:data:`~livewidget.server.adapters._lua.PUBLISH_HISTORY`): one counter and one stream id per channel,
and a Redis stream of the channel's last events. Every process keeps the same positions in memory as
the events come back from the bus (:meth:`~livewidget.protocol.history.History.mirror`), so replays
and the history API answer alike on every process, and a process that starts loads the streams first.
The Redis adapter (:class:`~livewidget.server.adapters.RedisAdapter`) does the I/O; this driver only
names the arrangement (no local storage, events delivered as they come back from the bus).
"""

from __future__ import annotations

from typing import Any

from .base import HistoryDriver

__all__ = ["RedisHistory"]


class RedisHistory(HistoryDriver):
    """Positions and history kept in Redis by the adapter; memory holds a bounded copy."""

    deferred = False

    def stats(self) -> dict[str, Any]:
        return {"driver": "redis", **self.budget.stats()}

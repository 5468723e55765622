"""The seam between the hubs' history (:mod:`livewidget.protocol.history`) and where it is stored.

The history itself lives in each hub, in memory, bounded (per channel and by a global cap shared by
every app: :class:`~livewidget.protocol.history.Budget`). A driver decides what is behind it:

- :class:`~.memory.MemoryHistory`: nothing; history lasts as long as the process (``--no-data``).
- :class:`~.sqlite.SQLiteHistory`: a SQLite file per app (WAL, group commits). Its histories are
  *deferred*: an event is delivered, and a REST publish answered, only once it is committed, so
  anything a client saw or a publisher was told is stored survives a crash (SIGKILL) and a restart.
- :class:`~.redis.RedisHistory`: with the Redis adapter, positions and history live in Redis, shared by
  every process of the cluster (the adapter does the I/O).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...protocol import Action, AppConfig, Apps, Hub
from ...protocol.history import Budget, Forget, History, Store

__all__ = ["DEFAULT_MAX_MEMORY", "HistoryDriver", "Runner"]

DEFAULT_MAX_MEMORY = 64 * 1024 * 1024  # bytes of history held by one server, all apps together

Runner = Callable[[Hub, list[Action]], None]
"""The transport's way to carry out actions (the deliveries a commit releases)."""


class HistoryDriver:
    """A storage driver (this base keeps nothing: subclasses store); create it outside the loop, then the
    transport calls :meth:`start` inside it.

    ``max_memory`` is the global cap on history held in memory (bytes, all apps and channels).
    """

    #: True when events wait for storage before delivery (:class:`Store` actions).
    deferred: bool = False

    def __init__(self, max_memory: int = DEFAULT_MAX_MEMORY) -> None:
        self.budget = Budget(max_memory)

    def history_for(self, config: AppConfig) -> History:
        """The history of one app (the hub is built with it)."""
        return History(
            config.history_limits(),
            config.history_overrides,
            budget=self.budget,
            deferred=self.deferred,
            max_rewind=config.history_max_rewind,
        )

    async def start(self, apps: Apps, run: Runner) -> None:
        """Open the storage and load the apps' stored history into their hubs."""

    async def stop(self) -> None:
        """Store what is pending and close (after the transport closed its connections)."""

    def store(self, hub: Hub, action: Store) -> int:
        """Store ``action``'s events, then deliver them (``hub.deliver``); returns a ticket for
        :meth:`when_stored`. Only deferred drivers get Store actions."""
        raise NotImplementedError(f"{type(self).__name__} does not defer events")

    def forget(self, action: Forget) -> None:
        """Delete what the history dropped."""

    def when_stored(self, ticket: int, callback: Callable[[str | None], None]) -> None:
        """Call ``callback(error)`` on the loop once ``ticket``'s events are stored (``error``: None),
        or could not be (a message)."""
        callback(None)

    def stats(self) -> dict[str, Any]:
        """Counters for ``GET /stats``."""
        return {"driver": type(self).__name__, **self.budget.stats()}

"""The seam between the transport and the hubs: where an app's state lives and how deliveries travel.

The transport (:class:`~livewidget.server.app.PusherServer`) owns sockets; the hubs own the protocol.
An adapter decides what happens between them:

- :class:`~.local.LocalAdapter`: one process; the hub's actions are carried out as they come.
- :class:`~.redis.RedisAdapter`: several processes share each app through Redis (pub/sub for
  deliveries, hashes for presence, users and channel counts), like Soketi's adapters.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

from ...protocol import Action, Apps, Connection, Hub, RestResponse

__all__ = ["Adapter", "Runner"]

Runner = Callable[[Hub, list[Action]], None]
"""The transport's way to carry out local actions (Send, Close, Webhook) at once."""


class Adapter(abc.ABC):
    """An adapter; create it outside the loop, then the transport calls :meth:`start` inside it."""

    #: True when deliveries go through other processes (the transport then routes frames here).
    clustered: bool = False
    #: The hub the apps are built with.
    hub_class: type[Hub] = Hub
    #: A clustered adapter's channel history (the transport uses it instead of its own); None: none.
    history: Any = None

    @abc.abstractmethod
    async def start(self, apps: Apps, run: Runner) -> None:
        """Begin serving ``apps``; ``run`` carries out local actions."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Leave cleanly (after the transport closed its connections)."""

    @abc.abstractmethod
    async def receive(self, hub: Hub, conn: Connection, text: str | bytes, now: float) -> None:
        """A frame from ``conn``; returns once it is handled (frames of a connection stay in order)."""

    @abc.abstractmethod
    def closed(self, hub: Hub, conn: Connection, now: float) -> None:
        """``conn`` is gone."""

    @abc.abstractmethod
    async def rest(
        self,
        apps: Apps,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        body: bytes,
        now: float,
        raw_path: str | None = None,
    ) -> RestResponse:
        """Answer a REST request, having carried out what it asked for."""

    def stats(self) -> dict[str, Any]:
        """Counters for ``GET /stats`` (what was delivered, what could not be)."""
        return {"adapter": type(self).__name__}

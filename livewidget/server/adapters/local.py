"""One server process: the hub's actions are carried out as they come (the default)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...protocol import Apps, Connection, Hub, RestResponse, handle_rest
from .base import Adapter, Runner

__all__ = ["LocalAdapter"]


class LocalAdapter(Adapter):
    """Everything in this process. The transport takes a shortcut around :meth:`receive` and
    :meth:`closed` on its hot path; they do the same."""

    clustered = False

    def __init__(self) -> None:
        self._run: Runner | None = None

    async def start(self, apps: Apps, run: Runner) -> None:
        self._run = run

    async def stop(self) -> None:
        self._run = None

    async def receive(self, hub: Hub, conn: Connection, text: str | bytes, now: float) -> None:
        assert self._run is not None
        self._run(hub, hub.receive(conn, text, now))

    def closed(self, hub: Hub, conn: Connection, now: float) -> None:
        assert self._run is not None
        self._run(hub, hub.close(conn, now))

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
        assert self._run is not None
        resp = handle_rest(apps, method, path, query, body, now, raw_path=raw_path)
        if resp.hub is not None and resp.actions:
            self._run(resp.hub, resp.actions)
            resp.actions = []
        return resp

    def stats(self) -> dict[str, Any]:
        return {"adapter": "local"}

"""Test helpers: credentials of a test server as a URL, and a kernel receiver that collects events."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from livewidget._config import Settings
from livewidget.receiver import Receiver
from livewidget.server import LocalServer


def server_url(server: LocalServer, port: int | None = None) -> str:
    """``LIVEWIDGET_URL`` for ``server`` (or for another port on the same host)."""
    return f"http://{server.key}:{server.secret}@{server.host}:{port or server.port}/apps/{server.app_id}"


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout} s")
        time.sleep(0.01)


class Listener:
    """Subscribes to ``channels`` on ``server``; ``events`` is every (channel, event, data) received."""

    def __init__(self, server: LocalServer, *channels: str) -> None:
        settings = Settings(
            app_id=server.app_id, key=server.key, secret=server.secret, host=server.host, port=server.port
        )
        self.events: list[tuple[str | None, str, Any]] = []
        self._lock = threading.Lock()
        self.receiver = Receiver(settings, list(channels), self._on_event).start()
        wait_for(
            lambda: self.receiver.state == "connected" and all(self.receiver.protocol.channels.values()),
            what="subscription",
        )

    def _on_event(self, event: Any) -> None:
        with self._lock:
            self.events.append((event.channel, event.event, event.data))

    def data(self, event: str | None = None) -> list[Any]:
        """The data of every event received (named ``event``), in order."""
        with self._lock:
            return [d for _, name, d in self.events if event is None or name == event]

    def wait(
        self, predicate: Callable[[list[Any]], bool], event: str | None = None, timeout: float = 10
    ) -> None:
        wait_for(lambda: predicate(self.data(event)), timeout, what=f"events {event or ''}")

    def close(self) -> None:
        self.receiver.stop()

"""The conformance suite's target: the embedded server by default, or any Pusher-compatible server.

Point the suite elsewhere with environment variables (e.g. Soketi from ``../shared/peers/soketi``)::

    LIVEWIDGET_TARGET=127.0.0.1:6001 LIVEWIDGET_TARGET_APP_ID=4242 LIVEWIDGET_TARGET_KEY=lwkey \
    LIVEWIDGET_TARGET_SECRET=lwsecret LIVEWIDGET_TARGET_KIND=soketi .venv/bin/pytest tests/conformance

Tests marked ``hosted_only`` check behaviour where hosted Pusher (and the embedded server) differ from a
named peer; they are skipped only when that peer is the target (see docs in tests/conformance/README.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pusher
import pytest

from livewidget.server import LocalServer


@dataclass
class Target:
    """Where the suite connects, and with which credentials."""

    kind: str  # "embedded", or the peer's name ("soketi", "pusher", ...)
    host: str
    port: int
    app_id: str
    key: str
    secret: str
    embedded: LocalServer | None = None
    # Where WebSockets go when that is not the REST host (hosted Pusher: ws-<cluster>.pusher.com).
    ws_host: str | None = None
    ws_port: int | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_url(self, query: str = "protocol=7&client=js&version=8.6.0&flash=false") -> str:
        return f"ws://{self.ws_host or self.host}:{self.ws_port or self.port}/app/{self.key}?{query}"

    def sdk(self) -> pusher.Pusher:
        """The official Python SDK pointed at the target."""
        return pusher.Pusher(
            app_id=self.app_id, key=self.key, secret=self.secret, host=self.host, port=self.port, ssl=False
        )


def _external() -> Target | None:
    where = os.environ.get("LIVEWIDGET_TARGET")
    if not where:
        return None
    host, _, port = where.rpartition(":")
    ws_host, _, ws_port = os.environ.get("LIVEWIDGET_TARGET_WS", "").rpartition(":")
    return Target(
        kind=os.environ.get("LIVEWIDGET_TARGET_KIND", "external"),
        host=host or "127.0.0.1",
        port=int(port),
        app_id=os.environ["LIVEWIDGET_TARGET_APP_ID"],
        key=os.environ["LIVEWIDGET_TARGET_KEY"],
        secret=os.environ["LIVEWIDGET_TARGET_SECRET"],
        ws_host=ws_host or None,
        ws_port=int(ws_port) if ws_port else None,
    )


@pytest.fixture(scope="session")
def target() -> Iterator[Target]:
    """The server under test (session-wide: tests use fresh channel names)."""
    external = _external()
    if external is not None:
        yield external
        return
    with LocalServer() as server:
        yield Target("embedded", server.host, server.port, server.app_id, server.key, server.secret, server)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    external = _external()
    if external is None:
        return
    for item in items:
        marker = item.get_closest_marker("hosted_only")
        if marker is not None and external.kind in (marker.args or (external.kind,)):
            item.add_marker(
                pytest.mark.skip(reason=f"known deviation of {external.kind}: {marker.kwargs.get('why', '')}")
            )
        if item.get_closest_marker("embedded_only") is not None:
            item.add_marker(
                pytest.mark.skip(reason="needs the embedded server (restarts it or reads its state)")
            )

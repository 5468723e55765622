"""The conformance suite's target: the embedded server by default, or any Pusher-compatible server.

Point the suite elsewhere with environment variables (e.g. Soketi, pinned in ``peers/soketi`` and
installed by ``scripts/setup.sh``)::

    LIVEWIDGET_TARGET=127.0.0.1:6001 LIVEWIDGET_TARGET_APP_ID=4242 LIVEWIDGET_TARGET_KEY=lwkey \
    LIVEWIDGET_TARGET_SECRET=lwsecret LIVEWIDGET_TARGET_KIND=soketi .venv/bin/pytest tests/conformance

Against several embedded processes sharing one Redis (issue 8), clients spread over them: either
``LIVEWIDGET_TARGET_CLUSTER=redis`` alone (the suite starts redis-server and two ``livewidget serve
--redis`` processes itself), or ``LIVEWIDGET_TARGET_CLUSTER=host:port,host:port`` with the variables
above for a running cluster. Each new WebSocket and each REST call goes to the next process in turn.

Tests marked ``hosted_only`` check behaviour where hosted Pusher (and the embedded server) differ from a
named peer; they are skipped only when that peer is the target (see docs in tests/conformance/README.md).
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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
    # Several processes of one cluster: WebSockets and REST calls go to each in turn.
    cluster: list[tuple[str, int]] = field(default_factory=list)
    _ws_turn: Iterator[int] = field(default_factory=itertools.count)
    _rest_turn: Iterator[int] = field(default_factory=itertools.count)

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_address(self) -> tuple[str, int]:
        """Where the next WebSocket goes (the next process, in a cluster)."""
        if self.cluster:
            return self.cluster[next(self._ws_turn) % len(self.cluster)]
        return self.ws_host or self.host, self.ws_port or self.port

    def ws_url(self, query: str = "protocol=7&client=js&version=8.6.0&flash=false") -> str:
        host, port = self.ws_address()
        return f"ws://{host}:{port}/app/{self.key}?{query}"

    def sdk(self) -> pusher.Pusher:
        """The official Python SDK pointed at the target (the next process, in a cluster)."""
        host, port = self.host, self.port
        if self.cluster:
            host, port = self.cluster[next(self._rest_turn) % len(self.cluster)]
        return pusher.Pusher(
            app_id=self.app_id, key=self.key, secret=self.secret, host=host, port=port, ssl=False
        )


def _external() -> Target | None:
    where = os.environ.get("LIVEWIDGET_TARGET")
    if not where:
        return None
    host, _, port = where.rpartition(":")
    ws_host, _, ws_port = os.environ.get("LIVEWIDGET_TARGET_WS", "").rpartition(":")
    cluster = [
        (h or "127.0.0.1", int(p))
        for h, _, p in (
            a.strip().rpartition(":") for a in os.environ.get("LIVEWIDGET_TARGET_CLUSTER", "").split(",")
        )
        if p.isdigit()
    ]
    return Target(
        kind=os.environ.get("LIVEWIDGET_TARGET_KIND", "external"),
        host=host or "127.0.0.1",
        port=int(port),
        app_id=os.environ["LIVEWIDGET_TARGET_APP_ID"],
        key=os.environ["LIVEWIDGET_TARGET_KEY"],
        secret=os.environ["LIVEWIDGET_TARGET_SECRET"],
        ws_host=ws_host or None,
        ws_port=int(ws_port) if ws_port else None,
        cluster=cluster,
    )


def _self_started_cluster() -> bool:
    return os.environ.get("LIVEWIDGET_TARGET_CLUSTER") == "redis" and not os.environ.get("LIVEWIDGET_TARGET")


@pytest.fixture(scope="session")
def target() -> Iterator[Target]:
    """The server under test (session-wide: tests use fresh channel names)."""
    external = _external()
    if external is not None:
        yield external
        return
    if _self_started_cluster():
        from tests._cluster import HOST, Cluster

        with tempfile.TemporaryDirectory(prefix="lw-cluster-") as tmp, Cluster(Path(tmp)) as cluster:
            env = cluster.env()
            first = cluster.nodes[0]
            yield Target(
                env["LIVEWIDGET_TARGET_KIND"],
                HOST,
                first.port,
                env["LIVEWIDGET_TARGET_APP_ID"],
                env["LIVEWIDGET_TARGET_KEY"],
                env["LIVEWIDGET_TARGET_SECRET"],
                cluster=[(HOST, n.port) for n in cluster.nodes],
            )
        return
    with LocalServer() as server:
        yield Target("embedded", server.host, server.port, server.app_id, server.key, server.secret, server)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    external = _external()
    if external is None and _self_started_cluster():
        external = Target("embedded-cluster", "", 0, "", "", "")
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

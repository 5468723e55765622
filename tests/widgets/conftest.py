"""Widgets without a browser: kernel → browser comm messages are recorded, browser → kernel simulated."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import comm
import pytest
from comm.base_comm import BaseComm

from livewidget.server import LocalServer


class RecordingComm(BaseComm):
    """A comm that keeps every message the kernel would publish to the front end."""

    sent: list[tuple[float, str, Any, list[Any]]] = []

    def publish_msg(
        self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None, **keys: Any
    ) -> None:
        RecordingComm.sent.append((time.monotonic(), msg_type, data, list(buffers or [])))


@pytest.fixture
def comms(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[float, str, Any, list[Any]]]]:
    """Every comm message published by widgets created in the test: (time, type, data, buffers)."""
    RecordingComm.sent = []
    monkeypatch.setattr(comm, "create_comm", lambda *a, **k: RecordingComm(*a, **k))
    yield RecordingComm.sent


@pytest.fixture(autouse=True)
def private_runtime(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Widgets on a loopback server register it for the Jupyter extension: in a folder of the tests."""
    monkeypatch.setenv("LIVEWIDGET_RUNTIME_DIR", str(tmp_path_factory.mktemp("lw-run")))


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as s:
        yield s


def creds(server: LocalServer) -> dict[str, Any]:
    return {
        "host": server.host,
        "port": server.port,
        "app_id": server.app_id,
        "key": server.key,
        "secret": server.secret,
    }


@pytest.fixture
def make_feed(server: LocalServer, comms: list[Any]) -> Iterator[Callable[..., Any]]:
    """Create Feeds on the test server; each is closed at the end of the test."""
    import livewidget

    made: list[Any] = []

    def make(channels: Any, **kwargs: Any) -> Any:
        feed = livewidget.Feed(channels, **{**creds(server), **kwargs})
        made.append(feed)
        if kwargs.get("record", True):
            wait_for(
                lambda: feed._receiver.state == "connected" and all(feed._receiver.protocol.channels.values())
            )
        return feed

    yield make
    for feed in made:
        feed.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def simulate_custom(widget: Any, content: dict[str, Any]) -> None:
    """A custom message from the browser, as the kernel's comm would deliver it."""
    widget.comm.handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})

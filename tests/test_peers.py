"""The same livewidget code against another Pusher-compatible server (Soketi), by configuration alone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import livewidget
from livewidget._config import Settings

SOKETI = Path(__file__).resolve().parents[2] / "shared" / "peers" / "soketi" / "run"


def _free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 5000 < 65536:  # Soketi also binds port + 5000 for its discovery service
            return port


@pytest.fixture(scope="module")
def soketi() -> Iterator[Settings]:
    assert SOKETI.exists(), f"Soketi peer script not found at {SOKETI} (shared/ must sit beside the repo)"
    port = _free_port()
    out = subprocess.run(
        ["bash", str(SOKETI), str(port), "4242", "lwkey", "lwsecret"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, f"Soketi did not start: {out.stderr[-2000:]}"
    pid = int(out.stdout.split()[-1])
    try:
        yield Settings(app_id="4242", key="lwkey", secret="lwsecret", host="127.0.0.1", port=port)
    finally:
        os.kill(pid, signal.SIGTERM)


def test_feed_and_publish_work_against_soketi(soketi: Settings, monkeypatch: pytest.MonkeyPatch):
    """With PUSHER_* pointing at Soketi, Feed records public and private events sent by publish()."""
    import comm
    from comm.base_comm import BaseComm

    class Quiet(BaseComm):
        def publish_msg(self, *args: object, **kwargs: object) -> None:
            pass

    monkeypatch.setattr(comm, "create_comm", lambda *a, **k: Quiet(*a, **k))
    monkeypatch.delenv("LIVEWIDGET_URL", raising=False)
    for name, value in {
        "PUSHER_APP_ID": "4242",
        "PUSHER_KEY": "lwkey",
        "PUSHER_SECRET": "lwsecret",
        "PUSHER_HOST": "127.0.0.1",
        "PUSHER_PORT": str(soketi.port),
    }.items():
        monkeypatch.setenv(name, value)
    feed = livewidget.Feed(["peer-news", "private-peer"])
    try:
        assert feed._connection["wsPort"] == soketi.port
        deadline = time.monotonic() + 10
        while not (feed._receiver.state == "connected" and all(feed._receiver.protocol.channels.values())):
            assert time.monotonic() < deadline, f"not subscribed: {feed._receiver.state} {feed.error}"
            time.sleep(0.05)
        livewidget.publish("peer-news", "hello", {"n": 1}, wait=True)
        livewidget.publish("private-peer", "hello", {"n": 2}, wait=True)
        feed.wait(2, timeout=10)
        assert sorted(feed.df["n"]) == [1, 2]
    finally:
        feed.close()

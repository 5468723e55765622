"""The same livewidget code against another Pusher-compatible server (Soketi), by configuration alone."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import livewidget
from livewidget._config import Settings

PEER_DIR = Path(__file__).resolve().parents[1] / "peers" / "soketi"  # installed by scripts/setup.sh
SOKETI = PEER_DIR / "node_modules" / "@soketi" / "soketi" / "bin" / "server.js"
UWS_ABIS = {"93", "108", "115"}  # Node 16, 18, 20: the uWebSockets.js build peers/soketi pins
START_ATTEMPTS = 4


def _free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 5000 < 65536:  # Soketi also binds port + 5000 for its discovery service
            return port


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _node_abi(node: str) -> str:
    out = subprocess.run([node, "-p", "process.versions.modules"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def soketi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Soketi 1.6.1 from peers/soketi/ on loopback (a probed port: retried when another process takes it)."""
    node = shutil.which("node")
    assert node, "Node.js is not on PATH: run scripts/setup.sh"
    assert SOKETI.exists(), f"{SOKETI} is missing: run scripts/setup.sh (it runs `npm ci` in peers/soketi/)"
    abi = _node_abi(node)
    if abi not in UWS_ABIS:
        pytest.skip(f"Soketi's uWebSockets.js build has no binary for Node.js ABI {abi} (Node 20: 115)")
    work = tmp_path_factory.mktemp("soketi")
    log = ""
    for _ in range(START_ATTEMPTS):
        port = _free_port()
        # The cluster.* keys keep Soketi's discovery service on loopback (it would broadcast on UDP).
        config = {
            "host": "127.0.0.1",
            "port": port,
            "metrics.enabled": False,
            "cluster.address": "127.0.0.1",
            "cluster.hostname": "127.0.0.1",
            "cluster.unicast": "127.0.0.1",
            "cluster.port": port + 5000,
            "appManager.array.apps.0.id": "4242",
            "appManager.array.apps.0.key": "lwkey",
            "appManager.array.apps.0.secret": "lwsecret",
            "appManager.array.apps.0.enableClientMessages": True,
        }
        (work / "soketi.json").write_text(json.dumps(config))
        log_path = work / f"soketi-{port}.log"
        with open(log_path, "wb") as out:
            cmd = [node, str(SOKETI), "start", "--config=soketi.json"]
            proc = subprocess.Popen(cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while proc.poll() is None and not _listening(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        if proc.poll() is None and _listening(port):
            break
        proc.kill()
        proc.wait(10)
        log = log_path.read_text(errors="replace")
    else:
        raise AssertionError(f"Soketi did not start in {START_ATTEMPTS} attempts:\n{log[-2000:]}")
    try:
        yield Settings(app_id="4242", key="lwkey", secret="lwsecret", host="127.0.0.1", port=port)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


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

"""The per-user embedded server daemon: started on first use, shared, private, listable, stoppable."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from livewidget import _config, _embedded


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVEWIDGET_RUNTIME_DIR", str(tmp_path / "rt"))
    for name in ("LIVEWIDGET_URL", "PUSHER_KEY", "JUPYTERHUB_USER"):  # on a hub the folder is hub-NAME inside
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_config, "_process_settings", None)
    yield tmp_path / "rt"
    _embedded.stop_embedded()


def cli(*args: str, env_dir) -> str:
    env = {**os.environ, "LIVEWIDGET_RUNTIME_DIR": str(env_dir)}
    out = subprocess.run(
        [sys.executable, "-m", "livewidget", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return out.stdout


def test_started_once_shared_and_private(runtime):
    """The first use starts a daemon in its own process; later uses (other processes too) share it."""
    s = _config.connection()
    assert s.source == "embedded" and s.host == "127.0.0.1"
    info = json.loads((runtime / "server.json").read_text())
    assert info["pid"] != os.getpid()
    for name in ("server.json", "credentials.json", "server.log", "server.out"):
        assert stat.S_IMODE((runtime / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(runtime.stat().st_mode) == 0o700
    for name in ("server.log", "server.out"):
        assert info["secret"] not in (runtime / name).read_text()
    assert "listening" in (runtime / "server.out").read_text()  # the banner; logs go to server.log
    # another process (say, a restarted kernel) finds the same server
    code = "from livewidget import _config; s=_config.connection(); print(s.port, s.key)"
    env = {**os.environ, "LIVEWIDGET_RUNTIME_DIR": str(runtime)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.split() == [str(info["port"]), info["key"]]
    assert _embedded.ensure_embedded()["pid"] == info["pid"]


def test_cli_list_and_stop_then_restart_keeps_credentials(runtime):
    """`livewidget server list|stop|start` manage it; credentials stay the same per user."""
    assert "no embedded server running" in cli("server", "list", env_dir=runtime)
    first = _embedded.ensure_embedded()
    listed = cli("server", "list", env_dir=runtime)
    assert f"pid {first['pid']}" in listed and first["secret"] not in listed
    assert f"stopped embedded server pid {first['pid']}" in cli("server", "stop", env_dir=runtime)
    assert _embedded.read_info() is None
    assert "embedded server running" in cli("server", "start", env_dir=runtime)
    second = _embedded.read_info()
    assert second is not None and second["pid"] != first["pid"]
    assert (second["key"], second["secret"]) == (first["key"], first["secret"])


def test_the_daemon_log_is_rotated(tmp_path):
    """Issue 14 item 4: the daemon's log grew without bound (155 MB in 27 s). It is now a rotating file:
    at most (1 + LOG_BACKUPS) files of about LOG_MAX_BYTES, private to the user."""
    import logging

    from livewidget.server._logs import log_to_file

    path = tmp_path / "server.log"
    handler = log_to_file(path, max_bytes=10_000, backups=2)
    try:
        logger = logging.getLogger("livewidget.test-rotation")
        for i in range(5000):
            logger.warning("line %d %s", i, "x" * 40)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["server.log", "server.log.1", "server.log.2"]
    assert all((tmp_path / f).stat().st_size <= 10_100 for f in files)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "line 4999" in path.read_text()


def test_not_started_when_told_not_to(runtime):
    """ensure_embedded(start=False) says how to start it."""
    from livewidget.exceptions import ServerError

    with pytest.raises(ServerError, match="livewidget server start"):
        _embedded.ensure_embedded(start=False)


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _embedded._alive(pid):
        assert time.monotonic() < deadline, "the daemon did not die"
        time.sleep(0.02)


def test_a_killed_daemon_comes_back_on_the_same_port_for_publishers(runtime):
    """SIGKILL the daemon, publish again: it is started again on the same port and the event is sent."""
    import livewidget
    from livewidget._publish import _default_publisher

    first = _embedded.ensure_embedded()
    livewidget.publish("revive-p", "before", 1)
    pub = _default_publisher(_config.resolve())
    pub.flush(10)
    _kill(int(first["pid"]))
    livewidget.publish("revive-p", "after", 2)  # the cached settings still point at the old port
    pub.flush(30)
    assert pub.errors == [] and pub.sent == 2
    again = _embedded.read_info()
    assert again is not None and again["pid"] != first["pid"]
    assert (again["port"], again["key"], again["secret"]) == (first["port"], first["key"], first["secret"])


def test_an_open_receiver_revives_the_daemon_and_gets_new_events(runtime):
    """A kernel receiver whose daemon was killed starts it again (same port), reconnects and receives."""
    from livewidget.receiver import Receiver

    settings = _config.resolve()
    got: list[tuple[str, object]] = []
    receiver = Receiver(settings, ["revive-r"], lambda e: got.append((e.event, e.data))).start()
    try:
        _wait(lambda: receiver.state == "connected" and all(receiver.protocol.channels.values()))
        first = _embedded.read_info()
        assert first is not None
        _kill(int(first["pid"]))
        _wait(lambda: receiver.state != "connected")
        _wait(lambda: receiver.state == "connected" and all(receiver.protocol.channels.values()), 30)
        again = _embedded.read_info()
        assert again is not None and again["pid"] != first["pid"] and again["port"] == first["port"]
        assert receiver.settings.port == first["port"]
        import livewidget

        livewidget.publish("revive-r", "after", {"n": 1}, wait=True)
        _wait(lambda: got == [("after", {"n": 1})])
    finally:
        receiver.stop()


def test_a_daemon_stopped_on_purpose_is_not_revived(runtime):
    """`livewidget server stop` removes server.json: revive() leaves it stopped."""
    _embedded.ensure_embedded()
    _embedded.stop_embedded()
    assert _embedded.revive() is None and _embedded.read_info() is None


def test_settings_are_resolved_once_and_changes_noticed_cheaply(runtime, monkeypatch):
    """publish()'s resolve() with the embedded default reads no file and opens no connection per call;
    a new server.json (another daemon) is noticed within CHECK_EVERY."""
    first = _config.resolve()
    probes: list[object] = []
    real_listening, real_read = _embedded._listening, _embedded.read_info
    monkeypatch.setattr(_embedded, "_listening", lambda *a: probes.append(a) or real_listening(*a))
    monkeypatch.setattr(_embedded, "read_info", lambda: probes.append("read") or real_read())
    for _ in range(2000):
        assert _config.resolve() is first
    assert probes == []
    info = json.loads((runtime / "server.json").read_text())
    _embedded.write_info(runtime / "server.json", {**info, "started": "later"})
    time.sleep(_embedded.CHECK_EVERY + 0.05)
    assert _config.resolve() == first  # re-read: the same server
    assert probes  # this time it was checked


def _wait(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.mark.parametrize(
    "content", ["{}", "[1]", '{"pid": 0, "host": "127.0.0.1", "port": 1}', "not json", '{"pid": "x"}']
)
def test_a_malformed_runtime_file_is_as_if_no_server_ran(runtime, content):
    """A broken server.json (half-written, edited, another version's) never breaks resolve(): a server
    is started as usual."""
    runtime.mkdir(parents=True, exist_ok=True)
    (runtime / "server.json").write_text(content)
    (runtime / "credentials.json").write_text('["app_id", "key", "secret"]')
    assert _embedded.read_info() is None
    s = _config.resolve()
    assert s.source == "embedded" and s.port and _embedded.read_info() is not None


@pytest.mark.timeout(90)
def test_a_receiver_recovers_what_was_published_while_the_daemon_was_dead(runtime, tmp_path, monkeypatch):
    """SIGKILL the daemon; events published meanwhile (which start it again, on its SQLite history) reach
    the kernel receiver once each, in order: it resubscribes from its last position (issue 13)."""
    import livewidget
    from livewidget.receiver import Receiver

    monkeypatch.setenv("LIVEWIDGET_DATA_DIR", str(tmp_path / "data"))
    settings = _config.resolve()
    got: list[tuple[object, int | None]] = []
    receiver = Receiver(settings, ["revive-h"], lambda e: got.append((e.data, e.serial))).start()
    try:
        _wait(lambda: receiver.state == "connected" and all(receiver.protocol.channels.values()))
        livewidget.publish("revive-h", "e", {"n": 1}, wait=True)
        _wait(lambda: len(got) == 1)
        first = _embedded.read_info()
        assert first is not None
        _kill(int(first["pid"]))
        from livewidget._publish import _default_publisher

        pub = _default_publisher(_config.resolve())
        for n in (2, 3):  # the publisher starts the daemon again; the receiver may not be back yet
            livewidget.publish("revive-h", "e", {"n": n})
        pub.flush(30)
        assert pub.errors == []
        _wait(lambda: receiver.state == "connected" and len(got) >= 3, 30)
        livewidget.publish("revive-h", "e", {"n": 4}, wait=True)
        _wait(lambda: len(got) >= 4)
        time.sleep(0.3)  # a duplicate would arrive now
        assert [data for data, _ in got] == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]
        assert [serial for _, serial in got] == [1, 2, 3, 4]
    finally:
        receiver.stop()

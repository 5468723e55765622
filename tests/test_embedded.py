"""The per-user embedded server daemon: started on first use, shared, private, listable, stoppable."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from livewidget import _config, _embedded


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVEWIDGET_RUNTIME_DIR", str(tmp_path / "rt"))
    for name in ("LIVEWIDGET_URL", "PUSHER_KEY"):
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

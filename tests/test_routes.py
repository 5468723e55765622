"""Routes on the kernel side (issue 12): forcing, listing with reasons, the registry the extension reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import livewidget
from livewidget import _config, _embedded, _routes
from livewidget.exceptions import ConfigurationError


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("LIVEWIDGET_URL", "LIVEWIDGET_ROUTE", "PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_HOST"):
        monkeypatch.delenv(name, raising=False)
    for name in (
        "VSCODE_PID",
        "VSCODE_CWD",
        "CODESPACES",
        "SSH_CONNECTION",
        "REMOTE_CONTAINERS",
        "JUPYTERHUB_USER",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_config, "_process_settings", None)
    monkeypatch.setattr(_config, "_process_route", None)
    run = tmp_path / "run"
    monkeypatch.setenv("LIVEWIDGET_RUNTIME_DIR", str(run))
    return run


LOCAL = "http://k1:s1@127.0.0.1:6001/apps/42"


def test_route_is_auto_unless_forced_by_env_or_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEWIDGET_URL", LOCAL)
    assert livewidget.connection().route == "auto"
    monkeypatch.setenv("LIVEWIDGET_ROUTE", "jupyter")
    s = livewidget.connection()
    assert s.route == "jupyter" and s.browser_config()["route"] == "jupyter"
    livewidget.connect(route="direct")  # connect() wins over the environment, and keeps the server
    s = livewidget.connection()
    assert s.route == "direct" and s.port == 6001
    monkeypatch.setenv("LIVEWIDGET_ROUTE", "carrier-pigeon")
    livewidget.connect(route="auto")
    assert livewidget.connection().route == "auto"
    monkeypatch.setattr(_config, "_process_route", None)
    with pytest.raises(
        ConfigurationError, match="LIVEWIDGET_ROUTE must be one of auto, direct, jupyter, relay"
    ):
        livewidget.connection()
    with pytest.raises(ConfigurationError, match="route must be one of"):
        livewidget.connect(route="sideways")


def test_browser_config_carries_the_server_id_only_for_loopback_servers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIVEWIDGET_URL", LOCAL)
    cfg = livewidget.connection().browser_config()
    assert cfg["serverId"] == _routes.server_id("42", "k1", "127.0.0.1", 6001)
    assert len(cfg["serverId"]) == 20 and "s1" not in json.dumps(cfg)
    monkeypatch.setenv("LIVEWIDGET_URL", "https://k1:s1@pusher.example.org:443/apps/42")
    assert "serverId" not in livewidget.connection().browser_config()
    # the id differs per server and per app
    assert _routes.server_id("42", "k1", "127.0.0.1", 6002) != cfg["serverId"]
    assert _routes.server_id("43", "k1", "127.0.0.1", 6001) != cfg["serverId"]


def test_connection_lists_routes_and_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEWIDGET_URL", LOCAL)
    routes = {r.name: r for r in livewidget.connection().routes()}
    assert set(routes) == {"direct", "jupyter", "relay"}
    assert routes["jupyter"].available and "extension" in routes["jupyter"].why
    assert routes["relay"].available and "kernel" in routes["relay"].why
    text = repr(livewidget.connection())
    assert "jupyter: yes" in text and "relay: yes" in text and "s1" not in text.replace("s1…", "")
    monkeypatch.setenv("VSCODE_PID", "123")  # VS Code's webview is not a page of this Jupyter server
    routes = {r.name: r for r in livewidget.connection().routes()}
    assert not routes["direct"].available and "VSCODE_PID" in routes["direct"].why
    assert not routes["jupyter"].available
    monkeypatch.setenv("LIVEWIDGET_URL", "https://k1:s1@pusher.example.org:443/apps/42")
    routes = {r.name: r for r in livewidget.connection().routes()}
    assert routes["direct"].available and not routes["jupyter"].available


def test_environment_hints(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"CODESPACES": "true", "SSH_CONNECTION": "1 2 3 4", "JUPYTERHUB_SERVICE_PREFIX": "/user/a/"}
    hints = _routes.environment_hints(env)
    assert {"codespaces", "ssh", "jupyterhub"} <= set(hints)
    monkeypatch.setitem(__import__("sys").modules, "google.colab", object())
    assert "colab" in _routes.environment_hints({})


def test_register_writes_a_private_file_the_extension_reads(clean: Path) -> None:
    sid = _routes.register("42", "k1", "127.0.0.1", 6001)
    assert sid == _routes.server_id("42", "k1", "127.0.0.1", 6001)
    path = clean / "routes" / f"{sid}.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert "secret" not in path.read_text()
    found = _routes.targets()
    assert list(found) == [sid] and found[sid].port == 6001 and found[sid].source == "kernel"
    assert _routes.register("42", "k1", "10.0.0.5", 6001) is None  # never a non-loopback target


@pytest.mark.parametrize("common", ["LIVEWIDGET_RUNTIME_DIR", "XDG_RUNTIME_DIR", "HOME"])
def test_hub_users_of_one_os_account_never_share_a_runtime_folder(
    clean: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, common: str
) -> None:
    """JupyterHub's SimpleLocalProcessSpawner runs every user as one OS account, so the owner checks
    cannot tell alice from bob: if the spawner passes them one runtime folder (a common
    ``LIVEWIDGET_RUNTIME_DIR`` or ``XDG_RUNTIME_DIR``, or one HOME), bob's extension must still not
    find alice's servers, nor his kernels her embedded server's record."""
    for name in ("LIVEWIDGET_RUNTIME_DIR", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    common_dir = tmp_path / "common"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # one HOME, unless another folder comes first
    monkeypatch.setenv(common, str(common_dir))
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    alice_dir = _embedded.runtime_dir()
    sid = _routes.register("42", "alicekey", "127.0.0.1", 6001)
    info = {"pid": os.getpid(), "host": "127.0.0.1", "port": 6100, "app_id": "7", "key": "ek", "secret": "x"}
    _embedded.write_info(alice_dir / "server.json", info)
    assert set(_routes.targets()) == {sid, _routes.server_id("7", "ek", "127.0.0.1", 6100)}

    monkeypatch.setenv("JUPYTERHUB_USER", "bob")
    bob_dir = _embedded.runtime_dir()
    assert bob_dir != alice_dir and bob_dir.parent == alice_dir.parent
    assert str(bob_dir).startswith(str(common_dir))
    assert _routes.targets() == {}
    assert not (bob_dir / "server.json").exists()
    # odd hub names stay one folder inside the shared one, distinct from each other
    folders = set()
    for name in ("..", "a/b", "a b", "a%20b", "x" * 300):
        monkeypatch.setenv("JUPYTERHUB_USER", name)
        folder = _embedded.runtime_dir()
        assert folder.parent == alice_dir.parent and folder.name.startswith("hub-") and len(folder.name) < 120
        folders.add(folder)
    assert len(folders) == 5


def test_targets_trust_only_the_users_own_private_loopback_files(clean: Path) -> None:
    _routes.register("42", "k1", "127.0.0.1", 6001)
    routes = clean / "routes"
    # written by hand to look registered: a LAN address, and a file others may write
    (routes / "lan.json").write_text(
        json.dumps({"host": "10.0.0.5", "port": 6001, "app_id": "1", "key": "k"})
    )
    loose = routes / "loose.json"
    loose.write_text(json.dumps({"host": "127.0.0.1", "port": 7001, "app_id": "1", "key": "k"}))
    loose.chmod(0o666)
    (routes / "junk.json").write_text("{not json")
    assert [t.port for t in _routes.targets().values()] == [6001]
    # the embedded daemon's runtime file counts too
    info = {"pid": os.getpid(), "host": "127.0.0.1", "port": 6100, "app_id": "7", "key": "ek", "secret": "x"}
    (clean / "server.json").write_text(json.dumps(info))
    (clean / "server.json").chmod(0o600)
    found = _routes.targets()
    embedded = found[_routes.server_id("7", "ek", "127.0.0.1", 6100)]
    assert embedded.source == "embedded" and "secret" not in json.dumps(embedded.info())
    assert "port" not in embedded.info() and "host" not in embedded.info()
    # a folder others can read is not trusted at all
    clean.chmod(0o755)
    assert _routes.targets(clean) == {}

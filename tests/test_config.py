"""Connection settings: one resolution order, explicit > connect() > environment > embedded."""

from __future__ import annotations

import pytest

import livewidget
from livewidget import _config
from livewidget.exceptions import ConfigurationError


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    for name in (
        "LIVEWIDGET_URL",
        "PUSHER_APP_ID",
        "PUSHER_KEY",
        "PUSHER_SECRET",
        "PUSHER_CLUSTER",
        "PUSHER_HOST",
        "PUSHER_PORT",
        "PUSHER_USE_TLS",
        "LIVEWIDGET_ROUTE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_config, "_process_settings", None)
    monkeypatch.setattr(_config, "_process_route", None)


def test_livewidget_url(monkeypatch):
    """LIVEWIDGET_URL gives key, secret, host, port and app id."""
    monkeypatch.setenv("LIVEWIDGET_URL", "http://k1:s%2F1@example.org:7001/apps/42")
    s = livewidget.connection()
    assert (s.key, s.secret, s.host, s.port, s.app_id, s.tls, s.source) == (
        "k1",
        "s/1",
        "example.org",
        7001,
        "42",
        False,
        "environment",
    )
    assert s.ws_url.startswith("ws://example.org:7001/app/k1?protocol=7")
    assert s.rest_url == "http://example.org:7001"


def test_pusher_variables_hosted_and_custom(monkeypatch):
    """PUSHER_* select hosted Pusher by cluster, or any server by host/port/TLS."""
    monkeypatch.setenv("PUSHER_APP_ID", "7")
    monkeypatch.setenv("PUSHER_KEY", "kk")
    monkeypatch.setenv("PUSHER_SECRET", "ss")
    monkeypatch.setenv("PUSHER_CLUSTER", "eu")
    s = livewidget.connection()
    assert (s.ws_host, s.ws_port, s.tls, s.rest_url) == (
        "ws-eu.pusher.com",
        443,
        True,
        "https://api-eu.pusher.com:443",
    )
    assert s.browser_config() == {"key": "kk", "cluster": "eu", "forceTLS": True, "route": "auto"}
    monkeypatch.setenv("PUSHER_HOST", "soketi.local")
    monkeypatch.setenv("PUSHER_PORT", "6001")
    s = livewidget.connection()
    assert (s.ws_host, s.ws_port, s.tls) == ("soketi.local", 6001, False)
    assert s.browser_config()["wsHost"] == "soketi.local"
    monkeypatch.setenv("PUSHER_USE_TLS", "true")
    assert livewidget.connection().ws_url.startswith("wss://soketi.local:6001/")


def test_order_explicit_connect_environment(monkeypatch):
    """Explicit arguments beat connect(), which beats the environment."""
    monkeypatch.setenv("LIVEWIDGET_URL", "http://ek:es@env:1/apps/1")
    livewidget.connect("http://ck:cs@conn:2/apps/2")
    assert livewidget.connection().key == "ck"
    assert _config.resolve(app_id="3", key="xk", secret="xs", host="h", port=3).key == "xk"
    livewidget.connect(embedded=False, app_id="4", key="k4", secret="s4", cluster="us2")
    assert livewidget.connection().cluster == "us2"


def test_secret_masked_everywhere():
    """repr, describe and connection() never show the secret in full."""
    s = livewidget.connect(app_id="1", key="key", secret="supersecretvalue", host="h", port=1)
    assert "supersecretvalue" not in repr(s)
    assert "supe…" in s.describe()
    assert "supersecretvalue" not in str(s.browser_config())


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"url": "ftp://x"}, "LIVEWIDGET_URL must look like"),
        ({"url": "http://h:1/apps/1"}, "KEY:SECRET@"),
        ({"key": "k"}, "app_id and key"),
        ({"app_id": "1", "key": "k"}, "cluster=... for hosted Pusher or host="),
    ],
)
def test_bad_settings_name_the_fix(kwargs, needle):
    """Bad settings raise ConfigurationError saying what to give."""
    with pytest.raises(ConfigurationError, match=needle):
        livewidget.connect(**kwargs)


def test_bad_environment(monkeypatch):
    """Half-set PUSHER_* variables and bad ports are named."""
    monkeypatch.setenv("PUSHER_KEY", "k")
    with pytest.raises(ConfigurationError, match="PUSHER_APP_ID"):
        livewidget.connection()
    monkeypatch.setenv("PUSHER_APP_ID", "1")
    monkeypatch.setenv("PUSHER_PORT", "eighty")
    with pytest.raises(ConfigurationError, match="PUSHER_PORT"):
        livewidget.connection()


def test_require_secret_message():
    """Operations that need the secret say so and how to give it."""
    s = _config.Settings(app_id="1", key="k", cluster="eu")
    with pytest.raises(ConfigurationError, match="publishing needs the app secret; pass secret="):
        s.require_secret("publishing")

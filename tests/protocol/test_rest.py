"""The REST API and signatures, without sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from livewidget.protocol import AppConfig, Apps, Send, handle_rest
from livewidget.protocol.signatures import (
    body_md5,
    channel_auth,
    hmac_hex,
    rest_string_to_sign,
    sign_rest_query,
    signin_auth,
)

NOW = 1_700_000_000.0


def test_reference_signature_vectors():
    """The verified vectors of auth-signatures.md and rest-api.md reproduce (reference §1.13, §2.2)."""
    key, secret = "278d425bdf160c739803", "7ad3773142a6692b25b8"
    assert channel_auth(key, secret, "1234.1234", "private-foobar") == (
        f"{key}:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    )
    assert signin_auth(key, secret, "1234.1234", '{"id":"12345"}') == (
        f"{key}:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
    )
    body = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
    assert body_md5(body) == "ec365a775a4cd0599faeb73354201b6f"
    params = {
        "auth_key": key,
        "auth_timestamp": "1353088179",
        "auth_version": "1.0",
        "body_md5": "ec365a775a4cd0599faeb73354201b6f",
    }
    to_sign = rest_string_to_sign("POST", "/apps/3/events", params.items())
    assert hmac_hex(secret, to_sign) == "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"


def make_apps(**settings: Any) -> Apps:
    return Apps([AppConfig("1", "key1", "secret1", **settings), AppConfig("2", "key2", "secret2")])


def request(
    apps: Apps,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str = "key1",
    secret: str = "secret1",
    extra: dict[str, str] | None = None,
    now: float = NOW,
    tamper: dict[str, str] | None = None,
    sign_path: str | None = None,
):
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    params = {"auth_key": key, "auth_timestamp": str(int(now)), "auth_version": "1.0", **(extra or {})}
    params["body_md5"] = body_md5(raw)  # the official SDK sends it on GET too
    signed = sign_rest_query(method, sign_path or path, params, secret)
    signed.update(tamper or {})
    return handle_rest(apps, method, path, list(signed.items()), raw, NOW)


def test_events_trigger_and_info():
    """events delivers to subscribers and answers {} or the requested counts."""
    apps = make_apps()
    hub = apps.by_id["1"]
    conn, _ = hub.open(NOW)
    hub.receive(conn, json.dumps({"event": "pusher:subscribe", "data": {"channel": "c"}}), NOW)
    resp = request(apps, "POST", "/apps/1/events", {"name": "e", "channels": ["c", "d"], "data": "x"})
    assert (resp.status, resp.body) == (200, {})
    (send,) = [a for a in resp.actions if isinstance(a, Send)]
    assert send.targets == (conn,)
    resp = request(
        apps,
        "POST",
        "/apps/1/events",
        {"name": "e", "channel": "c", "data": "x", "info": "subscription_count"},
    )
    assert resp.body == {"channels": {"c": {"subscription_count": 1}}}


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"channels": ["c"], "data": "x"}, 400, "'name'"),
        ({"name": "e", "channels": ["c"]}, 400, "'data'"),
        ({"name": "e", "channels": [], "data": "x"}, 400, "channels"),
        ({"name": "e", "channels": ["bad name"], "data": "x"}, 400, "invalid channel"),
        ({"name": "e", "channels": [f"c{i}" for i in range(101)], "data": "x"}, 400, "at most 100"),
        ({"name": "e", "channels": ["c"], "data": "x" * 10241}, 413, "limit is 10240"),
        ({"name": "e", "channels": ["c"], "data": "x", "socket_id": "nope"}, 400, "socket_id"),
        ({"name": "e", "channels": ["c"], "data": "x", "info": "bogus"}, 400, "info"),
        ({"name": "e", "channels": ["private-encrypted-a", "b"], "data": "x"}, 400, "encrypted"),
        (b"{not json", 400, "not valid JSON"),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_events_bad_input(body, status, needle):
    """Bad trigger bodies get 400/413 with a JSON error naming the problem."""
    resp = request(make_apps(), "POST", "/apps/1/events", body)
    assert resp.status == status
    assert needle in resp.body["error"]
    assert resp.actions == []


def test_batch_events():
    """batch_events validates everything first, honours the batch limit, aligns info by index."""
    apps = make_apps()
    ok = [{"name": "e", "channel": f"c{i}", "data": "x"} for i in range(10)]
    assert request(apps, "POST", "/apps/1/batch_events", {"batch": ok}).body == {}
    resp = request(apps, "POST", "/apps/1/batch_events", {"batch": [*ok, ok[0]]})
    assert resp.status == 400 and "at most 10" in resp.body["error"]
    resp = request(apps, "POST", "/apps/1/batch_events", {"batch": [ok[0], {"name": "e", "channel": "c"}]})
    assert resp.status == 400 and resp.body["error"].startswith("batch[1]")
    info = [{"name": "e", "channel": "presence-p", "data": "x", "info": "user_count"}, ok[0]]
    resp = request(apps, "POST", "/apps/1/batch_events", {"batch": info})
    assert resp.body == {"batch": [{"user_count": 0}, {}]}


def test_channels_queries():
    """channels, channel and users answer like hosted Pusher, with 400 for inapplicable info."""
    apps = make_apps()
    hub = apps.by_id["1"]
    conn, _ = hub.open(NOW)
    cd = json.dumps({"user_id": "u1"})
    sub = {
        "channel": "presence-r",
        "channel_data": cd,
        "auth": channel_auth("key1", "secret1", conn.socket_id, "presence-r", cd),
    }
    hub.receive(conn, json.dumps({"event": "pusher:subscribe", "data": sub}), NOW)
    hub.receive(conn, json.dumps({"event": "pusher:subscribe", "data": {"channel": "news"}}), NOW)
    assert request(apps, "GET", "/apps/1/channels").body == {"channels": {"presence-r": {}, "news": {}}}
    resp = request(
        apps, "GET", "/apps/1/channels", extra={"filter_by_prefix": "presence-", "info": "user_count"}
    )
    assert resp.body == {"channels": {"presence-r": {"user_count": 1}}}
    resp = request(apps, "GET", "/apps/1/channels", extra={"info": "user_count"})
    assert resp.status == 400 and "presence" in resp.body["error"]
    resp = request(
        apps, "GET", "/apps/1/channels/presence-r", extra={"info": "user_count,subscription_count"}
    )
    assert resp.body == {"occupied": True, "user_count": 1, "subscription_count": 1}
    assert request(apps, "GET", "/apps/1/channels/news", extra={"info": "user_count"}).status == 400
    assert request(apps, "GET", "/apps/1/channels/news", extra={"info": "cache"}).status == 400
    assert request(apps, "GET", "/apps/1/channels/empty").body == {"occupied": False}
    assert request(apps, "GET", "/apps/1/channels/presence-r/users").body == {"users": [{"id": "u1"}]}
    assert request(apps, "GET", "/apps/1/channels/news/users").status == 400


def test_cache_info():
    """channel info=cache returns the cached data and its remaining TTL."""
    apps = make_apps()
    request(apps, "POST", "/apps/1/events", {"name": "e", "channel": "cache-q", "data": "v"})
    resp = request(apps, "GET", "/apps/1/channels/cache-q", extra={"info": "cache"})
    assert resp.body == {"occupied": False, "cache": {"data": "v", "ttl": 1800}}


@pytest.mark.parametrize(
    ("kwargs", "status", "needle"),
    [
        ({"secret": "wrong"}, 401, "Invalid signature"),
        ({"key": "key2", "secret": "secret2"}, 401, "Unknown auth_key"),
        ({"now": NOW - 601}, 401, "Timestamp expired"),
        ({"now": NOW + 601}, 401, "Timestamp expired"),
        ({"tamper": {"body_md5": "0" * 32}}, 401, "body_md5"),
        ({"tamper": {"auth_timestamp": "soon"}}, 401, "integer"),
        ({"tamper": {"auth_version": "2.0"}}, 401, "auth_version"),
    ],
)
def test_authentication_failures(kwargs, status, needle):
    """Bad signatures, keys, timestamps and body_md5 are refused with 401 and a JSON error."""
    resp = request(make_apps(), "GET", "/apps/1/channels", **kwargs)
    assert resp.status == status
    assert needle in resp.body["error"]


def test_timestamp_window_edges_accept():
    """Timestamps within ±600 s are accepted."""
    for delta in (-600, 600):
        assert request(make_apps(), "GET", "/apps/1/channels", now=NOW + delta).status == 200


def test_missing_auth_unknown_app_and_routes():
    """Unsigned requests are 401; unknown apps and endpoints 404; wrong methods 405; disabled apps 403."""
    apps = make_apps()
    assert handle_rest(apps, "GET", "/apps/1/channels", [], b"", NOW).status == 401
    assert request(apps, "GET", "/apps/9/channels").status == 404
    assert request(apps, "GET", "/apps/1/nothing").status == 404
    assert request(apps, "GET", "/nothing").status == 404
    assert request(apps, "GET", "/apps/1/events").status == 405
    disabled = Apps([AppConfig("1", "key1", "secret1", enabled=False)])
    assert request(disabled, "GET", "/apps/1/channels").status == 403


def test_prefix_tolerated_and_second_app():
    """A path prefix is tolerated (signed with or without it), and each app verifies its own secret."""
    apps = make_apps()
    assert request(apps, "GET", "/proxy/x/apps/1/channels").status == 200
    assert request(apps, "GET", "/proxy/x/apps/1/channels", sign_path="/apps/1/channels").status == 200
    assert request(apps, "GET", "/apps/2/channels", key="key2", secret="secret2").status == 200
    assert request(apps, "GET", "/apps/2/channels").status == 401


def test_terminate_both_paths():
    """terminate_connections works on /apps/{id}/users/... and on the SDK's /users/... path."""
    apps = make_apps()
    hub = apps.by_id["2"]
    conn, _ = hub.open(NOW)
    ud = json.dumps({"id": "u9"})
    from livewidget.protocol.signatures import signin_auth as sa

    auth = sa("key2", "secret2", conn.socket_id, ud)
    hub.receive(conn, json.dumps({"event": "pusher:signin", "data": {"auth": auth, "user_data": ud}}), NOW)
    resp = request(apps, "POST", "/users/u9/terminate_connections", {}, key="key2", secret="secret2")
    assert resp.status == 200 and [a.code for a in resp.actions] == [4009]
    resp = request(apps, "POST", "/apps/2/users/u9/terminate_connections", {}, key="key2", secret="secret2")
    assert resp.status == 200
    assert request(apps, "POST", "/users/u9/terminate_connections", {}, key="nokey").status == 401


def test_app_config_validation():
    """App ids must be numeric and keys well-formed; the config mapping rejects unknown settings."""
    from livewidget.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="all digits"):
        AppConfig("app-id", "k", "s")
    with pytest.raises(ConfigurationError, match="key"):
        AppConfig("1", "", "s")
    with pytest.raises(ConfigurationError, match="unknown app setting"):
        AppConfig.from_mapping({"id": 1, "key": "k", "secret": "s", "colour": "red"})
    cfg = AppConfig.from_mapping({"id": 7, "key": "k", "secret": "s", "webhooks": "http://h"})
    assert (cfg.app_id, cfg.webhook_urls) == ("7", ("http://h",))
    with pytest.raises(ValueError, match="twice"):
        Apps([AppConfig("1", "k", "s"), AppConfig("1", "k2", "s")])


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"max_data_size": "big"}, "max_data_size must be an integer or null"),
        ({"client_events": "no"}, "client_events must be a bool"),
        ({"activity_timeout": True}, "activity_timeout must be an integer"),
        ({"webhook_urls": (1,)}, "webhook_urls must be a list of strings"),
        ({"pong_timeout": "soon"}, "pong_timeout must be a number"),
    ],
)
def test_app_config_types_are_checked(settings, needle):
    """Wrong setting types (from a config file, say) are named at once."""
    from livewidget.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match=needle):
        AppConfig("1", "k", "s", **settings)

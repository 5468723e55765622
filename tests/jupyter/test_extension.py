"""The livewidget Jupyter server extension under a real ``jupyter server`` (issue 12, the jupyter route).

One server per module on 127.0.0.1 with a token and ``--ServerApp.base_url=/user/alice/`` (as on a
hub); the embedded Pusher server is a real :class:`LocalServer`, registered the way a kernel does it
(:func:`livewidget._routes.register`, same ``LIVEWIDGET_RUNTIME_DIR``); events are published with the
official ``pusher`` SDK.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pusher
import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from livewidget import _routes
from livewidget.protocol import signatures
from livewidget.server import LocalServer
from tests.e2e.conftest import _alive, _children, _kill_by_pid, free_port

BASE = "/user/alice/"
TOKEN = "t0ken-for-tests"
MAX_SOCKETS = 6  # forwarded sockets the test server allows (livewidget_max_connections)
pytestmark = pytest.mark.slow


class JupyterServer:
    def __init__(self, base: Path, runtime: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{BASE}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PUSHER_", "LIVEWIDGET_", "JUPYTER"))}
        for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
            (base / name.lower()).mkdir()
            env[name] = str(base / name.lower())
        env.update(LIVEWIDGET_RUNTIME_DIR=str(runtime), JUPYTER_PLATFORM_DIRS="1")
        cmd = [
            sys.executable, "-m", "jupyter", "server", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--ServerApp.base_url={BASE}", f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={base}", '--ServerApp.jpserver_extensions={"livewidget.jupyter": True}',
            f'--ServerApp.tornado_settings={{"livewidget_max_connections": {MAX_SOCKETS}}}',
        ]  # fmt: skip
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self.log = open(base / "jupyter.log", "wb")  # noqa: SIM115 (closed in stop)
        self.log_path = base / "jupyter.log"
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter server exited: {self.log_path.read_text()[-2000:]}")
            if self.get("api/status")[0] == 200:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("jupyter server did not start in 60 s")

    def get(self, path: str, token: str | None = TOKEN, method: str = "GET", body: bytes | None = None):
        req = urllib.request.Request(self.url + path, method=method, data=body)
        if token:
            req.add_header("Authorization", f"token {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            data = exc.read()
            exc.close()
            return exc.code, data
        except OSError:
            return 0, b""

    def stop(self) -> None:
        kids = _children(self.proc.pid)
        _kill_by_pid([self.proc.pid])
        _kill_by_pid([p for p in kids if _alive(p)])
        self.proc.wait(5)
        self.log.close()


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lw-run")
    path.chmod(0o700)
    return path


@pytest.fixture(scope="module")
def upstream() -> Iterator[LocalServer]:
    with LocalServer() as server:
        yield server


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory, runtime: Path) -> Iterator[JupyterServer]:
    server = JupyterServer(tmp_path_factory.mktemp("jupyter"), runtime)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch, runtime: Path, upstream: LocalServer) -> str:
    """Register ``upstream`` as a kernel does (its settings point at a loopback server); returns its id."""
    monkeypatch.setenv("LIVEWIDGET_RUNTIME_DIR", str(runtime))
    sid = _routes.register(upstream.app_id, upstream.key, upstream.host, upstream.port)
    assert sid is not None
    return sid


def ws_url(jupyter: JupyterServer, path: str) -> str:
    return f"ws://127.0.0.1:{jupyter.port}{BASE}{path}"


async def ws_open(url: str, headers: dict[str, str] | None = None) -> Any:
    return await websocket_connect(HTTPRequest(url, headers=headers or {}, connect_timeout=10))


async def next_json(ws: Any, timeout: float = 10.0) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.read_message(), timeout)
    assert msg is not None, f"closed: {ws.close_code} {ws.close_reason}"
    return dict(json.loads(msg))


def auth_header() -> dict[str, str]:
    return {"Authorization": f"token {TOKEN}"}


# ---------------------------------------------------------------------------------------------- REST


def test_rest_needs_a_jupyter_login(jupyter: JupyterServer, registered: str, upstream: LocalServer) -> None:
    """Without a valid token every livewidget URL is 403 (not a redirect to the login page)."""
    for path in (
        "livewidget/info",
        f"livewidget/{registered}/info",
        f"livewidget/{registered}/apps/1/channels",
    ):
        assert jupyter.get(path, token=None)[0] == 403, path
        assert jupyter.get(path, token="wrong")[0] == 403, path


def test_info_names_the_registered_server_and_nothing_secret(
    jupyter: JupyterServer, registered: str, upstream: LocalServer
) -> None:
    status, body = jupyter.get("livewidget/info")
    assert status == 200 and registered in json.loads(body)["servers"]
    status, body = jupyter.get(f"livewidget/{registered}/info")
    info = json.loads(body)
    assert status == 200 and info["server_id"] == registered and info["key"] == upstream.key
    assert info["app_id"] == upstream.app_id
    assert upstream.secret.encode() not in body and str(upstream.port).encode() not in body
    assert jupyter.get("livewidget/" + "0" * 20 + "/info")[0] == 404


def test_rest_is_forwarded_to_the_registered_server(
    jupyter: JupyterServer, registered: str, upstream: LocalServer
) -> None:
    """A signed REST call through the route reaches the server (the path after the prefix is signed)."""
    path = f"/apps/{upstream.app_id}/channels"
    params = {"auth_key": upstream.key, "auth_timestamp": str(int(time.time())), "auth_version": "1.0"}
    query = signatures.sign_rest_query("GET", path, params, upstream.secret)
    qs = urllib.parse.urlencode(query)
    status, body = jupyter.get(f"livewidget/{registered}{path}?{qs}")
    assert status == 200 and "channels" in json.loads(body)
    # another app id than the registered one is not forwarded
    assert jupyter.get(f"livewidget/{registered}/apps/999/channels?{qs}")[0] == 404
    # bodies are bounded
    assert (
        jupyter.get(f"livewidget/{registered}{path}", method="POST", body=b"x" * (1024 * 1024 + 1))[0] == 413
    )


# ---------------------------------------------------------------------------------------------- WebSocket


@pytest.mark.asyncio
async def test_websocket_needs_a_jupyter_login(
    jupyter: JupyterServer, registered: str, upstream: LocalServer
):
    url = ws_url(jupyter, f"livewidget/{registered}/app/{upstream.key}?protocol=7")
    for headers in ({}, {"Authorization": "token wrong"}):
        with pytest.raises(HTTPClientError) as err:
            await ws_open(url, headers)
        assert err.value.code == 403
    # A page of another origin, with the user's login cookie, is refused by Jupyter's origin check
    # (token-authenticated requests skip it by Jupyter's design: a token is not ambient authority).
    cookie = await asyncio.to_thread(login_cookie, jupyter)
    with pytest.raises(HTTPClientError) as err:
        await ws_open(url, {"Cookie": cookie, "Origin": "http://evil.example"})
    assert err.value.code == 403
    ws = await ws_open(url, {"Cookie": cookie, "Origin": f"http://127.0.0.1:{jupyter.port}"})
    assert (await next_json(ws))["event"] == "pusher:connection_established"
    ws.close()


def login_cookie(jupyter: JupyterServer) -> str:
    """Log in through Jupyter's login page as a browser does; the Cookie header of the session."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(jupyter.url + "login", timeout=10).close()
    xsrf = next(c.value for c in jar if c.name == "_xsrf")
    body = urllib.parse.urlencode({"_xsrf": xsrf, "password": TOKEN}).encode()
    opener.open(jupyter.url + "login", data=body, timeout=10).close()
    assert any(c.name.startswith("username-") for c in jar), [c.name for c in jar]
    return "; ".join(f"{c.name}={c.value}" for c in jar)


@pytest.mark.asyncio
async def test_websocket_reaches_the_server_and_gets_published_events(
    jupyter: JupyterServer, registered: str, upstream: LocalServer
) -> None:
    url = ws_url(jupyter, f"livewidget/{registered}/app/{upstream.key}?protocol=7&client=js&version=8")
    ws = await ws_open(url, {**auth_header(), "Origin": f"http://127.0.0.1:{jupyter.port}"})
    try:
        hello = await next_json(ws)
        assert hello["event"] == "pusher:connection_established"
        ws.write_message(json.dumps({"event": "pusher:subscribe", "data": {"channel": "jobs"}}))
        assert (await next_json(ws))["event"] == "pusher_internal:subscription_succeeded"
        sdk = pusher.Pusher(
            app_id=upstream.app_id, key=upstream.key, secret=upstream.secret,
            host=upstream.host, port=upstream.port, ssl=False, timeout=10,
        )  # fmt: skip
        await asyncio.to_thread(sdk.trigger, "jobs", "done", {"id": 7})
        event = await next_json(ws)
        assert event["event"] == "done" and event["channel"] == "jobs"
        assert json.loads(event["data"]) == {"id": 7}
    finally:
        ws.close()


@pytest.mark.asyncio
async def test_no_forwarding_to_a_host_or_port_from_the_url(
    jupyter: JupyterServer, registered: str, upstream: LocalServer
) -> None:
    """Only registered ids are forwarded: a port in the URL, an unregistered server or key gets 404."""
    with LocalServer() as other:  # listening on loopback, same user, but never registered

        def connections() -> int:
            with urllib.request.urlopen(other.url + "/stats", timeout=5) as resp:
                return int(json.loads(resp.read())["connections"])

        unregistered = _routes.server_id(other.app_id, other.key, other.host, other.port)
        attempts = [
            f"livewidget/127.0.0.1:{other.port}/app/{other.key}",
            f"livewidget/{other.port}/app/{other.key}",
            f"livewidget/proxy/{other.port}/app/{other.key}",
            f"livewidget/{registered}/app/{other.key}",  # the registered server with another app's key
            f"livewidget/{registered}/app/{upstream.key}/../../{other.port}/app/{other.key}",
            f"livewidget/{unregistered}/app/{other.key}",
        ]
        for path in attempts:
            with pytest.raises(HTTPClientError) as err:
                await ws_open(
                    ws_url(jupyter, path + f"?protocol=7&host=127.0.0.1&port={other.port}"), auth_header()
                )
            assert err.value.code == 404, path
        assert connections() == 0


@pytest.mark.asyncio
async def test_oversized_frames_close_the_socket(
    jupyter: JupyterServer, registered: str, upstream: LocalServer
):
    url = ws_url(jupyter, f"livewidget/{registered}/app/{upstream.key}?protocol=7")
    ws = await ws_open(url, auth_header())
    await next_json(ws)
    ws.write_message("x" * (256 * 1024 + 1))
    assert await asyncio.wait_for(ws.read_message(), 10) is None
    assert ws.close_code == 1009
    ws.close()  # tornado keeps the closed client's protocol until close() is called


@pytest.mark.asyncio
async def test_upstream_going_away_closes_with_a_pusher_reconnect_code(
    jupyter: JupyterServer, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the server stops, the browser's socket closes with 4000-4299 so pusher-js reconnects;
    while it is down, opening the route fails with 502 before the upgrade (pusher-js retries)."""
    monkeypatch.setenv("LIVEWIDGET_RUNTIME_DIR", str(runtime))
    server = LocalServer().start()
    sid = _routes.register(server.app_id, server.key, server.host, server.port)
    url = ws_url(jupyter, f"livewidget/{sid}/app/{server.key}?protocol=7")
    ws = await ws_open(url, auth_header())
    await next_json(ws)
    await asyncio.to_thread(server.stop)
    # the server says why first (pusher:error 4200, issue 14 item 10), forwarded as is, then closes
    first = await asyncio.wait_for(ws.read_message(), 15)
    assert first is not None and json.loads(first)["data"]["code"] == 4200
    assert await asyncio.wait_for(ws.read_message(), 15) is None
    assert ws.close_code is not None and 4000 <= ws.close_code < 4300, ws.close_code
    ws.close()
    with pytest.raises(HTTPClientError) as err:
        await ws_open(url, auth_header())
    assert err.value.code == 502


# ---------------------------------------------------------------------------------------------- signing


def test_signing_through_the_extension(jupyter: JupyterServer, runtime: Path, monkeypatch) -> None:
    """``POST livewidget/auth/{id}`` reaches the kernel's signing endpoint registered by this user; the
    widget's token is still checked there; no login, an unknown id or a big body are refused first."""
    from livewidget._authserver import endpoint

    monkeypatch.setenv("LIVEWIDGET_RUNTIME_DIR", str(runtime))
    ep = endpoint()

    def sign(socket_id: str, channel: str) -> dict[str, Any]:
        if channel != "private-ok":
            raise PermissionError(f"this widget did not ask for {channel}")
        return {"auth": f"key:{socket_id}"}

    token = ep.register(sign)
    try:
        aid = _routes.register_auth(int(ep.url.rsplit(":", 1)[1].split("/")[0]))
        path = f"livewidget/auth/{aid}"

        def post(body: dict[str, Any], token_: str | None = TOKEN, where: str = path) -> tuple[int, Any]:
            status, raw = jupyter.get(where, token=token_, method="POST", body=json.dumps(body).encode())
            return status, (json.loads(raw) if raw.startswith(b"{") else raw)

        ask = {"token": token, "socket_id": "1.2", "channel_name": "private-ok"}
        assert post(ask, token_=None)[0] == 403
        assert post(ask) == (200, {"auth": "key:1.2"})
        status, body = post({**ask, "channel_name": "private-other"})
        assert status == 403 and "did not ask for" in body["error"]
        assert post({**ask, "token": "not-the-widgets"})[0] == 403
        assert post(ask, where="livewidget/auth/" + "0" * 20)[0] == 404
        assert post({**ask, "pad": "x" * 17_000})[0] == 413
        # a browser session (login cookie) must send Jupyter's XSRF token too
        cookie = login_cookie(jupyter)
        req = urllib.request.Request(jupyter.url + path, data=json.dumps(ask).encode(), method="POST")
        req.add_header("Cookie", cookie)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 403
        err.value.close()
        xsrf = next(p.split("=", 1)[1] for p in cookie.split("; ") if p.startswith("_xsrf="))
        req.add_header("X-XSRFToken", xsrf)
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read()) == {"auth": "key:1.2"}
    finally:
        ep.unregister(token)


@pytest.mark.asyncio
async def test_jupyter_credentials_in_the_query_are_not_forwarded(
    jupyter: JupyterServer, runtime: Path, monkeypatch
) -> None:
    """A login by ``?token=`` stays with Jupyter: the upstream request line has no ``token``."""
    heads: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    fake = await asyncio.start_server(record, "127.0.0.1", 0)
    try:
        port = fake.sockets[0].getsockname()[1]
        monkeypatch.setenv("LIVEWIDGET_RUNTIME_DIR", str(runtime))
        sid = _routes.register("1", "fakekey", "127.0.0.1", port)
        url = ws_url(jupyter, f"livewidget/{sid}/app/fakekey?protocol=7&token={TOKEN}&client=js")
        with pytest.raises(HTTPClientError) as err:
            await ws_open(url)
        assert err.value.code == 502  # the fake upstream hung up
        assert len(heads) == 1 and heads[0].startswith(b"GET /app/fakekey?protocol=7&client=js HTTP/1.1")
        assert TOKEN.encode() not in heads[0]
    finally:
        fake.close()
        await fake.wait_closed()


def test_a_browser_that_stops_reading_is_dropped_not_buffered(
    jupyter: JupyterServer, registered: str, upstream: LocalServer
) -> None:
    """Events for a browser that reads nothing pile up in the Jupyter server only up to MAX_BUFFER
    (4 MB): then both sockets are closed (4100 to the browser), and the extension keeps serving."""
    import base64
    import socket

    def stats() -> int:
        with urllib.request.urlopen(upstream.url + "/stats", timeout=5) as resp:
            return int(json.loads(resp.read())["connections"])

    before = stats()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # so the backlog builds up in Jupyter
    sock.settimeout(10)
    sock.connect(("127.0.0.1", jupyter.port))
    try:
        path = f"{BASE}livewidget/{registered}/app/{upstream.key}?protocol=7"
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{jupyter.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: token {TOKEN}\r\n\r\n"
            ).encode()
        )
        got = b""
        while b"connection_established" not in got:
            got += sock.recv(4096)
        assert got.startswith(b"HTTP/1.1 101"), got[:100]
        payload = json.dumps({"event": "pusher:subscribe", "data": {"channel": "flood"}}).encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
        while b"subscription_succeeded" not in got:
            got += sock.recv(4096)
        # now read nothing more, and publish ~24 MB
        sdk = pusher.Pusher(
            app_id=upstream.app_id, key=upstream.key, secret=upstream.secret,
            host=upstream.host, port=upstream.port, ssl=False, timeout=10,
        )  # fmt: skip
        data = "x" * 9000
        deadline = time.monotonic() + 60
        sent = 0
        while stats() > before and sent < 2700 and time.monotonic() < deadline:
            sdk.trigger_batch([{"channel": "flood", "name": "big", "data": data}] * 10)
            sent += 10
        wait_until_true(lambda: stats() == before, 10, "the extension to drop the upstream socket")
        assert sent * 9000 > 4 * 1024 * 1024, "dropped before the bound was reached"
        wait_until_true(lambda: "browser reads too slowly" in jupyter.log_path.read_text(), 5, "the log line")
    finally:
        sock.close()
    assert jupyter.get("livewidget/info")[0] == 200


def wait_until_true(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


@pytest.mark.asyncio
async def test_forwarded_sockets_are_bounded(jupyter: JupyterServer, registered: str, upstream: LocalServer):
    """Above ``livewidget_max_connections`` a new socket gets 503 before anything is opened upstream;
    closing one makes room again."""
    url = ws_url(jupyter, f"livewidget/{registered}/app/{upstream.key}?protocol=7")
    sockets = []
    try:
        for _ in range(MAX_SOCKETS):
            ws = await ws_open(url, auth_header())
            sockets.append(ws)
            await next_json(ws)
        with pytest.raises(HTTPClientError) as err:
            await ws_open(url, auth_header())
        assert err.value.code == 503
        sockets.pop().close()
        deadline = time.monotonic() + 10
        while True:  # the server notices the close asynchronously
            try:
                ws = await ws_open(url, auth_header())
                break
            except HTTPClientError as exc:
                assert exc.code == 503 and time.monotonic() < deadline
                await asyncio.sleep(0.1)
        sockets.append(ws)
        assert (await next_json(ws))["event"] == "pusher:connection_established"
    finally:
        for ws in sockets:
            ws.close()

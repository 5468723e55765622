"""The transport against real sockets: heartbeats, slow readers, limits, shutdown."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time

import aiohttp
import pytest

from livewidget.exceptions import ServerError
from livewidget.protocol import AppConfig
from livewidget.server import LocalServer


async def open_ws(session: aiohttp.ClientSession, server: LocalServer, key: str | None = None):
    url = f"ws://{server.host}:{server.port}/app/{key or server.key}?protocol=7"
    ws = await session.ws_connect(url, autoping=False)
    hello = await ws.receive_json(timeout=5)
    assert hello["event"] == "pusher:connection_established"
    return ws, json.loads(hello["data"])["socket_id"]


async def trigger(session: aiohttp.ClientSession, server: LocalServer, channel: str, data: str) -> None:
    sdk_args = server.app
    from livewidget.protocol.signatures import body_md5, sign_rest_query

    body = json.dumps({"name": "ev", "channel": channel, "data": data}).encode()
    path = f"/apps/{sdk_args.app_id}/events"
    params = {"auth_key": server.key, "auth_timestamp": str(int(time.time())), "auth_version": "1.0"}
    params["body_md5"] = body_md5(body)
    query = sign_rest_query("POST", path, params, server.secret)
    async with session.post(f"{server.url}{path}", params=query, data=body) as resp:
        assert resp.status == 200, await resp.text()


def n_connections(server: LocalServer) -> int:
    return server.call(lambda: sum(len(h.connections) for h in server.server.apps))


@pytest.mark.asyncio
async def test_idle_socket_is_pinged_then_closed_4201():
    """A client that never answers the server's pusher:ping is closed with 4201."""
    with LocalServer(activity_timeout=1, pong_timeout=1) as server:
        async with aiohttp.ClientSession() as session:
            ws, _ = await open_ws(session, server)
            ping = await ws.receive_json(timeout=5)
            assert ping["event"] == "pusher:ping"
            msg = await ws.receive(timeout=5)
            assert msg.type is aiohttp.WSMsgType.CLOSE
            assert msg.data == 4201


@pytest.mark.asyncio
async def test_answering_pings_keeps_the_socket():
    """A client that answers pusher:ping with pusher:pong stays connected."""
    with LocalServer(activity_timeout=1, pong_timeout=1) as server:
        async with aiohttp.ClientSession() as session:
            ws, _ = await open_ws(session, server)
            deadline = time.monotonic() + 3.5
            pings = 0
            while time.monotonic() < deadline:
                try:
                    msg = await ws.receive_json(timeout=deadline - time.monotonic())
                except TimeoutError:
                    break
                assert msg["event"] == "pusher:ping"
                pings += 1
                await ws.send_json({"event": "pusher:pong", "data": {}})
            assert pings >= 2
            assert not ws.closed


def _masked_frame(payload: bytes, *, length: int | None = None) -> bytes:
    """A client-to-server text frame (RFC 6455 §5.2); ``length`` may claim more than ``payload`` holds."""
    n = len(payload) if length is None else length
    head = bytes((0x81, 0x80 | n)) if n < 126 else struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _raw_ws(port: int, key: str, *, rcvbuf: int | None = 4096) -> socket.socket:
    """A WebSocket client socket subscribed to ``flood``; by default with a tiny receive buffer."""
    sock = socket.create_connection(("127.0.0.1", port))
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    nonce = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /app/{key}?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 101 " in head
    payload = json.dumps({"event": "pusher:subscribe", "data": {"channel": "flood"}}).encode()
    sock.sendall(_masked_frame(payload))
    return sock


@pytest.mark.asyncio
async def test_client_that_stops_reading_is_dropped_4100_others_unaffected():
    """A subscriber that stops reading is disconnected before its buffer grows without bound."""
    with LocalServer(max_send_buffer=256 * 1024) as server:
        slow = _raw_ws(server.port, server.key)
        async with aiohttp.ClientSession() as session:
            ws, _ = await open_ws(session, server)
            await ws.send_json({"event": "pusher:subscribe", "data": {"channel": "flood"}})
            assert (await ws.receive_json(timeout=5))["event"] == "pusher_internal:subscription_succeeded"
            await asyncio.sleep(0.2)
            assert n_connections(server) == 2
            data = "x" * 9000
            received = 0
            for _ in range(1000):  # 9 MB: more than the kernel buffers plus the 256 KB allowance
                await trigger(session, server, "flood", data)
                msg = await ws.receive_json(timeout=5)
                assert msg["data"] == data
                received += 1
            deadline = time.monotonic() + 5
            while n_connections(server) != 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert n_connections(server) == 1, "the slow reader is still connected"
            assert received == 1000
        slow.close()


@pytest.mark.asyncio
async def test_frame_limits():
    """A frame over max_frame_size gets pusher:error; far over it the socket is closed; others live on."""
    with LocalServer(max_frame_size=1024) as server:
        async with aiohttp.ClientSession() as session:
            ws, _ = await open_ws(session, server)
            await ws.send_str(json.dumps({"event": "pusher:ping", "data": "x" * 2000}))
            err = await ws.receive_json(timeout=5)
            assert err["event"] == "pusher:error"
            assert "over the limit of 1024" in err["data"]["message"]
            await ws.send_json({"event": "pusher:ping", "data": {}})
            assert (await ws.receive_json(timeout=5))["event"] == "pusher:pong"
            await ws.send_str("x" * 10_000)
            msg = await ws.receive(timeout=5)
            assert msg.type is aiohttp.WSMsgType.CLOSE
            assert msg.data == 4100
            other, _ = await open_ws(session, server)
            await other.send_json({"event": "pusher:ping", "data": {}})
            assert (await other.receive_json(timeout=5))["event"] == "pusher:pong"


def _read_close_code(sock: socket.socket, timeout: float) -> int:
    """Read frames until the server's close frame and return its code (RFC 6455 §5.5.1)."""
    sock.settimeout(timeout)
    buf = b""
    while True:
        chunk = sock.recv(65536)  # a reset here is the bug: the close frame was thrown away
        assert chunk, f"connection ended without a close frame after {buf[-60:]!r}"
        buf += chunk
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            start = 2 if n < 126 else 4 if n == 126 else 10
            if len(buf) < start:
                break
            if n >= 126:
                n = int.from_bytes(buf[2:start], "big")
            if len(buf) < start + n:
                break
            opcode, body, buf = buf[0] & 0x0F, buf[start : start + n], buf[start + n :]
            if opcode == 0x8:
                return int(struct.unpack("!H", body[:2])[0])


@pytest.mark.asyncio
async def test_frame_refused_mid_upload_still_gets_its_close_frame():
    """The server refuses a huge frame from its header, while the client is still sending it.

    Closing the socket with the rest of the frame unread would make the kernel answer with a reset that
    destroys the 4100 close frame before the client reads it; the server must read and discard until
    the client stops (RFC 6455 §7.1.1) so the client learns why it was closed.
    """
    with LocalServer(max_frame_size=1024) as server:
        sock = _raw_ws(server.port, server.key, rcvbuf=None)
        total = 4 * 1024 * 1024
        sock.sendall(_masked_frame(b"", length=total))
        await asyncio.sleep(0.2)  # the server has parsed the header and refused the frame by now
        chunk = b"x" * 65536
        for _ in range(total // len(chunk) // 2):  # half of it, then stop as a client that gave up would
            sock.sendall(chunk)
        assert await asyncio.to_thread(_read_close_code, sock, 5.0) == 4100
        sock.close()
        deadline = time.monotonic() + 5
        while n_connections(server) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert n_connections(server) == 0


@pytest.mark.asyncio
async def test_stop_tells_clients_to_reconnect_4200():
    """Stopping the server closes every client with 4200 (reconnect)."""
    server = LocalServer().start()
    try:
        async with aiohttp.ClientSession() as session:
            ws, _ = await open_ws(session, server)
            stopper = asyncio.get_running_loop().run_in_executor(None, server.stop)
            assert (await ws.receive_json(timeout=5))["data"]["code"] == 4200  # pusher:error first
            msg = await ws.receive(timeout=5)
            assert msg.type is aiohttp.WSMsgType.CLOSE
            assert msg.data == 4200
            await stopper
    finally:
        server.stop()


@pytest.mark.asyncio
async def test_several_apps_and_unknown_key():
    """Each configured app is reachable by its key; an unknown key is refused with 4001."""
    apps = [AppConfig("11", "first", "s1"), AppConfig("22", "second", "s2")]
    with LocalServer(apps=apps) as server:
        async with aiohttp.ClientSession() as session:
            for key in ("first", "second"):
                ws, socket_id = await open_ws(session, server, key)
                assert socket_id
            ws = await session.ws_connect(f"ws://127.0.0.1:{server.port}/app/nope")
            err = await ws.receive_json(timeout=5)
            assert err["data"]["code"] == 4001
            msg = await ws.receive(timeout=5)
            assert msg.data == 4001


@pytest.mark.asyncio
async def test_connection_quota_4004():
    """Over max_connections a new client is closed with 4004."""
    with LocalServer(max_connections=1) as server:
        async with aiohttp.ClientSession() as session:
            first, _ = await open_ws(session, server)
            ws = await session.ws_connect(f"ws://127.0.0.1:{server.port}/app/{server.key}")
            err = await ws.receive_json(timeout=5)
            assert err["data"]["code"] == 4004
            assert (await ws.receive(timeout=5)).data == 4004
            assert not first.closed


@pytest.mark.asyncio
async def test_rest_body_limit_and_health():
    """A REST body over max_request_size is 413 with a JSON error; GET / answers ok."""
    with LocalServer(max_request_size=1000) as server:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{server.url}/apps/{server.app_id}/events", data=b"x" * 5000) as resp:
                assert resp.status == 413
                assert "limit" in (await resp.json())["error"]
            async with session.get(f"{server.url}/") as resp:
                assert await resp.json() == {"ok": True}


def test_local_server_lifecycle_errors():
    """Starting twice or on a taken port raises ServerError naming the problem."""
    with LocalServer() as server:
        with pytest.raises(ServerError, match="already running"):
            server.start()
        with pytest.raises(ServerError, match="could not start"):
            LocalServer(port=server.port).start()
    with pytest.raises(ServerError, match="not running"):
        _ = LocalServer().server

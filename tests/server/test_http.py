"""The transport's HTTP/1.1 and WebSocket handling against raw sockets on 127.0.0.1.

What clients with good manners never do: pipelining, chunked bodies, garbage, slow or idle sockets,
control frames, bad frames. Every wait is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from livewidget.protocol.signatures import body_md5, sign_rest_query
from livewidget.server import LocalServer, ServerLimits, app as app_module

_open: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as s:
        yield s


def connect(server: LocalServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.settimeout(5)
    _open.append(sock)
    return sock


class Reader:
    """Reads HTTP responses (Content-Length framed) and WebSocket frames from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            assert self._more(), f"closed before a response: {self.buf!r}"
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            assert self._more()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def frame(self) -> tuple[int, bytes]:
        while True:
            if len(self.buf) >= 2:
                n = self.buf[1] & 0x7F
                start = 2 if n < 126 else 4 if n == 126 else 10
                if len(self.buf) >= start:
                    if n >= 126:
                        n = int.from_bytes(self.buf[2:start], "big")
                    if len(self.buf) >= start + n:
                        opcode, body = self.buf[0] & 0x0F, self.buf[start : start + n]
                        self.buf = self.buf[start + n :]
                        return opcode, body
            assert self._more(), "closed before a frame"

    def closed(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection within ``timeout`` (anything else is read)."""
        self.sock.settimeout(timeout)
        try:
            while self._more():
                pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        return True


def masked(opcode: int, payload: bytes, *, mask: bool = True) -> bytes:
    key = os.urandom(4) if mask else b""
    n = len(payload)
    head = bytes((0x80 | opcode, (0x80 if mask else 0) | n)) if n < 126 else b""
    assert head, "small frames only"
    return head + key + (bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if mask else payload)


def ws_connect(server: LocalServer) -> tuple[socket.socket, Reader]:
    sock = connect(server)
    nonce = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /app/{server.key}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    reader = Reader(sock)
    status, _, _ = reader.response()
    assert status == 101
    opcode, body = reader.frame()
    assert opcode == 1 and b"connection_established" in body
    return sock, reader


def signed_trigger(server: LocalServer, channel: str = "c") -> tuple[str, bytes]:
    body = json.dumps({"name": "ev", "channel": channel, "data": "hi"}).encode()
    path = f"/apps/{server.app_id}/events"
    params = {"auth_key": server.key, "auth_timestamp": str(int(time.time())), "auth_version": "1.0"}
    params["body_md5"] = body_md5(body)
    query = sign_rest_query("POST", path, params, server.secret)
    return path + "?" + "&".join(f"{k}={v}" for k, v in query.items()), body


# -------------------------------------------------------------------------------------------- HTTP


def test_keep_alive_and_pipelined_requests_answered_in_order(server: LocalServer):
    sock = connect(server)
    target, body = signed_trigger(server)
    sock.sendall(
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        + f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
        + b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n"
        + b"GET /apps/nope/channels HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    reader = Reader(sock)
    first, second, third, fourth = (reader.response() for _ in range(4))
    assert (first[0], json.loads(first[2])) == (200, {"ok": True})
    assert (second[0], json.loads(second[2])) == (200, {})
    assert third[0] == 200 and json.loads(third[2])["connections"] == 0
    assert fourth[0] == 404 and "error" in json.loads(fourth[2])
    assert first[1]["content-type"].startswith("application/json")
    assert "connection" not in first[1]
    # still open: one more request on the same connection
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert reader.response()[0] == 200
    sock.close()


def test_chunked_request_body_and_expect_continue(server: LocalServer):
    target, body = signed_trigger(server)
    sock = connect(server)
    sock.sendall(
        f"POST {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7))
        + b"0\r\n\r\n"
    )
    reader = Reader(sock)
    assert reader.response()[:1] == (200,)
    target, body = signed_trigger(server)
    sock.sendall(
        f"POST {target} HTTP/1.1\r\nHost: h\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    assert reader.response()[0] == 100
    sock.sendall(body)
    assert reader.response()[0] == 200
    sock.close()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET / HTTP/3.0\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
        (b"POST /apps/1/events HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST /apps/1/events HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"GET /app/k HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 426),
        (
            b"GET /app/k HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n",
            400,
        ),
        (
            b"POST /app/k HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            400,
        ),
    ],
)
def test_malformed_requests_get_a_json_error_and_a_close(server: LocalServer, raw: bytes, status: int):
    sock = connect(server)
    sock.sendall(raw)
    reader = Reader(sock)
    got, headers, body = reader.response()
    assert got == status
    assert json.loads(body)["error"]
    assert headers["connection"] == "close"
    if status == 426:
        assert headers["sec-websocket-version"] == "13"
    assert reader.closed()
    # the server lives on
    ws, _ = ws_connect(server)
    ws.close()


def test_connection_close_and_http_1_0(server: LocalServer):
    for raw in (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", b"GET /stats HTTP/1.0\r\n\r\n"):
        sock = connect(server)
        sock.sendall(raw)
        reader = Reader(sock)
        status, headers, _ = reader.response()
        assert status == 200 and headers["connection"] == "close"
        assert reader.closed()
        sock.close()


def test_slow_request_head_gets_408_and_idle_keep_alive_is_closed():
    with LocalServer(limits=ServerLimits(request_timeout=0.5, keepalive_timeout=0.5)) as server:
        slow = connect(server)
        slow.sendall(b"GET / HTTP/1.1\r\nHost: ")  # and nothing more (slowloris)
        idle = connect(server)
        idle.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        idle_reader = Reader(idle)
        assert idle_reader.response()[0] == 200
        ws, _ = ws_connect(server)  # WebSockets are not HTTP connections: no timeout applies
        reader = Reader(slow)
        status, _, body = reader.response()
        assert status == 408 and "within" in json.loads(body)["error"]
        assert reader.closed(5)
        assert idle_reader.closed(5)
        ws.sendall(masked(0x1, b'{"event":"pusher:ping","data":{}}'))
        assert b"pusher:pong" in Reader(ws).frame()[1]


def test_a_request_trickled_byte_by_byte_meets_an_overall_deadline():
    """Issue 14 item 8: a body trickled one byte at a time was never timed out (the timeout restarted
    with each byte); now the whole request has ``request_timeout`` from its first byte."""
    with LocalServer(limits=ServerLimits(request_timeout=1.0)) as server:
        sock = connect(server)
        t0 = time.monotonic()
        sock.sendall(b"POST /apps/1/events HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n")
        sock.settimeout(0.2)
        status = None
        while time.monotonic() - t0 < 5 and status is None:
            with contextlib.suppress(OSError):
                sock.sendall(b"x")
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            status = int(data.split(b" ")[1]) if data else -1
        assert status == 408
        assert 0.9 < time.monotonic() - t0 < 3.0


def test_blank_lines_trickled_forever_meet_the_deadline_too():
    """Issue 14 item 2: a connection sending only CRLF was never timed out."""
    with LocalServer(limits=ServerLimits(request_timeout=0.6)) as server:
        sock = connect(server)
        sock.settimeout(0.15)
        t0 = time.monotonic()
        data = b""
        while time.monotonic() - t0 < 5 and not data:
            with contextlib.suppress(OSError):
                sock.sendall(b"\r\n")
            with contextlib.suppress(TimeoutError):
                data = sock.recv(4096)
        assert data.startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - t0 < 2.5


def test_a_connection_that_never_sends_is_closed():
    """The idle-before-first-byte timeout: a silent connection costs a descriptor for a bounded time."""
    with LocalServer(limits=ServerLimits(first_byte_timeout=0.5)) as server:
        sock = connect(server)
        t0 = time.monotonic()
        assert Reader(sock).closed(5)
        assert 0.4 < time.monotonic() - t0 < 3.0


def test_pipelined_requests_whose_answers_are_not_read_stop_being_read():
    """Issue 14 item 3: pipelined GET /stats with unread answers grew the server by 245 MiB. Now the
    server stops reading (backpressure): the client soon cannot send more, and others are served."""
    with LocalServer() as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        _open.append(sock)
        sock.settimeout(1.0)
        batch = b"GET /stats HTTP/1.1\r\nHost: h\r\n\r\n" * 1000
        sent = 0
        with contextlib.suppress(TimeoutError):
            while sent < 50_000_000:
                sent += sock.send(batch)
        assert sent < 8_000_000, f"the server read {sent} bytes of requests whose answers are unread"
        queued = server.call(lambda: max(c.transport.get_write_buffer_size() for c in server.server._http))
        assert queued < 1024 * 1024
        other = connect(server)
        other.sendall(b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n")
        assert Reader(other).response()[0] == 200


def test_a_ping_flood_whose_pongs_are_not_read_is_closed():
    """Issue 14 item 5: pongs bypassed the send budget. Now they count: over it, the client is closed."""
    with LocalServer(max_send_buffer=64 * 1024) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        _open.append(sock)
        nonce = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /app/{server.key} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        sock.settimeout(0.5)
        pings = masked(0x9, b"p" * 125) * 1000
        closed = False
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10 and not closed:
            try:
                sock.sendall(pings)
            except TimeoutError:
                continue
            except OSError:
                closed = True
        assert closed
        assert server.call(lambda: server.server.stats()["incidents"].get("over_budget", 0)) >= 1


def test_empty_continuation_frames_count_toward_the_message():
    """Issue 14 item 6: a message continued by empty frames is closed 4100 after ``max_fragments``."""
    with LocalServer(limits=ServerLimits(max_fragments=1000)) as server:
        sock, reader = ws_connect(server)
        empty = bytes((0x00, 0x80)) + b"\0\0\0\0"  # masked, empty, not final
        sock.sendall(bytes((0x01, 0x81)) + b"\0\0\0\0" + b"[" + empty * 1500)
        opcode, body = reader.frame()
        while opcode != 0x8:
            opcode, body = reader.frame()
        assert struct.unpack("!H", body[:2])[0] == 4100


def test_an_error_handling_a_frame_is_answered_counted_and_logged_once(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    """An exception while handling one frame is answered with pusher:error on that connection only,
    which stays open; it is counted in /stats and logged once per interval, not once per frame."""
    from livewidget.protocol import Hub

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    bystander, bystander_reader = ws_connect(server)
    sock, reader = ws_connect(server)
    monkeypatch.setattr(Hub, "receive", broken)
    with caplog.at_level("INFO", logger="livewidget.server"):
        for _ in range(50):
            sock.sendall(masked(0x1, b'{"event":"pusher:ping","data":{}}'))
        for _ in range(50):
            opcode, body = reader.frame()
            assert opcode == 1 and json.loads(body)["event"] == "pusher:error"
        sock.sendall(masked(0x9, b"still here"))
        assert reader.frame() == (0xA, b"still here")
        bystander.sendall(masked(0x9, b"and me"))
        assert bystander_reader.frame() == (0xA, b"and me")
    assert server.call(lambda: server.server.stats()["incidents"]["frame_error"]) == 50
    lines = [r for r in caplog.records if "error handling a frame" in r.getMessage()]
    assert len(lines) == 1


def test_an_error_in_one_request_is_a_500_not_a_dead_server(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
):
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(app_module, "handle_rest", broken)
    sock = connect(server)
    sock.sendall(b"GET /apps/1/channels HTTP/1.1\r\nHost: h\r\n\r\n")
    reader = Reader(sock)
    status, _, body = reader.response()
    assert status == 500 and json.loads(body) == {"error": "Internal server error"}
    assert reader.closed()
    other = connect(server)
    other.sendall(b"GET /stats HTTP/1.1\r\nHost: h\r\n\r\n")
    status, _, body = Reader(other).response()
    assert status == 200 and json.loads(body)["incidents"]["rest_error"] == 1  # counted


# --------------------------------------------------------------------------------------- WebSocket


def test_ping_pong_and_client_close_handshake(server: LocalServer):
    sock, reader = ws_connect(server)
    sock.sendall(masked(0x9, b"are you there"))
    assert reader.frame() == (0xA, b"are you there")
    sock.sendall(masked(0x2, b"\x00binary"))
    opcode, body = reader.frame()
    assert opcode == 1 and "Binary frames" in json.loads(body)["data"]["message"]
    sock.sendall(masked(0x8, struct.pack("!H", 1000) + b"bye"))
    assert reader.frame() == (0x8, struct.pack("!H", 1000))  # echoed (RFC 6455 §5.5.1)
    assert reader.closed()  # and the server closes the TCP connection first (§7.1.1)
    deadline = time.monotonic() + 5
    while server.call(lambda: len(server.server.apps.by_key[server.key].connections)) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.02)
    assert server.call(lambda: len(server.server.apps.by_key[server.key].connections)) == 0


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (masked(0x1, b"{}", mask=False), 1002),
        (masked(0x1, b"\xff\xfe"), 1007),
        (masked(0x3, b""), 1002),
        (masked(0x8, struct.pack("!H", 1005)), 1002),
    ],
)
def test_bad_frames_are_closed_with_their_code(server: LocalServer, frame: bytes, code: int):
    sock, reader = ws_connect(server)
    sock.sendall(frame)
    opcode, body = reader.frame()
    assert opcode == 0x8 and struct.unpack("!H", body[:2])[0] == code
    sock.sendall(masked(0x8, struct.pack("!H", code)))  # what a client answers
    assert reader.closed()


def test_handshake_and_first_frame_in_one_packet_and_frames_split_byte_by_byte(server: LocalServer):
    sock = connect(server)
    nonce = base64.b64encode(os.urandom(16)).decode()
    ping = masked(0x1, b'{"event":"pusher:ping","data":{}}')
    sock.sendall(
        (
            f"GET /prefix/app/{server.key}?protocol=7&client=x&extra=1 HTTP/1.1\r\n"
            "Host: h\r\nUpgrade: WebSocket\r\n"
            f"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        + ping
    )
    reader = Reader(sock)
    assert reader.response()[0] == 101
    assert b"connection_established" in reader.frame()[1]
    assert b"pusher:pong" in reader.frame()[1]
    for i in range(len(ping)):
        sock.sendall(ping[i : i + 1])
        time.sleep(0.001)
    assert b"pusher:pong" in reader.frame()[1]

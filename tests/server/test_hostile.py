"""Hostile clients against the server in its own process, on 127.0.0.1 (issue 14).

Each case runs one attack from the issue (or a bounded random fuzz) in background threads while a
separate healthy client makes its round trip: connect a WebSocket, subscribe, trigger through the
official ``pusher`` SDK (a REST call on a new connection), receive the event. For each case:

- the healthy round trip stays under :data:`ROUND_TRIP` (the median of :data:`TRIPS` trips, so that
  one scheduling hiccup on a shared machine does not decide it);
- the server's resident memory (``VmRSS`` of its process) grows by less than :data:`RSS_BOUND`;
- the server's log stays under :data:`LOG_BOUND` bytes (rate-limited: one line per kind per interval).

Every attack is bounded in time (:data:`ATTACK_TIME`) and bytes; the fd-exhaustion case lowers
``RLIMIT_NOFILE`` of the server process to 256 and opens more idle connections than that.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pusher
import pytest

ROUND_TRIP = 0.200  # seconds, the healthy client's connect + subscribe + trigger + receive
TRIPS = 5
RSS_BOUND = 48 * 1024 * 1024  # bytes the server may grow by during one attack
LOG_BOUND = 64 * 1024  # bytes of log one attack may cause
ATTACK_TIME = 3.0  # seconds each attack runs at most
HOST = "127.0.0.1"
APP_ID, KEY, SECRET = "1", "hostilekey", "hostilesecret"

# The server, alone in its process: logs to stderr (a file here), prints its port when ready.
SERVER = """
import json, logging, resource, sys
cfg = json.loads(sys.argv[1])
if cfg.get("nofile"):
    resource.setrlimit(resource.RLIMIT_NOFILE, (cfg["nofile"], cfg["nofile"]))
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
from livewidget.server import AppConfig, PusherServer, ServerLimits
from livewidget.server.runner import run_forever
app = AppConfig(cfg["app_id"], cfg["key"], cfg["secret"], **cfg.get("app", {}))
server = PusherServer([app], host="127.0.0.1", port=0, limits=ServerLimits(**cfg.get("limits", {})))
run_forever(server, lambda srv: print(srv.port, flush=True))
"""

LIMITS = {"request_timeout": 2.0, "first_byte_timeout": 2.0, "log_interval": 10.0}


class ServerProcess:
    def __init__(self, *, nofile: int | None = None, limits: dict[str, Any] | None = None) -> None:
        self.log_path = Path(tempfile.mkstemp(prefix="lw-hostile-", suffix=".log")[1])
        cfg = {"app_id": APP_ID, "key": KEY, "secret": SECRET, "nofile": nofile, "limits": limits or LIMITS}
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, json.dumps(cfg)],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip().isdigit(), f"server did not start: {line!r} {self.log_path.read_text()}"
        self.port = int(line)

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.proc.kill()
            self.proc.wait(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.log.close()
        self.log_path.unlink()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    proc = ServerProcess()
    yield proc
    proc.close()


# ------------------------------------------------------------------------------------- the clients


def masked(opcode: int, payload: bytes, *, fin: bool = True, key: bytes | None = None) -> bytes:
    key = os.urandom(4) if key is None else key
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes((b0, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    if not any(key):
        return head + key + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def handshake(port: int, timeout: float = 5.0) -> tuple[socket.socket, bytes]:
    """A WebSocket on /app/KEY; returns it and what followed the 101 answer."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    try:
        nonce = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET /app/{KEY}?protocol=7 HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(4096)
            assert chunk, "closed during the handshake"
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
    except BaseException:
        sock.close()
        raise
    return sock, rest


def read_frames(sock: socket.socket, buf: bytes, until: Callable[[bytes], bool]) -> bytes:
    """Read server frames until one whose payload satisfies ``until``; returns what is left."""
    while True:
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            start = 2 if n < 126 else 4 if n == 126 else 10
            if len(buf) < start:
                break
            if n >= 126:
                n = int.from_bytes(buf[2:start], "big")
            if len(buf) < start + n:
                break
            payload, buf = buf[start : start + n], buf[start + n :]
            if until(payload):
                return buf
        chunk = sock.recv(65536)
        assert chunk, "closed"
        buf += chunk


def round_trip(port: int) -> float:
    """Seconds for: connect, subscribe, trigger through the pusher SDK (a new connection), receive."""
    t0 = time.perf_counter()
    sock, buf = handshake(port)
    try:
        buf = read_frames(sock, buf, lambda p: b"connection_established" in p)
        sock.sendall(masked(1, b'{"event":"pusher:subscribe","data":{"channel":"healthy"}}'))
        buf = read_frames(sock, buf, lambda p: b"subscription_succeeded" in p)
        sdk = pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET, host=HOST, port=port, ssl=False, timeout=5)
        sdk.trigger("healthy", "tick", {"n": 1})
        read_frames(sock, buf, lambda p: b'"tick"' in p)
    finally:
        sock.close()
    return time.perf_counter() - t0


def stats(port: int) -> dict[str, Any]:
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(b"GET /stats HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return dict(json.loads(data.partition(b"\r\n\r\n")[2]))


# ------------------------------------------------------------------------------------- the attacks
# Each runs until ``stop`` is set (and at most ATTACK_TIME), in its own thread, ignoring the errors a
# server that closes it causes.


def _raw(port: int, timeout: float = 2.0) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=timeout)


def chunked_one_byte_chunks(port: int, stop: threading.Event) -> None:
    """Item 1: POST with 40,000 one-byte chunks (240 KB), again and again."""
    body = b"1\r\nx\r\n" * 40_000 + b"0\r\n\r\n"
    head = b"POST /apps/1/events HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    while not stop.is_set():
        with contextlib.suppress(OSError), _raw(port) as sock:
            sock.sendall(head + body)
            sock.recv(4096)


def blank_lines(port: int, stop: threading.Event) -> None:
    """Item 2: bursts of bare CRLF before a request line (4 MiB per connection)."""
    burst = b"\r\n" * (512 * 1024)
    while not stop.is_set():
        with contextlib.suppress(OSError), _raw(port) as sock:
            for _ in range(4):
                if stop.is_set():
                    break
                sock.sendall(burst)


def pipelined_unread(port: int, stop: threading.Event) -> None:
    """Item 3: pipelined GET /stats whose answers are never read (up to 50 MB sent)."""
    batch = b"GET /stats HTTP/1.1\r\nHost: h\r\n\r\n" * 2000
    with contextlib.suppress(OSError), _raw(port, timeout=0.5) as sock:
        sent = 0
        while not stop.is_set() and sent < 50_000_000:
            try:
                sent += sock.send(batch)
            except TimeoutError:
                continue  # the server stopped reading: backpressure, as it should
        stop.wait()


def ping_flood(port: int, stop: threading.Event) -> None:
    """Item 5: pings as fast as possible, pongs never read."""
    ping = masked(9, b"x" * 125) * 500
    with contextlib.suppress(OSError):
        sock, _ = handshake(port)
        sock.settimeout(0.5)
        with sock:
            while not stop.is_set():
                try:
                    sock.sendall(ping)
                except TimeoutError:
                    continue
            stop.wait()


def empty_continuations(port: int, stop: threading.Event) -> None:
    """Item 6: a fragmented message continued by empty frames, forever (up to 126 MB)."""
    zero = masked(0, b"", fin=False, key=b"\0\0\0\0") * 20_000
    while not stop.is_set():
        with contextlib.suppress(OSError):
            sock, _ = handshake(port)
            sock.settimeout(0.5)
            with sock:
                sock.sendall(masked(1, b"[", fin=False))
                sent = 0
                while not stop.is_set() and sent < 126_000_000:
                    sock.sendall(zero)
                    sent += len(zero)


LENIENT = [
    b"POST /apps/1/events HTTP/1.1\r\nHost: h\r\nContent-Length: 3\x0b\r\n\r\nabc",
    b"POST /apps/1/events HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\x0b\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"POST /apps/1/events HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n 2\r\nab\r\n0\r\n\r\n",
    b"GET /stats HTTP/1.1\r\n\r\n",
    b"GET /stats HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
]


def lenient_requests(port: int, stop: threading.Event) -> None:
    """Item 8: what h11 refuses; each must get a 400 with a JSON body and a close."""
    while not stop.is_set():
        for raw in LENIENT:
            with _raw(port) as sock:
                sock.sendall(raw)
                data = b""
                try:
                    while chunk := sock.recv(4096):
                        data += chunk
                except TimeoutError:
                    raise AssertionError(f"not closed after {raw!r}: {data[:40]!r}") from None
                except ConnectionResetError:
                    pass
                head, _, body = data.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 400 "), (raw, head)
                assert b"Connection: close" in head and "error" in json.loads(body)


def slowloris(port: int, stop: threading.Event) -> None:
    """Item 8 and the deadline: 50 connections each trickling a request, one byte at a time."""
    socks: list[socket.socket] = []
    with contextlib.suppress(OSError):
        for _ in range(50):
            socks.append(_raw(port))
    request = b"POST /apps/1/events HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000
    i = 0
    while not stop.wait(0.05):
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.send(request[i : i + 1])
        i = (i + 1) % len(request)
    for sock in socks:
        sock.close()


def _http_corpus(rng: random.Random) -> bytes:
    valid = [
        b"GET /stats HTTP/1.1\r\nHost: h\r\n\r\n",
        b"POST /apps/1/events?auth_key=x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /apps/1/events HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        b"GET /app/" + KEY.encode() + b" HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ]
    data = bytearray(rng.choice(valid) * rng.randint(1, 3))
    for _ in range(rng.randint(0, 8)):
        op = rng.randrange(4)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            data[pos:pos] = rng.choice([b"\r\n", b"\n", b" ", b":", b"\x00", b"\x0b", b"9" * 30, b"\t"])
        elif op == 2:
            del data[pos : pos + rng.randint(1, 10)]
        else:
            data[pos:pos] = os.urandom(rng.randint(1, 64))
    return bytes(data)


def http_fuzz(port: int, stop: threading.Event) -> None:
    """Bounded random input to the HTTP layer: mutated valid requests, 400 connections at most."""
    rng = random.Random(14)
    for _ in range(400):
        if stop.is_set():
            return
        with contextlib.suppress(OSError), _raw(port, timeout=0.3) as sock:
            sock.sendall(_http_corpus(rng))
            with contextlib.suppress(TimeoutError):
                sock.recv(65536)


def _ws_corpus(rng: random.Random) -> bytes:
    frames = []
    for _ in range(rng.randint(1, 6)):
        opcode = rng.choice([0, 1, 2, 3, 8, 9, 10, 11, 15])
        size = rng.choice([0, 1, 125, 126, 127, 1000, 65535, 65536])
        payload = rng.choice([b"{", b'{"event":"pusher:ping","data":{}}', b"\xff\xfe"]) * (size // 2 + 1)
        frame = bytearray(masked(opcode, payload[:size], fin=rng.random() < 0.7))
        if rng.random() < 0.2:
            frame[0] |= rng.choice([0x10, 0x20, 0x40])
        if rng.random() < 0.1:
            frame[1] &= 0x7F  # unmasked
        if rng.random() < 0.3 and len(frame) > 2:
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        frames.append(bytes(frame))
    return b"".join(frames)


def ws_fuzz(port: int, stop: threading.Event) -> None:
    """Bounded random input to the WebSocket layer: mutated frames after a valid handshake."""
    rng = random.Random(6455)
    for _ in range(150):
        if stop.is_set():
            return
        with contextlib.suppress(OSError):
            sock, _ = handshake(port)
            sock.settimeout(0.3)
            with sock:
                sock.sendall(_ws_corpus(rng))
                with contextlib.suppress(TimeoutError):
                    sock.recv(65536)


ATTACKS: dict[str, tuple[Callable[[int, threading.Event], None], int]] = {
    # name: (attack, threads)
    "chunked_one_byte_chunks": (chunked_one_byte_chunks, 2),
    "blank_lines": (blank_lines, 2),
    "pipelined_unread": (pipelined_unread, 4),
    "ping_flood": (ping_flood, 4),
    "empty_continuations": (empty_continuations, 2),
    "lenient_requests": (lenient_requests, 1),
    "slowloris": (slowloris, 2),
    "http_fuzz": (http_fuzz, 2),
    "ws_fuzz": (ws_fuzz, 2),
}


def under_attack(server: ServerProcess, attack: Callable[[int, threading.Event], None], threads: int) -> None:
    errors: list[BaseException] = []

    def run(stop: threading.Event) -> None:
        try:
            attack(server.port, stop)
        except BaseException as exc:  # an assertion inside an attack fails the test
            errors.append(exc)

    round_trip(server.port)  # warm (imports, the SDK's first request)
    rss0, log0 = server.rss(), server.log_size()
    stop = threading.Event()
    workers = [threading.Thread(target=run, args=(stop,), daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    timer = threading.Timer(ATTACK_TIME, stop.set)
    timer.start()
    try:
        time.sleep(0.5)  # let the attack get going
        trips = [round_trip(server.port) for _ in range(TRIPS)]
        peak = server.rss()
    finally:
        stop.set()
        timer.cancel()
        for w in workers:
            w.join(10)
    assert not errors, errors
    assert server.alive()
    assert statistics.median(trips) < ROUND_TRIP, [f"{t * 1000:.0f} ms" for t in trips]
    grown = max(peak, server.rss()) - rss0
    assert grown < RSS_BOUND, f"server grew by {grown / 2**20:.1f} MiB"
    assert server.log_size() - log0 < LOG_BOUND
    assert round_trip(server.port) < 1.0  # and still serving afterwards


@pytest.mark.parametrize("name", list(ATTACKS))
def test_a_healthy_client_keeps_its_round_trip(server: ServerProcess, name: str):
    """Under each attack of issue 14 (and a fuzz of each layer) a separate client's round trip stays
    under 200 ms, the server's memory and its log stay bounded."""
    attack, threads = ATTACKS[name]
    under_attack(server, attack, threads)


def test_errors_are_counted_not_fatal(server: ServerProcess):
    """What the attacks caused is in /stats (counted), and the server still serves."""
    events = stats(server.port)["incidents"]
    assert events.get("http_refused", 0) > 0
    assert round_trip(server.port) < 1.0


def test_per_ip_cap_refuses_the_excess_with_429():
    """Connections over the per-address cap get a 429 and a close; those under it are served."""
    proc = ServerProcess(limits={**LIMITS, "max_connections_per_loopback_ip": 20})
    try:
        held = [_raw(proc.port) for _ in range(20)]
        extra = _raw(proc.port)
        data = extra.recv(4096)
        assert data.startswith(b"HTTP/1.1 429 "), data
        assert extra.recv(4096) == b""  # and closed
        for sock in held[:5]:
            sock.close()
        time.sleep(0.3)
        assert round_trip(proc.port) < 1.0  # room again (the SDK's connection and the WebSocket)
        for sock in held[5:]:
            sock.close()
        extra.close()
    finally:
        proc.close()


def test_descriptors_run_out_and_the_server_stays_responsive():
    """Item 4: with RLIMIT_NOFILE at 256, 400 idle connections (sending CRLF now and then) must not
    stop others from being served: the server sheds idle HTTP connections, backs off instead of
    spinning, and logs once per interval, not once per attempt."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft >= 1024, "the test process needs descriptors of its own"
    proc = ServerProcess(nofile=256, limits={**LIMITS, "request_timeout": 30.0, "first_byte_timeout": 30.0})
    idle: list[socket.socket] = []
    try:
        for _ in range(400):
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect((HOST, proc.port))
            idle.append(sock)
        time.sleep(0.5)
        for sock in idle:
            with contextlib.suppress(OSError):
                sock.send(b"\r\n")
        cpu0 = _cpu(proc.proc.pid)
        trips = [round_trip(proc.port) for _ in range(TRIPS)]
        assert statistics.median(trips) < ROUND_TRIP, [f"{t * 1000:.0f} ms" for t in trips]
        time.sleep(1.0)
        cpu = _cpu(proc.proc.pid) - cpu0
        assert cpu < 0.5 * (1.0 + sum(trips)), f"{cpu:.2f} s of CPU: the accept loop spins"
        events = stats(proc.port)["incidents"]
        assert events.get("out_of_fds", 0) > 0
        assert proc.log_size() < LOG_BOUND
        assert proc.log_path.read_text().count("out of file descriptors") <= 2
    finally:
        for sock in idle:
            sock.close()
        proc.close()


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

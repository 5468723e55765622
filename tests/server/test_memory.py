"""Memory per idle WebSocket: the transport keeps one small object per socket (no task, no request)."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import time
import tracemalloc

from livewidget.server import LocalServer

N = 1000
LIMIT = 5 * 1024  # bytes of Python allocations per idle connection (aiohttp's transport needed ~15 KB)

# The clients live in another process so that only the server's allocations are traced here.
CLIENTS = textwrap.dedent(
    """
    import base64, os, socket, sys, time
    port, key, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        nonce = base64.b64encode(os.urandom(16)).decode()
        s.sendall(
            f"GET /app/{key}?protocol=7 HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\n"
            f"Connection: Upgrade\\r\\nSec-WebSocket-Key: {nonce}\\r\\n"
            "Sec-WebSocket-Version: 13\\r\\n\\r\\n".encode()
        )
        socks.append(s)
    for s in socks:  # the 101 answer and pusher:connection_established
        buf = b""
        deadline = time.monotonic() + 20
        while b"connection_established" not in buf and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        assert b" 101 " in buf and b"connection_established" in buf, buf[:200]
    print("ready", flush=True)
    sys.stdin.readline()
    """
)


def test_idle_websockets_cost_under_5_kb_each():
    with LocalServer() as server:
        gc.collect()
        tracemalloc.start(1)
        try:
            before = tracemalloc.get_traced_memory()[0]
            with subprocess.Popen(
                [sys.executable, "-c", CLIENTS, str(server.port), server.key, str(N)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            ) as proc:
                try:
                    assert proc.stdout is not None
                    assert proc.stdout.readline().strip() == "ready"
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline:
                        n = server.call(lambda: sum(len(h.connections) for h in server.server.apps))
                        if n >= N:
                            break
                        time.sleep(0.05)
                    assert n == N
                    time.sleep(0.3)  # anything transient of the handshakes is gone
                    server.call(gc.collect)
                    per_conn = (tracemalloc.get_traced_memory()[0] - before) / N
                finally:
                    try:
                        proc.communicate("\n", timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.communicate(timeout=5)
        finally:
            tracemalloc.stop()
    print(f"{per_conn:,.0f} bytes of Python allocations per idle WebSocket")
    assert per_conn < LIMIT, f"{per_conn:,.0f} bytes per idle connection"

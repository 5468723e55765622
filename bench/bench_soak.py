"""Soak: the embedded server under mixed traffic, connection churn and hostile clients, for a long time.

    .venv/bin/python bench/bench_soak.py                 # 30 minutes (issue 14)
    .venv/bin/python bench/bench_soak.py --minutes 3     # what bench/RESULTS.md records

It starts ``livewidget serve`` (uvloop when installed) on 127.0.0.1 with a free port, in its own process,
and drives it from this one (asyncio + aiohttp):

* ``--subscribers`` WebSockets (default 200) over ``--channels`` channels (default 20); every second
  ``--churn`` of them (default 10) close and reconnect;
* signed REST triggers (POST /apps/ID/events) at ``--rate`` per second (default 100), round-robin over the
  channels, each carrying its send time: the publish-to-receive latency is measured at every subscriber;
* hostile clients, one wave per second, each bounded: a slowloris trickle, pipelined GET /stats whose
  answers are never read, a ping flood whose pongs are never read, a message continued by empty frames,
  random bytes, a 40,000-chunk body, and a burst of blank lines.

Every ``--every`` seconds (default 10) it prints the server's resident memory (VmRSS), the latency p50
and p99 over that interval, deliveries, connections and the server's refusal counters (GET /stats). At
the end it prints the same over the whole run and the memory growth from the end of the first interval
to the end (what "no growth" means here). Every loop is bounded in time and count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from livewidget.protocol.signatures import body_md5, sign_rest_query  # noqa: E402

HOST = "127.0.0.1"
APP_ID, KEY, SECRET = "4242", "soakkey", "soaksecret"


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def start_server(tmp: Path) -> tuple[subprocess.Popen[str], int]:
    config = tmp / "soak.json"
    config.write_text(json.dumps({"port": 0, "apps": [{"id": APP_ID, "key": KEY, "secret": SECRET}]}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "livewidget", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=(tmp / "server.err").open("w"),
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    for _ in range(50):
        line = proc.stdout.readline()
        if "listening on http://" in line:
            return proc, int(line.rsplit(":", 1)[1])
    raise SystemExit("the server did not start")


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.all_latencies: list[float] = []
        self.delivered = 0
        self.published = 0
        self.publish_errors = 0
        self.reconnects = 0
        self.attacks = 0


def signed(path: str, body: bytes) -> str:
    params = {"auth_key": KEY, "auth_timestamp": str(int(time.time())), "auth_version": "1.0"}
    params["body_md5"] = body_md5(body)
    query = sign_rest_query("POST", path, params, SECRET)
    return path + "?" + "&".join(f"{k}={v}" for k, v in query.items())


async def subscriber(
    session: aiohttp.ClientSession, port: int, channel: str, stats: Stats, stop: asyncio.Event
) -> None:
    """A WebSocket subscribed to ``channel`` until ``stop`` or until it is told to churn (cancelled)."""
    url = f"ws://{HOST}:{port}/app/{KEY}?protocol=7&client=soak&version=1"
    async with session.ws_connect(url, autoping=True, max_msg_size=1 << 20) as ws:
        await ws.send_str(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            if frame.get("event") == "tick":
                sent = json.loads(frame["data"])["t"]
                latency = time.time() - sent
                stats.latencies.append(latency)
                stats.delivered += 1
            elif frame.get("event") == "pusher:ping":
                await ws.send_str('{"event":"pusher:pong","data":{}}')
            if stop.is_set():
                break


async def subscribers(port: int, args: argparse.Namespace, stats: Stats, stop: asyncio.Event) -> None:
    rng = random.Random(1)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks: list[asyncio.Task[None]] = []

        def spawn(i: int) -> asyncio.Task[None]:
            return asyncio.create_task(subscriber(session, port, f"soak-{i % args.channels}", stats, stop))

        tasks = [spawn(i) for i in range(args.subscribers)]
        while not stop.is_set():
            await asyncio.sleep(1.0)
            for _ in range(args.churn):  # connection churn: close some, open as many
                i = rng.randrange(len(tasks))
                tasks[i].cancel()
                tasks[i] = spawn(i)
                stats.reconnects += 1
            for i, task in enumerate(tasks):  # a subscriber closed by the server comes back
                if task.done():
                    tasks[i] = spawn(i)
                    stats.reconnects += 1
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def publisher(port: int, args: argparse.Namespace, stats: Stats, stop: asyncio.Event) -> None:
    path = f"/apps/{APP_ID}/events"
    async with aiohttp.ClientSession() as session:
        n = 0
        interval = 1.0 / args.rate
        next_at = time.monotonic()
        while not stop.is_set():
            body = json.dumps(
                {
                    "name": "tick",
                    "channel": f"soak-{n % args.channels}",
                    "data": json.dumps({"t": time.time()}),
                }
            ).encode()
            try:
                async with session.post(
                    f"http://{HOST}:{port}{signed(path, body)}",
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=5),
                ) as resp:
                    await resp.read()
                    if resp.status == 200:
                        stats.published += 1
                    else:
                        stats.publish_errors += 1
            except (TimeoutError, aiohttp.ClientError):
                stats.publish_errors += 1
            n += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


# ------------------------------------------------------------------------------------- hostile


def _masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    head = bytes((b0, 0x80 | n)) if n < 126 else struct.pack("!BBH", b0, 0x80 | 126, n)
    return head + b"\0\0\0\0" + payload  # a zero mask: the payload as is


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(HOST, port), 5)


async def _ws(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await _open(port)
    writer.write(
        f"GET /app/{KEY}?protocol=7 HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return reader, writer


async def attack(kind: str, port: int, rng: random.Random) -> None:
    """One bounded hostile client (about a second)."""
    writer: asyncio.StreamWriter | None = None
    try:
        if kind == "slowloris":
            _, writer = await _open(port)
            for ch in b"POST /apps/1/events HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\n"[:20]:
                writer.write(bytes((ch,)))
                await asyncio.sleep(0.05)
        elif kind == "pipelined_unread":
            sock = socket.create_connection((HOST, port), timeout=0.5)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            with sock, contextlib.suppress(OSError):
                batch = b"GET /stats HTTP/1.1\r\nHost: h\r\n\r\n" * 1000
                for _ in range(100):
                    sock.send(batch)
        elif kind == "ping_flood":
            _, writer = await _ws(port)
            flood = _masked(9, b"p" * 125) * 200
            for _ in range(50):
                writer.write(flood)
                await asyncio.sleep(0.01)
        elif kind == "empty_continuations":
            _, writer = await _ws(port)
            writer.write(_masked(1, b"[", fin=False))
            empty = _masked(0, b"", fin=False) * 5000
            for _ in range(50):
                writer.write(empty)
                await asyncio.sleep(0.01)
        elif kind == "garbage":
            _, writer = await _open(port)
            writer.write(rng.randbytes(rng.randint(1, 20000)))
        elif kind == "chunked":
            _, writer = await _open(port)
            writer.write(
                b"POST /apps/1/events HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"1\r\nx\r\n" * 40_000
                + b"0\r\n\r\n"
            )
        elif kind == "blank_lines":
            _, writer = await _open(port)
            writer.write(b"\r\n" * (1 << 20))
        if writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.drain(), 1)
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        pass
    finally:
        if writer is not None:
            writer.transport.abort()


KINDS = [
    "slowloris",
    "pipelined_unread",
    "ping_flood",
    "empty_continuations",
    "garbage",
    "chunked",
    "blank_lines",
]


async def hostile(port: int, stats: Stats, stop: asyncio.Event) -> None:
    rng = random.Random(14)
    running: set[asyncio.Task[None]] = set()
    while not stop.is_set():
        for kind in KINDS:
            if kind == "pipelined_unread":
                task = asyncio.create_task(asyncio.to_thread(_run_blocking, attack, kind, port, rng))
            else:
                task = asyncio.create_task(attack(kind, port, rng))
            running.add(task)
            task.add_done_callback(running.discard)
            stats.attacks += 1
        await asyncio.sleep(1.0)
    await asyncio.wait_for(asyncio.gather(*running, return_exceptions=True), 10)


def _run_blocking(fn: Any, *args: Any) -> None:
    asyncio.run(fn(*args))


# ------------------------------------------------------------------------------------- report


async def server_stats(port: int) -> dict[str, Any]:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{HOST}:{port}/stats", timeout=aiohttp.ClientTimeout(total=5)) as resp,
        ):
            return dict(await resp.json())
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return {}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


async def main(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="lw-soak-"))
    proc, port = start_server(tmp)
    stats = Stats()
    stop = asyncio.Event()
    print(
        f"soak: {args.minutes:g} min, {args.subscribers} subscribers on {args.channels} channels, "
        f"churn {args.churn}/s, {args.rate} triggers/s, {len(KINDS)} hostile clients/s; "
        f"server pid {proc.pid}",
        flush=True,
    )
    print(
        f"{'t (s)':>6} {'RSS MiB':>8} {'p50 ms':>7} {'p99 ms':>7} {'deliv/s':>8} {'conns':>6}  refusals",
        flush=True,
    )
    tasks = [
        asyncio.create_task(subscribers(port, args, stats, stop)),
        asyncio.create_task(publisher(port, args, stats, stop)),
    ]
    if not args.no_hostile:
        tasks.append(asyncio.create_task(hostile(port, stats, stop)))
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    rows = []
    last_delivered = 0
    try:
        while time.monotonic() < end:
            await asyncio.sleep(min(args.every, max(0.0, end - time.monotonic())))
            if proc.poll() is not None:
                print("the server exited", flush=True)
                return 1
            window, stats.latencies = stats.latencies, []
            stats.all_latencies.extend(window)
            s = await server_stats(port)
            row = {
                "t": time.monotonic() - t0,
                "rss": rss(proc.pid),
                "p50": pct(window, 0.5),
                "p99": pct(window, 0.99),
                "delivered": (stats.delivered - last_delivered) / args.every,
                "connections": s.get("connections", -1),
                "incidents": s.get("incidents", {}),
            }
            last_delivered = stats.delivered
            rows.append(row)
            ev = ", ".join(f"{k} {v}" for k, v in sorted(row["incidents"].items()))
            print(
                f"{row['t']:6.0f} {row['rss'] / 2**20:8.1f} {row['p50']:7.1f} {row['p99']:7.1f} "
                f"{row['delivered']:8.0f} {row['connections']:6}  {ev}",
                flush=True,
            )
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 15)
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    if len(rows) >= 2:
        mib = 2**20
        first, last = rows[0], rows[-1]
        p99s = [r["p99"] for r in rows]
        lat = stats.all_latencies
        print(
            f"\nwhole run: {stats.published} published ({stats.publish_errors} failed), "
            f"{stats.delivered} delivered, {stats.reconnects} reconnects, {stats.attacks} hostile clients; "
            f"latency p50 {pct(lat, 0.5):.1f} ms, p99 {pct(lat, 0.99):.1f} ms "
            f"(intervals: median p99 {statistics.median(p99s):.1f}, worst {max(p99s):.1f}); "
            f"RSS {first['rss'] / mib:.1f} MiB after {first['t']:.0f} s -> {last['rss'] / mib:.1f} MiB "
            f"at the end ({(last['rss'] - first['rss']) / mib:+.1f} MiB), "
            f"peak {max(r['rss'] for r in rows) / mib:.1f} MiB",
            flush=True,
        )
    err = (tmp / "server.err").read_text()
    print(f"server log: {len(err.splitlines())} lines, {len(err)} bytes", flush=True)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="how long to run [30]")
    ap.add_argument("--every", type=float, default=10.0, help="seconds between report lines [10]")
    ap.add_argument("--subscribers", type=int, default=200, help="WebSocket subscribers [200]")
    ap.add_argument("--channels", type=int, default=20, help="channels they spread over [20]")
    ap.add_argument("--churn", type=int, default=10, help="subscribers replaced per second [10]")
    ap.add_argument("--rate", type=float, default=100.0, help="REST triggers per second [100]")
    ap.add_argument("--no-hostile", action="store_true", help="no hostile clients (a baseline)")
    sys.exit(asyncio.run(main(ap.parse_args())))

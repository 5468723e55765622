"""With a clustered adapter the transport awaits it, one call at a time per connection, in order.

A fake adapter whose calls take different times stands in for Redis: later calls that would finish first
must still be answered after the earlier ones (pipelined REST) and be handed over in order (frames).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from collections.abc import Sequence
from typing import Any

import pytest

from livewidget.protocol import AppConfig, Apps, Connection, Hub, RestResponse
from livewidget.server import PusherServer
from livewidget.server.adapters import Adapter, Runner


class SlowCluster(Adapter):
    clustered = True

    def __init__(self) -> None:
        self.run: Runner | None = None
        self.frames: list[str] = []
        self.frames_when_closed: list[str] | None = None

    async def start(self, apps: Apps, run: Runner) -> None:
        self.run = run

    async def stop(self) -> None:
        self.run = None

    async def receive(self, hub: Hub, conn: Connection, text: str | bytes, now: float) -> None:
        assert isinstance(text, str) and self.run is not None
        n = json.loads(text)["data"]["n"]
        await asyncio.sleep(0.05 if n % 2 == 0 else 0.0)  # even frames are slow
        self.frames.append(text)
        self.run(hub, hub.receive(conn, text, now))

    def closed(self, hub: Hub, conn: Connection, now: float) -> None:
        self.frames_when_closed = list(self.frames)
        assert self.run is not None
        self.run(hub, hub.close(conn, now))

    async def rest(
        self,
        apps: Apps,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        body: bytes,
        now: float,
        raw_path: str | None = None,
    ) -> RestResponse:
        await asyncio.sleep(float(dict(query)["wait"]))
        return RestResponse(200, {"path": path})


async def read_response(reader: asyncio.StreamReader) -> tuple[int, Any]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 5)
    return int(lines[0].split()[1]), json.loads(body) if body else None


def masked_text(payload: bytes) -> bytes:
    key = os.urandom(4)
    assert len(payload) < 126
    return bytes((0x81, 0x80 | len(payload))) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await asyncio.wait_for(reader.readexactly(2), 5)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    return b0 & 0x0F, await asyncio.wait_for(reader.readexactly(n), 5)


@pytest.mark.asyncio
async def test_pipelined_rest_calls_answered_in_order_and_frames_handed_over_in_order():
    adapter = SlowCluster()
    app = AppConfig("1", "key", "secret")
    server = PusherServer([app], host="127.0.0.1", port=0, adapter=adapter)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        waits = [0.2, 0.0, 0.1, 0.0]
        requests = (
            b"GET /r%d?wait=%s HTTP/1.1\r\nHost: h\r\n\r\n" % (i, str(w).encode())
            for i, w in enumerate(waits)
        )
        writer.write(b"".join(requests))
        answers = [await read_response(reader) for _ in waits]
        assert answers == [(200, {"path": f"/r{i}"}) for i in range(len(waits))]
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        nonce = base64.b64encode(os.urandom(16))
        writer.write(
            b"GET /app/key HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + nonce + b"\r\n\r\n"
        )
        assert (await read_response(reader))[0] == 101
        assert b"connection_established" in (await read_frame(reader))[1]
        frames = [json.dumps({"event": "pusher:ping", "data": {"n": n}}) for n in range(6)]
        writer.write(b"".join(masked_text(f.encode()) for f in frames))
        for _ in frames:
            assert b"pusher:pong" in (await read_frame(reader))[1]
        assert adapter.frames == frames
        # frames still queued when the client goes are handed over before the hub hears it is gone
        writer.write(b"".join(masked_text(f.encode()) for f in frames[:2]))
        writer.write(b"\x88\x82" + b"\x00" * 4 + struct.pack("!H", 1000))
        await writer.drain()
        for _ in range(100):
            if adapter.frames_when_closed is not None:
                break
            await asyncio.sleep(0.02)
        assert adapter.frames_when_closed == frames + frames[:2]
        writer.close()
    finally:
        await server.stop(grace=1.0)

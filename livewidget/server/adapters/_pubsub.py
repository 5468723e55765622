"""A minimal Redis pub/sub subscriber on asyncio streams (RESP2).

The adapter needs what a general client hides: to know the moment its subscription is lost (so it can
report the gap and resynchronise) and a ``PING`` whose ``pong`` arrives in order with the messages
(a barrier: every message published before it has been received). So this reads the subscription
connection itself; commands go through redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

__all__ = ["RespError", "Subscriber", "parse_url"]


class RespError(Exception):
    """Redis answered ``-ERR ...`` (or something that is not RESP)."""


def parse_url(url: str) -> dict[str, object]:
    """``redis://[[user]:password@]host[:port][/db]`` or ``rediss://...`` -> connection settings."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"Redis URL must start with redis:// or rediss://, got {url!r}")
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 6379,
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "ssl": parts.scheme == "rediss",
    }


def _command(*args: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


PING = _command("PING")


class Subscriber:
    """One subscription connection. :meth:`connect`, then :meth:`read` messages until it raises."""

    def __init__(self, url: str, channels: Sequence[str], *, connect_timeout: float = 2.0) -> None:
        self.settings = parse_url(url)
        self.channels = list(channels)
        self.connect_timeout = connect_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        """Connect, authenticate and subscribe; raises OSError, TimeoutError or RespError."""
        s = self.settings
        context = ssl.create_default_context() if s["ssl"] else None
        self._reader, writer = await asyncio.wait_for(
            asyncio.open_connection(str(s["host"]), int(str(s["port"])), ssl=context),
            self.connect_timeout,
        )
        self._writer = writer
        if s["password"] is not None:
            auth = [str(s["username"]), str(s["password"])] if s["username"] else [str(s["password"])]
            writer.write(_command("AUTH", *auth))
            await asyncio.wait_for(self._read(), self.connect_timeout)
        writer.write(_command("SUBSCRIBE", *self.channels))
        for _ in self.channels:
            reply = await asyncio.wait_for(self._read(), self.connect_timeout)
            if not isinstance(reply, list) or reply[0] != b"subscribe":
                raise RespError(f"unexpected answer to SUBSCRIBE: {reply!r}")

    def ping(self) -> bool:
        """Send a PING; its ``pong`` comes back in order with the messages. False when not connected."""
        if self._writer is None or self._writer.is_closing():
            return False
        self._writer.write(PING)
        return True

    async def read(self) -> tuple[bytes, bytes] | None:
        """The next message as ``(channel, data)``, or None for a ``pong``."""
        while True:
            reply = await self._read()
            if isinstance(reply, list):
                if reply[0] == b"message":
                    return reply[1], reply[2]
                if reply[0] == b"pong":
                    return None
            # anything else (subscribe confirmations) is skipped

    async def _read(self) -> object:
        assert self._reader is not None
        line = await self._reader.readuntil(b"\r\n")
        kind, rest = line[:1], line[1:-2]
        if kind == b"*":
            return [await self._read() for _ in range(int(rest))]
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            return (await self._reader.readexactly(n + 2))[:-2]
        if kind == b":":
            return int(rest)
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RespError(rest.decode(errors="replace"))
        raise RespError(f"not RESP: {line[:40]!r}")

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

"""HTTP/1.1 and WebSocket on the wire, sans-I/O: bytes in, requests, messages and bytes out.

Nothing here touches a socket, a clock or an event loop (the model is the sans-I/O core of the
``websockets`` library); :mod:`.app` feeds what a socket received and writes what comes back. Only what
the server needs is implemented:

- :class:`RequestParser`: HTTP/1.1 requests (RFC 9112), incrementally, with limits on the head and the
  body, ``Content-Length`` and ``chunked`` bodies, keep-alive and pipelining;
- :func:`response`: a JSON response; :func:`handshake`: the WebSocket opening handshake (RFC 6455 §4.2);
- :class:`FrameParser`: client-to-server WebSocket frames (RFC 6455 §5), with the close-code and
  UTF-8 checks of §7.4 and §8.1 and a size cap; :func:`text_frame`, :func:`close_frame` and friends for
  server-to-client frames (unmasked, §5.1).

The parsers keep as little as possible between calls (an idle WebSocket costs one small object):
per-connection memory is what decides how many idle clients one process can hold.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from typing import Any
from urllib.parse import unquote, unquote_plus

__all__ = [
    "FrameParser",
    "HttpError",
    "Request",
    "RequestParser",
    "WsClose",
    "WsFail",
    "WsMessage",
    "WsPing",
    "close_frame",
    "handshake",
    "pong_frame",
    "response",
    "text_frame",
]

MAX_HEAD = 16 * 1024  # request line + headers; Soketi/uWebSockets and nginx use 4-16 KB
_MAX_CHUNK_LINE = 1024  # a chunk-size line with its extensions (RFC 9112 §7.1.1)
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
# RFC 9110 §5.6.2: token = 1*tchar (methods and field names)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f]")  # no controls or spaces in a request target (§3.2)
_BAD_VALUE = re.compile(r"[\x00\r\n]")

REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    426: "Upgrade Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


# ---------------------------------------------------------------------------------------------- HTTP


class HttpError(Exception):
    """A request that cannot be served: answer ``status`` with ``{"error": message}`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Request:
    """One parsed request. ``headers`` has lower-case names; repeated fields are joined with ``", "``."""

    __slots__ = ("body", "headers", "keep_alive", "method", "raw_path", "raw_query", "version")

    def __init__(
        self, method: str, raw_path: str, raw_query: str, version: str, headers: dict[str, str]
    ) -> None:
        self.method = method
        self.raw_path = raw_path  # as sent, without the query: what REST signatures cover
        self.raw_query = raw_query
        self.version = version  # "1.1" or "1.0"
        self.headers = headers
        self.body = b""
        self.keep_alive = _keep_alive(version, headers.get("connection", ""))

    @property
    def path(self) -> str:
        """The path, percent-decoded."""
        return unquote(self.raw_path)

    def query(self) -> list[tuple[str, str]]:
        """The query's parameters, decoded, in order (``+`` is a space, as in a form); like
        ``urllib.parse.parse_qsl(keep_blank_values=True)``, without its cost when nothing is escaped."""
        out = []
        for part in self.raw_query.split("&"):
            if not part:
                continue
            key, _, value = part.partition("=")
            if "%" in part or "+" in part:
                key, value = unquote_plus(key), unquote_plus(value)
            out.append((key, value))
        return out

    def query_get(self, name: str) -> str | None:
        """The first value of the query parameter ``name``, or None."""
        for key, value in self.query():
            if key == name:
                return value
        return None

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.raw_path}>"


def _keep_alive(version: str, connection: str) -> bool:
    # RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive".
    tokens = {t.strip().lower() for t in connection.split(",")} if connection else set()
    if version == "1.1":
        return "close" not in tokens
    return "keep-alive" in tokens and "close" not in tokens


# Parser states
_IDLE, _HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _BROKEN = range(8)


class RequestParser:
    """Incremental HTTP/1.1 request parser: :meth:`feed` bytes, then take requests with :meth:`next`.

    Pipelined requests come out one at a time, in order (RFC 9112 §9.3.2); after an upgrade request the
    bytes that followed it belong to the new protocol (:meth:`take_rest`). Limits: the request line and
    headers together ``max_head`` bytes (else 431), the body ``max_body`` bytes (else 413).
    """

    __slots__ = (
        "_buf",
        "_chunked_body",
        "_continue",
        "_remaining",
        "_req",
        "_scanned",
        "_state",
        "max_body",
        "max_head",
    )

    def __init__(self, max_body: int, max_head: int = MAX_HEAD) -> None:
        self.max_body = max_body
        self.max_head = max_head
        self._buf = b""
        self._state = _IDLE
        self._req: Request | None = None
        self._remaining = 0
        self._chunked_body: list[bytes] = []
        self._continue = False
        self._scanned = 0  # bytes of an incomplete head already searched for its end (no rescans)

    @property
    def in_head(self) -> bool:
        """Part of a request head has arrived, not all of it (what a slowloris client keeps doing)."""
        return self._state == _IDLE and bool(self._buf)

    @property
    def in_body(self) -> bool:
        """A request's head has arrived, its body not yet."""
        return _LENGTH <= self._state <= _TRAILERS

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf = self._buf + data if self._buf else data

    def take_rest(self) -> bytes:
        """The bytes after the last request (after an upgrade: the new protocol's)."""
        rest, self._buf = self._buf, b""
        return rest

    def expects_continue(self) -> bool:
        """True once when a request's head asked for ``100 Continue`` before sending its body (§10.1.1)."""
        asked, self._continue = self._continue, False
        return asked

    def next(self) -> Request | None:
        """The next complete request, or None until more bytes arrive. Raises :class:`HttpError`."""
        if self._state == _BROKEN:
            return None
        try:
            return self._next()
        except HttpError:
            self._state = _BROKEN  # the framing is lost: nothing after this can be trusted
            self._buf = b""
            raise

    def _next(self) -> Request | None:
        while True:
            state = self._state
            buf = self._buf
            if state == _IDLE:
                # RFC 9112 §2.2: ignore at least one empty line before a request line.
                while buf.startswith(b"\r\n"):
                    buf = self._buf = buf[2:]
                end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3), self.max_head + 4)
                if end < 0:
                    if len(buf) > self.max_head:
                        raise HttpError(431, f"Request head over the limit of {self.max_head} bytes")
                    self._scanned = len(buf)
                    return None
                self._scanned = 0
                self._buf = buf[end + 4 :]
                req = self._req = self._parse_head(buf[:end])
                if not self._body_framing(req):
                    self._req = None
                    return req
            elif state == _LENGTH:
                if len(buf) < self._remaining:
                    return None
                req = self._done()
                req.body, self._buf = buf[: self._remaining], buf[self._remaining :]
                return req
            elif state == _CHUNK_SIZE:
                # RFC 9112 §7.1: chunk-size [; ext] CRLF, chunk-data CRLF, ..., last-chunk, trailers CRLF
                end = buf.find(b"\r\n", 0, _MAX_CHUNK_LINE)
                if end < 0:
                    if len(buf) >= _MAX_CHUNK_LINE:
                        raise HttpError(400, "Chunk size line too long")
                    return None
                size_text = buf[:end].split(b";", 1)[0].strip()
                if not size_text or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
                    raise HttpError(400, "Invalid chunk size")
                size = int(size_text, 16)
                self._buf = buf[end + 2 :]
                if size == 0:
                    self._state = _TRAILERS
                    continue
                if sum(map(len, self._chunked_body)) + size > self.max_body:
                    raise HttpError(413, f"Request body over the limit of {self.max_body} bytes")
                self._remaining = size
                self._state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                if not buf:
                    return None
                piece = buf[: self._remaining]
                self._chunked_body.append(piece)
                self._remaining -= len(piece)
                self._buf = buf[len(piece) :]
                if self._remaining == 0:
                    self._state = _CHUNK_END
            elif state == _CHUNK_END:
                if len(buf) < 2:
                    return None
                if buf[:2] != b"\r\n":
                    raise HttpError(400, "Chunk data not followed by CRLF")
                self._buf = buf[2:]
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                # Trailer fields are read and dropped (RFC 9112 §7.1.2); bounded like a head.
                if buf.startswith(b"\r\n"):
                    self._buf = buf[2:]
                else:
                    end = buf.find(b"\r\n\r\n", 0, self.max_head + 4)
                    if end < 0:
                        if len(buf) > self.max_head:
                            raise HttpError(431, "Trailer section too large")
                        return None
                    self._buf = buf[end + 4 :]
                req = self._done()
                req.body = b"".join(self._chunked_body)
                self._chunked_body = []
                return req
            else:  # pragma: no cover - _BROKEN is handled in next()
                return None

    def _done(self) -> Request:
        req = self._req
        assert req is not None
        self._req = None
        self._state = _IDLE
        return req

    def _parse_head(self, head: bytes) -> Request:
        try:
            text = head.decode("latin-1")  # RFC 9112 §2.2: octets; field values are opaque
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
            raise HttpError(400, "Invalid request head") from None
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise HttpError(400, "Invalid request line")
        method, target, version = parts
        if _TOKEN.fullmatch(method) is None:
            raise HttpError(400, "Invalid method")
        if not version.startswith("HTTP/") or len(version) != 8 or version[6] != ".":
            raise HttpError(400, "Invalid HTTP version")
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise HttpError(505, f"{version} is not supported; use HTTP/1.1")
        if target.startswith(("http://", "https://")):
            # absolute-form (RFC 9112 §3.2.2): the server only needs the path
            slash = target.find("/", target.index("//") + 2)
            target = target[slash:] if slash >= 0 else "/"
        if not target.startswith("/") or _BAD_TARGET.search(target) is not None:
            raise HttpError(400, "Invalid request target")
        raw_path, _, raw_query = target.partition("?")
        raw_path = raw_path.partition("#")[0]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or _TOKEN.fullmatch(name) is None:
                # includes obsolete line folding (a line starting with whitespace), RFC 9112 §5.2
                raise HttpError(400, f"Invalid header line {line[:40]!r}")
            value = value.strip(" \t")
            if _BAD_VALUE.search(value) is not None:
                raise HttpError(400, "Invalid header value")
            key = name.lower()
            old = headers.get(key)
            headers[key] = value if old is None else f"{old}, {value}"
        return Request(method, raw_path, raw_query, version[5:], headers)

    def _body_framing(self, req: Request) -> bool:
        """Set up reading ``req``'s body (RFC 9112 §6.3); False when it has none."""
        te = req.headers.get("transfer-encoding")
        cl = req.headers.get("content-length")
        if te is not None:
            if cl is not None:
                # §6.3 item 3: both present is how requests are smuggled past proxies; refuse it.
                raise HttpError(400, "Both Transfer-Encoding and Content-Length")
            if req.version != "1.1" or te.strip().lower() != "chunked":
                raise HttpError(501, f"Transfer-Encoding {te!r} is not supported; use chunked")
            self._state = _CHUNK_SIZE
            self._chunked_body = []
        elif cl is not None:
            values = {v.strip() for v in cl.split(",")}
            if len(values) != 1:
                raise HttpError(400, "Conflicting Content-Length values")
            value = values.pop()
            if not value.isdigit() or not value.isascii():
                raise HttpError(400, "Invalid Content-Length")
            length = int(value)
            if length > self.max_body:
                raise HttpError(413, f"Request body over the limit of {self.max_body} bytes")
            if length == 0:
                return False
            self._state = _LENGTH
            self._remaining = length
        else:
            return False  # §6.3 item 7: a request without either has no body
        if req.headers.get("expect", "").lower() == "100-continue":
            self._continue = True
        return True


def response(status: int, body: Any, *, keep_alive: bool = True, head: bool = False) -> bytes:
    """A complete HTTP/1.1 response with a JSON ``body`` (``head``: the headers only, RFC 9110 §9.3.2)."""
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return response_bytes(status, payload, keep_alive=keep_alive, head=head)


def response_bytes(status: int, payload: bytes, *, keep_alive: bool = True, head: bool = False) -> bytes:
    """A complete HTTP/1.1 response with an already encoded JSON body."""
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n"
            % (status, REASONS.get(status, "Unknown").encode(), len(payload)),
            b"\r\n" if keep_alive else b"Connection: close\r\n\r\n",
            b"" if head else payload,
        )
    )


def handshake(req: Request) -> bytes:
    """The ``101 Switching Protocols`` answer to a WebSocket opening handshake (RFC 6455 §4.2.2).

    Raises :class:`HttpError` when ``req`` is not a valid handshake: 426 with the supported version for
    a wrong ``Sec-WebSocket-Version`` (§4.4), else 400. No extension (permessage-deflate) and no
    subprotocol is accepted: frames are written pre-encoded to many sockets at once.
    """
    h = req.headers
    if req.method != "GET":
        raise HttpError(400, "A WebSocket handshake must be a GET request")
    if req.version != "1.1":
        raise HttpError(400, "A WebSocket handshake needs HTTP/1.1")
    if "upgrade" not in {t.strip().lower() for t in h.get("connection", "").split(",")}:
        raise HttpError(400, "A WebSocket handshake needs 'Connection: Upgrade'")
    if h.get("sec-websocket-version", "").strip() != "13":
        raise HttpError(426, "Unsupported Sec-WebSocket-Version; this server speaks 13")
    key = h.get("sec-websocket-key", "").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        valid = False
    if not valid:
        raise HttpError(400, "Sec-WebSocket-Key must be 16 random bytes in base64")
    accept = base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


def upgrade_required(message: str) -> bytes:
    """426 naming the version this server speaks (RFC 6455 §4.4), connection closed."""
    payload = json.dumps({"error": message}).encode()
    return (
        b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"
        b"Content-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % len(payload)
    ) + payload


# ----------------------------------------------------------------------------------------- WebSocket

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def text_frame(payload: bytes) -> bytes:
    """An unmasked, uncompressed server-to-client text frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def close_frame(code: int | None, reason: str = "") -> bytes:
    """A server close frame (§5.5.1); the reason is cut to fit a control frame's 125 bytes, on a
    character boundary so that it stays valid UTF-8."""
    if code is None:
        return b"\x88\x00"
    data = reason.encode()[:123].decode("utf-8", "ignore").encode()
    payload = struct.pack("!H", code) + data
    return bytes((0x88, len(payload))) + payload


def pong_frame(payload: bytes) -> bytes:
    """A pong answering a ping with the same application data (§5.5.3)."""
    return bytes((0x8A, len(payload))) + payload


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` repeated (§5.3), as one big-integer operation."""
    n = len(payload)
    if not n:
        return payload
    key = mask * (n // 4 + 1)
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key[:n], "little")).to_bytes(n, "little")


class WsMessage:
    """A complete data message: ``str`` for text, ``bytes`` for binary."""

    __slots__ = ("data", "size")

    def __init__(self, data: str | bytes, size: int) -> None:
        self.data = data
        self.size = size  # bytes on the wire (the payload's length)


class WsPing:
    """A ping: answer with :func:`pong_frame` of ``payload``."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class WsClose:
    """The client's close frame; ``code`` None when it carried none (§7.1.5: 1005)."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int | None, reason: str) -> None:
        self.code = code
        self.reason = reason


class WsFail:
    """The client broke the protocol or a limit: close with ``code`` (§7.1.7, §7.4.1)."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


WsEvent = WsMessage | WsPing | WsClose | WsFail

# Close codes a peer may send (§7.4.1, §7.4.2 and the IANA registry): 1000-1003, 1007-1014, 3000-4999.
_VALID_CLOSE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))


class FrameParser:
    """Client-to-server WebSocket frames (RFC 6455 §5) in, :data:`WsEvent` objects out.

    A message over ``max_size`` (the whole message, fragments included) is refused with
    ``WsFail(too_big_code)`` as soon as its header says so; the rest of its payload is then dropped as it
    arrives, so that frames after it (the client's close) are still read. After any other failure the
    input can no longer be trusted and everything after it is dropped.
    """

    __slots__ = ("_buf", "_frag_op", "_frags", "_frags_size", "_skip", "failed", "max_size", "too_big_code")

    def __init__(self, max_size: int, too_big_code: int = 1009) -> None:
        self.max_size = max_size
        self.too_big_code = too_big_code
        self._buf = b""
        self._frags: list[bytes] | None = None  # a fragmented message's frames so far (§5.4)
        self._frag_op = 0
        self._frags_size = 0
        self._skip = 0  # payload bytes of a refused frame still to drop
        self.failed = False

    def feed(self, data: bytes) -> list[WsEvent]:
        """The events in ``data`` (plus what was left of earlier input), in order."""
        if self.failed:
            return []
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return []
            data = data[self._skip :]
            self._skip = 0
        buf = self._buf + data if self._buf else data
        events: list[WsEvent] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            n = b1 & 0x7F
            start = pos + 2
            if n == 126:
                if end - start < 2:
                    break
                n = (buf[start] << 8) | buf[start + 1]
                start += 2
            elif n == 127:
                if end - start < 8:
                    break
                n = int.from_bytes(buf[start : start + 8], "big")
                start += 8
                if n >> 63:
                    return self._fail(events, 1002, "Frame length with the most significant bit set")
            fin = b0 & 0x80
            opcode = b0 & 0x0F
            if b0 & 0x70:
                # §5.2: no extension was negotiated, so the reserved bits must be 0.
                return self._fail(events, 1002, "Reserved bits set")
            if not b1 & 0x80:
                return self._fail(events, 1002, "Client frames must be masked")  # §5.1
            if opcode >= OP_CLOSE:
                if opcode > OP_PONG:
                    return self._fail(events, 1002, f"Reserved opcode {opcode}")
                if not fin or n > 125:
                    return self._fail(events, 1002, "Control frames must be whole and at most 125 bytes")
            elif opcode > OP_BINARY:
                return self._fail(events, 1002, f"Reserved opcode {opcode}")
            elif opcode == OP_CONT:
                if self._frags is None:
                    return self._fail(events, 1002, "Continuation frame without a message to continue")
            elif self._frags is not None:
                return self._fail(events, 1002, "New message before the fragmented one ended")
            if opcode < OP_CLOSE and self._frags_size + n > self.max_size:
                # Refuse from the header, before the payload arrives; drop it as it does.
                size = self._frags_size + n
                self._frags = None
                self._frags_size = 0
                events.append(WsFail(self.too_big_code, f"Message of {size} bytes over the limit"))
                start += 4
                available = end - start
                if available >= n:
                    pos = start + n
                    continue
                self._skip = n - available
                self._buf = b""
                return events
            mask_end = start + 4
            if end - mask_end < n:
                break
            payload = unmask(buf[mask_end : mask_end + n], buf[start:mask_end])
            pos = mask_end + n
            if opcode >= OP_CLOSE:
                if opcode == OP_PING:
                    events.append(WsPing(payload))
                elif opcode == OP_CLOSE:
                    event = self._close(payload)
                    events.append(event)
                    if type(event) is WsFail:
                        self.failed = True
                        self._buf = b""
                        return events
                # pong: unsolicited pongs are allowed and ignored (§5.5.3)
                continue
            if opcode != OP_CONT and fin:
                message = self._message(opcode, payload)
                events.append(message)
                if type(message) is WsFail:
                    return self._stop(events)
                continue
            if opcode != OP_CONT:
                self._frags = []
                self._frag_op = opcode
            assert self._frags is not None
            self._frags.append(payload)
            self._frags_size += n
            if fin:
                whole = b"".join(self._frags)
                self._frags = None
                self._frags_size = 0
                message = self._message(self._frag_op, whole)
                events.append(message)
                if type(message) is WsFail:
                    return self._stop(events)
        self._buf = buf[pos:] if pos < end else b""
        return events

    @staticmethod
    def _message(opcode: int, payload: bytes) -> WsMessage | WsFail:
        if opcode == OP_TEXT:
            try:
                return WsMessage(payload.decode(), len(payload))
            except UnicodeDecodeError:
                return WsFail(1007, "Text message is not valid UTF-8")  # §8.1
        return WsMessage(payload, len(payload))

    @staticmethod
    def _close(payload: bytes) -> WsClose | WsFail:
        if not payload:
            return WsClose(None, "")
        if len(payload) == 1:
            return WsFail(1002, "Close frame with a 1-byte payload")  # §5.5.1: a code is 2 bytes
        code = (payload[0] << 8) | payload[1]
        if code not in _VALID_CLOSE and not 3000 <= code <= 4999:
            return WsFail(1002, f"Invalid close code {code}")  # §7.4.1
        try:
            reason = payload[2:].decode()
        except UnicodeDecodeError:
            return WsFail(1007, "Close reason is not valid UTF-8")
        return WsClose(code, reason)

    def _fail(self, events: list[WsEvent], code: int, reason: str) -> list[WsEvent]:
        events.append(WsFail(code, reason))
        return self._stop(events)

    def _stop(self, events: list[WsEvent]) -> list[WsEvent]:
        self.failed = True
        self._buf = b""
        self._frags = None
        return events

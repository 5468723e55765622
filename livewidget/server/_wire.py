"""HTTP/1.1 and WebSocket on the wire, sans-I/O: bytes in, requests, messages and bytes out.

Nothing here touches a socket, a clock or an event loop (the model is the sans-I/O core of the
``websockets`` library); :mod:`.app` feeds what a socket received and writes what comes back. Only what
the server needs is implemented:

- :class:`RequestParser`: HTTP/1.1 requests (RFC 9112) parsed by llhttp through :mod:`httptools`,
  incrementally, with limits on the head and the body, keep-alive and pipelining;
- :func:`response`: a JSON response; :func:`handshake`: the WebSocket opening handshake (RFC 6455 §4.2);
- :class:`FrameParser`: client-to-server WebSocket frames (RFC 6455 §5), with the close-code and
  UTF-8 checks of §7.4 and §8.1 and a size cap; :func:`text_frame`, :func:`close_frame` and friends for
  server-to-client frames (unmasked, §5.1).

The parsers keep as little as possible between calls (an idle WebSocket costs one small object):
per-connection memory is what decides how many idle clients one process can hold.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import json
import re
import struct
from typing import Any
from urllib.parse import unquote, unquote_plus

import httptools

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
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f]")  # no controls or spaces in a request target (§3.2)

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

    __slots__ = ("body", "headers", "keep_alive", "method", "raw_path", "raw_query", "upgrade", "version")

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
        self.upgrade = False  # llhttp saw Upgrade with Connection: upgrade (or CONNECT)

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


class RequestParser:
    """Incremental HTTP/1.1 request parser over llhttp (:mod:`httptools`): :meth:`feed` bytes, then take
    requests with :meth:`next`.

    llhttp (Node's parser: generated from a state machine, fuzzed, strict by default) does the framing
    (RFC 9112): request line, field syntax, ``Content-Length``, ``chunked`` and trailers. It answers bad
    ``Content-Length`` or ``Transfer-Encoding`` values, bad chunk sizes, obsolete line folding, bare LF
    and the like with an error; this class adds what it leaves to the application: missing or repeated
    ``Host`` (RFC 9112 §3.2), versions other than 1.0 and 1.1, and the limits.

    Pipelined requests come out one at a time, in order (RFC 9112 §9.3.2). Input is handed to llhttp in
    slices, and only while no parsed request is waiting for :meth:`next`: a client that pipelines
    thousands of requests costs the bytes it sent, not thousands of parsed requests, and the caller
    applies backpressure simply by not calling :meth:`next` (and pausing reading when :attr:`buffered`
    grows). Every byte is looked at a bounded number of times: no quadratic case (issue 14, items 1-2).

    After an upgrade request the bytes that followed it belong to the new protocol (:meth:`take_rest`).
    Limits: the request head ``max_head`` bytes (else 431; leading empty lines count), the body
    ``max_body`` bytes (else 413).
    """

    __slots__ = (
        "_body",
        "_body_size",
        "_broken",
        "_buf",
        "_continue",
        "_error",
        "_head_bytes",
        "_head_done",
        "_head_size",
        "_hosts",
        "_in_message",
        "_llhttp",
        "_pos",
        "_ready",
        "_req",
        "_started",
        "_target",
        "max_body",
        "max_head",
    )

    _SLICE = 4096  # bytes handed to llhttp at a time while no body is being read
    _BODY_SLICE = 65536

    def __init__(self, max_body: int, max_head: int = MAX_HEAD) -> None:
        self.max_body = max_body
        self.max_head = max_head
        self._llhttp: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._buf = b""  # received, not yet handed to llhttp (from _pos on)
        self._pos = 0
        self._ready: list[Request] = []  # parsed, not yet taken by next()
        self._req: Request | None = None
        self._target: list[bytes] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_bytes = 0  # bytes handed to llhttp since the last head ended (an upper bound)
        self._hosts = 0
        self._head_size = 0  # the current head's target and fields
        self._in_message = False
        self._head_done = False
        self._started = False  # bytes arrived since the last complete request (blank lines count)
        self._continue = False
        self._error: HttpError | None = None
        self._broken = False

    @property
    def buffered(self) -> int:
        """Bytes received and not yet parsed (the caller pauses reading when this grows)."""
        return len(self._buf) - self._pos

    @property
    def in_head(self) -> bool:
        """Bytes of a request have arrived, not its whole head (what a slowloris client keeps doing)."""
        return (self._started or self.buffered > 0) and not self.in_body

    @property
    def in_body(self) -> bool:
        """A request's head has arrived, its body not yet."""
        return self._in_message and self._head_done

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        if not data:
            return
        if not self._in_message:
            self._started = True
        if self._pos >= len(self._buf):
            self._buf, self._pos = data, 0
        else:
            self._buf = self._buf[self._pos :] + data
            self._pos = 0

    def take_rest(self) -> bytes:
        """The bytes after the last request (after an upgrade: the new protocol's)."""
        rest = self._buf[self._pos :]
        self._buf, self._pos = b"", 0
        return rest

    def close(self) -> None:
        """Release llhttp: it holds this object's callbacks, a reference cycle that only the garbage
        collector would otherwise break (an idle WebSocket keeps nothing of its handshake)."""
        self._llhttp = None
        self._ready.clear()
        self._buf, self._pos = b"", 0

    def expects_continue(self) -> bool:
        """True once when a request's head asked for ``100 Continue`` before sending its body (§10.1.1)."""
        asked, self._continue = self._continue, False
        return asked

    def next(self) -> Request | None:
        """The next complete request, or None until more bytes arrive. Raises :class:`HttpError`."""
        ready = self._ready
        while not ready and self._pos < len(self._buf):
            self._step()
        if ready:
            return ready.pop(0)
        error = self._error
        if error is not None and not self._broken:
            self._broken = True  # raised once; a broken parser then only answers None
            raise error
        return None

    def _step(self) -> None:
        """Hand llhttp the next slice of input."""
        size = self._BODY_SLICE if self.in_body else self._SLICE
        start = self._pos
        piece = self._buf[start : start + size]
        self._pos = start + len(piece)
        if not self.in_body:
            self._head_bytes += len(piece)
        llhttp = self._llhttp
        if llhttp is None:
            raise HttpError(500, "The request parser was closed")
        try:
            llhttp.feed_data(piece)
        except httptools.HttpParserUpgrade as exc:
            # llhttp stops after an upgrade request (RFC 9110 §7.8): what followed is the new
            # protocol's (take_rest), or more HTTP if the caller does not switch.
            self._pos = start + int(exc.args[0])
        except httptools.HttpParserError as exc:
            self._fail(self._error or _llhttp_error(exc))
        if self._error is not None:
            self._fail(self._error)
        elif not self.in_body and self._head_bytes > self.max_head:
            self._fail(HttpError(431, f"Request head over the limit of {self.max_head} bytes"))

    def _fail(self, error: HttpError) -> None:
        # The framing is lost: nothing after this can be trusted. Requests parsed before the error
        # are still answered (in order), then the error.
        self._error = error
        self._buf, self._pos = b"", 0

    # llhttp callbacks (httptools calls these during feed_data). An exception raised here would only
    # come back as a generic "callback error"; the precise one is kept in _error instead.

    def on_message_begin(self) -> None:
        self._in_message = True
        self._started = True
        self._req = None
        self._target = []
        self._hosts = 0
        self._head_size = 0
        self._head_done = False

    def on_url(self, url: bytes) -> None:
        self._target.append(url)
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:
            return  # trailer fields are read and dropped (RFC 9112 §7.1.2)
        req = self._req
        if req is None:
            req = self._req = Request("", "", "", "", {})
        self._head_size += len(name) + len(value) + 4
        key = name.decode("latin-1").lower()  # RFC 9112 §5: field values are opaque octets
        text = value.decode("latin-1")
        if key == "host":
            self._hosts += 1
        old = req.headers.get(key)
        req.headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        try:
            self._headers_complete()
        except HttpError as exc:
            self._error = exc
            raise

    def _headers_complete(self) -> None:
        self._head_bytes = 0
        self._head_done = True
        if self._head_size > self.max_head:
            raise HttpError(431, f"Request head over the limit of {self.max_head} bytes")
        llhttp = self._llhttp
        assert llhttp is not None  # called by it
        version = llhttp.get_http_version()
        if version not in ("1.1", "1.0"):
            raise HttpError(505, f"HTTP/{version} is not supported; use HTTP/1.1")
        req = self._req or Request("", "", "", "", {})
        headers = req.headers
        # RFC 9112 §3.2: a server MUST respond 400 to an HTTP/1.1 request without Host, and to any
        # request with more than one Host field.
        if self._hosts > 1:
            raise HttpError(400, "More than one Host header")
        if self._hosts == 0 and version == "1.1":
            raise HttpError(400, "Missing Host header")
        target = b"".join(self._target).decode("latin-1")
        if target.startswith(("http://", "https://")):
            # absolute-form (RFC 9112 §3.2.2): the server only needs the path
            slash = target.find("/", target.index("//") + 2)
            target = target[slash:] if slash >= 0 else "/"
        if not target.startswith("/") or _BAD_TARGET.search(target) is not None:
            raise HttpError(400, "Invalid request target")
        raw_path, _, raw_query = target.partition("?")
        req.method = llhttp.get_method().decode("ascii")
        req.raw_path = raw_path.partition("#")[0]
        req.raw_query = raw_query
        req.version = version
        req.keep_alive = _keep_alive(version, headers.get("connection", ""))
        req.upgrade = llhttp.should_upgrade()
        self._req = req
        # Framing (RFC 9112 §6): llhttp has refused Transfer-Encoding with Content-Length (§6.3 item
        # 3, how requests are smuggled), a request whose final coding is not chunked (§6.3 item 4),
        # and malformed or repeated Content-Length values. What remains is ours to refuse:
        te = headers.get("transfer-encoding")
        if te is not None:
            if version != "1.1" or te.lower() != "chunked":
                raise HttpError(501, f"Transfer-Encoding {te!r} is not supported; use chunked")
            self._continue = headers.get("expect", "").lower() == "100-continue"
        elif "content-length" in headers:
            value = headers["content-length"].strip(" \t")
            if not value.isdigit() or not value.isascii():  # pragma: no cover - llhttp refuses these
                raise HttpError(400, "Invalid Content-Length")
            length = int(value)
            if length > self.max_body:
                raise HttpError(413, f"Request body over the limit of {self.max_body} bytes")
            self._continue = length > 0 and headers.get("expect", "").lower() == "100-continue"
        self._body = []
        self._body_size = 0

    def on_body(self, body: bytes) -> None:
        size = self._body_size + len(body)
        if size > self.max_body:
            self._error = HttpError(413, f"Request body over the limit of {self.max_body} bytes")
            raise self._error
        self._body_size = size
        self._body.append(body)

    def on_message_complete(self) -> None:
        req = self._req
        assert req is not None  # llhttp calls on_headers_complete first
        req.body = b"".join(self._body) if len(self._body) != 1 else self._body[0]
        self._body = []
        self._req = None
        self._in_message = False
        self._started = False
        self._continue = False
        self._head_bytes = 0
        self._ready.append(req)


def _llhttp_error(exc: Exception) -> HttpError:
    text = str(exc) or type(exc).__name__
    if text == "Invalid HTTP version":  # llhttp knows 0.9 to 2.0; anything else is not HTTP/1.x
        return HttpError(505, "HTTP version not supported; use HTTP/1.1")
    return HttpError(400, f"Malformed request: {text}")


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


def unmask(payload: bytes, mask: bytes | bytearray) -> bytes:
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
_utf8_decoder = codecs.getincrementaldecoder("utf-8")

# Close codes a peer may send (§7.4.1, §7.4.2 and the IANA registry): 1000-1003, 1007-1014, 3000-4999.
_VALID_CLOSE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))


class FrameParser:
    """Client-to-server WebSocket frames (RFC 6455 §5) in, :data:`WsEvent` objects out.

    A message over ``max_size`` bytes or ``max_fragments`` frames (the whole message: every fragment,
    empty continuation frames included) is refused with ``WsFail(too_big_code)`` as soon as a header
    says so; the rest of a refused frame's payload is then dropped as it arrives, so that frames after it
    (the client's close) are still read. After any other failure the input can no longer be trusted and
    everything after it is dropped.

    A frame that arrives in many small reads is gathered in a ``bytearray`` and parsed once it is
    whole: the cost of a frame is linear in its size however it is split.
    """

    __slots__ = (
        "_buf",
        "_decoder",
        "_frag_op",
        "_frags",
        "_frags_size",
        "_need",
        "_skip",
        "failed",
        "max_fragments",
        "max_size",
        "too_big_code",
    )

    def __init__(self, max_size: int, too_big_code: int = 1009, max_fragments: int = 1024) -> None:
        self.max_size = max_size
        self.max_fragments = max_fragments
        self.too_big_code = too_big_code
        self._buf: bytes | bytearray = b""
        self._need = 0  # bytes the frame at the start of _buf needs before it can be parsed
        self._frags: list[Any] | None = None  # a fragmented message's frames so far (§5.4)
        self._frag_op = 0
        # A fragmented text message is decoded as it arrives, so that invalid UTF-8 fails at the
        # fragment that holds it (§8.1: "as soon as"), not when (or if) the message ends.
        self._decoder: codecs.IncrementalDecoder | None = None
        self._frags_size = 0
        self._skip = 0  # payload bytes of a refused frame still to drop
        self.failed = False

    @property
    def buffered(self) -> int:
        """Bytes held: an incomplete frame plus the fragments of an unfinished message."""
        return len(self._buf) + self._frags_size

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
        buf: bytes | bytearray
        if self._buf:
            old = self._buf
            if type(old) is bytearray:
                old += data  # amortised: no copy of what is already held
            else:
                old = bytearray(old) + data
            if len(old) < self._need:
                self._buf = old
                return []
            buf = old
        else:
            buf = data
        self._buf = b""
        self._need = 0
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
                if n < 126:  # §5.2: "the minimal number of bytes MUST be used to encode the length"
                    return self._fail(events, 1002, "Frame length not minimally encoded")
            elif n == 127:
                if end - start < 8:
                    break
                n = int.from_bytes(buf[start : start + 8], "big")
                start += 8
                if n >> 63:
                    return self._fail(events, 1002, "Frame length with the most significant bit set")
                if n < 65536:
                    return self._fail(events, 1002, "Frame length not minimally encoded")
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
            if opcode < OP_CLOSE and (
                self._frags_size + n > self.max_size
                or (self._frags is not None and len(self._frags) >= self.max_fragments)
            ):
                # Refuse from the header, before the payload arrives; drop it as it does. Empty
                # continuation frames count too: each costs a list slot (issue 14, item 6).
                size = self._frags_size + n
                frames = 1 + (len(self._frags) if self._frags is not None else 0)
                self._frags = None
                self._decoder = None
                self._frags_size = 0
                if size > self.max_size:
                    reason = f"Message of {size} bytes over the limit"
                else:
                    reason = f"Message in over {self.max_fragments} frames ({frames})"
                events.append(WsFail(self.too_big_code, reason))
                start += 4
                available = end - start
                if available >= n:
                    pos = start + n
                    continue
                self._skip = n - available
                return events
            mask_end = start + 4
            if end - mask_end < n:
                self._need = mask_end + n - pos
                break
            payload = unmask(bytes(buf[mask_end : mask_end + n]), buf[start:mask_end])
            pos = mask_end + n
            if opcode >= OP_CLOSE:
                if opcode == OP_PING:
                    events.append(WsPing(payload))
                elif opcode == OP_CLOSE:
                    event = self._close(payload)
                    events.append(event)
                    if type(event) is WsFail:
                        self.failed = True
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
                if opcode == OP_TEXT:
                    self._decoder = _utf8_decoder()
            frags = self._frags
            assert frags is not None
            self._frags_size += n
            decoder = self._decoder
            if decoder is not None:
                try:
                    frags.append(decoder.decode(payload, bool(fin)))
                except UnicodeDecodeError:
                    return self._fail(events, 1007, "Text message is not valid UTF-8")  # §8.1
            else:
                frags.append(payload)
            if fin:
                size = self._frags_size
                whole: str | bytes = "".join(frags) if decoder is not None else b"".join(frags)
                self._frags = None
                self._decoder = None
                self._frags_size = 0
                events.append(WsMessage(whole, size))
        if pos < end:
            # Keep the incomplete frame; a bytearray, so that what arrives next is appended in place.
            self._buf = bytearray(buf[pos:]) if pos or type(buf) is not bytearray else buf
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
        self._decoder = None
        self._frags_size = 0
        return events

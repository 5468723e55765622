"""The sans-I/O HTTP/1.1 and WebSocket layer (livewidget.server._wire), without sockets."""

from __future__ import annotations

import json
import os
import struct

import pytest

from livewidget.server._wire import (
    FrameParser,
    HttpError,
    Request,
    RequestParser,
    WsClose,
    WsFail,
    WsMessage,
    WsPing,
    close_frame,
    handshake,
    pong_frame,
    response,
    text_frame,
    unmask,
    upgrade_required,
)

# ------------------------------------------------------------------------------------------ helpers


def parse_all(data: bytes, *, max_body: int = 1000, byte_by_byte: bool = False) -> list[Request]:
    parser = RequestParser(max_body)
    out: list[Request] = []
    pieces = [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]
    for piece in pieces:
        parser.feed(piece)
        while (req := parser.next()) is not None:
            out.append(req)
    return out


def refusal(data: bytes, *, max_body: int = 1000, max_head: int = 16 * 1024) -> HttpError:
    parser = RequestParser(max_body, max_head)
    parser.feed(data)
    with pytest.raises(HttpError) as info:
        while parser.next() is not None:
            pass
    assert parser.next() is None  # a broken parser stays broken
    return info.value


def masked(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True) -> bytes:
    """A client frame (RFC 6455 §5.2)."""
    b0 = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def feed_bytewise(parser: FrameParser, data: bytes) -> list[object]:
    events: list[object] = []
    for i in range(len(data)):
        events.extend(parser.feed(data[i : i + 1]))
    return events


# --------------------------------------------------------------------------------------------- HTTP


def test_request_fed_byte_by_byte():
    raw = (
        b"POST /apps/1/events?auth_key=k&a=x+y&b=%2F HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
        b"X-Two: a\r\nx-two: b\r\n\r\nhello"
    )
    [req] = parse_all(raw, byte_by_byte=True)
    assert (req.method, req.raw_path, req.version, req.body) == ("POST", "/apps/1/events", "1.1", b"hello")
    assert req.query() == [("auth_key", "k"), ("a", "x y"), ("b", "/")]
    assert req.query_get("b") == "/" and req.query_get("missing") is None
    assert req.headers["x-two"] == "a, b"
    assert req.keep_alive


def test_path_is_decoded_raw_path_kept():
    [req] = parse_all(b"GET /pre%20fix/app/k HTTP/1.1\r\nHost: h\r\n\r\n")
    assert req.path == "/pre fix/app/k" and req.raw_path == "/pre%20fix/app/k"


def test_absolute_form_target():
    [req] = parse_all(b"GET http://example.com/apps/1/channels?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert req.raw_path == "/apps/1/channels" and req.raw_query == "x=1"


def test_keep_alive_rules():
    [a, b, c, d] = [
        parse_all(raw)[0]
        for raw in (
            b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
        )
    ]
    assert [r.keep_alive for r in (a, b, c, d)] == [True, False, False, True]


def test_pipelined_requests_come_out_in_order_with_their_bodies():
    raw = b"".join(
        b"POST /%d HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s" % (i, len(body), body)
        for i, body in enumerate([b"a", b"", b"ccc"])
    )
    for bytewise in (False, True):
        reqs = parse_all(b"\r\n" + raw, byte_by_byte=bytewise)  # a leading empty line is ignored
        assert [(r.raw_path, r.body) for r in reqs] == [("/0", b"a"), ("/1", b""), ("/2", b"ccc")]


def test_chunked_body_with_extensions_and_trailers():
    raw = (
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n"
        b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    for bytewise in (False, True):
        first, second = parse_all(raw, byte_by_byte=bytewise)
        assert first.body == b"hello 0123456789"
        assert second.raw_path == "/next"


def test_chunked_without_trailers():
    [req] = parse_all(
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    assert req.body == b"abc"


def test_after_an_upgrade_the_rest_is_the_new_protocols():
    parser = RequestParser(100)
    parser.feed(
        b"GET /app/k HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x80abcd"
    )
    req = parser.next()
    assert req is not None and req.headers["upgrade"] == "websocket" and req.upgrade
    assert parser.take_rest() == b"\x81\x80abcd"


def test_an_upgrade_the_server_does_not_take_leaves_http_going():
    """A request asking for an upgrade the server ignores (RFC 9110 §7.8) is followed by more HTTP."""
    parser = RequestParser(100)
    parser.feed(
        b"GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
        b"GET /y HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    first, second = parser.next(), parser.next()
    assert first is not None and second is not None and second.raw_path == "/y"


def test_progress_flags():
    parser = RequestParser(100)
    assert not parser.in_head and not parser.in_body
    parser.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Le")
    assert parser.next() is None and parser.in_head
    parser.feed(b"ngth: 4\r\nExpect: 100-continue\r\n\r\nab")
    assert parser.next() is None and parser.in_body and not parser.in_head
    assert parser.expects_continue() and not parser.expects_continue()
    parser.feed(b"cd")
    req = parser.next()
    assert req is not None and req.body == b"abcd"
    assert not parser.in_head and not parser.in_body


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /\r\n\r\n", 505),  # HTTP/0.9
        (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
        (b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTX/1.1\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET nopath HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nNo colon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nA: b\r\n folded\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXX", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n" + b"x" * 1001, 413),
    ],
)
def test_malformed_requests(raw: bytes, status: int):
    assert refusal(raw).status == status


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        # issue 14 item 8: each was accepted by the hand-written parser; h11 and llhttp refuse them
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\x0b\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\x0b\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n 2\r\nab\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\nab\r\n0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # RFC 9112 §3.2: Host is required in HTTP/1.1
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),  # ... and once only
        (b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
        (b"GET / HTTP/1.1\nHost: h\n\n", 400),  # bare LF
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n", 400),
    ],
)
def test_rfc_9112_strictness(raw: bytes, status: int):
    """Values h11 refuses are refused (400, and the parser stays broken)."""
    err = refusal(raw)
    assert err.status == status, err.message


def test_http_1_0_without_host_is_accepted():
    [req] = parse_all(b"GET / HTTP/1.0\r\n\r\n")
    assert req.version == "1.0"


def test_forty_thousand_one_byte_chunks_parse_in_linear_time():
    """Issue 14 item 1: 40,000 one-byte chunks took 13 s (the body re-summed and copied per chunk)."""
    import time

    body = b"1\r\nx\r\n" * 40_000 + b"0\r\n\r\n"
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    t0 = time.process_time()
    [req] = parse_all(raw, max_body=1_000_000)
    assert req.body == b"x" * 40_000
    assert time.process_time() - t0 < 0.5


def test_a_burst_of_blank_lines_is_linear_and_bounded():
    """Issue 14 item 2: 4 MiB of bare CRLF cost 6 s (stripped one at a time); now cheap and refused (431)."""
    import time

    parser = RequestParser(1000)
    t0 = time.process_time()
    parser.feed(b"\r\n" * (2 * 1024 * 1024))
    with pytest.raises(HttpError) as info:
        parser.next()
    assert info.value.status == 431
    assert time.process_time() - t0 < 0.5
    # and blank lines are still "a request begun" for the transport's deadline
    parser = RequestParser(1000)
    parser.feed(b"\r\n")
    assert parser.next() is None and parser.in_head


def test_pipelined_requests_are_parsed_lazily():
    """Thousands of pipelined requests are parsed as they are taken, not all at once (backpressure)."""
    parser = RequestParser(1000)
    parser.feed(b"GET /stats HTTP/1.1\r\nHost: h\r\n\r\n" * 10_000)
    assert parser.next() is not None
    assert len(parser._ready) < 300 and parser.buffered > 300_000


def test_chunked_body_over_the_limit_in_several_chunks():
    chunks = b"".join(b"64\r\n" + b"x" * 100 + b"\r\n" for _ in range(11))
    err = refusal(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks, max_body=1000)
    assert err.status == 413 and "1000" in err.message


def test_head_limit():
    big = b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 2000 + b"\r\n\r\n"
    assert refusal(big, max_head=1024).status == 431
    # also when the head never ends
    assert refusal(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 2000, max_head=1024).status == 431
    chunked = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert refusal(chunked + b"1" * 2000).status == 400


def test_response_encoding():
    raw = response(404, {"error": "nope"})
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"Content-Type: application/json; charset=utf-8" in head
    assert b"Content-Length: %d" % len(body) in head
    assert b"Connection" not in head
    assert json.loads(body) == {"error": "nope"}
    closing = response(200, {}, keep_alive=False, head=True)
    assert closing.endswith(b"Connection: close\r\n\r\n") and b"Content-Length: 2" in closing
    assert upgrade_required("x").startswith(b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n")


# ---------------------------------------------------------------------------------------- handshake


def ws_request(**headers: str) -> Request:
    base = {
        "Host": "h",
        "Upgrade": "websocket",
        "Connection": "keep-alive, Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    base.update(headers)
    method = base.pop("method", "GET")
    lines = "".join(f"{k}: {v}\r\n" for k, v in base.items() if v)
    [req] = parse_all(f"{method} /app/k?protocol=7 HTTP/1.1\r\n{lines}\r\n".encode())
    return req


def test_handshake_accept_is_the_rfc_example():
    answer = handshake(ws_request())
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer  # RFC 6455 §1.3
    assert answer.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"method": "POST"}, 400),
        ({"Connection": "keep-alive"}, 400),
        ({"Sec-WebSocket-Version": "8"}, 426),
        ({"Sec-WebSocket-Version": ""}, 426),
        ({"Sec-WebSocket-Key": ""}, 400),
        ({"Sec-WebSocket-Key": "c2hvcnQ="}, 400),
        ({"Sec-WebSocket-Key": "not base64!"}, 400),
    ],
)
def test_bad_handshakes(headers: dict[str, str], status: int):
    with pytest.raises(HttpError) as info:
        handshake(ws_request(**headers))
    assert info.value.status == status


# ------------------------------------------------------------------------------------------- frames


def test_unmask_matches_the_definition():
    for n in (0, 1, 3, 4, 5, 125, 126, 1000, 65537):
        data, key = os.urandom(n), os.urandom(4)
        assert unmask(data, key) == bytes(b ^ key[i % 4] for i, b in enumerate(data))


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 70000])
def test_text_message_of_every_length_encoding(size: int):
    text = ("é" * size)[: size // 2] + "x" * (size - 2 * (size // 2))  # multi-byte characters
    payload = text.encode()
    parser = FrameParser(1 << 20)
    frame = masked(0x1, payload)
    events = feed_bytewise(parser, frame) if size < 2000 else parser.feed(frame[:7]) + parser.feed(frame[7:])
    [msg] = events
    assert isinstance(msg, WsMessage) and msg.data == text and msg.size == len(payload)


def test_several_frames_in_one_chunk_and_binary():
    parser = FrameParser(1000)
    events = parser.feed(masked(0x1, b"a") + masked(0x2, b"\x00\xff") + masked(0x9, b"p") + masked(0xA, b""))
    assert [type(e) for e in events] == [WsMessage, WsMessage, WsPing]
    assert events[0].data == "a" and events[1].data == b"\x00\xff" and events[2].payload == b"p"


def test_fragmented_message_with_a_ping_between_and_utf8_split_across_fragments():
    data = "añb".encode()  # ñ is 2 bytes: split it between the fragments
    stream = masked(0x1, data[:2], fin=False) + masked(0x9, b"hi") + masked(0x0, data[2:3], fin=False)
    stream += masked(0x0, data[3:], fin=True) + masked(0x1, b"next")
    events = feed_bytewise(FrameParser(1000), stream)
    assert [type(e) for e in events] == [WsPing, WsMessage, WsMessage]
    assert events[1].data == "añb" and events[2].data == "next"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (masked(0x1, b"x", mask=False), 1002),  # unmasked client frame (§5.1)
        (masked(0x1, b"x", rsv=0x40), 1002),  # RSV1 without an extension
        (masked(0x3, b"x"), 1002),  # reserved data opcode
        (masked(0xB, b"x"), 1002),  # reserved control opcode
        (masked(0x9, b"x" * 126), 1002),  # control frame over 125 bytes
        (masked(0x9, b"x", fin=False), 1002),  # fragmented control frame
        (masked(0x0, b"x"), 1002),  # continuation of nothing
        (masked(0x1, b"a", fin=False) + masked(0x1, b"b"), 1002),  # new message inside a fragmented one
        (masked(0x1, b"\xff\xfe"), 1007),  # invalid UTF-8
        (masked(0x1, b"\xc3", fin=False) + masked(0x0, b"(", fin=True), 1007),
        (masked(0x8, b"\x03"), 1002),  # close payload of 1 byte
        (masked(0x8, struct.pack("!H", 1005)), 1002),  # 1005 must not be sent (§7.4.1)
        (masked(0x8, struct.pack("!H", 999)), 1002),
        (masked(0x8, struct.pack("!H", 2000)), 1002),
        (masked(0x8, struct.pack("!H", 1000) + b"\xff"), 1007),
    ],
)
def test_bad_frames_fail_and_stop_the_parser(frame: bytes, code: int):
    parser = FrameParser(1000)
    events = feed_bytewise(parser, frame)
    assert isinstance(events[-1], WsFail) and events[-1].code == code, events
    assert parser.failed
    assert parser.feed(masked(0x1, b"ignored")) == []


def test_close_frames():
    parser = FrameParser(1000)
    [close] = parser.feed(masked(0x8, b""))
    assert isinstance(close, WsClose) and close.code is None
    [close] = parser.feed(masked(0x8, struct.pack("!H", 4001) + "bye ✓".encode()))
    assert isinstance(close, WsClose) and (close.code, close.reason) == (4001, "bye ✓")


def test_oversized_message_is_refused_from_its_header_and_its_payload_dropped():
    parser = FrameParser(100, too_big_code=4100)
    frame = masked(0x1, b"y" * 10_000)
    events = parser.feed(frame[:20])  # header and a few payload bytes
    assert len(events) == 1 and isinstance(events[0], WsFail) and events[0].code == 4100
    assert not parser.failed
    rest = frame[20:] + masked(0x8, struct.pack("!H", 1000))
    events = []
    for i in range(0, len(rest), 777):
        events.extend(parser.feed(rest[i : i + 777]))
    assert [type(e) for e in events] == [WsClose]  # the frame after it is still read
    # a fragmented message is capped as a whole
    parser = FrameParser(100, too_big_code=4100)
    events = parser.feed(masked(0x1, b"a" * 60, fin=False) + masked(0x0, b"b" * 60) + masked(0x1, b"ok"))
    assert [type(e) for e in events] == [WsFail, WsMessage] and events[1].data == "ok"


def test_huge_declared_length_is_refused_without_waiting():
    parser = FrameParser(1 << 20, too_big_code=4100)
    head = struct.pack("!BBQ", 0x81, 0xFF, 1 << 40) + b"mask"
    [fail] = parser.feed(head)
    assert isinstance(fail, WsFail) and fail.code == 4100
    [fail] = FrameParser(10).feed(struct.pack("!BBQ", 0x81, 0xFF, 1 << 63) + b"mask")
    assert isinstance(fail, WsFail) and fail.code == 1002


def test_server_frames():
    assert text_frame(b"hi") == b"\x81\x02hi"
    assert text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert text_frame(b"x" * 70000)[:10] == b"\x81\x7f" + struct.pack("!Q", 70000)
    assert pong_frame(b"p") == b"\x8a\x01p"
    assert close_frame(None) == b"\x88\x00"
    frame = close_frame(4100, "é" * 100)  # cut to 125 bytes on a character boundary
    assert frame[0] == 0x88 and frame[1] <= 125 and len(frame) == 2 + frame[1]
    assert struct.unpack("!H", frame[2:4])[0] == 4100
    frame[4:].decode()


def test_zero_length_continuation_frames_count_against_the_message():
    """Issue 14 item 6: empty continuation frames were not counted; 126 MB of them grew the server by
    160 MiB. Now the message is refused once it has ``max_fragments`` frames."""
    parser = FrameParser(1000, 4100, max_fragments=100)
    events = parser.feed(masked(OP_TEXT_, b"a", fin=False))
    empty = masked(0x0, b"", fin=False)
    for _ in range(99):  # 100 frames in all: allowed
        events += parser.feed(empty)
    assert events == [] and parser.buffered == 1
    [fail] = parser.feed(empty)
    assert isinstance(fail, WsFail) and fail.code == 4100 and "over 100 frames" in fail.reason
    assert parser.buffered == 0


def test_a_frame_trickled_byte_by_byte_costs_linear_time():
    """A 256 KiB frame in one-byte reads is gathered in place, not re-copied per read."""
    import time

    parser = FrameParser(1 << 20)
    frame = masked(OP_TEXT_, b"x" * 256 * 1024)
    t0 = time.process_time()
    events: list[object] = []
    for i in range(len(frame)):
        events += parser.feed(frame[i : i + 1])
    assert len(events) == 1 and isinstance(events[0], WsMessage) and events[0].size == 256 * 1024
    assert time.process_time() - t0 < 2.0


OP_TEXT_ = 0x1

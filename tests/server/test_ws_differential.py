"""The WebSocket frame parser (``_wire.FrameParser``) against wsproto's, on generated client frames.

wsproto (python-hyper) is a maintained sans-I/O implementation of RFC 6455. Both parse the same
seeded-random streams of client frames (masked and not, fragmented messages with control frames
between, lengths around the encoding boundaries 125/126/65535/65536, non-minimal length encodings,
reserved opcodes and bits, close frames with valid and invalid codes and reasons, valid and invalid
UTF-8), fed in random pieces, and must agree on:

- whether the stream is refused, and with which close code (1002 protocol error, 1007 bad UTF-8);
- every message (type and payload), ping payload and close code/reason before that point.

wsproto delivers fragments and pongs; they are assembled into messages and pongs are dropped (the
server ignores unsolicited pongs, §5.5.3). wsproto stops at a close frame; so does the comparison.
Known, intended difference: close code 1014 (registered with IANA after RFC 6455; accepted here and
by websockets) is unknown to wsproto, so it is not generated.
"""

from __future__ import annotations

import itertools
import os
import random
import struct
from typing import Any

import pytest
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, ParseFailed

from livewidget.server._wire import FrameParser, WsClose, WsFail, WsMessage, WsPing

CASES = 600  # streams per seed; bounded (about 2 s in all)
SIZES = [0, 1, 2, 124, 125, 126, 127, 128, 1000, 65535, 65536, 65537]
CLOSE_CODES = [1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1011, 1012, 1013, 1015, 1016, 2999, 3000,
               4999, 5000, 999, 0, 65535]  # fmt: skip


def frame(rng: random.Random, opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One client frame, usually well-formed, sometimes not (the mutations below)."""
    rsv = rng.choice([0x10, 0x20, 0x40]) if rng.random() < 0.04 else 0
    mask = rng.random() > 0.03
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | opcode
    mbit = 0x80 if mask else 0
    roll = rng.random()
    if n < 126 and roll < 0.03:
        head = struct.pack("!BBH", b0, mbit | 126, n)  # not minimal: refused
    elif n < 65536 and roll < 0.05:
        head = struct.pack("!BBQ", b0, mbit | 127, n)  # not minimal: refused
    elif n < 126:
        head = bytes((b0, mbit | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4) if rng.random() < 0.9 else b"\0\0\0\0"
    masked = (
        int.from_bytes(payload, "little") ^ int.from_bytes((key * (n // 4 + 1))[:n], "little")
    ).to_bytes(n, "little")
    return head + key + masked


def text(rng: random.Random, size: int) -> bytes:
    choice = rng.random()
    if choice < 0.6:
        data = ("é" * (size // 2 + 1)).encode()[:size]  # may cut a character: invalid at a message's end
    elif choice < 0.9:
        data = b"x" * size
    else:
        data = bytes(rng.randrange(256) for _ in range(min(size, 64))) + b"y" * max(0, size - 64)
    return data


def stream(rng: random.Random) -> bytes:
    out = []
    for _ in range(rng.randint(1, 5)):
        kind = rng.random()
        if kind < 0.35:  # a whole data message
            op = rng.choice([1, 2])
            size = rng.choice(SIZES)
            out.append(frame(rng, op, text(rng, size) if op == 1 else os.urandom(size)))
        elif kind < 0.6:  # a fragmented message, control frames between its fragments
            op = rng.choice([1, 2])
            parts = rng.randint(2, 5)
            for i in range(parts):
                size = rng.choice([0, 0, 1, 3, 125, 126, 1000])
                out.append(frame(rng, op if i == 0 else 0, text(rng, size), fin=i == parts - 1))
                if rng.random() < 0.3:
                    out.append(frame(rng, rng.choice([9, 10]), os.urandom(rng.randint(0, 125))))
        elif kind < 0.75:  # control frames, sometimes too long or fragmented
            op = rng.choice([9, 10])
            size = rng.choice([0, 1, 125, 125, 126])
            out.append(frame(rng, op, os.urandom(size), fin=rng.random() > 0.05))
        elif kind < 0.85:  # reserved opcodes, a stray continuation
            op = rng.choice([0, 3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
            out.append(frame(rng, op, os.urandom(rng.choice([0, 5, 130]))))
        else:  # a close frame
            roll = rng.random()
            if roll < 0.15:
                payload = b""
            elif roll < 0.2:
                payload = b"\x03"
            else:
                reason = rng.choice([b"", b"bye", "déjà".encode(), b"\xff\xfe"])
                payload = struct.pack("!H", rng.choice(CLOSE_CODES)) + reason
            out.append(frame(rng, 8, payload))
    if rng.random() < 0.05:
        out.append(struct.pack("!BB", 0x82, 0xFF) + b"\x80" + b"\0" * 7)  # 8-byte length, MSB set
    return b"".join(out)


def pieces(rng: random.Random, data: bytes) -> list[bytes]:
    cuts = (
        sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 6))))
        if len(data) > 1
        else []
    )
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def ours(chunks: list[bytes]) -> list[tuple[Any, ...]]:
    parser = FrameParser(1 << 30, max_fragments=1 << 20)  # limits out of the way: only RFC 6455 here
    out: list[tuple[Any, ...]] = []
    for chunk in chunks:
        for event in parser.feed(chunk):
            if isinstance(event, WsMessage):
                out.append(("message", event.data))
            elif isinstance(event, WsPing):
                out.append(("ping", event.payload))
            elif isinstance(event, WsClose):
                out.append(("close", event.code, event.reason))
                return out  # the server stops reading at a close frame; wsproto too
            elif isinstance(event, WsFail):
                out.append(("fail", event.code))
                return out
    return out


def theirs(chunks: list[bytes]) -> list[tuple[Any, ...]]:
    proto = FrameProtocol(client=False, extensions=[])
    out: list[tuple[Any, ...]] = []
    parts: list[Any] = []
    try:
        for chunk in chunks:
            proto.receive_bytes(chunk)
            for f in proto.received_frames():
                if f.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION):
                    parts.append(f.payload)
                    if f.message_finished:
                        whole = "".join(parts) if isinstance(parts[0], str) else b"".join(parts)
                        out.append(("message", whole))
                        parts = []
                elif f.opcode is Opcode.PING:
                    out.append(("ping", bytes(f.payload)))
                elif f.opcode is Opcode.CLOSE:
                    code, reason = f.payload
                    out.append(("close", None if code == CloseReason.NO_STATUS_RCVD else int(code), reason))
                    return out
    except ParseFailed as exc:
        out.append(("fail", int(exc.code)))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_frame_parser_agrees_with_wsproto(seed: int):
    """Same accept/reject decision, close code and decoded payloads on generated streams."""
    rng = random.Random(seed)
    refused = 0
    for case in range(CASES):
        data = stream(rng)
        chunks = pieces(rng, data)
        got, want = ours(chunks), theirs(chunks)
        assert got == want, f"seed {seed} case {case}: {data[:80]!r}..."
        refused += bool(want) and want[-1][0] == "fail"
    assert CASES // 10 < refused < CASES * 9 // 10  # both sides of the decision were exercised


@pytest.mark.parametrize("size", [125, 126, 65535, 65536])
@pytest.mark.parametrize("masked", [True, False])
def test_length_boundaries_agree(size: int, masked: bool):
    """Every length encoding at its boundary, masked (accepted) and not (refused, §5.1)."""
    payload = b"a" * size
    n = len(payload)
    head = bytes((0x82, (0x80 if masked else 0) | n)) if n < 126 else (
        struct.pack("!BBH", 0x82, (0x80 if masked else 0) | 126, n) if n < 65536
        else struct.pack("!BBQ", 0x82, (0x80 if masked else 0) | 127, n)
    )  # fmt: skip
    data = head + (b"\0\0\0\0" if masked else b"") + payload
    assert ours([data]) == theirs([data])
    assert (ours([data])[0][0] == "message") is masked

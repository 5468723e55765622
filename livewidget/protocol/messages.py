"""Frames of the Pusher WebSocket protocol version 7, and the actions the core asks transports to do.

Server-to-client ``data`` is a JSON *string* (spec *Double encoding*, reference §1.2), except in
``pusher:error`` where the hosted service sends an object (reference §1.5). Client-to-server
``pusher:*`` frames carry an object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hub import Connection

__all__ = [
    "Action",
    "Close",
    "CloseCode",
    "Send",
    "Webhook",
    "encode",
    "error_frame",
]


class CloseCode:
    """WebSocket close codes of the protocol (spec *Error Codes*, reference §1.11)."""

    # 4000-4099: do not reconnect unchanged
    SSL_ONLY = 4000
    APP_NOT_FOUND = 4001
    APP_DISABLED = 4003
    OVER_QUOTA = 4004
    PATH_NOT_FOUND = 4005
    INVALID_VERSION = 4006
    UNSUPPORTED_PROTOCOL = 4007
    NO_PROTOCOL = 4008
    UNAUTHORIZED = 4009  # also: terminate_connections
    # 4100-4199: reconnect after backing off
    OVER_CAPACITY = 4100  # also: a client that stops reading
    # 4200-4299: reconnect at once
    RECONNECT = 4200  # also: server shutting down
    PONG_TIMEOUT = 4201
    INACTIVITY = 4202
    # 4300-4399: pusher:error codes, not closes
    CLIENT_EVENT_RATE_LIMIT = 4301
    WATCHLIST_LIMIT = 4302


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode(event: str, data: Any = None, channel: str | None = None) -> str:
    """One frame as text. ``data`` is sent as given: pass a string for double encoding."""
    message: dict[str, Any] = {"event": event}
    if channel is not None:
        message["channel"] = channel
    if data is not None:
        message["data"] = data
    return _dumps(message)


def dumps(value: Any) -> str:
    """Compact JSON, as the server encodes nested ``data`` strings."""
    return _dumps(value)


def error_frame(message: str, code: int | None = None) -> str:
    """``pusher:error`` with an object ``data``, as hosted Pusher sends it (reference §1.5)."""
    return encode("pusher:error", {"code": code, "message": message})


class Action:
    """Something the core asks the transport to do."""

    __slots__ = ()


@dataclass(slots=True)
class Send(Action):
    """Write ``frame`` to every connection in ``targets``, in order (encode it once)."""

    targets: tuple[Connection, ...] | list[Connection]
    frame: str


@dataclass(slots=True)
class Close(Action):
    """Close ``conn`` with ``code`` after sending ``frame`` (a ``pusher:error``) if given."""

    conn: Connection
    code: int
    reason: str
    frame: str | None = None


@dataclass(slots=True)
class Webhook(Action):
    """Deliver one webhook event (a dict with ``name`` and its fields) at ``time_ms``."""

    event: dict[str, Any]
    time_ms: int = field(default=0)

"""The client side of the protocol, sans-I/O: what pusher-js does, for Python receivers.

Feed it frames with :meth:`ClientProtocol.receive`, take frames to send from
:meth:`ClientProtocol.data_to_send`, and call :meth:`ClientProtocol.tick` about once a second for
heartbeats. Subscriptions are remembered and re-sent after every (re)connection, as pusher-js does
(``channels.ts`` ``subscribeAll``).

Nothing the peer sends makes :meth:`ClientProtocol.receive` raise (the server's hub promises the
same): a frame that is not a Pusher message comes back as a ``livewidget:bad_frame`` event, an
event whose data cannot be decoded (nested deeper than ``MAX_DEPTH``) keeps its raw text with
``error`` saying why, and a malformed ``pusher:connection_established`` is a
``livewidget:protocol_error`` (the transport should close and reconnect). All are counted in
``ClientProtocol.undecodable``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import signatures
from .channels import ChannelKind, channel_kind, is_valid_channel_name

__all__ = [
    "BAD_FRAME",
    "MAX_DEPTH",
    "PROTOCOL_ERROR",
    "ClientEvent",
    "ClientProtocol",
    "ClientState",
    "loads",
]

# Nesting deeper than this is refused before decoding: json's C decoder recurses (RecursionError near
# 1,000 levels, less on a deep stack), and data that does decode that deep breaks later encoders
# (traitlets, json.dumps, the browser). Real event data is a few levels deep.
MAX_DEPTH = 100
BAD_FRAME = "livewidget:bad_frame"  # a frame that is not a Pusher message
PROTOCOL_ERROR = "livewidget:protocol_error"  # the server broke the protocol: reconnect

# (socket_id, channel) -> {"auth": ..., "channel_data"?: ...}; raises to refuse
Authorizer = Callable[[str, str], dict[str, str]]


class ClientState(enum.IntEnum):
    """Where the client is."""

    CONNECTING = 0  # socket open, waiting for pusher:connection_established
    CONNECTED = 1
    CLOSED = 2


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """One event heard by the client.

    ``data`` is the decoded JSON when the payload is JSON, else the raw string (pusher-js
    ``decodeMessage`` does the same); ``raw`` is the payload as received.
    """

    event: str
    channel: str | None
    data: Any
    raw: str | None
    user_id: str | None = None
    error: str | None = None  # why ``data`` could not be decoded (then it is the raw text)
    serial: int | None = None  # the event's position on its channel, when the server stamps one
    stream_id: str | None = None  # the stream that position belongs to (README "Channel history")


def _too_deep(value: Any, limit: int) -> bool:
    """Whether decoded JSON ``value`` nests lists/dicts deeper than ``limit`` (iterative: any depth)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _might_be_deep(text: str, limit: int) -> bool:
    # Cheap necessary condition: nesting deeper than `limit` needs more than `limit` open brackets.
    return text.count("[") + text.count("{") > limit


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: JSON.parse (pusher-js) refuses them, so the text is kept as is.
    raise ValueError(f"{name} is not JSON")


def loads(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that raises ``ValueError`` (never ``RecursionError``) for JSON nested deeper
    than ``max_depth`` levels."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode()
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"JSON nested too deeply (the limit is {max_depth} levels)") from None
    if _might_be_deep(text, max_depth) and _too_deep(value, max_depth):
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    return value


def _decode(data: Any) -> tuple[Any, str | None, str | None]:
    """(decoded data, raw text, why it could not be decoded): pusher-js decodeMessage, depth-safe."""
    if isinstance(data, str):
        try:
            return loads(data), data, None
        except UnicodeDecodeError:
            return data, data, None
        except ValueError as exc:
            if "nested" in str(exc):
                return data, data, f"data {exc}: kept as text"
            return data, data, None  # plain text, as pusher-js keeps it
    if data is None:
        return None, None, None
    if _too_deep(data, MAX_DEPTH):
        return None, None, f"data nested deeper than {MAX_DEPTH} levels: dropped"
    return data, json.dumps(data), None


class ClientProtocol:
    """Protocol state of one client connection.

    Parameters
    ----------
    key, secret:
        The app's credentials. With the secret, private and presence channels are signed locally.
    user:
        ``{"id": ..., "info": ...}``: who this client is on presence channels.
    authorizer:
        Signs subscriptions when the secret is not known here.
    """

    def __init__(
        self,
        key: str,
        secret: str | None = None,
        *,
        user: dict[str, Any] | None = None,
        authorizer: Authorizer | None = None,
        pong_timeout: float = 30.0,
    ) -> None:
        self.key = key
        self._secret = secret
        self.user = user
        self._authorizer = authorizer
        self.pong_timeout = pong_timeout
        self.state = ClientState.CONNECTING
        self.socket_id: str | None = None
        self.activity_timeout = 120.0
        self.channels: dict[str, bool] = {}  # wanted channel -> subscribed (succeeded)
        self.undecodable = 0  # frames and events that could not be decoded (see the module docstring)
        self._out: list[str] = []
        self._last_heard = 0.0
        self._ping_sent: float | None = None

    # ------------------------------------------------------------------ transport side

    def connection_opened(self, now: float) -> None:
        """A new socket is open (first connection or a reconnection)."""
        self.state = ClientState.CONNECTING
        self.socket_id = None
        self.channels = dict.fromkeys(self.channels, False)
        self._last_heard = now
        self._ping_sent = None
        self._out.clear()

    def connection_lost(self) -> None:
        """The socket closed; subscriptions are kept for the next connection."""
        self.state = ClientState.CLOSED
        self.channels = dict.fromkeys(self.channels, False)

    def data_to_send(self) -> list[str]:
        """Frames to write, in order."""
        out, self._out = self._out, []
        return out

    def tick(self, now: float) -> bool:
        """Heartbeat; returns False when the server stopped answering and the socket should go."""
        if self.state is not ClientState.CONNECTED:
            return True
        if self._ping_sent is not None:
            return now - self._ping_sent < self.pong_timeout
        if now - self._last_heard >= self.activity_timeout:
            self._ping_sent = now
            self._out.append(json.dumps({"event": "pusher:ping", "data": {}}))
        return True

    def receive(self, text: str, now: float) -> list[ClientEvent]:
        """One frame from the server; returns the events it carries for the application.

        Never raises: whatever the frame holds, the failure stays with it (see the module docstring).
        """
        self._last_heard = now
        self._ping_sent = None
        try:
            return self._receive(text)
        except Exception as exc:  # a bug or an input nobody foresaw: this frame only
            self.undecodable += 1
            value: Any = text  # typed str, but a transport may hand over anything
            raw = value if isinstance(value, str) else repr(value)
            return [ClientEvent(BAD_FRAME, None, raw, raw, error=f"{type(exc).__name__}: {exc}")]

    def _bad(self, text: str, why: str) -> list[ClientEvent]:
        self.undecodable += 1
        return [ClientEvent(BAD_FRAME, None, text, text, error=why)]

    def _receive(self, text: Any) -> list[ClientEvent]:
        if not isinstance(text, str):
            return self._bad(repr(text), "not a text frame")
        try:
            message = json.loads(text)
        except RecursionError:
            return self._bad(text, "frame nested too deeply to decode")
        except ValueError:
            return self._bad(text, "not JSON")
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            return self._bad(text, "not a Pusher message (an object with an 'event' string)")
        event: str = message["event"]
        channel = message.get("channel")
        if channel is not None and not isinstance(channel, str):
            return self._bad(text, "'channel' is not a string")
        data, raw, error = _decode(message.get("data"))
        if error is not None:
            self.undecodable += 1
        if event == "pusher:connection_established":
            socket_id = data.get("socket_id") if isinstance(data, dict) else None
            if error is not None or not isinstance(socket_id, str) or not socket_id:
                # Without a socket id nothing can be signed or sent: this connection is useless.
                self.undecodable += error is None
                why = f"malformed pusher:connection_established (data {str(raw)[:80]!r}): reconnecting"
                return [ClientEvent(PROTOCOL_ERROR, None, raw, raw, error=why)]
            self.state = ClientState.CONNECTED
            self.socket_id = socket_id
            timeout = data.get("activity_timeout")
            if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and 0 < timeout < 1e9:
                self.activity_timeout = min(120.0, float(timeout))
            out: list[ClientEvent] = []
            for name in self.channels:
                out += self._send_subscribe(name)
            return [ClientEvent(event, None, data, raw), *out]
        if event == "pusher:ping":
            self._out.append(json.dumps({"event": "pusher:pong", "data": {}}))
            return []
        if event == "pusher:pong":
            return []
        if event.startswith("pusher_internal:"):
            # pusher-js re-emits internal events under the public pusher: name.
            public = "pusher:" + event[len("pusher_internal:") :]
            if event == "pusher_internal:subscription_succeeded" and channel in self.channels:
                self.channels[channel] = True
            return [ClientEvent(public, channel, data, raw, error=error)]
        user_id = message.get("user_id")
        if (user_id is not None and not isinstance(user_id, (str, int))) or isinstance(user_id, bool):
            user_id = None  # the server stamps a string; anything else is not a user id
        serial, stream_id = message.get("serial"), message.get("stream_id")
        if not isinstance(serial, int) or isinstance(serial, bool) or not isinstance(stream_id, str):
            serial, stream_id = None, None  # positions only as the server stamps them
        uid = None if user_id is None else str(user_id)
        return [
            ClientEvent(event, channel, data, raw, uid, error, serial, stream_id[:64] if stream_id else None)
        ]

    # ------------------------------------------------------------------ application side

    def subscribe(self, channel: str) -> list[ClientEvent]:
        """Subscribe now if connected, else on connection. Returns local errors as events."""
        if not is_valid_channel_name(channel):
            raise ValueError(f"invalid channel name {channel!r}: use up to 200 of a-z A-Z 0-9 _ - = @ , . ;")
        if channel in self.channels:
            return []
        self.channels[channel] = False
        if self.state is ClientState.CONNECTED:
            return self._send_subscribe(channel)
        return []

    def unsubscribe(self, channel: str) -> None:
        """Leave ``channel``."""
        if self.channels.pop(channel, None) is not None and self.state is ClientState.CONNECTED:
            self._out.append(json.dumps({"event": "pusher:unsubscribe", "data": {"channel": channel}}))

    def _send_subscribe(self, channel: str) -> list[ClientEvent]:
        assert self.socket_id is not None
        data: dict[str, Any] = {"channel": channel, "auth": ""}
        kind = channel_kind(channel)
        if kind in (ChannelKind.PRIVATE, ChannelKind.ENCRYPTED, ChannelKind.PRESENCE):
            try:
                data.update(self._authorize(channel))
            except Exception as exc:
                # As pusher-js does when its authorizer fails (channel.ts): a local subscription_error.
                err = {"type": "AuthError", "error": str(exc), "status": 0}
                return [ClientEvent("pusher:subscription_error", channel, err, json.dumps(err))]
        self._out.append(json.dumps({"event": "pusher:subscribe", "data": data}))
        return []

    def _authorize(self, channel: str) -> dict[str, str]:
        assert self.socket_id is not None
        if self._authorizer is not None:
            return self._authorizer(self.socket_id, channel)
        if self._secret is None:
            raise PermissionError(f"{channel} needs a signature: give the secret or an authorizer")
        if channel_kind(channel) is ChannelKind.PRESENCE:
            user = self.user or {}
            if "id" not in user:
                raise PermissionError(f"{channel} needs a member: give user={{'id': ..., 'info': ...}}")
            channel_data = json.dumps({"user_id": str(user["id"]), "user_info": user.get("info")})
            auth = signatures.channel_auth(self.key, self._secret, self.socket_id, channel, channel_data)
            return {"auth": auth, "channel_data": channel_data}
        return {"auth": signatures.channel_auth(self.key, self._secret, self.socket_id, channel)}

    def trigger(self, channel: str, event: str, data: Any) -> None:
        """Send a client event (``client-`` names on private and presence channels)."""
        if not event.startswith("client-"):
            raise ValueError(f"client events must be named client-..., got {event!r}")
        self._out.append(json.dumps({"event": event, "channel": channel, "data": data}))

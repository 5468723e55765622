"""The client side of the protocol, sans-I/O: what pusher-js does, for Python receivers.

Feed it frames with :meth:`ClientProtocol.receive`, take frames to send from
:meth:`ClientProtocol.data_to_send`, and call :meth:`ClientProtocol.tick` about once a second for
heartbeats. Subscriptions are remembered and re-sent after every (re)connection, as pusher-js does
(``channels.ts`` ``subscribeAll``).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import signatures
from .channels import ChannelKind, channel_kind, is_valid_channel_name

__all__ = ["ClientEvent", "ClientProtocol", "ClientState"]

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


def _decode(data: Any) -> tuple[Any, str | None]:
    if isinstance(data, str):
        try:
            return json.loads(data), data
        except ValueError:
            return data, data
    return data, None if data is None else json.dumps(data)


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
        """One frame from the server; returns the events it carries for the application."""
        self._last_heard = now
        self._ping_sent = None
        try:
            message = json.loads(text)
        except ValueError:
            return [ClientEvent("livewidget:bad_frame", None, text, text)]
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            return [ClientEvent("livewidget:bad_frame", None, text, text)]
        event: str = message["event"]
        channel = message.get("channel")
        data, raw = _decode(message.get("data"))
        if event == "pusher:connection_established":
            self.state = ClientState.CONNECTED
            self.socket_id = str(data["socket_id"])
            timeout = data.get("activity_timeout")
            if timeout:
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
            return [ClientEvent(public, channel, data, raw)]
        user_id = message.get("user_id")
        return [ClientEvent(event, channel, data, raw, None if user_id is None else str(user_id))]

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

"""The sans-I/O core of one Pusher app: connections, channels, presence, users and cache.

Nothing here touches a socket, a clock or an event loop. A transport calls :meth:`Hub.open`,
:meth:`Hub.receive`, :meth:`Hub.close`, :meth:`Hub.tick` and the REST entry points with the current
time (seconds, as from :func:`time.time`) and carries out the :class:`~.messages.Action` objects
they return, in order.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from ..exceptions import ProtocolError, SubscriptionError
from . import signatures
from ._json import JSONDepthError, loads_bounded
from .channels import (
    USER_CHANNEL_PREFIX,
    ChannelKind,
    channel_kind,
    is_cache,
    is_valid_channel_name,
    needs_auth,
)
from .config import AppConfig
from .history import Forget, History, Replay, Rewind, RewindError, Store, StreamEvent, parse_rewind
from .messages import Action, Close, CloseCode, Send, Webhook, dumps, encode, error_frame

__all__ = ["Channel", "Connection", "ConnectionState", "Hub"]

_PONG = encode("pusher:pong", {})
_PING = encode("pusher:ping", {})
_SUBSCRIPTION_COUNT_THROTTLE = 5.0  # seconds, for channels over 100 subscribers (reference §1.10)


class ConnectionState(enum.IntEnum):
    """Where a connection is in its life."""

    OPEN = 1
    CLOSING = 2  # the core asked the transport to close it; frames from it are ignored
    CLOSED = 3


class Connection:
    """The protocol state of one client connection.

    ``transport`` is the transport's own handle for the socket; the core never looks at it.
    """

    __slots__ = (
        "__weakref__",
        "_token_time",
        "_tokens",
        "channels",
        "last_seen",
        "ping_sent_at",
        "socket_id",
        "state",
        "transport",
        "user_id",
        "user_info",
        "watchlist",
    )

    def __init__(self, socket_id: str, now: float, transport: Any = None) -> None:
        self.socket_id = socket_id
        self.transport = transport
        self.state = ConnectionState.OPEN
        self.channels: dict[str, Channel] = {}
        self.user_id: str | None = None  # set by a successful pusher:signin
        self.user_info: Any = None
        self.watchlist: tuple[str, ...] = ()
        self.last_seen = now
        self.ping_sent_at: float | None = None
        self._tokens = 0.0
        self._token_time = now

    def __repr__(self) -> str:
        return f"<Connection {self.socket_id} {self.state.name.lower()}>"


class Channel:
    """An occupied channel: its subscribers and, for presence, its members."""

    __slots__ = ("_count_sent", "_count_sent_at", "kind", "members", "name", "subscribers")

    def __init__(self, name: str) -> None:
        self.name = name
        self.kind = channel_kind(name)
        # For presence channels the value is the member's user id, else None.
        self.subscribers: dict[Connection, str | None] = {}
        # user_id -> [user_info, number of this user's connections subscribed]
        self.members: dict[str, list[Any]] = {}
        self._count_sent: int | None = None
        self._count_sent_at = 0.0

    def presence_data(self) -> str:
        """The ``data`` of a presence ``subscription_succeeded`` (spec *Presence Channel Events*)."""
        ids = list(self.members)
        hash_ = {uid: m[0] for uid, m in self.members.items()}
        return dumps({"presence": {"ids": ids, "hash": hash_, "count": len(ids)}})


def _new_socket_id() -> str:
    # pusher-http-python socket_id_re = \A\d+\.\d+\Z ; unguessable (reference §1.3)
    return f"{secrets.randbelow(10**9)}.{secrets.randbelow(10**9)}"


class Hub:
    """All state of one app on this server process.

    Parameters
    ----------
    config:
        The app's credentials, features and limits.
    new_socket_id:
        Makes socket ids; tests pass a deterministic one.
    history:
        The app's channel history (:mod:`.history`): positions on published events, rewind on
        subscribe, the history REST API. None: a plain Pusher hub (events carry no position).
    """

    def __init__(
        self,
        config: AppConfig,
        *,
        new_socket_id: Callable[[], str] = _new_socket_id,
        history: History | None = None,
    ) -> None:
        self.config = config
        self._new_socket_id = new_socket_id
        self.history = history
        self._to_store: list[tuple[str, str, Any]] = []  # events awaiting a deferred history's storage
        self.streams: dict[str, set[Any]] = {}  # channel -> Server-Sent Events streams (transport handles)
        self._next_expiry = 0.0
        self.connections: dict[str, Connection] = {}
        self.channels: dict[str, Channel] = {}
        self.users: dict[str, set[Connection]] = {}  # signed-in user id -> connections
        self.watchers: dict[str, set[Connection]] = {}  # watched user id -> watching connections
        # cache channel -> (event, data, expires_at); outlives the channel (reference §1.8)
        self.cache: dict[str, tuple[str, str, float]] = {}
        self._cache_miss_sent: set[str] = set()
        # delayed webhooks: key -> (due time, event); keys ("vacated", ch) / ("removed", ch, uid)
        self._delayed: dict[tuple[str, ...], tuple[float, dict[str, Any]]] = {}
        self._count_dirty: set[str] = set()

    # ------------------------------------------------------------------ connection lifecycle

    def open(self, now: float, transport: Any = None) -> tuple[Connection, list[Action]]:
        """A client connected: register it and greet it with ``pusher:connection_established``."""
        cfg = self.config
        if cfg.max_connections is not None and len(self.connections) >= cfg.max_connections:
            conn = Connection(self._new_socket_id(), now, transport)
            conn.state = ConnectionState.CLOSED
            msg = "Over connection quota"
            return conn, [Close(conn, CloseCode.OVER_QUOTA, msg, error_frame(msg, 4004))]
        socket_id = self._new_socket_id()
        while socket_id in self.connections:
            socket_id = self._new_socket_id()
        conn = Connection(socket_id, now, transport)
        conn._tokens = float(cfg.max_client_events_per_second or 0)
        self.connections[socket_id] = conn
        data = dumps({"socket_id": socket_id, "activity_timeout": cfg.activity_timeout})
        return conn, [Send((conn,), encode("pusher:connection_established", data))]

    def close(self, conn: Connection, now: float) -> list[Action]:
        """The transport lost ``conn`` (any reason): leave every channel and forget it."""
        if conn.state is ConnectionState.CLOSED:
            return []
        conn.state = ConnectionState.CLOSED
        actions: list[Action] = []
        for channel in list(conn.channels.values()):
            self._leave(conn, channel, now, actions)
        if conn.user_id is not None:
            conns = self.users.get(conn.user_id)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del self.users[conn.user_id]
                    self._user_offline(conn.user_id, actions)
        for uid in conn.watchlist:
            watching = self.watchers.get(uid)
            if watching is not None:
                watching.discard(conn)
                if not watching:
                    del self.watchers[uid]
        self.connections.pop(conn.socket_id, None)
        return actions

    def receive(self, conn: Connection, text: str | bytes, now: float) -> list[Action]:
        """One frame from ``conn``. Bad input is answered with ``pusher:error``; never raises."""
        if conn.state is not ConnectionState.OPEN:
            return []
        conn.last_seen = now
        conn.ping_sent_at = None
        if isinstance(text, bytes):
            # spec *WebSocket data messages*: binary frames are not supported
            return [Send((conn,), error_frame("Binary frames are not supported; send text", None))]
        try:
            # bounded: 1,000 levels of [ would overflow the parser's recursion (issue 14 item 7)
            message = loads_bounded(text)
        except JSONDepthError as exc:
            return [Send((conn,), error_frame(exc.message))]
        except ValueError:
            return [Send((conn,), error_frame("Invalid JSON: each frame must be a JSON object"))]
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            return [Send((conn,), error_frame('Invalid message: expected {"event": string, ...}'))]
        event: str = message["event"]
        try:
            if event == "pusher:ping":
                return [Send((conn,), _PONG)]
            if event == "pusher:pong":
                return []
            if event == "pusher:subscribe":
                return self._subscribe(conn, message.get("data"), now)
            if event == "pusher:unsubscribe":
                return self._unsubscribe(conn, message.get("data"), now)
            if event == "pusher:signin":
                return self._signin(conn, message.get("data"))
            if event.startswith("client-"):
                return self._client_event(conn, message, now)
            if event.startswith(("pusher:", "pusher_internal:")):
                raise ProtocolError(f"Clients may not send reserved event {event!r}")
            raise ProtocolError(f"Unsupported event received on socket: {event}")
        except SubscriptionError as exc:
            # Hosted style (code null) plus Soketi-style subscription_error on the channel,
            # so channel.bind('pusher:subscription_error') hears it; the socket stays open (§1.5).
            data = message.get("data")
            channel = data.get("channel") if isinstance(data, dict) else None
            actions: list[Action] = [Send((conn,), error_frame(exc.message, None))]
            if isinstance(channel, str):
                payload = dumps({"type": exc.kind, "error": exc.message, "status": exc.status})
                actions.append(Send((conn,), encode("pusher:subscription_error", payload, channel)))
            return actions
        except ProtocolError as exc:
            return [Send((conn,), error_frame(exc.message, exc.code))]

    def tick(self, now: float) -> list[Action]:
        """Housekeeping, called about once a second: heartbeats, delayed webhooks, cache expiry."""
        actions: list[Action] = []
        cfg = self.config
        idle_after = cfg.activity_timeout
        for conn in list(self.connections.values()):
            if conn.state is not ConnectionState.OPEN:
                continue
            if conn.ping_sent_at is not None:
                if now - conn.ping_sent_at >= cfg.pong_timeout:
                    conn.state = ConnectionState.CLOSING
                    msg = "Pong reply not received"
                    actions.append(Close(conn, CloseCode.PONG_TIMEOUT, msg))
            elif now - conn.last_seen >= idle_after:
                conn.ping_sent_at = now
                actions.append(Send((conn,), _PING))
        if self._delayed:
            for key, (due, event) in list(self._delayed.items()):
                if due <= now:
                    del self._delayed[key]
                    actions.append(Webhook(event, int(due * 1000)))
        if self._count_dirty:
            for name in list(self._count_dirty):
                channel = self.channels.get(name)
                if channel is None:
                    self._count_dirty.discard(name)
                elif now - channel._count_sent_at >= _SUBSCRIPTION_COUNT_THROTTLE:
                    self._count_dirty.discard(name)
                    self._send_subscription_count(channel, now, actions)
        for name, (_, _, expires) in list(self.cache.items()):
            if expires <= now:
                del self.cache[name]
                self._cache_miss_sent.discard(name)
        if self.history is not None:
            self._history_tick(now, actions)
        return actions

    def shutdown(self) -> list[Action]:
        """The server is stopping: ask every client to reconnect (4200).

        ``pusher:error`` {4200} comes first, then the 4200 close, as Soketi, Reverb and Sockudo do:
        some clients (pysher on websocket-client < 1.9) reconnect only on the message (reference §1.11).
        """
        msg = "Server is shutting down; reconnect"
        frame = error_frame(msg, CloseCode.RECONNECT)
        return [
            self._closing(conn, CloseCode.RECONNECT, msg, frame)
            for conn in list(self.connections.values())
            if conn.state is ConnectionState.OPEN
        ]

    @staticmethod
    def _closing(conn: Connection, code: int, reason: str, frame: str | None = None) -> Close:
        conn.state = ConnectionState.CLOSING
        return Close(conn, code, reason, frame)

    # ------------------------------------------------------------------ subscriptions

    def _subscribe(self, conn: Connection, data: object, now: float) -> list[Action]:
        if not isinstance(data, dict):
            raise SubscriptionError(
                "pusher:subscribe needs data {channel, auth?, channel_data?}", "InvalidMessage", 400
            )
        name = data.get("channel")
        cfg = self.config
        if not is_valid_channel_name(name, cfg.max_channel_name_length):
            raise SubscriptionError(
                f"Invalid channel name {name!r}: use up to {cfg.max_channel_name_length} of "
                "a-z A-Z 0-9 _ - = @ , . ;",
                "InvalidChannel",
                400,
            )
        assert isinstance(name, str)
        kind = channel_kind(name)
        auth = data.get("auth")
        channel_data = data.get("channel_data")
        user_id: str | None = None
        user_info: Any = None
        if kind is ChannelKind.USER:
            # Only the signed-in user may hear its own #server-to-user channel (reference §1.7).
            if conn.user_id is None or name != USER_CHANNEL_PREFIX + conn.user_id:
                raise SubscriptionError(
                    f"Subscription to {name} requires signing in as that user first", "AuthError"
                )
        elif needs_auth(kind):
            if kind is ChannelKind.PRESENCE and channel_data is None and conn.user_id is not None:
                # pusher-js >= 7: a signed-in connection may join presence without channel_data.
                self._check_auth(conn, name, auth, None)
                user_id, user_info = conn.user_id, conn.user_info
            else:
                if kind is ChannelKind.PRESENCE and not isinstance(channel_data, str):
                    raise SubscriptionError(
                        f"Presence channel {name} needs channel_data: a JSON string with user_id",
                        "AuthError",
                    )
                self._check_auth(
                    conn,
                    name,
                    auth,
                    channel_data if kind is ChannelKind.PRESENCE else None,
                )
                if kind is ChannelKind.PRESENCE:
                    assert isinstance(channel_data, str)
                    user_id, user_info = self._parse_channel_data(channel_data)
        # Authorized like the subscription itself: a private channel's history is private.
        rewind = self._parse_rewind(name, data["rewind"]) if "rewind" in data else None

        channel = self.channels.get(name)
        if channel is not None and conn in channel.subscribers:
            # Idempotent re-subscribe: confirm again, change nothing (but replay what was asked).
            again: list[Action] = [Send((conn,), self._succeeded_frame(channel))]
            if rewind is not None:
                self._rewind(conn, name, rewind, now, again)
            return again

        actions: list[Action] = []
        if channel is not None and kind is ChannelKind.PRESENCE:
            assert user_id is not None
            limit = cfg.max_presence_members
            if user_id not in channel.members and limit is not None and len(channel.members) >= limit:
                raise SubscriptionError(
                    f"Presence channel {name} is full ({limit} members)", "LimitReached", 4100
                )
        if channel is None:
            channel = self.channels[name] = self._new_channel(name)
            self._occupied(name, now, actions)
        channel.subscribers[conn] = user_id
        conn.channels[name] = channel
        if kind is ChannelKind.PRESENCE:
            assert user_id is not None
            self._add_member(conn, channel, user_id, user_info, now, actions)
        actions.append(Send((conn,), self._succeeded_frame(channel, user_id, user_info)))
        if is_cache(name):
            cached = self.cache.get(name)
            if cached is not None and cached[2] > now:
                actions.append(Send((conn,), encode(cached[0], cached[1], name)))
            else:
                actions.append(Send((conn,), encode("pusher:cache_miss", "{}", name)))
                if name not in self._cache_miss_sent:  # de-duplicated, as hosted Pusher does
                    self._cache_miss_sent.add(name)
                    actions.append(Webhook({"name": "cache_miss", "channel": name}, int(now * 1000)))
        if rewind is not None:
            self._rewind(conn, name, rewind, now, actions)
        self._subscription_count_changed(channel, now, actions)
        return actions

    def _check_auth(self, conn: Connection, name: str, auth: object, channel_data: str | None) -> None:
        cfg = self.config
        expected = signatures.channel_auth(cfg.key, cfg.secret, conn.socket_id, name, channel_data)
        if signatures.verify_auth(expected, auth):
            return
        signed = f"{conn.socket_id}:{name}" + (f":{channel_data}" if channel_data is not None else "")
        if not isinstance(auth, str) or ":" not in auth:
            raise SubscriptionError(
                f"Invalid auth for {name}: expected '<key>:<HMAC SHA256 hex digest of {signed}>'"
            )
        given_key, _, given_sig = auth.partition(":")
        if given_key != cfg.key:
            raise SubscriptionError(f"Invalid key in subscription auth data: '{given_key}'")
        # Hosted wording (reference §1.5): names the signed input, never the right signature.
        raise SubscriptionError(
            f"Invalid signature: Expected HMAC SHA256 hex digest of {signed}, but got {given_sig}"
        )

    def _parse_channel_data(self, channel_data: str) -> tuple[str, Any]:
        cfg = self.config
        try:
            parsed = loads_bounded(channel_data)
        except JSONDepthError as exc:
            raise SubscriptionError(f"channel_data: {exc.message}", "AuthError") from None
        except ValueError:
            raise SubscriptionError("channel_data is not valid JSON", "AuthError") from None
        if not isinstance(parsed, dict) or "user_id" not in parsed:
            raise SubscriptionError("channel_data must be a JSON object with a user_id", "AuthError")
        raw_id = parsed["user_id"]
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            raise SubscriptionError("user_id must be a string (or a number)", "AuthError")
        user_id = str(raw_id)  # JS clients key members by string (reference §1.5)
        if not user_id or len(user_id) > cfg.max_user_id_length:
            raise SubscriptionError(f"user_id must be 1 to {cfg.max_user_id_length} characters", "AuthError")
        user_info = parsed.get("user_info")
        limit = cfg.max_presence_user_info
        if limit is not None and user_info is not None:
            size = len(dumps(user_info).encode())
            if size > limit:
                raise SubscriptionError(
                    f"user_info is {size} bytes; the limit is {limit}", "LimitReached", 4100
                )
        return user_id, user_info

    def _succeeded_frame(self, channel: Channel, user_id: str | None = None, user_info: Any = None) -> str:
        # user_id/user_info: the subscriber itself (a subclass may list it before the cluster does)
        data = channel.presence_data() if channel.kind is ChannelKind.PRESENCE else "{}"
        return encode("pusher_internal:subscription_succeeded", data, channel.name)

    def _new_channel(self, name: str) -> Channel:
        """A channel gets its first subscriber on this process (a hook for the cluster hub)."""
        return Channel(name)

    def _add_member(
        self,
        conn: Connection,
        channel: Channel,
        user_id: str,
        user_info: Any,
        now: float,
        actions: list[Action],
    ) -> None:
        """``conn`` joined presence ``channel`` as ``user_id``: a new member unless another of its
        connections is there already (spec *Presence channels*: one member per user)."""
        member = channel.members.get(user_id)
        if member is None:
            channel.members[user_id] = [user_info, 1]
            others = [c for c in channel.subscribers if c is not conn]
            if others:
                added = dumps({"user_id": user_id, "user_info": user_info})
                actions.append(Send(others, encode("pusher_internal:member_added", added, channel.name)))
            self._member_event("member_added", channel.name, user_id, now, actions)
        else:
            member[1] += 1

    def _remove_member(self, channel: Channel, user_id: str, now: float, actions: list[Action]) -> None:
        """One of ``user_id``'s connections left presence ``channel`` (already out of its subscribers)."""
        member = channel.members.get(user_id)
        if member is not None:
            member[1] -= 1
            if member[1] <= 0:
                del channel.members[user_id]
                if channel.subscribers:
                    removed = dumps({"user_id": user_id})
                    actions.append(
                        Send(
                            tuple(channel.subscribers),
                            encode("pusher_internal:member_removed", removed, channel.name),
                        )
                    )
                self._member_event("member_removed", channel.name, user_id, now, actions)

    def _unsubscribe(self, conn: Connection, data: object, now: float) -> list[Action]:
        if not isinstance(data, dict) or not isinstance(data.get("channel"), str):
            raise ProtocolError("pusher:unsubscribe needs data {channel}")
        channel = conn.channels.get(data["channel"])
        actions: list[Action] = []
        if channel is not None:  # unsubscribing from what one is not in is a no-op (no reply)
            self._leave(conn, channel, now, actions)
        return actions

    def _leave(self, conn: Connection, channel: Channel, now: float, actions: list[Action]) -> None:
        user_id = channel.subscribers.pop(conn, None)
        conn.channels.pop(channel.name, None)
        if user_id is not None:
            self._remove_member(channel, user_id, now, actions)
        if not channel.subscribers:
            del self.channels[channel.name]
            self._count_dirty.discard(channel.name)
            self._vacated(channel.name, now, actions)
        else:
            self._subscription_count_changed(channel, now, actions)

    # ------------------------------------------------------------------ webhooks (reference §2.3)

    def _occupied(self, name: str, now: float, actions: list[Action]) -> None:
        if self._delayed.pop(("vacated", name), None) is not None:
            return  # a quick re-occupation cancels both the vacated and the occupied
        if self.config.webhook_urls:
            actions.append(Webhook({"name": "channel_occupied", "channel": name}, int(now * 1000)))

    def _vacated(self, name: str, now: float, actions: list[Action]) -> None:
        if self.config.webhook_urls:
            event = {"name": "channel_vacated", "channel": name}
            self._delayed[("vacated", name)] = (now + self.config.webhook_delay, event)

    def _member_event(self, kind: str, channel: str, user_id: str, now: float, actions: list[Action]) -> None:
        if not self.config.webhook_urls:
            return
        key = ("removed", channel, user_id)
        if kind == "member_added":
            if self._delayed.pop(key, None) is None:
                event = {"name": "member_added", "channel": channel, "user_id": user_id}
                actions.append(Webhook(event, int(now * 1000)))
        else:
            event = {"name": "member_removed", "channel": channel, "user_id": user_id}
            self._delayed[key] = (now + self.config.webhook_delay, event)

    def _subscription_count_changed(self, channel: Channel, now: float, actions: list[Action]) -> None:
        if not self.config.subscription_count or channel.kind is ChannelKind.PRESENCE:
            return
        if len(channel.subscribers) > 100 and now - channel._count_sent_at < _SUBSCRIPTION_COUNT_THROTTLE:
            self._count_dirty.add(channel.name)
            return
        self._send_subscription_count(channel, now, actions)

    def _send_subscription_count(self, channel: Channel, now: float, actions: list[Action]) -> None:
        count = len(channel.subscribers)
        if count == channel._count_sent:
            return
        channel._count_sent = count
        channel._count_sent_at = now
        payload = dumps({"subscription_count": count})
        actions.append(
            Send(
                tuple(channel.subscribers),
                encode("pusher_internal:subscription_count", payload, channel.name),
            )
        )
        if self.config.webhook_urls:
            event = {"name": "subscription_count", "channel": channel.name, "subscription_count": count}
            actions.append(Webhook(event, int(now * 1000)))

    # ------------------------------------------------------------------ client events (§1.6)

    def _client_event(self, conn: Connection, message: dict[str, Any], now: float) -> list[Action]:
        cfg = self.config
        event: str = message["event"]
        name = message.get("channel")
        if not cfg.client_events:
            raise ProtocolError("Client events are disabled on this app; enable them in the server settings")
        if not isinstance(name, str):
            raise ProtocolError(f"Client event {event!r} needs a channel")
        if len(event) > cfg.max_event_name_length:
            raise ProtocolError(f"Event name longer than {cfg.max_event_name_length} characters")
        channel = conn.channels.get(name)
        if channel is None:
            raise ProtocolError(
                f"Cannot broadcast client event (connection not subscribed to channel {name})"
            )
        if channel.kind not in (ChannelKind.PRIVATE, ChannelKind.PRESENCE):
            raise ProtocolError(
                f"Client events are only supported on private and presence channels, not {name}"
            )
        rate = cfg.max_client_events_per_second
        if rate is not None:
            # token bucket: `rate` tokens, refilled continuously
            conn._tokens = min(float(rate), conn._tokens + (now - conn._token_time) * rate)
            conn._token_time = now
            if conn._tokens < 1.0:
                raise ProtocolError(
                    f"Client event rejected - only {rate:g} client events per second allowed",
                    CloseCode.CLIENT_EVENT_RATE_LIMIT,
                )
            conn._tokens -= 1.0
        data = message.get("data")
        text = data if isinstance(data, str) else dumps(data)
        if cfg.max_data_size is not None and len(text.encode()) > cfg.max_data_size:
            raise ProtocolError(
                f"Client event data is {len(text.encode())} bytes; the limit is {cfg.max_data_size}"
            )
        user_id = channel.subscribers.get(conn)
        out: dict[str, Any] = {"event": event, "channel": name, "data": text}
        if channel.kind is ChannelKind.PRESENCE and user_id is not None:
            out["user_id"] = user_id
        actions: list[Action] = []
        if self.history is not None:
            frame = self._record(name, event, text, now, out.get("user_id"), conn, actions)
            if frame is not None:
                self._relay_client_event(conn, channel, frame, actions)
            self._flush_stored(actions)
        else:
            self._relay_client_event(conn, channel, dumps(out), actions)
        if cfg.webhook_urls:
            hook = {
                "name": "client_event",
                "channel": name,
                "event": event,
                "data": text,
                "socket_id": conn.socket_id,
            }
            if user_id is not None and "user_id" in out:
                hook["user_id"] = user_id
            actions.append(Webhook(hook, int(now * 1000)))
        return actions

    def _relay_client_event(
        self, conn: Connection, channel: Channel, frame: str, actions: list[Action]
    ) -> None:
        others = [c for c in channel.subscribers if c is not conn]  # never echoed
        if others:
            actions.append(Send(others, frame))

    # ------------------------------------------------------------------ users (§1.7)

    def _signin(self, conn: Connection, data: object) -> list[Action]:
        cfg = self.config
        if not isinstance(data, dict):
            raise ProtocolError("pusher:signin needs data {auth, user_data}")
        user_data = data.get("user_data")
        if not isinstance(user_data, str):
            raise ProtocolError("pusher:signin user_data must be a JSON string")
        expected = signatures.signin_auth(cfg.key, cfg.secret, conn.socket_id, user_data)
        if not signatures.verify_auth(expected, data.get("auth")):
            given = data.get("auth")
            sig = given.partition(":")[2] if isinstance(given, str) else given
            raise ProtocolError(
                "Invalid signature: Expected HMAC SHA256 hex digest of "
                f"{conn.socket_id}::user::{user_data}, but got {sig}"
            )
        try:
            parsed = loads_bounded(user_data)
        except JSONDepthError as exc:
            raise ProtocolError(f"pusher:signin user_data: {exc.message}") from None
        except ValueError:
            raise ProtocolError("pusher:signin user_data is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise ProtocolError("pusher:signin user_data must be a JSON object with an id")
        user_id = parsed.get("id")
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user_id = str(user_id)
        if not isinstance(user_id, str) or not user_id:
            raise ProtocolError("pusher:signin user_data needs a non-empty string id")
        # The limits of a presence member (presence-channels.md: user id <= 128 characters, user
        # object <= 1 KB; reference §1.12, §3): the info is kept for the connection's lifetime and is
        # what a presence subscription without channel_data joins with.
        if len(user_id) > cfg.max_user_id_length:
            raise ProtocolError(
                f"pusher:signin user id is {len(user_id)} characters; the limit is {cfg.max_user_id_length}",
                CloseCode.UNAUTHORIZED,
            )
        user_info = parsed.get("user_info")
        limit = cfg.max_presence_user_info
        if limit is not None and user_info is not None:
            size = len(dumps(user_info).encode())
            if size > limit:
                raise ProtocolError(
                    f"pusher:signin user_info is {size} bytes; the limit is {limit}",
                    CloseCode.OVER_CAPACITY,
                )
        if conn.user_id is not None and conn.user_id != user_id:
            raise ProtocolError(f"This connection is already signed in as {conn.user_id}")
        actions: list[Action] = []
        first_time = conn.user_id is None
        conn.user_id = user_id
        conn.user_info = user_info
        if first_time:
            conns = self.users.setdefault(user_id, set())
            conns.add(conn)
            if len(conns) == 1:
                self._user_online(user_id, actions)
        actions.append(Send((conn,), encode("pusher:signin_success", dumps({"user_data": user_data}))))
        watchlist = parsed.get("watchlist")
        if first_time and isinstance(watchlist, list):
            ids = [str(w) for w in watchlist if isinstance(w, (str, int))]
            if len(ids) > cfg.max_watchlist:
                ids = ids[: cfg.max_watchlist]
                actions.append(
                    Send(
                        (conn,),
                        error_frame(
                            f"Watchlist limit exceeded: only the first {cfg.max_watchlist} "
                            "user ids are watched",
                            CloseCode.WATCHLIST_LIMIT,
                        ),
                    )
                )
            conn.watchlist = tuple(dict.fromkeys(ids))
            for uid in conn.watchlist:
                self.watchers.setdefault(uid, set()).add(conn)
            online = [uid for uid in conn.watchlist if self._is_online(uid)]
            offline = [uid for uid in conn.watchlist if not self._is_online(uid)]
            events = []
            if online:
                events.append({"name": "online", "user_ids": online})
            if offline:
                events.append({"name": "offline", "user_ids": offline})
            if events:
                payload = dumps({"events": events})
                actions.append(Send((conn,), encode("pusher_internal:watchlist_events", payload)))
        return actions

    def _user_online(self, user_id: str, actions: list[Action]) -> None:
        """``user_id``'s first connection here signed in."""
        self._notify_watchers(user_id, "online", actions)

    def _user_offline(self, user_id: str, actions: list[Action]) -> None:
        """``user_id``'s last signed-in connection here closed."""
        self._notify_watchers(user_id, "offline", actions)

    def _is_online(self, user_id: str) -> bool:
        return user_id in self.users

    def _notify_watchers(self, user_id: str, state: str, actions: list[Action]) -> None:
        watching = self.watchers.get(user_id)
        if watching:
            payload = dumps({"events": [{"name": state, "user_ids": [user_id]}]})
            actions.append(Send(tuple(watching), encode("pusher_internal:watchlist_events", payload)))

    def terminate_user(self, user_id: str) -> list[Action]:
        """Close every signed-in connection of ``user_id`` with 4009 (terminate_connections)."""
        msg = "Connection terminated by the server"
        return [
            self._closing(conn, CloseCode.UNAUTHORIZED, msg, error_frame(msg, CloseCode.UNAUTHORIZED))
            for conn in list(self.users.get(user_id, ()))
            if conn.state is ConnectionState.OPEN
        ]

    # ------------------------------------------------------------------ server-side publishing

    def trigger(
        self,
        event: str,
        data: str,
        channels: Iterable[str],
        now: float,
        exclude_socket_id: str | None = None,
    ) -> list[Action]:
        """Deliver ``event`` with ``data`` (relayed byte-for-byte) to every subscriber of each
        channel except ``exclude_socket_id``. Inputs are assumed validated (see :mod:`.rest`)."""
        actions: list[Action] = []
        excluded = self.connections.get(exclude_socket_id) if exclude_socket_id else None
        ttl = self.config.cache_ttl
        history = self.history
        for name in channels:
            if is_cache(name):
                self.cache[name] = (event, data, now + ttl)
                self._cache_miss_sent.discard(name)
            if history is not None and not name.startswith(USER_CHANNEL_PREFIX):
                frame = self._record(name, event, data, now, None, excluded, actions)
                if frame is None:
                    continue  # delivered once stored (deliver)
            else:
                frame = encode(event, data, name)
            channel = self.channels.get(name)
            if channel is None:
                continue
            targets = _subscribers_but(channel.subscribers, excluded)
            if targets:
                actions.append(Send(targets, frame))
        if history is not None:
            self._flush_stored(actions)
        return actions

    def send_to_user(self, user_id: str, event: str, data: str, now: float) -> list[Action]:
        """Deliver to ``#server-to-user-<user_id>`` (what the SDK's ``send_to_user`` triggers)."""
        return self.trigger(event, data, [USER_CHANNEL_PREFIX + user_id], now)

    # ------------------------------------------------------------------ history hooks (.history)

    def _parse_rewind(self, name: str, value: object) -> Rewind:
        max_count = self.history.max_rewind if self.history is not None else 1000
        try:
            return parse_rewind(value, max_count)
        except RewindError as exc:
            raise SubscriptionError(f"Invalid rewind for {name}: {exc}", "InvalidRewind", 400) from None

    def _rewind(self, conn: Connection, name: str, rewind: Rewind, now: float, actions: list[Action]) -> None:
        """Replay what ``conn`` asked for, then ``pusher:rewind_complete``; all before any live event
        (a deferred history replays only stored events; later ones reach ``conn`` live on storage)."""
        if self.history is None or name.startswith(USER_CHANNEL_PREFIX):  # send_to_user keeps none
            summary = dumps({"complete": False, "historical_count": 0, "reason": "unavailable"})
            actions.append(Send((conn,), encode("pusher:rewind_complete", summary, name)))
            return
        replay = self.history.replay(name, rewind, now)
        stream_id = replay.position.stream_id
        for entry in replay.entries:
            actions.append(Send((conn,), entry.frame(name, stream_id)))
        actions.append(Send((conn,), encode("pusher:rewind_complete", dumps(replay.summary()), name)))

    def _record(
        self,
        name: str,
        event: str,
        data: str,
        now: float,
        user_id: str | None,
        exclude: Connection | None,
        actions: list[Action],
    ) -> str | None:
        """Give a published event its position: the frame to deliver now, or None when delivery
        waits for the history's storage (then a :class:`~.history.Store` action follows)."""
        assert self.history is not None
        entry, stream_id = self.history.append(name, event, data, now, user_id, exclude)
        if self.history.deferred:
            self._to_store.append((name, stream_id, entry))
            return None
        streams = self.streams.get(name)
        if streams:
            actions.append(StreamEvent(tuple(streams), name, stream_id, entry))
        return entry.frame(name, stream_id)

    def _flush_stored(self, actions: list[Action]) -> None:
        if self._to_store:
            actions.append(Store(self.config.app_id, self._to_store))
            self._to_store = []

    def deliver(self, store: Store, now: float) -> list[Action]:
        """The storage holds ``store``'s events: deliver them to the channels' subscribers now."""
        actions: list[Action] = []
        history = self.history
        for name, stream_id, entry in store.entries:
            if history is not None:
                history.committed(name, stream_id, entry.serial)
            excluded, entry.exclude = entry.exclude, None
            streams = self.streams.get(name)
            if streams:
                actions.append(StreamEvent(tuple(streams), name, stream_id, entry))
            channel = self.channels.get(name)
            if channel is None:
                continue
            targets = _subscribers_but(channel.subscribers, excluded)
            if targets:
                actions.append(Send(targets, entry.frame(name, stream_id)))
        return actions

    def open_stream(self, handle: Any, name: str, rewind: Rewind | None, now: float) -> Replay | None:
        """A Server-Sent Events client follows ``name`` from now on (live events come as
        :class:`~.history.StreamEvent` actions); returns what it asked to be replayed first, if anything.
        Replay and registration happen together: nothing is missed or sent twice."""
        assert self.history is not None
        replay = self.history.replay(name, rewind, now) if rewind is not None else None
        self.streams.setdefault(name, set()).add(handle)
        return replay

    def close_stream(self, handle: Any, name: str) -> None:
        """The SSE client ``handle`` of ``name`` is gone."""
        streams = self.streams.get(name)
        if streams is not None:
            streams.discard(handle)
            if not streams:
                del self.streams[name]

    def _history_tick(self, now: float, actions: list[Action]) -> None:
        assert self.history is not None
        if now >= self._next_expiry:
            self._next_expiry = now + 5.0
            self.history.expire(now)
        forgotten = self.history.take_forgotten()
        if forgotten:
            actions.append(Forget(self.config.app_id, forgotten))

    # ------------------------------------------------------------------ queries for REST

    def user_count(self, name: str) -> int:
        """Distinct presence members of ``name`` (0 when unoccupied)."""
        channel = self.channels.get(name)
        return len(channel.members) if channel is not None else 0

    def subscription_count(self, name: str) -> int:
        """Connections subscribed to ``name`` (0 when unoccupied)."""
        channel = self.channels.get(name)
        return len(channel.subscribers) if channel is not None else 0

    def cache_info(self, name: str, now: float) -> dict[str, Any] | None:
        """``{"event", "data", "ttl"}`` of a cache channel's live entry, or None."""
        cached = self.cache.get(name)
        if cached is None or cached[2] <= now:
            return None
        return {"event": cached[0], "data": cached[1], "ttl": max(0, int(cached[2] - now))}


def _subscribers_but(
    subscribers: Iterable[Connection], excluded: Connection | None
) -> tuple[Connection, ...]:
    """A channel's subscribers to deliver to, less the publishing connection (``socket_id`` exclusion,
    Pusher HTTP API "Excluding event recipients")."""
    if excluded is None:
        return tuple(subscribers)
    return tuple(c for c in subscribers if c is not excluded)

"""One app's hub when several server processes share it (scale-out), still sans-I/O.

A :class:`ClusterHub` keeps the same local state as :class:`~.hub.Hub` (this process's connections and
their subscriptions) but never delivers anything that other processes must also see. Instead it asks
for it with cluster actions, which a scale-out adapter (:mod:`livewidget.server.adapters`) carries out:

- :class:`Publish`: a message for every process, this one included (events, client events,
  ``terminate_connections``). Delivering only what comes back from the bus gives one order per app
  for all processes: no process delivers its own events earlier than the others' ones.
- :class:`SyncChannel`, :class:`SyncMember`, :class:`SyncUser`: this process's share of the app's
  state changed (subscribers of a channel, a presence member's first or last connection here, a
  signed-in user's first or last connection here). The adapter folds the shares of all processes
  into cluster-wide counts and announces transitions once, on the bus: ``member_added`` when a
  user's first connection in the whole cluster joins, ``online`` when its first connection signs in.

What comes back from the bus is fed to the ``apply_*`` methods, which update the replica of the
cluster-wide state (presence members, online users) and return ordinary actions for this process's
connections. The replica answers ``subscription_succeeded`` and watchlists without I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .channels import ChannelKind, is_cache
from .history import StreamEvent
from .hub import Channel, Connection, Hub, _subscribers_but
from .messages import Action, Send, dumps, encode

__all__ = ["ClusterHub", "LocalState", "Publish", "SyncChannel", "SyncMember", "SyncUser"]


@dataclass(slots=True)
class Publish(Action):
    """Send ``message`` (a JSON-able list, its first item the kind) to every process of the app.

    Kinds: ``["e", [[event, data, channels, exclude_socket_id], ...]]`` (events, in order),
    ``["c", channel, frame, exclude_socket_id]`` (a client event), ``["t", user_id]`` (terminate).
    With channel history the shared store gives events their positions on the way: each event comes
    back with a fifth item, ``[[serial, stream_id, time_ms] or null, ...]`` (one per channel; null for
    a user channel), a client event with ``[serial, stream_id, time_ms]``.
    """

    message: list[Any]


@dataclass(slots=True)
class SyncChannel(Action):
    """This process now has ``count`` subscribers of ``channel`` (0: none)."""

    channel: str
    count: int


@dataclass(slots=True)
class SyncMember(Action):
    """``user_id`` is now (``present``) or no longer a member of presence ``channel`` on this process.

    ``socket_id`` is the connection that joined: it already has its ``subscription_succeeded`` and
    must not also get ``member_added`` about itself.
    """

    channel: str
    user_id: str
    present: bool
    user_info: Any = None
    socket_id: str = ""


@dataclass(slots=True)
class SyncUser(Action):
    """``user_id`` now has (``online``) or no longer has a signed-in connection on this process."""

    user_id: str
    online: bool


@dataclass
class LocalState:
    """This process's share of one app's state, for a full resynchronisation."""

    channels: dict[str, int]  # channel -> subscribers here
    members: dict[tuple[str, str], Any]  # (presence channel, user_id) -> user_info
    users: list[str]  # signed-in user ids


_CLUSTER_FACTS = (Publish, SyncChannel, SyncMember, SyncUser)


def is_cluster_action(action: Action) -> bool:
    """True for the actions only a scale-out adapter can carry out."""
    return isinstance(action, _CLUSTER_FACTS)


class ClusterHub(Hub):
    """A :class:`Hub` whose deliveries, presence and users span every process of a cluster."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # presence channel -> {user_id: [user_info, 1]}: the members in the whole cluster, as told by
        # the bus. A locally occupied channel's Channel.members is the same dict.
        self.replica: dict[str, dict[str, list[Any]]] = {}
        self.online: set[str] = set()  # signed in somewhere in the cluster, as told by the bus
        # (presence channel, user_id) -> [connections here, user_info]
        self._local_members: dict[tuple[str, str], list[Any]] = {}

    @staticmethod
    def needs_barrier(text: str | bytes) -> bool:
        """Whether answering this frame reads the replica (presence members, cache, online users).

        Before such a frame the adapter waits until every bus message published so far has been
        applied, so a member that joined on another process a moment ago is listed. False positives
        only cost one round trip.
        """
        if isinstance(text, bytes):
            return False
        return (
            "pusher:subscribe" in text and ("presence-" in text or "cache-" in text or '"rewind"' in text)
        ) or ("pusher:signin" in text)

    # ------------------------------------------------------------------ hooks of Hub

    def _new_channel(self, name: str) -> Channel:
        channel = Channel(name)
        if channel.kind is ChannelKind.PRESENCE:
            channel.members = self.replica.setdefault(name, {})
        return channel

    def _succeeded_frame(self, channel: Channel, user_id: str | None = None, user_info: Any = None) -> str:
        if channel.kind is ChannelKind.PRESENCE and user_id is not None and user_id not in channel.members:
            # The bus has not yet told us about the joining user itself: list it anyway.
            ids = [*channel.members, user_id]
            hash_ = {uid: m[0] for uid, m in channel.members.items()}
            hash_[user_id] = user_info
            data = dumps({"presence": {"ids": ids, "hash": hash_, "count": len(ids)}})
            return encode("pusher_internal:subscription_succeeded", data, channel.name)
        return super()._succeeded_frame(channel, user_id, user_info)

    def _add_member(
        self,
        conn: Connection,
        channel: Channel,
        user_id: str,
        user_info: Any,
        now: float,
        actions: list[Action],
    ) -> None:
        key = (channel.name, user_id)
        local = self._local_members.get(key)
        if local is None:
            self._local_members[key] = [1, user_info]
            actions.append(SyncMember(channel.name, user_id, True, user_info, conn.socket_id))
        else:
            local[0] += 1

    def _remove_member(self, channel: Channel, user_id: str, now: float, actions: list[Action]) -> None:
        key = (channel.name, user_id)
        local = self._local_members.get(key)
        if local is None:
            return
        local[0] -= 1
        if local[0] <= 0:
            del self._local_members[key]
            actions.append(SyncMember(channel.name, user_id, False))

    def _occupied(self, name: str, now: float, actions: list[Action]) -> None:
        pass  # channel_occupied is decided cluster-wide (the first process to gain the channel)

    def _vacated(self, name: str, now: float, actions: list[Action]) -> None:
        actions.append(SyncChannel(name, 0))

    def _subscription_count_changed(self, channel: Channel, now: float, actions: list[Action]) -> None:
        actions.append(SyncChannel(channel.name, len(channel.subscribers)))

    def _relay_client_event(
        self, conn: Connection, channel: Channel, frame: str, actions: list[Action]
    ) -> None:
        actions.append(Publish(["c", channel.name, frame, conn.socket_id]))

    def _user_online(self, user_id: str, actions: list[Action]) -> None:
        actions.append(SyncUser(user_id, True))

    def _user_offline(self, user_id: str, actions: list[Action]) -> None:
        actions.append(SyncUser(user_id, False))

    def _is_online(self, user_id: str) -> bool:
        return user_id in self.online or user_id in self.users

    # ------------------------------------------------------------------ publishing

    def trigger(
        self,
        event: str,
        data: str,
        channels: Iterable[str],
        now: float,
        exclude_socket_id: str | None = None,
    ) -> list[Action]:
        """Publish to every process; delivery happens in :meth:`apply_events`."""
        return [Publish(["e", [[event, data, list(channels), exclude_socket_id or ""]]])]

    def terminate_user(self, user_id: str) -> list[Action]:
        """Publish; every process closes its own connections of ``user_id`` (:meth:`apply_terminate`)."""
        return [Publish(["t", user_id])]

    # ------------------------------------------------------------------ what the bus delivers

    def apply_events(self, events: Iterable[list[Any]], now: float) -> list[Action]:
        """Events published by any process (``[event, data, channels, exclude_socket_id]`` each)."""
        actions: list[Action] = []
        history = self.history
        for event, data, channels, exclude, *positions in events:
            if history is None or not positions or not isinstance(positions[0], list):
                actions += self._trigger_here(event, data, channels, now, exclude)
                continue
            # Positions given by the shared store: the same on every process (no local trigger).
            excluded = self.connections.get(exclude) if exclude else None
            plain = [ch for ch, pos in zip(channels, positions[0], strict=False) if not pos]
            if plain:
                actions += self._trigger_here(event, data, plain, now, exclude)
            for ch, pos in zip(channels, positions[0], strict=False):
                if not pos:
                    continue
                if is_cache(ch):
                    self.cache[ch] = (event, data, now + self.config.cache_ttl)
                    self._cache_miss_sent.discard(ch)
                entry = history.mirror(ch, int(pos[0]), str(pos[1]), pos[2] / 1000, event, data)
                if entry is not None:
                    self._deliver_mirrored(ch, str(pos[1]), entry, excluded, actions)
        return actions

    def apply_client_event(
        self, name: str, frame: str, exclude_socket_id: str, position: list[Any] | None = None
    ) -> list[Action]:
        """A client event from a connection on any process; never echoed to its sender."""
        history = self.history
        if history is not None and isinstance(position, list) and len(position) == 3:
            message = json.loads(frame)
            entry = history.mirror(
                name,
                int(position[0]),
                str(position[1]),
                position[2] / 1000,
                message["event"],
                message["data"],
                message.get("user_id"),
            )
            actions: list[Action] = []
            if entry is not None:
                sender = self.connections.get(exclude_socket_id)
                self._deliver_mirrored(name, str(position[1]), entry, sender, actions)
            return actions
        channel = self.channels.get(name)
        if channel is None:
            return []
        targets = [c for c in channel.subscribers if c.socket_id != exclude_socket_id]
        return [Send(targets, frame)] if targets else []

    def _trigger_here(
        self, event: str, data: str, channels: list[str], now: float, exclude: str
    ) -> list[Action]:
        """Deliver to this process's subscribers, without positions (none were given)."""
        history, self.history = self.history, None
        try:
            return Hub.trigger(self, event, data, channels, now, exclude or None)
        finally:
            self.history = history

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
        # A client event gets its position from the shared store on its way through the bus.
        out: dict[str, Any] = {"event": event, "channel": name, "data": data}
        if user_id is not None:
            out["user_id"] = user_id
        return dumps(out)

    def _deliver_mirrored(
        self, name: str, stream_id: str, entry: Any, excluded: Connection | None, actions: list[Action]
    ) -> None:
        streams = self.streams.get(name)
        if streams:
            actions.append(StreamEvent(tuple(streams), name, stream_id, entry))
        channel = self.channels.get(name)
        if channel is None:
            return
        targets = _subscribers_but(channel.subscribers, excluded)
        if targets:
            actions.append(Send(targets, entry.frame(name, stream_id)))

    def apply_terminate(self, user_id: str) -> list[Action]:
        """``terminate_connections`` for ``user_id``: close its connections on this process."""
        return Hub.terminate_user(self, user_id)

    def apply_member_added(
        self, name: str, user_id: str, user_info: Any, exclude_socket_id: str
    ) -> list[Action]:
        """``user_id``'s first connection in the cluster joined presence ``name``."""
        members = self.replica.setdefault(name, {})
        if user_id in members:
            return []
        members[user_id] = [user_info, 1]
        channel = self.channels.get(name)
        if channel is None:
            return []
        targets = [c for c in channel.subscribers if c.socket_id != exclude_socket_id]
        if not targets:
            return []
        added = dumps({"user_id": user_id, "user_info": user_info})
        return [Send(targets, encode("pusher_internal:member_added", added, name))]

    def apply_member_removed(self, name: str, user_id: str) -> list[Action]:
        """``user_id``'s last connection in the cluster left presence ``name`` (or its process died)."""
        members = self.replica.get(name)
        if members is None or user_id not in members:
            return []
        del members[user_id]
        channel = self.channels.get(name)
        if channel is None:
            if not members:
                del self.replica[name]
            return []
        if not channel.subscribers:
            return []
        removed = dumps({"user_id": user_id})
        return [Send(tuple(channel.subscribers), encode("pusher_internal:member_removed", removed, name))]

    def apply_online(self, user_id: str, online: bool) -> list[Action]:
        """``user_id`` signed in for the first time in the cluster, or its last connection went."""
        if online == (user_id in self.online):
            return []
        if online:
            self.online.add(user_id)
        else:
            self.online.discard(user_id)
        actions: list[Action] = []
        self._notify_watchers(user_id, "online" if online else "offline", actions)
        return actions

    def apply_subscription_count(self, name: str, count: int, now: float) -> list[Action]:
        """The cluster-wide subscriber count of ``name`` changed (reference §1.10)."""
        channel = self.channels.get(name)
        if channel is None or not self.config.subscription_count or channel.kind is ChannelKind.PRESENCE:
            return []
        if count == channel._count_sent:
            return []
        channel._count_sent = count
        channel._count_sent_at = now
        payload = dumps({"subscription_count": count})
        return [Send(tuple(channel.subscribers), encode("pusher_internal:subscription_count", payload, name))]

    def reconcile(self, members: Mapping[str, Mapping[str, Any]], online: Iterable[str]) -> list[Action]:
        """Replace the replica with a snapshot of the cluster, telling local subscribers what changed.

        Used after the bus lost messages (a Redis restart, a network blip): whatever the lost
        ``member_added``/``member_removed``/``online``/``offline`` would have said is said now.
        """
        actions: list[Action] = []
        for name in list(self.replica):
            now_members = members.get(name, {})
            for uid in [u for u in self.replica[name] if u not in now_members]:
                actions += self.apply_member_removed(name, uid)
        for name, now_members in members.items():
            for uid, info in now_members.items():
                actions += self.apply_member_added(name, uid, info, "")
        wanted = set(online)
        for uid in list(self.online - wanted):
            actions += self.apply_online(uid, False)
        for uid in wanted - self.online:
            actions += self.apply_online(uid, True)
        return actions

    def local_state(self) -> LocalState:
        """This process's share of the app's state (to register it again after Redis lost it)."""
        return LocalState(
            channels={name: len(ch.subscribers) for name, ch in self.channels.items() if ch.subscribers},
            members={key: local[1] for key, local in self._local_members.items()},
            users=list(self.users),
        )

"""Conformance of the raw WebSocket protocol (Pusher protocol 7), frame by frame.

Every test opens its own connections with aiohttp and uses fresh random channel names, since the
server under test is shared by the whole session. Negative checks ("X is not delivered") are made
deterministic with a marker: an event or a ``pusher:ping`` sent *after* the action whose reply proves
that anything the action caused has already been written to the socket.

The helpers here (:class:`Client`, :func:`open_client`, ...) are also used by ``test_rest.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from .conftest import Target

TIMEOUT = 3.0  # seconds to wait for a frame that must arrive

SOKETI_SILENT = "Soketi ignores this silently instead of answering with pusher:error"
SOKETI_CRASHES = (
    "Soketi's whole process dies (uncaught TypeError) on a pusher:subscribe or pusher:unsubscribe whose data "
    "or channel has the wrong type; other wrongly typed frames get only subscription_error, a 4009 close or "
    "nothing"
)

# ---------------------------------------------------------------------------------------- helpers


class Closed(Exception):
    """The server closed the connection."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


def rand_channel(prefix: str = "") -> str:
    """A fresh channel name (the server is shared across the session)."""
    return f"{prefix}lw-{secrets.token_hex(8)}"


def rand_user() -> str:
    """A fresh user id."""
    return f"user-{secrets.token_hex(6)}"


def hmac_hex(secret: str, message: str) -> str:
    """Hex HMAC-SHA256, computed here independently of the server's code."""
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def channel_auth(target: Target, socket_id: str, channel: str, channel_data: str | None = None) -> str:
    """``auth`` for a private/encrypted/presence subscription (auth-signatures.md)."""
    to_sign = f"{socket_id}:{channel}" + (f":{channel_data}" if channel_data is not None else "")
    return f"{target.key}:{hmac_hex(target.secret, to_sign)}"


def data_of(frame: dict[str, Any]) -> Any:
    """A frame's ``data``, JSON-decoded when it is a string (as pusher-js does)."""
    data = frame.get("data")
    if isinstance(data, str):
        try:
            return json.loads(data)
        except ValueError:
            return data
    return data


async def sdk_call(target: Target, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call the official (blocking) ``pusher`` SDK off the event loop."""
    return await asyncio.to_thread(getattr(target.sdk(), method), *args, **kwargs)


class Client:
    """One raw WebSocket connection. Frames read while waiting for another one are kept in ``pending``."""

    def __init__(self, target: Target, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.target = target
        self.ws = ws
        self.pending: deque[dict[str, Any]] = deque()
        self.established: dict[str, Any] = {}
        self.socket_id = ""
        self.close_code: int | None = None

    # -- raw I/O

    async def send(self, event: str, data: Any = None, channel: str | None = None) -> None:
        message: dict[str, Any] = {"event": event}
        if data is not None:
            message["data"] = data
        if channel is not None:
            message["channel"] = channel
        await self.ws.send_str(json.dumps(message))

    async def _receive(self, timeout: float) -> dict[str, Any]:
        if self.close_code is not None:
            raise Closed(self.close_code)
        msg = await self.ws.receive(timeout=timeout)
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            frame = json.loads(msg.data)
            assert isinstance(frame, dict), f"server sent a frame that is not a JSON object: {msg.data!r}"
            return frame
        if msg.type is aiohttp.WSMsgType.CLOSE:
            self.close_code = msg.data
        else:
            self.close_code = self.ws.close_code if self.ws.close_code is not None else -1
        raise Closed(self.close_code)

    async def expect(
        self,
        event: str | tuple[str, ...],
        channel: str | None = None,
        *,
        timeout: float = TIMEOUT,
        fail_on: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """The next frame named ``event`` (on ``channel`` if given); other frames go to ``pending``."""
        events = (event,) if isinstance(event, str) else event

        def matches(frame: dict[str, Any]) -> bool:
            return frame.get("event") in events and (channel is None or frame.get("channel") == channel)

        for i, frame in enumerate(self.pending):
            if matches(frame):
                del self.pending[i]
                return frame
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                frame = await self._receive(remaining)
            except TimeoutError:
                raise AssertionError(
                    f"no {events} on {channel} within {timeout} s; meanwhile got {list(self.pending)}"
                ) from None
            except Closed as exc:
                raise AssertionError(
                    f"closed ({exc.code}) while waiting for {events}; got {list(self.pending)}"
                ) from None
            if matches(frame):
                return frame
            if frame.get("event") in fail_on:
                raise AssertionError(f"got {frame} while waiting for {events} on {channel}")
            self.pending.append(frame)

    def take(self) -> list[dict[str, Any]]:
        """Every frame read but not consumed so far."""
        frames = list(self.pending)
        self.pending.clear()
        return frames

    async def barrier(self) -> list[dict[str, Any]]:
        """Round-trip a ``pusher:ping``: return the frames that arrived before the pong."""
        await self.send("pusher:ping", {})
        await self.expect("pusher:pong")
        return self.take()

    async def closed(self, timeout: float = TIMEOUT) -> int | None:
        """Wait for the server to close the connection; the close code."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                self.pending.append(await self._receive(remaining))
            except TimeoutError:
                raise AssertionError(f"still open after {timeout} s; got {list(self.pending)}") from None
            except Closed as exc:
                return exc.code

    async def close(self) -> None:
        await self.ws.close()

    # -- protocol

    async def send_subscribe(
        self,
        channel: Any,
        *,
        user_id: Any = None,
        user_info: Any = None,
        auth: str | None = None,
        channel_data: str | None = None,
    ) -> None:
        """Send ``pusher:subscribe`` as pusher-js does, signing it unless ``auth`` is given."""
        data: dict[str, Any] = {"channel": channel}
        if isinstance(channel, str) and channel.startswith("presence-") and channel_data is None:
            member: dict[str, Any] = {"user_id": user_id}
            if user_info is not None:
                member["user_info"] = user_info
            channel_data = json.dumps(member)
        if auth is None:
            needs = isinstance(channel, str) and channel.startswith(("private-", "presence-"))
            auth = channel_auth(self.target, self.socket_id, channel, channel_data) if needs else ""
        data["auth"] = auth
        if channel_data is not None:
            data["channel_data"] = channel_data
        await self.send("pusher:subscribe", data)

    async def subscribe(self, channel: str, **kwargs: Any) -> dict[str, Any]:
        """Subscribe and return the ``pusher_internal:subscription_succeeded`` frame."""
        await self.send_subscribe(channel, **kwargs)
        return await self.expect(
            "pusher_internal:subscription_succeeded",
            channel,
            fail_on=("pusher:error", "pusher:subscription_error"),
        )

    async def refused(self, channel: Any) -> list[dict[str, Any]]:
        """Wait for a subscription to ``channel`` to be refused (``pusher:error`` or
        ``pusher:subscription_error``); check that it did not succeed; return the error frames."""
        first = await self.expect(("pusher:error", "pusher:subscription_error"))
        frames = [first, *await self.barrier()]
        succeeded = [
            f
            for f in frames
            if f.get("event") == "pusher_internal:subscription_succeeded" and f.get("channel") == channel
        ]
        assert not succeeded, f"subscription to {channel!r} succeeded: {frames}"
        return [f for f in frames if f.get("event") in ("pusher:error", "pusher:subscription_error")]

    async def signin(self, user_id: str, **fields: Any) -> dict[str, Any]:
        """``pusher:signin`` as ``user_id`` (extra user_data ``fields``); the signin_success frame."""
        user_data = json.dumps({"id": user_id, **fields})
        auth = f"{self.target.key}:{hmac_hex(self.target.secret, f'{self.socket_id}::user::{user_data}')}"
        await self.send("pusher:signin", {"auth": auth, "user_data": user_data})
        return await self.expect("pusher:signin_success", fail_on=("pusher:error",))


async def open_client(
    session: aiohttp.ClientSession, target: Target, url: str | None = None, *, established: bool = True
) -> Client:
    """Connect; unless ``established`` is False, wait for ``pusher:connection_established``."""
    ws = await session.ws_connect(
        url or target.ws_url(), timeout=aiohttp.ClientWSTimeout(ws_close=2.0), max_msg_size=0
    )
    client = Client(target, ws)
    if established:
        frame = await client.expect("pusher:connection_established", fail_on=("pusher:error",))
        client.established = frame
        client.socket_id = data_of(frame)["socket_id"]
    return client


Connect = Callable[..., Awaitable[Client]]


async def client_factory(target: Target) -> AsyncIterator[Connect]:
    """Yield a ``connect(url=None, *, established=True)`` that closes every connection afterwards."""
    # limit=0: aiohttp's default pool of 100 connections would block the 101st WebSocket.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        clients: list[Client] = []

        async def connect(url: str | None = None, *, established: bool = True) -> Client:
            client = await open_client(session, target, url, established=established)
            clients.append(client)
            return client

        try:
            yield connect
        finally:
            await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)


@pytest_asyncio.fixture
async def connect(target: Target) -> AsyncIterator[Connect]:
    """Open raw connections to the target; all are closed after the test."""
    async for factory in client_factory(target):
        yield factory


async def trigger_marker(target: Target, client: Client, channel: str) -> list[dict[str, Any]]:
    """Trigger a marker event on ``channel`` and return what ``client`` received before it."""
    await sdk_call(target, "trigger", channel, "lw-marker", "{}")
    await client.expect("lw-marker", channel)
    return client.take()


def events_in(frames: list[dict[str, Any]], event: str, channel: str | None = None) -> list[dict[str, Any]]:
    """The frames named ``event`` (on ``channel`` if given)."""
    return [f for f in frames if f.get("event") == event and (channel is None or f.get("channel") == channel)]


# ---------------------------------------------------------------------------------------- connection


@pytest.mark.asyncio
async def test_connection_established_has_string_encoded_data(connect: Connect) -> None:
    """connection_established has string data: a digits.digits socket_id and an activity_timeout > 0."""
    client = await connect()
    frame = client.established
    assert isinstance(frame["data"], str), "data must be double-encoded (a JSON string)"
    data = json.loads(frame["data"])
    assert re.fullmatch(r"\d+\.\d+", data["socket_id"])
    assert isinstance(data["activity_timeout"], int)
    assert data["activity_timeout"] > 0


@pytest.mark.asyncio
async def test_socket_ids_differ_between_connections(connect: Connect) -> None:
    """Each connection gets its own socket_id."""
    ids = {(await connect()).socket_id for _ in range(5)}
    assert len(ids) == 5


@pytest.mark.asyncio
async def test_unknown_query_params_are_ignored(connect: Connect, target: Target) -> None:
    """Query parameters the server does not know (pusher-js sends flash=false) do not stop the connection."""
    client = await connect(target.ws_url("protocol=7&client=js&version=8.6.0&flash=false&lw_extra=1&x="))
    await client.subscribe(rand_channel())


@pytest.mark.asyncio
@pytest.mark.hosted_only(
    "soketi",
    "pusher",
    why="a path prefix (pusher-js wsPath behind a proxy) is an embedded-server feature; Soketi answers 404",
)
async def test_path_prefix_before_app_is_tolerated(connect: Connect, target: Target) -> None:
    """/some/prefix/app/KEY connects like /app/KEY."""
    client = await connect(target.ws_url().replace("/app/", "/some/prefix/app/", 1))
    await client.subscribe(rand_channel())


@pytest.mark.asyncio
async def test_unknown_app_key_is_refused_with_4001(connect: Connect, target: Target) -> None:
    """An unknown app key gets pusher:error 4001 and a 4001 close."""
    url = target.ws_url().replace(f"/app/{target.key}?", "/app/lw-no-such-key?", 1)
    client = await connect(url, established=False)
    code = await client.closed()
    assert code == 4001
    errors = events_in(client.take(), "pusher:error")
    assert errors, "a pusher:error should precede the close"
    assert data_of(errors[0])["code"] == 4001


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi ignores the protocol parameter")
@pytest.mark.parametrize("version", ["2", "99"])
async def test_unsupported_protocol_version_is_refused_with_4007(
    connect: Connect, target: Target, version: str
) -> None:
    """A protocol version outside 5-7 gets a 4007 close."""
    client = await connect(target.ws_url(f"protocol={version}&client=js&version=8.6.0"), established=False)
    assert await client.closed() == 4007
    assert not events_in(client.take(), "pusher:connection_established")


@pytest.mark.asyncio
async def test_pusher_ping_is_answered_with_pusher_pong(connect: Connect) -> None:
    """pusher:ping is answered with pusher:pong (empty data)."""
    client = await connect()
    await client.send("pusher:ping", {})
    pong = await client.expect("pusher:pong")
    assert data_of(pong) in (None, {})


# ---------------------------------------------------------------------------------------- subscriptions


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "prefix", ["", "private-", "private-encrypted-", "cache-", "private-cache-", "private-encrypted-cache-"]
)
async def test_subscribe_succeeds(connect: Connect, prefix: str) -> None:
    """Public, private, encrypted and cache channels answer subscription_succeeded on the channel."""
    client = await connect()
    channel = rand_channel(prefix)
    frame = await client.subscribe(channel)
    assert frame["channel"] == channel
    assert data_of(frame) in (None, {})


@pytest.mark.asyncio
async def test_presence_subscribe_lists_members(connect: Connect) -> None:
    """Presence subscription_succeeded has ids/hash/count; the others get member_added with string ids."""
    channel = rand_channel("presence-")
    alice, bob = await connect(), await connect()
    first = await alice.subscribe(channel, user_id="u-alice", user_info={"name": "Alice"})
    assert isinstance(first["data"], str)
    assert data_of(first)["presence"] == {
        "ids": ["u-alice"],
        "hash": {"u-alice": {"name": "Alice"}},
        "count": 1,
    }

    second = await bob.subscribe(channel, user_id="u-bob", user_info={"name": "Bob"})
    presence = data_of(second)["presence"]
    assert sorted(presence["ids"]) == ["u-alice", "u-bob"]
    assert presence["hash"] == {"u-alice": {"name": "Alice"}, "u-bob": {"name": "Bob"}}
    assert presence["count"] == 2

    added = await alice.expect("pusher_internal:member_added", channel)
    assert data_of(added) == {"user_id": "u-bob", "user_info": {"name": "Bob"}}
    assert not events_in(await bob.barrier(), "pusher_internal:member_added"), "no member_added to oneself"


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi keeps a numeric user_id a number in ids and member_added")
async def test_presence_numeric_user_id_becomes_a_string(connect: Connect) -> None:
    """A numeric user_id in channel_data is reported as a string in ids, hash and member_added."""
    channel = rand_channel("presence-")
    first, second = await connect(), await connect()
    await first.subscribe(channel, user_id=7, user_info={"n": 7})
    frame = await second.subscribe(channel, user_id=8)
    presence = data_of(frame)["presence"]
    assert sorted(presence["ids"]) == ["7", "8"]
    assert all(isinstance(i, str) for i in presence["ids"])
    assert presence["hash"]["7"] == {"n": 7}
    added = data_of(await first.expect("pusher_internal:member_added", channel))
    assert added["user_id"] == "8"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "name", ["bad name", "bad$chars", "naïve", "x" * 201], ids=["space", "dollar", "non-ascii", "201-chars"]
)
async def test_invalid_channel_name_is_refused_and_connection_stays_open(connect: Connect, name: str) -> None:
    """A bad channel name (charset, over 200 chars) is answered with an error; the connection stays usable."""
    client = await connect()
    await client.send_subscribe(name)
    assert await client.refused(name)
    await client.subscribe(rand_channel())


@pytest.mark.asyncio
async def test_channel_name_of_164_chars_is_accepted(connect: Connect) -> None:
    """A 164-character name (hosted Pusher's limit) with every allowed punctuation subscribes."""
    client = await connect()
    base = rand_channel("private-") + "-_=@,.;"
    channel = base + "a" * (164 - len(base))
    await client.subscribe(channel)


@pytest.mark.asyncio
async def test_resubscribe_confirms_again_without_double_delivery(connect: Connect, target: Target) -> None:
    """Subscribing twice to a channel confirms twice but delivers each event once."""
    client = await connect()
    channel = rand_channel()
    await client.subscribe(channel)
    await client.subscribe(channel)
    await sdk_call(target, "trigger", channel, "lw-event", "once")
    before = await trigger_marker(target, client, channel)
    assert len(events_in(before, "lw-event", channel)) == 1


@pytest.mark.asyncio
async def test_presence_resubscribe_adds_no_duplicate_member(connect: Connect, target: Target) -> None:
    """Re-subscribing to presence confirms again: no second member_added, and one unsubscribe removes it."""
    channel = rand_channel("presence-")
    watcher, member = await connect(), await connect()
    await watcher.subscribe(channel, user_id="u-watcher")
    await member.subscribe(channel, user_id="u-member")
    await watcher.expect("pusher_internal:member_added", channel)
    again = await member.subscribe(channel, user_id="u-member")
    assert data_of(again)["presence"]["count"] == 2
    before = await trigger_marker(target, watcher, channel)
    assert not events_in(before, "pusher_internal:member_added")
    await member.send("pusher:unsubscribe", {"channel": channel})  # one leave undoes both subscribes
    removed = await watcher.expect("pusher_internal:member_removed", channel)
    assert data_of(removed) == {"user_id": "u-member"}


@pytest.mark.asyncio
async def test_unsubscribe_has_no_reply_and_stops_delivery(connect: Connect, target: Target) -> None:
    """pusher:unsubscribe gets no reply and no more events from that channel."""
    client = await connect()
    gone, kept = rand_channel(), rand_channel()
    await client.subscribe(gone)
    await client.subscribe(kept)
    await client.send("pusher:unsubscribe", {"channel": gone})
    assert await client.barrier() == [], "unsubscribe must not be answered"
    await sdk_call(target, "trigger", gone, "lw-event", "{}")
    before = await trigger_marker(target, client, kept)
    assert not events_in(before, "lw-event"), before


@pytest.mark.asyncio
async def test_unsubscribe_from_unknown_channel_is_harmless(connect: Connect) -> None:
    """Unsubscribing from a channel one is not in is silently ignored."""
    client = await connect()
    await client.send("pusher:unsubscribe", {"channel": rand_channel()})
    assert await client.barrier() == []


@pytest.mark.asyncio
@pytest.mark.hosted_only(
    "soketi", why="Soketi answers only pusher:subscription_error ('The connection is unauthorized.')"
)
async def test_bad_private_signature_gets_hosted_style_error(connect: Connect, target: Target) -> None:
    """A bad signature gets pusher:error code null naming <socket_id>:<channel>, never the right HMAC."""
    client = await connect()
    channel = rand_channel("private-")
    await client.send_subscribe(channel, auth=f"{target.key}:{'0' * 64}")
    error = data_of(await client.expect("pusher:error"))
    assert error["code"] is None
    assert f"{client.socket_id}:{channel}" in error["message"]
    assert channel_auth(target, client.socket_id, channel).partition(":")[2] not in error["message"]
    await client.barrier()  # drains any pusher:subscription_error that follows
    await client.subscribe(channel)  # still usable: the right signature works


@pytest.mark.asyncio
@pytest.mark.hosted_only("pusher", why="hosted Pusher reports a refused subscription with pusher:error only")
async def test_bad_private_signature_gets_subscription_error_on_channel(
    connect: Connect, target: Target
) -> None:
    """A bad signature also gets pusher:subscription_error (AuthError, 401) on the channel; stays open."""
    client = await connect()
    channel = rand_channel("private-")
    await client.send_subscribe(channel, auth=f"{target.key}:{'0' * 64}")
    frame = await client.expect("pusher:subscription_error", channel)
    data = data_of(frame)
    assert data["type"] == "AuthError"
    assert data["status"] == 401
    await client.subscribe(channel)


@pytest.mark.asyncio
@pytest.mark.parametrize("prefix", ["private-", "private-encrypted-", "presence-"])
async def test_missing_or_foreign_auth_is_refused(connect: Connect, target: Target, prefix: str) -> None:
    """No auth, or auth signed for another socket, is refused on private, encrypted and presence channels."""
    client, other = await connect(), await connect()
    channel = rand_channel(prefix)
    await client.send_subscribe(channel, user_id="u1", auth="")
    assert await client.refused(channel)
    channel_data = json.dumps({"user_id": "u1"}) if prefix == "presence-" else None
    foreign = channel_auth(target, other.socket_id, channel, channel_data)
    await client.send_subscribe(channel, user_id="u1", auth=foreign)
    assert await client.refused(channel)


@pytest.mark.asyncio
async def test_official_sdk_authorization_is_accepted(connect: Connect, target: Target) -> None:
    """Auth made by the official SDK's authenticate()/authenticate_user() is accepted."""
    client = await connect()
    sdk = target.sdk()
    private = rand_channel("private-")
    await client.subscribe(private, auth=sdk.authenticate(private, client.socket_id)["auth"])
    presence = rand_channel("presence-")
    signed = sdk.authenticate(presence, client.socket_id, {"user_id": "u-sdk", "user_info": {"a": 1}})
    frame = await client.subscribe(presence, auth=signed["auth"], channel_data=signed["channel_data"])
    assert data_of(frame)["presence"]["hash"] == {"u-sdk": {"a": 1}}
    user = sdk.authenticate_user(client.socket_id, {"id": "u-sdk"})
    await client.send("pusher:signin", user)
    await client.expect("pusher:signin_success", fail_on=("pusher:error",))


# ---------------------------------------------------------------------------------------- presence


@pytest.mark.asyncio
async def test_presence_counts_a_user_once_across_connections(connect: Connect) -> None:
    """One user on two connections: member_added for the first only, member_removed when the last leaves."""
    channel = rand_channel("presence-")
    watcher = await connect()
    await watcher.subscribe(channel, user_id="u-watcher")
    tab1, tab2 = await connect(), await connect()
    await tab1.subscribe(channel, user_id="u-multi", user_info={"tab": 1})
    await watcher.expect("pusher_internal:member_added", channel)
    frame = await tab2.subscribe(channel, user_id="u-multi", user_info={"tab": 1})
    presence = data_of(frame)["presence"]
    assert sorted(presence["ids"]) == ["u-multi", "u-watcher"]
    assert presence["count"] == 2

    await tab1.close()
    await tab2.close()
    removed = await watcher.expect("pusher_internal:member_removed", channel)
    assert data_of(removed) == {"user_id": "u-multi"}
    between = watcher.take() + await watcher.barrier()
    assert not events_in(between, "pusher_internal:member_added"), between
    assert not events_in(between, "pusher_internal:member_removed"), between


@pytest.mark.asyncio
async def test_presence_unsubscribe_sends_member_removed(connect: Connect) -> None:
    """Unsubscribing from a presence channel sends member_removed to the others."""
    channel = rand_channel("presence-")
    watcher, leaver = await connect(), await connect()
    await watcher.subscribe(channel, user_id="u-watcher")
    await leaver.subscribe(channel, user_id="u-leaver")
    await leaver.send("pusher:unsubscribe", {"channel": channel})
    removed = await watcher.expect("pusher_internal:member_removed", channel)
    assert data_of(removed) == {"user_id": "u-leaver"}


@pytest.mark.asyncio
async def test_presence_channel_refuses_the_101st_member(connect: Connect) -> None:
    """A presence channel holds at most 100 distinct members; the 101st is refused."""
    channel = rand_channel("presence-")
    clients = await asyncio.gather(*(connect() for _ in range(100)))
    await asyncio.gather(*(c.subscribe(channel, user_id=f"u{i}") for i, c in enumerate(clients)))
    extra = await connect()
    await extra.send_subscribe(channel, user_id="u-extra")
    assert await extra.refused(channel)
    await extra.subscribe(rand_channel())


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi counts connections, not users, against the 100-member limit")
async def test_full_presence_channel_admits_another_tab_of_a_member(connect: Connect) -> None:
    """A presence channel with 100 members still admits another connection of one of those members."""
    channel = rand_channel("presence-")
    clients = await asyncio.gather(*(connect() for _ in range(100)))
    await asyncio.gather(*(c.subscribe(channel, user_id=f"u{i}") for i, c in enumerate(clients)))
    second_tab = await connect()
    frame = await second_tab.subscribe(channel, user_id="u0")
    assert data_of(frame)["presence"]["count"] == 100


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi has no limit on the length of a presence user_id")
async def test_presence_user_id_over_128_chars_is_refused(connect: Connect) -> None:
    """A presence user_id longer than 128 characters is refused; 128 is accepted."""
    client = await connect()
    channel = rand_channel("presence-")
    await client.send_subscribe(channel, user_id="u" * 129)
    assert await client.refused(channel)
    await client.subscribe(channel, user_id="u" * 128)


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi's default limit for a presence member is 2 KB, not 1 KB")
async def test_presence_user_info_over_1kb_is_refused(connect: Connect) -> None:
    """user_info over 1 KB is refused; under 1 KB is accepted."""
    client = await connect()
    channel = rand_channel("presence-")
    await client.send_subscribe(channel, user_id="u-big", user_info={"bio": "x" * 1100})
    assert await client.refused(channel)
    await client.subscribe(channel, user_id="u-small", user_info={"bio": "x" * 900})


# ---------------------------------------------------------------------------------------- cache channels


@pytest.mark.asyncio
async def test_cache_channel_replays_last_event_on_subscribe(connect: Connect, target: Target) -> None:
    """Subscribing to a cache channel replays the last event triggered on it (name, channel, data)."""
    channel = rand_channel("cache-")
    await sdk_call(target, "trigger", channel, "lw-first", '{"n": 1}')
    await sdk_call(target, "trigger", channel, "lw-last", '{"n": 2}')
    client = await connect()
    await client.subscribe(channel)
    frame = await client.expect("lw-last", channel)
    assert frame["data"] == '{"n": 2}'
    assert not events_in(client.take() + await client.barrier(), "lw-first")


@pytest.mark.asyncio
async def test_cache_channel_without_event_sends_cache_miss(connect: Connect) -> None:
    """Subscribing to a cache channel with nothing cached sends pusher:cache_miss on it."""
    client = await connect()
    channel = rand_channel("cache-")
    await client.subscribe(channel)
    await client.expect("pusher:cache_miss", channel)


@pytest.mark.asyncio
async def test_presence_cache_channel_replays_after_subscription_data(
    connect: Connect, target: Target
) -> None:
    """presence-cache- channels both list members and replay the cached event."""
    channel = rand_channel("presence-cache-")
    await sdk_call(target, "trigger", channel, "lw-cached", "hello")
    client = await connect()
    frame = await client.subscribe(channel, user_id="u1")
    assert data_of(frame)["presence"]["ids"] == ["u1"]
    assert (await client.expect("lw-cached", channel))["data"] == "hello"


# ---------------------------------------------------------------------------------------- client events


@pytest.mark.asyncio
async def test_client_event_reaches_others_but_not_the_sender(connect: Connect, target: Target) -> None:
    """A client event on a private channel reaches the other subscribers and is not echoed."""
    channel = rand_channel("private-")
    sender, receiver = await connect(), await connect()
    await sender.subscribe(channel)
    await receiver.subscribe(channel)
    await sender.send("client-typing", {"text": "hi"}, channel)
    frame = await receiver.expect("client-typing", channel)
    assert data_of(frame) == {"text": "hi"}
    assert "user_id" not in frame
    assert not events_in(await sender.barrier(), "client-typing")


@pytest.mark.asyncio
async def test_client_event_on_presence_carries_user_id(connect: Connect) -> None:
    """A client event on a presence channel is delivered with the sender's user_id."""
    channel = rand_channel("presence-")
    sender, receiver = await connect(), await connect()
    await sender.subscribe(channel, user_id="u-sender")
    await receiver.subscribe(channel, user_id="u-receiver")
    await sender.send("client-move", {"x": 1}, channel)
    frame = await receiver.expect("client-move", channel)
    assert frame["user_id"] == "u-sender"
    assert data_of(frame) == {"x": 1}
    assert not events_in(await sender.barrier(), "client-move")


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi relays client events on public channels")
async def test_client_event_on_public_channel_is_refused(connect: Connect, target: Target) -> None:
    """A client event on a public channel is answered with pusher:error and not delivered."""
    channel = rand_channel()
    sender, receiver = await connect(), await connect()
    await sender.subscribe(channel)
    await receiver.subscribe(channel)
    await sender.send("client-nope", {}, channel)
    await sender.expect("pusher:error")
    assert not events_in(await trigger_marker(target, receiver, channel), "client-nope")


@pytest.mark.asyncio
async def test_client_event_from_non_subscriber_is_not_delivered(connect: Connect, target: Target) -> None:
    """A client event on a channel the sender is not subscribed to reaches nobody."""
    channel = rand_channel("private-")
    outsider, receiver = await connect(), await connect()
    await receiver.subscribe(channel)
    await outsider.send("client-sneak", {}, channel)
    await outsider.barrier()
    assert not events_in(await trigger_marker(target, receiver, channel), "client-sneak")


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why=SOKETI_SILENT)
async def test_client_event_from_non_subscriber_gets_error(connect: Connect) -> None:
    """A client event on a channel the sender is not subscribed to is answered with pusher:error."""
    outsider = await connect()
    await outsider.send("client-sneak", {}, rand_channel("private-"))
    error = data_of(await outsider.expect("pusher:error"))
    assert "subscribed" in error["message"]


@pytest.mark.asyncio
async def test_reserved_event_from_client_is_not_relayed(connect: Connect, target: Target) -> None:
    """pusher:/pusher_internal: events sent by a client are never relayed to other subscribers."""
    channel = rand_channel("presence-")
    sender, receiver = await connect(), await connect()
    await sender.subscribe(channel, user_id="u-sender")
    await receiver.subscribe(channel, user_id="u-receiver")
    await sender.send("pusher_internal:member_added", json.dumps({"user_id": "fake"}), channel)
    await sender.send("pusher:foo", {}, channel)
    await sender.barrier()
    before = await trigger_marker(target, receiver, channel)
    assert not events_in(before, "pusher_internal:member_added")
    assert not events_in(before, "pusher:foo")


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why=SOKETI_SILENT)
@pytest.mark.parametrize("event", ["pusher:foo", "pusher_internal:member_added", "my-event"])
async def test_reserved_or_unknown_event_from_client_gets_error(connect: Connect, event: str) -> None:
    """A reserved (pusher:foo) or non-client- event from a client gets pusher:error; the socket stays open."""
    client = await connect()
    channel = rand_channel("private-")
    await client.subscribe(channel)
    await client.send(event, {}, channel)
    await client.expect("pusher:error")
    await client.barrier()


@pytest.mark.asyncio
async def test_client_events_over_10_per_second_get_error_4301(connect: Connect, target: Target) -> None:
    """Over 10 client events per second, each extra one gets pusher:error 4301; a second later it recovers."""
    channel = rand_channel("private-")
    sender, receiver = await connect(), await connect()
    await sender.subscribe(channel)
    await receiver.subscribe(channel)
    for i in range(15):
        await sender.send("client-burst", {"i": i}, channel)
    errors = events_in(await sender.barrier(), "pusher:error")
    delivered = events_in(await trigger_marker(target, receiver, channel), "client-burst")
    assert errors, "some of 15 client events in a burst must be refused"
    assert all(data_of(e)["code"] == 4301 for e in errors)
    assert len(delivered) + len(errors) == 15, "each client event is delivered or refused"
    assert 1 <= len(delivered) <= 11
    await asyncio.sleep(1.1)
    await sender.send("client-later", {}, channel)
    await receiver.expect("client-later", channel)


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi's default client event payload limit is 100 KB")
async def test_client_event_over_10kb_is_refused(connect: Connect, target: Target) -> None:
    """A client event with more than 10 KB of data is refused and not delivered."""
    channel = rand_channel("private-")
    sender, receiver = await connect(), await connect()
    await sender.subscribe(channel)
    await receiver.subscribe(channel)
    await sender.send("client-big", "x" * 11_000, channel)
    await sender.expect("pusher:error")
    assert not events_in(await trigger_marker(target, receiver, channel), "client-big")


# ---------------------------------------------------------------------------------------- users


@pytest.mark.asyncio
async def test_signin_with_valid_signature_succeeds(connect: Connect) -> None:
    """pusher:signin with a correct HMAC is answered with signin_success echoing user_data."""
    client = await connect()
    user = rand_user()
    frame = await client.signin(user, user_info={"name": "Ada"})
    assert data_of(frame)["user_data"] == json.dumps({"id": user, "user_info": {"name": "Ada"}})


@pytest.mark.asyncio
async def test_signin_with_bad_signature_is_refused(connect: Connect, target: Target) -> None:
    """pusher:signin with a wrong HMAC gets pusher:error, not signin_success."""
    client = await connect()
    user_data = json.dumps({"id": rand_user()})
    await client.send("pusher:signin", {"auth": f"{target.key}:{'0' * 64}", "user_data": user_data})
    await client.expect("pusher:error")
    assert not events_in(client.take(), "pusher:signin_success")


@pytest.mark.asyncio
async def test_send_to_user_reaches_the_signed_in_user(connect: Connect, target: Target) -> None:
    """A signed-in user subscribes to #server-to-user-<id>, and the SDK's send_to_user reaches it."""
    client = await connect()
    user = rand_user()
    await client.signin(user)
    channel = f"#server-to-user-{user}"
    await client.subscribe(channel)
    await sdk_call(target, "send_to_user", user, "lw-direct", '{"for": "you"}')
    frame = await client.expect("lw-direct", channel)
    assert frame["data"] == '{"for": "you"}'


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi lets any connection subscribe to #server-to-user-<id>")
async def test_server_to_user_channel_is_refused_to_others(connect: Connect) -> None:
    """#server-to-user-<id> is refused to an anonymous connection and to another signed-in user."""
    user = rand_user()
    owner, anonymous, other = await connect(), await connect(), await connect()
    await owner.signin(user)
    await other.signin(rand_user())
    channel = f"#server-to-user-{user}"
    await owner.subscribe(channel)
    await anonymous.send_subscribe(channel)
    assert await anonymous.refused(channel)
    await other.send_subscribe(channel)
    assert await other.refused(channel)


@pytest.mark.asyncio
@pytest.mark.hosted_only(
    "soketi", why="Soketi has no /users/{id}/terminate_connections route (the path the Python SDK uses): 404"
)
async def test_sdk_terminate_user_connections_closes_only_that_user(connect: Connect, target: Target) -> None:
    """SDK terminate_user_connections closes that user's signed-in connections with 4009 and leaves others."""
    user = rand_user()
    tab1, tab2, someone, anonymous = await connect(), await connect(), await connect(), await connect()
    await tab1.signin(user)
    await tab2.signin(user)
    await someone.signin(rand_user())
    await sdk_call(target, "terminate_user_connections", user)
    assert await tab1.closed() == 4009
    assert await tab2.closed() == 4009
    await someone.barrier()
    await anonymous.barrier()


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi does not implement watchlists")
async def test_watchlist_reports_online_and_offline(connect: Connect) -> None:
    """A signed-in watcher hears watchlist_events: online for users already in, then as they come and go."""
    early, late = rand_user(), rand_user()
    early_conn = await connect()
    await early_conn.signin(early)
    watcher = await connect()
    await watcher.signin(rand_user(), watchlist=[early, late])
    initial = data_of(await watcher.expect("pusher_internal:watchlist_events"))["events"]
    online = [uid for e in initial if e["name"] == "online" for uid in e["user_ids"]]
    assert online == [early]

    late_conn = await connect()
    await late_conn.signin(late)
    came = data_of(await watcher.expect("pusher_internal:watchlist_events"))["events"]
    assert came == [{"name": "online", "user_ids": [late]}]
    await late_conn.close()
    went = data_of(await watcher.expect("pusher_internal:watchlist_events"))["events"]
    assert went == [{"name": "offline", "user_ids": [late]}]


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi does not implement watchlists")
async def test_watchlist_over_100_ids_gets_error_4302(connect: Connect) -> None:
    """Signing in with a watchlist of 101 ids succeeds but also gets pusher:error 4302."""
    client = await connect()
    await client.signin(rand_user(), watchlist=[f"w{i}" for i in range(101)])
    error = await client.expect("pusher:error")
    assert data_of(error)["code"] == 4302
    await client.barrier()


# ---------------------------------------------------------------------------------------- robustness

MALFORMED = {
    "invalid-json": "{not json",
    "json-array": '[{"event": "pusher:ping"}]',
    "json-string": '"pusher:ping"',
    "json-number": "42",
    "json-null": "null",
    "event-not-a-string": '{"event": 7, "data": {}}',
    "no-event": '{"data": {}}',
}

WRONG_TYPES = {
    "subscribe-data-string": {"event": "pusher:subscribe", "data": "some-channel"},
    "subscribe-data-number": {"event": "pusher:subscribe", "data": 42},
    "subscribe-data-list": {"event": "pusher:subscribe", "data": ["some-channel"]},
    "subscribe-no-data": {"event": "pusher:subscribe"},
    "subscribe-channel-number": {"event": "pusher:subscribe", "data": {"channel": 42}},
    "subscribe-channel-null": {"event": "pusher:subscribe", "data": {"channel": None}},
    "subscribe-auth-number": {"event": "pusher:subscribe", "data": {"channel": "private-x", "auth": 42}},
    "presence-channel-data-object": {
        "event": "pusher:subscribe",
        "data": {"channel": "presence-x", "auth": "k:0", "channel_data": {"user_id": "1"}},
    },
    "unsubscribe-data-string": {"event": "pusher:unsubscribe", "data": "some-channel"},
    "signin-data-string": {"event": "pusher:signin", "data": "x"},
    "signin-user-data-object": {"event": "pusher:signin", "data": {"auth": "k:0", "user_data": {"id": "1"}}},
    "client-event-channel-number": {"event": "client-x", "channel": 42, "data": {}},
}


async def still_usable(client: Client) -> None:
    """The connection still answers pings and subscribes."""
    await client.barrier()
    await client.subscribe(rand_channel())


@pytest.mark.asyncio
async def test_connection_survives_malformed_frames(connect: Connect) -> None:
    """Frames that are not JSON objects with an event do not break the connection."""
    client = await connect()
    for frame in MALFORMED.values():
        await client.ws.send_str(frame)
    await still_usable(client)


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why=SOKETI_SILENT)
@pytest.mark.parametrize("frame", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_frame_gets_error(connect: Connect, frame: str) -> None:
    """A frame that is not a JSON object with a string event is answered with pusher:error."""
    client = await connect()
    await client.ws.send_str(frame)
    await client.expect("pusher:error")
    await still_usable(client)


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why=SOKETI_CRASHES)
@pytest.mark.parametrize("message", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
async def test_wrong_field_types_get_error(connect: Connect, message: dict[str, Any]) -> None:
    """A protocol frame with wrongly typed fields gets pusher:error; the connection stays usable."""
    client = await connect()
    await client.ws.send_str(json.dumps(message))
    await client.expect("pusher:error")
    await still_usable(client)


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi parses binary frames as JSON text")
async def test_binary_frame_gets_error(connect: Connect) -> None:
    """A binary frame is answered with pusher:error (text frames only); the connection stays usable."""
    client = await connect()
    await client.ws.send_bytes(b'{"event": "pusher:subscribe", "data": {"channel": "binary-channel"}}')
    await client.expect("pusher:error")
    assert not events_in(client.take(), "pusher_internal:subscription_succeeded")
    await still_usable(client)


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi accepts frames up to 100 MB")
async def test_oversized_frame_gets_error(connect: Connect) -> None:
    """A 300 KB frame is answered with pusher:error (not acted on); the connection stays usable."""
    client = await connect()
    await client.send("pusher:ping", {"padding": "x" * 300_000})
    await client.expect("pusher:error")
    assert not events_in(client.take(), "pusher:pong")
    await still_usable(client)


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi accepts frames up to 100 MB")
async def test_huge_frame_affects_only_its_connection(connect: Connect, target: Target) -> None:
    """A 2 MB frame is refused (pusher:error, or a 4xxx close) and other connections are served as before."""
    bystander, sender = await connect(), await connect()
    channel = rand_channel()
    await bystander.subscribe(channel)
    await sender.send("pusher:ping", {"padding": "x" * 2_000_000})
    try:
        await sender.expect("pusher:error")
    except AssertionError:
        assert 4000 <= sender.close_code < 4300, sender.close_code  # a Pusher close code, not 1009
    else:
        await still_usable(sender)
    await sdk_call(target, "trigger", channel, "lw-after", "ok")
    await bystander.expect("lw-after", channel)


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why=SOKETI_CRASHES)
async def test_server_keeps_serving_after_garbage(connect: Connect, target: Target) -> None:
    """After every kind of bad input on one connection, that and new connections are served normally."""
    bad = await connect()
    channel = rand_channel()
    await bad.subscribe(channel)
    for frame in MALFORMED.values():
        await bad.ws.send_str(frame)
    for message in WRONG_TYPES.values():
        await bad.ws.send_str(json.dumps(message))
    await bad.ws.send_bytes(b"\x00\xff binary")
    await bad.send("pusher:ping", {"padding": "x" * 300_000})
    await bad.send("client-x", {}, channel)
    await bad.send("pusher:foo", {})
    errors = events_in(await bad.barrier(), "pusher:error")
    assert len(errors) >= len(MALFORMED) + len(WRONG_TYPES)

    fresh = await connect()
    await fresh.subscribe(channel)
    await sdk_call(target, "trigger", channel, "lw-after", "ok")
    assert (await fresh.expect("lw-after", channel))["data"] == "ok"
    assert (await bad.expect("lw-after", channel))["data"] == "ok"
    await still_usable(bad)

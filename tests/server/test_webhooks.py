"""Webhooks end to end: the embedded server posting to a real aiohttp receiver on 127.0.0.1.

Real WebSocket clients (aiohttp) and the official ``pusher`` SDK drive the server; what arrives is checked
against server_api/webhooks.md (reference §2.3) and the SDK's own ``validate_webhook``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pusher
import pytest
import pytest_asyncio
from aiohttp import web

from livewidget.protocol.config import AppConfig
from livewidget.server import LocalServer

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

DELAY = 0.5  # webhook_delay of these tests, in seconds
# channel_vacated / member_removed may come this much later than webhook_delay: the server checks its
# delayed webhooks every webhook_delay / 4 seconds, then one POST on loopback.
LATE = 0.5
EARLY = 0.05  # clock granularity: never earlier than webhook_delay minus this
PROMPT = 0.5  # "quickly": seconds for an event to reach a subscriber or a healthy webhook receiver


# ---------------------------------------------------------------------------------------------- helpers


@dataclass
class Hit:
    """One webhook request as the receiver saw it."""

    at: float  # time.monotonic() on arrival
    headers: Mapping[str, str]
    body: bytes
    status: int  # what the receiver answered

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records every request.

    The first ``fail_first`` requests are answered 500; every request waits ``delay`` seconds first.
    """

    def __init__(self, *, fail_first: int = 0, delay: float = 0.0) -> None:
        self.fail_first = fail_first
        self.delay = delay
        self.hits: list[Hit] = []
        self.url = ""
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = 500 if len(self.hits) < self.fail_first else 200
        self.hits.append(Hit(time.monotonic(), request.headers.copy(), body, status))
        self._changed.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=status, text="ok" if status == 200 else "try again")

    def events(self, name: str | None = None, channel: str | None = None) -> list[tuple[Hit, dict[str, Any]]]:
        """Acknowledged (2xx) events in arrival order, with the request that carried each."""
        return [
            (hit, event)
            for hit in self.hits
            if hit.status < 300
            for event in hit.payload["events"]
            if (name is None or event["name"] == name)
            and (channel is None or event.get("channel") == channel)
        ]

    def names(self, channel: str) -> list[str]:
        return [event["name"] for _, event in self.events(channel=channel)]

    async def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not ready():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            got = [hit.payload for hit in self.hits]
            raise AssertionError(f"no {what} within {timeout} s; received {got}") from None

    async def wait_events(
        self, n: int = 1, *, name: str | None = None, channel: str | None = None, timeout: float = 3.0
    ) -> list[tuple[Hit, dict[str, Any]]]:
        """Wait for at least ``n`` acknowledged events matching ``name``/``channel``; return them all."""
        await self.wait_until(
            lambda: len(self.events(name, channel)) >= n, timeout, f"{n} x {name or 'event'} on {channel}"
        )
        return self.events(name, channel)


def sdk_for(host: str, port: int, app: AppConfig) -> pusher.Pusher:
    """The official Python SDK pointed at the embedded server, as ``app``."""
    return pusher.Pusher(app_id=app.app_id, key=app.key, secret=app.secret, host=host, port=port, ssl=False)


def assert_signed(hit: Hit, app: AppConfig) -> dict[str, Any]:
    """``hit`` carries ``app``'s key and a valid signature; returns the body the SDK validated."""
    assert hit.headers["X-Pusher-Key"] == app.key
    expected = hmac.new(app.secret.encode(), hit.body, hashlib.sha256).hexdigest()
    assert hit.headers["X-Pusher-Signature"] == expected
    sdk = pusher.Pusher(app_id=app.app_id, key=app.key, secret=app.secret)
    validated = sdk.validate_webhook(app.key, hit.headers["X-Pusher-Signature"], hit.body.decode())
    assert validated == hit.payload
    return validated


class Client:
    """A raw Pusher protocol 7 client over aiohttp's WebSocket client."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, socket_id: str, sdk: pusher.Pusher) -> None:
        self.ws = ws
        self.socket_id = socket_id
        self.sdk = sdk

    async def next(self, event: str, channel: str | None = None, timeout: float = 2.0) -> dict[str, Any]:
        """The next frame named ``event`` (on ``channel``), skipping others."""
        seen: list[Any] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    msg = await self.ws.receive()
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        raise AssertionError(f"waiting for {event}: got {msg.type.name} {msg.data!r}")
                    frame = json.loads(msg.data)
                    if frame.get("event") == event and (channel is None or frame.get("channel") == channel):
                        return frame
                    seen.append(frame)
        except TimeoutError:
            raise AssertionError(f"no {event} on {channel} within {timeout} s; got {seen}") from None

    async def send(self, event: str, data: Any, channel: str | None = None) -> None:
        frame: dict[str, Any] = {"event": event, "data": data}
        if channel is not None:
            frame["channel"] = channel
        await self.ws.send_str(json.dumps(frame))

    async def subscribe(self, channel: str, user_id: str | None = None) -> None:
        """Subscribe, signing private/presence channels with the SDK; wait for the confirmation."""
        data: dict[str, Any] = {"channel": channel}
        if channel.startswith(("private-", "presence-")):
            presence = channel.startswith("presence-") and user_id
            custom = {"user_id": user_id, "user_info": {"name": user_id}} if presence else None
            data.update(self.sdk.authenticate(channel=channel, socket_id=self.socket_id, custom_data=custom))
        await self.send("pusher:subscribe", data)
        await self.next("pusher_internal:subscription_succeeded", channel)

    async def unsubscribe(self, channel: str) -> None:
        await self.send("pusher:unsubscribe", {"channel": channel})

    async def close(self) -> None:
        await self.ws.close()


class Rig:
    """Receivers, servers and clients of one test, all torn down at its end (clients first)."""

    def __init__(self) -> None:
        self.session = aiohttp.ClientSession()
        self.receivers: list[Receiver] = []
        self.servers: list[LocalServer] = []
        self.clients: list[Client] = []

    async def receiver(self, **options: Any) -> Receiver:
        receiver = await Receiver(**options).start()
        self.receivers.append(receiver)
        return receiver

    async def server(self, **settings: Any) -> LocalServer:
        """A started :class:`LocalServer`; ``webhook_delay`` defaults to :data:`DELAY`."""
        if "apps" not in settings:
            settings.setdefault("webhook_delay", DELAY)
        server = LocalServer(**settings)
        await asyncio.to_thread(server.start)
        self.servers.append(server)
        return server

    def sdk(self, server: LocalServer, app: AppConfig | None = None) -> pusher.Pusher:
        return sdk_for(server.host, server.port, app or server.app)

    async def client(self, server: LocalServer, app: AppConfig | None = None) -> Client:
        app = app or server.app
        url = f"ws://{server.host}:{server.port}/app/{app.key}?protocol=7&client=py&version=0"
        ws = await self.session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
        client = Client(ws, "", self.sdk(server, app))
        hello = await client.next("pusher:connection_established")
        client.socket_id = json.loads(hello["data"])["socket_id"]
        self.clients.append(client)
        return client

    async def aclose(self) -> None:
        for client in self.clients:
            await client.ws.close()
        await self.session.close()
        for server in self.servers:
            await asyncio.to_thread(server.stop)
        for receiver in self.receivers:
            await receiver.stop()


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    rig = Rig()
    try:
        yield rig
    finally:
        await rig.aclose()


def closed_port_url() -> str:
    """A webhook URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


# ---------------------------------------------------------------------------------------------- format


async def test_body_and_headers_follow_the_spec_and_pass_the_sdk_validator(rig: Rig) -> None:
    """A webhook is a JSON {time_ms, events} POST, signed so that the SDK's validate_webhook accepts it."""
    receiver = await rig.receiver()
    server = await rig.server(webhook_urls=(receiver.url,))
    client = await rig.client(server)
    before_ms = time.time() * 1000
    await client.subscribe("format-check")
    [(hit, _)] = await receiver.wait_events(name="channel_occupied")

    assert hit.headers["Content-Type"].startswith("application/json")
    payload = assert_signed(hit, server.app)
    assert set(payload) == {"time_ms", "events"}
    assert type(payload["time_ms"]) is int  # milliseconds, as an integer
    assert before_ms - 1000 <= payload["time_ms"] <= time.time() * 1000 + 1000
    assert payload["events"] == [{"name": "channel_occupied", "channel": "format-check"}]

    sdk = rig.sdk(server)
    signature = hit.headers["X-Pusher-Signature"]
    tampered = hit.body.decode().replace("format-check", "format-cheat")
    assert sdk.validate_webhook(server.key, signature, tampered) is None
    assert sdk.validate_webhook("another-key", signature, hit.body.decode()) is None


async def test_each_app_signs_with_its_own_key_and_secret(rig: Rig) -> None:
    """Two apps on one server post to the same URL, each with its own X-Pusher-Key and signature."""
    receiver = await rig.receiver()
    apps = [
        AppConfig("1001", "key-one", "secret-one", webhook_urls=(receiver.url,), webhook_delay=DELAY),
        AppConfig("2002", "key-two", "secret-two", webhook_urls=(receiver.url,), webhook_delay=DELAY),
    ]
    server = await rig.server(apps=apps)
    for app, channel in zip(apps, ("room-of-one", "room-of-two"), strict=True):
        await (await rig.client(server, app)).subscribe(channel)
    await receiver.wait_events(2, name="channel_occupied")

    by_key = {hit.headers["X-Pusher-Key"]: hit for hit in receiver.hits}
    assert set(by_key) == {"key-one", "key-two"}
    for app, other, channel in ((apps[0], apps[1], "room-of-one"), (apps[1], apps[0], "room-of-two")):
        hit = by_key[app.key]
        assert assert_signed(hit, app)["events"] == [{"name": "channel_occupied", "channel": channel}]
        other_sdk = sdk_for(server.host, server.port, other)
        signature, body = hit.headers["X-Pusher-Signature"], hit.body.decode()
        assert other_sdk.validate_webhook(app.key, signature, body) is None
        assert other_sdk.validate_webhook(other.key, signature, body) is None


# ---------------------------------------------------------------------------------------------- kinds


@pytest.mark.parametrize("delay", [0.5, 1.0])
async def test_channel_occupied_at_once_and_vacated_webhook_delay_after_the_leave(
    rig: Rig, delay: float
) -> None:
    """channel_occupied comes at once; channel_vacated about webhook_delay seconds after the last leave."""
    receiver = await rig.receiver()
    server = await rig.server(webhook_urls=(receiver.url,), webhook_delay=delay)
    client = await rig.client(server)
    started = time.monotonic()
    await client.subscribe("coming-and-going")
    [(hit, _)] = await receiver.wait_events(name="channel_occupied", channel="coming-and-going")
    assert hit.at - started < PROMPT

    left = time.monotonic()
    await client.unsubscribe("coming-and-going")
    [(hit, event)] = await receiver.wait_events(name="channel_vacated", timeout=delay + 3)
    assert event == {"name": "channel_vacated", "channel": "coming-and-going"}
    assert delay - EARLY <= hit.at - left <= delay + LATE
    assert receiver.names("coming-and-going") == ["channel_occupied", "channel_vacated"]
    assert_signed(hit, server.app)


async def test_member_added_at_once_and_member_removed_webhook_delay_after_disconnect(rig: Rig) -> None:
    """member_added comes at once; member_removed about webhook_delay after the member's socket closes."""
    receiver = await rig.receiver()
    server = await rig.server(webhook_urls=(receiver.url,))
    alice, bob = await rig.client(server), await rig.client(server)
    await alice.subscribe("presence-club", "alice")
    started = time.monotonic()
    await bob.subscribe("presence-club", "bob")
    added = await receiver.wait_events(2, name="member_added")
    assert [event for _, event in added] == [
        {"name": "member_added", "channel": "presence-club", "user_id": "alice"},
        {"name": "member_added", "channel": "presence-club", "user_id": "bob"},
    ]
    assert added[1][0].at - started < PROMPT

    left = time.monotonic()
    await bob.close()
    [(hit, event)] = await receiver.wait_events(name="member_removed", timeout=DELAY + 3)
    assert event == {"name": "member_removed", "channel": "presence-club", "user_id": "bob"}
    assert DELAY - EARLY <= hit.at - left <= DELAY + LATE
    await asyncio.sleep(DELAY + LATE)  # alice is still there: the channel stays occupied
    expected = ["channel_occupied", "member_added", "member_added", "member_removed"]
    assert receiver.names("presence-club") == expected


async def test_a_user_on_two_connections_is_added_and_removed_once(rig: Rig) -> None:
    """member_added on a user's first connection only; member_removed only when the last one leaves."""
    receiver = await rig.receiver()
    server = await rig.server(webhook_urls=(receiver.url,))
    tab1, tab2 = await rig.client(server), await rig.client(server)
    await tab1.subscribe("presence-tabs", "carol")
    await tab2.subscribe("presence-tabs", "carol")
    await tab1.close()
    await asyncio.sleep(DELAY + LATE)
    assert receiver.names("presence-tabs") == ["channel_occupied", "member_added"]

    await tab2.close()
    await receiver.wait_events(name="channel_vacated", channel="presence-tabs", timeout=DELAY + 3)
    assert sorted(receiver.names("presence-tabs")[2:]) == ["channel_vacated", "member_removed"]
    [(_, removed)] = receiver.events(name="member_removed")
    assert removed["user_id"] == "carol"


async def test_quick_resubscribe_cancels_both_vacated_and_occupied(rig: Rig) -> None:
    """Leaving and rejoining within webhook_delay sends no channel_vacated/channel_occupied pair."""
    receiver = await rig.receiver()
    server = await rig.server(webhook_urls=(receiver.url,))
    client = await rig.client(server)
    await client.subscribe("flicker")
    await receiver.wait_events(name="channel_occupied", channel="flicker")
    await client.unsubscribe("flicker")
    await client.subscribe("flicker")
    await asyncio.sleep(DELAY + LATE)
    assert receiver.names("flicker") == ["channel_occupied"]

    # A real leave afterwards is still reported.
    await client.unsubscribe("flicker")
    await receiver.wait_events(name="channel_vacated", channel="flicker", timeout=DELAY + 3)
    assert receiver.names("flicker") == ["channel_occupied", "channel_vacated"]


async def test_quick_presence_rejoin_on_a_new_connection_cancels_removed_and_added(rig: Rig) -> None:
    """A member who reconnects within webhook_delay causes no member_removed/member_added (nor vacated)."""
    receiver = await rig.receiver()
    server = await rig.server(webhook_urls=(receiver.url,))
    first = await rig.client(server)
    await first.subscribe("presence-reload", "dave")
    await receiver.wait_events(name="member_added", channel="presence-reload")
    await first.close()  # e.g. a page reload
    second = await rig.client(server)
    await second.subscribe("presence-reload", "dave")
    await asyncio.sleep(DELAY + LATE)
    assert receiver.names("presence-reload") == ["channel_occupied", "member_added"]


async def test_client_event_webhook_carries_data_string_socket_id_and_user_id_on_presence(rig: Rig) -> None:
    """client_event has data as a string and the sender's socket_id; user_id only on presence channels."""
    receiver = await rig.receiver()
    server = await rig.server(webhook_urls=(receiver.url,))
    sender, listener = await rig.client(server), await rig.client(server)
    for channel in ("private-chat", "presence-chat"):
        await sender.subscribe(channel, "erin")
        await listener.subscribe(channel, "frank")

    await sender.send("client-typing", {"text": "hi"}, "private-chat")
    await sender.send("client-note", "plain words", "presence-chat")
    assert (await listener.next("client-typing", "private-chat"))["data"] == '{"text":"hi"}'
    [(_, private)] = await receiver.wait_events(name="client_event", channel="private-chat")
    [(_, presence)] = await receiver.wait_events(name="client_event", channel="presence-chat")

    assert set(private) == {"name", "channel", "event", "data", "socket_id"}  # no user_id
    assert private["event"] == "client-typing"
    assert isinstance(private["data"], str)
    assert json.loads(private["data"]) == {"text": "hi"}
    assert private["socket_id"] == sender.socket_id
    assert presence == {
        "name": "client_event",
        "channel": "presence-chat",
        "event": "client-note",
        "data": "plain words",
        "socket_id": sender.socket_id,
        "user_id": "erin",
    }


async def test_cache_miss_webhook_is_deduplicated_and_not_sent_for_a_cache_hit(rig: Rig) -> None:
    """Two subscribers hitting an empty cache channel cause one cache_miss webhook; a cache hit none."""
    receiver = await rig.receiver()
    server = await rig.server(webhook_urls=(receiver.url,))
    first, second, third = await rig.client(server), await rig.client(server), await rig.client(server)
    await first.subscribe("cache-news")
    await first.next("pusher:cache_miss", "cache-news")
    await second.subscribe("cache-news")
    await second.next("pusher:cache_miss", "cache-news")
    [(_, event)] = await receiver.wait_events(name="cache_miss")
    assert event == {"name": "cache_miss", "channel": "cache-news"}

    await asyncio.to_thread(rig.sdk(server).trigger, "cache-news", "headline", {"title": "hello"})
    await third.subscribe("cache-news")
    assert json.loads((await third.next("headline", "cache-news"))["data"]) == {"title": "hello"}
    await asyncio.sleep(PROMPT)
    assert len(receiver.events(name="cache_miss")) == 1


@pytest.mark.parametrize("enabled", [True, False])
async def test_subscription_count_webhooks_only_when_enabled(rig: Rig, enabled: bool) -> None:
    """With subscription_count on, each (un)subscribe posts the new count (not for presence); off: none."""
    receiver = await rig.receiver()
    server = await rig.server(webhook_urls=(receiver.url,), subscription_count=enabled)
    one, two = await rig.client(server), await rig.client(server)
    await one.subscribe("counted")
    await two.subscribe("counted")
    await two.unsubscribe("counted")
    await one.subscribe("presence-not-counted", "gina")
    await two.subscribe("presence-not-counted", "hank")
    if enabled:
        counts = await receiver.wait_events(3, name="subscription_count")
        assert [event for _, event in counts] == [
            {"name": "subscription_count", "channel": "counted", "subscription_count": n} for n in (1, 2, 1)
        ]
    await receiver.wait_events(2, name="member_added", channel="presence-not-counted")
    await asyncio.sleep(PROMPT)
    assert len(receiver.events(name="subscription_count")) == (3 if enabled else 0)


# ---------------------------------------------------------------------------------------------- delivery


async def test_failed_webhook_is_retried_with_backoff_and_acknowledged_once(rig: Rig) -> None:
    """A receiver answering 500 twice then 200 gets the event on the third try, after growing pauses."""
    receiver = await rig.receiver(fail_first=2)
    server = await rig.server(webhook_urls=(receiver.url,))
    client = await rig.client(server)
    await client.subscribe("retry-me")
    await receiver.wait_events(name="channel_occupied", timeout=10)
    await asyncio.sleep(1.5)  # nothing more comes after the 200

    assert [hit.status for hit in receiver.hits] == [500, 500, 200]
    occupied = {"name": "channel_occupied", "channel": "retry-me"}
    for hit in receiver.hits:  # each attempt is freshly stamped and signed
        assert assert_signed(hit, server.app)["events"] == [occupied]
    first_wait = receiver.hits[1].at - receiver.hits[0].at
    second_wait = receiver.hits[2].at - receiver.hits[1].at
    assert first_wait >= 0.2
    assert second_wait >= first_wait + 0.25  # exponential backoff: the pause grows
    assert server.call(lambda: server.server.webhooks.delivered) == 1  # type: ignore[union-attr]
    assert server.call(lambda: server.server.webhooks.failed) == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("trouble", ["down", "slow"])
async def test_a_dead_or_slow_receiver_slows_neither_clients_nor_other_receivers(
    rig: Rig, trouble: str
) -> None:
    """With one webhook URL refusing connections or taking 5 s per request, WebSocket delivery and a
    second, healthy URL stay prompt."""
    if trouble == "down":
        bad_url = closed_port_url()
    else:
        slow = await rig.receiver(delay=5.0)
        bad_url = slow.url
    healthy = await rig.receiver()
    server = await rig.server(webhook_urls=(bad_url, healthy.url))
    sdk = rig.sdk(server)
    talker, listener = await rig.client(server), await rig.client(server)
    # A backlog for the bad URL: 20 channel_occupied webhooks.
    for n in range(20):
        await listener.subscribe(f"backlog-{n}")
    await talker.subscribe("private-busy")
    await listener.subscribe("private-busy")
    await healthy.wait_events(21, name="channel_occupied", timeout=PROMPT * 4)

    for n in range(5):
        started = time.monotonic()
        await asyncio.to_thread(sdk.trigger, "private-busy", "from-rest", {"n": n})
        frame = await listener.next("from-rest", "private-busy", timeout=PROMPT)
        assert json.loads(frame["data"]) == {"n": n}
        assert time.monotonic() - started < PROMPT

        started = time.monotonic()
        await talker.send("client-step", {"n": n}, "private-busy")  # each also posts a client_event
        await listener.next("client-step", "private-busy", timeout=PROMPT)
        assert time.monotonic() - started < PROMPT
        hits = await healthy.wait_events(n + 1, name="client_event", timeout=PROMPT)
        assert hits[-1][0].at - started < PROMPT
        assert json.loads(hits[-1][1]["data"]) == {"n": n}

    if trouble == "slow":
        assert 1 <= len(slow.hits) <= 2  # still busy with its first request(s)

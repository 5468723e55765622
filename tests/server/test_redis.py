"""Scale-out over Redis (issue 8): ``livewidget serve --redis`` processes sharing a real redis-server.

Every test starts its own redis-server (``--save '' --appendonly no``) and server processes on free
loopback ports (tests/_cluster.py) and stops them at teardown. redis-server missing is a failure, not a
skip: scripts/setup.sh installs it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from livewidget.cli import load_config
from livewidget.exceptions import ConfigurationError
from livewidget.server.adapters import RedisAdapter
from tests._cluster import APP_ID, HOST, KEY, ROOT, SECRET, Cluster, Node, RedisServer, free_port

pytestmark = [pytest.mark.timeout(60)]

TTL = 2.0  # --redis-node-ttl of these tests: a killed process's members go within TTL + a heartbeat
PROMPT = 5.0  # seconds for anything that must arrive


# ---------------------------------------------------------------------------------------------- helpers


def _hmac(message: str) -> str:
    return hmac.new(SECRET.encode(), message.encode(), hashlib.sha256).hexdigest()


def signed_query(method: str, path: str, body: bytes = b"", params: dict[str, str] | None = None) -> str:
    """The query string of a signed REST request (rest-api.md *Authentication*)."""
    q = {"auth_key": KEY, "auth_timestamp": str(int(time.time())), "auth_version": "1.0", **(params or {})}
    if body:
        q["body_md5"] = hashlib.md5(body).hexdigest()
    to_sign = "&".join(f"{k}={q[k]}" for k in sorted(q))
    q["auth_signature"] = _hmac(f"{method}\n{path}\n{to_sign}")
    return "&".join(f"{k}={v}" for k, v in q.items())


class Rest:
    """Signed REST calls to one process."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.port = port

    async def post(self, path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        body = json.dumps(payload).encode()
        url = f"http://{HOST}:{self.port}{path}?{signed_query('POST', path, body)}"
        async with self.session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
            return r.status, await r.json()

    async def get(self, path: str, params: dict[str, str] | None = None) -> tuple[int, Any]:
        url = f"http://{HOST}:{self.port}{path}?{signed_query('GET', path, b'', params)}"
        async with self.session.get(url) as r:
            return r.status, await r.json()

    async def trigger(self, channel: str, event: str, data: str) -> tuple[int, Any]:
        return await self.post(f"/apps/{APP_ID}/events", {"name": event, "channels": [channel], "data": data})


class Client:
    """One raw protocol-7 WebSocket connection."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, socket_id: str) -> None:
        self.ws = ws
        self.socket_id = socket_id
        self.pending: list[dict[str, Any]] = []

    async def send(self, event: str, data: Any = None, channel: str | None = None) -> None:
        msg: dict[str, Any] = {"event": event, "data": data if data is not None else {}}
        if channel is not None:
            msg["channel"] = channel
        await self.ws.send_str(json.dumps(msg))

    async def expect(self, event: str, channel: str | None = None, timeout: float = PROMPT) -> dict[str, Any]:
        for i, f in enumerate(self.pending):
            if f.get("event") == event and (channel is None or f.get("channel") == channel):
                return self.pending.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {event} on {channel} within {timeout} s; got {self.pending}")
            msg = await self.ws.receive(timeout=left)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"closed ({self.ws.close_code}) waiting for {event}; got {self.pending}")
            frame = json.loads(msg.data)
            if frame.get("event") == event and (channel is None or frame.get("channel") == channel):
                return frame
            self.pending.append(frame)

    async def barrier(self) -> list[dict[str, Any]]:
        await self.send("pusher:ping")
        await self.expect("pusher:pong")
        frames, self.pending = self.pending, []
        return frames

    async def subscribe(self, channel: str, user_id: str | None = None, info: Any = None) -> dict[str, Any]:
        data: dict[str, Any] = {"channel": channel}
        if channel.startswith("presence-"):
            cd = json.dumps({"user_id": user_id, "user_info": info})
            data["auth"] = f"{KEY}:{_hmac(f'{self.socket_id}:{channel}:{cd}')}"
            data["channel_data"] = cd
        elif channel.startswith("private-"):
            data["auth"] = f"{KEY}:{_hmac(f'{self.socket_id}:{channel}')}"
        await self.send("pusher:subscribe", data)
        return await self.expect("pusher_internal:subscription_succeeded", channel)

    async def signin(self, user_id: str) -> None:
        user_data = json.dumps({"id": user_id})
        auth = f"{KEY}:{_hmac(f'{self.socket_id}::user::{user_data}')}"
        await self.send("pusher:signin", {"auth": auth, "user_data": user_data})
        await self.expect("pusher:signin_success")


async def connect(session: aiohttp.ClientSession, port: int) -> Client:
    ws = await session.ws_connect(f"ws://{HOST}:{port}/app/{KEY}?protocol=7&client=py&version=0")
    msg = await ws.receive(timeout=PROMPT)
    frame = json.loads(msg.data)
    assert frame["event"] == "pusher:connection_established", frame
    return Client(ws, json.loads(frame["data"])["socket_id"])


def rand(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """redis-server and two ``livewidget serve --redis`` processes."""
    with Cluster(tmp_path, n=2, node_ttl=TTL) as c:
        yield c


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        yield s


async def eventually(check: Any, timeout: float = PROMPT, what: str = "condition") -> Any:
    """Poll ``check()`` (sync or async) until it returns something truthy; bounded in time."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout} s (last: {last!r})")


# ---------------------------------------------------------------------------------------------- setup


def test_redis_server_is_installed() -> None:
    """The scale-out tests need Debian's redis-server (scripts/setup.sh installs it)."""
    assert RedisServer(Path("/tmp")).exe


def test_redis_server_takes_another_port_when_its_probed_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probed port someone else binds before redis-server does is not a failed test: it tries another."""
    import tests._cluster as cluster_mod

    taken = socket.socket()
    taken.bind((HOST, 0))
    taken.listen()
    probes = iter([taken.getsockname()[1], free_port()])
    monkeypatch.setattr(cluster_mod, "free_port", lambda: next(probes))
    redis = RedisServer(tmp_path)
    try:
        redis.start()
        assert redis.port != taken.getsockname()[1]
        with socket.create_connection((HOST, redis.port), timeout=5) as conn:
            conn.sendall(b"PING\r\n")
            assert conn.recv(16) == b"+PONG\r\n"
    finally:
        redis.stop()
        taken.close()


def test_nodes_bind_port_zero_and_report_their_port(tmp_path: Path) -> None:
    """Two nodes started at once never get the same port: each binds port 0 and reads its own back."""
    redis = RedisServer(tmp_path).start()
    nodes = [Node(redis.url, tmp_path, node_ttl=TTL) for _ in range(2)]
    try:
        for node in nodes:
            node.start()
        assert nodes[0].port and nodes[1].port and nodes[0].port != nodes[1].port
        assert all(node.stats()["adapter"]["node"] for node in nodes)
    finally:
        for node in nodes:
            node.stop()
        redis.stop()


def test_config_file_and_adapter_settings(tmp_path: Path) -> None:
    """``redis`` and ``redis_node_ttl`` in the config file; bad values are named."""
    cfg = tmp_path / "lw.toml"
    cfg.write_text(
        'redis = "redis://127.0.0.1:6379/0"\nredis_node_ttl = 4\n[[apps]]\nid = 1\nkey = "k"\nsecret = "s"\n'
    )
    loaded = load_config(cfg)
    assert loaded["redis"] == "redis://127.0.0.1:6379/0" and loaded["redis_node_ttl"] == 4.0
    cfg.write_text('redis = "http://x"\n')
    with pytest.raises(ConfigurationError, match="redis"):
        load_config(cfg)
    with pytest.raises(ConfigurationError):
        RedisAdapter("http://localhost")
    with pytest.raises(ConfigurationError):
        RedisAdapter("redis://localhost", node_ttl=0)


def test_serve_fails_clearly_when_redis_is_unreachable(tmp_path: Path) -> None:
    """``serve --redis`` with nothing listening exits 1 naming Redis, rather than serving alone."""
    port = free_port()
    cmd = [sys.executable, "-m", "livewidget", "serve", "--port", "0"]
    cmd += ["--redis", f"redis://{HOST}:{port}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT, check=False)
    assert out.returncode == 1
    assert "cannot reach Redis" in out.stderr


# ---------------------------------------------------------------------------------------------- the suite


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_conformance_suite_passes_against_a_two_process_cluster(cluster: Cluster) -> None:
    """tests/conformance against two processes, each new WebSocket and REST call on the next one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEWIDGET_")}
    env["LIVEWIDGET_DATA_DIR"] = os.environ["LIVEWIDGET_DATA_DIR"]  # never the user's own
    env.update(cluster.env())
    cmd = [sys.executable, "-m", "pytest", "tests/conformance", "-q", "-p", "no:cacheprovider", "-x"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=360, cwd=ROOT, env=env, check=False)
    tail = "\n".join(out.stdout.splitlines()[-25:])
    assert out.returncode == 0, f"conformance suite failed against the cluster:\n{tail}\n{out.stderr[-2000:]}"
    assert " passed" in tail
    for node in cluster.nodes:
        stats = node.stats()["adapter"]
        assert stats["missed"] == 0 and stats["publish_failed"] == 0, stats


# ---------------------------------------------------------------------------------------------- delivery


@pytest.mark.asyncio
async def test_burst_is_delivered_exactly_once_in_order_on_both_processes(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    """2,000 REST events on one channel, alternating between the processes, reach two subscribers on
    each process exactly once and in order."""
    a, b = cluster.nodes
    channel = rand("burst-")
    clients = [await connect(session, n.port) for n in (a, b, a, b)]
    for c in clients:
        await c.subscribe(channel)
    rests = [Rest(session, a.port), Rest(session, b.port)]
    n = 2000

    async def publish() -> None:
        for i in range(n):
            status, body = await rests[i % 2].trigger(channel, "tick", str(i))
            assert status == 200, body

    async def receive(c: Client) -> list[int]:
        got: list[int] = []
        deadline = time.monotonic() + 40
        while len(got) < n:
            msg = await c.ws.receive(timeout=max(0.1, deadline - time.monotonic()))
            frame = json.loads(msg.data)
            if frame.get("event") == "tick":
                got.append(int(frame["data"]))
        return got

    results = await asyncio.gather(publish(), *(receive(c) for c in clients))
    for got in results[1:]:
        assert got == list(range(n))
    for c in clients:  # and nothing more
        assert not [f for f in await c.barrier() if f.get("event") == "tick"]


@pytest.mark.asyncio
async def test_client_events_cross_processes_and_are_not_echoed(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    a, b = cluster.nodes
    channel = rand("private-chat-")
    sender, other_here, other_there = [await connect(session, p) for p in (a.port, a.port, b.port)]
    for c in (sender, other_here, other_there):
        await c.subscribe(channel)
    await sender.send("client-typing", {"who": "me"}, channel)
    for c in (other_here, other_there):
        frame = await c.expect("client-typing", channel)
        assert json.loads(frame["data"]) == {"who": "me"}
    assert not [f for f in await sender.barrier() if f.get("event") == "client-typing"]


@pytest.mark.asyncio
async def test_send_to_user_and_terminate_reach_every_process(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    """A user with a connection on each process: send_to_user through either REST reaches both;
    terminate_connections through the other closes both (4009), and no one else."""
    a, b = cluster.nodes
    user = rand("user-")
    tabs = [await connect(session, a.port), await connect(session, b.port)]
    bystander = await connect(session, b.port)
    for tab in tabs:
        await tab.signin(user)
        await tab.subscribe(f"#server-to-user-{user}")
    # what the SDK's send_to_user does: a trigger on #server-to-user-<id>
    status, _ = await Rest(session, a.port).trigger(f"#server-to-user-{user}", "greet", "{}")
    assert status == 200
    for tab in tabs:
        await tab.expect("greet", f"#server-to-user-{user}")
    status, _ = await Rest(session, b.port).post(f"/apps/{APP_ID}/users/{user}/terminate_connections", {})
    assert status == 200
    for tab in tabs:
        msg = await tab.ws.receive(timeout=PROMPT)
        while msg.type is aiohttp.WSMsgType.TEXT:
            msg = await tab.ws.receive(timeout=PROMPT)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 4009, (msg, tab.ws.close_code)
    await bystander.barrier()  # still open


@pytest.mark.asyncio
async def test_cache_channel_is_shared_with_late_subscribers_and_late_processes(
    cluster: Cluster, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    a, b = cluster.nodes
    channel = rand("cache-")
    status, _ = await Rest(session, a.port).trigger(channel, "state", '{"v":1}')
    assert status == 200
    late = await connect(session, b.port)
    await late.subscribe(channel)
    assert (await late.expect("state", channel))["data"] == '{"v":1}'
    third = Node(cluster.redis.url, tmp_path, node_ttl=TTL).start()
    try:
        joiner = await connect(session, third.port)
        await joiner.subscribe(channel)
        assert (await joiner.expect("state", channel))["data"] == '{"v":1}'
        _, info = await Rest(session, third.port).get(f"/apps/{APP_ID}/channels/{channel}", {"info": "cache"})
        assert info["cache"]["data"] == '{"v":1}'
    finally:
        third.stop()


@pytest.mark.asyncio
async def test_reuse_port_spreads_one_port_over_two_processes(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """Two processes on one port (SO_REUSEPORT): connections land on both, and events reach all."""
    redis = RedisServer(tmp_path).start()
    nodes = [Node(redis.url, tmp_path, node_ttl=TTL) for _ in range(2)]
    try:
        nodes[0].start("--reuse-port")  # binds port 0 and reports the port it got
        port = nodes[1].port = nodes[0].port
        nodes[1].start("--reuse-port")
        seen = set()
        for _ in range(40):
            seen.add(nodes[0].stats()["adapter"]["node"])
            if len(seen) == 2:
                break
        assert len(seen) == 2, "the kernel sent every connection to one process"
        channel = rand("shared-")
        clients = [await connect(session, port) for _ in range(10)]
        for c in clients:
            await c.subscribe(channel)
        status, _ = await Rest(session, port).trigger(channel, "hello", "1")
        assert status == 200
        for c in clients:
            await c.expect("hello", channel)
    finally:
        for node in nodes:
            node.stop()
        redis.stop()


# ---------------------------------------------------------------------------------------------- presence


@pytest.mark.asyncio
async def test_presence_spans_processes_and_a_killed_process_leaves_no_ghosts(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    """Members on two processes see each other and REST lists both; after SIGKILL of one process its
    members expire within the node TTL plus a heartbeat and member_removed reaches the survivors."""
    a, b = cluster.nodes
    channel = rand("presence-room-")
    alice = await connect(session, a.port)
    ok = await alice.subscribe(channel, "alice", {"name": "Alice"})
    assert json.loads(ok["data"])["presence"]["ids"] == ["alice"]
    bob = await connect(session, b.port)
    ok = await bob.subscribe(channel, "bob", {"name": "Bob"})
    presence = json.loads(ok["data"])["presence"]
    assert sorted(presence["ids"]) == ["alice", "bob"] and presence["hash"]["alice"] == {"name": "Alice"}
    added = await alice.expect("pusher_internal:member_added", channel)
    assert json.loads(added["data"]) == {"user_id": "bob", "user_info": {"name": "Bob"}}
    # Bob's second tab, on the other process: no second member_added anywhere.
    bob2 = await connect(session, a.port)
    ok = await bob2.subscribe(channel, "bob", {"name": "Bob"})
    assert json.loads(ok["data"])["presence"]["count"] == 2
    await bob2.ws.close()
    for node in (a, b):
        status, users = await Rest(session, node.port).get(f"/apps/{APP_ID}/channels/{channel}/users")
        assert status == 200 and sorted(u["id"] for u in users["users"]) == ["alice", "bob"]
        _, info = await Rest(session, node.port).get(
            f"/apps/{APP_ID}/channels/{channel}", {"info": "user_count,subscription_count"}
        )
        assert info == {"occupied": True, "user_count": 2, "subscription_count": 2}
    assert not [f for f in await alice.barrier() if "member" in f.get("event", "")]

    killed_at = time.monotonic()
    b.stop(signal.SIGKILL)
    removed = await alice.expect("pusher_internal:member_removed", channel, timeout=TTL + 4)
    assert json.loads(removed["data"]) == {"user_id": "bob"}
    assert time.monotonic() - killed_at <= TTL + 3
    status, users = await Rest(session, a.port).get(f"/apps/{APP_ID}/channels/{channel}/users")
    assert users["users"] == [{"id": "alice"}]
    assert a.stats()["adapter"]["reaped_nodes"] == 1
    # a new member still sees only Alice
    carol = await connect(session, a.port)
    ok = await carol.subscribe(channel, "carol")
    assert sorted(json.loads(ok["data"])["presence"]["ids"]) == ["alice", "carol"]


@pytest.mark.asyncio
async def test_watchlist_online_offline_across_processes(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    a, b = cluster.nodes
    watcher = await connect(session, a.port)
    user_data = json.dumps({"id": "w1", "watchlist": ["friend"]})
    auth = f"{KEY}:{_hmac(f'{watcher.socket_id}::user::{user_data}')}"
    await watcher.send("pusher:signin", {"auth": auth, "user_data": user_data})
    first = await watcher.expect("pusher_internal:watchlist_events")
    assert json.loads(first["data"])["events"] == [{"name": "offline", "user_ids": ["friend"]}]
    friend = await connect(session, b.port)
    await friend.signin("friend")
    online = await watcher.expect("pusher_internal:watchlist_events")
    assert json.loads(online["data"])["events"] == [{"name": "online", "user_ids": ["friend"]}]
    await friend.ws.close()
    offline = await watcher.expect("pusher_internal:watchlist_events")
    assert json.loads(offline["data"])["events"] == [{"name": "offline", "user_ids": ["friend"]}]


# ---------------------------------------------------------------------------------------------- outages


@pytest.mark.asyncio
async def test_redis_restart_mid_stream_is_survived_and_the_gap_reported(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    """Redis killed and restarted while events flow: while it is down publishing answers 503 (and is
    counted); after the restart both processes reconnect, re-register their members and subscriptions,
    deliver new events, and count the outage."""
    a, b = cluster.nodes
    channel = rand("stream-")
    presence = rand("presence-")
    subs = [await connect(session, a.port), await connect(session, b.port)]
    for c in subs:
        await c.subscribe(channel)
    await subs[0].subscribe(presence, "p0")
    await subs[1].subscribe(presence, "p1")
    rest = [Rest(session, a.port), Rest(session, b.port)]
    for i in range(20):
        assert (await rest[i % 2].trigger(channel, "tick", str(i)))[0] == 200
    for c in subs:
        for i in range(20):
            assert (await c.expect("tick", channel))["data"] == str(i)

    cluster.redis.stop(signal.SIGKILL)
    failed = 0
    for i in range(20, 30):
        status, body = await rest[i % 2].trigger(channel, "tick", str(i))
        if status == 503:
            failed += 1
            assert "Redis" in body["error"]
    assert failed == 10
    cluster.redis.start()
    for node in (a, b):
        await eventually(lambda node=node: node.stats()["adapter"]["connected"], 10, "reconnected")

    async def delivered_again() -> bool:
        status, _ = await rest[0].trigger(channel, "probe", "x")
        return status == 200

    await eventually(delivered_again, 10, "publishing works again")
    for i in range(100, 120):
        assert (await rest[i % 2].trigger(channel, "tick", str(i)))[0] == 200
    for c in subs:
        got = []
        deadline = time.monotonic() + PROMPT
        while len(got) < 20 and time.monotonic() < deadline:
            frame = await c.expect("tick", channel)
            got.append(int(frame["data"]))
        assert got == list(range(100, 120)), "events after the restart are delivered, in order, once"

    async def members_back() -> bool:
        _, users = await rest[1].get(f"/apps/{APP_ID}/channels/{presence}/users")
        return sorted(u["id"] for u in users.get("users", [])) == ["p0", "p1"]

    await eventually(members_back, 10, "presence re-registered in the new Redis")
    stats = [n.stats()["adapter"] for n in (a, b)]
    assert sum(s["publish_failed"] for s in stats) == 10
    assert all(s["bus_disconnects"] >= 1 and s["resyncs"] >= 2 for s in stats), stats
    # nobody was told a member left: the members never did
    for c in subs:
        assert not [f for f in await c.barrier() if f.get("event") == "pusher_internal:member_removed"]


# ---------------------------------------------------------------------------------------------- webhooks


@pytest.mark.asyncio
async def test_webhooks_reflect_the_cluster(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    """channel_occupied when the first process gains the channel, channel_vacated (after the delay)
    when the last loses it; member_added/member_removed once for a user on both processes."""
    hits: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        hits.extend(json.loads(await request.read())["events"])
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    hook_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    redis = RedisServer(tmp_path).start()
    cfg = tmp_path / "cluster.toml"
    cfg.write_text(
        f'redis = "{redis.url}"\nredis_node_ttl = {TTL}\n[[apps]]\nid = {APP_ID}\nkey = "{KEY}"\n'
        f'secret = "{SECRET}"\nwebhooks = ["http://{HOST}:{hook_port}/hook"]\nwebhook_delay = 0.5\n'
    )
    nodes = [Node(redis.url, tmp_path, node_ttl=TTL) for _ in range(2)]
    try:
        for node in nodes:
            node.start_with_config(cfg)
        channel = rand("presence-hooks-")
        c1 = await connect(session, nodes[0].port)
        c2 = await connect(session, nodes[1].port)
        await c1.subscribe(channel, "u1")
        await c2.subscribe(channel, "u1")  # the same user on the other process
        await asyncio.sleep(0.3)
        await c1.ws.close()
        await asyncio.sleep(1.2)  # past the vacate delay: nothing, the channel is still occupied
        names = [h["name"] for h in hits if h.get("channel") == channel]
        assert names == ["channel_occupied", "member_added"], hits
        await c2.ws.close()
        await eventually(lambda: len([h for h in hits if h.get("channel") == channel]) >= 4, 5, "vacated")
        await asyncio.sleep(0.5)
        names = sorted(h["name"] for h in hits if h.get("channel") == channel)
        assert names == ["channel_occupied", "channel_vacated", "member_added", "member_removed"], hits
    finally:
        for node in nodes:
            node.stop()
        redis.stop()
        await runner.cleanup()

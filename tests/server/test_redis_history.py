"""Channel history over Redis: two real ``livewidget serve --redis`` processes and a real redis-server
share positions, rewind and the history API; a restarted process loads the history back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests._cluster import APP_ID, Cluster

from .test_redis import KEY, TTL, Client, Rest, _hmac, connect, eventually, rand


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """redis-server and two ``livewidget serve --redis`` processes."""
    with Cluster(tmp_path, n=2, node_ttl=TTL) as c:
        yield c


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        yield s


async def rewind(client: Client, channel: str, spec: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Subscribe with ``rewind``: the replayed events and the rewind_complete data."""
    data: dict[str, Any] = {"channel": channel, "rewind": spec}
    if channel.startswith("private-"):
        data["auth"] = f"{KEY}:{_hmac(f'{client.socket_id}:{channel}')}"
    await client.send("pusher:subscribe", data)
    await client.expect("pusher_internal:subscription_succeeded", channel)
    done = await client.expect("pusher:rewind_complete", channel)
    replayed = [f for f in client.pending if f.get("channel") == channel and "serial" in f]
    client.pending = [f for f in client.pending if f not in replayed]
    return replayed, json.loads(done["data"])


@pytest.mark.asyncio
async def test_both_processes_give_the_same_positions_replays_and_history(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    a, b = cluster.nodes
    ch = rand("jobs-")
    live_a, live_b = await connect(session, a.port), await connect(session, b.port)
    await live_a.subscribe(ch)
    await live_b.subscribe(ch)
    for i in range(4):  # published through both processes, in turn
        status, _ = await Rest(session, (a, b)[i % 2].port).trigger(ch, "ev", str(i))
        assert status == 200
    got_a = [await live_a.expect("ev", ch) for _ in range(4)]
    got_b = [await live_b.expect("ev", ch) for _ in range(4)]
    assert [f["serial"] for f in got_a] == [1, 2, 3, 4] == [f["serial"] for f in got_b]
    assert len({f["stream_id"] for f in got_a + got_b}) == 1
    stream = got_a[0]["stream_id"]
    # a late subscriber on either process gets the same replay
    for node in (a, b):
        late = await connect(session, node.port)
        replayed, done = await rewind(late, ch, {"count": 3})
        assert [f["serial"] for f in replayed] == [2, 3, 4]
        assert done == {"complete": True, "historical_count": 3, "serial": 4, "stream_id": stream}
        resumed = await connect(session, node.port)
        replayed, done = await rewind(resumed, ch, {"serial": 1, "stream_id": stream})
        assert [f["data"] for f in replayed] == ["1", "2", "3"] and done["complete"] is True
    # the history API answers alike on both
    pages = [await Rest(session, node.port).get(f"/apps/{APP_ID}/channels/{ch}/events") for node in (a, b)]
    assert pages[0] == pages[1] and pages[0][0] == 200
    assert [e["serial"] for e in pages[0][1]["events"]] == [4, 3, 2, 1]


@pytest.mark.asyncio
async def test_client_events_get_shared_positions(cluster: Cluster, session: aiohttp.ClientSession) -> None:
    a, b = cluster.nodes
    ch = rand("private-room-")
    sender, other = await connect(session, a.port), await connect(session, b.port)
    await sender.subscribe(ch)
    await other.subscribe(ch)
    await Rest(session, a.port).trigger(ch, "server", "0")
    assert (await other.expect("server", ch))["serial"] == 1
    await sender.send("client-typing", {"x": 1}, ch)
    got = await other.expect("client-typing", ch)
    assert got["serial"] == 2 and json.loads(got["data"]) == {"x": 1}
    assert [f for f in await sender.barrier() if f.get("event") == "client-typing"] == []  # no echo
    late = await connect(session, a.port)
    replayed, _ = await rewind(late, ch, 10)
    assert [(f["event"], f["serial"]) for f in replayed] == [("server", 1), ("client-typing", 2)]


@pytest.mark.asyncio
async def test_a_restarted_process_loads_the_history_from_redis(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    a, b = cluster.nodes
    ch = rand("feed-")
    for i in range(3):
        assert (await Rest(session, a.port).trigger(ch, "ev", str(i)))[0] == 200
    b.stop()
    assert (await Rest(session, a.port).trigger(ch, "ev", "3"))[0] == 200  # while b is away
    b.start()
    late = await connect(session, b.port)
    replayed, done = await rewind(late, ch, {"count": 10})
    assert [f["data"] for f in replayed] == ["0", "1", "2", "3"] and done["complete"] is True
    assert (await Rest(session, b.port).trigger(ch, "ev", "4"))[0] == 200
    assert (await late.expect("ev", ch))["serial"] == 5

    async def same_on_a() -> bool:
        status, body = await Rest(session, a.port).get(f"/apps/{APP_ID}/channels/{ch}/events")
        return status == 200 and body["serial"] == 5

    await eventually(same_on_a, what="process a sees serial 5")


@pytest.mark.asyncio
async def test_sse_on_one_process_follows_events_published_on_the_other(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    a, b = cluster.nodes
    ch = rand("feed-")
    assert (await Rest(session, a.port).trigger(ch, "ev", "0"))[0] == 200
    url = f"http://127.0.0.1:{b.port}/apps/{APP_ID}/channels/{ch}/stream?auth_key={KEY}&rewind=5"
    async with session.get(url) as resp:
        assert resp.status == 200
        text = ""
        while "pusher:rewind_complete" not in text:
            text += (await asyncio.wait_for(resp.content.readline(), 5)).decode()
        assert "event: ev\ndata: 0\n" in text
        assert (await Rest(session, a.port).trigger(ch, "ev", "1"))[0] == 200
        while "data: 1\n" not in text:
            text += (await asyncio.wait_for(resp.content.readline(), 5)).decode()
        assert ":2\nevent: ev\ndata: 1\n" in text  # id: <stream_id>:2

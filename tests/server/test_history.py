"""Channel history against real sockets and real clients: positions, rewind by count/time/position,
recovery after a restart (pusher-js reconnecting by itself), the history API with the official SDK,
persistence across SIGKILL, group commits, and the memory cap under many channels."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pusher
import pytest
from pusher.http import Request

from livewidget.protocol.history import Entry, Forget, Store
from livewidget.protocol.signatures import channel_auth
from livewidget.server import LocalServer
from livewidget.server.history import MemoryHistory, SQLiteHistory
from tests._cluster import free_port
from tests.conformance.test_pusher_js import scenario

from .test_transport import open_ws, trigger


def sdk(server: LocalServer) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=server.app_id,
        key=server.key,
        secret=server.secret,
        host=server.host,
        port=server.port,
        ssl=False,
    )


def history_get(client: pusher.Pusher, channel: str, **params: Any) -> dict[str, Any]:
    """``GET /apps/{id}/channels/{channel}/events`` signed by the official SDK."""
    inner = client._pusher_client
    path = f"/apps/{inner.app_id}/channels/{channel}/events"
    result: dict[str, Any] = inner.http.send_request(
        Request(inner, "GET", path, {k: str(v) for k, v in params.items()})
    )
    return result


async def subscribe(
    ws: aiohttp.ClientWebSocketResponse, socket_id: str, channel: str, rewind: Any = None
) -> None:
    data: dict[str, Any] = {"channel": channel}
    if rewind is not None:
        data["rewind"] = rewind
    if channel.startswith("private-"):
        data["auth"] = channel_auth_for(socket_id, channel)
    await ws.send_json({"event": "pusher:subscribe", "data": data})


_SECRETS: dict[str, tuple[str, str]] = {}


def channel_auth_for(socket_id: str, channel: str) -> str:
    key, secret = _SECRETS["current"]
    return channel_auth(key, secret, socket_id, channel)


async def until(
    ws: aiohttp.ClientWebSocketResponse, event: str, timeout: float = 5.0
) -> list[dict[str, Any]]:
    """Frames received up to and including the first ``event``."""
    out = []
    while True:
        msg = await ws.receive_json(timeout=timeout)
        out.append(msg)
        if msg["event"] == event:
            return out


def of(frames: list[dict[str, Any]], event: str = "ev") -> list[int]:
    return [f["serial"] for f in frames if f["event"] == event]


@pytest.fixture
def server() -> Any:
    with LocalServer() as srv:
        _SECRETS["current"] = (srv.key, srv.secret)
        yield srv


# ---------------------------------------------------------------------------------------------- websocket


@pytest.mark.asyncio
async def test_live_events_carry_positions_and_rewind_by_count_time_and_position(server: LocalServer):
    async with aiohttp.ClientSession() as session:
        live, live_id = await open_ws(session, server)
        await subscribe(live, live_id, "jobs")
        await until(live, "pusher_internal:subscription_succeeded")
        for i in range(5):
            await trigger(session, server, "jobs", str(i))
        got = [await live.receive_json(timeout=5) for _ in range(5)]
        assert [g["serial"] for g in got] == [1, 2, 3, 4, 5]
        stream = got[0]["stream_id"]
        assert {g["stream_id"] for g in got} == {stream}

        ws, sid = await open_ws(session, server)
        await subscribe(ws, sid, "jobs", {"count": 2})
        frames = await until(ws, "pusher:rewind_complete")
        assert frames[0]["event"] == "pusher_internal:subscription_succeeded"
        assert of(frames) == [4, 5]
        assert json.loads(frames[-1]["data"]) == {
            "complete": True,
            "historical_count": 2,
            "serial": 5,
            "stream_id": stream,
        }

        await subscribe(ws, sid, "jobs-by-time", "10s")
        assert of(await until(ws, "pusher:rewind_complete")) == []

        ws2, sid2 = await open_ws(session, server)
        await subscribe(ws2, sid2, "jobs", {"serial": 2, "stream_id": stream})
        frames = await until(ws2, "pusher:rewind_complete")
        assert of(frames) == [3, 4, 5]
        ws3, sid3 = await open_ws(session, server)
        await subscribe(ws3, sid3, "jobs", {"seconds": 60})
        assert of(await until(ws3, "pusher:rewind_complete")) == [1, 2, 3, 4, 5]
        # live continues after the replay, on every subscriber
        await trigger(session, server, "jobs", "6")
        for w in (live, ws, ws2, ws3):
            assert (await w.receive_json(timeout=5))["serial"] == 6


@pytest.mark.asyncio
async def test_events_published_during_replays_arrive_exactly_once(tmp_path: Path):
    """Publishers and rewinding subscribers race (SQLite: delivery waits for the commit)."""
    with LocalServer(history=SQLiteHistory(tmp_path)) as srv:
        _SECRETS["current"] = (srv.key, srv.secret)
        async with aiohttp.ClientSession() as session:

            async def publish(n: int) -> None:
                for i in range(n):
                    await trigger(session, srv, "race", str(i))

            async def join() -> list[int]:
                ws, sid = await open_ws(session, srv)
                await subscribe(ws, sid, "race", {"count": 1000})
                frames = await until(ws, "pusher:rewind_complete")
                return [ws, of(frames)]  # type: ignore[list-item]

            pub = asyncio.create_task(publish(200))
            joined = []
            for _ in range(8):
                joined.append(await join())
                await asyncio.sleep(0.01)
            await pub
            for ws, replayed in joined:
                seen = list(replayed)
                while not seen or seen[-1] < 200:
                    msg = await ws.receive_json(timeout=5)
                    if msg["event"] == "ev":
                        seen.append(msg["serial"])
                start = seen[0] if seen else 1
                assert seen == list(range(start, 201)), "a gap or a duplicate"


@pytest.mark.asyncio
async def test_malformed_rewind_gets_a_pusher_error_naming_it_and_the_socket_stays(server: LocalServer):
    async with aiohttp.ClientSession() as session:
        ws, sid = await open_ws(session, server)
        await subscribe(ws, sid, "jobs", {"count": 5000})
        err = await ws.receive_json(timeout=5)
        assert err["event"] == "pusher:error"
        assert "rewind count 5000 is over the limit of 1000" in err["data"]["message"]
        sub_err = await ws.receive_json(timeout=5)
        assert sub_err["event"] == "pusher:subscription_error"
        await subscribe(ws, sid, "jobs", {"count": 1})
        assert (await until(ws, "pusher:rewind_complete"))[-1]["event"] == "pusher:rewind_complete"


@pytest.mark.asyncio
async def test_private_history_needs_the_subscription_auth(server: LocalServer):
    client = sdk(server)
    client.trigger("private-room", "ev", "secret")
    async with aiohttp.ClientSession() as session:
        ws, sid = await open_ws(session, server)
        await ws.send_json({"event": "pusher:subscribe", "data": {"channel": "private-room", "rewind": 5}})
        frames = [await ws.receive_json(timeout=5) for _ in range(2)]
        assert [f["event"] for f in frames] == ["pusher:error", "pusher:subscription_error"]
        await subscribe(ws, sid, "private-room", 5)
        assert of(await until(ws, "pusher:rewind_complete")) == [1]


@pytest.mark.asyncio
async def test_memory_history_restart_says_the_stream_was_reset():
    port = free_port()
    first = LocalServer(port=port).start()
    try:
        _SECRETS["current"] = (first.key, first.secret)
        sdk(first).trigger("jobs", "ev", "1")
        async with aiohttp.ClientSession() as session:
            ws, sid = await open_ws(session, first)
            await subscribe(ws, sid, "jobs", {"count": 10})
            frames = await until(ws, "pusher:rewind_complete")
            old = frames[-1]
            old_stream = json.loads(old["data"])["stream_id"]
            first.stop()
            second = first.with_settings().start()
            try:
                ws, sid = await open_ws(session, second)
                await subscribe(ws, sid, "jobs", {"serial": 1, "stream_id": old_stream})
                done = json.loads((await until(ws, "pusher:rewind_complete"))[-1]["data"])
                assert done["complete"] is False and done["reason"] == "stream_reset"
                assert done["stream_id"] != old_stream
            finally:
                second.stop()
    finally:
        first.stop()


# ---------------------------------------------------------------------------------------------- REST API


def test_history_api_with_the_official_sdk(server: LocalServer):
    client = sdk(server)
    for i in range(12):
        client.trigger(["jobs", "other"], "ev", {"i": i})
    page = history_get(client, "jobs", limit=5)
    assert [e["serial"] for e in page["events"]] == [12, 11, 10, 9, 8]
    assert json.loads(page["events"][0]["data"]) == {"i": 11}
    assert page["serial"] == 12 and page["first_serial"] == 1
    older = history_get(client, "jobs", limit=5, before=page["events"][-1]["serial"])
    assert [e["serial"] for e in older["events"]] == [7, 6, 5, 4, 3]
    forward = history_get(client, "jobs", direction="oldest_first", after=10)
    assert [e["serial"] for e in forward["events"]] == [11, 12]
    t0 = page["events"][-1]["time_ms"]
    timed = history_get(client, "jobs", direction="oldest_first", start=t0, limit=1)
    assert timed["events"][0]["time_ms"] >= t0
    with pytest.raises(pusher.errors.PusherBadRequest, match="direction must be"):
        history_get(client, "jobs", direction="sideways")
    bad = pusher.Pusher(
        app_id=server.app_id, key=server.key, secret="wrong", host=server.host, port=server.port, ssl=False
    )
    with pytest.raises(pusher.errors.PusherBadAuth):
        history_get(bad, "jobs")


def test_send_to_user_is_not_recorded(server: LocalServer):
    client = sdk(server)
    client.send_to_user("u1", "hi", {})
    stats = server.call(server.server.stats)
    assert stats["history"]["apps"][server.app_id]["appended"] == 0


# ---------------------------------------------------------------------------------------------- pusher-js


@pytest.mark.node
@pytest.mark.timeout(90)
def test_pusher_js_rewinds_and_recovers_after_a_server_restart(tmp_path: Path):
    """Stock pusher-js (plus the resume shim in js/conformance/history.mjs) reconnects by itself after
    the server restarts on the same history folder, and gets exactly what it missed."""
    port = free_port()
    server = LocalServer(port=port, history=SQLiteHistory(tmp_path)).start()
    try:
        client = sdk(server)
        with scenario("history.mjs", server.host, server.port, server.key, server.secret, 40.0) as run:
            assert run.proc.stdin is not None
            channel = run.wait_ready("channel")["channel"]
            for i in range(5):
                client.trigger(channel, "e", {"n": 1 + i})
            run.proc.stdin.write("go\n")
            run.proc.stdin.flush()
            run.wait_ready("rewound")
            for i in range(2):
                client.trigger(channel, "e", {"n": 6 + i})
            run.wait_ready("live")
            server.stop()
            server = LocalServer(port=port, apps=server.apps, history=SQLiteHistory(tmp_path)).start()
            client = sdk(server)
            for i in range(2):
                client.trigger(channel, "e", {"n": 8 + i})
            run.wait_ready("recovered")
            for i in range(3):
                client.trigger(channel, "e", {"n": 10 + i})
            run.proc.stdin.write("go\n")
            run.proc.stdin.flush()
            obs = run.result()
    finally:
        server.stop()
    assert obs["errors"] == [] or all("4200" in json.dumps(e) for e in obs["errors"]), obs["errors"]
    serials = [s for s, _, _ in obs["received"]]
    assert serials == list(range(3, 13)), serials  # no gap, no duplicate, in order, across restarts
    assert len({sid for _, sid, _ in obs["received"]}) == 1  # the same stream after the restart
    assert [d["n"] for _, _, d in obs["received"]] == list(range(3, 13))
    assert [r["complete"] for r in obs["rewinds"]] == [True, True, True]
    assert obs["rewinds"][0]["historical_count"] == 3
    assert obs["rewinds"][2]["historical_count"] == 3  # missed while offline: replayed
    # stock pusher-js channel binders see the events (replayed ones too), and nothing else changes
    assert [d["n"] for d in obs["bound"]] == list(range(3, 13))
    assert obs["final_state"] == "connected"


# ---------------------------------------------------------------------------------------------- SQLite


def serve(data: Path, port: int, app: dict[str, str]) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "LIVEWIDGET_APP_ID": app["app_id"],
        "LIVEWIDGET_KEY": app["key"],
        "LIVEWIDGET_SECRET": app["secret"],
    }
    cmd = [sys.executable, "-m", "livewidget", "serve", "--port", str(port), "--data", str(data)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # bounded: the test's timeout; EOF if it exits
        if "listening on" in line:
            break
    else:
        kill(proc)
        raise AssertionError("livewidget serve did not start")
    reader = threading.Thread(target=proc.stdout.read, daemon=True)  # keep the pipe drained
    reader.start()
    _readers[proc.pid] = reader
    return proc


_readers: dict[int, threading.Thread] = {}


def kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    reader = _readers.pop(proc.pid, None)
    if reader is not None:
        reader.join(10)
    if proc.stdout is not None:
        proc.stdout.close()


def test_published_events_survive_sigkill_and_restart(tmp_path: Path):
    """Every publish answered 2xx is in the history after a SIGKILL in the middle of publishing, and
    the stream (its id and serials) continues after the restart."""
    port = free_port()
    app = {"app_id": "4242", "key": "histkey", "secret": "histsecret"}
    proc = serve(tmp_path, port, app)
    client = pusher.Pusher(
        app_id=app["app_id"],
        key=app["key"],
        secret=app["secret"],
        host="127.0.0.1",
        port=port,
        ssl=False,
        timeout=5,
    )
    answered: set[tuple[int, int]] = set()
    lock = threading.Lock()

    def publish(worker: int) -> None:
        for i in range(2000):  # bounded; the server is killed long before
            try:
                client.trigger([f"ch-{worker % 3}"], "ev", {"w": worker, "i": i})
            except Exception:
                return  # the server is gone
            with lock:
                answered.add((worker, i))

    try:
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(publish, w) for w in range(8)]
            deadline = time.monotonic() + 30
            while len(answered) < 200 and time.monotonic() < deadline:
                time.sleep(0.005)
            kill(proc)  # SIGKILL while publishers are mid-flight: no chance to flush anything
            for f in futures:
                f.result()
        proc = serve(tmp_path, port, app)
        after = {f"ch-{c}": history_get(client, f"ch-{c}", limit=1000) for c in range(3)}
        stored = {
            (json.loads(e["data"])["w"], json.loads(e["data"])["i"])
            for p in after.values()
            for e in p["events"]
        }
        assert len(answered) >= 200
        assert answered <= stored, f"{len(answered - stored)} answered publishes lost"
        for page in after.values():
            serials = sorted(e["serial"] for e in page["events"])
            assert serials == list(range(1, len(serials) + 1))  # no holes
        # the stream continues: same id, next serial
        client.trigger(["ch-0"], "ev", {"w": -1, "i": -1})
        again = history_get(client, "ch-0", limit=1)
        assert again["stream_id"] == after["ch-0"]["stream_id"]
        assert again["events"][0]["serial"] == after["ch-0"]["serial"] + 1
    finally:
        kill(proc)


def test_group_commit_batches_concurrent_publishers(tmp_path: Path):
    history = SQLiteHistory(tmp_path)
    with LocalServer(history=history) as server:
        client = sdk(server)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: client.trigger(f"c{i % 4}", "ev", {"i": i}), range(400)))
        stats = server.call(server.server.stats)["history"]
    assert stats["events_written"] == 400
    assert stats["commits"] < 400  # concurrent publishers shared commits
    assert stats["write_failures"] == 0


def test_a_history_folder_is_used_by_one_server_at_a_time(tmp_path: Path):
    with LocalServer(history=SQLiteHistory(tmp_path)) as first:
        second = LocalServer(apps=first.apps, history=SQLiteHistory(tmp_path))
        with pytest.raises(Exception, match="in use by another livewidget server"):
            second.start()


def test_memory_stays_within_the_cap_under_many_channels():
    cap = 512 * 1024
    with LocalServer(history=MemoryHistory(max_memory=cap), max_batch_size=100) as server:
        client = sdk(server)
        for start in range(0, 5000, 100):
            client.trigger_batch(
                [{"channel": f"many-{start + i}", "name": "ev", "data": "x" * 200} for i in range(100)]
            )
        stats = server.call(server.server.stats)["history"]
        newest = history_get(client, "many-4999")
        oldest = history_get(client, "many-0")
    assert stats["bytes"] <= cap
    assert stats["dropped_over_cap"] > 0  # counted in /stats
    assert len(newest["events"]) == 1 and oldest["events"] == []  # oldest first


# ---------------------------------------------------------------------------------------------- SSE


async def sse_events(resp: aiohttp.ClientResponse, n: int, timeout: float = 5.0) -> list[dict[str, str]]:
    """The next ``n`` events of a text/event-stream (fields joined as the WHATWG parser does)."""
    out: list[dict[str, str]] = []
    current: dict[str, str] = {}
    while len(out) < n:
        line = (await asyncio.wait_for(resp.content.readline(), timeout)).decode().rstrip("\n")
        if line == "":
            if current:
                out.append(current)
            current = {}
        elif line.startswith(":"):
            current.setdefault("comment", line)
        else:
            field, _, value = line.partition(": ")
            current[field] = current[field] + "\n" + value if field == "data" and field in current else value
    return out


def stream_url(server: LocalServer, channel: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"auth_key": server.key, **params}.items())
    return f"{server.url}/apps/{server.app_id}/channels/{channel}/stream?{query}"


@pytest.mark.asyncio
async def test_sse_follows_a_public_channel_and_resumes_from_last_event_id(server: LocalServer):
    client = sdk(server)
    client.trigger("feed", "before", "0")
    async with aiohttp.ClientSession() as session:
        async with session.get(stream_url(server, "feed")) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            (retry,) = await sse_events(resp, 1)
            assert retry == {"retry": "1000"}
            client.trigger("feed", "tick", "line one\nline two")
            client.trigger("feed", "tick", '{"n":2}')
            got = await sse_events(resp, 2)
        stream = got[0]["id"].split(":")[0]
        assert got == [
            {"id": f"{stream}:2", "event": "tick", "data": "line one\nline two"},
            {"id": f"{stream}:3", "event": "tick", "data": '{"n":2}'},
        ]
        client.trigger("feed", "missed", "4")
        # EventSource sends the last id it saw when it reconnects
        async with session.get(stream_url(server, "feed"), headers={"Last-Event-ID": f"{stream}:2"}) as resp:
            replay = await sse_events(resp, 4)
            assert [e.get("id") for e in replay[1:3]] == [f"{stream}:3", f"{stream}:4"]
            assert replay[3]["event"] == "pusher:rewind_complete"
            assert json.loads(replay[3]["data"])["complete"] is True
            client.trigger("feed", "live", "5")
            (live,) = await sse_events(resp, 1)
            assert live["id"] == f"{stream}:5"
        # or as a query parameter, and rewind for a first visit
        url = stream_url(server, "feed", rewind="2")
        async with session.get(url) as resp:
            got = await sse_events(resp, 4)
            assert [e.get("data") for e in got[1:3]] == ["4", "5"]


@pytest.mark.asyncio
async def test_sse_private_channel_needs_a_signed_request_and_errors_are_json(server: LocalServer):
    from livewidget.protocol.signatures import sign_rest_query

    async with aiohttp.ClientSession() as session:
        async with session.get(stream_url(server, "private-x")) as resp:
            assert resp.status == 401 and "sign the request" in (await resp.json())["error"]
        path = f"/apps/{server.app_id}/channels/private-x/stream"
        params = {"auth_key": server.key, "auth_timestamp": str(int(time.time())), "auth_version": "1.0"}
        query = sign_rest_query("GET", path, params, server.secret)
        async with session.get(f"{server.url}{path}", params=query) as resp:
            assert resp.status == 200
            sdk(server).trigger("private-x", "secret", "s")
            got = await sse_events(resp, 2)
            assert got[1]["event"] == "secret"
        async with session.get(stream_url(server, "feed", last_event_id="nonsense")) as resp:
            assert resp.status == 400 and "not a position" in (await resp.json())["error"]
        async with session.get(stream_url(server, "feed").replace(server.key, "wrong")) as resp:
            assert resp.status == 401


def test_curl_follows_a_channel_with_keepalives(server: LocalServer, monkeypatch: pytest.MonkeyPatch):
    import livewidget.server.app as app_module

    monkeypatch.setattr(app_module, "_SSE_KEEPALIVE", 0.5)
    proc = subprocess.Popen(
        ["curl", "-sN", "--max-time", "8", stream_url(server, "feed")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "retry: 1000\n"
        deadline = time.monotonic() + 5
        while server.call(lambda: len(server.server._sse)) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        sdk(server).trigger("feed", "hello", "world")
        seen = ""
        while "data: world\n\n" not in seen or ": keep-alive" not in seen:
            line = proc.stdout.readline()  # bounded by curl's --max-time
            assert line, f"curl ended early: {seen!r}"
            seen += line
        assert "\nid: " in seen and "id: " in seen.split("event: hello")[0]
        assert "event: hello\ndata: world\n" in seen
    finally:
        proc.kill()
        proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
    assert server.call(lambda: len(server.server._sse)) in (0, 1)  # closed once curl is gone


def test_sqlite_restart_keeps_the_stream_and_its_limits(tmp_path: Path):
    port = free_port()
    first = LocalServer(port=port, history=SQLiteHistory(tmp_path), history_max_events=2).start()
    try:
        client = sdk(first)
        for i in range(5):
            client.trigger("jobs", "ev", str(i))
        before = history_get(client, "jobs")
        hub = first.server.apps.by_id[first.app_id]
        first.call(lambda: first.server._run(hub, hub.tick(time.time() + 10)))  # trimmed rows: deleted
        time.sleep(0.2)
    finally:
        first.stop()
    import sqlite3

    with contextlib.closing(sqlite3.connect(tmp_path / f"history-{first.app_id}.sqlite3")) as db:
        assert db.execute("SELECT serial FROM log ORDER BY serial").fetchall() == [(4,), (5,)]
    second = LocalServer(port=port, apps=first.apps, history=SQLiteHistory(tmp_path)).start()
    try:
        client = sdk(second)
        after = history_get(client, "jobs")
        assert [e["serial"] for e in after["events"]] == [5, 4] == [e["serial"] for e in before["events"]]
        assert after["stream_id"] == before["stream_id"] and after["first_serial"] == 4
        client.trigger("jobs", "ev", "next")
        assert history_get(client, "jobs", limit=1)["events"][0]["serial"] == 6
    finally:
        second.stop()


def test_history_files_are_private(tmp_path: Path):
    with LocalServer(history=SQLiteHistory(tmp_path / "data")) as server:
        sdk(server).trigger("private-secret", "ev", "classified")
        files = sorted((tmp_path / "data").iterdir())
        assert any(f.name.endswith("-wal") for f in files)
        for f in files:
            assert f.stat().st_mode & 0o077 == 0, f"{f.name} is readable by others"
    assert (tmp_path / "data").stat().st_mode & 0o077 == 0


def test_pipelined_publishes_are_answered_in_order_after_their_commits(tmp_path: Path):
    import socket

    from livewidget.protocol.signatures import body_md5, sign_rest_query

    with LocalServer(history=SQLiteHistory(tmp_path)) as server:
        path = f"/apps/{server.app_id}/events"
        requests = []
        for i in range(5):
            body = json.dumps({"name": "ev", "channel": "pipe", "data": str(i)}).encode()
            params = {"auth_key": server.key, "auth_timestamp": str(int(time.time())), "auth_version": "1.0"}
            params["body_md5"] = body_md5(body)
            query = "&".join(
                f"{k}={v}" for k, v in sign_rest_query("POST", path, params, server.secret).items()
            )
            head = f"POST {path}?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            requests.append(head.encode() + b"Content-Type: application/json\r\n\r\n" + body)
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(b"".join(requests))  # all at once: pipelined (RFC 9112 §9.3.2)
            data = b""
            while data.count(b"HTTP/1.1 200") < 5:
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
        page = history_get(sdk(server), "pipe", direction="oldest_first")
    assert [e["data"] for e in page["events"]] == ["0", "1", "2", "3", "4"]


def test_a_damaged_history_file_is_set_aside_and_history_starts_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """A power loss with commits unsynced can damage the file (synchronous=OFF while publishing): the
    server starts anyway, keeps the damaged file for inspection, and gives the channel a new stream id
    so a client resuming from an old position is told history is gone rather than shown a made-up past."""
    port = free_port()
    first = LocalServer(port=port, history=SQLiteHistory(tmp_path)).start()
    try:
        client = sdk(first)
        for i in range(3):
            client.trigger("jobs", "ev", str(i))
        before = history_get(client, "jobs")
    finally:
        first.stop()
    path = tmp_path / f"history-{first.app_id}.sqlite3"
    with path.open("r+b") as f:  # clobber the header and the first pages, as a torn write would
        f.write(b"\x00" * 8192)
    with caplog.at_level("WARNING", logger="livewidget.server.history"):
        second = LocalServer(port=port, apps=first.apps, history=SQLiteHistory(tmp_path)).start()
    try:
        assert "is damaged" in caplog.text
        aside = [p for p in tmp_path.iterdir() if ".damaged-" in p.name]
        assert aside and all(p.stat().st_mode & 0o077 == 0 for p in aside)
        client = sdk(second)
        assert history_get(client, "jobs")["events"] == []
        client.trigger("jobs", "ev", "new")
        after = history_get(client, "jobs")
        assert after["stream_id"] != before["stream_id"]
        assert [e["serial"] for e in after["events"]] == [1]
    finally:
        second.stop()


def test_checkpoints_sync_once_the_history_is_quiet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Commits are not synced (module docstring); a checkpoint with a full sync follows once publishing
    pauses; none while idle with nothing new; a clean stop leaves every event in the database file."""
    import livewidget.server.history.sqlite as mod

    monkeypatch.setattr(mod, "_CHECKPOINT_EVERY", 0.05)
    monkeypatch.setattr(mod, "_QUIET", 0.2)
    history = SQLiteHistory(tmp_path)
    with LocalServer(history=history) as server:
        client = sdk(server)
        for i in range(20):
            client.trigger("jobs", "ev", str(i))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            stats = server.call(server.server.stats)["history"]
            if stats["synced_checkpoints"] >= 1 and stats["checkpoints"] >= 1:
                break
            time.sleep(0.05)
        assert stats["synced_checkpoints"] >= 1, stats
        quiet = stats["synced_checkpoints"]
        time.sleep(0.5)  # nothing new to copy: no more checkpoints while idle
        assert server.call(server.server.stats)["history"]["synced_checkpoints"] == quiet
    import sqlite3

    with contextlib.closing(sqlite3.connect(tmp_path / f"history-{server.app_id}.sqlite3")) as db:
        assert db.execute("SELECT count(*) FROM log").fetchone() == (20,)


def test_dropped_events_are_compacted_away_while_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Events are appended to one log; what the history drops is deleted a window at a time, so the
    file stays near the history's size: after 2,000 events on channels keeping 5 each, 10 rows remain."""
    import sqlite3

    import livewidget.server.history.sqlite as mod

    monkeypatch.setattr(mod, "_CHECKPOINT_EVERY", 0.05)
    with LocalServer(history=SQLiteHistory(tmp_path), history_max_events=5, max_batch_size=100) as server:
        client = sdk(server)
        for start in range(0, 2000, 100):
            client.trigger_batch(
                [{"channel": f"c{i % 2}", "name": "ev", "data": str(i)} for i in range(start, start + 100)]
            )
        hub = server.server.apps.by_id[server.app_id]
        server.call(lambda: server.server._run(hub, hub.tick(time.time())))  # the trimmed rows: Forget
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if server.call(server.server.stats)["history"]["compacted"] >= 1990:
                break
            client.trigger("c0", "tick", "x")  # commits keep the checkpoints (and compactions) coming
            server.call(lambda: server.server._run(hub, hub.tick(time.time())))
            time.sleep(0.05)
        assert server.call(server.server.stats)["history"]["compacted"] >= 1990
        assert [e["data"] for e in history_get(client, "c1", direction="oldest_first")["events"]] == [
            str(i) for i in range(1991, 2000, 2)
        ]
    with contextlib.closing(sqlite3.connect(tmp_path / f"history-{server.app_id}.sqlite3")) as db:
        assert db.execute("SELECT count(*) FROM log").fetchone() == (10,)


def test_a_forgotten_stream_stays_forgotten_after_a_restart(tmp_path: Path):
    """A channel whose history expired starts a new stream; a restart loads only the new one."""
    port = free_port()
    first = LocalServer(port=port, history=SQLiteHistory(tmp_path)).start()
    try:
        client = sdk(first)
        for i in range(3):
            client.trigger("jobs", "ev", f"old{i}")
        old = history_get(client, "jobs")["stream_id"]
        hub = first.server.apps.by_id[first.app_id]
        first.call(lambda: first.server._run(hub, hub.tick(time.time() + 10**7)))  # everything expires
        client.trigger("jobs", "ev", "new0")
        new = history_get(client, "jobs")
        assert new["stream_id"] != old and [e["serial"] for e in new["events"]] == [1]
    finally:
        first.stop()
    second = LocalServer(port=port, apps=first.apps, history=SQLiteHistory(tmp_path)).start()
    try:
        after = history_get(sdk(second), "jobs")
        assert after["stream_id"] == new["stream_id"]
        assert [(e["serial"], e["data"]) for e in after["events"]] == [(1, "new0")]
    finally:
        second.stop()


def test_a_history_file_of_the_previous_format_is_migrated(tmp_path: Path):
    """Files written before the append-only log (one row per event keyed by channel and serial) keep
    their streams, positions and events."""
    import sqlite3

    probe = LocalServer(history=MemoryHistory())  # only for its generated app credentials
    path = tmp_path / f"history-{probe.app_id}.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(
            """
            CREATE TABLE streams (channel TEXT PRIMARY KEY, stream_id TEXT NOT NULL, last INTEGER NOT NULL)
                WITHOUT ROWID;
            CREATE TABLE events (channel TEXT NOT NULL, serial INTEGER NOT NULL, time REAL NOT NULL,
                event TEXT NOT NULL, data TEXT NOT NULL, user_id TEXT, PRIMARY KEY (channel, serial))
                WITHOUT ROWID;
            """
        )
        now = time.time()
        db.executemany("INSERT INTO streams VALUES (?, ?, ?)", [("jobs", "s1", 7), ("gone", "s2", 4)])
        db.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)",
            [("jobs", n, now, "ev", f'"{n}"', None) for n in (5, 6, 7)],
        )
        db.commit()
    with LocalServer(apps=probe.apps, history=SQLiteHistory(tmp_path)) as server:
        client = sdk(server)
        jobs = history_get(client, "jobs", direction="oldest_first")
        assert jobs["stream_id"] == "s1" and [e["serial"] for e in jobs["events"]] == [5, 6, 7]
        client.trigger("jobs", "ev", "8")
        assert history_get(client, "jobs", limit=1)["events"][0]["serial"] == 8
        gone = history_get(client, "gone")
        assert gone["events"] == [] and gone["serial"] == 4
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
        tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"streams", "log", "sqlite_sequence"}


def test_a_history_file_from_a_newer_livewidget_is_refused_by_name(tmp_path: Path):
    import sqlite3

    probe = LocalServer(history=MemoryHistory())
    path = tmp_path / f"history-{probe.app_id}.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 99")
        db.commit()
    with pytest.raises(Exception, match=r"newer livewidget .* upgrade livewidget"):
        LocalServer(apps=probe.apps, history=SQLiteHistory(tmp_path)).start()
    # the lock was let go: once the file is moved away, a server starts on this folder
    path.rename(tmp_path / "kept.sqlite3")
    with LocalServer(apps=probe.apps, history=SQLiteHistory(tmp_path)) as server:
        assert history_get(sdk(server), "jobs")["events"] == []


def test_a_failed_write_is_answered_507_logged_once_and_loses_nothing_else(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """The disk fills up (SQLite's ``max_page_count`` stands in for it: the same SQLITE_FULL). Each
    publish meanwhile is still delivered, answered 507 naming the problem and counted, and the failure is
    logged once; its transaction is rolled back (no transaction left open, the dead-row count as the file
    has it). With room again, writes go on, and a restart loads every committed event."""
    port = free_port()
    history = SQLiteHistory(tmp_path)
    first = LocalServer(port=port, history=history, history_max_events=2).start()
    try:
        client = sdk(first)
        for i in range(3):
            client.trigger("jobs", "ev", str(i))
            client.trigger("kept", "ev", str(i))
        before = history_get(client, "jobs")
        db = history._apps[first.app_id].db

        def full() -> None:
            db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")

        first.call(full)
        dead = first.call(first.server.stats)["history"]["dead_rows"]
        with caplog.at_level("INFO", logger="livewidget.server.history"):
            for _ in range(3):
                with pytest.raises(pusher.errors.PusherBadStatus, match=r"507.*not stored in history.*full"):
                    client.trigger("jobs", "big", "x" * 9_000)
            # a trim and a store committed together (one turn of the loop), the store failing: the
            # trim is rolled back with it, and its rows count as live again
            hub = first.server.apps.by_id[first.app_id]

            def trim_then_fail() -> None:
                history.forget(Forget(first.app_id, {"jobs": 2}))
                entry = Entry(1, time.time(), "big", "x" * 9_000, None)
                history.store(hub, Store(first.app_id, [("other", "s-other", entry)]))

            first.call(trim_then_fail)
            stats = first.call(first.server.stats)["history"]
            assert stats["write_failures"] == 4 and stats["dead_rows"] == dead, stats
            first.call(lambda: db.execute("PRAGMA max_page_count = 1073741823"))
            client.trigger("jobs", "ev", "after")
            # what the writer knows of the file's streams was reloaded after each rollback: trimming
            # "kept" (untouched since) now counts its three rows as dead, for compaction
            first.call(lambda: history.forget(Forget(first.app_id, {"kept": 3})))
            assert first.call(first.server.stats)["history"]["dead_rows"] == dead + 3
        failed = [r for r in caplog.records if "writing history failed" in r.getMessage()]
        assert len(failed) == 1 and failed[0].exc_info, [r.getMessage() for r in caplog.records]
        assert any("succeed again after 4 failed" in r.getMessage() for r in caplog.records)
        assert first.call(first.server.stats)["history"]["write_failures"] == 4
    finally:
        first.stop()
    second = LocalServer(port=port, apps=first.apps, history=SQLiteHistory(tmp_path)).start()
    try:
        after = history_get(sdk(second), "jobs", direction="oldest_first")
        assert after["stream_id"] == before["stream_id"]
        # the newest two stored (history_max_events=2): the failed three were delivered live, so their
        # serials are taken, and the file has a gap where they would be, not a made-up event
        assert [(e["serial"], e["data"]) for e in after["events"]] == [(3, "2"), (7, "after")]
    finally:
        second.stop()

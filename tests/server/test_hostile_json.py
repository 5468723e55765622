"""Deeply nested JSON and shutdown against real sockets (issue 14 items 7 and 10)."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp
import pytest

from livewidget.protocol.signatures import body_md5, sign_rest_query
from livewidget.server import LocalServer

from .test_transport import open_ws

DEEP = "[" * 1000 + "]" * 1000  # about 2 KB


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.asyncio
async def test_deeply_nested_frame_gets_pusher_error_connection_stays_no_traceback(caplog):
    """Was: close 1011 and one traceback logged per frame."""
    caplog.set_level(logging.DEBUG, logger="livewidget")
    with LocalServer() as server:
        async with aiohttp.ClientSession() as session:
            ws, _ = await open_ws(session, server)
            for _ in range(20):  # the log must not grow per frame either
                await ws.send_str(DEEP)
                err = await ws.receive_json(timeout=5)
                assert err["event"] == "pusher:error"
                assert "nested 1000 levels deep; the limit is 128" in err["data"]["message"]
            await ws.send_json({"event": "pusher:ping", "data": {}})
            assert (await ws.receive_json(timeout=5))["event"] == "pusher:pong"
            assert not ws.closed
    assert tracebacks(caplog) == []


@pytest.mark.asyncio
async def test_deeply_nested_signed_rest_body_is_400_with_json_error(caplog):
    """Was: 500 and a traceback."""
    caplog.set_level(logging.DEBUG, logger="livewidget")
    with LocalServer() as server:
        body = ('{"name":"e","channel":"c","data":"x","x":' + DEEP + "}").encode()
        path = f"/apps/{server.app_id}/events"
        params = {"auth_key": server.key, "auth_timestamp": str(int(time.time())), "auth_version": "1.0"}
        params["body_md5"] = body_md5(body)
        query = sign_rest_query("POST", path, params, server.secret)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{server.url}{path}", params=query, data=body) as resp:
                assert resp.status == 400
                error = (await resp.json())["error"]
            assert "not valid JSON" in error and "nested 1001 levels deep" in error
            async with session.get(f"{server.url}/ready") as resp:  # still serving
                assert resp.status == 200
    assert tracebacks(caplog) == []


@pytest.mark.asyncio
async def test_stop_sends_pusher_error_4200_then_closes_4200():
    """As Soketi, Reverb and Sockudo do; pysher (websocket-client < 1.9) reconnects only on the message."""
    server = LocalServer().start()
    try:
        async with aiohttp.ClientSession() as session:
            ws, _ = await open_ws(session, server)
            stopper = asyncio.get_running_loop().run_in_executor(None, server.stop)
            msg = await ws.receive(timeout=5)
            assert msg.type is aiohttp.WSMsgType.TEXT
            assert json.loads(msg.data) == {
                "event": "pusher:error",
                "data": {"code": 4200, "message": "Server is shutting down; reconnect"},
            }
            msg = await ws.receive(timeout=5)
            assert msg.type is aiohttp.WSMsgType.CLOSE
            assert msg.data == 4200
            await stopper
    finally:
        server.stop()

"""No secret and no signed query string reaches a log, a warning or an error message (issue 14)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from livewidget._config import resolve
from livewidget._publish import Publisher, PublishError
from livewidget.server import LocalServer

from .test_transport import open_ws


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once closed


@pytest.mark.asyncio
async def test_webhook_logs_name_the_url_without_its_credentials(caplog):
    """Was: the configured URL as is, with user:password and ?token= in every retry line."""
    caplog.set_level(logging.INFO, logger="livewidget")
    url = f"http://hookuser:hookpass@127.0.0.1:{closed_port()}/hook?token=tok3n"
    with LocalServer(webhook_urls=(url,)) as server:
        async with aiohttp.ClientSession() as session:
            ws, _ = await open_ws(session, server)
            await ws.send_json({"event": "pusher:subscribe", "data": {"channel": "occupy"}})
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if any("retrying" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.05)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "webhook to http://127.0.0.1:" in text and "/hook?… failed" in text
    assert "hookpass" not in text and "hookuser" not in text and "tok3n" not in text


def test_publish_errors_and_warnings_carry_no_signed_query(recwarn):
    """Was: requests' ConnectionError quoted /apps/1/events?auth_key=..&auth_signature=.. in the message."""
    settings = resolve(url=f"http://key1:topsecret@127.0.0.1:{closed_port()}/apps/1")
    with Publisher(settings) as pub, pytest.raises(PublishError) as info:
        pub.publish("c", "e", {"n": 1}, wait=True)
    message = str(info.value)
    assert "/apps/1/events" in message  # still says what failed
    assert "auth_signature" not in message and "auth_key" not in message and "topsecret" not in message
    assert not [w for w in recwarn if "auth_signature" in str(w.message)]


def test_cli_server_list_shows_no_part_of_the_secret(tmp_path: Path):
    runtime = tmp_path / "rt"
    env = {**os.environ, "LIVEWIDGET_RUNTIME_DIR": str(runtime)}
    run = [sys.executable, "-m", "livewidget", "server"]
    try:
        subprocess.run([*run, "start"], env=env, capture_output=True, text=True, timeout=60, check=True)
        secret = json.loads((runtime / "server.json").read_text())["secret"]
        listed = subprocess.run([*run, "list"], env=env, capture_output=True, text=True, timeout=60).stdout
        assert f"secret in {runtime / 'server.json'}" in listed
        assert "secret=" not in listed and "…" not in listed  # was: secret=abcd…
        assert secret not in listed
    finally:
        subprocess.run([*run, "stop"], env=env, capture_output=True, timeout=60)

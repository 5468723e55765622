"""Conformance with the real pusher-js client (Node build), driven from pytest.

Each scenario is a script in ``js/conformance/`` that connects with pusher-js to the target, prints
``@ready <name> <json>`` lines where this side must act (restart the server, trigger an event) and,
last, one JSON object of observations; it has its own deadline (``LW_TIMEOUT_MS``) so it never hangs.
Node and ``js/node_modules`` are installed by ``scripts/setup.sh`` (CI runs it): when they are missing
these tests fail rather than skip.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pusher
import pytest

from livewidget.server import LocalServer

from .conftest import Target

JS_DIR = Path(__file__).resolve().parents[2] / "js"
SCENARIOS = JS_DIR / "conformance"
DEADLINE = 20.0  # seconds: each scenario's own deadline; this side waits a little longer

pytestmark = [pytest.mark.node, pytest.mark.timeout(90)]


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "Node.js is not installed (needed for the pusher-js conformance tests): run scripts/setup.sh"
        )
    if not (JS_DIR / "node_modules" / "pusher-js" / "package.json").is_file():
        pytest.fail(
            f"pusher-js is not installed in {JS_DIR}/node_modules: run `npm ci` in js/ (scripts/setup.sh)"
        )
    return node


class Scenario:
    """One running scenario script: read its ``@ready`` lines, then its observations."""

    def __init__(self, script: str, host: str, port: int, key: str, secret: str, deadline: float) -> None:
        self.script = script
        self.run = uuid.uuid4().hex[:10]
        self.deadline = deadline
        env = {
            **os.environ,
            "LW_HOST": host,
            "LW_PORT": str(port),
            "LW_KEY": key,
            "LW_SECRET": secret,
            "LW_RUN": self.run,
            "LW_TIMEOUT_MS": str(int(deadline * 1000)),
        }
        self.proc = subprocess.Popen(
            [_node(), str(SCENARIOS / script)],
            cwd=JS_DIR,
            env=env,
            stdin=subprocess.PIPE,  # closing it makes the script stop (it watches for EOF)
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def _next(self, until: float, waiting_for: str) -> str:
        try:
            line = self.lines.get(timeout=max(0.0, until - time.monotonic()))
        except queue.Empty:
            self.fail(f"no {waiting_for} from {self.script} in time")
        if line is None:
            self.proc.wait(5)
            self.fail(f"{self.script} exited (status {self.proc.returncode}) before {waiting_for}")
        self.seen.append(line)
        return line

    def fail(self, why: str) -> Any:
        self.close()
        out = "\n".join(self.seen)
        err = "".join(self.stderr)[-4000:]
        pytest.fail(f"{why}\n--- stdout ---\n{out}\n--- stderr ---\n{err}", pytrace=False)

    def wait_ready(self, name: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait for ``@ready <name>``; returns its data."""
        until = time.monotonic() + (timeout or self.deadline + 5)
        while True:
            line = self._next(until, f"'@ready {name}'")
            if line.startswith("@ready "):
                _, got, data = line.split(" ", 2)
                if got == name:
                    result: dict[str, Any] = json.loads(data)
                    return result
            elif line.startswith("{"):
                self.fail(f"{self.script} finished before '@ready {name}': {line}")

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """The observations; fails if the script timed out or crashed."""
        until = time.monotonic() + (timeout or self.deadline + 5)
        while True:
            line = self._next(until, "observations")
            if line.startswith("{"):
                break
        obs: dict[str, Any] = json.loads(line)
        self.proc.wait(5)
        if obs.get("timed_out") or obs.get("crashed") or self.proc.returncode != 0:
            self.fail(f"{self.script} did not complete (status {self.proc.returncode})")
        return obs

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def scenario(
    script: str, host: str, port: int, key: str, secret: str, deadline: float = DEADLINE
) -> Iterator[Scenario]:
    run = Scenario(script, host, port, key, secret, deadline)
    try:
        yield run
    finally:
        run.close()


def on_target(script: str, target: Target, deadline: float = DEADLINE) -> Any:
    """``scenario`` against the session's target (its WebSocket address, when that differs)."""
    host, port = target.ws_address()
    return scenario(script, host, port, target.key, target.secret, deadline)


def run_to_end(script: str, target: Target) -> dict[str, Any]:
    with on_target(script, target) as run:
        return run.result()


# ---------------------------------------------------------------------------------------------- (a)


def test_connect(target: Target) -> None:
    obs = run_to_end("connect.mjs", target)
    assert obs["errors"] == []
    assert obs["state"] == "connected"
    assert obs["socket_id_ok"], obs["socket_id"]
    assert re.fullmatch(r"\d+\.\d+", obs["socket_id"])
    assert obs["states"] == ["connecting", "connected", "disconnected"]
    # pusher-js uses min(its default 120 s, the server's activity_timeout)
    assert 0 < obs["activity_timeout_ms"] <= 120_000
    assert obs["public_subscribed"] is True
    assert obs["final_state"] == "disconnected"


@pytest.mark.hosted_only("soketi", why="Soketi sends subscription_succeeded without data")
def test_public_subscription_succeeded_has_data(target: Target) -> None:
    obs = run_to_end("connect.mjs", target)
    assert obs["public_succeeded_data"] == {}


# ---------------------------------------------------------------------------------------------- (b)


def test_presence_members(target: Target) -> None:
    obs = run_to_end("presence.mjs", target)
    assert obs["errors"] == []
    alice_info = {"name": "Alice", "tags": ["x", 1]}
    bob_info = {"name": "Bob", "n": 2}
    assert obs["alice_alone"] == {
        "count": 1,
        "me": {"id": "alice", "info": alice_info},
        "members": {"alice": alice_info},
    }
    both = {"alice": alice_info, "bob": bob_info}
    assert obs["bob_view"] == {"count": 2, "me": {"id": "bob", "info": bob_info}, "members": both}
    assert obs["bob_sees_alice_info"] == alice_info
    assert obs["alice_with_bob"]["count"] == 2
    assert obs["alice_with_bob"]["members"] == both
    # A second connection of bob: no member_added; closing one of two: no member_removed.
    assert obs["bob2_view"]["count"] == 2
    assert obs["alice_events_after_bob2_joined"] == 1
    assert obs["alice_events_after_bob_left"] == 1
    assert obs["alice_count_after_bob_left"] == 2
    # bob's last connection leaves: member_removed.
    assert obs["alice_events_final"] == [["added", "bob", bob_info], ["removed", "bob", bob_info]]
    assert obs["alice_after_bob2_left"] == {
        "count": 1,
        "me": {"id": "alice", "info": alice_info},
        "members": {"alice": alice_info},
    }


# ---------------------------------------------------------------------------------------------- (c)


def test_client_events(target: Target) -> None:
    obs = run_to_end("client_events.mjs", target)
    private, presence, public = obs["private"], obs["presence"], obs["public"]
    assert private["trigger_returned"] is True
    # delivered to the other subscriber once, never echoed; no user_id outside presence
    assert private["b_got"] == [{"data": {"text": "hi", "n": 1}, "metadata": {}}]
    assert private["a_got"] == [{"data": "plain text", "metadata": {}}]
    assert presence["trigger_returned"] is True
    assert presence["b_got"] == [{"data": {"typing": True}, "metadata": {"user_id": "ann"}}]
    assert presence["a_got"] == []
    assert [e for e in obs["errors"] if e not in public["sender_errors"]] == []


@pytest.mark.hosted_only("soketi", why="Soketi relays client events on public channels, without an error")
def test_client_event_on_public_channel_is_refused(target: Target) -> None:
    obs = run_to_end("client_events.mjs", target)
    assert obs["public"]["b_got"] == []
    errors = obs["public"]["sender_errors"]
    assert len(errors) == 1, errors
    error = errors[0]["error"]
    assert error["type"] == "PusherError"
    assert "private and presence" in error["data"]["message"]


# ---------------------------------------------------------------------------------------------- (d)


def test_signin_and_send_to_user(target: Target) -> None:
    with on_target("signin.mjs", target) as run:
        user_id = run.wait_ready("signed_in")["user_id"]
        target.sdk().send_to_user(user_id, "greet", {"hello": "world", "n": 1})
        obs = run.result()
    assert obs["errors"] == []
    assert obs["signin_errors"] == []
    assert obs["user_data"] == {"id": user_id, "user_info": {"name": "Carol"}}
    assert obs["greet"] == {"hello": "world", "n": 1}


# ---------------------------------------------------------------------------------------------- (e)


@pytest.mark.embedded_only
@pytest.mark.parametrize(
    "downtime",
    [
        # pusher-js retries at once on 4200 (usually 0.3 s in all). When that first attempt comes before
        # the new server listens it is refused, and pusher-js makes the next attempt only when its
        # 15 s strategy timeout ends (sequential_strategy.ts), hence the second case and the deadline.
        pytest.param(0.0, id="restart-at-once"),
        pytest.param(1.0, id="down-1s", marks=pytest.mark.slow),
    ],
)
def test_reconnects_and_resubscribes_after_server_restart(downtime: float) -> None:
    server = LocalServer().start()
    try:
        with scenario("reconnect.mjs", server.host, server.port, server.key, server.secret, 45.0) as run:
            first = run.wait_ready("subscribed")
            server.stop()  # clients are closed with 4200 (reconnect now)
            time.sleep(downtime)
            server = server.with_settings().start()
            again = run.wait_ready("resubscribed")
            sdk = pusher.Pusher(
                app_id=server.app_id,
                key=server.key,
                secret=server.secret,
                host=server.host,
                port=server.port,
                ssl=False,
            )
            sdk.trigger(again["channel"], "after-restart", {"restarted": True})
            sdk.send_to_user(again["user_id"], "after-restart-user", {"hello": "again"})
            obs = run.result()
    finally:
        server.stop()
    assert first["socket_id"] != again["socket_id"]
    assert obs["channel_subscribed"] is True  # re-authorized with the new socket id
    assert obs["channel_event"] == {"restarted": True}
    assert obs["user_event"] == {"hello": "again"}  # signed in again by itself
    assert obs["final_state"] == "connected"
    states = [state for state, _ in obs["states"]]
    assert states[:2] == ["connecting", "connected"]
    assert states[-1] == "connected"
    assert states.count("connected") == 2, states  # lost once, came back once
    # the 4200 close is reported as an error event, and nothing else
    assert all("4200" in json.dumps(e) for e in obs["errors"]), obs["errors"]
    # pusher:error {4200} came before the close, as from Soketi, Reverb and Sockudo (issue 14 item 10)
    assert obs["pusher_errors"] == [{"code": 4200, "message": "Server is shutting down; reconnect"}]

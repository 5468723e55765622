"""A real redis-server and ``livewidget serve --redis`` processes on loopback, for the scale-out tests.

Used by tests/server/test_redis.py and by the conformance suite's cluster mode
(``LIVEWIDGET_TARGET_CLUSTER=redis``). Everything listens on 127.0.0.1; every process is started here and
stopped here, by its own pid; every wait is bounded.

Ports are never probed first and bound later (another process may take a probed port in between, and two
probes may return the same port): a ``livewidget serve`` node binds port 0 and reports the port it got in
its banner; redis-server cannot bind port 0 and report it, so it is started on a probed port and started
again on another one when that bind fails (it exits saying "Address already in use").
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
APP_ID, KEY, SECRET = "4242", "lwclusterkey", "lwclustersecret"


def free_port() -> int:
    """A port nothing listens on right now: only for a server that retries when the bind fails."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((HOST, port)) == 0:
                return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited ({proc.returncode}) before listening on {port}")
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout} s")


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 8.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


class RedisServer:
    """``redis-server --port P --save '' --appendonly no``; restartable on the same port."""

    START_ATTEMPTS = 5  # another port after each "Address already in use"

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError(
                "redis-server is not installed; scripts/setup.sh installs it (apt-get install redis-server)"
            )
        self.exe = exe
        self.workdir = workdir
        self.port = 0  # chosen by the first start()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("RedisServer.url is known once start() has bound a port")
        return f"redis://{HOST}:{self.port}"

    def start(self) -> RedisServer:
        """Start on a free port (the first time) or on the same port (a restart), retrying a lost bind."""
        fixed = bool(self.port)
        last = ""
        for attempt in range(self.START_ATTEMPTS):
            port = self.port if fixed else free_port()
            log_path = self.workdir / f"redis-{port}.log"
            cmd = [self.exe, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
            log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
            start = log.tell()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
            log.close()
            # Its own "ready" line, not an open port: someone else may be the one listening there.
            deadline = time.monotonic() + 10
            while proc.poll() is None and time.monotonic() < deadline:
                if b"Ready to accept connections" in log_path.read_bytes()[start:]:
                    break
                time.sleep(0.05)
            try:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited ({proc.returncode})")
                wait_port(port, 10, proc)
            except RuntimeError:
                _stop(proc)
                last = log_path.read_bytes()[start:].decode(errors="replace")
                if "Address already in use" not in last:
                    raise RuntimeError(f"redis-server did not start on {port}:\n{last[-2000:]}") from None
                # A restart waits for whoever holds the port briefly; a first start takes another port.
                if fixed:
                    time.sleep(0.2 * (attempt + 1))
                continue
            self.proc, self.port = proc, port
            return self
        tries = self.START_ATTEMPTS
        raise RuntimeError(f"redis-server could not bind a port in {tries} attempts:\n{last[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            _stop(self.proc, sig)
            self.proc = None


_LISTENING = re.compile(r"livewidget server listening on http://[^\s:]+:(\d+)")


class Node:
    """One ``livewidget serve --redis`` process: on port 0 (the port it reports) unless given one."""

    _count = 0

    def __init__(self, redis_url: str, workdir: Path, port: int | None = None, node_ttl: float = 3.0) -> None:
        Node._count += 1
        self.log_path = workdir / f"node-{Node._count}.log"
        self.port = port or 0  # 0 until the first start() reads the bound port from the banner
        self.redis_url = redis_url
        self.workdir = workdir
        self.node_ttl = node_ttl
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra: list[str] = []

    def start(self, *extra: str) -> Node:
        creds = ["--app-id", APP_ID, "--key", KEY, "--secret", SECRET]
        redis = ["--redis", self.redis_url, "--redis-node-ttl", str(self.node_ttl)]
        return self._start([*creds, *redis, *extra])

    def start_with_config(self, path: Path) -> Node:
        """Credentials, Redis URL and node TTL from a config file."""
        return self._start(["--config", str(path)])

    def _start(self, args: list[str]) -> Node:
        self.extra = args
        cmd = [sys.executable, "-m", "livewidget", "serve", "--port", str(self.port), "-v", *args]
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEWIDGET_")}
        env["LIVEWIDGET_DATA_DIR"] = os.environ["LIVEWIDGET_DATA_DIR"]  # never the user's own
        start = len(self.log_text())
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        log.close()
        # The port may already be open (another process, --reuse-port): wait for this one's banner.
        deadline = time.monotonic() + 20
        while "Press Ctrl-C to stop." not in self.log_text()[start:]:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"livewidget serve exited ({self.proc.returncode}):\n{self.log_text()[start:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"livewidget serve did not start within 20 s:\n{self.log_text()[start:]}")
            time.sleep(0.05)
        if not self.port:  # bound port 0: keep the port it got, so a restart comes back there
            found = _LISTENING.search(self.log_text()[start:])
            if found is None:
                raise RuntimeError(f"livewidget serve did not report its port:\n{self.log_text()[start:]}")
            self.port = int(found.group(1))
        wait_port(self.port, 5, self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            _stop(self.proc, sig)
            self.proc = None

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{HOST}:{self.port}/stats", timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Cluster:
    """Redis plus ``n`` nodes; a context manager that stops everything it started."""

    def __init__(self, workdir: Path, n: int = 2, node_ttl: float = 3.0) -> None:
        self.workdir = workdir
        self.n, self.node_ttl = n, node_ttl
        self.redis = RedisServer(workdir)
        self.nodes: list[Node] = []  # made once Redis has its port

    def __enter__(self) -> Cluster:
        try:
            self.redis.start()
            self.nodes = [Node(self.redis.url, self.workdir, node_ttl=self.node_ttl) for _ in range(self.n)]
            for node in self.nodes:
                node.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for node in self.nodes:
            node.stop()
        self.redis.stop()

    def env(self) -> dict[str, str]:
        """The conformance suite's environment for this cluster (clients spread over the nodes)."""
        first = self.nodes[0]
        return {
            "LIVEWIDGET_TARGET": f"{HOST}:{first.port}",
            "LIVEWIDGET_TARGET_CLUSTER": ",".join(f"{HOST}:{n.port}" for n in self.nodes),
            "LIVEWIDGET_TARGET_APP_ID": APP_ID,
            "LIVEWIDGET_TARGET_KEY": KEY,
            "LIVEWIDGET_TARGET_SECRET": SECRET,
            "LIVEWIDGET_TARGET_KIND": "embedded-cluster",
        }

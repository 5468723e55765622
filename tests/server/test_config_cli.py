"""``livewidget serve`` as a real subprocess: options, LIVEWIDGET_* variables, config files and signals.

Every server binds 127.0.0.1 on a free port; the tests read the port from the "listening on" line.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from livewidget.protocol.config import AppConfig

from .test_webhooks import Client, Receiver, assert_signed, sdk_for

pytestmark = pytest.mark.timeout(60)

LIVEWIDGET = Path(sys.executable).with_name("livewidget")  # the console script of this venv
LISTENING = re.compile(r"listening on http://(?P<host>[0-9.]+):(?P<port>\d+)")
APP_LINE = re.compile(r"app_id=(?P<app_id>\S+) key=(?P<key>\S+) client_events=(?P<ce>\w+)")
URL_LINE = re.compile(r'LIVEWIDGET_URL=(?P<url>"[^"]*")')
START_TIMEOUT = 20.0  # seconds for the process to import and bind


_runtime: list[Path] = []  # this test's runtime folder (where a generated secret is written)


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path: Path) -> Iterator[Path]:
    _runtime[:] = [tmp_path / "runtime"]
    yield _runtime[0]
    _runtime.clear()


def clean_env(**variables: str) -> dict[str, str]:
    """This process's environment without any LIVEWIDGET_* variable (but a runtime folder of the
    test's own), plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEWIDGET_")}
    # channel history goes to this run's data folder (tests/conftest.py), never the user's own
    env["LIVEWIDGET_DATA_DIR"] = os.environ["LIVEWIDGET_DATA_DIR"]
    if _runtime:
        env["LIVEWIDGET_RUNTIME_DIR"] = str(_runtime[0])
    env.update(variables)
    return env


class Serve:
    """``livewidget serve ARGS`` (or ``python -m livewidget serve ARGS``), its output read by threads."""

    def __init__(self, *args: str, env: dict[str, str], cwd: Path, module: bool = False) -> None:
        command = [sys.executable, "-m", "livewidget"] if module else [str(LIVEWIDGET)]
        self.proc = subprocess.Popen(
            [*command, "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.host = ""
        self.port = 0

    def _read(self, stream: Any, into: list[str], forward: bool) -> None:
        for line in stream:
            into.append(line)
            if forward:
                self._lines.put(line)
        if forward:
            self._lines.put(None)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = START_TIMEOUT) -> re.Match[str]:
        """The first later stdout line matching ``pattern``."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {pattern.pattern!r} within {timeout} s: {self.output}") from None
            if line is None:
                raise AssertionError(f"exited with {self.proc.wait()}: {self.output}{self.errors}")
            match = pattern.search(line)
            if match is not None:
                return match

    def listening(self) -> int:
        """Wait for "listening on http://HOST:PORT" and the credentials after it; return the port."""
        match = self.wait_for(LISTENING)
        self.host, self.port = match["host"], int(match["port"])
        self.wait_for(re.compile(r"Press Ctrl-C to stop"))
        return self.port

    def apps(self) -> list[dict[str, str]]:
        """The apps printed at start-up."""
        return [m.groupdict() for line in self.out if (m := APP_LINE.search(line)) is not None]

    def urls(self, env: dict[str, str] | None = None) -> list[str]:
        """The LIVEWIDGET_URL lines printed at start-up, expanded by a shell as a user would paste them."""
        found = [m["url"] for line in self.out if (m := URL_LINE.search(line)) is not None]
        return [
            subprocess.run(
                ["sh", "-c", f"printf %s {url}"], env=env, capture_output=True, text=True, check=True
            ).stdout
            for url in found
        ]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig``; return the exit code once it and its output are done."""
        self.proc.send_signal(sig)
        return self.finish(timeout)

    def finish(self, timeout: float = 15.0) -> int:
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def close(self) -> None:
        """Kill the process if it still runs, then release its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    @property
    def output(self) -> str:
        return "".join(self.out)

    @property
    def errors(self) -> str:
        return "".join(self.err)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Start ``livewidget serve``; whatever is still running at the end is killed."""
    started: list[Serve] = []

    def start(*args: str, env: dict[str, str] | None = None, module: bool = False) -> Serve:
        process = Serve(*args, env=clean_env() if env is None else env, cwd=tmp_path, module=module)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def run_serve(*args: str, env: dict[str, str] | None = None, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``livewidget serve ARGS`` that is expected to exit by itself."""
    return subprocess.run(
        [str(LIVEWIDGET), "serve", *args],
        capture_output=True,
        text=True,
        env=clean_env() if env is None else env,
        cwd=cwd,
        timeout=START_TIMEOUT,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets in LISTEN state on ``port``, from Linux's /proc/net/tcp{,6}."""
    found: set[str] = set()
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].rpartition(":")
            if fields[3] != "0A" or int(hex_port, 16) != port:  # 0A = TCP_LISTEN
                continue
            raw = bytes.fromhex(address)
            # the kernel prints each 32-bit word in host (little-endian) order
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, words))
    return found


async def connect(session: aiohttp.ClientSession, port: int, app: AppConfig) -> Client:
    """A raw protocol client of ``app`` on the server at 127.0.0.1:``port``, connected."""
    url = f"ws://127.0.0.1:{port}/app/{app.key}?protocol=7&client=py&version=0"
    ws = await session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
    client = Client(ws, "", sdk_for("127.0.0.1", port, app))
    hello = await client.next("pusher:connection_established")
    client.socket_id = json.loads(hello["data"])["socket_id"]
    return client


def app_from(url: str) -> AppConfig:
    """The app of a ``LIVEWIDGET_URL`` (http://KEY:SECRET@HOST:PORT/apps/APP_ID)."""
    parts = urlsplit(url)
    assert parts.username and parts.password, url
    return AppConfig(parts.path.rsplit("/", 1)[1], parts.username, parts.password)


# ---------------------------------------------------------------------------------------------- running


def test_serve_prints_where_it_listens_and_credentials_that_work(serve: Any) -> None:
    """`livewidget serve --port 0` prints its URL and where the secret is; the SDK can publish with them."""
    server = serve("--port", "0")
    port = server.listening()
    assert server.host == "127.0.0.1"
    [printed] = server.apps()
    assert printed["app_id"].isdigit()
    assert printed["ce"] == "on"  # client events are on by default
    [url] = server.urls()  # the secret is read from its file by the pasted line
    app = app_from(url)
    assert url == f"http://{printed['key']}:{app.secret}@127.0.0.1:{port}/apps/{printed['app_id']}"
    assert app.secret not in server.output

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as resp:
        assert json.load(resp) == {"ok": True}
    assert sdk_for("127.0.0.1", port, app).trigger("news", "hello", {"n": 1}) == {}

    assert server.stop(signal.SIGINT) == 0
    assert "livewidget server stopped" in server.output
    assert "Traceback" not in server.errors


def test_default_host_is_loopback_only(serve: Any) -> None:
    """Without --host the listening socket is bound to 127.0.0.1, not to every interface."""
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux /proc/net/tcp to list listening sockets")
    server = serve("--port", "0")
    port = server.listening()
    assert listening_addresses(port) == {"127.0.0.1"}
    assert "warning: bound to" not in server.output
    assert server.stop() == 0


def test_python_dash_m_livewidget_serve_works(serve: Any) -> None:
    """`python -m livewidget serve` is the same command."""
    server = serve("--port", "0", module=True)
    server.listening()
    assert len(server.apps()) == 1
    assert server.stop() == 0
    assert "livewidget server stopped" in server.output


@pytest.mark.asyncio
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_signal_stops_the_server_cleanly_and_clients_are_told_to_reconnect(
    serve: Any, sig: signal.Signals
) -> None:
    """SIGINT or SIGTERM: connected clients get close code 4200, the process prints "stopped", exits 0."""
    server = serve("--port", "0")
    port = await asyncio.to_thread(server.listening)
    async with aiohttp.ClientSession() as session:
        client = await connect(session, port, app_from(server.urls()[0]))
        await client.subscribe("lobby")
        server.proc.send_signal(sig)
        error = await client.next("pusher:error")  # first, as Soketi, Reverb and Sockudo do
        assert error["data"]["code"] == 4200
        msg = await client.ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == 4200
        await client.ws.close()
    assert await asyncio.to_thread(server.finish) == 0
    assert "livewidget server stopped" in server.output
    assert "Traceback" not in server.errors


# ---------------------------------------------------------------------------------------------- options


@pytest.mark.asyncio
async def test_options_set_credentials_webhook_urls_and_client_events(serve: Any) -> None:
    """--app-id/--key/--secret are used, every --webhook-url gets webhooks, --no-client-events refuses."""
    hooks = [await Receiver().start(), await Receiver().start()]
    app = AppConfig("4242", "opt-key", "opt-secret")
    try:
        server = serve(
            "--port", "0", "--app-id", app.app_id, "--key", app.key, "--secret", app.secret,
            "--webhook-url", hooks[0].url, "--webhook-url", hooks[1].url, "--no-client-events",
        )  # fmt: skip
        port = await asyncio.to_thread(server.listening)
        assert server.apps() == [{"app_id": "4242", "key": "opt-key", "ce": "off"}]
        assert "opt-secret" not in server.output

        async with aiohttp.ClientSession() as session:
            client = await connect(session, port, app)
            await client.subscribe("private-options")
            await client.send("client-hello", {}, "private-options")
            error = await client.next("pusher:error")
            assert "disabled" in error["data"]["message"]
            for hook in hooks:
                [(hit, _)] = await hook.wait_events(name="channel_occupied", channel="private-options")
                assert_signed(hit, app)
            await client.close()
        assert await asyncio.to_thread(server.stop) == 0
    finally:
        for hook in hooks:
            await hook.stop()


@pytest.mark.asyncio
async def test_environment_variables_configure_serve(serve: Any) -> None:
    """LIVEWIDGET_PORT/APP_ID/KEY/SECRET/WEBHOOK_URL/CLIENT_EVENTS=0 do what the options do."""
    hooks = [await Receiver().start(), await Receiver().start()]
    app = AppConfig("5151", "env-key", "env-secret")
    try:
        for attempt in range(3):
            # This test needs a port chosen before serve starts: when another process takes it in
            # between (serve exits, "cannot listen"), probe another rather than fail.
            wanted_port = free_port()
            env = clean_env(
                LIVEWIDGET_PORT=str(wanted_port),
                LIVEWIDGET_APP_ID=app.app_id,
                LIVEWIDGET_KEY=app.key,
                LIVEWIDGET_SECRET=app.secret,
                LIVEWIDGET_WEBHOOK_URL=f"{hooks[0].url}, {hooks[1].url}",  # comma- or space-separated
                LIVEWIDGET_CLIENT_EVENTS="0",
            )
            server = serve(env=env)
            try:
                assert await asyncio.to_thread(server.listening) == wanted_port
                break
            except AssertionError:
                if attempt == 2 or "cannot listen" not in server.errors:
                    raise
        assert server.apps() == [{"app_id": "5151", "key": "env-key", "ce": "off"}]
        assert "env-secret" not in server.output
        assert "secret: from $LIVEWIDGET_SECRET" in server.output
        assert server.urls(env) == [f"http://env-key:env-secret@127.0.0.1:{wanted_port}/apps/5151"]
        async with aiohttp.ClientSession() as session:
            client = await connect(session, wanted_port, app)
            await client.subscribe("from-env")
            for hook in hooks:
                [(hit, _)] = await hook.wait_events(name="channel_occupied", channel="from-env")
                assert_signed(hit, app)
            await client.close()
        assert await asyncio.to_thread(server.stop) == 0
    finally:
        for hook in hooks:
            await hook.stop()


@pytest.mark.asyncio
async def test_explicit_options_beat_environment_variables(serve: Any) -> None:
    """An option given on the command line wins over its LIVEWIDGET_* variable."""
    env_hook, option_hook = await Receiver().start(), await Receiver().start()
    app = AppConfig("2222", "opt-key", "opt-secret")
    with socket.socket() as taken:  # LIVEWIDGET_PORT points at a busy port: using it would fail
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = clean_env(
            LIVEWIDGET_PORT=str(taken.getsockname()[1]),
            LIVEWIDGET_APP_ID="1111",
            LIVEWIDGET_KEY="env-key",
            LIVEWIDGET_SECRET="env-secret",
            LIVEWIDGET_WEBHOOK_URL=env_hook.url,
            LIVEWIDGET_CLIENT_EVENTS="1",
        )
        try:
            server = serve(
                "--port", "0", "--app-id", app.app_id, "--key", app.key, "--secret", app.secret,
                "--webhook-url", option_hook.url, "--no-client-events", env=env,
            )  # fmt: skip
            port = await asyncio.to_thread(server.listening)
            assert port != taken.getsockname()[1]
            assert server.apps() == [{"app_id": "2222", "key": "opt-key", "ce": "off"}]
            assert "secret: as given with --secret" in server.output
            async with aiohttp.ClientSession() as session:
                client = await connect(session, port, app)
                await client.subscribe("precedence")
                [(hit, _)] = await option_hook.wait_events(name="channel_occupied")
                assert_signed(hit, app)
                await client.close()
            await asyncio.sleep(0.5)
            assert env_hook.hits == []
            assert await asyncio.to_thread(server.stop) == 0
        finally:
            await env_hook.stop()
            await option_hook.stop()


# ---------------------------------------------------------------------------------------------- config


def write_config(path: Path, hook_url: str) -> list[AppConfig]:
    """A TOML or JSON config (by suffix) with two apps, both posting webhooks to ``hook_url``."""
    if path.suffix == ".toml":
        path.write_text(
            'host = "127.0.0.1"\nport = 0\n\n'
            f'[[apps]]\nid = "101"\nkey = "first-key"\nsecret = "first-secret"\nwebhooks = ["{hook_url}"]\n\n'
            f'[[apps]]\nid = 202\nkey = "second-key"\nsecret = "second-secret"\nclient_events = false\n'
            f'webhooks = "{hook_url}"\n'
        )
    else:
        apps = [
            {"id": "101", "key": "first-key", "secret": "first-secret", "webhooks": [hook_url]},
            {"id": 202, "key": "second-key", "secret": "second-secret", "client_events": False,
             "webhook_urls": [hook_url]},
        ]  # fmt: skip
        path.write_text(json.dumps({"host": "127.0.0.1", "port": 0, "apps": apps}))
    return [AppConfig("101", "first-key", "first-secret"), AppConfig("202", "second-key", "second-secret")]


@pytest.mark.asyncio
@pytest.mark.parametrize("via", ["option", "env"])
@pytest.mark.parametrize("suffix", [".toml", ".json"])
async def test_config_file_with_two_apps(serve: Any, tmp_path: Path, suffix: str, via: str) -> None:
    """--config FILE (or LIVEWIDGET_CONFIG) in TOML or JSON serves both apps, each with its settings."""
    hook = await Receiver().start()
    path = tmp_path / f"livewidget{suffix}"
    apps = write_config(path, hook.url)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    try:
        if via == "option":  # and a broken LIVEWIDGET_CONFIG, which the option overrides
            server = serve("--config", str(path), env=clean_env(LIVEWIDGET_CONFIG=str(broken)))
        else:
            server = serve(env=clean_env(LIVEWIDGET_CONFIG=str(path)))
        port = await asyncio.to_thread(server.listening)
        assert server.apps() == [
            {"app_id": "101", "key": "first-key", "ce": "on"},
            {"app_id": "202", "key": "second-key", "ce": "off"},
        ]
        assert "first-secret" not in server.output and "second-secret" not in server.output
        assert f"secret: in the config file {path}" in server.output
        async with aiohttp.ClientSession() as session:
            for app in apps:
                client = await connect(session, port, app)
                await client.subscribe(f"room-{app.app_id}")
                result = await asyncio.to_thread(client.sdk.trigger, f"room-{app.app_id}", "ping", {})
                assert result == {}
                assert (await client.next("ping", f"room-{app.app_id}"))["data"] == "{}"
                [(hit, _)] = await hook.wait_events(name="channel_occupied", channel=f"room-{app.app_id}")
                assert_signed(hit, app)
                await client.close()
        assert await asyncio.to_thread(server.stop) == 0
    finally:
        await hook.stop()


APP = '[[apps]]\nid = 1\nkey = "k"\nsecret = "s"\n'


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.toml", None, "cannot read config file"),
        ("broken.toml", "apps = [", "is not valid .toml"),
        ("broken.json", "{apps: []}", "is not valid .json"),
        ("list.json", "[1, 2]", "must hold a table/object at the top"),
        ("extra.json", '{"apps": [], "colour": "red"}', "unknown key(s) colour"),
        ("apps.json", '{"apps": {"id": 1}}', "'apps' must be a list of tables"),
        ("nosecret.toml", '[[apps]]\nid = 1\nkey = "k"\n', "has no 'secret'"),
        ("id.json", '{"apps": [{"id": "abc", "key": "k", "secret": "s"}]}', "app_id must be all digits"),
        ("setting.toml", APP + "colour = 1\n", "unknown app setting(s) colour"),
        ("type.toml", APP + 'activity_timeout = "soon"\n', "activity_timeout must be an integer"),
        ("port.json", '{"port": "abc", "apps": []}', "wrong type or value"),
        ("range.toml", "port = 70000\n" + APP, "port must be 0 to 65535"),
        ("limits.toml", "[limits]\nbogus = 1\n" + APP, "unknown server limit(s) bogus"),
        ("limits2.toml", "[limits]\nrequest_timeout = -1\n" + APP, "request_timeout must be positive"),
    ],
)
def test_a_bad_config_file_exits_2_with_a_clear_message(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    """A config file that cannot be used stops `serve` with exit code 2 and one line saying why."""
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    result = run_serve("--config", str(path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("livewidget: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--port", "0"), {"LIVEWIDGET_CLIENT_EVENTS": "maybe"}, "LIVEWIDGET_CLIENT_EVENTS='maybe'"),
        (("--key", "k"), {"LIVEWIDGET_CONFIG": "CONFIG"}, "either in --config or as options"),
        (("--port", "abc"), {}, "invalid int value"),
        ((), {"LIVEWIDGET_PORT": "abc"}, "invalid int value"),
        (("--port", "0", "--app-id", "abc"), {}, "app_id must be all digits"),
        (("--port", "65536"), {}, "port must be 0 to 65535"),
    ],
)
def test_bad_settings_exit_2_with_a_clear_message(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    """Unusable options or LIVEWIDGET_* values stop `serve` with exit code 2 and say why."""
    config = tmp_path / "good.json"
    config.write_text(json.dumps({"port": 0, "apps": [{"id": 1, "key": "k", "secret": "s"}]}))
    env = {k: v.replace("CONFIG", str(config)) for k, v in env.items()}
    result = run_serve(*args, env=clean_env(**env), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_config_file_limits_table(tmp_path: Path) -> None:
    """A ``[limits]`` table configures the per-connection limits (ServerLimits)."""
    from livewidget.cli import load_config
    from livewidget.server import ServerLimits

    path = tmp_path / "c.toml"
    path.write_text("[limits]\nrequest_timeout = 5\nmax_connections_per_ip = 10\n" + APP)
    limits = load_config(path)["limits"]
    assert limits == ServerLimits(request_timeout=5, max_connections_per_ip=10)

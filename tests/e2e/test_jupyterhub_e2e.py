"""livewidget on a real JupyterHub: two users, each live through the hub's URL, neither reaching the other.

The hub (the ``jupyterhub`` package) runs with configurable-http-proxy (``js/node_modules``, under the
project's Node), ``DummyAuthenticator`` with a password, and ``SimpleLocalProcessSpawner``: every user's
single-user JupyterLab is a local process of the same OS user, with its own HOME under a temp folder
and one ``XDG_RUNTIME_DIR`` common to all (the harder case: only the hub user's name then tells their
livewidget runtime folders apart, ``livewidget._embedded.runtime_dir``);
everything binds 127.0.0.1 on free ports; the hub's database and cookie secret live in the temp folder.
The pages open the hub at ``http://lab.test:PORT`` (Chromium maps the name to 127.0.0.1), not on
loopback, as users reach any hub. No ``LIVEWIDGET_URL``: each user's kernel starts that user's own
embedded Pusher server, registered in their own runtime folder.

1. alice and bob log in through the hub's login form (two browser contexts), each opens a notebook in
   their own JupyterLab (``/user/NAME/lab/...``) and runs a cell that creates a Feed and publishes into
   it while the cell runs: the Feed updates while the cell is busy, its header says ``jupyter``, and the
   page opens no WebSocket to the embedded server's own port (every socket goes through the hub).
2. bob's session (his cookies) asks for alice's livewidget routes through the hub URL
   (``/user/alice/livewidget/...``: info, REST, signing, a WebSocket upgrade): 403 or 404, never 101/200;
   and bob's own extension does not know alice's server: ``/user/bob/livewidget/{alice's id}/...`` is 404,
   while bob's own id answers (so the 404 is about the id, not about a missing login).
3. Teardown stops the hub (which stops the proxy, the single-user servers and their kernels), then kills
   by pid whatever of them, and the embedded servers, is left; the test fails on any survivor.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from livewidget import _routes

from .conftest import (
    ARTIFACTS,
    LAB_SETTINGS,
    PAGE_HOST,
    REPO,
    NotebookPage,
    _alive,
    _children,
    _kill_by_pid,
    free_port,
    new_context,
    wait_started,
    wait_until,
    write_notebook,
)
from .test_feed_e2e import wait_row

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

USERS = ("alice", "bob")
HUB_START_TIMEOUT = 60.0  # s for the hub (and its proxy) to answer
SPAWN_TIMEOUT = 90.0  # s from submitting the login form to the user's JupyterLab page
BUSY_LIMIT = 90  # s the busy cell publishes at most (it stops earlier when the test says so)
FEED = ".jp-NotebookPanel:visible .lw-feed"
PASSWORD = "lw-" + secrets.token_hex(8)  # DummyAuthenticator's one password for every user
CHP = REPO / "js" / "node_modules" / "configurable-http-proxy" / "bin" / "configurable-http-proxy"


def _node() -> str:
    """The project's Node (scripts/setup.sh links Node 20 into .venv/bin when the system's is older)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    node = shutil.which("node", path=path)
    if node is None or not CHP.is_file():
        pytest.fail(
            "the JupyterHub test needs Node.js and configurable-http-proxy in js/node_modules: "
            "run scripts/setup.sh",
            pytrace=False,
        )
    return node


@dataclass
class UserLab:
    """One user's single-user server as :class:`NotebookPage` needs it (``page_url``), and their HOME."""

    name: str
    home: Path
    page_url: str
    xdg_runtime: Path  # common to every user

    @property
    def runtime(self) -> Path:
        """livewidget's runtime folder of this user: on a hub, ``hub-NAME`` in the common one."""
        return self.xdg_runtime / "livewidget" / f"hub-{self.name}"

    def embedded(self) -> dict[str, Any]:
        """The user's embedded server record (``server.json``: pid, port, app id, key, secret)."""
        path = self.runtime / "server.json"
        if not path.is_file():
            found = sorted(str(p) for p in self.xdg_runtime.rglob("server.json"))
            raise AssertionError(f"{self.name}'s embedded server is not recorded in {path}; found: {found}")
        return dict(json.loads(path.read_text()))


@dataclass
class Hub:
    """``jupyterhub -f`` (config written in ``base``) in a subprocess; ``url`` is what browsers open."""

    base: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    users: dict[str, UserLab] = field(default_factory=dict)
    log_path: Path = ARTIFACTS / "jupyterhub.log"
    _log: Any = None

    @property
    def url(self) -> str:
        return f"http://{PAGE_HOST}:{self.port}"

    @property
    def xdg_runtime(self) -> Path:
        return self.base / "xdg-runtime"

    def config(self, node: str) -> str:
        homes = self.base / "home"
        singleuser = [
            "--ServerApp.jpserver_extensions={'livewidget.jupyter': True}",  # a source checkout's way
            "--LabApp.news_url=None",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, for NotebookPage
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        if os.geteuid() == 0:
            singleuser.append("--allow-root")
        settings = {
            "bind_url": f"http://127.0.0.1:{self.port}",
            "hub_port": free_port(),
            "api_url": f"http://127.0.0.1:{free_port()}",
            "proxy_command": [node, str(CHP)],
            "proxy_token": secrets.token_hex(16),
            "password": PASSWORD,
            "homes": str(homes / "{username}"),
            "cmd": [str(Path(sys.executable).parent / "jupyterhub-singleuser")],
            "args": singleuser,
            "db": f"sqlite:///{self.base / 'jupyterhub.sqlite'}",
            "cookie_secret": str(self.base / "jupyterhub_cookie_secret"),
            "proxy_pid": str(self.base / "proxy.pid"),
            "xdg": str(self.xdg_runtime),
        }
        return f"""
s = {settings!r}
c.JupyterHub.bind_url = s["bind_url"]
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = s["hub_port"]
c.JupyterHub.db_url = s["db"]
c.JupyterHub.cookie_secret_file = s["cookie_secret"]
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True
c.ConfigurableHTTPProxy.api_url = s["api_url"]
c.ConfigurableHTTPProxy.command = s["proxy_command"]
c.ConfigurableHTTPProxy.auth_token = s["proxy_token"]
c.ConfigurableHTTPProxy.pid_file = s["proxy_pid"]
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = s["password"]
c.Authenticator.allowed_users = {set(USERS)!r}
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = s["homes"]
c.Spawner.cmd = s["cmd"]
c.Spawner.args = s["args"]
c.Spawner.default_url = "/lab"
c.Spawner.environment = {{"PYTHONUNBUFFERED": "1", "XDG_RUNTIME_DIR": s["xdg"]}}  # one for all users
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
c.Spawner.interrupt_timeout = 5
c.Spawner.term_timeout = 5
"""

    def start(self) -> Hub:
        node = _node()
        self.xdg_runtime.mkdir(mode=0o700)
        for name in USERS:
            home = self.base / "home" / name
            home.mkdir(parents=True)
            # JupyterLab's user settings in this HOME: no news toast over the widgets, no autosave
            for plugin, values in LAB_SETTINGS.items():
                target = home / ".jupyter" / "lab" / "user-settings" / f"{plugin}.jupyterlab-settings"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(values))
            self.users[name] = UserLab(name, home, "", self.xdg_runtime)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PUSHER_", "LIVEWIDGET_", "JUPYTER", "CONFIGPROXY_"))
            and k not in ("ANYWIDGET_HMR", "XDG_RUNTIME_DIR", "IPYTHONDIR")
        }
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["PYTHONUNBUFFERED"] = "1"
        last_error = ""
        for _attempt in range(3):  # a free port may be taken between probe and bind
            self.port = free_port()
            for user in self.users.values():
                user.page_url = f"{self.url}/user/{user.name}"
            cfg = self.base / "jupyterhub_config.py"
            cfg.write_text(self.config(node))
            self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(cfg)],
                cwd=self.base,
                env=env,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            # through the proxy: both are up
            last_error = wait_started(
                self.proc, lambda: self.status("/hub/api/") == 200, HUB_START_TIMEOUT, "/hub/api/"
            )
            if not last_error:
                return self
            self.stop()
        raise RuntimeError(f"JupyterHub did not start: {last_error}; see {self.log_path}")

    def status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return int(exc.code)
        except OSError:
            return 0

    def stop(self) -> list[int]:
        """Stop the hub gracefully (it stops the servers and the proxy), then kill by pid what is left.

        Returns the pids still alive after all that (none, unless something could not be killed).
        """
        proc = self.proc
        if proc is None:
            return []
        self.proc = None
        pids = [proc.pid, *_children(proc.pid)]  # proxy, single-user servers, kernels, embedded servers
        for record in self.base.rglob("server.json"):  # embedded servers: in their own session (setsid)
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                pids.append(int(json.loads(record.read_text())["pid"]))
        with contextlib.suppress(OSError, ValueError):
            pids.append(int((self.base / "proxy.pid").read_text().strip()))
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # JupyterHub: stop every server (cleanup_servers), the proxy
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        _kill_by_pid([p for p in dict.fromkeys(pids) if p != proc.pid and _alive(p)], timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        return [p for p in pids if _alive(p)]


@pytest.fixture(scope="module")
def hub(
    chromium: Any, artifacts: Any, frontend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hub]:
    server = Hub(tmp_path_factory.mktemp("jupyterhub"))
    survivors: list[int] = []
    try:
        yield server.start()
    finally:
        survivors = server.stop()
    assert not survivors, f"processes left after the hub's teardown: {survivors}"


# ---------------------------------------------------------------------------------------------- helpers


def _login(page: Any, hub: Hub, name: str) -> None:
    """Submit the hub's login form (returns at once: the hub then spawns the user's server)."""
    page.goto(f"{hub.url}/hub/login", wait_until="domcontentloaded")
    page.fill('input[name="username"]', name)
    page.fill('input[name="password"]', PASSWORD)
    page.click('[type="submit"]', no_wait_after=True)


def _busy_cells(user: UserLab, channel: str) -> list[str]:
    """A Feed, then a cell that publishes into it every 0.25 s until the test writes ``stop`` (bounded)."""
    stop = user.home / "stop"
    return [
        f'import json, os, time\nimport livewidget\nfeed = livewidget.Feed("{channel}")\nfeed',
        'print("PUBLISHING", flush=True)\n'
        f"for n in range({BUSY_LIMIT * 4}):\n"
        f'    livewidget.publish("{channel}", "tick", {{"user": "{user.name}", "n": n}})\n'
        f'    if os.path.exists("{stop}"):\n'
        "        break\n"
        "    time.sleep(0.25)\n"
        'print("STOPPED", n)',
    ]


def _max_tick(nb: NotebookPage, channel: str) -> int:
    """The highest ``n`` among the Feed's rows of ``channel`` (-1 when none)."""
    texts = nb.page.locator(f'{FEED} .lw-log .lw-row[data-channel="{channel}"] .lw-data').all_inner_texts()
    found = [int(m.group(1)) for t in texts for m in [re.search(r'"n":\s*(\d+)', t)] if m]
    return max(found, default=-1)


def _request(hub: Hub, method: str, path: str, cookies: list[dict[str, Any]], **headers: str) -> int:
    """One request through the hub, as a browser at ``hub.url`` sends it with these cookies (redirects
    not followed: the status as answered). A WebSocket upgrade when ``upgrade=True``: ``101`` if it
    would be opened. Python, not Playwright's request API: only Chromium maps PAGE_HOST to 127.0.0.1."""
    upgrade = headers.pop("upgrade", "") == "True"
    lines = [
        f"{method} {path}{'?protocol=7&client=js&version=8.4.0' if upgrade else ''} HTTP/1.1",
        f"Host: {PAGE_HOST}:{hub.port}",
        f"Origin: {hub.url}",
        "Connection: close",
    ]
    if upgrade:
        lines[-1] = "Connection: Upgrade"
        lines += [
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 13",
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        ]
    if cookies:
        lines.append("Cookie: " + "; ".join(f"{c['name']}={c['value']}" for c in cookies))
    body = b"{}" if method == "POST" else b""
    if method == "POST":
        lines += ["Content-Type: text/plain", f"Content-Length: {len(body)}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", hub.port), timeout=15) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = b""
        while b"\r\n" not in head and len(head) < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    assert match, f"no HTTP answer to {method} {path}: {head[:200]!r}"
    return int(match.group(1))


def _fetch(nb: NotebookPage, method: str, path: str) -> int:
    """``fetch()`` from this page (its cookies, redirects followed); the final status."""
    return int(
        nb.page.evaluate(
            "async ([m, url]) => (await fetch(url, {method: m, credentials: 'same-origin'})).status",
            [method, path],
        )
    )


# ---------------------------------------------------------------------------------------------- the test


def test_two_users_live_through_the_hub_and_isolated(hub: Hub, browser: Any) -> None:
    contexts: dict[str, Any] = {}
    pages: dict[str, NotebookPage] = {}
    sockets: dict[str, list[str]] = {name: [] for name in USERS}
    channels = {name: f"hub-{name}-{secrets.token_hex(4)}" for name in USERS}
    try:
        # 1. Both log in (their servers spawn side by side), then each runs a busy cell in their own lab.
        for name in USERS:
            context = new_context(browser)
            contexts[name] = context
            page = context.new_page()
            page.on("websocket", lambda ws, name=name: sockets[name].append(ws.url))
            pages[name] = NotebookPage(hub.users[name], page, "hub_feed.ipynb")  # type: ignore[arg-type]
            write_notebook(
                hub.users[name].home, "hub_feed.ipynb", _busy_cells(hub.users[name], channels[name])
            )
            _login(page, hub, name)
        for name in USERS:
            pages[name].page.wait_for_url(
                re.compile(rf"/user/{name}/"), timeout=SPAWN_TIMEOUT * 1000, wait_until="commit"
            )
        for name in USERS:
            nb = pages[name].open()
            assert nb.page.url.startswith(f"{hub.url}/user/{name}/lab"), nb.page.url
            nb.run_all()
        for name in USERS:
            _check_live(pages[name], channels[name])

        embedded = {name: hub.users[name].embedded() for name in USERS}
        ids = {
            name: _routes.server_id(e["app_id"], e["key"], e["host"], int(e["port"]))
            for name, e in embedded.items()
        }
        assert embedded["alice"]["port"] != embedded["bob"]["port"], "each user has their own server"
        for name in USERS:
            nb = pages[name]
            assert nb.is_running(1), f"{name}'s cell should still run: {nb.cell_state(1)}"
            nb.screenshot(f"jupyterhub-{name}-feed", FEED)
            # every WebSocket of the page went through the hub to this user's server; none to a Pusher port
            urls = sockets[name]
            assert any(
                f"{hub.url.replace('http', 'ws')}/user/{name}/livewidget/{ids[name]}/" in u for u in urls
            )
            assert all(u.startswith(f"ws://{PAGE_HOST}:{hub.port}/user/{name}/") for u in urls), urls
            ports = {int(e["port"]) for e in embedded.values()}
            assert not [u for u in urls if urlsplit(u).port in ports], urls
            web = [r.url for r in nb.requests if r.url.startswith(("http:", "https:", "ws:"))]
            assert not [u for u in web if urlsplit(u).hostname != PAGE_HOST], web
            assert not [r.url for r in nb.requests if urlsplit(r.url).port in ports]

        # 2. bob's session against alice's routes, through the hub; and bob's extension asked for alice's id.
        _check_isolation(hub, contexts["bob"], pages["bob"], embedded, ids)

        for name in USERS:  # the busy cells end; the secrets never reached either page
            (hub.users[name].home / "stop").touch()
        for name in USERS:
            pages[name].wait_cell_done(1, timeout=30)
            for secret_of in USERS:
                leaks = pages[name].secret_leaks(embedded[secret_of]["secret"])
                assert not leaks, f"{secret_of}'s secret reached {name}'s page: {leaks}"
    except BaseException:
        for name, nb in pages.items():
            nb.save_failure_artifacts(f"jupyterhub-{name}")
        raise
    finally:
        for name in USERS:
            with contextlib.suppress(OSError):
                (hub.users[name].home / "stop").touch()
        for context in contexts.values():
            with contextlib.suppress(Exception):
                context.close()


def _check_live(nb: NotebookPage, channel: str) -> None:
    """The Feed shows the busy cell's events as they come, through the ``jupyter`` route."""
    nb.wait_output(1, "PUBLISHING", timeout=60)
    label = nb.page.locator(f'{FEED} .lw-route[data-route="jupyter"]').first
    label.wait_for(state="visible", timeout=20_000)
    assert label.inner_text().strip() == "jupyter"
    nb.page.locator(f'{FEED} .lw-state[data-state="connected"]').wait_for(state="visible", timeout=10_000)
    wait_row(nb, channel, "tick", '"n":', timeout=20)
    first = _max_tick(nb, channel)
    # still running, still updating: later events arrive while the cell is busy
    wait_until(lambda: _max_tick(nb, channel) >= first + 4, 15, f"more ticks after {first} on {channel}")
    assert nb.is_running(1), f"the cell should still run: {nb.cell_state(1)}"


def _check_isolation(
    hub: Hub, bob: Any, bob_page: NotebookPage, embedded: dict[str, dict[str, Any]], ids: dict[str, str]
) -> None:
    alice, a_id, b_id = embedded["alice"], ids["alice"], ids["bob"]
    a_aid = next(
        (hub.users["alice"].runtime / "auth").glob("*.json")
    ).stem  # alice's kernel's signing endpoint
    refused = (403, 404)

    def cookies(path: str) -> list[dict[str, Any]]:
        return list(bob.cookies([f"{hub.url}{path}"]))

    # bob's browser asking for alice's lab: the hub refuses to log him in there (he keeps only the
    # OAuth state cookie of the attempt, no login cookie of alice's server); the checks below run with it
    response = bob.new_page().goto(f"{hub.url}/user/alice/lab", wait_until="commit")
    assert response is not None and response.status in refused, response and response.status
    names = {c["name"] for c in bob.cookies()}
    assert "jupyterhub-user-alice" not in names, names
    assert "jupyterhub-user-bob" in names, names

    alice_routes = [
        ("GET", "/user/alice/livewidget/info"),
        ("GET", f"/user/alice/livewidget/{a_id}/info"),
        ("GET", f"/user/alice/livewidget/{a_id}/apps/{alice['app_id']}/channels"),
        ("POST", f"/user/alice/livewidget/auth/{a_aid}"),
    ]
    for method, path in alice_routes:
        status = _request(hub, method, path, cookies(path))
        assert status in refused, f"bob got {status} for {method} {path}"
        status = _fetch(bob_page, method, path)  # from bob's page, after any redirect (the hub's OAuth)
        assert status in refused, f"bob's page got {status} for {method} {path}"
    ws_path = f"/user/alice/livewidget/{a_id}/app/{alice['key']}"
    status = _request(hub, "GET", ws_path, cookies(ws_path), upgrade="True")
    assert status in refused, f"bob's WebSocket upgrade to alice's server got {status}"

    # bob's own extension: it knows bob's server, never alice's (same OS user, same XDG_RUNTIME_DIR)
    servers = bob_page.page.evaluate(
        "async (url) => (await (await fetch(url)).json()).servers", "/user/bob/livewidget/info"
    )
    assert servers == [b_id], servers
    assert _fetch(bob_page, "GET", f"/user/bob/livewidget/{b_id}/info") == 200  # so the 404s are about the id
    assert _fetch(bob_page, "GET", f"/user/bob/livewidget/{a_id}/info") == 404
    assert _fetch(bob_page, "GET", f"/user/bob/livewidget/{a_id}/apps/{alice['app_id']}/channels") == 404
    own = f"/user/bob/livewidget/{b_id}/app/{embedded['bob']['key']}"
    assert _request(hub, "GET", own, cookies(own), upgrade="True") == 101
    other = f"/user/bob/livewidget/{a_id}/app/{alice['key']}"
    assert _request(hub, "GET", other, cookies(other), upgrade="True") == 404
    path = f"/user/bob/livewidget/auth/{a_aid}"
    xsrf = next(c["value"] for c in cookies(path) if c["name"] == "_xsrf")
    assert _request(hub, "POST", path, cookies(path), X_XSRFToken=xsrf) == 404

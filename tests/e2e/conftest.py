"""End-to-end harness: a real JupyterLab, Debian Chromium driven by Playwright, the embedded Pusher server.

One of each per run of this package (starting JupyterLab and loading its page are the slow parts,
about 6 s and 15 s on 2 cores), one notebook and one browser page per test. Package scope, not
session: between its sync calls Playwright leaves its event loop marked as running in the main
thread, which breaks every asyncio test run after it ("Cannot run the event loop while another loop
is running") until ``browser`` is torn down.

- ``pusher_server``: :class:`livewidget.server.LocalServer` in this process; the kernels find it through
  ``LIVEWIDGET_URL`` in JupyterLab's environment, the tests publish to it with the official SDK (``sdk``).
- ``lab``: ``jupyter lab`` in a subprocess on 127.0.0.1 (token-less, isolated config, settings,
  workspaces, runtime and data folders; root folder a temp folder where tests write notebooks).
- ``browser``: Chromium from ``/usr/bin/chromium`` (never a downloaded one). The tests fail, not skip,
  when it is missing: CI installs it.
- ``notebooks``: write a notebook and open it in a new page (:class:`NotebookPage`: run all cells without
  awaiting, wait for the kernel, run code in the kernel from the page, read cells' state and output,
  screenshots). Every websocket frame, request and response of the page is kept for the secret audit,
  which runs for every page when the test ends.

Screenshots, the pages' console logs of failed tests and JupyterLab's log go to ``test-artifacts/``.
Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pusher
import pytest

from livewidget._demo import lab_command
from livewidget.server import LocalServer

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
STATIC = REPO / "livewidget" / "static"
BUNDLES = [STATIC / f"{kind}.js" for kind in ("feed", "chart", "chat", "progress")]  # one per widget class
BUNDLE = BUNDLES[0]  # the Feed's
PLACEHOLDER_MARK = "front end not built"

PAGE_HOST = "lab.test"  # Chromium resolves it to 127.0.0.1 (CHROMIUM_ARGS)
LAB_START_TIMEOUT = 60.0  # s for /api/status to answer
PAGE_TIMEOUT = 90_000  # ms for the page to load and its kernel to be idle
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # a hostname that is not loopback, for pages served as on a hub or remote server (test_route_e2e)
    f"--host-resolver-rules=MAP {PAGE_HOST} 127.0.0.1",
]
LAB_SETTINGS: dict[str, dict[str, Any]] = {
    # The news toast still appears with --LabApp.news_url=None; it would cover the widgets.
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/apputils-extension/themes": {"theme": "JupyterLab Light"},
    # Every cell in the DOM, whatever the scroll position.
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    # The tests save explicitly; no autosave racing them.
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
}

# The notebook panel showing `path` in this page (not just the current widget: focus may move).
_PANEL_JS = (
    "(path) => [...(window.jupyterapp?.shell?.widgets('main') ?? [])].find((w) => w.context?.path === path)"
)


# ---------------------------------------------------------------------------------------------- hooks


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item, so fixtures can save artifacts when the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


# ---------------------------------------------------------------------------------------------- helpers


def wait_started(proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float, what: str) -> str:
    """Poll ``ready`` (a failed connection counts as not yet) until it holds: "" then; else why not,
    ``proc`` having exited or ``timeout`` seconds gone by, ``what`` naming what did not answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            if ready():
                return ""
        time.sleep(0.2)
    if proc.poll() is not None:
        return f"exited with {proc.returncode}"
    return f"{what} did not answer in {timeout} s"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:120]


def _children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (kernels run in their own session but stay the server's children)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found.append(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _kill_by_pid(pids: list[int], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is still there after ``timeout`` s; only these pids."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def sleeping_cell(seconds: float) -> str:
    """A notebook cell that keeps the kernel busy for ``seconds``, printing SLEEPING first and WOKE after
    (what the tests wait for: widgets must be live in between)."""
    return f'print("SLEEPING", flush=True)\ntime.sleep({seconds})\nprint("WOKE")'


def new_context(browser: Any) -> Any:
    """A fresh browser context as every e2e test uses it: a 1280x900 window, 30 s default timeout."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    return context


def write_notebook(folder: Path, name: str, cells: list[str]) -> str:
    """Write ``name`` (code cells, Python 3 kernel) under ``folder``; returns its path for the lab URL."""
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source) for source in cells],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
            "language_info": {"name": "python"},
        },
    )
    nbformat.write(nb, folder / name)
    return name


# ---------------------------------------------------------------------------------------------- JupyterLab


class JupyterLab:
    """``jupyter lab`` in a subprocess, token-less on 127.0.0.1, with isolated folders.

    ``base_url`` and ``extra`` (more command-line options) serve it as on a hub; ``page_host`` is the
    hostname pages open it at (``url`` stays on 127.0.0.1 for the REST calls of the tests).
    """

    def __init__(
        self,
        base: Path,
        env_extra: dict[str, str],
        *,
        base_url: str = "/",
        page_host: str = "127.0.0.1",
        extra: tuple[str, ...] = (),
    ) -> None:
        self.base = base
        self.base_url = base_url
        self.page_host = page_host
        self.extra = extra
        self.page_url = ""
        self.root = base / "root"
        self.root.mkdir()
        self.dirs = {
            name: base / name.lower()
            for name in (
                "JUPYTER_CONFIG_DIR",
                "JUPYTER_DATA_DIR",
                "JUPYTERLAB_SETTINGS_DIR",
                "JUPYTERLAB_WORKSPACES_DIR",
                "JUPYTER_RUNTIME_DIR",
                "IPYTHONDIR",
            )
        }
        for path in self.dirs.values():
            path.mkdir()
        for plugin, values in LAB_SETTINGS.items():
            target = self.dirs["JUPYTERLAB_SETTINGS_DIR"] / f"{plugin}.jupyterlab-settings"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PUSHER_", "LIVEWIDGET_"))}
        env.pop("ANYWIDGET_HMR", None)
        env.update({name: str(path) for name, path in self.dirs.items()})
        env.update(env_extra)
        env["PYTHONUNBUFFERED"] = "1"
        env["JUPYTER_PLATFORM_DIRS"] = "1"
        self.env = env
        self.port = 0
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = ARTIFACTS / "jupyterlab.log"
        self._log: Any = None

    def start(self) -> JupyterLab:
        last_error = ""
        for _attempt in range(3):  # the free port may be taken between probe and bind
            self.port = free_port()
            prefix = self.base_url.rstrip("/")
            self.url = f"http://127.0.0.1:{self.port}{prefix}"
            self.page_url = f"http://{self.page_host}:{self.port}{prefix}"
            cmd = lab_command(
                self.port,
                self.root,
                token="",
                extra=(
                    "--ServerApp.password=",
                    "--ServerApp.disable_check_xsrf=True",
                    f"--ServerApp.base_url={self.base_url}",
                    *self.extra,
                ),
            )
            self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
            self.proc = subprocess.Popen(
                cmd,
                env=self.env,
                cwd=self.root,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            last_error = self._wait_started()
            if not last_error:
                return self
            self.stop()
        raise RuntimeError(f"JupyterLab did not start: {last_error}; see {self.log_path}")

    def _wait_started(self) -> str:
        """Wait for ``/api/status`` to answer: "" once it does, else why not (the process exited, or
        the time ran out)."""
        assert self.proc is not None
        return wait_started(
            self.proc,
            lambda: self.api("GET", "/api/status", timeout=2)[0] == 200,
            LAB_START_TIMEOUT,
            "/api/status",
        )

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
        """One REST call to the server; (status, decoded JSON or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as exc:
            exc.close()
            return exc.code, None

    def sessions(self) -> list[dict[str, Any]]:
        status, body = self.api("GET", "/api/sessions")
        return list(body or []) if status == 200 else []

    def shutdown_notebook_kernel(self, path: str) -> None:
        """End the session (and kernel) of the notebook at ``path``, if any."""
        for session in self.sessions():
            if session.get("path") == path:
                with contextlib.suppress(OSError):
                    self.api("DELETE", f"/api/sessions/{session['id']}", timeout=15)

    def stop(self) -> None:
        """Shut kernels down, then the server; kill what is left, by pid; bounded."""
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None:
            descendants = _children(proc.pid)
            with contextlib.suppress(OSError):
                _, kernels = self.api("GET", "/api/kernels", timeout=5)
                for kernel in kernels or []:
                    with contextlib.suppress(OSError):
                        self.api("DELETE", f"/api/kernels/{kernel['id']}", timeout=10)
            with contextlib.suppress(OSError):
                self.api("POST", "/api/shutdown", timeout=5)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            _kill_by_pid([p for p in descendants if _alive(p)])
        if self._log is not None:
            self._log.close()
            self._log = None


# ---------------------------------------------------------------------------------------------- page


class NotebookPage:
    """One browser page showing one notebook; records everything the page sends and receives."""

    _pages = 0

    def __init__(self, lab: JupyterLab, page: Any, path: str) -> None:
        self.lab = lab
        self.page = page
        self.path = path
        self.frames: list[tuple[str, str, str | bytes]] = []  # (sent|received, url, payload)
        self.requests: list[Any] = []
        self.responses: list[Any] = []
        self.console: list[str] = []
        self.audited: dict[str, int] = {}  # what the last secret_leaks() looked at
        page.on("websocket", self._on_websocket)
        page.on("request", lambda request: self.requests.append(request))
        page.on("response", lambda response: self.responses.append(response))
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: self.console.append(f"pageerror: {exc}"))

    def _on_websocket(self, ws: Any) -> None:
        url = ws.url
        ws.on("framesent", lambda payload: self.frames.append(("sent", url, payload)))
        ws.on("framereceived", lambda payload: self.frames.append(("received", url, payload)))

    # -------------------------------------------------------------------------- navigation and kernel

    def open(self) -> NotebookPage:
        """Load the notebook in JupyterLab and wait until its kernel is idle.

        Each page gets a workspace of its own: the default one would reopen every notebook opened
        before (restarting kernels that tests shut down).
        """
        NotebookPage._pages += 1
        workspace = f"e2e-{os.getpid()}-{NotebookPage._pages}"
        self.page.goto(
            f"{self.lab.page_url}/lab/workspaces/{workspace}/tree/{self.path}", wait_until="domcontentloaded"
        )
        self.page.wait_for_function(
            f"""(path) => {{
                const panel = ({_PANEL_JS})(path);
                const kernel = panel?.sessionContext?.session?.kernel;
                return kernel?.status === 'idle' && panel.content.widgets.length > 0;
            }}""",
            arg=self.path,
            timeout=PAGE_TIMEOUT,
            polling=100,
        )
        return self

    def evaluate_panel(self, body: str, arg: Any = None) -> Any:
        """Evaluate ``body`` (JS statements; ``panel`` is this notebook's panel, ``arg`` the argument)."""
        return self.page.evaluate(
            f"""async ([path, arg]) => {{
                const panel = ({_PANEL_JS})(path);
                if (!panel) throw new Error('no notebook panel for ' + path);
                {body}
            }}""",
            [self.path, arg],
        )

    def command(self, name: str, args: dict[str, Any] | None = None, wait: bool = False) -> None:
        """Run a JupyterLab command; without ``wait`` its promise is dropped.

        (``notebook:run-all-cells`` resolves only when every cell has finished.)
        """
        if wait:
            self.page.evaluate("([n, a]) => window.jupyterapp.commands.execute(n, a)", [name, args or {}])
        else:
            self.page.evaluate(
                "([n, a]) => { void window.jupyterapp.commands.execute(n, a); }", [name, args or {}]
            )

    def run_all(self) -> None:
        """Start running every cell and return at once."""
        self.evaluate_panel("panel.activate(); window.jupyterapp.shell.activateById(panel.id);")
        self.command("notebook:run-all-cells")

    def save(self) -> None:
        self.evaluate_panel("await panel.context.save();")

    def kernel_id(self) -> str:
        return str(self.evaluate_panel("return panel.sessionContext.session.kernel.id;"))

    def kernel_status(self) -> str:
        return str(self.evaluate_panel("return panel.sessionContext.session?.kernel?.status ?? 'none';"))

    def kernel_exec(self, code: str, timeout: float = 30.0) -> dict[str, Any]:
        """Run ``code`` in this notebook's kernel (not in a cell); ``{status, stdout, stderr, error}``."""
        return dict(
            self.evaluate_panel(
                """
                const kernel = panel.sessionContext.session.kernel;
                const out = {status: null, stdout: '', stderr: '', error: null};
                const future = kernel.requestExecute({code: arg.code, silent: false, store_history: false});
                future.onIOPub = (msg) => {
                    const t = msg.header.msg_type;
                    if (t === 'stream') out[msg.content.name] += msg.content.text;
                    else if (t === 'error') out.error = msg.content.ename + ': ' + msg.content.evalue;
                };
                let timer;
                const expired = new Promise((_, reject) => {
                    const fail = () => reject(new Error('kernel_exec: no reply in ' + arg.ms + ' ms'));
                    timer = setTimeout(fail, arg.ms);
                });
                try {
                    const reply = await Promise.race([future.done, expired]);
                    out.status = reply.content.status;
                } finally {
                    clearTimeout(timer);
                }
                return out;
                """,
                {"code": code, "ms": int(timeout * 1000)},
            )
        )

    def kernel_json(self, code: str, timeout: float = 30.0) -> Any:
        """Run ``code`` that prints one JSON document on its last stdout line; return it decoded."""
        result = self.kernel_exec(code, timeout)
        if result["status"] != "ok":
            raise AssertionError(f"kernel code failed: {result}")
        return json.loads(result["stdout"].strip().splitlines()[-1])

    # -------------------------------------------------------------------------- cells

    def cell(self, index: int) -> Any:
        """The locator of cell ``index`` (0-based)."""
        return self.page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").nth(index)

    def cell_state(self, index: int) -> dict[str, Any]:
        """``{prompt, count, executionState}`` of cell ``index`` (``[*]:`` and None while it runs)."""
        return dict(
            self.evaluate_panel(
                """
                const cell = panel.content.widgets[arg];
                const prompt = cell.node.querySelector('.jp-InputPrompt')?.textContent ?? '';
                return {prompt: prompt.trim(), count: cell.model.executionCount ?? null,
                        executionState: cell.model.executionState ?? null};
                """,
                index,
            )
        )

    def is_running(self, index: int) -> bool:
        state = self.cell_state(index)
        return state["prompt"] == "[*]:" and state["count"] is None

    def wait_cell_done(self, index: int, timeout: float) -> int:
        """Wait until cell ``index`` shows an execution count; return it."""
        self.page.wait_for_function(
            f"""([path, i]) => {{
                const cell = ({_PANEL_JS})(path)?.content.widgets[i];
                const prompt = cell?.node.querySelector('.jp-InputPrompt')?.textContent ?? '';
                return /\\[\\d+\\]/.test(prompt) && cell.model.executionCount != null;
            }}""",
            arg=[self.path, index],
            timeout=timeout * 1000,
            polling=100,
        )
        return int(self.cell_state(index)["count"])

    def output_text(self, index: int) -> str:
        return str(self.cell(index).locator(".jp-OutputArea").inner_text())

    def wait_output(self, index: int, text: str, timeout: float) -> str:
        """Wait until cell ``index``'s output contains ``text``; return the whole output text."""
        self.cell(index).locator(".jp-OutputArea-output", has_text=text).first.wait_for(
            state="attached", timeout=timeout * 1000
        )
        return self.output_text(index)

    def widget(self, selector: str = ".lw-feed", timeout: float = 30.0) -> Any:
        """Wait for ``selector`` to be visible in this notebook; return its locator (first match)."""
        locator = self.page.locator(f".jp-NotebookPanel:visible {selector}").first
        locator.wait_for(state="visible", timeout=timeout * 1000)
        return locator

    # -------------------------------------------------------------------------- artifacts

    def screenshot(self, name: str, selector: str | None = None) -> Path:
        """Save the page (or just ``selector``) to ``test-artifacts/<name>.png``."""
        path = ARTIFACTS / f"{slug(name)}.png"
        if selector is None:
            self.page.screenshot(path=str(path))
        else:
            self.page.locator(selector).first.screenshot(path=str(path))
        return path

    def set_theme(self, theme: str) -> None:
        """Switch JupyterLab's theme ("JupyterLab Light" / "JupyterLab Dark") and wait until applied."""
        light = "true" if "Light" in theme else "false"
        self.command("apputils:change-theme", {"theme": theme})
        self.page.wait_for_function(
            "(light) => document.body.dataset.jpThemeLight === light",
            arg=light,
            timeout=15_000,
        )
        # the theme is a user setting: wait until the server has it, so the next page starts the same way
        wait_until(lambda: self.theme_setting() == theme, 10, f"the theme setting to become {theme}")
        self.page.wait_for_timeout(500)  # let the new CSS paint

    def theme_setting(self) -> str | None:
        status, body = self.lab.api("GET", "/lab/api/settings/@jupyterlab/apputils-extension:themes")
        return (body or {}).get("settings", {}).get("theme") if status == 200 else None

    # -------------------------------------------------------------------------- secret audit

    def secret_leaks(self, secret: str) -> list[str]:
        """Where ``secret`` reached this page: websocket frames, requests, responses, the DOM."""
        needle = secret.encode()
        leaks: list[str] = []
        self.audited = {"frames": len(self.frames), "requests": len(self.requests), "bodies": 0}
        for direction, url, payload in list(self.frames):
            raw = payload.encode() if isinstance(payload, str) else bytes(payload)
            if needle in raw:
                leaks.append(f"websocket frame {direction} on {url}: {raw[:200]!r}")
        for request in list(self.requests):
            if secret in request.url:
                leaks.append(f"request URL {request.url}")
            body = request.post_data_buffer
            if body and needle in body:
                leaks.append(f"request body to {request.url}")
        for response in list(self.responses):
            try:
                body = response.body()
            except Exception:  # redirects, evicted or aborted bodies: nothing was delivered to read
                continue
            self.audited["bodies"] += 1
            if needle in body:
                leaks.append(f"response body of {response.url}")
            if any(secret in v for v in response.headers.values()):
                leaks.append(f"response header of {response.url}")
        if not self.page.is_closed():
            if secret in self.page.content():
                leaks.append("the DOM (page.content())")
            values = self.page.evaluate(
                "() => [...document.querySelectorAll('input, textarea')].map((e) => e.value).join('\\n')"
            )
            if secret in values:
                leaks.append("an input's value")
            storage = self.page.evaluate("() => JSON.stringify([{...localStorage}, {...sessionStorage}])")
            if secret in storage:
                leaks.append("localStorage/sessionStorage")
        return leaks

    def save_failure_artifacts(self, name: str) -> None:
        with contextlib.suppress(Exception):
            if not self.page.is_closed():
                self.screenshot(f"{name}-failure")
        (ARTIFACTS / f"{slug(name)}-console.log").write_text("\n".join(self.console) + "\n")


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="package")
def chromium() -> Path:
    """Debian's Chromium; the e2e tests FAIL (not skip) without it: CI installs it."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the e2e browser tests need Debian Chromium "
            "(apt-get install -y chromium fonts-liberation); they never download a browser "
            "(do not run `playwright install`)",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture(scope="package")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    for stale in [*ARTIFACTS.glob("*-failure.png"), *ARTIFACTS.glob("*-console.log")]:
        stale.unlink()  # from an earlier run: only this run's failures should be there
    return ARTIFACTS


@pytest.fixture(scope="package")
def frontend() -> str:
    """The built front ends (livewidget/static/<kind>.js); fail clearly when one is missing or a stub."""
    for bundle in BUNDLES:
        text = bundle.read_text() if bundle.exists() else PLACEHOLDER_MARK
        if PLACEHOLDER_MARK in text:
            pytest.fail(
                f"{bundle.relative_to(REPO)} is missing or the placeholder ({PLACEHOLDER_MARK!r}): "
                "build the front end in js/ first (npm run build)",
                pytrace=False,
            )
    return BUNDLE.read_text()


@pytest.fixture(scope="package")
def pusher_server() -> Iterator[LocalServer]:
    """The Pusher-compatible server every kernel of the session talks to (through LIVEWIDGET_URL)."""
    with LocalServer() as server:
        yield server


@pytest.fixture(scope="package")
def sdk(pusher_server: LocalServer) -> pusher.Pusher:
    """The official `pusher` SDK, publishing to ``pusher_server`` from outside the kernels."""
    return pusher.Pusher(
        app_id=pusher_server.app_id,
        key=pusher_server.key,
        secret=pusher_server.secret,
        host=pusher_server.host,
        port=pusher_server.port,
        ssl=False,
        timeout=10,
    )


@pytest.fixture(scope="package")
def lab(
    chromium: Path, artifacts: Path, pusher_server: LocalServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JupyterLab]:
    s = pusher_server
    base = tmp_path_factory.mktemp("jupyterlab")
    (base / "livewidget-run").mkdir()
    server = JupyterLab(
        base,
        {
            "LIVEWIDGET_URL": f"http://{s.key}:{s.secret}@{s.host}:{s.port}/apps/{s.app_id}",
            "LIVEWIDGET_RUNTIME_DIR": str(base / "livewidget-run"),
        },
    )
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="package")
def browser(chromium: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield browser
        finally:
            browser.close()
    finally:
        pw.stop()


@pytest.fixture
def notebooks(
    request: pytest.FixtureRequest, lab: JupyterLab, browser: Any, pusher_server: LocalServer
) -> Iterator[Callable[..., NotebookPage]]:
    """``notebooks(name, cells)`` writes a notebook and opens it; ``notebooks(name)`` opens it again.

    Each call is a new page (its own browser context). At the end: failure artifacts, the secret
    audit of every page, pages closed, the notebooks' kernels shut down.
    """
    pages: list[NotebookPage] = []
    contexts: list[Any] = []
    paths: set[str] = set()

    def open_notebook(name: str, cells: list[str] | None = None) -> NotebookPage:
        if cells is not None:
            write_notebook(lab.root, name, cells)
        context = new_context(browser)
        contexts.append(context)
        nb = NotebookPage(lab, context.new_page(), name)
        pages.append(nb)
        paths.add(name)
        return nb.open()

    yield open_notebook

    failed = any(
        getattr(request.node, f"rep_{w}", None) and getattr(request.node, f"rep_{w}").failed
        for w in ("setup", "call")
    )
    leaks: list[str] = []
    try:
        for i, nb in enumerate(pages):
            if failed:
                nb.save_failure_artifacts(f"{request.node.name}-page{i}")
            leaks += [f"page {i}: {leak}" for leak in nb.secret_leaks(pusher_server.secret)]
    finally:
        for context in contexts:
            with contextlib.suppress(Exception):
                context.close()
        for path in paths:
            with contextlib.suppress(Exception):
                lab.shutdown_notebook_kernel(path)
    if leaks:
        pytest.fail("the app secret reached the browser:\n" + "\n".join(leaks), pytrace=False)


@contextlib.contextmanager
def notebook_page(
    lab: JupyterLab, browser: Any, name: str, artifact: str, local: bool = False
) -> Iterator[tuple[NotebookPage, list[str]]]:
    """A new page (its own browser context) for notebook ``name`` of ``lab``, not opened yet, and the URLs
    of the WebSockets it opens. ``local``: opened at the lab's loopback URL rather than its page URL.
    If the test fails, the page's artifacts are saved as ``artifact``. At the end the context is closed
    and the notebook's kernel shut down."""
    context = new_context(browser)
    sockets: list[str] = []
    page_url = lab.page_url
    if local:
        lab.page_url = lab.url
    try:
        page = context.new_page()
        page.on("websocket", lambda ws: sockets.append(ws.url))
        nb = NotebookPage(lab, page, name)
        try:
            yield nb, sockets
        except BaseException:
            nb.save_failure_artifacts(artifact)
            raise
    finally:
        lab.page_url = page_url
        with contextlib.suppress(Exception):
            context.close()
        with contextlib.suppress(Exception):
            lab.shutdown_notebook_kernel(name)


@contextlib.contextmanager
def hub_like_lab(
    pusher_server: LocalServer, base: Path, extensions: dict[str, bool], base_url: str = "/user/alice/"
) -> Iterator[JupyterLab]:
    """JupyterLab under ``base_url`` opened at PAGE_HOST (not loopback), as on a hub, using
    ``pusher_server``, with these server extensions on or off (whatever an installed wheel's config says)."""
    s = pusher_server
    (base / "livewidget-run").mkdir(mode=0o700)
    server = JupyterLab(
        base,
        {
            "LIVEWIDGET_URL": f"http://{s.key}:{s.secret}@{s.host}:{s.port}/apps/{s.app_id}",
            "LIVEWIDGET_RUNTIME_DIR": str(base / "livewidget-run"),
        },
        base_url=base_url,
        page_host=PAGE_HOST,
        extra=(
            f"--ServerApp.jpserver_extensions={extensions!r}",  # a Python literal, as traitlets reads it
            "--ServerApp.allow_remote_access=True",  # a Host other than localhost, as on a hub
        ),
    )
    try:
        yield server.start()
    finally:
        server.stop()

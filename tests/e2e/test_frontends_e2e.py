"""Notebook 7 and Voila render and update the widgets, through the jupyter route (issue 12).

One ``jupyter notebook`` (Notebook 7) runs with a token under ``--ServerApp.base_url=/user/alice/``, with
the livewidget server extension and Voila's (``voila.server_extension``, which serves
``{base_url}voila/render/{path}``), and its pages are opened at ``http://lab.test:PORT/user/alice/``
(Chromium maps ``lab.test`` to 127.0.0.1): a hostname that is not loopback, as on a hub, so the widgets
must come live through ``/user/alice/livewidget/...`` and say ``jupyter`` in their header.

- Notebook 7: a Feed and a ProgressBoard update while a cell that publishes keeps running.
- Voila: a dashboard notebook whose Feed gets events from a background thread of its kernel; the Feed in
  the Voila page gains rows after the page has loaded.
- Standalone ``voila notebook.ipynb`` (its own server app, which loads no Jupyter server extensions)
  under a base URL at the same hostname: no ``livewidget/`` route there, so the Feed goes live through
  the ``relay`` route instead.

Screenshots go to ``test-artifacts/`` (``frontends-*.png``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pusher
import pytest

from livewidget.server import LocalServer

from .conftest import (
    _PANEL_JS,
    LAB_START_TIMEOUT,
    PAGE_HOST,
    PAGE_TIMEOUT,
    JupyterLab,
    NotebookPage,
    free_port,
    new_context,
    wait_until,
    write_notebook,
)
from .test_feed_e2e import subscribers

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BASE_URL = "/user/alice/"
STEPS = 40  # iterations of the publishing cell
STEP = 0.3  # s each: the cell runs about 12 s
EXTENSIONS = '{"livewidget.jupyter": True, "voila.server_extension": True}'


class NotebookServer(JupyterLab):
    """``jupyter notebook`` (Notebook 7) with a token, the livewidget and Voila server extensions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.token = secrets.token_hex(16)

    def start(self) -> NotebookServer:
        last_error = ""
        for _attempt in range(3):  # the free port may be taken between probe and bind
            self.port = free_port()
            prefix = self.base_url.rstrip("/")
            self.url = f"http://127.0.0.1:{self.port}{prefix}"
            self.page_url = f"http://{self.page_host}:{self.port}{prefix}"
            cmd = [
                sys.executable, "-m", "jupyter", "notebook", "--no-browser",
                "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
                f"--ServerApp.base_url={self.base_url}",
                "--ServerApp.allow_remote_access=True",  # a Host other than localhost, as on a hub
                # a source checkout has no installed config file: enable the extension as the wheel's does
                f"--ServerApp.jpserver_extensions={EXTENSIONS}",
                "--JupyterNotebookApp.expose_app_in_browser=True",
            ]  # fmt: skip
            if os.geteuid() == 0:
                cmd.append("--allow-root")
            self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
            self.proc = subprocess.Popen(
                cmd, env=self.env, cwd=self.root, stdout=self._log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            last_error = self._wait_started()
            if not last_error:
                return self
            self.stop()
        raise RuntimeError(f"jupyter notebook did not start: {last_error}; see {self.log_path}")

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
        return super().api(method, f"{path}?token={self.token}", body, timeout)


class Notebook7Page(NotebookPage):
    """A notebook opened in Notebook 7's own page (``{base_url}notebooks/{path}``), logged in by token."""

    def open(self) -> Notebook7Page:
        token = self.lab.token  # type: ignore[attr-defined]
        url = f"{self.lab.page_url}/notebooks/{self.path}?token={token}"
        self.page.goto(url, wait_until="domcontentloaded")
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


@pytest.fixture(scope="module")
def notebook_server(
    chromium: Any, artifacts: Any, pusher_server: LocalServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NotebookServer]:
    s = pusher_server
    base = tmp_path_factory.mktemp("notebook7")
    (base / "livewidget-run").mkdir(mode=0o700)
    server = NotebookServer(
        base,
        {
            "LIVEWIDGET_URL": f"http://{s.key}:{s.secret}@{s.host}:{s.port}/apps/{s.app_id}",
            "LIVEWIDGET_RUNTIME_DIR": str(base / "livewidget-run"),
        },
        base_url=BASE_URL,
        page_host=PAGE_HOST,
    )
    server.log_path = server.log_path.with_name("notebook7.log")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    context = new_context(browser)
    try:
        yield context
    finally:
        with contextlib.suppress(Exception):
            context.close()


def _voila_cells(channel: str) -> str:
    """A dashboard: a Feed, and a bounded background publisher that keeps going after the page loads."""
    return (
        "import threading, time\nimport livewidget\n"
        f"feed = livewidget.Feed({channel!r})\n"
        "def publisher():\n"
        "    for i in range(300):  # bounded: about 75 s\n"
        f'        livewidget.publish({channel!r}, "tick", {{"i": i}})\n'
        "        time.sleep(0.25)\n"
        "threading.Thread(target=publisher, daemon=True).start()\n"
        "feed"
    )


def _count(page: Any, selector: str) -> int:
    return int(page.locator(selector).count())


def test_notebook7_feed_and_board_update_while_a_cell_runs(
    notebook_server: NotebookServer,
    context: Any,
    sdk: pusher.Pusher,
    pusher_server: LocalServer,
    frontend: str,
) -> None:
    mark = uuid.uuid4().hex[:8]
    channel, board_channel = f"nb7-{mark}", f"nb7-progress-{mark}"
    name = write_notebook(
        notebook_server.root,
        "nb7_feed.ipynb",
        [
            f"import time\nimport livewidget\nfeed = livewidget.Feed({channel!r})\nfeed",
            f"board = livewidget.ProgressBoard({board_channel!r})\nboard",
            'print("TICKING", flush=True)\n'
            f'with livewidget.progress(total={STEPS}, desc="nb7", channel={board_channel!r}, '
            "mininterval=0.1) as bar:\n"
            f"    for i in range({STEPS}):\n"
            f'        livewidget.publish({channel!r}, "tick", {{"i": i}})\n'
            "        bar.update(1)\n"
            f"        time.sleep({STEP})\n"
            'print("DONE", flush=True)',
        ],
    )
    nb = Notebook7Page(notebook_server, context.new_page(), name)
    feed, board = ".jp-NotebookPanel:visible .lw-feed", ".jp-NotebookPanel:visible .lw-board"
    ticks = f'{feed} .lw-log .lw-row[data-event="tick"]'
    try:
        nb.open()
        assert nb.page.url.startswith(f"http://{PAGE_HOST}:{notebook_server.port}{BASE_URL}notebooks/")
        nb.run_all()
        nb.widget(".lw-feed", timeout=30)
        nb.widget(".lw-board", timeout=30)
        nb.wait_output(2, "TICKING", timeout=30)
        for widget in (feed, board):
            label = nb.page.locator(f'{widget} .lw-route[data-route="jupyter"]').first
            label.wait_for(state="visible", timeout=10_000)
            assert label.inner_text().strip() == "jupyter"
        wait_until(lambda: _count(nb.page, ticks) >= 2, 10, "the first ticks in the Feed")
        first = _count(nb.page, ticks)
        wait_until(lambda: _count(nb.page, ticks) >= first + 3, 10, "more ticks while the cell runs")
        job = nb.page.locator(f"{board} .lw-job").first
        job.wait_for(state="attached", timeout=10_000)
        n0 = int(job.get_attribute("data-n") or 0)
        wait_until(lambda: int(job.get_attribute("data-n") or 0) > n0, 10, "the board's n to go up")
        assert nb.is_running(2), f"the cell should still run: {nb.cell_state(2)}"
        nb.screenshot("frontends-notebook7")
        nb.screenshot("frontends-notebook7-feed", feed)
        assert nb.is_running(2), "the screenshots should show the widgets while the cell runs"

        nb.wait_cell_done(2, timeout=STEPS * STEP + 30)
        wait_until(lambda: _count(nb.page, ticks) == STEPS, 15, f"all {STEPS} ticks in the Feed")
        wait_until(lambda: job.get_attribute("data-status") == "done", 15, "the job to be done")
        assert not [u for u in nb.requests if f":{pusher_server.port}" in u.url or "127.0.0.1" in u.url]
        leaks = nb.secret_leaks(pusher_server.secret)
        assert not leaks, leaks
    except BaseException:
        nb.save_failure_artifacts("frontends-notebook7")
        raise
    finally:
        with contextlib.suppress(Exception):
            notebook_server.shutdown_notebook_kernel(name)


def test_voila_dashboard_feed_updates_from_a_background_publisher(
    notebook_server: NotebookServer,
    context: Any,
    sdk: pusher.Pusher,
    pusher_server: LocalServer,
    frontend: str,
) -> None:
    mark = uuid.uuid4().hex[:8]
    channel = f"voila-{mark}"
    name = write_notebook(
        notebook_server.root,
        "voila_feed.ipynb",
        [_voila_cells(channel)],
    )
    page = context.new_page()
    nb = NotebookPage(notebook_server, page, name)  # records the page's traffic for the secret audit
    feed = ".lw-feed"
    ticks = f'{feed} .lw-log .lw-row[data-event="tick"]'
    try:
        page.goto(
            f"{notebook_server.page_url}/voila/render/{name}?token={notebook_server.token}",
            wait_until="domcontentloaded",
            timeout=PAGE_TIMEOUT,
        )
        page.locator(feed).first.wait_for(state="visible", timeout=60_000)
        label = page.locator(f'{feed} .lw-route[data-route="jupyter"]').first
        label.wait_for(state="visible", timeout=15_000)
        assert label.inner_text().strip() == "jupyter"
        wait_until(lambda: subscribers(sdk, channel) >= 2, 10, "the Voila page to subscribe")
        wait_until(lambda: _count(page, ticks) >= 2, 15, "ticks in the Voila page")
        first = _count(page, ticks)
        wait_until(lambda: _count(page, ticks) >= first + 4, 10, "more ticks after the page loaded")
        assert not page.locator(".jp-Cell-inputWrapper:visible, .jp-InputArea:visible").count(), "code shown"
        nb.screenshot("frontends-voila")
        nb.screenshot("frontends-voila-feed", feed)
        assert not [u for u in nb.requests if f":{pusher_server.port}" in u.url or "127.0.0.1" in u.url]
        leaks = nb.secret_leaks(pusher_server.secret)
        assert not leaks, leaks
    except BaseException:
        nb.save_failure_artifacts("frontends-voila")
        raise
    finally:
        with contextlib.suppress(Exception):
            page.close()  # Voila shuts the dashboard's kernel down when its page goes


def test_standalone_voila_falls_back_to_the_relay_and_stays_live(
    notebook_server: NotebookServer, context: Any, pusher_server: LocalServer, frontend: str
) -> None:
    mark = uuid.uuid4().hex[:8]
    channel = f"voila-solo-{mark}"
    name = write_notebook(notebook_server.root, "voila_solo.ipynb", [_voila_cells(channel)])
    port = free_port()
    prefix = "/user/bob/"
    cmd = [
        sys.executable, "-m", "voila", str(notebook_server.root / name), "--no-browser",
        f"--port={port}", "--Voila.ip=127.0.0.1", f"--Voila.base_url={prefix}",
    ]  # fmt: skip
    log = open(notebook_server.log_path.with_name("voila.log"), "ab")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        cmd, env=notebook_server.env, cwd=notebook_server.root, stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    page = context.new_page()
    nb = NotebookPage(notebook_server, page, name)
    feed = ".lw-feed"
    ticks = f'{feed} .lw-log .lw-row[data-event="tick"]'
    try:
        wait_until(lambda: _listening(port) and proc.poll() is None, LAB_START_TIMEOUT, "voila to listen")
        page.goto(f"http://{PAGE_HOST}:{port}{prefix}", wait_until="domcontentloaded", timeout=PAGE_TIMEOUT)
        page.locator(feed).first.wait_for(state="visible", timeout=60_000)
        label = page.locator(f'{feed} .lw-route[data-route="relay"]').first
        label.wait_for(state="visible", timeout=20_000)
        assert label.inner_text().strip() == "relay"
        wait_until(lambda: _count(page, ticks) >= 2, 15, "ticks in the standalone Voila page")
        first = _count(page, ticks)
        wait_until(lambda: _count(page, ticks) >= first + 4, 10, "more ticks after the page loaded")
        nb.screenshot("frontends-voila-standalone")
        assert not [u for u in nb.requests if f":{pusher_server.port}" in u.url or "127.0.0.1" in u.url]
        leaks = nb.secret_leaks(pusher_server.secret)
        assert not leaks, leaks
    except BaseException:
        nb.save_failure_artifacts("frontends-voila-standalone")
        raise
    finally:
        with contextlib.suppress(Exception):
            page.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        return True
    return False

"""The example notebooks in real JupyterLab and headless Chromium, and ``livewidget demo`` end to end.

Each notebook is copied into the session's JupyterLab, opened, run top to bottom from the page, and
must end without an error output and show its widget (the front end's root class). Screenshots of each
widget and of the page go to ``test-artifacts/`` (ignored by git); with ``--refresh-docs-images``
(``scripts/refresh-docs-images.sh``) the widget pictures also replace the committed ones in ``docs/images/``
that the README shows. A plain test run never writes into the tree.

``livewidget demo --no-browser`` runs as a subprocess with a private runtime folder and demo folder: it
must print the URL, its JupyterLab must answer ``/api/status``, demo traffic must arrive on the demo
channels (read with ``livewidget tail -n``), and SIGINT must stop every process it started.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import nbformat
import pytest

from .conftest import _PANEL_JS, ARTIFACTS, REPO, JupyterLab, _alive, _children, _kill_by_pid, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

NOTEBOOKS = REPO / "notebooks"
IMAGES = REPO / "docs" / "images"
TAIL = ["-n", "2", "--timeout", "60"]  # two events within 60 s
RUN_TIMEOUT = 120  # s for a whole notebook to run in the page

# notebook -> (root class of the widget to check and photograph, screenshot name)
WIDGETS = {
    "00_live_demo.ipynb": (".lw-chart", "demo-dashboard"),
    "01_quickstart.ipynb": (".lw-feed", "quickstart-feed"),
    "02_training_curves.ipynb": (".lw-chart", "training-curves"),
    "03_parallel_progress.ipynb": (".lw-board", "progress-board"),
    "04_chat.ipynb": (".lw-chat", "chat"),
    "05_hosted_pusher.ipynb": (".lw-feed", "other-server-feed"),
    "06_integrations.ipynb": (".lw-feed", "integrations-logs"),
}
# text the widget must show once the notebook has run
EXPECT = {
    "01_quickstart.ipynb": "too-hot",
    "03_parallel_progress.ipynb": "bad record",
    "04_chat.ipynb": "It is ",
    "05_hosted_pusher.ipynb": "from-cli",
    "06_integrations.ipynb": "shard 5 failed",
}


def docs_image(config: pytest.Config, artifact: Path, name: str) -> None:
    """Copy a screenshot over the README's picture ``docs/images/<name>``, only when asked to."""
    if config.getoption("refresh_docs_images"):
        IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(artifact, IMAGES / name)


def test_every_notebook_has_an_e2e_check() -> None:
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} == set(WIDGETS)


def _errors(nb: Any) -> list[str]:
    return list(
        nb.evaluate_panel(
            """
            const errors = [];
            for (const cell of panel.content.widgets) {
                const outputs = cell.model.outputs;
                if (!outputs) continue;
                for (let i = 0; i < outputs.length; i++) {
                    const o = outputs.get(i).toJSON();
                    if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
                }
            }
            return errors;
            """
        )
    )


@pytest.mark.parametrize("name", sorted(WIDGETS), ids=[n.split(".")[0] for n in sorted(WIDGETS)])
def test_notebook_in_jupyterlab(
    name: str, notebooks: Any, lab: JupyterLab, frontend: str, request: pytest.FixtureRequest
) -> None:
    shutil.copyfile(NOTEBOOKS / name, lab.root / name)
    source = nbformat.read(NOTEBOOKS / name, as_version=4)
    last = max(i for i, cell in enumerate(source.cells) if cell.cell_type == "code")
    nb = notebooks(name)
    nb.run_all()
    nb.wait_cell_done(last, timeout=RUN_TIMEOUT)
    assert _errors(nb) == []
    selector, shot = WIDGETS[name]
    widget = nb.widget(selector)
    if name in EXPECT:
        widget.get_by_text(EXPECT[name]).first.wait_for(state="visible", timeout=20_000)
    widget.scroll_into_view_if_needed()
    nb.page.wait_for_timeout(1000)  # let the last events paint
    widget.screenshot(path=str(ARTIFACTS / f"notebook-{shot}-widget.png"))
    docs_image(request.config, ARTIFACTS / f"notebook-{shot}-widget.png", f"{shot}.png")
    nb.screenshot(f"notebook-{shot}")


# ---------------------------------------------------------------------------------------------- demo


def _read_lines(stream: Any, sink: list[str]) -> None:
    for raw in iter(stream.readline, b""):
        sink.append(raw.decode(errors="replace"))


def test_demo_command_end_to_end(
    tmp_path: Path, chromium: Path, browser: Any, artifacts: Path, request: pytest.FixtureRequest
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PUSHER_", "LIVEWIDGET_"))}
    env.update(
        LIVEWIDGET_RUNTIME_DIR=str(tmp_path / "run"),
        LIVEWIDGET_DEMO_DIR=str(tmp_path / "demo"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "jcfg"),
        JUPYTER_DATA_DIR=str(tmp_path / "jdata"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "jrun"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "jws"),
        PYTHONUNBUFFERED="1",
    )
    (tmp_path / "run").mkdir()
    lab_port = free_port()
    # --port 0: any port; the demo starts the server and must not call it "reused"
    cmd = [sys.executable, "-m", "livewidget", "demo", "--no-browser", "--port", "0"]
    cmd += ["--lab-port", str(lab_port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out: list[str] = []
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, out), daemon=True)
    reader.start()
    family: list[int] = []
    daemon = 0
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            match = re.search(r"open (http://127\.0\.0\.1:\d+/lab\S*)", "".join(out))
            url = match.group(1) if match else None
            time.sleep(0.2)
        assert url, f"no URL printed; output:\n{''.join(out)}"
        assert url.startswith(f"http://127.0.0.1:{lab_port}/")
        assert "reusing" not in "".join(out), "".join(out)
        token = url.split("token=")[1]
        with urllib.request.urlopen(
            f"http://127.0.0.1:{lab_port}/api/status?token={token}", timeout=10
        ) as resp:
            assert resp.status == 200
        # the embedded server daemon (started by the demo, so its child until it exits) keeps running
        daemon = int(json.loads((tmp_path / "run" / "server.json").read_text())["pid"])
        family = [p for p in _children(proc.pid) if p != daemon]
        assert len(family) >= 4, family  # 3 traffic processes (+ pool workers) and JupyterLab

        # traffic: training points, worker progress, chat messages
        for channel, event in (("demo-train", "point"), ("demo-progress", "progress")):
            tail = subprocess.run(
                [sys.executable, "-m", "livewidget", "tail", channel, "--events", event, *TAIL],
                env=env,
                capture_output=True,
                text=True,
                timeout=90,
            )
            assert tail.returncode == 0, tail.stderr
            assert len(tail.stdout.strip().splitlines()) == 2

        # the demo notebook in a browser, with live traffic (the README's first screenshot)
        context = browser.new_context(viewport={"width": 1280, "height": 1500})
        try:
            page = context.new_page()
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.wait_for_function(
                f"""(path) => {{
                    const panel = ({_PANEL_JS})(path);
                    return panel?.sessionContext?.session?.kernel?.status === 'idle';
                }}""",
                arg="00_live_demo.ipynb",
                timeout=90_000,
                polling=200,
            )
            page.evaluate("() => { void window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            page.locator(".lw-chat").first.wait_for(state="visible", timeout=60_000)
            page.wait_for_timeout(5000)  # traffic accumulates
            # JupyterLab's "get notified about official Jupyter news?" toast would cover the chat
            toasts = page.locator(".Toastify__toast")
            assert toasts.count() == 0, toasts.all_inner_texts()
            # the bot is in the room's online list, and has greeted
            chat = page.locator(".lw-chat").first
            chat.get_by_text("I am the demo bot").first.wait_for(state="visible", timeout=30_000)
            page.wait_for_function(
                "() => (document.querySelector('.lw-chat-online')?.title || '').includes('Demo bot')",
                timeout=30_000,
            )
            page.evaluate("() => document.querySelector('.lw-chart')?.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(1000)
            page.screenshot(path=str(ARTIFACTS / "demo-lab.png"))
            docs_image(request.config, ARTIFACTS / "demo-lab.png", "demo-lab.png")
        finally:
            context.close()
    finally:
        family = sorted((set(family) | set(_children(proc.pid))) - {daemon})
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()
        (ARTIFACTS / "demo-output.log").write_text("".join(out))
        left = [p for p in family if _alive(p)]
        _kill_by_pid(left)
        daemon_survived = daemon > 0 and _alive(daemon)
        stop = [sys.executable, "-m", "livewidget", "server", "stop"]
        subprocess.run(stop, env=env, timeout=30, check=False, capture_output=True)
    assert proc.returncode == 0, "".join(out)
    assert "stopped" in "".join(out)
    assert left == [], f"processes left after SIGINT: {left}"
    assert daemon_survived, "the embedded server should keep running after the demo"

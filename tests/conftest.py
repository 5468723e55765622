"""Suite-wide settings."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# scripts/setup.sh links Node.js into the venv when the system's is missing or older than 20: the tests
# (run with the venv's python, maybe not activated) find it first, as test.sh does.
_VENV_BIN = Path(sys.executable).parent
if (_VENV_BIN / "node").exists():
    os.environ["PATH"] = f"{_VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--refresh-docs-images",
        action="store_true",
        default=False,
        help="let the notebook e2e tests replace the README's screenshots in docs/images/ "
        "(scripts/refresh-docs-images.sh); without it tests write only to test-artifacts/",
    )


# `livewidget serve` keeps channel history in the user's data folder by default: servers started by
# tests (subprocesses inherit this) keep theirs in a folder of this run, removed at exit.
if "LIVEWIDGET_DATA_DIR" not in os.environ:
    _data = tempfile.mkdtemp(prefix="livewidget-test-data-")
    os.environ["LIVEWIDGET_DATA_DIR"] = _data
    atexit.register(shutil.rmtree, _data, ignore_errors=True)


def _stop_embedded_servers(folder: str) -> None:
    """Stop every embedded server whose record is in ``folder`` (or a hub user's folder in it)."""
    from livewidget import _embedded

    saved = {k: os.environ.get(k) for k in ("LIVEWIDGET_RUNTIME_DIR", "JUPYTERHUB_USER")}
    try:
        os.environ.pop("JUPYTERHUB_USER", None)
        for record in Path(folder).rglob("server.json"):
            os.environ["LIVEWIDGET_RUNTIME_DIR"] = str(record.parent)
            _embedded.stop_embedded()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    shutil.rmtree(folder, ignore_errors=True)


# Likewise the embedded server: a test that lets the kernel side start it (publish() with nothing
# configured, connect(embedded=True) to reset settings) starts it in a runtime folder of this run, not
# in the user's own (~/.cache/livewidget/run), and it is stopped at exit instead of outliving the run.
if "LIVEWIDGET_RUNTIME_DIR" not in os.environ:
    _run = tempfile.mkdtemp(prefix="livewidget-test-run-")
    os.environ["LIVEWIDGET_RUNTIME_DIR"] = _run
    atexit.register(_stop_embedded_servers, _run)  # runs before the data folder's removal (LIFO)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the browser end-to-end tests last.

    Their session fixtures drive Chromium through Playwright's sync API, which keeps an asyncio loop
    running in the main thread until the session ends; pytest-asyncio tests collected after them would
    find that loop and fail ("Runner.run() cannot be called from a running event loop").
    """
    items.sort(key=lambda item: "/tests/e2e/" in str(item.path))

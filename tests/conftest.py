"""Suite-wide settings."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the browser end-to-end tests last.

    Their session fixtures drive Chromium through Playwright's sync API, which keeps an asyncio loop
    running in the main thread until the session ends; pytest-asyncio tests collected after them would
    find that loop and fail ("Runner.run() cannot be called from a running event loop").
    """
    items.sort(key=lambda item: "/tests/e2e/" in str(item.path))

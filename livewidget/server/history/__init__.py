"""Storage drivers for channel history: memory (:class:`MemoryHistory`), SQLite (:class:`SQLiteHistory`),
or Redis with the Redis adapter (:class:`RedisHistory`)."""

from __future__ import annotations

import os
from pathlib import Path

from .base import DEFAULT_MAX_MEMORY, HistoryDriver
from .memory import MemoryHistory
from .redis import RedisHistory
from .sqlite import SQLiteHistory

__all__ = [
    "DEFAULT_MAX_MEMORY",
    "HistoryDriver",
    "MemoryHistory",
    "RedisHistory",
    "SQLiteHistory",
    "data_dir",
]


def data_dir() -> Path:
    """The user's data folder: ``$LIVEWIDGET_DATA_DIR``, else ``$XDG_DATA_HOME/livewidget``, else
    ``~/.local/share/livewidget`` (XDG Base Directory specification)."""
    base = os.environ.get("LIVEWIDGET_DATA_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "livewidget"

"""The embedded Pusher-compatible server: a lean asyncio transport over :mod:`livewidget.protocol`.

- :class:`PusherServer`: the server itself, to run inside an event loop
- :class:`LocalServer`: the same in a background thread, as a context manager (port 0 by default)
- :class:`AppConfig`, :class:`ServerLimits`: per-app settings, per-connection limits
- :class:`MemoryHistory`, :class:`SQLiteHistory`: where channel history is kept (``history=``)
"""

from ..protocol.config import AppConfig, ServerLimits
from .app import PusherServer
from .history import MemoryHistory, SQLiteHistory
from .runner import LocalServer, new_app, run_forever

__all__ = [
    "AppConfig",
    "LocalServer",
    "MemoryHistory",
    "PusherServer",
    "SQLiteHistory",
    "ServerLimits",
    "new_app",
    "run_forever",
]

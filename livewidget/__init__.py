"""livewidget: realtime Jupyter widgets over the Pusher Channels protocol.

- widgets: :class:`Chat`, :class:`Feed`, :class:`LiveChart`, :class:`ProgressBoard`
- publishing: :func:`publish`, :class:`Publisher`, :class:`progress` (tqdm that publishes),
  :func:`points` (a :class:`ChartPublisher` packing points for a :class:`LiveChart`),
  :class:`LogHandler` (logging records for a :class:`Feed`)
- callbacks for Keras, XGBoost, LightGBM and Optuna: :mod:`livewidget.integrations`
- settings: :func:`connect`, :func:`connection`
- the embedded Pusher-compatible server: :mod:`livewidget.server`
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._config import Settings, connect, connection
from .exceptions import (
    ConfigurationError,
    LivewidgetError,
    ProtocolError,
    RestError,
    ServerError,
    SubscriptionError,
)

__version__ = "0.1.0"

__all__ = [
    "ChartPublisher",
    "Chat",
    "ConfigurationError",
    "Feed",
    "LiveChart",
    "LivewidgetError",
    "LogHandler",
    "ProgressBoard",
    "ProtocolError",
    "PublishError",
    "Publisher",
    "RestError",
    "ServerError",
    "Settings",
    "SubscriptionError",
    "__version__",
    "connect",
    "connection",
    "points",
    "progress",
    "publish",
]

if TYPE_CHECKING:
    from ._logging import LogHandler
    from ._points import ChartPublisher, points
    from ._progress import progress
    from ._publish import Publisher, PublishError, publish
    from .widgets import Chat, Feed, LiveChart, ProgressBoard

_LAZY = {
    "Chat": "widgets",
    "Feed": "widgets",
    "LiveChart": "widgets",
    "LogHandler": "_logging",
    "ChartPublisher": "_points",
    "points": "_points",
    "ProgressBoard": "widgets",
    "progress": "_progress",
    "publish": "_publish",
    "Publisher": "_publish",
    "PublishError": "_publish",
}


def __getattr__(name: str) -> Any:
    # Widgets and publishing import anywidget, pandas and pusher: only when first used, so that
    # `livewidget serve` and scripts that only publish start fast.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'livewidget' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value

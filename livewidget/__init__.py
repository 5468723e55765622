"""livewidget: realtime Jupyter widgets over the Pusher Channels protocol.

The embedded Pusher-compatible server lives in :mod:`livewidget.server`.
"""

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
    "ConfigurationError",
    "LivewidgetError",
    "ProtocolError",
    "RestError",
    "ServerError",
    "SubscriptionError",
    "__version__",
]

"""The one error tree of livewidget.

::

    LivewidgetError
    ├── ConfigurationError        bad settings: a missing key, an unreadable config file, a bad URL
    ├── ProtocolError (Sans-I/O)  a Pusher protocol rule was broken; carries ``code`` for ``pusher:error``
    │   └── SubscriptionError     a subscription was refused (bad name, bad signature, limit reached)
    ├── RestError (Sans-I/O)      a REST request was refused; carries the HTTP ``status``
    └── ServerError               the embedded server could not start or stopped unexpectedly

Protocol-level errors are raised inside :mod:`livewidget.protocol` and translated into frames or HTTP
answers at the transport boundary; they never escape the server as exceptions.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "LivewidgetError",
    "ProtocolError",
    "RestError",
    "ServerError",
    "SubscriptionError",
]


class LivewidgetError(Exception):
    """Base class of every error raised by livewidget."""


class ConfigurationError(LivewidgetError, ValueError):
    """Settings are missing or invalid; the message names the setting and how to fix it."""


class ProtocolError(LivewidgetError):
    """A client broke a rule of the Pusher protocol.

    ``code`` is the Pusher error code sent in ``pusher:error`` (``None`` for the hosted service's
    code-less errors, e.g. a bad subscription signature).
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class SubscriptionError(ProtocolError):
    """A ``pusher:subscribe`` was refused.

    ``kind`` is the short type sent in ``pusher:subscription_error`` (``AuthError``,
    ``InvalidChannel``, ``LimitReached``) and ``status`` its HTTP-like status.
    """

    def __init__(self, message: str, kind: str = "AuthError", status: int = 401) -> None:
        super().__init__(message, None)
        self.kind = kind
        self.status = status


class RestError(LivewidgetError):
    """A REST API request was refused with HTTP ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ServerError(LivewidgetError, RuntimeError):
    """The embedded server could not start, or stopped unexpectedly."""

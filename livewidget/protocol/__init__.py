"""The Pusher Channels protocol, sans-I/O: standard library only, time passed in.

- :mod:`.messages`: frames, close codes, and the actions the core returns to transports
- :mod:`.channels`: channel-name rules and kinds
- :mod:`.signatures`: channel, sign-in, REST and webhook HMACs
- :mod:`.config`: per-app settings and limits
- :mod:`.hub`: one app's connections, channels, presence, users and cache
- :mod:`.history`: channel history: positions, bounded logs, rewind and recovery (injected into the hub)
- :mod:`.rest`: the REST API
- :mod:`._json`: JSON from the network, with a bound on nesting depth (``loads_bounded``)
"""

from .config import AppConfig
from .hub import Channel, Connection, ConnectionState, Hub
from .messages import Action, Close, CloseCode, Send, Webhook
from .rest import Apps, RestResponse, handle_rest

__all__ = [
    "Action",
    "AppConfig",
    "Apps",
    "Channel",
    "Close",
    "CloseCode",
    "Connection",
    "ConnectionState",
    "Hub",
    "RestResponse",
    "Send",
    "Webhook",
    "handle_rest",
]

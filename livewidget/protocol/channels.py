"""Channel names and their kinds (reference §1.12, §1.8, §1.9, §1.7)."""

from __future__ import annotations

import enum
import re

__all__ = [
    "USER_CHANNEL_PREFIX",
    "ChannelKind",
    "channel_kind",
    "is_cache",
    "is_valid_channel_name",
    "is_valid_socket_id",
    "needs_auth",
]

# using_channels/channels.md: names are [-a-zA-Z0-9_=@,.;]; '#' is reserved for server-to-user.
_NAME_RE = re.compile(r"\A[-a-zA-Z0-9_=@,.;]+\Z")
# pusher-http-python util.py socket_id_re
_SOCKET_ID_RE = re.compile(r"\A\d+\.\d+\Z")
USER_CHANNEL_PREFIX = "#server-to-user-"


class ChannelKind(enum.Enum):
    """What a channel name's prefix makes of it."""

    PUBLIC = "public"
    PRIVATE = "private"
    ENCRYPTED = "encrypted"  # private-encrypted-: relayed, never decrypted (reference §1.9)
    PRESENCE = "presence"
    USER = "user"  # #server-to-user-<id>, only for that signed-in user (reference §1.7)


def channel_kind(name: str) -> ChannelKind:
    """The kind of channel ``name`` is, from its prefix (cache- is orthogonal: see :func:`is_cache`)."""
    if name.startswith("private-encrypted-"):
        return ChannelKind.ENCRYPTED
    if name.startswith("private-"):
        return ChannelKind.PRIVATE
    if name.startswith("presence-"):
        return ChannelKind.PRESENCE
    if name.startswith(USER_CHANNEL_PREFIX):
        return ChannelKind.USER
    return ChannelKind.PUBLIC


def is_cache(name: str) -> bool:
    """Whether ``name`` is a cache channel (cache-, private-cache-, private-encrypted-cache-,
    presence-cache-; using_channels/cache-channels.md)."""
    return name.startswith(("cache-", "private-cache-", "private-encrypted-cache-", "presence-cache-"))


def needs_auth(kind: ChannelKind) -> bool:
    """Whether subscribing needs a signature."""
    return kind in (ChannelKind.PRIVATE, ChannelKind.ENCRYPTED, ChannelKind.PRESENCE)


def is_valid_channel_name(name: object, max_length: int = 200) -> bool:
    """Whether ``name`` is a well-formed channel name of at most ``max_length`` characters."""
    if not isinstance(name, str) or not name or len(name) > max_length:
        return False
    if name.startswith(USER_CHANNEL_PREFIX):
        rest = name[len(USER_CHANNEL_PREFIX) :]
        return bool(rest) and _NAME_RE.match(rest) is not None
    return _NAME_RE.match(name) is not None


def is_valid_socket_id(value: object) -> bool:
    """Whether ``value`` looks like a socket id (``digits.digits``)."""
    return isinstance(value, str) and _SOCKET_ID_RE.match(value) is not None

"""Settings and limits of the embedded server: per app (:class:`AppConfig`) and per connection
(:class:`ServerLimits`).

App defaults follow the hosted Pusher Channels limits (reference §3) so that code that works here works
there; each limit is configurable. Connection limits bound what one socket can cost the server before it
has shown it is a Pusher client at all (issue 14).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from ..exceptions import ConfigurationError
from .history import HistoryLimits

__all__ = ["AppConfig", "ServerLimits"]

_APP_ID_RE = re.compile(r"\A[0-9]+\Z")
_TOKEN_RE = re.compile(r"\A[A-Za-z0-9_.\-]+\Z")


@dataclass(frozen=True)
class AppConfig:
    """One Pusher app served by the embedded server.

    Sizes are in bytes, times in seconds. ``None`` for a limit disables it.
    """

    app_id: str
    key: str
    secret: str
    enabled: bool = True

    # Features
    client_events: bool = True  # hosted Pusher: off by default; the embedded server: on (issue #2)
    subscription_count: bool = False  # opt-in pusher_internal:subscription_count (reference §1.10)
    webhook_urls: tuple[str, ...] = ()

    # Timeouts
    activity_timeout: int = 120  # seconds of silence before either side pings (reference §1.3)
    pong_timeout: float = 30.0  # seconds to wait for a pong before closing 4201
    cache_ttl: float = 30 * 60  # cache channels keep their last event this long (reference §1.8)
    webhook_delay: float = 3.0  # delay before channel_vacated / member_removed (reference §2.3)

    # Limits (hosted defaults, reference §3)
    max_data_size: int | None = 10 * 1024  # event `data`, REST and client events -> HTTP 413
    max_channels_per_trigger: int = 100
    max_batch_size: int = 10
    max_channel_name_length: int = 200  # 164 on hosted Pusher; the Python SDK allows 200
    max_event_name_length: int = 200
    max_presence_members: int | None = 100
    max_presence_user_info: int | None = 1024
    max_user_id_length: int = 128
    max_client_events_per_second: float | None = 10
    max_watchlist: int = 100
    max_frame_size: int = 256 * 1024  # largest WebSocket frame accepted from a client
    max_send_buffer: int = 4 * 1024 * 1024  # unread bytes queued to one client before 4100
    max_request_size: int = 1024 * 1024  # largest REST body
    max_connections: int | None = None  # over it: close 4004

    # Channel history (protocol/history.py): kept per channel, the newest events; notebook-sized
    history_max_events: int = 1000  # 0: positions only, no history
    history_max_age: float = 24 * 3600.0
    history_max_bytes: int = 1024 * 1024
    history_max_rewind: int = 1000  # the largest rewind count a subscriber may ask for
    # (channel-name prefix, limits), the longest matching prefix wins; in a config file a table
    # {"chat-": {"max_events": 200}, ...}
    history_overrides: tuple[tuple[str, HistoryLimits], ...] = ()

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, f.type, getattr(self, f.name))
        if not _APP_ID_RE.match(self.app_id):
            raise ConfigurationError(
                f"app_id must be all digits (the official pusher SDK requires it), got {self.app_id!r}"
            )
        for name in ("key", "secret"):
            value = getattr(self, name)
            if not value or not _TOKEN_RE.match(value):
                raise ConfigurationError(
                    f"{name} must be a non-empty string of letters, digits, '_', '-' or '.'"
                )
        if self.activity_timeout <= 0:
            raise ConfigurationError("activity_timeout must be a positive number of seconds")
        try:
            self.history_limits()
        except ValueError as exc:
            raise ConfigurationError(f"history_{exc}") from None
        overrides: tuple[object, ...] = self.history_overrides
        for item in overrides:
            if (
                not isinstance(item, tuple)
                or len(item) != 2
                or not isinstance(item[0], str)
                or not isinstance(item[1], HistoryLimits)
            ):
                raise ConfigurationError(
                    f"history_overrides must be (prefix, HistoryLimits) pairs, got {item!r}"
                )
        if self.history_max_rewind < 0:
            raise ConfigurationError("history_max_rewind must be >= 0")

    def history_limits(self) -> HistoryLimits:
        """The default limits of this app's channel histories."""
        return HistoryLimits(self.history_max_events, self.history_max_age, self.history_max_bytes)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> AppConfig:
        """Build from a config-file mapping (``id``/``app_id``, ``key``, ``secret``, limits...)."""
        data = dict(data)
        if "id" in data and "app_id" not in data:
            data["app_id"] = data.pop("id")
        if "webhooks" in data and "webhook_urls" not in data:
            data["webhook_urls"] = data.pop("webhooks")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown app setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        for required in ("app_id", "key", "secret"):
            if required not in data:
                raise ConfigurationError(f"an app in the config file has no {required!r}")
        data["app_id"] = str(data["app_id"])
        if "webhook_urls" in data:
            urls = data["webhook_urls"]
            data["webhook_urls"] = (urls,) if isinstance(urls, str) else tuple(urls)
        if "history_overrides" in data:
            base = {
                k[8:]: v
                for k, v in data.items()
                if k in ("history_max_events", "history_max_age", "history_max_bytes")
            }
            try:
                defaults = HistoryLimits.from_mapping(base)
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"history_{exc}") from None
            data["history_overrides"] = _history_overrides(data["history_overrides"], defaults)
        return cls(**data)

    @property
    def masked_secret(self) -> str:
        """The secret with all but its first four characters hidden, for logs."""
        return self.secret[:4] + "…" if len(self.secret) > 4 else "…"


def _history_overrides(raw: object, defaults: HistoryLimits) -> tuple[tuple[str, HistoryLimits], ...]:
    """Per-prefix limits from a config table; what a prefix leaves out is the app's default."""
    if not isinstance(raw, dict):
        raise ConfigurationError(
            'history_overrides must be a table of channel prefixes, e.g. {"chat-": {"max_events": 200}}'
        )
    out = []
    for prefix, table in raw.items():
        if not isinstance(table, dict):
            raise ConfigurationError(f"history_overrides[{prefix!r}] must be a table of limits")
        try:
            out.append((str(prefix), HistoryLimits.from_mapping(table, defaults)))
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"history_overrides[{prefix!r}]: {exc}") from None
    return tuple(out)


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "tuple[str, ...]": (tuple,),
    "tuple[tuple[str, HistoryLimits], ...]": (tuple,),  # items checked in __post_init__
}


def _check_type(name: str, annotation: object, value: object) -> None:
    """Settings come from config files too: a wrong type is named, not discovered at run time."""
    text = str(annotation)
    optional = text.endswith(" | None")
    base = text.removesuffix(" | None")
    if value is None and optional:
        return
    allowed = _TYPES.get(base)
    if allowed is None:  # pragma: no cover - a new field type must be added to _TYPES
        raise TypeError(f"no type check for {name}: {text}")
    wrong = not isinstance(value, allowed) or (base in ("int", "float") and isinstance(value, bool))
    if not wrong and base == "tuple[str, ...]":
        wrong = not all(isinstance(v, str) for v in value)  # type: ignore[attr-defined]
    if wrong:
        kind = {"tuple[str, ...]": "a list of strings", "float": "a number", "int": "an integer"}.get(
            base, f"a {base}"
        )
        got = f"type {type(value).__name__}" if name == "secret" else repr(value)  # never echo a secret
        raise ConfigurationError(f"{name} must be {kind}{' or null' if optional else ''}, got {got}")


@dataclass(frozen=True, kw_only=True)
class ServerLimits:
    """What one connection may cost the server, whatever app it is for (issue 14).

    Times are in seconds and sizes in bytes; ``None`` disables a limit. Per-app limits (the largest
    frame, the send buffer of a WebSocket, the REST body) are in :class:`AppConfig`; the send buffer
    (``max_send_buffer``) is one write budget per connection: events, pongs and responses all count.

    Timeouts
        ``first_byte_timeout`` (10): a new connection that sends nothing in this time is closed.
        ``request_timeout`` (15): a request's head and body must arrive within this time of its first
        byte (empty lines before it included), else 408 and close: a deadline, not a per-byte timeout.
        ``keepalive_timeout`` (75): an HTTP connection idle between requests is closed after this.

    Limits
        ``max_head_size`` (16 KiB): request line and header fields (431 over it).
        ``max_read_buffer`` (256 KiB): bytes received from an HTTP connection and not yet parsed;
        reading from it pauses over this (pipelined requests wait for their answers to be read).
        ``max_fragments`` (1024): frames in one fragmented WebSocket message, empty ones included
        (close 4100 over it, like a message over the size cap).
        ``max_connections_per_ip`` (1024): open connections from one remote address; over it a new one
        gets 429 and is closed. ``max_connections_per_loopback_ip`` (65536) applies instead to
        127.0.0.0/8 and ::1, where a Jupyter server or a proxy brings every user's connections (the
        descriptor limit usually binds first there; see ``accept_backoff``).

    Running out of descriptors
        ``accept_backoff`` (0.5): when ``accept()`` fails with EMFILE/ENFILE and no idle connection
        can be shed, seconds before the accept loop tries again (no busy loop).

    Logs
        ``log_interval`` (10): at most one line per kind of event (a refused request, an error, an
        accept failure) per this many seconds; the others are counted in ``GET /stats``.
    """

    # Timeouts
    first_byte_timeout: float | None = 10.0
    request_timeout: float | None = 15.0
    keepalive_timeout: float | None = 75.0
    # Limits
    max_head_size: int = 16 * 1024
    max_read_buffer: int = 256 * 1024
    max_fragments: int = 1024
    max_connections_per_ip: int | None = 1024
    max_connections_per_loopback_ip: int | None = 65536
    # Running out of descriptors
    accept_backoff: float = 0.5
    # Logs
    log_interval: float = 10.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            _check_type(f.name, f.type, value)
            if value is not None and value <= 0:
                raise ConfigurationError(f"{f.name} must be positive (or null to disable), got {value!r}")

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> ServerLimits:
        """Build from a config file's ``[limits]`` table."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown server limit(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**data)

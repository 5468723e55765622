"""The REST API, sans-I/O: request in (method, path, query, raw body, now), answer and actions out.

Endpoints and rules: library_auth_reference/rest-api.md (reference §2). Every refusal is a
:class:`~livewidget.exceptions.RestError` turned into ``{"error": message}`` with its status.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..exceptions import RestError
from . import signatures
from ._json import JSONDepthError, loads_bounded
from .channels import ChannelKind, channel_kind, is_cache, is_valid_channel_name, is_valid_socket_id
from .config import AppConfig
from .history import History, Rewind, RewindError, parse_last_event_id, parse_rewind
from .hub import Hub, _new_socket_id
from .messages import Action, dumps

__all__ = [
    "Apps",
    "ChannelSnapshot",
    "ChannelView",
    "RestRequest",
    "RestResponse",
    "answer",
    "handle_rest",
    "is_stream",
    "route",
    "route_stream",
]

TIMESTAMP_WINDOW = 600  # seconds either side of the server's clock (rest-api.md *Authentication*)

# A path prefix (a proxy's, or jupyter-server-proxy's) is tolerated before /apps/ or /users/.
_APPS_RE = re.compile(r"\A(?:.*?)(/apps/(?P<app_id>[^/]+)(?P<rest>/.*)?)\Z")
_USERS_RE = re.compile(r"\A(?:.*?)(/users/(?P<user_id>[^/]+)/terminate_connections)\Z")


class Apps:
    """The apps one server serves, found by id (REST) or key (WebSocket, ``auth_key``).

    ``history`` makes each app's :class:`~.history.History` (None: no history for it).
    """

    def __init__(
        self,
        configs: Iterable[AppConfig],
        *,
        new_socket_id: Callable[[], str] = _new_socket_id,
        hub_class: type[Hub] = Hub,
        history: Callable[[AppConfig], History | None] | None = None,
    ) -> None:
        self.by_id: dict[str, Hub] = {}
        self.by_key: dict[str, Hub] = {}
        for config in configs:
            if config.app_id in self.by_id or config.key in self.by_key:
                raise ValueError(f"app id {config.app_id} or key {config.key} is configured twice")
            app_history = history(config) if history is not None else None
            hub = hub_class(config, new_socket_id=new_socket_id, history=app_history)
            self.by_id[config.app_id] = hub
            self.by_key[config.key] = hub
        if not self.by_id:
            raise ValueError("at least one app is needed")

    def __iter__(self) -> Any:
        return iter(self.by_id.values())


@dataclass
class RestResponse:
    """An answer: HTTP ``status``, a JSON ``body``, and what the transport must then do."""

    status: int
    body: dict[str, Any]
    actions: list[Action] = field(default_factory=list)
    hub: Hub | None = None


class ChannelView(Protocol):
    """What the REST queries read about an app's channels: this process's hub, or the whole cluster."""

    def channel_names(self) -> Iterable[str]:
        """The occupied channels."""

    def occupied(self, name: str) -> bool:
        """Whether ``name`` has a subscriber."""

    def subscription_count(self, name: str) -> int:
        """Connections subscribed to ``name``."""

    def user_count(self, name: str) -> int:
        """Distinct presence members of ``name``."""

    def user_ids(self, name: str) -> list[str]:
        """The presence members of ``name``."""


class _HubView:
    """One process's channels, read from its hub."""

    __slots__ = ("hub",)

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def channel_names(self) -> Iterable[str]:
        return self.hub.channels

    def occupied(self, name: str) -> bool:
        return name in self.hub.channels

    def subscription_count(self, name: str) -> int:
        return self.hub.subscription_count(name)

    def user_count(self, name: str) -> int:
        return self.hub.user_count(name)

    def user_ids(self, name: str) -> list[str]:
        channel = self.hub.channels.get(name)
        return list(channel.members) if channel is not None else []


@dataclass
class ChannelSnapshot:
    """A :class:`ChannelView` from figures read elsewhere (e.g. the cluster's shared state)."""

    subscriptions: Mapping[str, int]  # occupied channel -> subscribers
    user_counts: Mapping[str, int] = field(default_factory=dict)
    users: Mapping[str, list[str]] = field(default_factory=dict)

    def channel_names(self) -> Iterable[str]:
        return self.subscriptions

    def occupied(self, name: str) -> bool:
        return self.subscriptions.get(name, 0) > 0

    def subscription_count(self, name: str) -> int:
        return self.subscriptions.get(name, 0)

    def user_count(self, name: str) -> int:
        return self.user_counts.get(name, 0)

    def user_ids(self, name: str) -> list[str]:
        return self.users.get(name, [])


@dataclass
class RestRequest:
    """An authenticated, validated request to one endpoint of one app, not yet answered.

    ``endpoint`` is ``events``, ``batch_events``, ``channels``, ``channel``, ``users``, ``history``
    or ``terminate``. :meth:`wanted` says which channel figures answering it reads.
    """

    hub: Hub
    endpoint: str
    params: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)
    events: list[_Event] = field(default_factory=list)
    channel: str = ""  # the channel (channel, users) or the user id (terminate)
    info: list[str] = field(default_factory=list)

    def wanted(self) -> tuple[str, list[str], bool]:
        """``(kind, channels, user_counts)``: ``("list", [prefix], ...)`` for the channel list,
        ``("users", [channel], False)``, ``("counts", channels, user_counts)`` or ``("none", [], False)``."""
        if self.endpoint == "channels":
            return "list", [self.params.get("filter_by_prefix", "")], "user_count" in self.info
        if self.endpoint == "users":
            return "users", [self.channel], False
        if self.endpoint == "channel":
            return "counts", [self.channel], "user_count" in self.info
        if self.endpoint in ("events", "batch_events") and any(e.info for e in self.events):
            names = list(dict.fromkeys(ch for e in self.events if e.info for ch in e.channels))
            return "counts", names, any("user_count" in e.info for e in self.events)
        return "none", [], False


def handle_rest(
    apps: Apps,
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    body: bytes,
    now: float,
    raw_path: str | None = None,
) -> RestResponse:
    """Answer one REST request. Never raises: errors come back as 4xx responses."""
    try:
        request = route(apps, method, path, query, body, now, raw_path)
        return answer(request, _HubView(request.hub), now)
    except RestError as exc:
        return RestResponse(exc.status, {"error": exc.message})


def route(
    apps: Apps,
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    body: bytes,
    now: float,
    raw_path: str | None = None,
) -> RestRequest:
    """Authenticate and validate a request; raises :class:`RestError` (4xx) when it is refused."""
    method = method.upper()
    raw_path = raw_path or path
    params = dict(query)
    m_apps = _APPS_RE.match(path)
    m_users = _USERS_RE.match(path) if m_apps is None else None
    if m_apps is not None:
        app_id = m_apps["app_id"]
        hub = apps.by_id.get(app_id)
        if hub is None:
            raise RestError(404, f"Unknown app id {app_id}")
        signed_path = m_apps.group(1)
    elif m_users is not None:
        # pusher-http-python's terminate_user_connections omits /apps/{id} (reference §2.1):
        # the app is the one whose key signed the request.
        key = params.get("auth_key", "")
        found = apps.by_key.get(key)
        if found is None:
            raise RestError(401, f"Unknown auth_key {key!r}")
        hub = found
        signed_path = m_users.group(1)
    else:
        raise RestError(404, f"No such endpoint: {method} {path}")

    _authenticate(hub.config, method, [path, raw_path, signed_path], query, params, body, now)
    if not hub.config.enabled:
        raise RestError(403, "App is disabled")

    if m_users is not None:
        _expect(method, "POST")
        return RestRequest(hub, "terminate", params, channel=m_users["user_id"])

    assert m_apps is not None
    rest = (m_apps["rest"] or "/").rstrip("/")
    if rest == "/events":
        _expect(method, "POST")
        event = _parse_event(hub, _json_body(body), "", single=False)
        return RestRequest(hub, "events", params, events=[event])
    if rest == "/batch_events":
        _expect(method, "POST")
        return RestRequest(hub, "batch_events", params, events=_parse_batch(hub, _json_body(body)))
    if rest == "/channels":
        _expect(method, "GET")
        return RestRequest(hub, "channels", params, info=_channels_attrs(params))
    m = re.fullmatch(r"/channels/([^/]+)(/users|/events)?", rest)
    if m is not None:
        _expect(method, "GET")
        name = m[1]
        if not is_valid_channel_name(name, hub.config.max_channel_name_length):
            raise RestError(400, f"Invalid channel name {name!r}")
        if m[2] == "/events":
            return RestRequest(hub, "history", params, channel=name)
        if m[2]:
            if channel_kind(name) is not ChannelKind.PRESENCE:
                raise RestError(400, "Users may only be listed for presence channels")
            return RestRequest(hub, "users", params, channel=name)
        return RestRequest(hub, "channel", params, channel=name, info=_channel_attrs(name, params))
    m = re.fullmatch(r"/users/([^/]+)/terminate_connections", rest)
    if m is not None:
        _expect(method, "POST")
        return RestRequest(hub, "terminate", params, channel=m[1])
    raise RestError(404, f"No such endpoint: {method} {path}")


def answer(request: RestRequest, view: ChannelView, now: float) -> RestResponse:
    """Answer a routed request, reading channel figures from ``view``; the actions come with it."""
    hub = request.hub
    endpoint = request.endpoint
    if endpoint == "terminate":
        return RestResponse(200, {}, hub.terminate_user(request.channel), hub)
    if endpoint == "events":
        return _events(hub, request.events[0], view, now)
    if endpoint == "batch_events":
        return _batch(hub, request.events, view, now)
    if endpoint == "channels":
        return _channels(hub, request.params, request.info, view)
    if endpoint == "users":
        return _users(hub, request.channel, view)
    if endpoint == "history":
        return _history(hub, request.channel, request.params, now)
    return _channel(hub, request.channel, request.info, view, now)


def _expect(method: str, allowed: str) -> None:
    if method != allowed:
        raise RestError(405, f"Method {method} not allowed here; use {allowed}")


def _authenticate(
    config: AppConfig,
    method: str,
    paths: list[str],
    query: Sequence[tuple[str, str]],
    params: dict[str, str],
    body: bytes,
    now: float,
) -> None:
    """Check a request's signature per rest-api.md *Authentication* (reference §2.2)."""
    for required in ("auth_key", "auth_timestamp", "auth_signature"):
        if required not in params:
            raise RestError(401, f"Missing {required}: sign the request (rest-api.md)")
    if params["auth_key"] != config.key:
        raise RestError(401, f"Unknown auth_key {params['auth_key']!r} for app {config.app_id}")
    if params.get("auth_version", "1.0") != "1.0":
        raise RestError(401, "Unsupported auth_version; use 1.0")
    try:
        timestamp = int(params["auth_timestamp"])
    except ValueError:
        raise RestError(401, "auth_timestamp must be an integer (unix seconds)") from None
    if abs(now - timestamp) > TIMESTAMP_WINDOW:
        raise RestError(
            401,
            f"Timestamp expired: given timestamp ({timestamp}) not within {TIMESTAMP_WINDOW}s "
            f"of server time ({int(now)}); check the clock",
        )
    # body_md5 is recomputed whenever the body is non-empty or it was sent (GET included: the
    # Python SDK sends the MD5 of the empty body), and must match (poxa valid_body?).
    if body or "body_md5" in params:
        actual = signatures.body_md5(body)
        if params.get("body_md5") != actual:
            raise RestError(401, "body_md5 does not match the MD5 of the request body")
    given = params["auth_signature"]
    pairs = [(k, v) for k, v in query if k != "auth_signature"]
    first = None
    for path in dict.fromkeys(paths):
        to_sign = signatures.rest_string_to_sign(method, path, pairs)
        if signatures.verify_auth(signatures.hmac_hex(config.secret, to_sign), given):
            return
        first = first or to_sign
    raise RestError(
        401,
        "Invalid signature: you should have sent HmacSHA256Hex("
        f"{first!r}, your_secret_key), but you sent {given!r}",
    )


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        parsed = loads_bounded(body or b"null")
    except JSONDepthError as exc:  # issue 14 item 7: was a RecursionError, answered 500
        raise RestError(400, f"Request body is not valid JSON: {exc.message}") from None
    except ValueError:
        raise RestError(400, "Request body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise RestError(400, "Request body must be a JSON object")
    return parsed


@dataclass
class _Event:
    name: str
    data: str
    channels: list[str]
    socket_id: str | None
    info: list[str]


def _parse_event(hub: Hub, raw: object, where: str, single: bool) -> _Event:
    cfg = hub.config
    if not isinstance(raw, dict):
        raise RestError(400, f"{where}must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise RestError(400, f"{where}'name' must be a non-empty string")
    if len(name) > cfg.max_event_name_length:
        raise RestError(400, f"{where}event name longer than {cfg.max_event_name_length} characters")
    if "data" not in raw:
        raise RestError(400, f"{where}'data' is required (a string, usually JSON)")
    data = raw["data"]
    # The SDKs send a string; anything else is accepted and JSON-encoded for the clients.
    text = data if isinstance(data, str) else dumps(data)
    if cfg.max_data_size is not None and len(text.encode()) > cfg.max_data_size:
        raise RestError(
            413, f"{where}event data is {len(text.encode())} bytes; the limit is {cfg.max_data_size}"
        )
    channels: Any
    if single:
        channel = raw.get("channel")
        channels = [channel] if channel is not None else []
    else:
        channels = raw.get("channels")
        if channels is None and "channel" in raw:
            channels = [raw["channel"]]
    if not isinstance(channels, list) or not channels:
        raise RestError(400, f"{where}'channels' must be a non-empty list of channel names")
    if len(channels) > cfg.max_channels_per_trigger:
        raise RestError(
            400,
            f"{where}{len(channels)} channels; at most {cfg.max_channels_per_trigger} per trigger",
        )
    for ch in channels:
        if not is_valid_channel_name(ch, cfg.max_channel_name_length):
            raise RestError(400, f"{where}invalid channel name {ch!r}")
    if len(channels) > 1 and any(channel_kind(c) is ChannelKind.ENCRYPTED for c in channels):
        raise RestError(400, f"{where}cannot trigger on several channels when one is encrypted")
    socket_id = raw.get("socket_id")
    if socket_id is not None and not is_valid_socket_id(socket_id):
        raise RestError(400, f"{where}invalid socket_id {socket_id!r}")
    info = raw.get("info") or ""
    if not isinstance(info, str):
        raise RestError(400, f"{where}'info' must be a comma-separated string")
    attrs = [a for a in info.split(",") if a]
    for a in attrs:
        if a not in ("user_count", "subscription_count"):
            raise RestError(400, f"{where}unknown info attribute {a!r}")
    return _Event(name, text, list(dict.fromkeys(channels)), socket_id, attrs)


def _event_info(view: ChannelView, event: _Event) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for ch in event.channels:
        attrs: dict[str, int] = {}
        if "user_count" in event.info and channel_kind(ch) is ChannelKind.PRESENCE:
            attrs["user_count"] = view.user_count(ch)
        if "subscription_count" in event.info:
            attrs["subscription_count"] = view.subscription_count(ch)
        out[ch] = attrs
    return out


def _events(hub: Hub, event: _Event, view: ChannelView, now: float) -> RestResponse:
    actions = hub.trigger(event.name, event.data, event.channels, now, event.socket_id)
    body: dict[str, Any] = {"channels": _event_info(view, event)} if event.info else {}
    return RestResponse(200, body, actions, hub)


def _parse_batch(hub: Hub, body: dict[str, Any]) -> list[_Event]:
    batch = body.get("batch")
    if not isinstance(batch, list) or not batch:
        raise RestError(400, "'batch' must be a non-empty list of events")
    if len(batch) > hub.config.max_batch_size:
        raise RestError(400, f"Batch of {len(batch)} events; at most {hub.config.max_batch_size} per batch")
    # Validate everything first: a bad batch delivers nothing.
    return [_parse_event(hub, raw, f"batch[{i}]: ", single=True) for i, raw in enumerate(batch)]


def _batch(hub: Hub, events: list[_Event], view: ChannelView, now: float) -> RestResponse:
    actions: list[Action] = []
    for event in events:
        actions += hub.trigger(event.name, event.data, event.channels, now, event.socket_id)
    if any(e.info for e in events):
        body: dict[str, Any] = {
            "batch": [_event_info(view, e).get(e.channels[0], {}) if e.info else {} for e in events]
        }
    else:
        body = {}
    return RestResponse(200, body, actions, hub)


def _info_attrs(params: dict[str, str]) -> list[str]:
    return [a for a in params.get("info", "").split(",") if a]


def _channels_attrs(params: dict[str, str]) -> list[str]:
    prefix = params.get("filter_by_prefix", "")
    attrs = _info_attrs(params)
    for a in attrs:
        if a != "user_count":
            raise RestError(400, f"Unknown info attribute {a!r} for the channel list")
    if "user_count" in attrs and not prefix.startswith("presence-"):
        raise RestError(
            400,
            "user_count may only be requested for presence channels - please supply "
            "filter_by_prefix beginning with presence-",
        )
    return attrs


def _channel_attrs(name: str, params: dict[str, str]) -> list[str]:
    attrs = _info_attrs(params)
    for a in attrs:
        if a == "user_count":
            if channel_kind(name) is not ChannelKind.PRESENCE:
                raise RestError(400, "user_count may only be requested for presence channels")
        elif a == "cache":
            if not is_cache(name):
                raise RestError(400, "cache may only be requested for cache channels")
        elif a != "subscription_count":
            raise RestError(400, f"Unknown info attribute {a!r}")
    return attrs


def _channels(hub: Hub, params: dict[str, str], attrs: list[str], view: ChannelView) -> RestResponse:
    prefix = params.get("filter_by_prefix", "")
    out: dict[str, dict[str, int]] = {}
    for name in view.channel_names():
        if not name.startswith(prefix) or channel_kind(name) is ChannelKind.USER:
            continue
        out[name] = {"user_count": view.user_count(name)} if attrs else {}
    return RestResponse(200, {"channels": out}, [], hub)


def _channel(hub: Hub, name: str, attrs: list[str], view: ChannelView, now: float) -> RestResponse:
    out: dict[str, Any] = {"occupied": view.occupied(name)}
    for a in attrs:
        if a == "user_count":
            out["user_count"] = view.user_count(name)
        elif a == "subscription_count":
            out["subscription_count"] = view.subscription_count(name)
        else:  # cache: every process holds the same cache (the cluster delivers every event to each)
            cached = hub.cache_info(name, now)
            if cached is not None:
                out["cache"] = {"data": cached["data"], "ttl": cached["ttl"]}
    return RestResponse(200, out, [], hub)


def _users(hub: Hub, name: str, view: ChannelView) -> RestResponse:
    return RestResponse(200, {"users": [{"id": uid} for uid in view.user_ids(name)]}, [], hub)


# ------------------------------------------------------------------ channel history (livewidget)

HISTORY_MAX_LIMIT = 1000  # events per page (Ably's history API allows the same)
_DIRECTIONS = {"newest_first": True, "oldest_first": False, "backwards": True, "forwards": False}


def _int_param(params: dict[str, str], name: str, low: int, high: int | None = None) -> int | None:
    text = params.get(name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise RestError(400, f"{name} must be an integer, got {text!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise RestError(400, f"{name} must be {bound}, got {value}")
    return value


def _history(hub: Hub, name: str, params: dict[str, str], now: float) -> RestResponse:
    """``GET /apps/{id}/channels/{name}/events``: the channel's stored events, one page.

    ``limit`` (1-1000, default 100), ``before``/``after`` (serials, exclusive), ``start``/``end``
    (unix ms, inclusive), ``direction`` ``newest_first`` (default) or ``oldest_first``, and
    ``stream_id`` (410 if the channel's stream is no longer that one: the serials do not apply).
    """
    history = hub.history
    if history is None:
        raise RestError(501, "Channel history is not enabled on this server")
    limit = _int_param(params, "limit", 1, HISTORY_MAX_LIMIT) or 100
    before = _int_param(params, "before", 0)
    after = _int_param(params, "after", 0)
    start = _int_param(params, "start", 0)
    end = _int_param(params, "end", 0)
    direction = params.get("direction", "newest_first")
    if direction not in _DIRECTIONS:
        raise RestError(400, f"direction must be newest_first or oldest_first, got {direction!r}")
    stream_id = params.get("stream_id")
    events, position, first = history.query(
        name,
        now,
        limit=limit,
        before=before,
        after=after,
        start=start / 1000 if start is not None else None,
        end=end / 1000 if end is not None else None,
        newest_first=_DIRECTIONS[direction],
    )
    if stream_id is not None and (position is None or position.stream_id != stream_id):
        current = position.stream_id if position is not None else None
        raise RestError(
            410,
            f"stream_id {stream_id!r} of {name} is gone (its history was lost); "
            f"the stream is now {current!r}",
        )
    body: dict[str, Any] = {
        "channel": name,
        "stream_id": position.stream_id if position is not None else None,
        "serial": position.serial if position is not None else 0,
        "first_serial": first,
        "events": [e.as_json() for e in events],
    }
    return RestResponse(200, body, [], hub)


# ------------------------------------------------------------------ Server-Sent Events (livewidget)

_STREAM_RE = re.compile(r"\A(?:.*?)(/apps/(?P<app_id>[^/]+)/channels/(?P<channel>[^/]+)/stream)/?\Z")


def is_stream(method: str, path: str) -> bool:
    """Whether this is a request for a channel's event stream (``GET .../channels/{name}/stream``)."""
    return method == "GET" and path.endswith(("/stream", "/stream/")) and _STREAM_RE.match(path) is not None


def route_stream(
    apps: Apps,
    path: str,
    query: Sequence[tuple[str, str]],
    now: float,
    raw_path: str | None = None,
    last_event_id: str | None = None,
) -> tuple[Hub, str, Rewind | None]:
    """Authenticate a stream request: ``(hub, channel, what to replay first)``; raises :class:`RestError`.

    A public channel needs only ``?auth_key=KEY`` (what ``EventSource`` can send); any other channel a
    request signed like every REST call. ``Last-Event-ID`` (header, or the ``last_event_id`` parameter)
    resumes after that position; ``rewind`` (``10``, ``30s``) replays the last events first, or is the
    fallback when the position cannot be resumed from.
    """
    m = _STREAM_RE.match(path)
    if m is None:
        raise RestError(404, f"No such endpoint: GET {path}")
    hub = apps.by_id.get(m["app_id"])
    if hub is None:
        raise RestError(404, f"Unknown app id {m['app_id']}")
    params = dict(query)
    name = m["channel"]
    cfg = hub.config
    if not is_valid_channel_name(name, cfg.max_channel_name_length):
        raise RestError(400, f"Invalid channel name {name!r}")
    kind = channel_kind(name)
    if kind is ChannelKind.USER:
        raise RestError(400, "A user's #server-to-user channel cannot be streamed")
    if kind is ChannelKind.PUBLIC and "auth_signature" not in params:
        if params.get("auth_key") != cfg.key:
            raise RestError(401, "The stream of a public channel needs ?auth_key=<the app key>")
    else:
        _authenticate(cfg, "GET", [path, raw_path or path, m.group(1)], query, params, b"", now)
    if not cfg.enabled:
        raise RestError(403, "App is disabled")
    if hub.history is None:
        raise RestError(501, "Channel history is not enabled on this server (streams need it)")
    position = last_event_id or params.get("last_event_id")
    text = params.get("rewind")
    try:
        fallback = parse_rewind(text, hub.history.max_rewind) if text else None
        after = parse_last_event_id(position) if position else None
    except RewindError as exc:
        raise RestError(400, str(exc)) from None
    if after is None:
        return hub, name, fallback
    return (
        hub,
        name,
        Rewind(fallback.count if fallback else None, fallback.seconds if fallback else None, after),
    )

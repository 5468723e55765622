"""Connection settings: which Pusher-compatible server every widget and helper talks to.

One resolution order, used everywhere (issue #3):

1. explicit arguments (``Feed(..., key=..., host=...)``) or what :func:`connect` set for the process;
2. the environment: ``LIVEWIDGET_URL=http://KEY:SECRET@HOST:PORT/apps/APP_ID``, or the conventional
   ``PUSHER_APP_ID``, ``PUSHER_KEY``, ``PUSHER_SECRET``, ``PUSHER_CLUSTER``, ``PUSHER_HOST``,
   ``PUSHER_PORT``, ``PUSHER_USE_TLS``;
3. the embedded server (started on first use, shared by the user's kernels; see :mod:`._embedded`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urlsplit

from .exceptions import ConfigurationError

__all__ = ["Settings", "connect", "connection", "resolve"]

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Where and how to reach a Pusher Channels app.

    ``cluster`` selects hosted Pusher (``ws-<cluster>.pusher.com`` / ``api-<cluster>.pusher.com``);
    ``host``/``port`` any Pusher-compatible server. ``secret`` is ``None`` when only the public key
    is known (subscribing to public channels works; publishing and private channels need it).
    """

    app_id: str
    key: str
    secret: str | None = None
    cluster: str | None = None
    host: str | None = None
    port: int | None = None
    use_tls: bool = False
    source: str = "explicit"  # "explicit", "connect()", "environment" or "embedded"
    route: str = "auto"  # how browsers reach it: "auto", "direct", "jupyter", "relay" (see _routes)

    # ------------------------------------------------------------------ derived endpoints

    @property
    def ws_host(self) -> str:
        """Host of the WebSocket endpoint."""
        if self.host:
            return self.host
        return f"ws-{self.cluster or 'mt1'}.pusher.com"

    @property
    def ws_port(self) -> int:
        """Port of the WebSocket endpoint."""
        if self.port:
            return self.port
        return 443 if self.tls else 80

    @property
    def rest_host(self) -> str:
        """Host of the REST API."""
        if self.host:
            return self.host
        return f"api-{self.cluster or 'mt1'}.pusher.com"

    @property
    def tls(self) -> bool:
        """Whether to use TLS (always for hosted Pusher)."""
        return self.use_tls or (self.host is None)

    @property
    def ws_url(self) -> str:
        """The WebSocket URL a client opens (protocol 7)."""
        scheme = "wss" if self.tls else "ws"
        return f"{scheme}://{self.ws_host}:{self.ws_port}/app/{self.key}?protocol=7&client=livewidget-py&version=0.1"

    @property
    def rest_url(self) -> str:
        """Base URL of the REST API."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.rest_host}:{self.ws_port}"

    @property
    def server_id(self) -> str | None:
        """The non-secret id the Jupyter extension knows this server by (loopback servers only)."""
        from ._routes import is_loopback, server_id

        if not self.host or not is_loopback(self.host):
            return None
        return server_id(self.app_id, self.key, self.host, self.ws_port)

    def browser_config(self) -> dict[str, Any]:
        """pusher-js options for the browser, plus the route hints. Never contains the secret.

        ``route`` is the forced route (``auto`` lets the browser choose); ``serverId`` (loopback servers
        only) is what ``GET {base}livewidget/{serverId}/info`` must answer for the jupyter route.
        """
        cfg: dict[str, Any] = {
            "key": self.key,
            "cluster": self.cluster or "mt1",
            "forceTLS": self.tls,
            "route": self.route,
        }
        if self.host:
            cfg.update(
                wsHost=self.host,
                wsPort=self.ws_port,
                wssPort=self.ws_port,
                enabledTransports=["ws", "wss"],
            )
            sid = self.server_id
            if sid:
                cfg.update(serverId=sid, appId=self.app_id)
        return cfg

    def routes(self) -> list[Any]:
        """The routes a browser could take to this server, each with why (:class:`_routes.RouteInfo`)."""
        from ._routes import routes_for

        return routes_for(self.host, self.route)

    def require_secret(self, what: str) -> str:
        """The secret, or a ConfigurationError saying that ``what`` needs it."""
        if not self.secret:
            raise ConfigurationError(
                f"{what} needs the app secret; pass secret=..., set PUSHER_SECRET or LIVEWIDGET_URL, "
                "or use the embedded server"
            )
        return self.secret

    def describe(self) -> str:
        """A one-line description with the secret masked."""
        where = f"cluster {self.cluster}" if self.host is None else f"{self.ws_host}:{self.ws_port}"
        secret = (self.secret[:4] + "…") if self.secret else "none"
        tls = " tls" if self.tls else ""
        route = "" if self.route == "auto" else f" route {self.route}"
        return f"{self.source}: app {self.app_id} key {self.key} secret {secret} at {where}{tls}{route}"

    def __repr__(self) -> str:
        lines = "".join(f"\n  {r}" for r in self.routes())
        return f"Settings({self.describe()}; routes:{lines})"


_lock = threading.Lock()
_process_settings: Settings | None = None
_process_route: str | None = None  # connect(route=...), over LIVEWIDGET_ROUTE


def _from_url(url: str, source: str) -> Settings:
    parts = urlsplit(url)
    path = parts.path.rstrip("/").split("/")
    if parts.scheme not in ("http", "https") or len(path) < 3 or path[-2] != "apps":
        raise ConfigurationError(
            f"LIVEWIDGET_URL must look like http://KEY:SECRET@HOST:PORT/apps/APP_ID, got {_mask_url(url)!r}"
        )
    if not parts.username or not parts.hostname:
        raise ConfigurationError("LIVEWIDGET_URL needs KEY:SECRET@ before the host")
    return Settings(
        app_id=path[-1],
        key=unquote(parts.username),
        secret=unquote(parts.password) if parts.password else None,
        host=parts.hostname,
        port=parts.port or (443 if parts.scheme == "https" else 80),
        use_tls=parts.scheme == "https",
        source=source,
    )


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":…@")
    return url


def _from_env(env: Mapping[str, str]) -> Settings | None:
    if env.get("LIVEWIDGET_URL"):
        return _from_url(env["LIVEWIDGET_URL"], "environment")
    if not env.get("PUSHER_KEY"):
        return None
    if not env.get("PUSHER_APP_ID"):
        raise ConfigurationError("PUSHER_KEY is set but PUSHER_APP_ID is not; set both (and PUSHER_SECRET)")
    port = env.get("PUSHER_PORT")
    try:
        port_n = int(port) if port else None
    except ValueError:
        raise ConfigurationError(f"PUSHER_PORT must be a number, got {port!r}") from None
    return Settings(
        app_id=env["PUSHER_APP_ID"],
        key=env["PUSHER_KEY"],
        secret=env.get("PUSHER_SECRET") or None,
        cluster=env.get("PUSHER_CLUSTER") or None,
        host=env.get("PUSHER_HOST") or None,
        port=port_n,
        use_tls=(env.get("PUSHER_USE_TLS", "").lower() in _TRUE),
        source="environment",
    )


def _explicit(
    url: str | None,
    app_id: str | None,
    key: str | None,
    secret: str | None,
    cluster: str | None,
    host: str | None,
    port: int | None,
    use_tls: bool | None,
    source: str,
) -> Settings | None:
    _check_connection(url, app_id, key, secret, cluster, host, port, use_tls)
    if url:
        s = _from_url(url, source)
        return replace(s, use_tls=use_tls) if use_tls is not None else s
    if key is None and app_id is None and secret is None and cluster is None and host is None:
        return None
    if not key or not app_id:
        raise ConfigurationError("give both app_id and key (and secret to publish or sign channels)")
    if cluster is None and host is None:
        raise ConfigurationError(
            "give cluster=... for hosted Pusher or host=... for a Pusher-compatible server"
        )
    return Settings(
        app_id=str(app_id),
        key=key,
        secret=secret,
        cluster=cluster,
        host=host,
        port=port,
        use_tls=bool(use_tls),
        source=source,
    )


def _check_connection(
    url: Any, app_id: Any, key: Any, secret: Any, cluster: Any, host: Any, port: Any, use_tls: Any
) -> None:
    """Each connection keyword has the type it needs; the error names it and says what was expected."""
    for name, value in (("url", url), ("key", key), ("secret", secret), ("cluster", cluster), ("host", host)):
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f"{name} must be a string, not {type(value).__name__}")
    if app_id is not None and (not isinstance(app_id, (str, int)) or isinstance(app_id, bool)):
        raise ConfigurationError(f"app_id must be a string (or an int), not {type(app_id).__name__}")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536):
        raise ConfigurationError(f"port must be an integer from 1 to 65535, got {port!r}")
    if use_tls is not None and not isinstance(use_tls, bool):
        raise ConfigurationError(f"use_tls must be True, False or None, not {type(use_tls).__name__}")


def connect(
    url: str | None = None,
    *,
    app_id: str | None = None,
    key: str | None = None,
    secret: str | None = None,
    cluster: str | None = None,
    host: str | None = None,
    port: int | None = None,
    use_tls: bool | None = None,
    embedded: bool = False,
    route: str | None = None,
) -> Settings:
    """Set the connection for this process (widgets and helpers created afterwards use it).

    ``connect("http://KEY:SECRET@HOST:PORT/apps/ID")``, ``connect(app_id=..., key=..., secret=...,
    cluster="eu")`` for hosted Pusher, or ``connect(embedded=True)`` to go back to the embedded
    server. ``route=`` forces how browsers reach the server (``"direct"``, ``"jupyter"``,
    ``"relay"``; ``"auto"`` lets each browser choose, as ``LIVEWIDGET_ROUTE`` does); alone, it keeps
    the server. Returns the settings now in use.
    """
    global _process_settings, _process_route
    if not isinstance(embedded, bool):
        raise ConfigurationError(f"embedded must be True or False, not {type(embedded).__name__}")
    if route is not None:
        from ._routes import ROUTES

        if route not in ROUTES:
            raise ConfigurationError(f"route must be one of {', '.join(ROUTES)}; got {route!r}")
        with _lock:
            _process_route = route
    if embedded:
        with _lock:
            _process_settings = None
        return resolve()
    s = _explicit(url, app_id, key, secret, cluster, host, port, use_tls, "connect()")
    if s is None:
        if route is not None:
            return resolve()
        raise ConfigurationError("connect() needs a URL, credentials, embedded=True or route=")
    with _lock:
        _process_settings = s
    return _with_route(s)


def _with_route(s: Settings) -> Settings:
    """``s`` with the route forced by connect(route=...), else LIVEWIDGET_ROUTE, else auto."""
    from ._routes import route_from_env

    with _lock:
        route = _process_route or route_from_env()
    # the same object when nothing changes: publish() keys its publishers by settings, cheaply
    return s if s.route == route else replace(s, route=route)


def resolve(
    url: str | None = None,
    *,
    app_id: str | None = None,
    key: str | None = None,
    secret: str | None = None,
    cluster: str | None = None,
    host: str | None = None,
    port: int | None = None,
    use_tls: bool | None = None,
    start_embedded: bool = True,
) -> Settings:
    """The settings to use: explicit arguments, then :func:`connect`, then environment, then embedded."""
    s = _explicit(url, app_id, key, secret, cluster, host, port, use_tls, "explicit")
    if s is not None:
        return _with_route(s)
    with _lock:
        chosen = _process_settings
    if chosen is not None:
        return _with_route(chosen)
    s = _from_env(os.environ)
    if s is not None:
        return _with_route(s)
    from ._embedded import cached_info

    # Cheap on every call (publish() resolves each time): re-read only when the runtime file changes.
    info = cached_info(start=start_embedded)
    global _embedded_settings
    cached = _embedded_settings
    if cached is not None and cached[0] is info:
        return _with_route(cached[1])
    s = Settings(
        app_id=info["app_id"],
        key=info["key"],
        secret=info["secret"],
        host=info["host"],
        port=int(info["port"]),
        source="embedded",
    )
    _embedded_settings = (info, s)
    return _with_route(s)


_embedded_settings: tuple[dict[str, Any], Settings] | None = None


def connection() -> Settings:
    """The settings widgets and helpers would use now, and the routes browsers could take.

    ``repr`` masks the secret and lists each route (``direct``, ``jupyter``, ``relay``) as available or
    not, and why (from the server's address and the environment: Colab, VS Code, SSH, Codespaces);
    ``.routes()`` gives the same as objects.
    """
    return resolve()

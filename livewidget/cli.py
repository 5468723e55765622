"""The ``livewidget`` command.

``livewidget serve`` runs the embedded Pusher-compatible server in the foreground. Every option can
also come from a ``LIVEWIDGET_*`` environment variable; an explicit option wins.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .exceptions import ConfigurationError, LivewidgetError
from .protocol.config import AppConfig

__all__ = ["load_config", "main"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _env_bool(name: str) -> bool | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigurationError(f"{name}={value!r}: use 1/0, true/false, yes/no or on/off")


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a server config file (TOML if it ends in ``.toml``, else JSON).

    Shape: optional ``host`` and ``port``, and ``apps``: a list of tables with ``id``, ``key``,
    ``secret`` and any :class:`~livewidget.protocol.AppConfig` setting (``client_events``,
    ``webhooks``, ``max_data_size``...). Returns ``{"host"?, "port"?, "apps": [AppConfig, ...]}``.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {p}: {exc.strerror}") from exc
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"config file {p} is not valid {p.suffix or 'JSON'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"config file {p} must hold a table/object at the top")
    unknown = sorted(set(data) - {"host", "port", "apps"})
    if unknown:
        raise ConfigurationError(f"config file {p}: unknown key(s) {', '.join(unknown)}")
    apps = data.get("apps") or []
    if not isinstance(apps, list) or not all(isinstance(a, dict) for a in apps):
        raise ConfigurationError(f"config file {p}: 'apps' must be a list of tables")
    try:
        out: dict[str, Any] = {"apps": [AppConfig.from_mapping(a) for a in apps]}
        if "port" in data:
            out["port"] = int(data["port"])
    except ConfigurationError as exc:
        raise ConfigurationError(f"config file {p}: {exc}") from exc
    except (TypeError, ValueError) as exc:  # a value of the wrong type, e.g. port = "abc"
        raise ConfigurationError(f"config file {p}: a setting has a wrong type or value: {exc}") from exc
    if "host" in data:
        out["host"] = str(data["host"])
    return out


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the embedded Pusher-compatible server",
        description="Run the embedded Pusher-compatible server in the foreground until Ctrl-C.",
    )
    env = os.environ.get
    p.add_argument("--host", default=env("LIVEWIDGET_HOST"), help="address to bind [127.0.0.1]")
    p.add_argument("--port", type=int, default=env("LIVEWIDGET_PORT"), help="port [6001]")
    p.add_argument("--app-id", default=env("LIVEWIDGET_APP_ID"), help="numeric app id [generated]")
    p.add_argument("--key", default=env("LIVEWIDGET_KEY"), help="app key [generated]")
    p.add_argument("--secret", default=env("LIVEWIDGET_SECRET"), help="app secret [generated]")
    hooks = env("LIVEWIDGET_WEBHOOK_URL", "")
    p.add_argument(
        "--webhook-url",
        action="append",
        default=None,
        help="POST webhooks here (repeatable; env: space- or comma-separated)",
    )
    p.set_defaults(env_webhooks=[u for u in hooks.replace(",", " ").split() if u])
    p.add_argument(
        "--no-client-events",
        action="store_true",
        default=None,
        help="refuse client- events from browsers (on by default)",
    )
    p.add_argument("--config", default=env("LIVEWIDGET_CONFIG"), help="TOML or JSON file with apps")
    p.add_argument("--reuse-port", action="store_true", help="SO_REUSEPORT: several processes, one port")
    p.add_argument("-v", "--verbose", action="store_true", help="log connections and webhooks")
    p.add_argument("--runtime-file", default=None, help=argparse.SUPPRESS)  # written by the daemon mode


def _server_parser(sub: Any) -> None:
    p = sub.add_parser(
        "server",
        help="list, start or stop your embedded server (the one notebooks share)",
        description="Manage the per-user embedded server that widgets start on first use.",
    )
    p.add_argument("action", choices=["list", "start", "stop"], nargs="?", default="list")


def _server(args: argparse.Namespace) -> int:
    from ._embedded import ensure_embedded, read_info, runtime_dir, stop_embedded

    if args.action == "start":
        started = ensure_embedded()
        print(f"embedded server running: pid {started['pid']} at http://{started['host']}:{started['port']}")
        return 0
    if args.action == "stop":
        stopped = stop_embedded()
        print(
            "no embedded server running"
            if stopped is None
            else f"stopped embedded server pid {stopped['pid']}"
        )
        return 0
    info = read_info()
    if info is None:
        print(f"no embedded server running (runtime folder {runtime_dir()})")
        return 0
    secret = str(info["secret"])[:4] + "…"
    print(
        f"pid {info['pid']}  http://{info['host']}:{info['port']}  app_id={info['app_id']}  "
        f"key={info['key']}  secret={secret}  since {info.get('started', '?')}"
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .server import PusherServer, new_app, run_forever

    file_cfg: dict[str, Any] = load_config(args.config) if args.config else {"apps": []}
    host = args.host or file_cfg.get("host") or "127.0.0.1"
    port = int(args.port if args.port is not None else file_cfg.get("port", 6001))
    if not 0 <= port <= 65535:  # uvloop would silently wrap it (70000 -> 4464)
        raise ConfigurationError(f"port must be 0 to 65535, got {port}")
    apps: list[AppConfig] = file_cfg["apps"]
    client_events = _env_bool("LIVEWIDGET_CLIENT_EVENTS")
    if args.no_client_events:
        client_events = False
    webhooks = tuple(args.webhook_url or args.env_webhooks)
    if not apps:
        settings: dict[str, Any] = {}
        if client_events is not None:
            settings["client_events"] = client_events
        if webhooks:
            settings["webhook_urls"] = webhooks
        apps = [new_app(args.app_id, args.key, args.secret, **settings)]
    elif args.app_id or args.key or args.secret:
        raise ConfigurationError("give credentials either in --config or as options, not both")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    server = PusherServer(apps, host=host, port=port, reuse_port=args.reuse_port)

    def ready(srv: PusherServer) -> None:
        if args.runtime_file:
            from ._embedded import write_info

            app = apps[0]
            record = {"pid": os.getpid(), "host": srv.host, "port": srv.port, "app_id": app.app_id}
            record.update(key=app.key, secret=app.secret, started=time.strftime("%Y-%m-%dT%H:%M:%S"))
            write_info(Path(args.runtime_file), record)
        print(f"livewidget server listening on http://{srv.host}:{srv.port}", flush=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"  warning: bound to {host}, reachable from other machines", flush=True)
        for app in apps:
            # The daemon's log is a file: it gets no secret (the runtime file, mode 0600, has it).
            secret = app.masked_secret if args.runtime_file else app.secret
            print(
                f"  app_id={app.app_id} key={app.key} secret={secret}"
                f" client_events={'on' if app.client_events else 'off'}",
                flush=True,
            )
            print(
                f"  LIVEWIDGET_URL=http://{app.key}:{secret}@{srv.host}:{srv.port}/apps/{app.app_id}",
                flush=True,
            )
        print("Press Ctrl-C to stop.", flush=True)

    try:
        run_forever(server, ready)
    except OSError as exc:
        print(f"livewidget: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    finally:
        if args.runtime_file:
            _remove_runtime_file(Path(args.runtime_file))
    print("livewidget server stopped", flush=True)
    return 0


def _remove_runtime_file(path: Path) -> None:
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``livewidget`` command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="livewidget", description="Realtime Jupyter widgets.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    _serve_parser(sub)
    _server_parser(sub)
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "server":
            return _server(args)
    except LivewidgetError as exc:
        print(f"livewidget: {exc}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover

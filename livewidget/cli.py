"""The ``livewidget`` command.

``livewidget serve`` runs the embedded Pusher-compatible server in the foreground. Every option can
also come from a ``LIVEWIDGET_*`` environment variable; an explicit option wins.

``livewidget publish CHANNEL EVENT [DATA|-]`` and ``livewidget tail CHANNEL...`` publish and print
events (JSON lines) for scripts and cron jobs, with the settings widgets use (``--url``, then
``LIVEWIDGET_URL`` / ``PUSHER_*``, then the embedded server).

``livewidget demo`` runs the embedded server, demo traffic and JupyterLab on the example notebooks
(:mod:`livewidget._demo`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .exceptions import ConfigurationError, LivewidgetError, ServerError
from .protocol.config import AppConfig, ServerLimits

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

    Shape: optional ``host`` and ``port``, optional ``redis`` (``redis://...``: share the apps with the
    other processes using it) and ``redis_node_ttl`` (seconds), and ``apps``: a list of tables with
    ``id``, ``key``, ``secret`` and any :class:`~livewidget.protocol.AppConfig` setting
    (``client_events``, ``webhooks``, ``max_data_size``...); optional ``limits``: a table of
    :class:`~livewidget.protocol.config.ServerLimits` (per-connection timeouts and caps).
    Returns ``{"host"?, "port"?, "redis"?, "redis_node_ttl"?, "limits"?, "apps": [AppConfig, ...]}``.
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
    unknown = sorted(set(data) - {"host", "port", "apps", "redis", "redis_node_ttl", "limits"})
    if unknown:
        raise ConfigurationError(f"config file {p}: unknown key(s) {', '.join(unknown)}")
    apps = data.get("apps") or []
    if not isinstance(apps, list) or not all(isinstance(a, dict) for a in apps):
        raise ConfigurationError(f"config file {p}: 'apps' must be a list of tables")
    try:
        out: dict[str, Any] = {"apps": [AppConfig.from_mapping(a) for a in apps]}
        if "port" in data:
            out["port"] = int(data["port"])
        if "limits" in data:
            if not isinstance(data["limits"], dict):
                raise ConfigurationError("'limits' must be a table")
            out["limits"] = ServerLimits.from_mapping(data["limits"])
    except ConfigurationError as exc:
        raise ConfigurationError(f"config file {p}: {exc}") from exc
    except (TypeError, ValueError) as exc:  # a value of the wrong type, e.g. port = "abc"
        raise ConfigurationError(f"config file {p}: a setting has a wrong type or value: {exc}") from exc
    if "host" in data:
        out["host"] = str(data["host"])
    if "redis" in data:
        if not isinstance(data["redis"], str) or not data["redis"].startswith(("redis://", "rediss://")):
            raise ConfigurationError(f"config file {p}: redis must be a redis:// URL, got {data['redis']!r}")
        out["redis"] = data["redis"]
    if "redis_node_ttl" in data:
        ttl = data["redis_node_ttl"]
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
            raise ConfigurationError(f"config file {p}: redis_node_ttl must be a positive number of seconds")
        out["redis_node_ttl"] = float(ttl)
    return out


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the embedded Pusher-compatible server",
        description="Run the embedded Pusher-compatible server in the foreground until Ctrl-C. "
        "The app secret is never printed: give it in a file (--secret-file) or in LIVEWIDGET_SECRET, "
        "or let one be generated into a file readable only by you; the banner says where it is.",
    )
    env = os.environ.get
    p.add_argument("--host", default=env("LIVEWIDGET_HOST"), help="address to bind [127.0.0.1]")
    p.add_argument("--port", type=int, default=env("LIVEWIDGET_PORT"), help="port [6001]")
    p.add_argument("--app-id", default=env("LIVEWIDGET_APP_ID"), help="numeric app id [generated]")
    p.add_argument("--key", default=env("LIVEWIDGET_KEY"), help="app key [generated]")
    p.add_argument(
        "--secret-file",
        metavar="PATH",
        default=None,
        help="read the app secret from PATH; if PATH does not exist, a new secret is written there "
        "(mode 0600) [LIVEWIDGET_SECRET_FILE; else LIVEWIDGET_SECRET; else generated into "
        "RUNTIME/serve-APP_ID.secret, mode 0600, removed at exit; RUNTIME is $LIVEWIDGET_RUNTIME_DIR, "
        "else $XDG_RUNTIME_DIR/livewidget, else ~/.cache/livewidget/run; its hub-$JUPYTERHUB_USER on a hub]",
    )
    p.add_argument(
        "--secret",
        default=None,
        help="the app secret itself: visible to every local user in the process list (ps), so prefer "
        "--secret-file or LIVEWIDGET_SECRET",
    )
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
    p.add_argument(
        "--redis",
        default=env("LIVEWIDGET_REDIS"),
        metavar="URL",
        help="share the apps with every process using this Redis (redis://host:port); needs the redis "
        "extra: pip install 'livewidget[redis]'",
    )
    p.add_argument(
        "--redis-node-ttl",
        type=float,
        default=env("LIVEWIDGET_REDIS_NODE_TTL"),
        metavar="S",
        help="seconds before a silent process's presence members are removed [10]",
    )
    data = p.add_mutually_exclusive_group()
    data.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help="keep channel history in SQLite files in DIR, across restarts "
        "[$LIVEWIDGET_DATA_DIR, else ~/.local/share/livewidget]",
    )
    data.add_argument(
        "--no-data", action="store_true", help="keep channel history in memory only (lost on restart)"
    )
    data.add_argument(
        "--no-history",
        action="store_true",
        help="keep no channel history: a plain Pusher server (events carry no position)",
    )
    p.add_argument(
        "--history-memory",
        type=float,
        default=None,
        metavar="MB",
        help="memory for channel history, all channels together; the oldest goes first [64]",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log connections and webhooks")
    p.add_argument("--runtime-file", default=None, help=argparse.SUPPRESS)  # written by the daemon mode


def _server_parser(sub: Any) -> None:
    p = sub.add_parser(
        "server",
        help="list, start or stop your embedded server (the one notebooks share)",
        description="Manage the per-user embedded server that widgets start on first use.",
    )
    p.add_argument("action", choices=["list", "start", "stop"], nargs="?", default="list")


def _url_option(p: Any) -> None:
    p.add_argument(
        "--url",
        default=None,
        help="http://KEY:SECRET@HOST:PORT/apps/APP_ID, visible to other local users in ps: prefer "
        "LIVEWIDGET_URL [LIVEWIDGET_URL, PUSHER_*, or the embedded server]",
    )


def _publish_parser(sub: Any) -> None:
    p = sub.add_parser(
        "publish",
        help="publish an event (or JSON lines from stdin)",
        description="Publish EVENT on CHANNEL. DATA is JSON, or else sent as plain text; with - each line "
        "of stdin is one event. Prints nothing on success; exits 1 with the reason on failure.",
    )
    p.add_argument("channel", metavar="CHANNEL")
    p.add_argument("event", metavar="EVENT")
    p.add_argument("data", metavar="DATA", nargs="?", default=None, help="JSON or text, or - for stdin")
    _url_option(p)


def _tail_parser(sub: Any) -> None:
    p = sub.add_parser(
        "tail",
        help="print the events on channels as JSON lines",
        description='Subscribe to CHANNEL(s) and print one JSON line per event: {"time", "channel", '
        '"event", "data", "user_id"}, plus "position" on servers that keep channel history and '
        '"history": true for events replayed by --since. Status goes to stderr. Ctrl-C stops (status 0).',
    )
    p.add_argument("channels", metavar="CHANNEL", nargs="+")
    p.add_argument(
        "--events", action="append", metavar="NAME", help="only these events (repeatable, or a,b,c)"
    )
    p.add_argument("-n", type=int, default=None, metavar="N", help="exit after N events")
    p.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="exit after S seconds (1 if -n is not met)"
    )
    p.add_argument(
        "--since",
        type=_since_arg,
        default=None,
        metavar="WHEN",
        help="first print the channel's history (servers that keep it, such as the embedded one): the "
        "last N events (a number), those of the last DURATION (90s, 5m, 2h, 1d), or those after a "
        "POSITION (the 'position' a line printed, STREAM:SERIAL); then live events. After a drop or a "
        "server restart it resumes from the last event printed, with nothing missed or repeated",
    )
    _url_option(p)


def _since_arg(text: str) -> dict[str, Any]:
    """``--since``: the ``rewind`` of ``pusher:subscribe`` (README "Channel history")."""
    text = text.strip()
    if text.isdigit():
        return {"count": int(text)}
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if len(text) > 1 and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return {"seconds": float(text[:-1]) * units[text[-1]]}
    stream, sep, serial = text.rpartition(":")
    if sep and stream and serial.isdigit() and len(stream) <= 64:
        return {"serial": int(serial), "stream_id": stream}
    raise argparse.ArgumentTypeError(
        f"expected a number of events (100), a duration (90s, 5m, 2h, 1d) or a position "
        f"(STREAM:SERIAL, as tail prints it), got {text!r}"
    )


def _demo_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="the embedded server, live demo traffic and JupyterLab on the example notebooks",
        description="Start (or reuse) the embedded server, processes publishing demo traffic (training "
        "metrics, pool workers' progress, a chat bot) and JupyterLab on 127.0.0.1 on a copy of the example "
        "notebooks (LIVEWIDGET_DEMO_DIR, default ~/livewidget-demo). Prints the URL; Ctrl-C stops it all.",
    )
    p.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    p.add_argument("--port", type=int, default=None, help="embedded server port, if it must be started")
    p.add_argument("--lab-port", type=int, default=None, help="JupyterLab port [a free one]")


def _data_arg(text: str) -> Any:
    """JSON when it parses, else the text itself; ``ValueError`` for JSON nested too deeply."""
    from .protocol.client import MAX_DEPTH, loads

    try:
        return loads(text)
    except ValueError as exc:
        if "nested" in str(exc):
            raise ValueError(
                f"DATA is JSON nested deeper than {MAX_DEPTH} levels, which receivers refuse; flatten it"
            ) from None
        return text


def _publish(args: argparse.Namespace) -> int:
    import warnings

    from ._check import scrub
    from ._config import resolve
    from ._publish import Publisher

    def fail(message: str) -> int:
        secret = settings.secret if settings is not None else None
        print(f"livewidget publish: {scrub(message, secret)}", file=sys.stderr)  # no signed URL, no secret
        return 1

    settings = None
    try:
        settings = resolve(args.url)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # failures are reported once, below
            with Publisher(settings) as pub:
                if args.data == "-":
                    for number, line in enumerate(sys.stdin, 1):
                        if not line.strip():
                            continue
                        try:
                            pub.publish(args.channel, args.event, _data_arg(line.rstrip("\r\n")))
                        except (TypeError, ValueError) as exc:
                            return fail(f"line {number}: {exc}")
                        if pub.errors:
                            break
                else:
                    try:
                        data = None if args.data is None else _data_arg(args.data)
                        pub.publish(args.channel, args.event, data)
                    except (TypeError, ValueError) as exc:
                        return fail(str(exc))
                pub.flush(timeout=60)
    except (LivewidgetError, TypeError, ValueError, OSError) as exc:
        where = f" to {settings.rest_url}" if settings is not None else ""
        return fail(f"publishing{where} failed: {exc}")
    return 0


def _tail(args: argparse.Namespace) -> int:
    import queue

    from ._config import resolve
    from .protocol.channels import is_valid_channel_name
    from .protocol.client import ClientEvent
    from .receiver import Receiver

    for name in args.channels:
        if not is_valid_channel_name(name):
            raise ConfigurationError(f"invalid channel name {name!r}")
    wanted = {name for value in args.events or () for name in value.split(",") if name}
    settings = resolve(args.url)
    inbox: queue.SimpleQueue[tuple[str, Any, Any]] = queue.SimpleQueue()

    def on_event(event: ClientEvent) -> None:
        if not wanted or event.event in wanted:
            inbox.put(("event", event, time.time()))

    receiver = Receiver(
        settings,
        list(args.channels),
        on_event,
        lambda s, d: inbox.put(("status", s, d)),
        rewind=args.since,
    )
    receiver.start()
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    count = 0
    listening = retrying = False
    try:
        while args.n is None or count < args.n:
            wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if wait <= 0:
                break
            if not listening and receiver.state == "connected" and all(receiver.protocol.channels.values()):
                listening = True
                print(
                    f"livewidget tail: listening on {', '.join(args.channels)}", file=sys.stderr, flush=True
                )
            try:
                kind, first, second = inbox.get(timeout=wait)
            except queue.Empty:
                continue
            if kind == "event":
                row = {"time": second, "channel": first.channel, "event": first.event, "data": first.data}
                row["user_id"] = first.user_id
                if first.serial is not None:  # what --since takes to resume from here
                    row["position"] = f"{first.stream_id}:{first.serial}"
                if first.history:
                    row["history"] = True  # replayed by --since, not heard live
                print(json.dumps(row, default=str), flush=True)
                count += 1
            elif first in ("failed", "error"):
                print(f"livewidget tail: {second}", file=sys.stderr)
                return 1
            elif first == "warning":  # an undecodable event (printed with its raw text): go on
                print(f"livewidget tail: warning: {second}", file=sys.stderr, flush=True)
            elif first == "unavailable" and not retrying:
                retrying = True
                print(f"livewidget tail: {second} (retrying)", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `livewidget tail ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        receiver.stop()
    if args.n is not None and count < args.n:
        print(f"livewidget tail: {count} of {args.n} events in {args.timeout} s", file=sys.stderr)
        return 1
    return 0


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
    print(
        f"pid {info['pid']}  http://{info['host']}:{info['port']}  app_id={info['app_id']}  "
        f"key={info['key']}  secret in {runtime_dir() / 'server.json'}  since {info.get('started', '?')}"
    )
    return 0


class _Secret:
    """Where the app secret of ``serve`` comes from, and how to point at it without printing it."""

    def __init__(self, value: str | None, where: str, path: Path | None = None, temporary: bool = False):
        self.value = value
        self.where = where  # for the banner
        self.path = path  # the file holding it, if any
        self.temporary = temporary  # generated by this process into the runtime folder: removed at exit

    def in_url(self) -> str:
        """The secret's place in a shell ``LIVEWIDGET_URL=...`` line."""
        if self.path is not None:
            return f"$(cat {shlex.quote(str(self.path))})"
        if self.where == "from $LIVEWIDGET_SECRET":
            return "${LIVEWIDGET_SECRET}"
        return "SECRET"


def _write_new_secret(path: Path) -> str:
    secret = secrets.token_hex(20)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise ConfigurationError(f"cannot write a new secret to {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def _read_secret_file(path: Path) -> _Secret:
    """The secret in ``path`` (surrounding whitespace ignored), or a new one written there."""
    if not path.exists():
        return _Secret(_write_new_secret(path), f"new, written to {path} (mode 0600)", path)
    try:
        secret = path.read_text().strip()
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the secret file {path}: {exc}") from exc
    if not secret:
        raise ConfigurationError(f"the secret file {path} is empty")
    if mode & 0o077:
        fix = f"chmod 600 {shlex.quote(str(path))}"
        print(f"livewidget: warning: {path} can be read by other users; run: {fix}", file=sys.stderr)
    return _Secret(secret, f"from {path}", path)


def _env_secret_given() -> bool:
    return bool(os.environ.get("LIVEWIDGET_SECRET") or os.environ.get("LIVEWIDGET_SECRET_FILE"))


def _secret_source(args: argparse.Namespace) -> _Secret | None:
    """The secret given by option or environment (an option wins), or None."""
    if args.secret and args.secret_file:
        raise ConfigurationError("give --secret or --secret-file, not both")
    if args.secret:
        return _Secret(
            args.secret, "as given with --secret (visible to other local users: prefer --secret-file)"
        )
    if args.secret_file:
        return _read_secret_file(Path(args.secret_file).expanduser().absolute())
    env_secret, env_file = os.environ.get("LIVEWIDGET_SECRET"), os.environ.get("LIVEWIDGET_SECRET_FILE")
    if env_secret and env_file:
        raise ConfigurationError("set LIVEWIDGET_SECRET or LIVEWIDGET_SECRET_FILE, not both")
    if env_secret:
        return _Secret(env_secret, "from $LIVEWIDGET_SECRET")
    if env_file:
        return _read_secret_file(Path(env_file).expanduser().absolute())
    return None


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
    redis_url = args.redis or file_cfg.get("redis")
    adapter = None
    if redis_url:  # before a secret may be generated: a missing redis extra leaves nothing behind
        from .server.adapters import RedisAdapter

        ttl = args.redis_node_ttl if args.redis_node_ttl is not None else file_cfg.get("redis_node_ttl", 10.0)
        adapter = RedisAdapter(redis_url, node_ttl=float(ttl))
    if apps and (args.app_id or args.key or args.secret or args.secret_file or _env_secret_given()):
        raise ConfigurationError("give credentials either in --config or as options, not both")
    given = _secret_source(args)
    if not apps:
        settings: dict[str, Any] = {}
        if client_events is not None:
            settings["client_events"] = client_events
        if webhooks:
            settings["webhook_urls"] = webhooks
        apps = [new_app(args.app_id, args.key, given.value if given else None, **settings)]
        if given is None:
            # Generated: written where only this user can read it, never printed (issue 14 item 12).
            from ._embedded import runtime_dir

            path = runtime_dir() / f"serve-{apps[0].app_id}.secret"
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # left by an earlier run that was killed
            apps = [replace(apps[0], secret=_write_new_secret(path))]
            where = f"generated, in {path} (mode 0600; removed when the server stops)"
            given = _Secret(apps[0].secret, where, path, temporary=True)
    if given is None:
        given = _Secret(None, f"in the config file {args.config}")
    level = logging.INFO if args.verbose else logging.WARNING
    log_file = os.environ.get("LIVEWIDGET_LOG_FILE")  # set by the embedded daemon's launcher
    if log_file:
        from .server._logs import log_to_file

        log_to_file(log_file, level=level)  # size-capped and rotated (issue 14)
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    history = _history_driver(args, clustered=adapter is not None)
    server = PusherServer(
        apps,
        host=host,
        port=port,
        reuse_port=args.reuse_port,
        adapter=adapter,
        limits=file_cfg.get("limits"),
        history=history,
    )

    def ready(srv: PusherServer) -> None:
        if args.runtime_file:
            from ._embedded import write_info

            app = apps[0]
            record = {"pid": os.getpid(), "host": srv.host, "port": srv.port, "app_id": app.app_id}
            record.update(key=app.key, secret=app.secret, started=time.strftime("%Y-%m-%dT%H:%M:%S"))
            write_info(Path(args.runtime_file), record)
        print(f"livewidget server listening on http://{srv.host}:{srv.port}", flush=True)
        if adapter is not None:
            print(
                f"  sharing its apps over Redis {str(redis_url).split('@')[-1]} as node {adapter.node_id}",
                flush=True,
            )
        else:
            if args.no_history:
                where = "off"
            elif args.no_data:
                where = "in memory only"
            else:
                where = f"SQLite in {getattr(history, 'folder', '')}"
            print(f"  channel history: {where}", flush=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"  warning: bound to {host}, reachable from other machines", flush=True)
        # Never the secret itself: a terminal is seen and scrolled back, a daemon's log is a file, and
        # both get pasted into issues. Where it lives instead, and a URL line that reads it from there.
        print(f"  secret: {given.where}", flush=True)
        for app in apps:
            print(
                f"  app_id={app.app_id} key={app.key} client_events={'on' if app.client_events else 'off'}",
                flush=True,
            )
            url = f"http://{app.key}:{given.in_url()}@{srv.host}:{srv.port}/apps/{app.app_id}"
            print(f'  LIVEWIDGET_URL="{url}"', flush=True)
        print("Press Ctrl-C to stop.", flush=True)

    try:
        run_forever(server, ready)
    except OSError as exc:
        print(f"livewidget: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    except ServerError as exc:  # e.g. Redis unreachable at start
        print(f"livewidget: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.runtime_file:
            _remove_runtime_file(Path(args.runtime_file))
        if given.temporary and given.path is not None:
            with contextlib.suppress(OSError):
                given.path.unlink()
    print("livewidget server stopped", flush=True)
    return 0


def _history_driver(args: argparse.Namespace, clustered: bool) -> Any:
    """``--data DIR`` (default: the user's data folder) or ``--no-data``; over Redis, Redis's."""
    from .server.history import DEFAULT_MAX_MEMORY, MemoryHistory, SQLiteHistory, data_dir

    if args.history_memory is not None and not args.history_memory >= 0:
        raise ConfigurationError(f"--history-memory must be >= 0 MB, got {args.history_memory}")
    memory = int(args.history_memory * 1024 * 1024) if args.history_memory is not None else DEFAULT_MAX_MEMORY
    if args.no_history:
        return False
    if clustered:
        return None  # the Redis adapter's shared history
    if args.no_data:
        return MemoryHistory(memory)
    return SQLiteHistory(args.data or data_dir(), memory)


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
    _publish_parser(sub)
    _tail_parser(sub)
    _demo_parser(sub)
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
        if args.command == "publish":
            return _publish(args)
        if args.command == "tail":
            return _tail(args)
        if args.command == "demo":
            from ._demo import run_demo

            return run_demo(args.no_browser, args.port, args.lab_port)
    except LivewidgetError as exc:
        print(f"livewidget: {exc}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover

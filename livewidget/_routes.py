"""Routes from the browser to the Pusher server, and the registry the Jupyter server extension reads.

A widget's browser side picks one route per model (``js/src/connection.js``, issue 12):

``direct``
    the Pusher server's own URL. Right for hosted Pusher and any non-loopback server; for a server on
    the kernel's loopback only when the page itself comes from a loopback address (elsewhere it would
    reach the wrong machine, and Chromium's Local Network Access asks the user first).
``jupyter``
    same-origin through the Jupyter server that served the page: ``{base_url}livewidget/{server_id}/``
    served by :mod:`livewidget.jupyter` (or jupyter-server-proxy's ``{base_url}proxy/{port}/`` when the
    extension is absent).
``relay``
    through the kernel's comm (:mod:`livewidget._relay`): the kernel forwards what its receivers hear,
    one coalesced stream per kernel; the browser's last resort (and the only route in Colab and VS Code
    remote, which the environment hints below recognise).

The registry. The extension forwards only to servers registered by this user, never to a host or port
taken from a URL. It reads two kinds of file in :func:`runtime_dir` (mode 0700, files 0600, checked to
belong to the user the Jupyter server runs as):

- ``server.json``, the embedded daemon's own runtime file (it already holds the address);
- ``routes/{server_id}.json``, written by a kernel whose settings point at another server on loopback
  (``LIVEWIDGET_URL=http://k:s@127.0.0.1:6001/...``): ``{"host", "port", "app_id", "key"}``, no secret.
  A kernel registering a new server first removes the files of servers that no longer listen.

Kernels are children of the Jupyter server, so they share its ``LIVEWIDGET_RUNTIME_DIR`` (or
``XDG_RUNTIME_DIR``/home, and on JupyterHub its ``hub-{JUPYTERHUB_USER}`` folder, which keeps apart hub
users who share one OS account): the kernel writes where the extension reads.

The server id is ``sha256(app_id, key, host, port)`` cut to 20 hex digits: not a secret (it is made of
what the browser already gets), the same in the kernel and the extension without any exchange, and
different for every server and app. The browser checks it with ``GET {base}livewidget/{id}/info``
before connecting, and then counts the route only once ``pusher:connection_established`` arrives on
``/app/{key}`` (the server refuses unknown keys with 4001): so a route is the expected app on the
expected server, not whatever listens on a forwarded port.

Signing. pusher-js asks the kernel to sign private and presence channels through the kernel's HTTP
endpoint on its loopback (:mod:`livewidget._authserver`, it answers while a cell runs). A page that is
not on loopback cannot call it, so each kernel also writes ``auth/{auth_id}.json`` (``{"port"}``) and the
extension forwards ``POST {base_url}livewidget/auth/{auth_id}`` there: the widget's token is still
required by the endpoint, the Jupyter login by the extension.

Standard library only: the extension imports this module inside the Jupyter server.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ROUTES",
    "RouteInfo",
    "Target",
    "auth_id",
    "auth_port",
    "environment_hints",
    "is_loopback",
    "register",
    "register_auth",
    "route_from_env",
    "routes_for",
    "server_id",
    "targets",
]

ROUTES = ("auto", "direct", "jupyter", "relay")
MAX_REGISTERED = 64  # route files read at most (a runaway writer cannot make the extension slow)


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` names this machine's loopback (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if not host:
        return False
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def server_id(app_id: str, key: str, host: str, port: int) -> str:
    """The non-secret id of one app on one server (see the module docstring)."""
    raw = "\0".join((str(app_id), key, host.lower(), str(int(port))))
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Target:
    """A server the extension may forward to: always on loopback, registered by this user."""

    id: str
    host: str
    port: int
    app_id: str
    key: str
    source: str  # "embedded" or "kernel"

    def info(self) -> dict[str, Any]:
        """What ``GET {base}livewidget/{id}/info`` answers (nothing secret, not even the address)."""
        return {"server_id": self.id, "app_id": self.app_id, "key": self.key, "source": self.source}


def _routes_dir(runtime: Path) -> Path:
    path = runtime / "routes"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def register(app_id: str, key: str, host: str, port: int) -> str | None:
    """Record a loopback server for the extension (idempotent); returns its id, ``None`` if not loopback.

    The embedded daemon needs no registration (the extension reads its ``server.json``).
    """
    if not is_loopback(host):
        return None
    from ._embedded import _write_private, runtime_dir

    sid = server_id(app_id, key, host, port)
    folder = _routes_dir(runtime_dir())
    path = folder / f"{sid}.json"
    if not path.exists():
        _prune(folder)
        _write_private(path, {"host": host, "port": int(port), "app_id": str(app_id), "key": key})
    return sid


def _prune(folder: Path) -> None:
    """Forget registrations of servers that no longer listen (so the folder stays small)."""
    from ._embedded import _listening

    for path in sorted(folder.glob("*.json"))[: MAX_REGISTERED * 2]:
        data = _private_json(path)
        t = _target(data, "kernel") if data else None
        if t is None or not _listening(t.host, t.port):
            with contextlib.suppress(OSError):
                path.unlink()


def auth_id(pid: int, port: int) -> str:
    """The non-secret id of a kernel's signing endpoint (the widget's token stays required)."""
    return hashlib.sha256(f"auth\0{pid}\0{port}".encode()).hexdigest()[:20]


def register_auth(port: int) -> str:
    """Record this process's signing endpoint (on 127.0.0.1:``port``) for the extension; returns its id."""
    from ._embedded import _write_private, runtime_dir

    aid = auth_id(os.getpid(), port)
    folder = runtime_dir() / "auth"
    folder.mkdir(mode=0o700, exist_ok=True)
    _prune_auth(folder)
    _write_private(folder / f"{aid}.json", {"port": int(port), "pid": os.getpid()})
    return aid


def unregister_auth(aid: str) -> None:
    """Forget this process's signing endpoint (at exit)."""
    from ._embedded import runtime_dir

    with contextlib.suppress(OSError):
        (runtime_dir() / "auth" / f"{aid}.json").unlink()


def _prune_auth(folder: Path) -> None:
    from ._embedded import _listening

    for path in sorted(folder.glob("*.json"))[: MAX_REGISTERED * 2]:
        data = _private_json(path)
        port = data.get("port") if data else None
        if not isinstance(port, int) or not _listening("127.0.0.1", port):
            with contextlib.suppress(OSError):
                path.unlink()


def auth_port(aid: str, runtime: Path | None = None) -> int | None:
    """The port of a registered signing endpoint, or None (the extension forwards only to these)."""
    if runtime is None:
        from ._embedded import runtime_dir

        runtime = runtime_dir()
    if not _trusted_dir(runtime) or not all(c in "0123456789abcdef" for c in aid) or len(aid) != 20:
        return None
    data = _private_json(runtime / "auth" / f"{aid}.json")
    port = data.get("port") if data else None
    return port if isinstance(port, int) and 0 < port < 65536 else None


def _trusted_dir(runtime: Path) -> bool:
    try:
        st = runtime.lstat()
    except OSError:
        return False
    # ours, and not readable by others (a folder others can write could hold planted files)
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def _private_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path`` if it belongs to this user and others cannot write it, else None."""
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            return None
        if st.st_size > 4096:
            return None
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _target(data: dict[str, Any], source: str) -> Target | None:
    try:
        host, port = str(data["host"]), int(data["port"])
        app_id, key = str(data["app_id"]), str(data["key"])
    except (KeyError, TypeError, ValueError):
        return None
    if not is_loopback(host) or not 0 < port < 65536 or not key:
        return None
    return Target(server_id(app_id, key, host, port), host, port, app_id, key, source)


def targets(runtime: Path | None = None) -> dict[str, Target]:
    """Every server this user registered, by id (the embedded daemon's ``server.json`` first)."""
    if runtime is None:
        from ._embedded import runtime_dir

        runtime = runtime_dir()
    if not _trusted_dir(runtime):
        return {}  # not ours, or open to others: trust nothing in it
    found: dict[str, Target] = {}
    data = _private_json(runtime / "server.json")
    t = _target(data, "embedded") if data else None
    if t is not None:
        found[t.id] = t
    with contextlib.suppress(OSError):
        for i, path in enumerate(sorted((runtime / "routes").glob("*.json"))):
            if i >= MAX_REGISTERED:
                break
            data = _private_json(path)
            t = _target(data, "kernel") if data else None
            if t is not None and t.id not in found:
                found[t.id] = t
    return found


# ---------------------------------------------------------------------------------------------- choosing


def route_from_env(env: dict[str, str] | None = None) -> str:
    """``LIVEWIDGET_ROUTE`` (``auto``, ``direct``, ``jupyter`` or ``relay``); ``auto`` when unset."""
    from .exceptions import ConfigurationError

    value = (os.environ if env is None else env).get("LIVEWIDGET_ROUTE", "").strip().lower() or "auto"
    if value not in ROUTES:
        raise ConfigurationError(f"LIVEWIDGET_ROUTE must be one of {', '.join(ROUTES)}; got {value!r}")
    return value


def environment_hints(env: dict[str, str] | None = None) -> dict[str, str]:
    """Front ends recognised from the kernel's environment (documented hints, issue 12), name -> why."""
    env = dict(os.environ) if env is None else env
    hints: dict[str, str] = {}
    if "google.colab" in sys.modules:
        hints["colab"] = "google.colab is imported"
    for name in ("VSCODE_PID", "VSCODE_CWD"):
        if env.get(name):
            hints["vscode"] = f"{name} is set"
            break
    if env.get("CODESPACES"):
        hints["codespaces"] = "CODESPACES is set"
    if env.get("REMOTE_CONTAINERS"):
        hints["container"] = "REMOTE_CONTAINERS is set"
    if env.get("SSH_CONNECTION"):
        hints["ssh"] = "SSH_CONNECTION is set (the browser is probably on another machine)"
    if env.get("JUPYTERHUB_SERVICE_PREFIX"):
        hints["jupyterhub"] = f"JUPYTERHUB_SERVICE_PREFIX={env['JUPYTERHUB_SERVICE_PREFIX']}"
    return hints


@dataclass(frozen=True)
class RouteInfo:
    """One route as :func:`livewidget.connection` lists it."""

    name: str
    available: bool
    why: str

    def __str__(self) -> str:
        return f"{self.name}: {'yes' if self.available else 'no'} ({self.why})"


def routes_for(host: str | None, forced: str, env: dict[str, str] | None = None) -> list[RouteInfo]:
    """The routes a browser could use to reach a server at ``host`` (``None``: hosted Pusher), and why."""
    hints = environment_hints(env)
    loopback = host is not None and is_loopback(host)
    webview = [h for h in ("colab", "vscode", "codespaces") if h in hints]
    out: list[RouteInfo] = []
    if not loopback:
        out.append(RouteInfo("direct", True, "the server is not on loopback: the browser connects to it"))
    elif webview:
        out.append(RouteInfo("direct", False, f"{hints[webview[0]]}: the page is not served by this machine"))
    else:
        out.append(
            RouteInfo("direct", True, "only when the page itself is served from loopback (a local Jupyter)")
        )
    if not loopback:
        out.append(RouteInfo("jupyter", False, "not needed: the server is reachable directly"))
    elif "colab" in hints or "vscode" in hints:
        why = hints.get("colab") or hints["vscode"]
        out.append(RouteInfo("jupyter", False, f"{why}: the page is not from a Jupyter server"))
    else:
        out.append(
            RouteInfo(
                "jupyter",
                True,
                "same-origin through the Jupyter server's livewidget extension (or jupyter-server-proxy), "
                "when the page comes from a Jupyter server on this machine",
            )
        )
    out.append(
        RouteInfo(
            "relay",
            True,
            "through the kernel's comm (livewidget._relay): the fallback for any page; views stay live "
            "while a cell runs, browser actions wait until the kernel is idle",
        )
    )
    if forced != "auto":
        out = [
            r if r.name == forced else RouteInfo(r.name, False, f"not used: the route is forced to {forced}")
            for r in out
        ]
    return out

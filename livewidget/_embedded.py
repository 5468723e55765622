"""The embedded server as a per-user daemon: started on first use, shared by every kernel of the user.

If the daemon dies (killed), whoever next fails to reach it starts it again on the same port
(:func:`revive`), so publishers, kernel receivers and browsers (pusher-js) reconnect where they were.

It runs in its own process (``python -m livewidget serve --runtime-file ...``), so a CPU-bound cell
never slows it and a kernel restart does not stop it. Kernels find it through ``server.json`` in the
user's runtime folder (mode 0700, file mode 0600), which holds its address and the credentials. The
credentials are generated once per user and kept in ``credentials.json`` beside it; they are passed
to the daemon in its environment, never on its command line (visible to every user in ``ps``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import signal
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .exceptions import ServerError

__all__ = [
    "cached_info",
    "ensure_embedded",
    "read_info",
    "revive",
    "runtime_dir",
    "stop_embedded",
    "write_info",
]

START_TIMEOUT = 20.0


def runtime_dir() -> Path:
    """``$LIVEWIDGET_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/livewidget``, else ``~/.cache/livewidget/run``;
    under JupyterHub (``$JUPYTERHUB_USER`` set) the folder ``hub-NAME`` inside it.

    The folder is the user's: their embedded server, its credentials and the registry the Jupyter
    extension forwards to (:mod:`livewidget._routes`). Where several hub users share one OS account
    (``SimpleLocalProcessSpawner``) the owner check cannot tell them apart, and a folder common to
    them (a ``XDG_RUNTIME_DIR`` or ``LIVEWIDGET_RUNTIME_DIR`` the spawner passes to everyone, or one
    HOME) would give them one server and let each one's extension forward to the other's: the hub
    user's name keeps them apart. Kernels, terminals and the extension of a single-user server all
    have ``JUPYTERHUB_USER``, so they agree on the folder.
    """
    base = os.environ.get("LIVEWIDGET_RUNTIME_DIR")
    if base:
        path = Path(base)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "livewidget"
    else:
        path = Path.home() / ".cache" / "livewidget" / "run"
    hub_user = os.environ.get("JUPYTERHUB_USER")
    if hub_user:
        path = path / _hub_folder(hub_user)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def _hub_folder(user: str) -> str:
    """``hub-NAME``: NAME percent-encoded (no ``/``; distinct names stay distinct), hashed if long."""
    name = urllib.parse.quote(user, safe="")
    if len(name) > 100:
        name = hashlib.sha256(user.encode()).hexdigest()[:40]
    return f"hub-{name}"


def _write_private(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def write_info(path: Path, info: dict[str, Any]) -> None:
    """Write a runtime file readable only by this user (used by ``serve --runtime-file``)."""
    _write_private(path, info)


def _credentials(folder: Path) -> dict[str, str]:
    path = folder / "credentials.json"
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and all(isinstance(data.get(k), str) for k in ("app_id", "key", "secret")):
            return {k: str(data[k]) for k in ("app_id", "key", "secret")}
    creds = {
        "app_id": str(secrets.randbelow(9_000_000) + 1_000_000),
        "key": "lw" + secrets.token_hex(9),
        "secret": secrets.token_hex(20),
    }
    _write_private(path, creds)
    return creds


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # reap it if it is our own exited child
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def read_info() -> dict[str, Any] | None:
    """The running embedded server's runtime record, or ``None`` when there is none alive."""
    path = runtime_dir() / "server.json"
    try:
        info: dict[str, Any] = json.loads(path.read_text())
        pid, host, port = int(info["pid"]), str(info["host"]), int(info["port"])
        if not all(isinstance(info.get(k), str) for k in ("app_id", "key", "secret")):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, half-written or not ours: as if no server were running
    if pid <= 0 or not _alive(pid) or not _listening(host, port):
        return None
    return info


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def ensure_embedded(start: bool = True) -> dict[str, Any]:
    """The embedded server's record, starting the daemon if none is running (and ``start``)."""
    info = read_info()
    if info is not None:
        return info
    folder = runtime_dir()
    with _locked(folder):
        info = read_info()  # another kernel may have started it while we waited for the lock
        if info is not None:
            return info
        if not start:
            raise ServerError(
                "no embedded livewidget server is running; start one with `livewidget server start`"
            )
        return _spawn(folder)


# cached_info(): the record, re-read only when server.json changes (stat at most every CHECK_EVERY s)
CHECK_EVERY = 0.1
_cache_lock = threading.Lock()
_cache: dict[str, Any] = {}


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def cached_info(start: bool = True) -> dict[str, Any]:
    """:func:`ensure_embedded`, cheaply: the record is kept while ``server.json`` is unchanged.

    ``publish()`` resolves its settings on every call; checking the daemon (reading the file, a TCP
    connect) each time cost about 0.7 ms. Here a call costs a clock read, and at most every
    ``CHECK_EVERY`` seconds one ``stat``. A daemon that dies without removing its file is noticed by
    whoever fails to reach it (the publisher and receivers call :func:`revive`).
    """
    where = tuple(os.environ.get(k) for k in ("LIVEWIDGET_RUNTIME_DIR", "XDG_RUNTIME_DIR", "JUPYTERHUB_USER"))
    now = time.monotonic()
    c = _cache
    if c.get("where") == where and c.get("pid") == os.getpid():
        if now - c["checked"] < CHECK_EVERY:
            return c["info"]  # type: ignore[no-any-return]
        if _stat_key(c["path"]) == c["stat"]:
            c["checked"] = now
            return c["info"]  # type: ignore[no-any-return]
    info = ensure_embedded(start=start)
    path = runtime_dir() / "server.json"
    with _cache_lock:
        _cache.clear()
        _cache.update(where=where, pid=os.getpid(), path=path, stat=_stat_key(path), info=info, checked=now)
    return info


def revive() -> dict[str, Any] | None:
    """Start the daemon again, on its port, if it died without removing ``server.json`` (killed).

    Returns the running server's record, or ``None`` when it was stopped on purpose (no
    ``server.json``: ``livewidget server stop``), which is left stopped.
    """
    info = read_info()
    if info is not None:
        return info
    folder = runtime_dir()
    with _locked(folder):
        info = read_info()
        if info is not None:
            return info
        if not (folder / "server.json").exists():
            return None
        return _spawn(folder)


def _previous_port(path: Path) -> str:
    """The port of the daemon that last wrote ``path`` (to come back where clients look), or "0"."""
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        port = int(json.loads(path.read_text())["port"])
        if 0 < port < 65536:
            return str(port)
    return "0"


def _spawn(folder: Path) -> dict[str, Any]:
    info_path = folder / "server.json"
    port = os.environ.get("LIVEWIDGET_EMBEDDED_PORT") or _previous_port(info_path)
    try:
        return _spawn_on(folder, port)
    except ServerError:
        if port == "0" or os.environ.get("LIVEWIDGET_EMBEDDED_PORT"):
            raise
        return _spawn_on(folder, "0")  # the old port is taken by something else: any free one


def _spawn_on(folder: Path, port: str) -> dict[str, Any]:
    creds = _credentials(folder)
    info_path = folder / "server.json"
    with contextlib.suppress(FileNotFoundError):
        info_path.unlink()
    env = dict(os.environ)
    log_path = folder / "server.log"  # the server's log, rotated by the daemon (server/_logs.py)
    out_path = folder / "server.out"  # its stdout and stderr: the banner, or why it could not start
    env.update(
        LIVEWIDGET_APP_ID=creds["app_id"],
        LIVEWIDGET_KEY=creds["key"],
        LIVEWIDGET_SECRET=creds["secret"],
        LIVEWIDGET_LOG_FILE=str(log_path),
    )
    for name in (
        "LIVEWIDGET_URL",
        "LIVEWIDGET_CONFIG",
        "LIVEWIDGET_HOST",
        "LIVEWIDGET_PORT",
        "LIVEWIDGET_SECRET_FILE",  # the daemon's secret is the one above (serve refuses both)
    ):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "livewidget", "serve", "--host", "127.0.0.1", "--port", port]
    cmd += ["--runtime-file", str(info_path)]
    # Truncated at each start: it only ever holds one run's banner and fatal errors, never grows.
    log_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # posix_spawn with setsid: the daemon outlives the kernel and its restarts, and no Popen handle
        # is left to warn at exit; _alive() reaps it if it exits while we run.
        pid = os.posix_spawn(
            sys.executable,
            cmd,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(log_fd)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not _alive(pid):
            raise ServerError(f"the embedded server exited at start; see {out_path} and {log_path}")
        info = read_info()
        if info is not None:
            return info
        time.sleep(0.05)
    os.kill(pid, signal.SIGTERM)
    raise ServerError(
        f"the embedded server did not start within {START_TIMEOUT:.0f} s; see {out_path} and {log_path}"
    )


def stop_embedded(timeout: float = 10.0) -> dict[str, Any] | None:
    """Stop the running embedded server; returns its record, or ``None`` if none was running."""
    info = read_info()
    if info is None:
        return None
    pid = int(info["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    return info

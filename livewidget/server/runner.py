"""Running the server: in a background thread (:class:`LocalServer`) or in the foreground (CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import threading
from collections.abc import Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any

from ..exceptions import ServerError
from ..protocol.config import AppConfig, ServerLimits
from .app import PusherServer
from .history import HistoryDriver

__all__ = ["LocalServer", "new_app", "run_forever"]


def new_app(
    app_id: str | None = None, key: str | None = None, secret: str | None = None, **settings: Any
) -> AppConfig:
    """An :class:`AppConfig` with fresh random credentials for whatever is not given."""
    return AppConfig(
        app_id=app_id or str(secrets.randbelow(9_000_000) + 1_000_000),
        key=key or secrets.token_hex(10),
        secret=secret or secrets.token_hex(16),
        **settings,
    )


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # optional speed-up (the `fast` extra)
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class LocalServer:
    """The embedded server in a background thread, for tests and embedding.

    >>> with LocalServer() as server:          # port 0: a free port on 127.0.0.1
    ...     print(server.port, server.key)

    Parameters
    ----------
    host, port:
        Where to listen. Loopback and a free port by default.
    apps:
        Apps to serve; by default one app with fresh credentials built from ``app_id``, ``key``,
        ``secret`` and ``**settings`` (any :class:`AppConfig` field, e.g. ``client_events=False``).
    limits:
        Per-connection limits (:class:`ServerLimits`); the defaults when ``None``.
    history:
        Channel history storage (a :class:`~.history.HistoryDriver`, used by one server only); by
        default in memory, ``False`` for none.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        apps: Sequence[AppConfig] | None = None,
        app_id: str | None = None,
        key: str | None = None,
        secret: str | None = None,
        limits: ServerLimits | None = None,
        history: HistoryDriver | bool | None = None,
        **settings: Any,
    ) -> None:
        self.host = host
        self.limits = limits
        self.port = port
        self.history = history
        self.apps = list(apps) if apps else [new_app(app_id, key, secret, **settings)]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: PusherServer | None = None
        self._stopped: asyncio.Event | None = None

    # The first app's credentials, for the common single-app case.
    @property
    def app(self) -> AppConfig:
        """The first (usually only) app."""
        return self.apps[0]

    @property
    def app_id(self) -> str:
        """The first app's id."""
        return self.app.app_id

    @property
    def key(self) -> str:
        """The first app's key."""
        return self.app.key

    @property
    def secret(self) -> str:
        """The first app's secret."""
        return self.app.secret

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The WebSocket URL pusher-js would use for the first app."""
        return f"ws://{self.host}:{self.port}/app/{self.key}?protocol=7&client=py&version=0"

    @property
    def server(self) -> PusherServer:
        """The running :class:`PusherServer` (touch only from its loop)."""
        if self._server is None:
            raise ServerError("the server is not running; call start() first")
        return self._server

    def start(self, timeout: float = 10.0) -> LocalServer:
        """Start serving; returns once the port is bound."""
        if self._thread is not None:
            raise ServerError("this LocalServer is already running")
        ready = threading.Event()
        error: list[BaseException] = []

        def main() -> None:
            loop = self._loop = _new_loop()
            asyncio.set_event_loop(loop)
            try:
                self._server = PusherServer(
                    self.apps, host=self.host, port=self.port, limits=self.limits, history=self.history
                )
                loop.run_until_complete(self._server.start())
                self.port = self._server.port
                self._stopped = asyncio.Event()
            except BaseException as exc:
                error.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_until_complete(self._stopped.wait())
                loop.run_until_complete(self._server.stop())
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name="livewidget-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise ServerError(f"the server did not start within {timeout} s")
        if error:
            self._thread = None
            raise ServerError(
                f"could not start the server on {self.host}:{self.port}: {error[0]}"
            ) from error[0]
        return self

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop and return its result (for tests)."""
        if self._loop is None:
            raise ServerError("the server is not running")

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (clients are told to reconnect with 4200) and join the thread."""
        if self._thread is None or self._loop is None or self._stopped is None:
            return
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout)
        self._thread = None
        self._server = None

    def with_settings(self, **settings: Any) -> LocalServer:
        """A new, stopped LocalServer on the same port with the same apps, changed by ``settings``."""
        apps = [replace(a, **settings) for a in self.apps]
        return LocalServer(self.host, self.port, apps=apps, limits=self.limits)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def run_forever(server: PusherServer, on_ready: Any = None) -> None:
    """Serve in the foreground until SIGINT or SIGTERM, then stop cleanly."""
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    stop = asyncio.Event()

    async def main() -> None:
        await server.start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        if on_ready is not None:
            on_ready(server)
        await stop.wait()
        await server.stop()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()

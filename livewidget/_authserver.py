"""The kernel's channel-authorization endpoint, so the browser can subscribe while a cell runs.

Browser-to-kernel comm messages wait while a cell runs (notebook-widgets.md §1.5), so pusher-js's
authorizer instead POSTs to this small HTTP endpoint on 127.0.0.1, served from the I/O thread. Each
widget registers a signer under a random token; the secret never leaves the kernel: only
signatures do, and only for the channels that widget asked for. When the browser cannot reach this
endpoint (Jupyter on another machine), the widget falls back to a comm message; a page served by a
Jupyter server on this machine reaches it through the livewidget extension instead (``id``, see
:mod:`livewidget._routes`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ._loop import submit
from ._routes import register_auth, unregister_auth
from .protocol._json import loads_bounded

__all__ = ["AuthEndpoint", "endpoint"]

log = logging.getLogger("livewidget.auth")

Signer = Callable[[str, str], dict[str, Any]]  # (socket_id, channel) -> {"auth", ...}; raises to refuse

_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    # Chrome's Private Network Access preflight (a page asking a loopback address).
    "Access-Control-Allow-Private-Network": "true",
    "Cache-Control": "no-store",
}


class AuthEndpoint:
    """One per process: ``url`` takes ``{"token", "socket_id", "channel_name"}`` as a JSON body."""

    def __init__(self) -> None:
        self._signers: dict[str, Signer] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.id = ""  # for the Jupyter extension's POST {base_url}livewidget/auth/{id}

    async def _start(self) -> None:
        app = web.Application(client_max_size=16 * 1024)
        app.router.add_route("OPTIONS", "/auth", self._preflight)
        app.router.add_route("POST", "/auth", self._auth)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{port}/auth"

    def register(self, signer: Signer) -> str:
        """Register ``signer``; returns its token."""
        token = secrets.token_urlsafe(24)
        self._signers[token] = signer
        return token

    def unregister(self, token: str) -> None:
        """Forget a widget's signer."""
        self._signers.pop(token, None)

    async def _preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers=_CORS)

    async def _auth(self, request: web.Request) -> web.Response:
        try:
            body = loads_bounded(await request.read())  # deep nesting: a 400, not a RecursionError
            token, socket_id, channel = body["token"], body["socket_id"], body["channel_name"]
        except (ValueError, KeyError, TypeError):
            return _json({"error": "expected JSON {token, socket_id, channel_name}"}, 400)
        if not isinstance(socket_id, str) or not isinstance(channel, str):
            return _json({"error": "socket_id and channel_name must be strings"}, 400)
        signer = self._signers.get(token) if isinstance(token, str) else None
        if signer is None:
            return _json({"error": "unknown widget token"}, 403)
        try:
            answer = await asyncio.get_running_loop().run_in_executor(None, signer, socket_id, channel)
        except PermissionError as exc:
            return _json({"error": str(exc)}, 403)
        except Exception as exc:
            log.exception("authorizing %s failed", channel)
            return _json({"error": f"authorization failed: {exc}"}, 500)
        return _json(answer, 200)


def _json(body: dict[str, Any], status: int) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json", headers=_CORS)


_lock = threading.Lock()
_endpoint: AuthEndpoint | None = None


def endpoint() -> AuthEndpoint:
    """The process's endpoint, started on first use."""
    global _endpoint
    with _lock:
        if _endpoint is None:
            ep = AuthEndpoint()
            submit(ep._start()).result(10)
            with contextlib.suppress(OSError):
                ep.id = register_auth(int(ep.url.rsplit(":", 1)[1].split("/")[0]))
                atexit.register(unregister_auth, ep.id)
            _endpoint = ep
        return _endpoint

"""Handlers of the ``jupyter`` route: same-origin WebSocket and REST forwarding to registered servers.

Security (what protects what; README "Where it works"):

- who: every handler needs a Jupyter login. The WebSocket uses ``@ws_authenticated`` (403, never a
  redirect to the login page) and Jupyter's origin check (``WebSocketMixin.check_origin``: Origin must
  match Host or the server's allow_origin settings); REST handlers are ``APIHandler`` (403 when not
  logged in, XSRF checked on POST). On JupyterHub each user's server only accepts that user's cookie.
  Then the server's authorizer must allow ``execute`` (``read`` for GET) on ``kernels``: talking to the
  live server is as much as running a kernel.
- where: the target is looked up by id among the servers registered by the user this Jupyter server
  runs as (:func:`livewidget._routes.targets`: loopback only, files owned by the user, in a 0700
  folder). Nothing in the URL names a host or a port; an unknown id, or a key / app id that is not the
  registered one, is 404 before anything is opened.
- signing: ``POST livewidget/auth/{id}`` reaches only a signing endpoint a kernel of this user
  registered (``auth/{id}.json``), which still checks the widget's own token.
- how much: at most :data:`MAX_CONNECTIONS` forwarded sockets per Jupyter server; frames over
  :data:`MAX_MESSAGE` bytes close the socket (1009, as tornado does); when more than :data:`MAX_BUFFER`
  bytes wait to be written in either direction the socket is closed with Pusher's 4100 (over capacity,
  pusher-js reconnects after a pause); REST bodies over :data:`MAX_BODY` get 413, answers are capped
  the same, and time out after :data:`REST_TIMEOUT` seconds.
- when the upstream goes away, the browser's socket is closed with the upstream's Pusher close code
  (4000-4299) or 4200 (reconnect), so pusher-js reconnects through the route again; opening the
  upstream fails with 502 before the upgrade, which pusher-js retries with backoff.

Keep-alive: ``WebSocketMixin`` pings the browser every 30 s (under nginx/ALB idle timeouts).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, ClassVar

from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.utils import ensure_async, url_path_join
from tornado import httpclient, web
from tornado.websocket import WebSocketClosedError, WebSocketHandler, websocket_connect

from .. import _routes

log = logging.getLogger("livewidget.jupyter")

# forwarded WebSockets per Jupyter server; --ServerApp.tornado_settings={"livewidget_max_connections": N}
MAX_CONNECTIONS = 256
MAX_MESSAGE = 256 * 1024  # bytes per frame, as the embedded server's max_frame_size
MAX_BUFFER = 4 * 1024 * 1024  # unwritten bytes per direction, as the server's max_send_buffer
MAX_BODY = 1024 * 1024  # REST request and answer bodies, as the server's max_request_size
MAX_AUTH_BODY = 16 * 1024  # bytes, as the kernel's signing endpoint accepts
REST_TIMEOUT = 10.0  # seconds
CONNECT_TIMEOUT = 10.0  # seconds to open the upstream WebSocket
OVER_CAPACITY = 4100  # Pusher: "over capacity", the client reconnects after a pause
RECONNECT = 4200  # Pusher: "generic reconnect immediately"

_ID = r"([0-9a-f]{20})"


def _version() -> str:
    from .. import __version__

    return __version__


def _query(raw: str) -> str:
    """``?query`` to forward, without Jupyter's own credentials (``token``, ``_xsrf``): those stay here."""
    kept = [p for p in raw.split("&") if p and p.split("=", 1)[0] not in ("token", "_xsrf")]
    return "?" + "&".join(kept) if kept else ""


def _target(server_id: str) -> _routes.Target:
    target = _routes.targets().get(server_id)
    if target is None:
        raise web.HTTPError(404, "no livewidget server with this id is registered by this user")
    return target


class InfoHandler(APIHandler):
    """``GET livewidget/info``: the version and the ids of this user's registered servers."""

    auth_resource = "kernels"

    @web.authenticated
    async def get(self) -> None:
        await _allow(self, "read")
        self.finish({"livewidget": _version(), "servers": sorted(_routes.targets())})


class ServerInfoHandler(APIHandler):
    """``GET livewidget/{id}/info``: the identity the browser checks before it counts the route."""

    auth_resource = "kernels"

    @web.authenticated
    async def get(self, server_id: str) -> None:
        await _allow(self, "read")
        self.finish({"livewidget": _version(), **_target(server_id).info()})


async def _allow(handler: JupyterHandler, action: str) -> None:
    user = handler.current_user
    if not user or not await ensure_async(handler.authorizer.is_authorized(handler, user, action, "kernels")):
        raise web.HTTPError(403)


class RestHandler(APIHandler):
    """``livewidget/{id}/apps/{app_id}/...``: the registered server's REST API, bounded."""

    auth_resource = "kernels"

    @web.authenticated
    async def get(self, server_id: str, app_id: str, rest: str) -> None:
        await _allow(self, "read")
        await self._forward(server_id, app_id, rest)

    @web.authenticated
    async def post(self, server_id: str, app_id: str, rest: str) -> None:
        await _allow(self, "execute")
        await self._forward(server_id, app_id, rest)

    async def _forward(self, server_id: str, app_id: str, rest: str) -> None:
        target = _target(server_id)
        if app_id != target.app_id:
            raise web.HTTPError(404, "not the registered app")
        body = self.request.body if self.request.method == "POST" else None
        if body is not None and len(body) > MAX_BODY:
            raise web.HTTPError(413, f"request body over {MAX_BODY} bytes")
        url = f"http://{target.host}:{target.port}/apps/{app_id}/{rest}{_query(self.request.query)}"
        client = httpclient.AsyncHTTPClient(force_instance=True, max_body_size=MAX_BODY)
        try:
            resp = await client.fetch(
                url,
                method=self.request.method or "GET",
                body=body,
                headers={"Content-Type": self.request.headers.get("Content-Type", "application/json")},
                request_timeout=REST_TIMEOUT,
                connect_timeout=CONNECT_TIMEOUT,
                follow_redirects=False,
                raise_error=False,
            )
        except Exception as exc:  # unreachable, timed out, or an answer over MAX_BODY
            raise web.HTTPError(502, f"the livewidget server did not answer: {exc}") from None
        finally:
            client.close()
        if resp.code == 599:
            raise web.HTTPError(502, f"the livewidget server did not answer: {resp.error}")
        self.set_status(resp.code)
        self.set_header("Content-Type", resp.headers.get("Content-Type", "application/json"))
        self.finish(resp.body or b"")


class AuthHandler(APIHandler):
    """``POST livewidget/auth/{auth_id}``: a kernel's channel-signing endpoint, for pages not on loopback.

    The body (``{"token", "socket_id", "channel_name"}``, at most :data:`MAX_AUTH_BODY` bytes) goes
    unchanged to the registered endpoint, which still requires the widget's token; the answer comes
    back unchanged. XSRF is checked by ``APIHandler`` for cookie-authenticated requests.
    """

    auth_resource = "kernels"

    @web.authenticated
    async def post(self, aid: str) -> None:
        await _allow(self, "execute")
        port = _routes.auth_port(aid)
        if port is None:
            raise web.HTTPError(404, "no livewidget kernel with this id is registered by this user")
        if len(self.request.body) > MAX_AUTH_BODY:
            raise web.HTTPError(413, f"request body over {MAX_AUTH_BODY} bytes")
        client = httpclient.AsyncHTTPClient(force_instance=True, max_body_size=MAX_AUTH_BODY)
        try:
            resp = await client.fetch(
                f"http://127.0.0.1:{port}/auth",
                method="POST",
                body=self.request.body,
                headers={"Content-Type": "text/plain"},
                request_timeout=REST_TIMEOUT,
                connect_timeout=CONNECT_TIMEOUT,
                follow_redirects=False,
                raise_error=False,
            )
        except Exception as exc:
            raise web.HTTPError(502, f"the kernel did not answer: {exc}") from None
        finally:
            client.close()
        if resp.code == 599:
            raise web.HTTPError(502, f"the kernel did not answer: {resp.error}")
        self.set_status(resp.code)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(resp.body or b"")


class SocketHandler(WebSocketMixin, WebSocketHandler, JupyterHandler):
    """``livewidget/{id}/app/{key}``: one browser WebSocket forwarded to the registered server."""

    auth_resource = "kernels"
    open_count: ClassVar[int] = 0

    upstream: Any = None
    _to_browser = 0  # bytes handed to tornado, not yet written to the browser
    _to_upstream = 0
    _pump_task: asyncio.Task[None] | None = None
    _counted = False

    @property
    def max_message_size(self) -> int:  # tornado closes with 1009 above it
        return MAX_MESSAGE

    def get_compression_options(self) -> None:
        return None  # the Pusher server does not compress either

    @ws_authenticated
    async def get(self, server_id: str, key: str) -> None:
        await _allow(self, "execute")
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            raise web.HTTPError(400, "a WebSocket upgrade is expected here")
        if not self.check_origin():  # before opening anything upstream
            raise web.HTTPError(403, "cross-origin WebSocket refused")
        target = _target(server_id)
        if key != target.key:
            raise web.HTTPError(404, "not the registered app key")
        limit = int(self.settings.get("livewidget_max_connections", MAX_CONNECTIONS))
        if SocketHandler.open_count >= limit:
            raise web.HTTPError(503, f"over {limit} livewidget connections")
        SocketHandler.open_count += 1  # counted from here, so concurrent opens cannot pass the limit
        self._counted = True
        try:
            url = f"ws://{target.host}:{target.port}/app/{key}{_query(self.request.query)}"
            try:
                self.upstream = await websocket_connect(
                    url, connect_timeout=CONNECT_TIMEOUT, max_message_size=MAX_MESSAGE
                )
            except Exception as exc:
                raise web.HTTPError(502, f"cannot reach the livewidget server: {exc}") from None
            await super().get(server_id, key)
        finally:
            if self.ws_connection is None:  # no upgrade: nothing will call on_close
                self._release()

    def open(self, *args: Any, **kwargs: Any) -> None:
        super().open()  # WebSocketMixin: keep-alive pings
        self._pump_task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        """Upstream to browser, until either side closes."""
        up = self.upstream
        try:
            while True:
                msg = await up.read_message()
                if msg is None or self.ws_connection is None:
                    break
                if self._to_browser > MAX_BUFFER:
                    self.log.warning("livewidget: closing a WebSocket whose browser reads too slowly")
                    self._close_both(OVER_CAPACITY, "the browser reads too slowly")
                    return
                n = len(msg)
                self._to_browser += n
                fut = self.write_message(msg, binary=isinstance(msg, bytes))
                fut.add_done_callback(functools.partial(self._written, "_to_browser", n))
        except WebSocketClosedError:
            pass
        except Exception:
            log.exception("livewidget: forwarding to the browser failed")
        code = up.close_code if up.close_code and 4000 <= up.close_code < 4300 else RECONNECT
        reason = up.close_reason or "the livewidget server closed the connection"
        reason = reason.encode()[:120].decode(errors="ignore")  # a close reason is at most 123 bytes
        self._close_both(code, reason)

    def _written(self, attr: str, n: int, fut: Any) -> None:
        setattr(self, attr, getattr(self, attr) - n)
        if not fut.cancelled():
            fut.exception()  # retrieved: a closed stream is handled by on_close / the pump

    def on_message(self, message: str | bytes) -> None:
        up = self.upstream
        if up is None or up.protocol is None:
            return
        if self._to_upstream > MAX_BUFFER:
            self.log.warning("livewidget: closing a WebSocket whose server reads too slowly")
            self._close_both(OVER_CAPACITY, "the livewidget server reads too slowly")
            return
        n = len(message)
        self._to_upstream += n
        try:
            fut = up.write_message(message, binary=isinstance(message, bytes))
        except WebSocketClosedError:
            self._to_upstream -= n
            return  # the pump sees the close and closes the browser side
        fut.add_done_callback(functools.partial(self._written, "_to_upstream", n))

    def _close_both(self, code: int, reason: str) -> None:
        if self.upstream is not None:
            self.upstream.close(1000)
        if self.ws_connection is not None:
            self.close(code, reason)

    def on_close(self) -> None:
        pinger: Any = getattr(self, "ping_callback", None)  # WebSocketMixin's keep-alive
        if pinger is not None:
            pinger.stop()
        if self.upstream is not None:
            self.upstream.close(1000)
        self._release()

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            SocketHandler.open_count -= 1
        if self.upstream is not None and self.ws_connection is None:
            self.upstream.close(1000)


def setup_handlers(serverapp: Any) -> None:
    """Add the routes under the server's base_url."""
    web_app = serverapp.web_app
    base = url_path_join(web_app.settings["base_url"], "livewidget")
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "info"), InfoHandler),
            (url_path_join(base, "auth", _ID), AuthHandler),
            (url_path_join(base, _ID, "info"), ServerInfoHandler),
            (url_path_join(base, _ID, r"app/([^/?]{1,200})"), SocketHandler),
            (url_path_join(base, _ID, r"apps/([^/?]{1,100})/(.*)"), RestHandler),
        ],
    )
    serverapp.log.info("livewidget: the jupyter route is served at %s/", base)

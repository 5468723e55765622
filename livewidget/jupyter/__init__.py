"""The livewidget Jupyter server extension: the ``jupyter`` route (issue 12).

Installing the package enables it: the wheel ships ``etc/jupyter/jupyter_server_config.d/livewidget.json``
(``{"ServerApp": {"jpserver_extensions": {"livewidget.jupyter": true}}}``). A server started from
a source checkout enables it with ``--ServerApp.jpserver_extensions='{"livewidget.jupyter": True}'``.
It is loaded when the Jupyter server starts, from the server's environment.

What it serves, under the server's ``base_url`` (see :mod:`livewidget.jupyter._handlers`):

- ``GET livewidget/info`` and ``GET livewidget/{server_id}/info``: the version, and the identity of one
  registered server (nothing secret, not even its address);
- ``livewidget/{server_id}/app/{key}``: a WebSocket forwarded to that server's Pusher endpoint;
- ``livewidget/{server_id}/apps/{app_id}/...``: its REST API (``GET``/``POST``), forwarded;
- ``POST livewidget/auth/{auth_id}``: a kernel's channel-signing endpoint (private and presence
  channels, answered while a cell runs).

Only servers this user registered are reachable (:func:`livewidget._routes.targets`), every request
needs a valid Jupyter login (403 otherwise) and passes Jupyter's origin checks. tornado and
jupyter_server are imported only in this package.
"""

from __future__ import annotations

from typing import Any

__all__ = ["_jupyter_server_extension_points", "_load_jupyter_server_extension"]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "livewidget.jupyter"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from ._handlers import setup_handlers

    setup_handlers(serverapp)

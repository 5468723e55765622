"""Scale-out adapters: one process (:class:`LocalAdapter`) or several over Redis (:class:`RedisAdapter`).

:class:`RedisAdapter` needs the ``redis`` extra (``pip install 'livewidget[redis]'``); it is imported
on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...exceptions import ConfigurationError
from .base import Adapter, Runner
from .local import LocalAdapter

if TYPE_CHECKING:
    from .redis import RedisAdapter

__all__ = ["Adapter", "LocalAdapter", "RedisAdapter", "Runner"]


def __getattr__(name: str) -> Any:
    if name == "RedisAdapter":
        try:
            from .redis import RedisAdapter
        except ImportError as exc:
            if not (exc.name or "").partition(".")[0] == "redis":
                raise
            # `serve --redis` without the extra: say what to install, not a ModuleNotFoundError traceback
            raise ConfigurationError(
                "sharing apps over Redis needs redis-py, which is not installed: "
                "pip install 'livewidget[redis]'"
            ) from None
        return RedisAdapter
    raise AttributeError(name)

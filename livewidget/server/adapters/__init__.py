"""Scale-out adapters: one process (:class:`LocalAdapter`) or several over Redis (:class:`RedisAdapter`).

:class:`RedisAdapter` needs the ``redis`` extra (``pip install 'livewidget[redis]'``); it is imported
on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Adapter, Runner
from .local import LocalAdapter

if TYPE_CHECKING:
    from .redis import RedisAdapter

__all__ = ["Adapter", "LocalAdapter", "RedisAdapter", "Runner"]


def __getattr__(name: str) -> Any:
    if name == "RedisAdapter":
        from .redis import RedisAdapter

        return RedisAdapter
    raise AttributeError(name)

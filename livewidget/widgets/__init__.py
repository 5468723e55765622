"""The anywidget classes: thin, one per widget, over the shared :class:`LiveWidget` base."""

from ._base import LiveWidget
from .feed import Feed

__all__ = ["Feed", "LiveWidget"]

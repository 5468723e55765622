"""The anywidget classes: thin, one per widget, over the shared :class:`LiveWidget` base."""

from ._base import LiveWidget
from .chart import LiveChart
from .chat import Chat
from .feed import Feed
from .progress_board import ProgressBoard

__all__ = ["Chat", "Feed", "LiveChart", "LiveWidget", "ProgressBoard"]

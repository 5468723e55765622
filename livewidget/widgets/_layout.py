"""Small layouts of several widgets (the integrations' combined views)."""

from __future__ import annotations

from typing import Any

__all__ = ["column"]


def column(*children: Any) -> Any:
    """The widgets one above the other (an ``ipywidgets.VBox``, installed with anywidget)."""
    import ipywidgets

    return ipywidgets.VBox(list(children))

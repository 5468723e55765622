"""When a cell runs: IPython's ``pre_run_cell``/``post_run_cell`` tell the kernel's relay session
(:meth:`livewidget._relay.RelaySession.busy`), which relays widgets on standby meanwhile (issue 12: a
view whose route fails while a cell runs falls back to the relay and stays live). IPython is a notebook
library, so this lives with the widgets, not in ``_relay`` (tests/test_layers.py)."""

from __future__ import annotations

import threading
from typing import Any

from .._relay import session

__all__ = ["watch_cells"]

_lock = threading.Lock()
_watching: Any = None  # the IPython shell whose cells we watch


def _cell_starts(*_args: Any) -> None:
    session().busy(True)


def _cell_ends(*_args: Any) -> None:
    session().busy(False)


def watch_cells() -> bool:
    """Follow the IPython shell's cells (``pre_run_cell``/``post_run_cell``) for standby; once per shell.

    Whether there is a shell: outside IPython (a script, a plain Python process) nothing is relayed on
    standby, and nothing else changes.
    """
    global _watching
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - ipywidgets depends on IPython
        return False
    shell = get_ipython()
    events = getattr(shell, "events", None)
    if shell is None or events is None:
        return False
    with _lock:
        if _watching is shell:
            return True
        _watching = shell
    events.register("pre_run_cell", _cell_starts)
    events.register("post_run_cell", _cell_ends)
    return True

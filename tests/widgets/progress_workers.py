"""Worker functions for the pool tests: importable, so spawned processes can run them."""

from __future__ import annotations

import io
import os
import time

from livewidget import progress


def work(channel: str, i: int, fail: str = "") -> int:
    """One job of 40 steps with its own bar; ``fail``: raise in a with-block ("with") or for body ("body")."""
    kw = {"desc": f"worker {i}", "channel": channel, "file": io.StringIO(), "mininterval": 0.02}
    if fail == "body":
        for k in progress(range(40), **kw):
            time.sleep(0.001)
            if k == 10:
                raise RuntimeError(f"worker {i} failed in the loop")
    with progress(total=40, **kw) as bar:
        for k in range(40):
            time.sleep(0.001)
            if fail == "with" and k == 20:
                raise ValueError(f"worker {i} broke at step {k}")
            bar.update()
    return os.getpid()

"""Integrations against the real frameworks and the embedded server (a LocalServer per module); the
widgets' kernel side is checked as in tests/widgets (comm messages recorded, no browser)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from livewidget.server import LocalServer
from tests.widgets.conftest import comms, creds, server, wait_for

# Keras picks TensorFlow unless told; the `keras` extra installs PyTorch (the integration does the same)
os.environ.setdefault("KERAS_BACKEND", "torch")

__all__ = ["comms", "creds", "server", "wait_for"]


@pytest.fixture
def widgets(server: LocalServer, comms: list[Any]) -> Iterator[Callable[..., Any]]:
    """``make(cls, *args, **kwargs)``: a widget on the test server, subscribed; closed after the test."""
    made: list[Any] = []

    def make(cls: Any, *args: Any, **kwargs: Any) -> Any:
        w = cls(*args, **{**creds(server), **kwargs})
        made.append(w)
        wait_for(lambda: w._receiver.state == "connected" and all(w._receiver.protocol.channels.values()))
        return w

    yield make
    for w in made:
        w.close()

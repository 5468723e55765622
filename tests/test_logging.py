"""livewidget.LogHandler: records on a channel, one Feed row per record (packed), from worker processes."""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import socket
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

import livewidget
from livewidget.server import LocalServer
from tests.widgets.conftest import comms, creds, server, wait_for

__all__ = ["comms", "server"]


@pytest.fixture
def feed(server: LocalServer, comms: Any) -> Iterator[Any]:
    f = livewidget.Feed("logs", history=0, **creds(server))  # each test sees its own records only
    wait_for(lambda: f._receiver.state == "connected" and all(f._receiver.protocol.channels.values()))
    yield f
    f.close()


@pytest.fixture
def logger(server: LocalServer) -> Iterator[tuple[logging.Logger, livewidget.LogHandler]]:
    log = logging.getLogger("app.test")
    handler = livewidget.LogHandler("logs", interval=0.2, **creds(server))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    yield log, handler
    log.removeHandler(handler)
    handler.close()


def test_fields_extra_columns_and_exception_text(feed: Any, logger: Any) -> None:
    log, _ = logger
    log.info("started %s", "job", extra={"job": 7, "shard": "a", "obj": object()})
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.exception("failed")
    wait_for(lambda: len(feed.df) == 2)
    df = feed.df
    first, second = df.iloc[0], df.iloc[1]
    assert (first["event"], first["level"], first["logger"], first["message"]) == (
        "log",
        "INFO",
        "app.test",
        "started job",
    )
    assert (first["job"], first["shard"]) == (7, "a")
    assert first["obj"].startswith("<object object")
    assert (first["host"], first["pid"]) == (socket.gethostname(), os.getpid())
    assert pd.isna(first["exc"])
    assert second["level"] == "ERROR" and second["levelno"] == logging.ERROR
    assert "ZeroDivisionError" in second["exc"] and "Traceback" in second["exc"]


def test_records_are_coalesced_but_one_row_each(feed: Any, logger: Any) -> None:
    log, handler = logger
    for i in range(200):
        log.debug("record %d", i)
    wait_for(lambda: len(feed.df) == 200)
    assert feed.df["message"].tolist() == [f"record {i}" for i in range(200)]
    assert handler._points.events < 20  # packed: a few events, not 200
    assert feed.events[-1]["data"]["message"] == "record 199"


def test_livewidget_own_records_are_not_published(feed: Any, logger: Any) -> None:
    _, handler = logger
    logging.getLogger("livewidget.widgets").addHandler(handler)
    try:
        logging.getLogger("livewidget.widgets").warning("internal")
        logging.getLogger("app.test").warning("mine")
        wait_for(lambda: len(feed.df) == 1)
        handler.flush()
        assert feed.df["message"].tolist() == ["mine"]
    finally:
        logging.getLogger("livewidget.widgets").removeHandler(handler)


def _log_in_child(i: int) -> int:
    logging.getLogger("app.test").warning("from worker %d", i)
    return os.getpid()


def _spawned_setup(url: str) -> None:
    log = logging.getLogger("app.test")
    log.addHandler(livewidget.LogHandler("logs", url=url))
    log.setLevel(logging.INFO)


def test_forked_process_inherits_the_handler(feed: Any, logger: Any) -> None:
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_log_in_child, args=(1,))  # leaves through os._exit: no atexit handlers
    p.start()
    p.join(30)
    assert p.exitcode == 0
    wait_for(lambda: len(feed.df) == 1)
    row = feed.df.iloc[0]
    assert row["message"] == "from worker 1" and row["pid"] == p.pid and row["process"] != "MainProcess"


def test_spawned_pool_workers_with_an_initializer(feed: Any, server: LocalServer) -> None:
    from tests.listen import server_url

    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        2, mp_context=ctx, initializer=_spawned_setup, initargs=(server_url(server),)
    ) as pool:
        pids = set(pool.map(_log_in_child, range(4)))
    wait_for(lambda: len(feed.df) == 4, timeout=10)
    assert sorted(feed.df["message"]) == [f"from worker {i}" for i in range(4)]
    assert set(feed.df["pid"]) == pids

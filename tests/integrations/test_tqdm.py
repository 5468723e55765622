"""livewidget.progress wherever tqdm takes a ``tqdm_class``: thread_map, process_map,
logging_redirect_tqdm and tqdm.keras.TqdmCallback, each ending on a ProgressBoard."""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np

import livewidget
from livewidget.server import LocalServer

from .conftest import creds, wait_for


def square(x: int) -> int:
    return x * x


def test_thread_map_and_process_map(server: LocalServer, widgets: Any) -> None:
    from tqdm.contrib.concurrent import process_map, thread_map

    livewidget.connect(**creds(server))
    try:
        board = widgets(livewidget.ProgressBoard, "t1")
        out = thread_map(
            square,
            range(20),
            tqdm_class=livewidget.progress,
            channel="t1",
            job="threads",
            max_workers=2,
            file=io.StringIO(),
        )
        assert out == [x * x for x in range(20)]
        out = process_map(
            square,
            range(20),
            tqdm_class=livewidget.progress,
            channel="t1",
            job="procs",
            max_workers=2,
            file=io.StringIO(),
        )
        assert out == [x * x for x in range(20)]
        wait_for(lambda: sorted(board.df["status"]) == ["done", "done"])
        df = board.df.set_index("job")
        assert (df.loc["threads", "n"], df.loc["threads", "total"]) == (20, 20)
        assert (df.loc["procs", "n"], df.loc["procs", "total"]) == (20, 20)
    finally:
        livewidget.connect(embedded=True)


def test_logging_redirect_tqdm(server: LocalServer, widgets: Any, capsys: Any) -> None:
    from tqdm.contrib.logging import logging_redirect_tqdm

    livewidget.connect(**creds(server))
    try:
        board = widgets(livewidget.ProgressBoard, "t2")
        log = logging.getLogger("t2")
        stream = io.StringIO()
        with logging_redirect_tqdm(loggers=[log], tqdm_class=livewidget.progress):
            for i in livewidget.progress(range(3), channel="t2", job="redirected", file=stream):
                log.warning("step %d", i)
        assert "step 2" in capsys.readouterr().err  # the records went through progress.write
        wait_for(lambda: board.df["status"].tolist() == ["done"])
        assert board.df.iloc[0]["n"] == 3
    finally:
        livewidget.connect(embedded=True)


def test_tqdm_keras_callback(server: LocalServer, widgets: Any) -> None:
    import keras
    from tqdm.keras import TqdmCallback

    livewidget.connect(**creds(server))
    try:
        board = widgets(livewidget.ProgressBoard, "t3")
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        x = np.zeros((32, 2), dtype="float32")
        cb = TqdmCallback(verbose=1, tqdm_class=livewidget.progress, channel="t3", file=io.StringIO())
        model.fit(x, x[:, 0], epochs=2, batch_size=8, verbose=0, callbacks=[cb])
        wait_for(lambda: len(board.df) >= 1 and set(board.df["status"]) == {"done"})
        epochs = board.df[board.df["unit"] == "epoch"]
        assert (epochs["n"].tolist(), epochs["total"].tolist()) == ([2], [2])
    finally:
        livewidget.connect(embedded=True)

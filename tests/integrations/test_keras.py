"""livewidget.integrations.keras with real Keras 3 (PyTorch backend) on a tiny model built here."""

from __future__ import annotations

from typing import Any

import numpy as np

import livewidget
from livewidget.integrations.keras import LiveCallback
from livewidget.server import LocalServer

from .conftest import creds, wait_for


def tiny_model() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def data(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, (x[:, 0] > 0).astype("float32")


def test_epochs_batches_and_board_reach_the_widgets(server: LocalServer, widgets: Any) -> None:
    chart = widgets(livewidget.LiveChart, "k1", x="epoch", y=["loss", "val_loss"])
    batches = widgets(livewidget.LiveChart, "k1-batch", x="step", y="loss")
    feed = widgets(livewidget.Feed, "k1")
    board = widgets(livewidget.ProgressBoard, "k1-progress")
    x, y = data()
    cb = LiveCallback("k1", progress_channel="k1-progress", batch_interval=0, **creds(server))
    tiny_model().fit(x, y, epochs=3, batch_size=16, validation_split=0.25, verbose=0, callbacks=[cb])

    wait_for(lambda: len(chart.df) == 3 and len(batches.df) == 9 and len(feed.df) == 3)
    df = chart.df
    assert df["epoch"].tolist() == [1, 2, 3]
    for name in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert df[name].notna().all(), name
    assert df["step"].tolist() == [3, 6, 9]  # 48 training samples / 16 per batch
    assert df["run"].nunique() == 1
    assert batches.df["step"].tolist() == list(range(1, 10))
    assert batches.df["epoch"].tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert feed.df["val_loss"].tolist() == df["val_loss"].tolist()  # one row per point in Feed.df too
    wait_for(lambda: len(board.df) == 1 and board.df["status"].tolist() == ["done"])
    row = board.df.iloc[0]
    assert (row["job"], row["n"], row["total"]) == (df["run"][0], 3, 3)
    assert "loss=" in row["postfix"]


def test_early_stopping_is_marked_on_the_board(server: LocalServer, widgets: Any) -> None:
    import keras

    board = widgets(livewidget.ProgressBoard, "k2-progress")
    chart = widgets(livewidget.LiveChart, "k2", x="epoch", y="loss")
    x, y = data()
    stop = keras.callbacks.EarlyStopping(monitor="loss", min_delta=10.0, patience=0)  # stops after 2 epochs
    cb = LiveCallback("k2", batch_channel=None, progress_channel="k2-progress", **creds(server))
    tiny_model().fit(x, y, epochs=20, batch_size=32, verbose=0, callbacks=[cb, stop])
    wait_for(lambda: len(chart.df) == 2 and board.df["status"].tolist() == ["done"])
    row = board.df.iloc[0]
    assert (row["n"], row["total"]) == (2, 20)
    assert "stopped early at epoch 2" in row["postfix"]


def test_view_shows_the_charts_and_the_board(server: LocalServer, comms: Any) -> None:
    cb = LiveCallback("k3", **creds(server))
    box = cb.view()
    try:
        kinds = [w._kind for w in box.children]
        assert kinds == ["chart", "chart", "progress"]
        assert box.children[0].channels == ["k3"] and box.children[0].x == "epoch"
        assert box.children[1].channels == ["k3-batch"] and box.children[1].x == "step"
    finally:
        for w in box.children:
            w.close()


def test_torch_backend_is_picked_when_the_configured_one_is_missing(tmp_path: Any) -> None:
    """Keras defaults to TensorFlow (also in a keras.json it writes); the `keras` extra installs PyTorch,
    so without TensorFlow the integration selects the torch backend before Keras is imported."""
    import json
    import os
    import subprocess
    import sys

    (tmp_path / "keras.json").write_text(json.dumps({"backend": "tensorflow"}))
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(tmp_path)
    code = "import livewidget.integrations.keras, keras; print(keras.backend.backend())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "torch"

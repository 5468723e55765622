"""A Keras training (``livewidget.integrations.keras.LiveCallback``) updates a ``LiveChart`` in a real
JupyterLab and Chromium while the cell that runs ``model.fit`` is still busy."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CHART = ".jp-NotebookPanel:visible .lw-chart"
EPOCHS = 12

SETUP = """import json, time
import numpy as np
from livewidget.integrations.keras import LiveCallback
import keras

cb = LiveCallback("keras-e2e", progress_channel="keras-e2e-progress")
chart = cb.chart(y=["loss", "val_loss"])
chart"""

FIT = f"""keras.utils.set_random_seed(0)
x = np.random.default_rng(0).normal(size=(256, 4)).astype("float32")
y = (x[:, 0] > 0).astype("float32")
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer="adam", loss="binary_crossentropy")
slow = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: time.sleep(0.6))  # a longer epoch
print("FITTING", flush=True)
model.fit(x, y, epochs={EPOCHS}, batch_size=32, validation_split=0.25, verbose=0, callbacks=[cb, slow])
print("DONE", flush=True)"""


def attrs(nb: Any) -> dict[str, str]:
    return dict(
        nb.evaluate_panel(
            "const el = panel.node.querySelector('.lw-chart'); return el ? {...el.dataset} : {};"
        )
    )


def number(nb: Any, name: str) -> int:
    value = attrs(nb).get(name, "")
    return int(value) if value.isdigit() else -1


def test_keras_training_updates_the_chart_while_the_cell_runs(notebooks: Any) -> None:
    nb = notebooks("keras_live.ipynb", [SETUP, FIT])
    nb.run_all()
    nb.widget(".lw-chart", timeout=60)  # importing Keras and PyTorch takes a few seconds
    nb.page.locator(f'{CHART} .lw-state[data-state="connected"]').wait_for(state="visible", timeout=30_000)
    nb.wait_output(1, "FITTING", timeout=60)

    # Epoch points are drawn while model.fit is still running in the cell.
    wait_until(lambda: number(nb, "received") >= 3, 30, "epoch points while the cell runs", interval=0.2)
    assert nb.is_running(1), f"the cell should still be running: {nb.cell_state(1)}"
    assert number(nb, "received") < EPOCHS
    nb.screenshot("keras-live-light-widget", CHART)

    nb.wait_cell_done(1, timeout=90)
    assert "DONE" in nb.output_text(1)
    wait_until(lambda: number(nb, "received") == EPOCHS, 10, "every epoch drawn")
    assert number(nb, "skipped") in (0, -1)
    assert not [line for line in nb.console if line.startswith("pageerror")], nb.console
    record = nb.kernel_json(
        "df = chart.df\n"
        "print(json.dumps({'epochs': df['epoch'].tolist(), 'val': int(df['val_loss'].notna().sum())}))"
    )
    assert record == {"epochs": list(range(1, EPOCHS + 1)), "val": EPOCHS}

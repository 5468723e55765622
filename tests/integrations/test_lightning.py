"""livewidget.integrations.lightning with real PyTorch Lightning on a tiny module built here."""

from __future__ import annotations

from typing import Any

import pytest

import livewidget
from livewidget.server import LocalServer

from .conftest import creds, wait_for

# Lightning's own notices on a tiny CPU run (few workers, few batches; a pytree deprecation of torch)
pytestmark = pytest.mark.filterwarnings(
    "ignore::FutureWarning", "ignore:.*num_workers.*", "ignore:.*log_every_n_steps.*"
)


def module(fail_at: int | None = None) -> Any:
    import lightning.pytorch as pl
    import torch

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if fail_at is not None and self.current_epoch == fail_at:
                raise RuntimeError("diverged")
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x).squeeze(-1), y)
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x).squeeze(-1), y))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Tiny()


def loaders() -> tuple[Any, Any]:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x[:, 0] * 2
    return DataLoader(TensorDataset(x[:48], y[:48]), batch_size=16), DataLoader(
        TensorDataset(x[48:], y[48:]), batch_size=16
    )


def trainer(callbacks: list[Any], epochs: int) -> Any:
    import lightning.pytorch as pl

    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


def test_epochs_batches_and_board(server: LocalServer, widgets: Any) -> None:
    from livewidget.integrations.lightning import LiveCallback

    chart = widgets(livewidget.LiveChart, "pl1", x="epoch", y=["train_loss", "val_loss"])
    batches = widgets(livewidget.LiveChart, "pl1-batch", x="step", y="train_loss_step")
    board = widgets(livewidget.ProgressBoard, "pl1-progress")
    cb = LiveCallback("pl1", batch_interval=0, progress_channel="pl1-progress", **creds(server))
    train, val = loaders()
    trainer([cb], 3).fit(module(), train, val)
    wait_for(lambda: len(chart.df) == 3 and len(batches.df) == 9 and board.df["status"].tolist() == ["done"])
    df = chart.df
    assert df["epoch"].tolist() == [0, 1, 2]  # as Lightning prints epochs
    assert df["step"].tolist() == [3, 6, 9]
    assert df["val_loss"].notna().all() and df["train_loss_epoch"].notna().all()
    assert df["train_loss"].iloc[-1] < df["train_loss"].iloc[0]
    assert batches.df["step"].tolist() == list(range(1, 10))
    row = board.df.iloc[0]
    assert (row["n"], row["total"]) == (3, 3) and "val_loss=" in row["postfix"]


def test_early_stopping_and_failure_are_marked(server: LocalServer, widgets: Any) -> None:
    import lightning.pytorch as pl

    from livewidget.integrations.lightning import LiveCallback

    board = widgets(livewidget.ProgressBoard, "pl2-progress")
    train, val = loaders()
    stop = pl.callbacks.EarlyStopping(monitor="val_loss", min_delta=100.0, patience=0)
    cb = LiveCallback(
        "pl2", run="stops", batch_channel=None, progress_channel="pl2-progress", **creds(server)
    )
    trainer([cb, stop], 20).fit(module(), train, val)
    cb2 = LiveCallback(
        "pl2", run="fails", batch_channel=None, progress_channel="pl2-progress", **creds(server)
    )
    with pytest.raises(RuntimeError, match="diverged"):
        trainer([cb2], 5).fit(module(fail_at=1), train, val)
    wait_for(lambda: len(board.df) == 3 and "running" not in set(board.df["status"]))
    rows = board.df.set_index("job")  # the failed epoch's row stays (a done one leaves the board)
    assert rows.loc["fails/epoch-1", "status"] == "failed"
    assert rows.loc["stops", "status"] == "done" and "stopped early" in rows.loc["stops", "postfix"]
    assert rows.loc["fails", "status"] == "failed" and "diverged" in rows.loc["fails", "error"]

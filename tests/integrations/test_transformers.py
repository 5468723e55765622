"""livewidget.integrations.transformers with the real Hugging Face Trainer on a tiny BERT made from a
config here (no download: random weights, a few steps on the CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import livewidget
from livewidget.server import LocalServer

from .conftest import creds, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def tiny() -> tuple[Any, list[dict[str, Any]]]:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=32,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=8,
        max_position_embeddings=16,
        num_labels=2,
    )
    model = transformers.BertForSequenceClassification(config)
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": torch.randint(1, 32, (6,), generator=g), "labels": int(i % 2)} for i in range(32)]
    return model, data


def args(tmp: Path, **extra: Any) -> Any:
    import transformers

    base = dict(
        output_dir=str(tmp),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        learning_rate=1e-2,
        dataloader_num_workers=0,
        seed=0,
    )
    return transformers.TrainingArguments(**{**base, **extra})


def test_trainer_logs_and_board(server: LocalServer, widgets: Any, tmp_path: Path) -> None:
    import transformers

    from livewidget.integrations.transformers import LiveCallback

    chart = widgets(livewidget.LiveChart, "hf1", x="step", y=["loss", "eval_loss"], missing="skip")
    board = widgets(livewidget.ProgressBoard, "hf1-progress")
    model, data = tiny()
    cb = LiveCallback("hf1", progress_channel="hf1-progress", **creds(server))
    trainer = transformers.Trainer(
        model=model,
        args=args(tmp_path, num_train_epochs=2, eval_strategy="epoch"),
        train_dataset=data[:24],
        eval_dataset=data[24:],
        callbacks=[cb],
    )
    trainer.train()
    # 24 samples / 8 = 3 steps per epoch: 6 training logs, 2 evaluations, 1 summary at the end
    wait_for(lambda: len(chart.df) >= 9 and board.df["status"].tolist() == ["done"])
    df = chart.df
    train_rows = df[df["loss"].notna()]
    assert train_rows["step"].tolist() == [1, 2, 3, 4, 5, 6]
    assert train_rows["learning_rate"].notna().all() and train_rows["grad_norm"].notna().all()
    evals = df[df["eval_loss"].notna()]
    assert evals["step"].tolist() == [3, 6] and evals["epoch"].tolist() == [1.0, 2.0]
    assert df["train_runtime"].notna().sum() == 1  # the Trainer's closing summary
    row = board.df.iloc[0]
    assert (row["n"], row["total"]) == (6, 6)


def test_early_stopping_is_marked(server: LocalServer, widgets: Any, tmp_path: Path) -> None:
    import transformers

    from livewidget.integrations.transformers import LiveCallback

    board = widgets(livewidget.ProgressBoard, "hf2-progress")
    model, data = tiny()
    stop = transformers.EarlyStoppingCallback(early_stopping_patience=1, early_stopping_threshold=100.0)
    cb = LiveCallback("hf2", progress_channel="hf2-progress", **creds(server))
    trainer = transformers.Trainer(
        model=model,
        args=args(
            tmp_path,
            num_train_epochs=10,
            eval_strategy="epoch",
            save_strategy="epoch",
            load_best_model_at_end=True,
            metric_for_best_model="eval_loss",
            save_total_limit=1,
        ),
        train_dataset=data[:24],
        eval_dataset=data[24:],
        callbacks=[cb, stop],
    )
    trainer.train()
    wait_for(lambda: board.df["status"].tolist() == ["done"])
    row = board.df.iloc[0]
    assert row["n"] < 30 and row["total"] == 30
    assert f"stopped early at step {row['n']}" in row["postfix"]

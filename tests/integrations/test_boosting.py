"""livewidget.integrations.xgboost and .lightgbm with the real libraries on tiny data made here."""

from __future__ import annotations

from typing import Any

import numpy as np

import livewidget
from livewidget.server import LocalServer

from .conftest import creds, wait_for


def regression(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return x, x[:, 0] * 2 + rng.normal(scale=0.1, size=n)


def test_xgboost_rounds_per_eval_set_and_board(server: LocalServer, widgets: Any) -> None:
    import xgboost as xgb

    from livewidget.integrations.xgboost import LiveCallback

    chart = widgets(livewidget.LiveChart, "x1", x="iteration", y=["train-rmse", "eval-rmse"])
    board = widgets(livewidget.ProgressBoard, "x1-progress")
    x, y = regression()
    dtrain, deval = xgb.DMatrix(x[:150], y[:150]), xgb.DMatrix(x[150:], y[150:])
    cb = LiveCallback("x1", total=8, progress_channel="x1-progress", **creds(server))
    xgb.train(
        {"max_depth": 2, "nthread": 1},
        dtrain,
        8,
        evals=[(dtrain, "train"), (deval, "eval")],
        callbacks=[cb],
        verbose_eval=False,
    )
    wait_for(lambda: len(chart.df) == 8 and board.df["status"].tolist() == ["done"])
    df = chart.df
    assert df["iteration"].tolist() == list(range(8))  # as XGBoost prints rounds
    assert df["train-rmse"].is_monotonic_decreasing
    assert df["eval-rmse"].notna().all()
    row = board.df.iloc[0]
    assert (row["n"], row["total"]) == (8, 8)


def test_xgboost_early_stopping_is_marked(server: LocalServer, widgets: Any) -> None:
    import xgboost as xgb

    from livewidget.integrations.xgboost import LiveCallback

    feed = widgets(livewidget.Feed, "x2")
    board = widgets(livewidget.ProgressBoard, "x2-progress")
    x, y = regression()
    rng = np.random.default_rng(1)
    dtrain, dnoise = xgb.DMatrix(x[:150], y[:150]), xgb.DMatrix(x[150:], rng.normal(size=50))
    cb = LiveCallback("x2", total=100, progress_channel="x2-progress", **creds(server))
    booster = xgb.train(
        {"max_depth": 3, "nthread": 1, "eta": 0.5},
        dtrain,
        100,
        evals=[(dnoise, "noise")],
        early_stopping_rounds=3,
        callbacks=[cb],
        verbose_eval=False,
    )
    wait_for(lambda: board.df["status"].tolist() == ["done"])
    wait_for(lambda: feed.df["stopped_early"].eq(True).any())
    df = feed.df
    last = df.iloc[-1]
    assert last["best_iteration"] == booster.best_iteration
    assert last["iteration"] == df["iteration"].iloc[-2] == booster.best_iteration + 3
    assert f"best round {booster.best_iteration}" in board.df.iloc[0]["postfix"]
    assert board.df.iloc[0]["n"] < 100


def test_lightgbm_rounds_per_valid_set_and_board(server: LocalServer, widgets: Any) -> None:
    import lightgbm as lgb

    from livewidget.integrations.lightgbm import live_callback

    chart = widgets(livewidget.LiveChart, "l1", x="iteration", y=["training-l2", "valid_0-l2"])
    board = widgets(livewidget.ProgressBoard, "l1-progress")
    x, y = regression()
    train = lgb.Dataset(x[:150], y[:150])
    valid = lgb.Dataset(x[150:], y[150:], reference=train)
    params = {"objective": "regression", "verbose": -1, "num_threads": 1, "min_data_in_leaf": 5}
    lgb.train(
        params,
        train,
        6,
        valid_sets=[train, valid],
        valid_names=["training", "valid_0"],
        callbacks=[live_callback("l1", progress_channel="l1-progress", **creds(server))],
    )
    wait_for(lambda: len(chart.df) == 6 and board.df["status"].tolist() == ["done"])
    df = chart.df
    assert df["iteration"].tolist() == [1, 2, 3, 4, 5, 6]  # as LightGBM prints rounds
    assert df["training-l2"].is_monotonic_decreasing
    assert df["valid_0-l2"].notna().all()
    assert (board.df.iloc[0]["n"], board.df.iloc[0]["total"]) == (6, 6)


def test_lightgbm_early_stopping_is_marked(server: LocalServer, widgets: Any) -> None:
    import lightgbm as lgb

    from livewidget.integrations.lightgbm import live_callback

    feed = widgets(livewidget.Feed, "l2")
    board = widgets(livewidget.ProgressBoard, "l2-progress")
    x, y = regression()
    rng = np.random.default_rng(1)
    train = lgb.Dataset(x[:150], y[:150])
    noise = lgb.Dataset(x[150:], rng.normal(size=50), reference=train)
    params = {"objective": "regression", "verbose": -1, "num_threads": 1, "learning_rate": 0.5}
    booster = lgb.train(
        params,
        train,
        100,
        valid_sets=[noise],
        callbacks=[
            lgb.early_stopping(3, verbose=False),
            live_callback("l2", progress_channel="l2-progress", **creds(server)),
        ],
    )
    wait_for(lambda: board.df["status"].tolist() == ["done"])
    wait_for(lambda: feed.df["stopped_early"].eq(True).any())
    last = feed.df.iloc[-1]
    assert last["best_iteration"] == booster.best_iteration
    assert last["iteration"] == booster.best_iteration + 3
    assert f"stopped early at round {booster.best_iteration + 3}" in board.df.iloc[0]["postfix"]


def test_missing_framework_names_the_extra(monkeypatch: Any) -> None:
    import sys

    import pytest

    for name in ("optuna", "livewidget.integrations.optuna"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'livewidget\[optuna\]'"):
        import livewidget.integrations.optuna  # noqa: F401


def test_cross_validation_adds_the_spread(server: LocalServer, widgets: Any) -> None:
    """xgb.cv and lgb.cv report a mean and a standard deviation per round: both are fields."""
    import lightgbm as lgb
    import xgboost as xgb

    from livewidget.integrations.lightgbm import live_callback
    from livewidget.integrations.xgboost import LiveCallback

    xfeed = widgets(livewidget.Feed, "cv-x")
    lfeed = widgets(livewidget.Feed, "cv-l")
    x, y = regression()
    xgb.cv(
        {"max_depth": 2, "nthread": 1},
        xgb.DMatrix(x, y),
        4,
        nfold=3,
        seed=0,
        callbacks=[LiveCallback("cv-x", progress_channel=None, **creds(server))],
    )
    params = {"objective": "regression", "verbose": -1, "num_threads": 1}
    lgb.cv(
        params,
        lgb.Dataset(x, y),
        4,
        nfold=3,
        seed=0,
        stratified=False,  # stratified folds need scikit-learn
        callbacks=[live_callback("cv-l", progress_channel=None, **creds(server))],
    )
    wait_for(lambda: len(xfeed.df) == 4 and len(lfeed.df) == 4)
    assert xfeed.df["test-rmse"].notna().all() and (xfeed.df["test-rmse-std"] >= 0).all()
    assert xfeed.df["train-rmse"].notna().all()
    assert lfeed.df["iteration"].tolist() == [1, 2, 3, 4]
    assert lfeed.df["valid-l2"].notna().all() and (lfeed.df["valid-l2-stdv"] >= 0).all()

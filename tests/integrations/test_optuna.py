"""livewidget.integrations.optuna with real Optuna: threads (n_jobs > 1) and two processes sharing a
SQLite storage, all on one chart and one board."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import livewidget
from livewidget.server import LocalServer
from tests.listen import server_url

from .conftest import creds, wait_for

ROOT = Path(__file__).resolve().parents[2]


def objective(trial: Any) -> float:
    import optuna

    x = trial.suggest_float("x", -10, 10)
    kind = trial.suggest_categorical("kind", ["a", "b"])
    if x > 9:
        raise optuna.TrialPruned()
    return (x - 2) ** 2 + (0 if kind == "a" else 1)


def test_threads_chart_every_trial_and_the_best(server: LocalServer, widgets: Any) -> None:
    import optuna

    from livewidget.integrations.optuna import LiveCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    chart = widgets(livewidget.LiveChart, "o1", x="trial", y=["value", "best_value"])
    board = widgets(livewidget.ProgressBoard, "o1-progress")
    study = optuna.create_study(study_name="threads", sampler=optuna.samplers.RandomSampler(seed=1))
    cb = LiveCallback("o1", progress_channel="o1-progress", **creds(server))
    study.optimize(objective, n_trials=12, n_jobs=3, callbacks=[cb])
    wait_for(lambda: len(chart.df) == 12 and len(board.df) == 12)
    df = chart.df.sort_values("trial")
    assert df["trial"].tolist() == list(range(12))
    complete = df[df["state"] == "COMPLETE"]
    assert complete["value"].tolist() == pytest.approx([t.value for t in study.trials if t.value is not None])
    assert df["best_value"].min() == pytest.approx(study.best_value)
    assert set(df["params_kind"]) <= {"a", "b"} and df["params_x"].notna().all()
    statuses = dict(zip(board.df["job"], board.df["status"], strict=True))
    for t in study.trials:
        assert (
            statuses[f"threads/trial-{t.number}"] == {"COMPLETE": "done", "PRUNED": "cancelled"}[t.state.name]
        )
    groups = board.groups
    assert groups["parent"].tolist() == ["threads"] and groups["jobs"].tolist() == [12]


def test_failed_trial_is_failed_on_the_board(server: LocalServer, widgets: Any) -> None:
    import optuna

    from livewidget.integrations.optuna import LiveCallback

    board = widgets(livewidget.ProgressBoard, "o2-progress")
    study = optuna.create_study(study_name="fails")

    def bad(trial: Any) -> float:
        raise RuntimeError("diverged")

    study.optimize(
        bad,
        n_trials=1,
        callbacks=[LiveCallback("o2", progress_channel="o2-progress", **creds(server))],
        catch=(RuntimeError,),
    )
    wait_for(lambda: board.df["status"].tolist() == ["failed"])
    assert board.df.iloc[0]["error"]  # Optuna 5 keeps no reason in the trial: "the trial raised"


WORKER = textwrap.dedent(
    """
    import sys, optuna
    from livewidget.integrations.optuna import LiveCallback
    from tests.integrations.test_optuna import objective
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.RandomSampler()
    study = optuna.load_study(study_name="two-processes", storage=sys.argv[1], sampler=sampler)
    study.optimize(objective, n_trials=6, callbacks=[LiveCallback("o3", progress_channel="o3-progress")])
    """
)


def test_two_processes_sharing_a_sqlite_storage(server: LocalServer, widgets: Any, tmp_path: Path) -> None:
    import optuna

    chart = widgets(livewidget.LiveChart, "o3", x="trial", y=["value", "best_value"])
    board = widgets(livewidget.ProgressBoard, "o3-progress")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="two-processes", storage=storage)
    env = {**os.environ, "LIVEWIDGET_URL": server_url(server), "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, storage], env=env, cwd=ROOT, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
    wait_for(lambda: len(chart.df) == 12 and len(board.df) == 12, timeout=10)
    df = chart.df
    assert sorted(df["trial"]) == list(range(12))  # numbers from the one storage both use: no clash
    assert df["pid"].nunique() == 2
    study = optuna.load_study(study_name="two-processes", storage=storage)
    assert df["best_value"].min() == pytest.approx(study.best_value)
    assert board.df["pid"].nunique() == 2

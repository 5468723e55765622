"""ProgressBoard in the kernel: latest state per job from any process, groups by parent, clearing."""

from __future__ import annotations

import io
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pytest

import livewidget
from livewidget import _config, progress
from livewidget.widgets.progress_board import COLUMNS, aggregate

from ..listen import server_url
from .conftest import creds, simulate_custom, wait_for
from .progress_workers import work


@pytest.fixture
def make_board(server, comms, monkeypatch) -> Iterator[Callable[..., Any]]:
    """Boards on the test server, whose credentials are also in the environment (for the workers)."""
    monkeypatch.setattr(_config, "_process_settings", None)
    monkeypatch.setenv("LIVEWIDGET_URL", server_url(server))
    monkeypatch.delenv("LIVEWIDGET_PARENT_JOB", raising=False)
    made: list[Any] = []

    def make(channel: str, **kwargs: Any) -> Any:
        board = livewidget.ProgressBoard(channel, **{**creds(server), **kwargs})
        made.append(board)
        wait_for(
            lambda: board._receiver.state == "connected" and all(board._receiver.protocol.channels.values())
        )
        return board

    yield make
    for board in made:
        board.close()


def statuses(board: Any) -> dict[str, str]:
    df = board.df
    return dict(zip(df["job"], df["status"], strict=True))


def test_one_row_per_job_with_its_latest_state(make_board):
    """df has one row per job (latest state, the documented columns); the jobs trait follows."""
    board = make_board("pb-rows")
    assert board._kind == "progress" and board.event_filter == ["progress"]
    for name in ("a", "b"):
        with progress(total=50, desc=name, job=name, channel="pb-rows", file=io.StringIO()) as bar:
            for _ in range(50):
                bar.update()
    wait_for(lambda: statuses(board) == {"a": "done", "b": "done"})
    df = board.df
    assert tuple(df.columns) == COLUMNS
    assert list(df["n"]) == [50, 50] and list(df["desc"]) == ["a", "b"]
    assert str(df["updated"].dtype).startswith("datetime64") and str(df["updated"].dt.tz) == "UTC"
    assert board.total > 2  # every event is still recorded, as in a Feed
    wait_for(lambda: set(board.jobs) == {"a", "b"})
    assert board.jobs["a"]["status"] == "done" and board.jobs["a"]["n"] == 50


def test_feed_api_on_and_wait(make_board):
    """on() and wait() work as on a Feed; only "progress" events reach the board."""
    board = make_board("pb-api")
    seen: list[str] = []
    board.on("progress", lambda row: seen.append(row["data"]["status"]))
    livewidget.publish("pb-api", "other", {"job": "not-progress"}, wait=True)
    livewidget.publish("pb-api", "progress", {"no": "job"}, wait=True)  # malformed: recorded, not a job
    for _ in progress(range(3), channel="pb-api", file=io.StringIO()):
        pass
    board.wait(3, timeout=10)
    wait_for(lambda: "done" in seen)
    assert seen[-1] == "done"
    assert len(board.df) == 1


@pytest.mark.parametrize("method", ["spawn", "fork"])
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_pool_of_four_workers_ends_with_four_jobs_done(make_board, method, monkeypatch):
    """A real multiprocessing pool: four workers, each with its own progress(), all done, grouped."""
    board = make_board(f"pb-pool-{method}")
    monkeypatch.setenv("LIVEWIDGET_PARENT_JOB", f"pool-{method}")  # inherited by the workers
    with multiprocessing.get_context(method).Pool(4) as pool:
        pids = pool.starmap(work, [(f"pb-pool-{method}", i) for i in range(4)])
    wait_for(lambda: len(board.df) == 4 and set(board.df["status"]) == {"done"}, timeout=20)
    df = board.df
    assert sorted(df["desc"]) == [f"worker {i}" for i in range(4)]
    assert set(df["pid"]) == set(pids) and os.getpid() not in set(df["pid"])
    assert list(df["n"]) == [40] * 4 and set(df["parent"]) == {f"pool-{method}"}
    groups = board.groups
    assert len(groups) == 1
    row = groups.iloc[0]
    assert (row["parent"], row["jobs"], row["done"], row["n"], row["total"], row["status"]) == (
        f"pool-{method}",
        4,
        4,
        160,
        160,
        "done",
    )


def test_failing_workers_show_failed_with_their_error(make_board):
    """A worker that raises in its with-block shows failed with the error; a for body, where it stopped."""
    board = make_board("pb-fail")
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = [pool.apply_async(work, ("pb-fail", i, f)) for i, f in enumerate(["", "with", "body"])]
        outcomes = []
        for r in results:
            try:
                outcomes.append(r.get(30))
            except (ValueError, RuntimeError) as exc:
                outcomes.append(type(exc).__name__)
    assert outcomes[1:] == ["ValueError", "RuntimeError"]
    wait_for(lambda: len(board.df) == 3 and "running" not in set(board.df["status"]), timeout=20)
    rows = {r["desc"]: r for r in board.df.to_dict("records")}
    assert rows["worker 0"]["status"] == "done" and pd.isna(rows["worker 0"]["error"])
    assert (rows["worker 1"]["status"], rows["worker 1"]["n"]) == ("failed", 20)
    assert rows["worker 1"]["error"] == "ValueError: worker 1 broke at step 20"
    assert rows["worker 2"]["status"] == "failed"
    assert rows["worker 2"]["error"] == "stopped at 10 of 40 (left the loop early)"


def test_groups_jobs_by_parent(make_board):
    """Jobs with a parent are aggregated per parent; the parent job's own description names the group."""
    board = make_board("pb-groups")
    kw = {"channel": "pb-groups", "file": io.StringIO()}
    with progress(total=2, desc="training", job="train", **kw) as outer:
        for i in range(2):
            for _ in progress(range(10 * (i + 1)), desc=f"fold {i}", parent=outer.job, **kw):
                pass
            outer.update()
        with pytest.raises(KeyError), progress(total=5, parent="train", desc="fold 2", **kw):
            raise KeyError("missing")
    wait_for(lambda: len(board.df) == 4 and "running" not in set(board.df["status"]))
    groups = board.groups
    assert list(groups["parent"]) == ["train"]
    row = groups.iloc[0]
    assert (row["desc"], row["jobs"], row["done"], row["failed"]) == ("training", 3, 2, 1)
    assert (row["status"], row["n"], row["total"]) == ("failed", 30, 35)
    wait_for(lambda: "train" in board._groups)
    assert board._groups["train"]["failed"] == 1


def test_aggregate_rules():
    """The documented aggregate: sums, unknown totals, rates of running children, status precedence."""
    t = 1000.0
    states = {
        "p": {"job": "p", "parent": None, "desc": "the parent", "status": "running", "t": t},
        "a": {"job": "a", "parent": "p", "n": 5, "total": 10, "rate": 2.0, "status": "running", "elapsed": 3,
              "t": t, "host": "h1"},
        "b": {"job": "b", "parent": "p", "n": 10, "total": 10, "rate": 5.0, "status": "done", "elapsed": 8,
              "t": t - 1, "host": "h2"},
        "c": {"job": "c", "parent": "q", "n": 3, "total": None, "rate": None, "status": "cancelled", "t": t},
    }  # fmt: skip
    groups = aggregate(states)
    assert set(groups) == {"p", "q"}
    p = groups["p"]
    assert (p["desc"], p["jobs"], p["running"], p["done"]) == ("the parent", 2, 1, 1)
    assert (p["n"], p["total"]) == (15, 20)
    assert (p["rate"], p["remaining"], p["status"], p["hosts"]) == (2.0, 2.5, "running", ["h1", "h2"])
    assert p["elapsed"] == 9.0 and p["updated"] == t  # from the earliest start (t - 1 - 8) to the last update
    q = groups["q"]
    assert (q["desc"], q["total"], q["rate"], q["remaining"]) == ("q", None, None, None)
    assert q["status"] == "cancelled"


def test_clear_from_python_and_from_the_browser(make_board, comms):
    """clear() forgets finished jobs (finished=False: all); the browser's {"type": "clear"} does the same."""
    board = make_board("pb-clear")
    kw = {"channel": "pb-clear", "file": io.StringIO()}
    for name in ("done-1", "done-2"):
        list(progress(range(3), job=name, **kw))
    with pytest.raises(ValueError), progress(total=3, job="failed-1", **kw):
        raise ValueError("x")
    running = progress(total=3, job="running-1", **kw)
    wait_for(lambda: len(board.df) == 4)
    assert board.clear() == 3
    assert list(board.df["job"]) == ["running-1"]
    wait_for(lambda: list(board.jobs) == ["running-1"])
    running.close()
    list(progress(range(3), job="done-3", **kw))
    wait_for(lambda: len(board.df) == 2)
    simulate_custom(board, {"type": "clear"})
    assert len(board.df) == 0
    list(progress(range(3), job="done-4", **kw))
    wait_for(lambda: len(board.df) == 1)
    simulate_custom(board, {"type": "clear", "finished": False})
    wait_for(lambda: board.jobs == {} and len(board.df) == 0)


def test_leave_false_jobs_go_when_done_and_max_jobs_bounds_the_table(make_board):
    """Like tqdm's leave=False, a finished inner bar disappears; max_jobs drops the oldest finished first."""
    board = make_board("pb-bound", max_jobs=3)
    kw = {"channel": "pb-bound", "file": io.StringIO()}
    running = progress(total=10, job="long", **kw)
    for i in range(4):
        list(progress(range(2), job=f"inner-{i}", leave=False, **kw))
    for i in range(4):
        list(progress(range(2), job=f"kept-{i}", **kw))
    wait_for(lambda: "kept-3" in set(board.df["job"]))
    time.sleep(0.2)
    assert list(board.df["job"]) == ["long", "kept-2", "kept-3"]
    running.close()


def test_joblib_workers(make_board):
    """joblib (when installed) runs the same workers; all four jobs end done."""
    joblib = pytest.importorskip("joblib")
    board = make_board("pb-joblib")
    joblib.Parallel(n_jobs=2)(joblib.delayed(work)("pb-joblib", i) for i in range(4))
    wait_for(lambda: len(board.df) == 4 and set(board.df["status"]) == {"done"}, timeout=30)

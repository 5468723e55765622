"""progress(): tqdm's behaviour unchanged, plus throttled publishing of each bar's state and outcome."""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import socket
import subprocess
import sys
import textwrap
import time
from typing import Any

import pandas as pd
import pytest
import tqdm.auto

import livewidget
from livewidget import _config, _progress, _publish
from livewidget._progress import progress
from livewidget.server import LocalServer

from .listen import Listener, server_url

FIELDS = {
    *("job", "parent", "desc", "n", "total", "unit", "unit_scale", "unit_divisor", "rate", "elapsed"),
    *("remaining", "postfix", "host", "pid", "status", "error", "leave", "t"),
}
# No rate or time in it, so tqdm's output can be compared character for character.
FORMAT = "{desc}{percentage:3.0f}%|{bar:10}| {n_fmt}/{total_fmt} {unit}{postfix}"


@pytest.fixture(scope="module")
def server():
    with LocalServer() as s:
        yield s


@pytest.fixture
def env(server, monkeypatch):
    """The credentials in the environment only, as a worker on another machine would have them."""
    monkeypatch.setattr(_config, "_process_settings", None)
    monkeypatch.setenv("LIVEWIDGET_URL", server_url(server))
    monkeypatch.delenv("LIVEWIDGET_PARENT_JOB", raising=False)
    return server


@pytest.fixture
def listen(env):
    made: list[Listener] = []

    def make(*channels: str) -> Listener:
        made.append(Listener(env, *channels))
        return made[-1]

    yield make
    for listener in made:
        listener.close()


def finals(listener: Listener, count: int, timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """{job: last event} once ``count`` jobs have ended."""
    listener.wait(lambda ds: len({d["job"] for d in ds if d["status"] != "running"}) >= count, "progress")
    time.sleep(0.05)
    return {d["job"]: d for d in listener.data("progress")}


# ---------------------------------------------------------------------------------------- tqdm compatibility


def test_is_the_class_tqdm_auto_picks():
    """progress subclasses tqdm.auto.tqdm, so isinstance checks and classmethods keep working."""
    assert issubclass(progress, tqdm.auto.tqdm)
    assert livewidget.progress is progress


def drive(cls: Any, channel: str | None, **kwargs: Any) -> tuple[Any, ...]:
    """The same calls on tqdm and on progress: iteration, manual use, every common method."""
    extra = {"channel": channel} if channel else {}
    out = io.StringIO()
    kw = {"file": out, "mininterval": 0, "bar_format": FORMAT, **kwargs, **extra}
    items = list(cls(range(5), **kw))
    manual = {k: v for k, v in kw.items() if k != "total"}
    with cls(total=kwargs.get("total", 10), **manual) as bar:
        bar.update(3)
        bar.set_description("step")
        bar.set_postfix(loss=0.5, acc=1)
        bar.set_postfix_str("x=1")
        bar.set_description_str("raw: ")
        bar.update()
        bar.refresh()
        bar.unpause()
        bar.reset(total=4)
        bar.update(4)
        state = (bar.n, bar.total, bar.desc, bar.postfix, len(bar), bool(bar), str(bar))
    other = cls(**manual)
    other.update(2)
    other.clear()
    other.close()
    other.close()  # twice is harmless
    cls.write("a message", file=out)
    return items, state, other.n, out.getvalue()


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"total": 10, "desc": "load"},
        {"unit": "B", "unit_scale": True, "unit_divisor": 1024, "total": 4096},
        {"leave": False},
        {"leave": None, "position": 1},
        {"postfix": {"a": 1, "b": "x"}},
        {"initial": 2, "total": 12},
        {"ascii": True, "ncols": 60, "smoothing": 0},
        {"disable": True},
        {"miniters": 2, "maxinterval": 1.0, "delay": 0},
        {"dynamic_ncols": True, "colour": "green", "nrows": 5},
    ],
    ids=lambda kw: ",".join(kw) or "defaults",
)
def test_same_behaviour_and_output_as_tqdm(listen, kwargs):
    """Every argument and method behaves exactly as in tqdm: same items, state and printed output."""
    listener = listen("pg-compat")
    assert drive(progress, "pg-compat", **kwargs) == drive(tqdm.auto.tqdm, None, **kwargs)
    if kwargs.get("disable"):
        time.sleep(0.2)
        assert listener.data() == []  # disable=True turns everything off
    else:
        assert len(finals(listener, 3)) == 3


def test_pandas_and_positional_arguments(listen):
    """tqdm's class API works on progress (pandas integration; positional desc and total)."""
    listener = listen("pg-pandas")
    progress.pandas(file=io.StringIO(), channel="pg-pandas")
    assert list(pd.Series(range(4)).progress_apply(lambda x: x * 2)) == [0, 2, 4, 6]
    bar = progress(range(3), "positional desc", 3, channel="pg-pandas", file=io.StringIO())
    assert list(bar) == [0, 1, 2]
    last = finals(listener, 2)
    assert {d["status"] for d in last.values()} == {"done"}
    assert "positional desc" in {d["desc"] for d in last.values()}


def test_disable_none_off_a_terminal_hides_the_bar_but_publishes(listen):
    """disable=None (tqdm: off when not a TTY) prints nothing and still publishes."""
    listener = listen("pg-quiet")
    out = io.StringIO()
    assert sum(progress(range(100), file=out, disable=None, channel="pg-quiet")) == 4950
    assert out.getvalue() == ""
    (last,) = finals(listener, 1).values()
    assert (last["status"], last["n"]) == ("done", 100)


# ---------------------------------------------------------------------------------------- publishing


def test_publishes_start_and_end_with_the_contract_fields(listen):
    """One event at start and one at the end, with every field of the contract."""
    listener = listen("pg-fields")
    kw = {"unit": "img", "postfix": {"loss": 0.5}, "job": "j-1", "parent": "p-1", "mininterval": 10}
    with progress(total=8, desc="fields", channel="pg-fields", file=io.StringIO(), **kw) as bar:
        bar.update(8)
    events = finals(listener, 1)["j-1"], listener.data("progress")
    last, every = events
    assert [d["status"] for d in every] == ["running", "done"]
    assert set(every[0]) == FIELDS and every[0]["n"] == 0
    assert last["job"] == "j-1" and last["parent"] == "p-1"
    assert (last["desc"], last["n"], last["total"], last["unit"]) == ("fields", 8, 8, "img")
    assert last["postfix"] == "loss=0.5"
    assert last["host"] == socket.gethostname() and last["pid"] == os.getpid()
    assert last["error"] is None and last["remaining"] == 0.0 and last["rate"] > 0
    assert abs(last["t"] - time.time()) < 5 and last["elapsed"] >= 0


def test_a_fast_loop_publishes_about_once_per_mininterval(listen):
    """200k iterations with mininterval=0.1 give about elapsed/0.1 + 2 events, not thousands."""
    listener = listen("pg-fast")
    start = time.perf_counter()
    for _ in progress(range(200_000), file=io.StringIO(), mininterval=0.1, channel="pg-fast"):
        pass
    elapsed = time.perf_counter() - start
    finals(listener, 1)
    count = len(listener.data("progress"))
    assert 2 <= count <= elapsed / 0.1 + 3, f"{count} events in {elapsed:.2f} s"
    assert listener.data("progress")[-1]["n"] == 200_000


def test_slow_loop_with_postfix_is_published_every_interval(listen):
    """Each display at least mininterval apart is published, with the newest postfix."""
    listener = listen("pg-slow")
    with progress(total=5, file=io.StringIO(), mininterval=0.05, channel="pg-slow") as bar:
        for i in range(5):
            time.sleep(0.07)
            bar.set_postfix(step=i)
            bar.update()
    (last,) = finals(listener, 1).values()
    running = [d for d in listener.data("progress") if d["status"] == "running"]
    assert len(running) >= 5  # the start, then about one per 0.07 s step
    assert {f"step={i}" for i in range(4)} <= {d["postfix"] for d in running}  # none is skipped
    assert (last["postfix"], last["n"]) == ("step=4", 5)


def test_an_update_right_after_an_event_is_sent_when_its_interval_is_up(listen):
    """A state change too soon after the last event is not lost: the newest state follows later."""
    listener = listen("pg-trail")
    bar = progress(total=3, file=io.StringIO(), mininterval=0.2, channel="pg-trail", desc="before")
    bar.update()
    bar.set_description("after")  # 0.2 s have not passed since the start event
    listener.wait(lambda ds: bool(ds) and (ds[-1]["desc"], ds[-1]["n"]) == ("after", 1), "progress", 2)
    assert listener.data("progress")[-1]["status"] == "running"
    bar.close()
    assert finals(listener, 1)[bar.job]["status"] == "done"


def test_delay_keeps_short_bars_off_the_board(listen):
    """With tqdm's delay, nothing goes out before it; a bar done within it never does, a failed one does."""
    listener = listen("pg-delay")
    kw = {"channel": "pg-delay", "file": io.StringIO(), "delay": 0.3}
    for _ in range(20):
        list(progress(range(10), **kw))
    with pytest.raises(ValueError), progress(total=5, job="short-but-failed", **kw):
        raise ValueError("quick failure")
    with progress(total=3, job="long-enough", **kw) as bar:
        for _ in range(3):
            time.sleep(0.2)
            bar.update()
    last = finals(listener, 2)
    assert set(last) == {"short-but-failed", "long-enough"}
    assert last["short-but-failed"]["error"] == "ValueError: quick failure"
    first = next(d for d in listener.data("progress") if d["job"] == "long-enough")
    assert first["status"] == "running" and first["elapsed"] >= 0.29


def test_job_ids_and_parents(listen, monkeypatch):
    """Jobs get unique ids; parent comes from the argument or from LIVEWIDGET_PARENT_JOB."""
    listener = listen("pg-ids")
    a = progress(range(2), channel="pg-ids", file=io.StringIO())
    b = progress(range(2), channel="pg-ids", file=io.StringIO(), parent="given")
    monkeypatch.setenv("LIVEWIDGET_PARENT_JOB", "from-env")
    c = progress(range(2), channel="pg-ids", file=io.StringIO())
    for bar in (a, b, c):
        list(bar)
    assert len({a.job, b.job, c.job}) == 3
    last = finals(listener, 3)
    assert [last[bar.job]["parent"] for bar in (a, b, c)] == [None, "given", "from-env"]


# ---------------------------------------------------------------------------------------- outcomes


def _source():
    yield 1
    yield 2
    raise RuntimeError("the source broke")


def _interrupting():
    yield 1
    raise KeyboardInterrupt


def test_failed_and_cancelled_outcomes(listen):
    """failed with the exception text (with-block, iterable, finally:), cancelled on KeyboardInterrupt."""
    listener = listen("pg-end")
    kw = {"channel": "pg-end", "file": io.StringIO()}
    with pytest.raises(ValueError), progress(total=10, job="with", **kw) as bar:
        bar.update(3)
        raise ValueError("boom at 3")
    with pytest.raises(RuntimeError):
        for _ in progress(_source(), job="iterable", **kw):
            pass
    bar = progress(total=10, job="finally", **kw)
    with pytest.raises(OSError):
        try:
            raise OSError("disk full")
        finally:
            bar.close()
    with pytest.raises(KeyboardInterrupt), progress(total=10, job="ctrl-c", **kw):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        for _ in progress(_interrupting(), job="ctrl-c-iter", **kw):
            pass
    last = finals(listener, 5)
    ends = {job: (d["status"], d["error"]) for job, d in last.items()}
    assert ends["with"] == ("failed", "ValueError: boom at 3") and last["with"]["n"] == 3
    assert ends["iterable"] == ("failed", "RuntimeError: the source broke")
    assert ends["finally"] == ("failed", "OSError: disk full")
    assert ends["ctrl-c"] == ("cancelled", "KeyboardInterrupt")
    assert ends["ctrl-c-iter"] == ("cancelled", "KeyboardInterrupt")


def test_loops_left_early_and_loops_inside_except_blocks(listen):
    """An exception in a for body: failed, stopped at n of total; close() then break: done."""
    listener = listen("pg-early")
    kw = {"channel": "pg-early", "file": io.StringIO()}
    with pytest.raises(KeyError):
        for i in progress(range(10), job="body", **kw):
            if i == 3:
                raise KeyError("k")
    for i in (bar := progress(range(10), job="closed-then-break", **kw)):
        if i == 3:
            bar.close()
            break
    try:
        raise LookupError("handled before the loop")
    except LookupError:
        for _ in progress(range(3), job="in-except", **kw):
            pass
    last = finals(listener, 3)
    assert last["body"]["status"] == "failed"
    assert last["body"]["error"] == "stopped at 3 of 10 (left the loop early)"
    assert last["closed-then-break"]["status"] == "done"  # (its n is what tqdm had stored: 0 here)
    assert (last["in-except"]["status"], last["in-except"]["error"]) == ("done", None)


def test_the_exception_ending_a_cell_or_script_corrects_a_loop_left_early(env, listen):
    """In IPython the cell's exception (cancelled for an interrupt), in a script the fatal one."""
    listener = listen("pg-shell")
    code = textwrap.dedent(
        """
        import io, sys
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.run_cell('''
        import io, livewidget
        for i in livewidget.progress(range(10), job="cell-ctrl-c", channel="pg-shell", file=io.StringIO()):
            if i == 3:
                raise KeyboardInterrupt
        ''')
        shell.run_cell('''
        for i in livewidget.progress(range(10), job="cell-error", channel="pg-shell", file=io.StringIO()):
            if i == 4:
                raise ValueError("bad row 4")
        ''')
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr.decode()
    script = textwrap.dedent(
        """
        import io, livewidget
        for i in livewidget.progress(range(10), job="script", channel="pg-shell", file=io.StringIO()):
            if i == 5:
                raise ZeroDivisionError("fatal")
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert run.returncode == 1 and b"ZeroDivisionError" in run.stderr
    listener.wait(
        lambda ds: sum(d["status"] != "running" and d["error"] != _early(d) for d in ds) == 3, "progress"
    )
    last = {d["job"]: d for d in listener.data("progress")}
    assert (last["cell-ctrl-c"]["status"], last["cell-ctrl-c"]["error"]) == ("cancelled", "KeyboardInterrupt")
    assert (last["cell-error"]["status"], last["cell-error"]["error"]) == ("failed", "ValueError: bad row 4")
    assert (last["script"]["status"], last["script"]["error"]) == ("failed", "ZeroDivisionError: fatal")


def _early(state: dict[str, Any]) -> str:
    return f"stopped at {state['n']} of {state['total']} (left the loop early)"


# ---------------------------------------------------------------------------------------- failures, processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_server_warns_once_and_never_breaks_the_loop(server, monkeypatch):
    """With no server to reach, loops run and finish as usual; one warning says so."""
    monkeypatch.setattr(_config, "_process_settings", None)
    monkeypatch.setenv("LIVEWIDGET_URL", server_url(server, port=_free_port()))
    monkeypatch.setattr(_publish, "FIRST_BACKOFF", 0.01)
    monkeypatch.setattr(_progress._state, "warned", set())
    before = set(_progress._state.publishers.values())
    start = time.monotonic()
    with pytest.warns(RuntimeWarning) as caught:
        for _ in range(3):
            assert sum(progress(range(10_000), file=io.StringIO(), mininterval=0.01)) == 49_995_000
        assert time.monotonic() - start < _progress.CLOSE_FLUSH + 2
        for pub in set(_progress._state.publishers.values()) - before:
            with contextlib.suppress(_publish.PublishError):
                pub.close(timeout=5)  # its failures are known: none left for the exit
    ours = [str(w.message) for w in caught if "livewidget.progress" in str(w.message)]
    assert len(ours) == 1, ours
    assert "not delivered" in ours[0]


def test_no_server_settings_at_all_still_runs_the_loop(monkeypatch):
    """When no settings can be resolved, the bar works locally and says once why it does not publish."""
    monkeypatch.setattr(_config, "_process_settings", None)
    monkeypatch.setenv("LIVEWIDGET_URL", "not a url")
    monkeypatch.setattr(_progress._state, "warned", set())
    with pytest.warns(RuntimeWarning, match="not publishing progress"):
        assert list(progress(range(3), file=io.StringIO())) == [0, 1, 2]


def test_invalid_channel_is_refused():
    """A bad channel name is a programming error: ValueError at once."""
    with pytest.raises(ValueError, match="invalid channel name"):
        progress(range(3), channel="no spaces allowed")


def _forked_child(channel: str) -> None:
    for _ in progress(range(1000), channel=channel, job=f"child-{os.getpid()}", file=io.StringIO()):
        pass
    os._exit(0)  # as a killed pool worker: no atexit, no flush but the bar's own


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_publisher_made_before_fork_works_in_the_child(listen):
    """The parent's sender thread does not survive fork; the child's bars still get through."""
    listener = listen("pg-fork")
    with progress(total=2, channel="pg-fork", job="parent", file=io.StringIO()) as bar:
        bar.update()  # the shared publisher and its thread exist now
        proc = multiprocessing.get_context("fork").Process(target=_forked_child, args=("pg-fork",))
        proc.start()
        proc.join(30)
        bar.update()
    assert proc.exitcode == 0
    last = finals(listener, 2)
    assert last[f"child-{proc.pid}"]["status"] == "done" and last[f"child-{proc.pid}"]["pid"] == proc.pid
    assert last["parent"]["status"] == "done" and last["parent"]["pid"] == os.getpid()

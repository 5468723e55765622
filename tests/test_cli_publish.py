"""`livewidget publish` and `livewidget tail`: events from and to scripts, as JSON lines."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from livewidget import _config, _publish
from livewidget.cli import main
from livewidget.server import LocalServer

from .listen import Listener, server_url

CLI = [sys.executable, "-m", "livewidget"]


@pytest.fixture(scope="module")
def server():
    with LocalServer() as s:
        yield s


@pytest.fixture
def env(server, monkeypatch):
    """The credentials in the environment only (this process and the commands it starts)."""
    monkeypatch.setattr(_config, "_process_settings", None)
    monkeypatch.setenv("LIVEWIDGET_URL", server_url(server))
    return dict(os.environ)


@pytest.fixture
def listen(server):
    made: list[Listener] = []

    def make(*channels: str) -> Listener:
        made.append(Listener(server, *channels))
        return made[-1]

    yield make
    for listener in made:
        listener.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------- publish


def test_publish_an_event_prints_nothing(env, listen):
    """`livewidget publish CHANNEL EVENT DATA` sends DATA (JSON) and prints nothing on success."""
    listener = listen("cli-one")
    run = subprocess.run([*CLI, "publish", "cli-one", "done", '{"rows": 3}'], env=env, capture_output=True)
    assert (run.returncode, run.stdout, run.stderr) == (0, b"", b"")
    listener.wait(lambda ds: ds == [{"rows": 3}], "done")


def test_publish_json_lines_from_stdin_and_text_that_is_not_json(env, listen):
    """With -, each stdin line is one event; a line that is not JSON goes as text; blanks are skipped."""
    listener = listen("cli-lines")
    lines = '{"i": 1}\n\nnot json {\n[1, 2]\n"quoted"\n42\n'
    run = subprocess.run(
        [*CLI, "publish", "cli-lines", "row", "-"], env=env, input=lines.encode(), capture_output=True
    )
    assert (run.returncode, run.stdout, run.stderr) == (0, b"", b"")
    listener.wait(lambda ds: len(ds) == 5, "row")
    assert listener.data("row") == [{"i": 1}, "not json {", [1, 2], "quoted", 42]


def test_publish_without_data_and_with_url(server, listen, monkeypatch, capsys):
    """DATA is optional (null); --url names the server when the environment does not."""
    monkeypatch.delenv("LIVEWIDGET_URL", raising=False)
    monkeypatch.setattr(_config, "_process_settings", None)
    listener = listen("cli-url")
    assert main(["publish", "--url", server_url(server), "cli-url", "ping"]) == 0
    listener.wait(lambda ds: ds == [None], "ping")
    assert capsys.readouterr() == ("", "")


def test_publish_failures_exit_1_with_the_reason(server, env, monkeypatch, capsys):
    """Unreachable server, bad URL, oversized line: exit status 1 and one clear line on stderr."""
    monkeypatch.setattr(_publish, "FIRST_BACKOFF", 0.01)
    port = _closed_port()
    assert main(["publish", "--url", server_url(server, port=port), "cli-x", "e", "1"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"livewidget publish: publishing to http://127.0.0.1:{port} failed:" in err
    assert "not delivered" in err and "Connection refused" in err and "auth_signature" not in err

    assert main(["publish", "--url", "ftp://nowhere", "cli-x", "e"]) == 1
    assert "LIVEWIDGET_URL must look like" in capsys.readouterr().err

    monkeypatch.setattr(sys, "stdin", io.StringIO('{"ok": 1}\n' + json.dumps("x" * 20_000) + "\n"))
    assert main(["publish", "cli-x", "e", "-"]) == 1
    assert "line 2: event data is 20000 bytes, over the limit of 10240" in capsys.readouterr().err


def test_publish_failure_from_the_command_line(server, env):
    """The same failure seen from a shell: status 1, nothing on stdout, the reason on stderr."""
    bad = {**env, "LIVEWIDGET_URL": server_url(server, port=_closed_port())}
    run = subprocess.run([*CLI, "publish", "cli-x", "e", "1"], env=bad, capture_output=True, timeout=60)
    assert run.returncode == 1 and run.stdout == b""
    assert run.stderr.decode().startswith("livewidget publish: publishing to http://127.0.0.1:")


# ---------------------------------------------------------------------------------------- tail


def _tail(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*CLI, "tail", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line.startswith("livewidget tail: listening on"), line
    return proc


def test_tail_prints_json_lines_filters_and_stops_after_n(env):
    """tail prints one JSON object per event (time, channel, event, data, user_id), filtered, -n N."""
    proc = _tail(env, "cli-t1", "cli-t2", "--events", "a,b", "--events", "c", "-n", "3", "--timeout", "30")
    main(["publish", "cli-t1", "a", '{"k": 1}'])
    main(["publish", "cli-t2", "skipped", "1"])
    main(["publish", "cli-t2", "b", "plain text"])
    main(["publish", "cli-t1", "c", "[1]"])
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["channel"], r["event"], r["data"]) for r in rows] == [
        ("cli-t1", "a", {"k": 1}),
        ("cli-t2", "b", "plain text"),
        ("cli-t1", "c", [1]),
    ]
    assert all(set(r) - {"position"} == {"time", "channel", "event", "data", "user_id"} for r in rows)
    assert all(r["position"].endswith(":" + r["position"].rsplit(":", 1)[1]) for r in rows)  # STREAM:SERIAL
    assert all(abs(r["time"] - time.time()) < 60 and r["user_id"] is None for r in rows)


def test_tail_timeout_and_ctrl_c(env):
    """--timeout ends quietly (1 when -n was not met); Ctrl-C ends with status 0."""
    proc = _tail(env, "cli-quiet", "--timeout", "0.5")
    assert proc.communicate(timeout=30) == ("", "") and proc.returncode == 0
    proc = _tail(env, "cli-quiet", "-n", "2", "--timeout", "0.5")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and out == "" and "0 of 2 events in 0.5 s" in err
    proc = _tail(env, "cli-quiet")
    proc.send_signal(signal.SIGINT)
    assert proc.communicate(timeout=30)[0] == "" and proc.returncode == 0


def test_tail_refuses_a_bad_channel(env, capsys):
    """A bad channel name is a usage error, said plainly."""
    assert main(["tail", "no spaces"]) == 2
    assert "invalid channel name 'no spaces'" in capsys.readouterr().err


def test_tail_goes_on_after_an_undecodable_event(env, server):
    """A deeply nested event is printed with its raw text and a warning; tail keeps printing what follows."""
    proc = _tail(env, "cli-deep", "-n", "2", "--timeout", "30")
    deep = "[" * 1000 + "]" * 1000
    with _publish.Publisher(_config.resolve()) as pub:
        pub.publish("cli-deep", "deep", deep, wait=True)
        pub.publish("cli-deep", "after", {"ok": 1}, wait=True)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["event"], r["data"]) for r in rows] == [("deep", deep), ("after", {"ok": 1})]
    assert "warning: event 'deep' on cli-deep could not be decoded" in err


def test_publish_deeply_nested_json_is_a_clear_error(env):
    """`livewidget publish ... '<deeply nested JSON>'`: one clear line, status 1, no traceback."""
    for depth in (150, 30_000):
        deep = "[" * depth + "]" * depth
        run = subprocess.run([*CLI, "publish", "cli-x", "e", deep], env=env, capture_output=True, timeout=60)
        err = run.stderr.decode()
        assert run.returncode == 1 and run.stdout == b"", err
        assert "nested deeper than 100 levels" in err and "Traceback" not in err
        assert err.count("\n") == 1
    lines = '{"ok": 1}\n' + "[" * 5000 + "]" * 5000 + "\n"
    run = subprocess.run(
        [*CLI, "publish", "cli-x", "e", "-"], env=env, input=lines.encode(), capture_output=True, timeout=60
    )
    assert run.returncode == 1 and "line 2: DATA is JSON nested deeper" in run.stderr.decode()


def test_tail_since_replays_history_then_resumes_from_a_printed_position(env):
    """--since N prints the channel's last N events (marked history) before live ones; --since with a
    position it printed gives exactly what came after it; --since 1h covers them all."""
    with _publish.Publisher(_config.resolve()) as pub:
        for n in range(1, 6):
            pub.publish("cli-since", "tick", {"n": n}, wait=True)
    proc = _tail(env, "cli-since", "--since", "3", "-n", "4", "--timeout", "30")
    main(["publish", "cli-since", "tick", '{"n": 6}'])
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["data"]["n"] for r in rows] == [3, 4, 5, 6]
    assert [r.get("history", False) for r in rows] == [True, True, True, False]
    serials = [int(r["position"].rsplit(":", 1)[1]) for r in rows]
    assert serials == sorted(serials) and len(set(serials)) == 4
    # resume from the position of the 4th event: exactly the 5th and 6th
    proc = _tail(env, "cli-since", "--since", rows[1]["position"], "-n", "2", "--timeout", "30")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert [json.loads(line)["data"]["n"] for line in out.splitlines()] == [5, 6]
    proc = _tail(env, "cli-since", "--since", "1h", "-n", "6", "--timeout", "30")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert [json.loads(line)["data"]["n"] for line in out.splitlines()] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("bad", ["yesterday", "-3", "5x", ":12", "s1:x"])
def test_tail_since_refuses_what_it_cannot_read(env, capsys, bad):
    """A --since that is no count, duration or position is a usage error naming the three forms."""
    with pytest.raises(SystemExit) as exc:
        main(["tail", "cli-since", "--since", bad])
    assert exc.value.code == 2
    assert "a number of events (100), a duration (90s, 5m, 2h, 1d) or a position" in capsys.readouterr().err

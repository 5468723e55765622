"""Publishing through the official pusher SDK: encoding, limits, background sending, failures."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd
import pytest

import livewidget
from livewidget._config import Settings
from livewidget._publish import Publisher, PublishError, encode_data
from livewidget.server import LocalServer


def test_encode_numpy_pandas_nan():
    """numpy scalars/arrays, pandas timestamps, NaN and sets encode; NaN becomes null."""
    data = {
        "f": np.float32(1.5),
        "i": np.int64(3),
        "a": np.arange(3),
        "t": pd.Timestamp("2026-01-02T03:04:05Z"),
        "d": dt.date(2026, 1, 2),
        "nan": float("nan"),
        "inf": [float("inf")],
        "nat": pd.NaT,
    }
    assert json.loads(encode_data(data)) == {
        "f": 1.5,
        "i": 3,
        "a": [0, 1, 2],
        "t": "2026-01-02T03:04:05+00:00",
        "d": "2026-01-02",
        "nan": None,
        "inf": [None],
        "nat": None,
    }
    assert encode_data("already a string") == "already a string"


def test_encode_errors_name_the_field_and_the_limit():
    """Unencodable values name their path; oversized data names size and limit."""
    with pytest.raises(TypeError, match=r"data\['x'\]\[1\] \(object\)"):
        encode_data({"x": [1, object()]})
    with pytest.raises(ValueError, match="12 bytes, over the limit of 10"):
        encode_data("x" * 12, max_size=10)


@pytest.fixture(scope="module")
def server():
    with LocalServer() as s:
        yield s


def settings(server, **kw):
    return Settings(
        app_id=server.app_id, key=server.key, secret=server.secret, host=server.host, port=server.port, **kw
    )


def test_publish_returns_at_once_and_batches(server):
    """publish() queues; the sender batches within limits; flush() waits; events arrive in order."""
    feed = livewidget.Feed(
        "p-batch",
        host=server.host,
        port=server.port,
        app_id=server.app_id,
        key=server.key,
        secret=server.secret,
    )
    try:
        while feed._receiver.state != "connected" or not all(feed._receiver.protocol.channels.values()):
            time.sleep(0.01)
        pub = Publisher(settings(server))
        t = time.perf_counter()
        for i in range(50):
            pub.publish("p-batch", "n", {"i": i})
        assert time.perf_counter() - t < 0.2
        pub.flush(10)
        assert pub.sent == 50 and pub.errors == []
        feed.wait(50, timeout=10)
        assert list(feed.df["i"]) == list(range(50))
        answer = pub.publish("p-batch", "n", {"i": 50}, wait=True)
        assert answer == {}
        pub.close()
        with pytest.raises(PublishError, match="closed"):
            pub.publish("p-batch", "n", 1)
    finally:
        feed.close()


def test_failures_are_reported_not_silent():
    """An unreachable server: retried, then reported once (raised by the waiting flush(), no warning as
    well), naming the channel and event, in publisher.errors, without the signed query string."""
    bad = Settings(app_id="1", key="k", secret="s3cr3t-value", host="127.0.0.1", port=9)
    pub = Publisher(bad)
    pub.publish("c", "e", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning as well would be a second report
        with pytest.raises(PublishError, match="not delivered") as info:
            pub.flush(30)
    assert "'e' on 'c'" in str(info.value)
    for secret in ("auth_signature", "auth_key=", "s3cr3t-value", "body_md5="):
        assert secret not in str(info.value)
    assert len(pub.errors) == 1
    pub.close()


def test_bad_credentials_fail_fast(server):
    """A wrong secret is a permanent failure (no retries), raised by flush() and in publisher.errors."""
    pub = Publisher(settings(server).__class__(**{**settings(server).__dict__, "secret": "wrong"}))
    t = time.monotonic()
    with pytest.raises(PublishError, match="PusherBadAuth"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warned if it failed before flush() started waiting
        pub.publish("c", "e", 2)
        pub.flush(30)
    assert time.monotonic() - t < 2
    pub.close()


def test_module_publish_and_validation(server):
    """livewidget.publish() uses the resolution order; bad arguments raise at once."""
    kw = {
        "host": server.host,
        "port": server.port,
        "app_id": server.app_id,
        "key": server.key,
        "secret": server.secret,
    }
    assert livewidget.publish("c", "e", {"x": 1}, wait=True, **kw) == {}
    with pytest.raises(ValueError, match="channel"):
        livewidget.publish("", "e", 1, **kw)


def test_events_near_the_size_limit_are_delivered(server):
    """Events close to 10 KB (and non-ASCII ones) go through, though the SDK sizes batches by getsizeof."""
    feed = livewidget.Feed(
        "p-big",
        host=server.host,
        port=server.port,
        app_id=server.app_id,
        key=server.key,
        secret=server.secret,
    )
    try:
        while feed._receiver.state != "connected" or not all(feed._receiver.protocol.channels.values()):
            time.sleep(0.01)
        pub = Publisher(settings(server))
        for i in range(4):
            pub.publish("p-big", "big", "é" * 5000 if i % 2 else "x" * 10_200)
        pub.flush(20)
        assert pub.errors == []
        feed.wait(4, timeout=10)
        pub.close()
    finally:
        feed.close()


def test_a_publish_failure_is_reported_once_and_never_raised_by_an_unrelated_points_block(monkeypatch):
    """livewidget.publish() whose event the server refuses: one warning naming its channel and event;
    a later points() block on the same (shared) publisher delivers its points and raises nothing."""
    from livewidget.server import LocalServer

    monkeypatch.setattr(livewidget._publish, "FIRST_BACKOFF", 0.01)
    with LocalServer(max_data_size=200) as small:
        kw = {"host": small.host, "port": small.port, "app_id": small.app_id, "key": small.key}
        kw["secret"] = small.secret
        with pytest.warns(RuntimeWarning) as caught:
            livewidget.publish("too-big", "blob", "x" * 500, **kw)  # refused by this server (413)
            pub = livewidget._publish._default_publisher(livewidget._config.resolve(**kw))
            deadline = time.monotonic() + 20
            while not pub.errors and time.monotonic() < deadline:
                time.sleep(0.02)
        ours = [str(w.message) for w in caught if "not delivered" in str(w.message)]
        assert len(ours) == 1 and "'blob' on 'too-big'" in ours[0], ours
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with livewidget.points("fine", **kw) as pts:  # the same shared publisher
                pts.add(step=1, loss=0.5)
        assert len(pub.errors) == 1
        pub.flush(10)  # the Publisher's own callers had no failure either


def test_points_failures_are_raised_by_their_own_block(monkeypatch):
    """A points() block whose points are refused raises at its end, once (no warning as well)."""
    from livewidget.server import LocalServer

    monkeypatch.setattr(livewidget._publish, "FIRST_BACKOFF", 0.01)
    with LocalServer(max_data_size=100) as small:
        kw = {"host": small.host, "port": small.port, "app_id": small.app_id, "key": small.key}
        kw["secret"] = small.secret
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(PublishError, match="'point' on 'mine'"):  # noqa: SIM117
                with livewidget.points("mine", interval=0.5, **kw) as pts:
                    pts.add(text="y" * 300)


EXIT_SCRIPT = """
import livewidget, time
livewidget.connect(app_id="1", key="k", secret="{secret}", host="127.0.0.1", port={port})
for i in range(5):
    livewidget.publish("exit-c", "e", {{"i": i}})
print("queued", flush=True)
"""


@pytest.mark.parametrize("timeout", [None, "0.5"])
def test_exit_with_the_server_down_is_bounded_says_how_many_were_lost_and_no_secrets(timeout):
    """Interpreter exit with the server down waits at most LIVEWIDGET_EXIT_TIMEOUT (default 2 s), says
    plainly how many events were lost, and prints no signature, signed query string or secret."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: connection refused
    secret = "s3cr3t-do-not-print"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEWIDGET_", "PUSHER_"))}
    if timeout is not None:
        env["LIVEWIDGET_EXIT_TIMEOUT"] = timeout
    script = EXIT_SCRIPT.format(secret=secret, port=port)
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - start
    assert run.returncode == 0 and run.stdout == "queued\n", run.stderr
    bound = 2.0 if timeout is None else 0.5
    assert took < bound + 3.0, f"exit took {took:.1f} s"  # interpreter start-up and imports included
    assert "5 event(s) were not delivered" in run.stderr, run.stderr
    assert f"still queued after {bound:g} s (LIVEWIDGET_EXIT_TIMEOUT)" in run.stderr
    for leak in (secret, "auth_signature=", "auth_key=", "body_md5=", "auth_timestamp="):
        if leak.endswith("="):
            assert f"{leak}…" in run.stderr or leak not in run.stderr
        else:
            assert leak not in run.stderr
    assert run.stderr.count("livewidget") == 1, run.stderr  # one report, not one per batch


REFUSED_AT_EXIT = """
import livewidget
from livewidget.server import LocalServer
server = LocalServer().start()
livewidget.connect(app_id=server.app_id, key=server.key, secret="wrong-secret-do-not-print",
                   host=server.host, port=server.port)
for i in range(3):
    livewidget.publish("exit-c", "e", {"i": i})
"""


def test_events_refused_around_exit_are_reported_once_without_secrets():
    """Events the server refuses (bad signature) just before exit: one report in all (a warning or the
    exit message, not both), naming what was lost, with no signature or secret."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEWIDGET_", "PUSHER_"))}
    run = subprocess.run(
        [sys.executable, "-c", REFUSED_AT_EXIT], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert "not delivered" in run.stderr and "3 event(s)" in run.stderr, run.stderr
    assert run.stderr.count("not delivered") == 1, run.stderr
    assert "wrong-secret-do-not-print" not in run.stderr and "auth_signature=" not in run.stderr.replace(
        "auth_signature=…", ""
    )
    assert re.search(r"[0-9a-f]{32}", run.stderr) is None, run.stderr  # no signature echoed by the server

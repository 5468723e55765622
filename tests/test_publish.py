"""Publishing through the official pusher SDK: encoding, limits, background sending, failures."""

from __future__ import annotations

import datetime as dt
import json
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

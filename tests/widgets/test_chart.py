"""LiveChart in the kernel: points recorded, the window for later views (binary), extend, points()."""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pusher
import pytest

import livewidget
from livewidget._points import PACK_SIZE, ChartPublisher
from livewidget.server import LocalServer
from livewidget.widgets import chart as chart_module
from livewidget.widgets.chart import LiveChart, encode_columns, parse_window

from .conftest import creds, wait_for

JS_DIR = Path(__file__).resolve().parents[2] / "js"


def decode(payload: bytes) -> dict[str, Any]:
    """The binary columns of chart.py's docstring, read back (the test's own reader)."""
    assert payload[:4] == b"LWC1"
    (hlen,) = struct.unpack_from("<I", payload, 4)
    header = json.loads(payload[8 : 8 + hlen])
    n = header["n"]
    off = (8 + hlen + 7) // 8 * 8

    def f64() -> list[float]:
        nonlocal off
        values = list(struct.unpack_from(f"<{n}d", payload, off))
        off += 8 * n
        return values

    out = {"header": header, "t": f64(), "x": f64(), "y": [f64() for _ in header["fields"]]}
    if header["groups"] is not None:
        out["g"] = list(struct.unpack_from(f"<{n}i", payload, off))
        off += 4 * n
    assert off == len(payload)
    return out


def sdk(server: LocalServer) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=server.app_id,
        key=server.key,
        secret=server.secret,
        host=server.host,
        port=server.port,
        ssl=False,
    )


@pytest.fixture
def make_chart(server: LocalServer, comms: list[Any]) -> Iterator[Callable[..., LiveChart]]:
    made: list[LiveChart] = []

    def make(channel: Any, **kwargs: Any) -> LiveChart:
        chart = LiveChart(channel, **{**creds(server), **kwargs})
        made.append(chart)
        if kwargs.get("record", True):
            wait_for(
                lambda: (
                    chart._receiver is not None
                    and chart._receiver.state == "connected"
                    and all(chart._receiver.protocol.channels.values())
                )
            )
        return chart

    yield make
    for chart in made:
        chart.close()


def backfills(comms: list[Any]) -> list[bytes]:
    """Every `_backfill` value sent to the front end, in order."""
    out = []
    for _, _, data, buffers in comms:
        state = (data or {}).get("state", {})
        paths = (data or {}).get("buffer_paths", [])
        if "_backfill" in state or ["_backfill"] in paths:
            i = paths.index(["_backfill"]) if ["_backfill"] in paths else None
            value = bytes(buffers[i]) if i is not None else state["_backfill"]
            if value:
                out.append(value)
    return out


# ------------------------------------------------------------------------------------------ options


def test_window_accepts_points_spans_and_none():
    """window: int points, '30s'/'5min'/timedelta spans in seconds, None for no window."""
    assert parse_window(500) == (500, 0.0)
    assert parse_window("30s") == (0, 30.0)
    assert parse_window("5min") == (0, 300.0)
    assert parse_window("1.5h") == (0, 5400.0)
    assert parse_window(dt.timedelta(minutes=2)) == (0, 120.0)
    assert parse_window(None) == (0, 0.0)
    for bad, error in [(0, ValueError), ("5 parsecs", ValueError), (2.5, TypeError), (True, TypeError)]:
        with pytest.raises(error):
            parse_window(bad)  # type: ignore[arg-type]


def test_constructor_validates_and_syncs_options(make_chart):
    """The chart's options become traits; bad ones are clear errors before anything starts."""
    chart = make_chart(
        "c-opts",
        x="step",
        y=["loss", "acc"],
        by="run",
        kind="area",
        window="2min",
        log_y=True,
        ylim=(None, 10),
        height=400,
        record=False,
    )
    state = chart.get_state()
    assert state["_kind"] == "chart"
    assert (state["x"], state["y"], state["by"], state["kind"]) == ("step", ["loss", "acc"], "run", "area")
    assert (state["window_points"], state["window_span"]) == (0, 120.0)
    assert state["ylim"] == [None, 10.0] and state["log_y"] is True and state["height"] == 400
    assert state["x_label"] == "step" and state["title"] == "loss, acc · c-opts"
    assert make_chart("c-opts2", y="v", window_x=100, record=False).window_span == 100.0
    for kwargs, message in [
        ({"y": []}, "y must name"),
        ({"y": "v", "kind": "pie"}, "kind must be one of"),
        ({"y": "v", "ylim": (3, 1)}, "lo must be below hi"),
        ({"y": "v", "ylim": (1,)}, "ylim must be"),
        ({"y": "v", "window": -1}, "positive"),
    ]:
        with pytest.raises(ValueError, match=message):
            LiveChart("c-bad", record=False, **kwargs)
    with pytest.raises(ValueError, match="invalid channel name"):
        LiveChart("bad channel", y="v", record=False)


# ------------------------------------------------------------------------------------------ receiving


def test_records_one_row_per_point_single_or_packed(make_chart, server):
    """An object is one point, an array several: chart.df has one row per point, in order."""
    chart = make_chart("c-rec", x="step", y="loss")
    client = sdk(server)
    client.trigger("c-rec", "point", {"step": 0, "loss": 1.0})
    client.trigger("c-rec", "point", [{"step": i, "loss": 1 / (i + 1)} for i in range(1, 50)])
    chart.wait(50, timeout=10)
    df = chart.df
    assert len(df) == 50 and chart.total == 50
    assert list(df["step"]) == list(range(50))
    assert df["loss"][3] == pytest.approx(0.25)
    assert len(chart.events) == 2, "events are the events, each with its points"
    wait_for(lambda: chart.count == 50)


def test_bad_points_are_counted_not_fatal(make_chart, server):
    """Strings, missing x, non-numeric y: skipped or gaps, counted; the good points still count."""
    chart = make_chart("c-badpts", x="step", y=["loss", "acc"])
    client = sdk(server)
    client.trigger("c-badpts", "point", "just text")
    client.trigger(
        "c-badpts",
        "point",
        [
            {"loss": 1},  # no x
            {"step": "abc", "loss": 1},  # x not a number
            {"step": 1},  # no y at all
            {"step": 2, "loss": "oops", "acc": 0.5},  # one bad value: a gap
            {"step": 3, "loss": None},  # only a bad value: skipped (drawn as a gap)
            {"step": 4, "loss": 0.4, "acc": 0.6},
            42,
        ],
    )
    chart.wait(8, timeout=10)
    assert chart.skipped == 6
    assert chart.bad_values == 1
    window = list(chart._window)
    assert [r[1] for r in window] == [2, 3, 4]
    assert math.isnan(window[0][3][0]) and window[0][3][1] == 0.5
    assert window[1][3][1] == -math.inf, "absent"
    assert len(chart.df) == 8, "the record keeps every point as it came"


def test_time_axis_from_receive_time_and_iso_strings(make_chart, server):
    """x=None is the receive time; ISO strings (with Z or an offset) make a time axis in seconds."""
    by_time = make_chart("c-time", y="v")
    iso = make_chart("c-time", x="ts", y="v")
    before = time.time()
    sdk(server).trigger(
        "c-time",
        "point",
        [{"ts": "2024-01-01T00:00:00Z", "v": 1}, {"ts": "2024-01-01T01:00:00+01:00", "v": 2}],
    )
    iso.wait(2, timeout=10)
    by_time.wait(2, timeout=10)
    assert iso._x_kind == "time" and by_time._x_kind == "time"
    assert [r[1] for r in iso._window] == [1704067200.0, 1704067200.0]
    assert all(before - 1 < r[1] < time.time() + 1 for r in by_time._window)


def test_window_keeps_the_last_points_and_the_backfill_follows(make_chart, server, comms):
    """The kernel's window is what a later view draws: refreshed at most every BACKFILL_EVERY s."""
    chart = make_chart("c-win", x="step", y="loss", by="run", window=100)
    client = sdk(server)
    for batch in range(3):
        points = [{"step": batch * 100 + i, "loss": i, "run": f"r{i % 2}"} for i in range(100)]
        client.trigger("c-win", "point", points[:50])
        client.trigger("c-win", "point", points[50:])
    chart.wait(300, timeout=10)
    assert len(chart._window) == 100
    wait_for(lambda: any(decode(b)["header"]["n"] == 100 for b in backfills(comms)), timeout=6)
    payload = decode(backfills(comms)[-1])
    assert payload["x"] == [float(200 + i) for i in range(100)]
    assert payload["header"]["groups"] == ["r0", "r1"]
    assert payload["g"][:4] == [0, 1, 0, 1]
    assert payload["header"]["x_kind"] == "number"
    assert all(abs(t / 1000 - time.time()) < 30 for t in payload["t"])
    sent = backfills(comms)
    assert len(sent) <= 3, f"{len(sent)} backfill refreshes for 6 events within a few seconds"


def test_time_span_window_in_the_backfill(make_chart):
    """A time-span window trims the encoded window to the span of the newest x."""
    chart = make_chart("c-span", x="t", y="v", window="10s", record=False)
    chart.extend({"t": [0.0, 5.0, 12.0, 20.0], "v": [1.0, 2.0, 3.0, 4.0]})
    assert decode(chart._encode_window())["x"] == [12.0, 20.0]


# ------------------------------------------------------------------------------------------ extend


def test_extend_sends_binary_points_to_open_views_and_records_them(make_chart, comms):
    """extend(df) adds to chart.df and the window, and sends one 'points' message with a buffer."""
    chart = make_chart("c-ext", x="step", y=["loss", "acc"], record=False)
    df = pd.DataFrame({"step": [1, 2, 3], "loss": [0.5, float("nan"), 0.3], "acc": [0.1, 0.2, None]})
    assert chart.extend(df) == 3
    messages = [(d, b) for _, _, d, b in comms if (d or {}).get("method") == "custom"]
    content, buffers = messages[-1]
    assert content["content"] == {"type": "points", "seq": 1}
    assert len(buffers) == 1
    cols = decode(bytes(buffers[0]))
    assert cols["x"] == [1.0, 2.0, 3.0]
    assert math.isnan(cols["y"][0][1]) and math.isnan(cols["y"][1][2])
    assert len(chart.df) == 3 and list(chart.df["step"]) == [1, 2, 3]
    chart.clear()
    content, buffers = [(d, b) for _, _, d, b in comms if (d or {}).get("method") == "custom"][-1]
    assert content["content"] == {"type": "points", "seq": 2, "reset": True}
    assert len(chart.df) == 0 and len(chart._window) == 0


def test_from_dataframe_uses_the_index_and_numeric_columns(server, comms):
    """from_dataframe: x from the (date) index, y = numeric columns; a fresh channel by default."""
    df = pd.DataFrame(
        {"temp": [20.5, 21.0, 21.5], "label": ["a", "b", "c"]},
        index=pd.date_range("2024-01-01", periods=3, freq="h", name="when"),
    )
    chart = LiveChart.from_dataframe(df, record=False, **creds(server))
    try:
        assert chart.x == "when" and chart.y == ["temp"]
        assert chart.channels[0].startswith("chart-")
        assert chart._x_kind == "time"
        assert [r[1] for r in chart._window] == [1704067200.0, 1704070800.0, 1704074400.0]
        with pytest.raises(ValueError, match="no numeric column"):
            LiveChart.from_dataframe(pd.DataFrame({"s": ["x"]}), record=False, **creds(server))
    finally:
        chart.close()


# ------------------------------------------------------------------------------------------ publishing


def test_points_helper_packs_many_points_per_event(make_chart, server):
    """2,000 points added at once go out as a few events, each under the size limit; all arrive."""
    chart = make_chart("c-pack", x="i", y="v")
    with livewidget.points("c-pack", **creds(server)) as pts:
        assert isinstance(pts, ChartPublisher)
        for i in range(2000):
            pts.add(i=i, v=math.sin(i / 50))
        with pytest.raises(TypeError, match="cannot encode"):
            pts.add(i=1, v=object())
    chart.wait(2000, timeout=15)
    assert pts.points == 2000
    assert pts.events < 100, f"{pts.events} events for 2,000 points"
    sizes = [len(json.dumps(e["data"], separators=(",", ":"))) for e in chart.events]
    assert max(sizes) <= PACK_SIZE
    assert sorted(chart.df["i"]) == list(range(2000))
    with pytest.raises(RuntimeError, match="closed"):
        pts.add(i=1, v=1)


def test_points_helper_sends_a_lone_point_as_an_object(make_chart, server):
    """A slow producer publishes exactly what publish() would: one object per event."""
    chart = make_chart("c-lone", x="i", y="v")
    pts = ChartPublisher("c-lone", "sample", interval=0.01, **creds(server))
    pts.add({"i": 1, "v": 2.0})
    pts.flush()
    chart.wait(1, timeout=10)
    assert chart.events[-1]["data"] == {"i": 1, "v": 2.0}
    assert chart.events[-1]["event"] == "sample"
    pts.close()
    pts.close()  # twice is fine


def test_points_helper_sleeps_while_idle(server):
    """An idle ChartPublisher's thread sleeps until a point comes (it used to wake every interval,
    taking the GIL from the training loop 20 times a second for nothing); then it gathers for one
    interval and sends."""
    pts = ChartPublisher("c-idle", interval=0.01, **creds(server))
    wakes = 0
    take = pts._take

    def counting_take() -> list[str]:
        nonlocal wakes
        wakes += 1
        return take()

    pts._take = counting_take  # type: ignore[method-assign]
    pts.add(i=1)
    time.sleep(0.5)  # 50 intervals
    assert pts.events == 1
    assert wakes <= 3, f"the packing thread woke {wakes} times in 50 idle intervals"
    pts.add(i=2)
    deadline = time.monotonic() + 5
    while pts.events < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pts.events == 2
    pts.close()


# ------------------------------------------------------------------------------------------ the format


def test_encoding_is_what_chart_js_decodes():
    """encode_columns' bytes, read by chart.js decodeColumns under Node, give the same values."""
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "uplot").is_dir():
        pytest.fail("Node.js and js/node_modules are needed (scripts/setup.sh)")
    rows = [(1000.0, 1.5, "a", (0.25, math.nan)), (2000.0, 2.5, "b", (-math.inf, 7.0))]
    payload = encode_columns(rows, ["loss", "acc"], True, "number", 3, 1)
    script = (
        "import {decodeColumns} from './src/chart.js';"
        "const b = Buffer.from(process.argv[1], 'hex');"
        "const c = decodeColumns(new DataView(b.buffer, b.byteOffset, b.byteLength));"
        "console.log(JSON.stringify({h: c.header, t: [...c.t], x: [...c.x], g: [...c.g],"
        " y: c.ys.map((a) => [...a].map(String))}));"
    )
    proc = subprocess.run(
        [node, "--input-type=module", "-e", script, payload.hex()],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["h"] == {"n": 2, "fields": ["loss", "acc"], "groups": ["a", "b"], "x_kind": "number"} | {
        "skipped": 3,
        "bad": 1,
        "extends": 0,
    }
    assert out["t"] == [1000, 2000] and out["x"] == [1.5, 2.5] and out["g"] == [0, 1]
    assert out["y"] == [["0.25", "-Infinity"], ["NaN", "7"]]


def test_backfill_interval_grows_with_the_window(monkeypatch):
    """Large windows are re-encoded less often (BACKFILL_RATE points per second of interval)."""
    assert chart_module.BACKFILL_EVERY == 2.0
    assert max(chart_module.BACKFILL_EVERY, 200_000 / chart_module.BACKFILL_RATE) == 4.0

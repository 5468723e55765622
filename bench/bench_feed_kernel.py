"""Feed, kernel side: DataFrame build time and kernel-to-browser message rate under a flood.

    .venv/bin/python bench/bench_feed_kernel.py [--rows 1000000] [--seconds 5] [--rate 10000]

1. ``feed.df`` from one million recorded events (target: under 1 s), side by side with the raw
   baseline a user would write: ``pd.DataFrame(list_of_row_dicts)`` + ``pd.json_normalize``.
2. Kernel-to-browser comm messages per second while 10,000 events/s arrive (target: under 30),
   side by side with the naive design of one trait update per event. Comm messages are counted at the
   comm (what Jupyter's IOPub rate limit sees), with the embedded server feeding a real Feed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

import comm
import pandas as pd
from comm.base_comm import BaseComm


def bench_dataframe(rows: int, rounds: int) -> dict[str, Any]:
    from livewidget._frames import EventStore

    store = EventStore(max_rows=rows)
    raw: list[dict[str, Any]] = []
    t0 = 1.79e9
    for i in range(rows):
        data = {"step": i, "loss": 1.0 / (i + 1), "acc": 0.5, "run": {"id": "r1", "epoch": i // 1000}}
        store.append(t0 + i * 1e-3, "metrics", "point", data, None)
        raw.append({"time": t0 + i * 1e-3, "channel": "metrics", "event": "point", "data": data})
    ours, base = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        df = store.to_frame()
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        bdf = pd.DataFrame(raw)
        flat = pd.json_normalize(bdf["data"].tolist())
        bdf = pd.concat([bdf.drop(columns=["data"]), flat], axis=1)
        bdf["time"] = pd.to_datetime(bdf["time"], unit="s", utc=True)
        base.append(time.perf_counter() - t)
    assert len(df) == rows and len(bdf) == rows
    return {"rows": rows, "livewidget_s": statistics.median(ours), "baseline_s": statistics.median(base)}


class _Counting(BaseComm):
    times: list[float] = []

    def publish_msg(
        self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None, **k: Any
    ) -> None:
        if msg_type == "comm_msg":
            _Counting.times.append(time.monotonic())


def bench_messages(seconds: float, rate: int) -> dict[str, Any]:
    import livewidget
    from livewidget.server import LocalServer

    comm.create_comm = lambda *a, **k: _Counting(*a, **k)  # type: ignore[assignment]
    with LocalServer() as server:
        feed = livewidget.Feed(
            "flood",
            host=server.host,
            port=server.port,
            app_id=server.app_id,
            key=server.key,
            secret=server.secret,
        )
        while feed._receiver.state != "connected" or not all(feed._receiver.protocol.channels.values()):
            time.sleep(0.01)
        hub = server.server.apps.by_key[server.key]
        payload = json.dumps({"x": 1, "y": 2.5, "tag": "abc"})
        _Counting.times.clear()
        start = time.monotonic()
        sent = 0
        batch = max(1, rate // 100)  # 100 injections per second of `batch` events each

        def inject(n: int) -> None:
            now = time.time()
            for _ in range(n):
                server.server._run(hub, hub.trigger("p", payload, ["flood"], now))

        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate) - sent
            if due > 0:
                n = min(due, batch)
                server.call(inject, n)
                sent += n
            else:
                time.sleep(0.002)
        got = feed.wait(sent, timeout=60)
        lag = time.monotonic() - start - seconds
        time.sleep(0.5)
        msgs = [t for t in _Counting.times if start <= t <= start + seconds]
        per_second = [sum(1 for t in msgs if s <= t - start < s + 1) for s in range(int(seconds))]
        feed.close()
    return {
        "events_sent": sent,
        "events_recorded": got,
        "offered_rate": sent / seconds,
        "record_lag_s": lag,
        "comm_msgs_per_s_median": statistics.median(per_second),
        "comm_msgs_per_s_max": max(per_second),
        "naive_msgs_per_s": sent / seconds,  # one trait update per event
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=int, default=10_000)
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    df = bench_dataframe(args.rows, args.rounds)
    print(
        f"feed.df from {df['rows']:,} events: livewidget {df['livewidget_s']:.3f} s "
        f"(median of {args.rounds}); "
        f"baseline DataFrame(list of dicts)+json_normalize {df['baseline_s']:.3f} s; "
        f"ratio {df['baseline_s'] / df['livewidget_s']:.1f}x faster; target < 1 s: "
        f"{'met' if df['livewidget_s'] < 1 else 'MISSED'}"
    )
    m = bench_messages(args.seconds, args.rate)
    print(
        f"flood {m['offered_rate']:.0f} events/s for {args.seconds:.0f} s: recorded {m['events_recorded']}/"
        f"{m['events_sent']} (lag after the flood {m['record_lag_s']:.2f} s); "
        "kernel->browser comm messages/s "
        f"median {m['comm_msgs_per_s_median']}, max {m['comm_msgs_per_s_max']} vs naive "
        f"{m['naive_msgs_per_s']:.0f}; target < 30: {'met' if m['comm_msgs_per_s_max'] < 30 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()

"""progress(): per-iteration cost next to plain tqdm, and how many events a long loop publishes.

    .venv/bin/python bench/bench_progress.py [--n 2000000] [--rounds 7] [--long 10000000] [--url URL]

1. Per-iteration cost of ``livewidget.progress`` and ``tqdm.tqdm`` with the same options
   (``file=os.devnull``, ``mininterval=0.1``, same ``total``), in one run, alternating which goes
   first, several rounds; medians, the overhead over a bare loop, and the ratio (target: <= 1.2x).
   Both ways of using a bar: iterating (``for x in bar(range(n))``) and manual ``bar.update(1)``.
2. A ten-million-iteration loop: events received by a subscriber versus elapsed / mininterval
   (target: about one per mininterval, plus the start and end events).
3. For scale, what a whole short bar costs (create, 10 iterations, close), top-level and nested.

Publishing goes to ``livewidget serve`` started for the run in its own process (127.0.0.1, a free
port), as the embedded server runs in practice, unless ``--url`` names another server.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import tqdm

import livewidget
from livewidget import _progress
from livewidget._config import resolve
from livewidget.receiver import Receiver

CHANNEL = "bench-progress"


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, tqdm {tqdm.__version__}, "
        f"{platform.system()} {platform.release()}"
    )


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def per_iteration(n: int, rounds: int, sink: Any) -> list[dict[str, Any]]:
    opts = {"file": sink, "mininterval": 0.1, "total": n}

    def bare() -> None:
        for _ in range(n):
            pass

    def iterate(cls: Any, **extra: Any) -> Callable[[], None]:
        def run() -> None:
            for _ in cls(range(n), **opts, **extra):
                pass

        return run

    def manual(cls: Any, **extra: Any) -> Callable[[], None]:
        def run() -> None:
            with cls(**opts, **extra) as bar:
                for _ in range(n):
                    bar.update(1)

        return run

    rows = []
    for mode, make in (("iterate", iterate), ("update(1)", manual)):
        runs: dict[str, list[float]] = {"bare": [], "tqdm": [], "progress": []}
        pair: list[tuple[str, Callable[[], None]]] = [
            ("tqdm", make(tqdm.tqdm)),
            ("progress", make(livewidget.progress, channel=CHANNEL)),
        ]
        for r in range(rounds):
            runs["bare"].append(timed(bare))
            for name, fn in pair if r % 2 == 0 else reversed(pair):  # alternate which goes first
                runs[name].append(timed(fn))
        med = {k: statistics.median(v) / n * 1e9 for k, v in runs.items()}  # ns per iteration
        best = {k: min(v) / n * 1e9 for k, v in runs.items()}
        rows.append(
            {
                "mode": mode,
                "bare_ns": med["bare"],
                "tqdm_ns": med["tqdm"],
                "progress_ns": med["progress"],
                "tqdm_min_ns": best["tqdm"],
                "progress_min_ns": best["progress"],
                "ratio": med["progress"] / med["tqdm"],
                "overhead_ratio": (med["progress"] - med["bare"]) / (med["tqdm"] - med["bare"]),
            }
        )
    return rows


def long_loop(iterations: int, mininterval: float, sink: Any) -> dict[str, Any]:
    received: list[Any] = []
    lock = threading.Lock()

    def on_event(event: Any) -> None:
        if event.event == "progress" and event.data.get("job") == "long-loop":
            with lock:
                received.append(event.data)

    receiver = Receiver(resolve(), [CHANNEL], on_event).start()
    deadline = time.monotonic() + 10
    while not (receiver.state == "connected" and all(receiver.protocol.channels.values())):
        if time.monotonic() > deadline:
            raise SystemExit("could not subscribe to the server")
        time.sleep(0.01)
    t = time.perf_counter()
    for _ in livewidget.progress(
        range(iterations), file=sink, mininterval=mininterval, channel=CHANNEL, job="long-loop"
    ):
        pass
    elapsed = time.perf_counter() - t
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with lock:
            if received and received[-1]["status"] == "done":
                break
        time.sleep(0.01)
    time.sleep(0.2)
    receiver.stop()
    statuses = [d["status"] for d in received]
    return {
        "iterations": iterations,
        "elapsed_s": elapsed,
        "events": len(received),
        "expected": elapsed / mininterval,
        "running": statuses.count("running"),
        "final": statuses[-1] if statuses else None,
        "final_n": received[-1]["n"] if received else None,
    }


def short_bars(count: int, sink: Any) -> dict[str, float]:
    def bars(cls: Any, **extra: Any) -> Callable[[], None]:
        def run() -> None:
            for _ in range(count):
                for _ in cls(range(10), file=sink, **extra):
                    pass

        return run

    def nested(cls: Any, **extra: Any) -> Callable[[], None]:
        def run() -> None:
            with cls(total=count, file=sink, **extra) as outer:
                for _ in range(count):
                    for _ in cls(range(10), file=sink, leave=False, **extra):
                        pass
                    outer.update()

        return run

    out = {}
    for name, make in (("top-level", bars), ("nested", nested)):
        plain = min(timed(make(tqdm.tqdm)) for _ in range(3))
        ours = min(timed(make(livewidget.progress, channel=CHANNEL)) for _ in range(3))
        out[name + "_tqdm_us"] = plain / count * 1e6
        out[name + "_progress_us"] = ours / count * 1e6
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2_000_000, help="iterations per timed loop")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--long", type=int, default=10_000_000, help="iterations of the event-count loop")
    p.add_argument("--mininterval", type=float, default=0.1)
    p.add_argument("--short", type=int, default=300, help="short bars for the whole-bar cost")
    p.add_argument("--url", help="publish here instead of an in-process embedded server")
    args = p.parse_args()

    server = None
    if args.url:
        os.environ["LIVEWIDGET_URL"] = args.url
    else:
        server = subprocess.Popen(
            [sys.executable, "-m", "livewidget", "serve", "--port", "0"], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None
        for line in server.stdout:
            if "LIVEWIDGET_URL=" in line:
                os.environ["LIVEWIDGET_URL"] = line.split("=", 1)[1].strip()
                break
    sink = open(os.devnull, "w")  # noqa: SIM115 (kept open for the whole run)
    print(f"machine: {machine()}")
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print()
    try:
        rows = per_iteration(args.n, args.rounds, sink)
        long = long_loop(args.long, args.mininterval, sink)
        short = short_bars(args.short, sink)
    finally:
        for pub in list(_progress._state.publishers.values()):
            pub.flush(60)  # everything queued is delivered before the server goes
        if server is not None:
            server.terminate()
            server.wait(10)

    print(f"1. Per-iteration cost, {args.n:,} iterations x {args.rounds} rounds, alternating, medians")
    print(f"   (file=os.devnull, mininterval={args.mininterval}; 'overhead' = minus the bare loop)")
    print()
    print("| use | bare loop | tqdm.tqdm (min) | livewidget.progress (min) | ratio | overhead ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['bare_ns']:.1f} ns | {r['tqdm_ns']:.1f} ns ({r['tqdm_min_ns']:.1f}) "
            f"| {r['progress_ns']:.1f} ns ({r['progress_min_ns']:.1f}) "
            f"| {r['ratio']:.3f}x | {r['overhead_ratio']:.3f}x |"
        )
    print()
    print(f"2. Events published by a {long['iterations']:,}-iteration loop (mininterval={args.mininterval})")
    print()
    print("| elapsed | elapsed / mininterval | events received | of which running | last |")
    print("|---:|---:|---:|---:|---|")
    print(
        f"| {long['elapsed_s']:.2f} s | {long['expected']:.1f} | {long['events']} | {long['running']} "
        f"| {long['final']} at n={long['final_n']:,} |"
    )
    print()
    print("3. A whole short bar (create, 10 iterations, close), per bar")
    print()
    print("| bar | tqdm.tqdm | livewidget.progress |")
    print("|---|---:|---:|")
    for name in ("top-level", "nested"):
        print(f"| {name} | {short[name + '_tqdm_us']:.0f} us | {short[name + '_progress_us']:.0f} us |")
    worst = max(r["ratio"] for r in rows)
    print()
    print(f"per-iteration ratio: worst {worst:.3f}x (target <= 1.2x): {'OK' if worst <= 1.2 else 'OVER'}")
    ok = long["events"] <= long["expected"] + 3
    print(
        f"events: {long['events']} for {long['expected']:.1f} intervals (target about one each): "
        f"{'OK' if ok else 'OVER'}"
    )


if __name__ == "__main__":
    main()

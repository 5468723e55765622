"""publish(): per-call cost with the embedded default next to an explicit URL (issue 15 item 6).

    .venv/bin/python bench/bench_publish.py [--calls 2000] [--rounds 7]

``livewidget.publish(channel, event, data)`` with no connection keywords resolves its settings on every
call (explicit arguments, ``connect()``, the environment, then the embedded server). With the embedded
default that used to read the runtime file and open a TCP connection to check the daemon (0.73 ms a
call); now the record is kept while ``server.json`` is unchanged (one ``stat`` at most every 0.1 s).
Here both ways publish to the same embedded daemon (started for the run in a temporary runtime folder),
in alternating rounds of ``--calls`` calls; the time of the calls only is measured (events are sent
by the background sender; it is flushed between rounds, untimed). Prints the median per-call cost of
each and their ratio (target: the embedded default within 2x of the explicit URL).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, {platform.system()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="publish() calls per round [2000]")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of each [7]")
    args = parser.parse_args()

    runtime = tempfile.mkdtemp(prefix="lw-bench-publish-")
    os.environ["LIVEWIDGET_RUNTIME_DIR"] = runtime
    for name in ("LIVEWIDGET_URL", "PUSHER_KEY"):
        os.environ.pop(name, None)

    import livewidget
    from livewidget import _embedded
    from livewidget._config import resolve
    from livewidget._publish import _default_publisher

    try:
        embedded = resolve()  # starts the daemon
        url = (
            f"http://{embedded.key}:{embedded.secret}@{embedded.host}:{embedded.port}/apps/{embedded.app_id}"
        )
        explicit = resolve(url)
        data = {"step": 1, "loss": 0.25}

        def default_way() -> None:
            livewidget.publish("bench-publish", "point", data)

        def explicit_way() -> None:
            livewidget.publish("bench-publish", "point", data, url=url)

        ways = {"embedded default": default_way, "explicit URL": explicit_way}
        publishers = {"embedded default": embedded, "explicit URL": explicit}
        times: dict[str, list[float]] = {name: [] for name in ways}
        for r in range(args.rounds):
            order = list(ways) if r % 2 == 0 else list(reversed(ways))
            for name in order:
                call = ways[name]
                call()  # warm
                start = time.perf_counter()
                for _ in range(args.calls):
                    call()
                took = time.perf_counter() - start
                times[name].append(took / args.calls * 1e6)
                _default_publisher(publishers[name]).flush(60)  # untimed: the sender catches up
        med = {name: statistics.median(ts) for name, ts in times.items()}
        ratio = med["embedded default"] / med["explicit URL"]
        print(f"machine: {machine()}")
        print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
        print(f"{args.rounds} rounds of {args.calls} calls each, alternating; median per call:")
        print(f"  {'way':<18} {'median µs/call':>15} {'min':>8} {'max':>8}")
        for name, ts in times.items():
            print(f"  {name:<18} {med[name]:>15.2f} {min(ts):>8.2f} {max(ts):>8.2f}")
        print(f"  ratio embedded/explicit: {ratio:.2f}x (target <= 2x): {'met' if ratio <= 2 else 'NOT met'}")
        return 0 if ratio <= 2 else 1
    finally:
        _embedded.stop_embedded()


if __name__ == "__main__":
    sys.exit(main())

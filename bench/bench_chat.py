"""Chat, message latency sender to receiver with 50 members in a room (target: p99 under 50 ms on loopback).

    .venv/bin/python bench/bench_chat.py [--members 50] [--messages 500] [--rate 40] [--runs 3]

The embedded server (``LocalServer``, in this process) and ``bench/chat_members.mjs``: N pusher-js
clients under Node, each a member of ``presence-chat-bench-...``, sending ``client-chat-message``
events in the Chat wire format round-robin (each member at most 1 a second, under Pusher's 10 client
events per second) at ``--rate`` messages a second in all; each message reaches the N-1 others. The
latency of one sample is the time from ``channel.trigger`` in the sender to the ``client-chat-message``
callback in one receiver, on one clock (all clients share the Node process, which adds its own
scheduling to the figures: a conservative measure). Not a test: prints a table, writes bench/out/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "chat_members.mjs"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def run_once(members: int, messages: int, rate: float) -> dict[str, Any]:
    from livewidget.server import LocalServer

    node = shutil.which("node")
    if node is None:
        sys.exit("bench_chat: Node.js is needed (and js/node_modules: npm ci in js/)")
    with LocalServer() as server:
        env = {
            **os.environ,
            "LW_HOST": server.host,
            "LW_PORT": str(server.port),
            "LW_KEY": server.key,
            "LW_SECRET": server.secret,
            "LW_MEMBERS": str(members),
            "LW_MESSAGES": str(messages),
            "LW_RATE": str(rate),
        }
        proc = subprocess.run(
            [node, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=180, check=False
        )
    if proc.returncode != 0:
        sys.exit(f"bench_chat: chat_members.mjs failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--rate", type=float, default=40.0, help="messages per second in the room")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    runs = []
    for i in range(args.runs):
        load_before = os.getloadavg()[0]
        r = run_once(args.members, args.messages, args.rate)
        r["load_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        lat = r.pop("latencies_ms")
        r.update(
            p50_ms=percentile(lat, 0.50),
            p90_ms=percentile(lat, 0.90),
            p99_ms=percentile(lat, 0.99),
            max_ms=max(lat),
            mean_ms=statistics.fmean(lat),
        )
        runs.append(r)
        print(
            f"run {i + 1}: {r['samples']} samples, missing {r['missing']}, errors {r['errors']}: "
            f"p50 {r['p50_ms']:.2f} ms  p90 {r['p90_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
            f"max {r['max_ms']:.2f} ms  (load {r['load_1min'][0]:.1f} -> {r['load_1min'][1]:.1f})"
        )
    machine = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": _cpu_model(),
        "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
    }
    worst = max(r["p99_ms"] for r in runs)
    verdict = "OK" if worst < 50 else "MISS"
    print(f"\nworst p99 over {args.runs} runs: {worst:.2f} ms (target < 50 ms) -> {verdict}")
    out = HERE / "out" / f"chat-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "machine": machine, "runs": runs}, indent=2))
    print(f"written {out.relative_to(HERE.parent)}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()

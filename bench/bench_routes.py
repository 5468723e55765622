"""Routes (issue 12): the relay's kernel-to-browser message rate under a flood.

    .venv/bin/python bench/bench_routes.py [--seconds 5] [--rate 10000] [--widgets 4] [--mode relay]

Kernel-to-browser comm messages per second while ``--rate`` events/s arrive spread over ``--widgets``
Feeds, all relayed (``route="relay"``): the relay stream alone (target: at most 30/s; by design at most
1/RELAY_EVERY = 10/s) and every comm message of the kernel (relay + the widgets' own coalesced trait
updates), counted at the comm (what Jupyter's iopub rate limit sees), and whether every event reached
the stream (nothing dropped: the stream's rows are decoded and counted per widget). Real parts: the
embedded server in-process, real Feeds and receivers; only the comm is a recording one (no Jupyter).

``--mode standby``: the cost of the standby relay when nothing fails. The Feeds are on ``auto`` and
their browser reported ``jupyter`` (so the kernel relays them no more), and a cell runs meanwhile
(``RelaySession.busy``, as IPython's pre_run_cell does): every event is relayed once more, marked
standby, for a fallback that never comes. ``--mode idle``: the same with no cell running (nothing
should be sent). Also prints the relay's bytes per second (the binary buffers).

Publish-to-DOM latency per route and the highest rate a Feed keeps up with per route need a browser
per route (tests/e2e's JupyterLab harness); not measured here yet.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

import comm
from comm.base_comm import BaseComm


class _Recording(BaseComm):
    sent: list[tuple[float, Any, list[Any]]] = []

    def publish_msg(
        self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None, **k: Any
    ) -> None:
        if msg_type == "comm_msg":
            _Recording.sent.append((time.monotonic(), data, list(buffers or [])))


def _parts() -> list[dict[str, Any]]:
    """Every part of every relay message sent so far."""
    return [p for _, d, b in list(_Recording.sent) if _is_relay(d) for p in json.loads(bytes(b[0]))]


def _is_relay(data: Any) -> bool:
    content = (data or {}).get("content")
    return isinstance(content, dict) and content.get("type") == "relay"


def bench_relay(seconds: float, rate: int, widgets: int, mode: str = "relay") -> dict[str, Any]:
    import livewidget
    from livewidget import _relay
    from livewidget.server import LocalServer

    comm.create_comm = lambda *a, **k: _Recording(*a, **k)  # type: ignore[assignment]
    with LocalServer() as server:
        creds = {"host": server.host, "port": server.port, "app_id": server.app_id, "key": server.key}
        livewidget.connect(route="relay" if mode == "relay" else "auto")
        try:
            feeds = [livewidget.Feed(f"flood-{i}", secret=server.secret, **creds) for i in range(widgets)]
        finally:
            livewidget.connect(route="auto")
        for feed in feeds:
            while feed._receiver.state != "connected" or not all(feed._receiver.protocol.channels.values()):
                time.sleep(0.01)
            if mode != "relay":
                feed.route = "jupyter"  # as the browser reports it: relayed no more (standby only)
        if mode == "standby":
            _relay.session().busy(True)  # a cell runs (pre_run_cell)
        time.sleep(0.3)
        hub = server.server.apps.by_key[server.key]
        payload = json.dumps({"x": 1, "y": 2.5, "tag": "abc"})
        _Recording.sent.clear()
        start = time.monotonic()
        sent = 0
        batch = max(1, rate // 100)

        def inject(first: int, n: int) -> None:
            now = time.time()
            actions = []
            for i in range(first, first + n):
                actions += hub.trigger("p", payload, [f"flood-{i % widgets}"], now)
            server.server._run(hub, actions)

        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate) - sent
            if due > 0:
                n = min(due, batch)
                server.call(inject, sent, n)
                sent += n
            else:
                time.sleep(0.002)
        for i, feed in enumerate(feeds):
            feed.wait(len(range(i, sent, widgets)), timeout=60)
        deadline = time.monotonic() + (30 if mode != "idle" else 1)
        relayed = 0
        while time.monotonic() < deadline:
            relayed = sum(len(p["rows"]) for p in _parts())
            if relayed >= sent:
                break
            time.sleep(0.1)
        lost = sum(p.get("lost", 0) for p in _parts())
        window = [(t, d) for t, d, _ in _Recording.sent if start <= t <= start + seconds]
        spans = range(int(seconds))
        per_s_relay = [sum(1 for t, d in window if _is_relay(d) and s <= t - start < s + 1) for s in spans]
        per_s_all = [sum(1 for t, _ in window if s <= t - start < s + 1) for s in spans]
        relay_bytes = sum(
            len(b[0]) for t, d, b in _Recording.sent if start <= t <= start + seconds and _is_relay(d)
        )
        if mode == "standby":
            _relay.session().busy(False)
        for feed in feeds:
            feed.close()
    return {
        "relay_bytes_per_s": relay_bytes / seconds,
        "events_sent": sent,
        "offered_rate": sent / seconds,
        "relayed": relayed,
        "lost": lost,
        "relay_per_s_median": statistics.median(per_s_relay),
        "relay_per_s_max": max(per_s_relay),
        "all_per_s_median": statistics.median(per_s_all),
        "all_per_s_max": max(per_s_all),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--widgets", type=int, default=4)
    ap.add_argument("--mode", choices=("relay", "standby", "idle"), default="relay")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    m = bench_relay(args.seconds, args.rate, args.widgets, args.mode)
    if args.mode != "relay":
        print(
            f"{args.mode}, {args.widgets} Feeds on jupyter, {m['offered_rate']:.0f} events/s for "
            f"{args.seconds:.0f} s: relayed {m['relayed']}/{m['events_sent']} (lost {m['lost']}); relay "
            f"messages/s median {m['relay_per_s_median']}, max {m['relay_per_s_max']}; relay bytes/s "
            f"{m['relay_bytes_per_s']:.0f} ({m['relay_bytes_per_s'] / max(m['offered_rate'], 1):.0f}/event); "
            f"all comm messages/s median {m['all_per_s_median']}, max {m['all_per_s_max']}"
        )
        return
    print(
        f"relay, {args.widgets} Feeds, flood {m['offered_rate']:.0f} events/s for {args.seconds:.0f} s: "
        f"relayed {m['relayed']}/{m['events_sent']} (lost {m['lost']}); kernel->browser comm messages/s: "
        f"relay stream median {m['relay_per_s_median']}, max {m['relay_per_s_max']}; all comm messages "
        f"median {m['all_per_s_median']}, max {m['all_per_s_max']}; target <= 30: "
        f"{'met' if m['all_per_s_max'] <= 30 and m['relayed'] >= m['events_sent'] else 'MISSED'}"
    )


if __name__ == "__main__":
    main()

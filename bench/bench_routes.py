"""Routes (issue 12): the relay under a flood, and each route side by side in a real browser.

    .venv/bin/python bench/bench_routes.py [--quick] [--section all|flood|browser]
        [--seconds 5] [--rate 10000] [--widgets 4] [--mode relay|standby|idle]   # the flood section
        [--latency-seconds 10] [--repeats 3] [--step-seconds 5] [--steps 100,300,1000,3000,10000]

**flood** (in-process, no browser): kernel-to-browser comm messages per second while ``--rate`` events/s
arrive spread over ``--widgets`` Feeds, all relayed (``route="relay"``): the relay stream alone
(target: at most 30/s; by design at most 1/RELAY_EVERY = 10/s) and every comm message of the kernel
(relay + the widgets' own coalesced trait updates), counted at the comm (what Jupyter's iopub rate
limit sees), and whether every event reached the stream (nothing dropped: the stream's rows are
decoded and counted per widget). Real parts: the embedded server in-process, real Feeds and receivers;
only the comm is a recording one (no Jupyter).
With ``--mode standby``: the cost of the standby relay when nothing fails. The Feeds are on ``auto`` and
their browser reported ``jupyter`` (so the kernel relays them no more), and a cell runs meanwhile
(``RelaySession.busy``, as IPython's pre_run_cell does): every event is relayed once more, marked
standby, for a fallback that never comes. ``--mode idle``: the same with no cell running (nothing
should be sent). Also prints the relay's bytes per second (the binary buffers).

**browser**: a real JupyterLab (tests/e2e/conftest.py's ``hub_like_lab``: ``--ServerApp.base_url=
/user/alice/``, the livewidget server extension on) opened at ``http://lab.test:PORT/user/alice/`` (a
hostname that is not loopback, mapped to 127.0.0.1 by Chromium's ``--host-resolver-rules``) in headless
Debian Chromium. One notebook shows one Feed per route, each forced with ``livewidget.connect(route=
...)`` before it is created (``direct``, ``jupyter``, ``relay``), on a channel of its own; the routes are
measured one after the other, so they never share the machine with each other:

(a) publish-to-DOM latency at 100 events/s: a separate process publishes with the official ``pusher``
    SDK (REST to the embedded server), each event carrying its publish time; a MutationObserver
    (installed with ``Runtime.evaluate``) notes when each event's row is added to that Feed's DOM.
    The Feed measured is scrolled into view first (a Feed on screen is painted, one scrolled away is
    not: 2-3x in latency). ``--repeats`` rounds of ``--latency-seconds`` per route, rotated each round;
    the table gives the median over the rounds of each round's p50 and p99, and both over all rows.
(b) the highest rate the Feed keeps up with: the rate steps up (``--steps``), each step bounded to
    ``--step-seconds``; events are injected into the server's hub from the bench's thread (no SDK
    process reaches 10,000 requests/s here; the publisher is not what is measured) and the page
    samples the Feed's event count and the lag of its newest row (now - that event's publish time)
    every 73 ms. A step is kept up with when the count reaches every event sent within 3 s of the
    step's end and the median lag over the step's last quarter is no more than 0.5 s above that over
    its second quarter (``step_verdict``).
    The first step missed ends that route's ramp; the highest step kept up with is reported.

Chromium is driven over the DevTools protocol with only ``Page.navigate`` and ``Runtime.evaluate``: no
domain is enabled, so no per-WebSocket-frame events flow to the bench. (Playwright enables the Network
domain, whose event per frame alone saturates this 2-core machine at 10,000 frames/s; see
bench/bench_feed_browser.py. That would slow the direct and jupyter routes, one WebSocket frame per
event, and not the relay, a few comm frames per second.)

jupyter-server-proxy's ``{base_url}proxy/PORT/`` route is not measured: the package is in none of
livewidget's extras, so the project's venv does not have it (the bench says whether it is installed).

Not a test: every loop is bounded in count and time; ``--quick`` takes about 70 s, the default 3.5 min.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import comm
from comm.base_comm import BaseComm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.e2e.conftest: the JupyterLab harness


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
        # the URL too: connect(route=...) alone resolves the settings, which starts the user's embedded
        # daemon (and leaves it running) when nothing else is configured
        url = f"http://{server.key}:{server.secret}@{server.host}:{server.port}/apps/{server.app_id}"
        livewidget.connect(url, route="relay" if mode == "relay" else "auto")
        try:
            feeds = [livewidget.Feed(f"flood-{i}", secret=server.secret, **creds) for i in range(widgets)]
        finally:
            livewidget.connect(url, route="auto")
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


# ------------------------------------------------------------------------------------------ browser

ROUTES = ("direct", "jupyter", "relay")
STEPS = (100, 300, 1000, 3000, 10_000)
GRACE = 3.0  # s after a step for the count to reach every event sent
LAG_SLACK = 0.5  # s the lag near a step's end may exceed the lag early in it
SAMPLE_MS = 73  # the page's sampling period (not a multiple of the relay's 100 ms: no aliasing)

SDK_PUBLISHER = r"""
import json, os, sys, time
import pusher
channel, rate, seconds, phase = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
c = json.loads(os.environ["BENCH_PUSHER"])  # not on the command line: it holds the secret
sdk = pusher.Pusher(app_id=c["app_id"], key=c["key"], secret=c["secret"], host=c["host"], port=c["port"],
                    ssl=False, timeout=10)
start = time.monotonic(); sent = 0
while time.monotonic() - start < seconds:
    due = int((time.monotonic() - start) * rate)
    while sent < due:
        sdk.trigger(channel, "tick", {"ts": time.time(), "i": sent, "p": phase})
        sent += 1
    time.sleep(0.002)
print(sent, flush=True)
"""

# Installed in the page once the Feeds are shown. Per route: the latency of every row of the current
# phase added to that Feed's DOM, and (for the active route only) samples of the Feed's own count and
# of the lag of its newest row.
PAGE_PROBE = """
(sample) => {
  if (window.lwBench) return Object.keys(window.lwBench.feeds);
  const B = (window.lwBench = { feeds: {}, lat: {}, seen: {}, phase: "", active: "", samples: [] });
  const data = (row) => {
    const cell = row?.querySelector(".lw-data");
    try { return JSON.parse(cell.title || cell.textContent); } catch (e) { return null; }
  };
  for (const feed of document.querySelectorAll(".jp-NotebookPanel:not(.lm-mod-hidden) .lw-feed")) {
    const name = (feed.querySelector(".lw-title")?.textContent || "").replace(/^bench-/, "");
    if (!name) continue;
    B.feeds[name] = feed; B.lat[name] = []; B.seen[name] = new Set();
    new MutationObserver((muts) => {
      const now = Date.now() / 1000;
      for (const m of muts) for (const n of m.addedNodes) {
        if (!(n instanceof Element)) continue;
        for (const row of n.matches(".lw-row") ? [n] : n.querySelectorAll(".lw-row")) {
          const d = data(row);
          if (!d || d.p !== B.phase || B.seen[name].has(d.p + ":" + d.i)) continue;
          B.seen[name].add(d.p + ":" + d.i);
          B.lat[name].push(now - d.ts);
        }
      }
    }).observe(feed, { childList: true, subtree: true });
  }
  B.count = (name) =>
    Number(B.feeds[name].querySelector(".lw-count")?.textContent.replace(/[^0-9]/g, "") || 0);
  setInterval(() => {
    if (!B.active) return;
    const d = data(B.feeds[B.active].querySelector(".lw-log .lw-row"));
    const now = Date.now();
    B.samples.push({ t: now, count: B.count(B.active), lag: d ? now - d.ts * 1000 : null });
  }, sample);
  return Object.keys(B.feeds);
}
"""


class CDPPage:
    """A Chromium page driven over the DevTools protocol with no domain enabled (see the docstring).

    Enough of Playwright's ``Page`` for tests/e2e's :class:`NotebookPage`: ``goto``, ``evaluate``,
    ``wait_for_function``, ``on`` (nothing is recorded), ``is_closed``.
    """

    def __init__(self, chromium: str, args: list[str], tmp: Path) -> None:
        import websocket  # websocket-client, a dependency of jupyter_server

        self.profile = Path(tempfile.mkdtemp(dir=tmp))
        self.proc = subprocess.Popen(
            [
                chromium,
                *args,
                "--window-size=1280,900",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._id = 0
        try:
            port_file = self.profile / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not (port_file.exists() and port_file.read_text().strip()):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"Chromium did not start (exit code {self.proc.poll()})")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                target = next(t for t in json.loads(r.read()) if t["type"] == "page")
            self.ws = websocket.create_connection(
                target["webSocketDebuggerUrl"], timeout=120, suppress_origin=True
            )
        except BaseException:
            self.close()
            raise

    def _send(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:  # no domain is enabled: only replies come, in order
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg["result"])

    def on(self, event: str, handler: Any) -> None:
        pass

    def is_closed(self) -> bool:
        return self.proc.poll() is not None

    def goto(self, url: str, wait_until: str = "") -> None:
        self._send("Page.navigate", {"url": url})

    def evaluate(self, script: str, arg: Any = None) -> Any:
        call = f"({script})({json.dumps(arg)})" if "=>" in script or script.startswith("function") else script
        result = self._send(
            "Runtime.evaluate", {"expression": call, "awaitPromise": True, "returnByValue": True}
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(details.get("exception", {}).get("description") or details.get("text"))
        return result["result"].get("value")

    def wait_for_function(
        self, script: str, arg: Any = None, timeout: float = 30_000, polling: int = 100
    ) -> Any:
        deadline = time.monotonic() + timeout / 1000
        while True:
            with contextlib.suppress(RuntimeError):  # the page may still be loading
                value = self.evaluate(script, arg)
                if value:
                    return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout / 1000:.0f} s waiting for {script[:80]!r}")
            time.sleep(polling / 1000)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (seconds) in ms (nearest rank); NaN when empty."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")


def step_verdict(
    samples: list[dict[str, Any]], start_ms: float, end_ms: float, target: int, final_count: int
) -> dict[str, Any]:
    """Whether one step was kept up with: ``final_count`` reached ``target`` and the lag of the newest
    row near the end of the step (its last quarter) is at most ``LAG_SLACK`` above the lag early in it
    (its second quarter: the first is the Feed catching up with the step's start)."""
    span = end_ms - start_ms

    def lag(lo: float, hi: float) -> float:
        lags = [s["lag"] / 1000 for s in samples if s["lag"] is not None and lo <= s["t"] - start_ms <= hi]
        return statistics.median(lags) if lags else float("nan")

    early, late = lag(0.25 * span, 0.5 * span), lag(0.75 * span, span)
    kept = final_count >= target and late <= early + LAG_SLACK  # NaN compares False: not kept
    return {"early_lag": early, "late_lag": late, "kept": kept, "shown": final_count}


def bench_browser(
    latency_seconds: float, repeats: int, step_seconds: float, steps: list[int]
) -> dict[str, Any]:
    from livewidget.server import LocalServer
    from tests.e2e.conftest import ARTIFACTS, hub_like_lab

    ARTIFACTS.mkdir(exist_ok=True)  # JupyterLab's log goes there
    mark = uuid.uuid4().hex[:8]
    channels = {r: f"bench-{r}-{mark}" for r in ROUTES}
    feeds = "".join(
        f'livewidget.connect(route="{r}")\n'
        f'feeds["{r}"] = livewidget.Feed("{channels[r]}", title="bench-{r}")\ndisplay(feeds["{r}"])\n'
        for r in ROUTES
    )
    cells = [
        f"import json\nimport livewidget\nfrom IPython.display import display\nfeeds = {{}}\n{feeds}"
        '_ = livewidget.connect(route="auto")'
    ]
    out: dict[str, Any] = {r: {"steps": []} for r in ROUTES}
    with LocalServer() as server, tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "lab").mkdir()
        with hub_like_lab(server, Path(tmp) / "lab", {"livewidget.jupyter": True}) as lab:
            _browser_runs(
                server, lab, Path(tmp), channels, cells, latency_seconds, repeats, step_seconds, steps, out
            )
    return out


def _browser_runs(
    server: Any,
    lab: Any,
    tmp: Path,
    channels: dict[str, str],
    cells: list[str],
    latency_seconds: float,
    repeats: int,
    step_seconds: float,
    steps: list[int],
    out: dict[str, Any],
) -> None:
    import pusher

    from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, NotebookPage, write_notebook

    creds = {
        "app_id": server.app_id,
        "key": server.key,
        "secret": server.secret,
        "host": server.host,
        "port": server.port,
    }
    sdk = pusher.Pusher(**creds, ssl=False, timeout=10)
    hub = server.server.apps.by_key[server.key]
    name = write_notebook(lab.root, "bench_routes.ipynb", cells)
    page = CDPPage(str(CHROMIUM), CHROMIUM_ARGS, tmp)
    try:
        nb = NotebookPage(lab, page, name).open()
        nb.run_all()
        nb.wait_cell_done(0, timeout=60)
        # every Feed shows its forced route, confirmed, and its browser side (or, relayed, the
        # kernel's receiver) is subscribed
        page.wait_for_function(
            """(routes) => routes.every((r) => [...document.querySelectorAll('.lw-feed')].some((f) =>
                f.querySelector('.lw-title')?.textContent === 'bench-' + r &&
                f.querySelector('.lw-route')?.dataset.route === r))""",
            list(ROUTES),
            timeout=60_000,
        )
        for r in ROUTES:
            want = 1 if r == "relay" else 2  # the kernel's receiver, and the browser's connection
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                info = sdk.channel_info(channels[r], ["subscription_count"])
                if int(info.get("subscription_count", 0)) >= want:
                    break
                time.sleep(0.2)
        found = page.evaluate(PAGE_PROBE, SAMPLE_MS)
        assert sorted(found) == sorted(ROUTES), found
        env = {**os.environ, "BENCH_PUSHER": json.dumps(creds)}

        def publish_sdk(route: str, rate: float, seconds: float, phase: str) -> int:
            page.evaluate(f"() => {{ window.lwBench.phase = {json.dumps(phase)}; }}")
            proc = subprocess.run(
                [sys.executable, "-c", SDK_PUBLISHER, channels[route], str(rate), str(seconds), phase],
                capture_output=True,
                text=True,
                env=env,
                timeout=seconds + 60,
                check=True,
            )
            return int(proc.stdout.split()[-1])

        def show(route: str) -> None:
            # The Feed measured is the one in view, at the same place for every route: a Feed on screen
            # is painted, one scrolled away is not, and that alone changed its latency 2-3x here.
            page.evaluate(f"() => lwBench.feeds[{json.dumps(route)}].scrollIntoView({{block: 'start'}})")
            time.sleep(0.3)

        def count(route: str) -> int:
            return int(page.evaluate(f"() => window.lwBench.count({json.dumps(route)})"))

        def wait_count(route: str, target: int, timeout: float) -> int:
            deadline = time.monotonic() + timeout
            while (n := count(route)) < target and time.monotonic() < deadline:
                time.sleep(0.1)
            return n

        for r in ROUTES:  # warm-up: 20 events through every route, all shown
            sent = publish_sdk(r, 100, 0.25, "warm")
            wait_count(r, sent, 15)

        # (a) latency at 100 events/s, `repeats` rounds, the routes in a rotated order each round
        runs: dict[str, list[list[float]]] = {r: [] for r in ROUTES}
        for k in range(repeats):
            for r in ROUTES[k % len(ROUTES) :] + ROUTES[: k % len(ROUTES)]:
                phase = f"lat-{r}-{k}"
                key = json.dumps(r)
                page.evaluate(f"() => {{ lwBench.lat[{key}] = []; }}")  # not the warm-up's rows
                show(r)
                sent = publish_sdk(r, 100, latency_seconds, phase)
                before = time.monotonic()
                while (
                    time.monotonic() - before < 5 and page.evaluate(f"() => lwBench.lat[{key}].length") < sent
                ):
                    time.sleep(0.1)
                lat = page.evaluate(f"() => lwBench.lat[{key}].splice(0)")
                runs[r].append(lat)
                out[r]["sent"] = out[r].get("sent", 0) + sent
                print(
                    f"  latency {r:8} round {k + 1}: {len(lat)}/{sent} rows, p50 {pct(lat, 0.5):.1f} ms, "
                    f"p99 {pct(lat, 0.99):.1f} ms",
                    flush=True,
                )
        for r in ROUTES:
            out[r].update(
                seen=sum(map(len, runs[r])),
                p50=statistics.median(pct(lat, 0.5) for lat in runs[r]),
                p99=statistics.median(pct(lat, 0.99) for lat in runs[r]),
                p50_all=pct([x for lat in runs[r] for x in lat], 0.5),
                p99_all=pct([x for lat in runs[r] for x in lat], 0.99),
            )

        # (b) the rate ramp, events injected into the hub
        def inject(first: int, n: int, phase: str, channel: str) -> None:
            now = time.time()
            for i in range(first, first + n):
                data = json.dumps({"ts": now, "i": i, "p": phase})
                server.server._run(hub, hub.trigger("tick", data, [channel], now))

        for r in ROUTES:
            page.evaluate(f"() => {{ window.lwBench.active = {json.dumps(r)}; window.lwBench.phase = ''; }}")
            show(r)
            out[r]["max_rate"] = 0
            for rate in steps:
                base = count(r)
                page.evaluate("() => { window.lwBench.samples = []; }")
                start = time.time() * 1000
                t0 = time.monotonic()
                sent = 0
                batch = max(1, rate // 100)
                while (elapsed := time.monotonic() - t0) < step_seconds:
                    due = int(elapsed * rate) - sent
                    if due > 0:
                        n = min(due, batch)
                        server.call(inject, sent, n, f"r{rate}", channels[r])
                        sent += n
                    else:
                        time.sleep(0.002)
                end = time.time() * 1000
                final = wait_count(r, base + sent, GRACE) - base
                samples = page.evaluate("() => window.lwBench.samples")
                v = step_verdict(samples, start, end, sent, final)
                v.update(rate=rate, sent=sent, offered=sent / step_seconds)
                out[r]["steps"].append(v)
                print(
                    f"  ramp {r:8} {rate:>6}/s: shown {final}/{sent}, lag early {v['early_lag']:.2f} s, "
                    f"late {v['late_lag']:.2f} s: {'kept up' if v['kept'] else 'MISSED'}",
                    flush=True,
                )
                if not v["kept"]:
                    break
                out[r]["max_rate"] = rate
                wait_count(r, base + sent, 10)  # settle before the next step
    finally:
        page.close()
        with contextlib.suppress(Exception):
            lab.shutdown_notebook_kernel(name)


def print_browser_table(res: dict[str, Any], latency_seconds: float, repeats: int) -> None:
    def max_rate(r: str) -> str:
        steps = res[r]["steps"]
        ceiling = " (every step)" if steps and all(s["kept"] for s in steps) else ""
        return f"{'>= ' if ceiling else ''}{res[r]['max_rate']:,} ev/s{ceiling}"

    def at_max(r: str, key: str) -> str:
        kept = [s for s in res[r]["steps"] if s["kept"]]
        return f"{kept[-1][key]:.2f} s" if kept else "-"

    rows = [
        ("rows seen / published (100/s)", lambda r: f"{res[r]['seen']}/{res[r]['sent']}"),
        ("publish-to-DOM p50, median of rounds", lambda r: f"{res[r]['p50']:.1f} ms"),
        ("publish-to-DOM p99, median of rounds", lambda r: f"{res[r]['p99']:.1f} ms"),
        (
            "publish-to-DOM p50 / p99, all rows",
            lambda r: f"{res[r]['p50_all']:.0f} / {res[r]['p99_all']:.0f} ms",
        ),
        ("max rate kept up with", max_rate),
        ("  lag at that rate, late (median)", lambda r: at_max(r, "late_lag")),
        (
            "first step missed: offered, shown, lag late",
            lambda r: next(
                (
                    f"{s['offered']:,.0f}/s, {s['shown']}/{s['sent']} shown, {s['late_lag']:.2f} s"
                    for s in res[r]["steps"]
                    if not s["kept"]
                ),
                "none",
            ),
        ),
    ]
    width = max(len(label) for label, _ in rows)
    cols = {r: max(len(r), *(len(f(r)) for _, f in rows)) for r in ROUTES}
    print(f"\n{'':{width}}  " + "  ".join(f"{r:>{cols[r]}}" for r in ROUTES))
    for label, f in rows:
        print(f"{label:{width}}  " + "  ".join(f"{f(r):>{cols[r]}}" for r in ROUTES))
    print(
        f"(latency: {repeats} rounds of {latency_seconds:.0f} s at 100 events/s per route, published "
        "with the official SDK from another process; ramp: each step's lag is the median late in it)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--section", choices=("all", "flood", "browser"), default="all")
    ap.add_argument("--quick", action="store_true", help="short runs (about 70 s in all)")
    ap.add_argument("--seconds", type=float, default=None, help="flood duration (5; quick 3)")
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--widgets", type=int, default=4)
    ap.add_argument("--mode", choices=("relay", "standby", "idle"), default="relay")
    ap.add_argument("--latency-seconds", type=float, default=None, help="per route at 100/s (10; quick 3)")
    ap.add_argument("--repeats", type=int, default=None, help="latency rounds per route (3; quick 2)")
    ap.add_argument("--step-seconds", type=float, default=None, help="per ramp step (5; quick 2)")
    ap.add_argument("--steps", default=",".join(map(str, STEPS)), help="ramp rates, events/s")
    args = ap.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 5.0)
    latency_seconds = args.latency_seconds or (3.0 if args.quick else 10.0)
    repeats = max(1, min(args.repeats or (2 if args.quick else 3), 10))
    step_seconds = args.step_seconds or (2.0 if args.quick else 5.0)
    steps = [int(x) for x in args.steps.split(",") if x.strip()][:10]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.2f}, python {platform.python_version()}",
        flush=True,
    )
    if args.section in ("all", "flood") and args.mode != "relay":
        m = bench_relay(seconds, args.rate, args.widgets, args.mode)
        print(
            f"{args.mode}, {args.widgets} Feeds on jupyter, {m['offered_rate']:.0f} events/s for "
            f"{seconds:.0f} s: relayed {m['relayed']}/{m['events_sent']} (lost {m['lost']}); relay "
            f"messages/s median {m['relay_per_s_median']}, max {m['relay_per_s_max']}; relay bytes/s "
            f"{m['relay_bytes_per_s']:.0f} ({m['relay_bytes_per_s'] / max(m['offered_rate'], 1):.0f}/event); "
            f"all comm messages/s median {m['all_per_s_median']}, max {m['all_per_s_max']}"
        )
    elif args.section in ("all", "flood"):
        m = bench_relay(seconds, args.rate, args.widgets)
        print(
            f"relay, {args.widgets} Feeds, flood {m['offered_rate']:.0f} events/s for {seconds:.0f} s: "
            f"relayed {m['relayed']}/{m['events_sent']} (lost {m['lost']}); kernel->browser comm messages/s: "
            f"relay stream median {m['relay_per_s_median']}, max {m['relay_per_s_max']}; all comm messages "
            f"median {m['all_per_s_median']}, max {m['all_per_s_max']}; target <= 30: "
            f"{'met' if m['all_per_s_max'] <= 30 and m['relayed'] >= m['events_sent'] else 'MISSED'}",
            flush=True,
        )
    if args.section in ("all", "browser"):
        import importlib.util

        if importlib.util.find_spec("jupyter_server_proxy") is None:
            print(
                "jupyter-server-proxy: not installed (in none of livewidget's extras): its route is skipped"
            )
        else:
            print(
                "jupyter-server-proxy: installed, but this bench measures the extension's jupyter route only"
            )
        print(
            f"browser: JupyterLab under /user/alice/ at lab.test, headless Chromium; steps {steps} ev/s, "
            f"{step_seconds:.0f} s each",
            flush=True,
        )
        res = bench_browser(latency_seconds, repeats, step_seconds, steps)
        print_browser_table(res, latency_seconds, repeats)
        print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

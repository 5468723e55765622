"""Feed in headless Chromium: publish-to-DOM latency, and keeping up with 10,000 events/s.

    .venv/bin/python bench/bench_feed_browser.py [--seconds 10] [--playwright] [--profile] [--trace]

Not a test. The bundle (``livewidget/static/feed.js``) runs in a plain page with a minimal anywidget
model (the front end alone, no kernel), next to a raw baseline on the same page: a native WebSocket
speaking the Pusher protocol that appends one DOM row per event (what a hand-written page would do).

1. Publish-to-DOM latency at 100 events/s: a separate process calls ``livewidget.publish`` (the
   background publisher, REST, the embedded server, pusher-js in the page); each event carries its
   publish time; a MutationObserver notes when its row appears in the DOM. p50/p99 for both.
2. 10,000 events/s for ``--seconds``: events are injected into the server's hub (the publisher is not
   what is measured); the page keeps up when it receives everything and the lag of the newest row at
   the end is no more than at the start (+0.5 s). Main-thread headroom (animation frames per second)
   is reported for both.

Chromium runs as a plain process, as in a user's session: no DevTools client is attached, and the page
reports its figures by ``fetch`` to the bench's own HTTP server. Under Playwright (``--playwright``,
and always with ``--profile``/``--trace``, which need the DevTools protocol) the browser also sends a
``Network.webSocketFrameReceived`` event to the driver for every WebSocket frame: at 10,000 frames/s
that instrumentation alone saturates this 2-core machine, so those figures measure the harness, not
the page.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import itertools
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from livewidget._config import resolve  # noqa: E402
from livewidget.server import LocalServer  # noqa: E402

STATIC = REPO / "livewidget" / "static"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-dev-shm-usage",
]

FLOOD = 10_000  # events/s

PUBLISHER = r"""
import sys, time, livewidget
channel, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
start = time.time(); sent = 0
while time.time() - start < seconds:
    due = int((time.time() - start) * rate)
    while sent < due:
        livewidget.publish(channel, "tick", {"ts": time.time(), "i": sent})
        sent += 1
    time.sleep(0.002)
from livewidget._publish import _defaults
for p in _defaults.values():
    p.flush(30)
print(sent, flush=True)
"""

PAGE = """<!doctype html><html><head><meta charset="utf-8"><link rel="stylesheet" href="/widget.css"></head>
<body style="display:flex;gap:12px;font-family:sans-serif"><div id="feed" style="width:760px"></div>
<div id="raw" style="width:360px;height:600px;overflow:hidden;font:12px monospace"></div>
<script type="module">
import widget from "/widget.js";
class Model {
  constructor(a) { this.a = a; this.l = new Map(); }
  get(n) { return this.a[n]; } set(n, v) { this.a[n] = v; this.trigger("change:" + n); }
  save_changes() {} send() {}
  on(e, f) { (this.l.get(e) || this.l.set(e, []).get(e)).push(f); }
  off(e, f) { const l = this.l.get(e) || []; const i = l.indexOf(f); if (i >= 0) l.splice(i, 1); }
  trigger(e, ...a) { for (const f of [...(this.l.get(e) || [])]) f(...a); }
}
const B = (window.bench = { feed: [], raw: [], rawCount: 0, frames: 0, feedLag: [], rawLag: [] });
const loop = () => { B.frames++; requestAnimationFrame(loop); }; requestAnimationFrame(loop);
const MODE = new URLSearchParams(location.search).get("mode");
const model = new Model(TRAITS);
if (MODE === "feed" || MODE === "feedprobe") {
  widget.initialize({ model });
  widget.render({ model, el: document.getElementById("feed") });
}
const seen = new Set();
new MutationObserver((muts) => {
  const now = Date.now() / 1000;
  for (const m of muts) for (const n of m.addedNodes) {
    if (!(n instanceof Element)) continue;
    for (const row of n.matches(".lw-row") ? [n] : n.querySelectorAll(".lw-row")) {
      const cell = row.querySelector(".lw-data");
      try { const d = JSON.parse(cell.title || cell.textContent);
            if (!seen.has(d.i)) { seen.add(d.i); B.feed.push(now - d.ts); } } catch (e) {}
    }
  }
}).observe(document.getElementById("feed"), { childList: true, subtree: true });
// the raw baseline: protocol 7 over a native WebSocket, one DOM row per event
let rawReady = false;
const ws = MODE === "raw" || MODE === "feedprobe" ? new WebSocket(RAWURL) : {};
const raw = document.getElementById("raw");
ws.onmessage = (m) => {
  const msg = JSON.parse(m.data);
  if (msg.event === "pusher:connection_established") {
    ws.send(JSON.stringify({ event: "pusher:subscribe", data: { channel: CHANNEL } })); return; }
  if (msg.event === "pusher_internal:subscription_succeeded") { rawReady = true; return; }
  if (msg.event !== "tick") return;
  const d = JSON.parse(msg.data); const row = document.createElement("div");
  row.textContent = new Date().toISOString() + " " + msg.channel + " " + msg.data;
  if (MODE === "raw") { raw.prepend(row); if (raw.childElementCount > 200) raw.lastElementChild.remove(); }
  B.rawCount++; B.raw.push(Date.now() / 1000 - d.ts);
};
// lag = now - publish time of the newest row shown (the rows carry it; a row's own time is its receipt)
const newestTs = () => {
  const cell = document.querySelector("#feed .lw-row .lw-data");
  try { return JSON.parse(cell.title || cell.textContent).ts; } catch (e) { return null; }
};
setInterval(() => {
  const c = Number(document.querySelector(".lw-count")?.textContent.replace(/[^0-9]/g, "") || 0);
  const ts = newestTs();
  B.feedLag.push({ t: performance.now(), frames: B.frames, count: c,
    lag: ts === null ? 0 : Date.now() - ts * 1000 });
}, 250);
// subscribed: the raw socket (raw, feedprobe) and the Feed's pusher-js connection (feed, feedprobe)
window.benchReady = () => (MODE === "feed" || rawReady) &&
  (MODE === "raw" || document.querySelector(".lw-state")?.dataset.state === "connected");
// Without a DevTools client (see the module docstring) the page says when it is ready and hands its
// figures over when the bench asks, through the bench's HTTP server.
if (new URLSearchParams(location.search).get("report")) {
  let said = false;
  const poll = setInterval(async () => {
    if (!said && window.benchReady()) { said = true; fetch("/ready", { method: "POST", body: "{}" }); }
    const r = await fetch("/control?" + Date.now());
    if ((await r.text()) === "report") {
      clearInterval(poll); fetch("/result", { method: "POST", body: JSON.stringify(B) }); }
  }, 200);
}
</script></body></html>"""


def print_profile(profile: dict[str, Any], top: int = 25) -> None:
    """Self time per function of a CDP ``Profiler`` profile, the largest first."""
    nodes = {n["id"]: n for n in profile["nodes"]}
    dt: dict[int, float] = {}
    for node_id, delta in zip(profile["samples"], profile["timeDeltas"], strict=False):
        dt[node_id] = dt.get(node_id, 0.0) + delta / 1000
    by_fn: dict[str, float] = {}
    for node_id, ms in dt.items():
        f = nodes[node_id]["callFrame"]
        name = f["functionName"] or "(anonymous)"
        where = f"{name} {Path(f['url']).name}:{f['lineNumber'] + 1}:{f['columnNumber']}"
        by_fn[where] = by_fn.get(where, 0.0) + ms
    total = sum(by_fn.values()) or 1.0
    print(f"Feed page CPU profile during the flood ({total / 1000:.1f} s sampled), self time:")
    for where, ms in sorted(by_fn.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {ms / total:6.1%}  {ms:8.0f} ms  {where}")


def print_trace(trace: dict[str, Any], when: str, top: int = 20) -> None:
    """Time of the renderer's main thread by trace event name (complete events, not nested)."""
    events = trace.get("traceEvents", trace)
    main = {
        (e["pid"], e["tid"])
        for e in events
        if e.get("name") == "thread_name" and e.get("args", {}).get("name") == "CrRendererMain"
    }
    by_name: dict[str, float] = {}
    for e in events:
        if (e.get("pid"), e.get("tid")) in main and e.get("ph") == "X" and "dur" in e:
            by_name[e["name"]] = by_name.get(e["name"], 0.0) + e["dur"] / 1000
    print(f"Feed page renderer main thread {when}, total ms by event (nested events overlap):")
    for name, ms in sorted(by_name.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {ms:9.0f} ms  {name}")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    """Serves the page; ``GET /control`` and ``POST /ready|/result`` talk to a page with no DevTools."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/control"):
            body = getattr(self.server, "control", "wait").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.end_headers()
        self.server.posts.put((self.path, body))  # type: ignore[attr-defined]


class PlainChromium:
    """One page in a Chromium process of its own with no DevTools client: what a user's browser does."""

    def __init__(self, httpd: Any, url: str, tmp: Path) -> None:
        self.httpd = httpd
        self.profile = Path(tempfile.mkdtemp(dir=tmp))
        httpd.control = "wait"
        while not httpd.posts.empty():
            httpd.posts.get_nowait()
        self.proc = subprocess.Popen(
            [
                "/usr/bin/chromium",
                *CHROMIUM_ARGS,
                "--window-size=1200,700",
                f"--user-data-dir={self.profile}",
                url + "&report=1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            path, _ = httpd.posts.get(timeout=30)
        except queue.Empty:
            self.close()
            raise RuntimeError(
                f"Chromium (exit code {self.proc.returncode}) never reported the page ready"
            ) from None
        assert path == "/ready", path

    def result(self) -> dict[str, Any]:
        self.httpd.control = "report"
        path, body = self.httpd.posts.get(timeout=30)
        assert path == "/result", path
        self.httpd.control = "wait"
        return dict(json.loads(body))

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


class PlaywrightPage:
    """The same page driven by Playwright, DevTools attached (--playwright, --profile, --trace)."""

    def __init__(self, browser: Any, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1200, "height": 700})
        self.page.goto(url)
        self.page.wait_for_function("window.benchReady && window.benchReady()", timeout=30_000)

    def result(self) -> dict[str, Any]:
        return dict(self.page.evaluate("window.bench"))

    def close(self) -> None:
        self.page.close()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--profile", action="store_true", help="CPU profile of the Feed page during the flood")
    ap.add_argument("--trace", action="store_true", help="main-thread time by kind, Feed page at 100/s")
    ap.add_argument(
        "--playwright", action="store_true", help="drive the pages with Playwright (DevTools attached)"
    )
    args = ap.parse_args()
    args.playwright = args.playwright or args.profile or args.trace
    from playwright.sync_api import sync_playwright

    channel = "bench-feed"
    with (
        LocalServer() as server,
        tempfile.TemporaryDirectory() as tmp,
        sync_playwright() if args.playwright else contextlib.nullcontext() as pw,
    ):
        settings = resolve(host=server.host, port=server.port, app_id=server.app_id, key=server.key)
        traits = {
            "_kind": "feed",
            "_connection": settings.browser_config(),
            "_auth": {},
            "channels": [channel],
            "event_filter": [],
            "status": "disabled",
            "error": "",
            "count": 0,
            "dropped": 0,
            "rate": 0.0,
            "last": None,
            "_history": None,
            "max_log": 500,
            "title": "bench",
        }
        page_text = (
            PAGE.replace("TRAITS", json.dumps(traits))
            .replace("CHANNEL", json.dumps(channel))
            .replace("RAWURL", json.dumps(f"ws://127.0.0.1:{server.port}/app/{server.key}?protocol=7"))
        )
        root = Path(tmp)
        (root / "index.html").write_text(page_text)
        for suffix in (".js", ".css"):  # the Feed's own module, served as /widget.js
            (root / f"widget{suffix}").write_bytes((STATIC / f"feed{suffix}").read_bytes())
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=tmp))
        httpd.posts = queue.Queue()  # type: ignore[attr-defined]
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        browser = (
            pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            if pw is not None
            else None
        )
        print(
            f"pages driven by {'Playwright (DevTools attached)' if browser else 'nothing (plain Chromium)'}"
        )
        env = {
            **os.environ,
            "LIVEWIDGET_URL": f"http://{server.key}:{server.secret}@127.0.0.1:{server.port}/apps/{server.app_id}",
        }

        def open_page(mode: str) -> PlainChromium | PlaywrightPage:
            url = f"http://127.0.0.1:{httpd.server_address[1]}/index.html?mode={mode}"
            page = PlainChromium(httpd, url, root) if browser is None else PlaywrightPage(browser, url)
            time.sleep(1.0)
            return page

        def publish_run(mode: str) -> tuple[int, dict[str, Any]]:
            page = open_page(mode)
            tracing = args.trace and mode == "feed"
            if tracing:
                assert browser is not None and isinstance(page, PlaywrightPage)
                browser.start_tracing(page=page.page, categories=["devtools.timeline", "blink", "v8"])
            proc = subprocess.run(
                [sys.executable, "-c", PUBLISHER, channel, "100", str(args.seconds)],
                capture_output=True,
                text=True,
                env=env,
                timeout=args.seconds + 90,
                check=True,
            )
            time.sleep(1.5)
            if tracing:
                assert browser is not None
                print_trace(json.loads(browser.stop_tracing()), "at 100 events/s")
            result = page.result()
            page.close()
            return int(proc.stdout.split()[-1]), result

        def flood_run(mode: str) -> tuple[int, dict[str, Any]]:
            page = open_page(mode)
            hub = server.server.apps.by_key[server.key]
            injected = 0

            def inject(n: int, base: int) -> None:
                now = time.time()
                for k in range(n):
                    data = json.dumps({"ts": now, "i": base + k})
                    server.server._run(hub, hub.trigger("tick", data, [channel], now))

            if args.trace and mode == "feed":
                assert browser is not None and isinstance(page, PlaywrightPage)
                browser.start_tracing(page=page.page, categories=["devtools.timeline", "blink", "v8"])
            cdp = None
            if args.profile and mode == "feed":
                assert isinstance(page, PlaywrightPage)
                cdp = page.page.context.new_cdp_session(page.page)
                cdp.send("Profiler.enable")
                cdp.send("Profiler.start")
            start = time.monotonic()
            while (elapsed := time.monotonic() - start) < args.seconds:
                due = int(elapsed * FLOOD) - injected
                if due > 0:
                    n = min(due, 200)
                    server.call(inject, n, injected)
                    injected += n
                else:
                    time.sleep(0.002)
            time.sleep(2.0)
            if cdp is not None:
                print_profile(cdp.send("Profiler.stop")["profile"])
            if args.trace and mode == "feed":
                assert browser is not None
                print_trace(json.loads(browser.stop_tracing()), "during the flood")
            result = page.result()
            page.close()
            return injected, result

        # 1. latency at 100 events/s through publish(), each page on its own
        sent, feed_b = publish_run("feed")
        _, raw_b = publish_run("feedprobe" if os.environ.get("PROBE") else "raw")
        fl = feed_b["feedLag"]
        fps100 = [(y["frames"] - x["frames"]) / ((y["t"] - x["t"]) / 1000) for x, y in itertools.pairwise(fl)]
        print(f"publish-to-DOM latency at 100 events/s ({sent} events via livewidget.publish, each run):")
        print(f"  (Feed page frames/s median {statistics.median(fps100):.0f})")
        print(
            f"  livewidget Feed : p50 {pct(feed_b['feed'], 0.5):6.1f} ms  "
            f"p99 {pct(feed_b['feed'], 0.99):6.1f} ms  "
            f"({len(feed_b['feed'])} rows seen)"
        )
        print(
            f"  raw WebSocket   : p50 {pct(raw_b['raw'], 0.5):6.1f} ms  "
            f"p99 {pct(raw_b['raw'], 0.99):6.1f} ms  "
            f"({len(raw_b['raw'])} rows)"
        )

        # 2. 10,000 events/s injected into the hub
        injected, b = flood_run("feed")
        samples = b["feedLag"]
        during = [s for s in samples if s["count"] > 0]
        fps = [
            (y["frames"] - x["frames"]) / ((y["t"] - x["t"]) / 1000) for x, y in itertools.pairwise(during)
        ]
        lags = [s["lag"] / 1000 for s in during]
        head = statistics.median(lags[2:8]) if len(lags) > 10 else float("nan")
        tail = statistics.median(lags[-16:-8]) if len(lags) > 20 else float("nan")
        feed_count = samples[-1]["count"]
        kept = feed_count >= injected and tail <= head + 0.5
        injected_raw, rb = flood_run("raw")
        print(f"{FLOOD} events/s for {args.seconds:.0f} s ({injected} events):")
        print(
            f"  livewidget Feed : received {feed_count}/{injected}; newest-row lag start {head:.2f} s, "
            f"near the end {tail:.2f} s; page frames/s median {statistics.median(fps) if fps else 0:.0f}; "
            f"keeps up: {'yes' if kept else 'NO'}"
        )
        print(
            f"  raw WebSocket   : received {rb['rawCount']}/{injected_raw}; "
            f"latency p50 {pct(rb['raw'], 0.5):.0f} ms, "
            f"p99 {pct(rb['raw'], 0.99):.0f} ms (one DOM row per event)"
        )
        if browser is not None:
            browser.close()
        httpd.shutdown()


if __name__ == "__main__":
    main()

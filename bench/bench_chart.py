"""LiveChart in headless Chromium: frame rate with 100,000 points, highest ingest rate, Plotly as the peer.

    .venv/bin/python bench/bench_chart.py [--quick] [--skip-peer] [--out bench/out]

Not a test: it prints a Markdown report (and writes it with a JSON copy to ``--out``).

1. **Frame rate with 100,000 points in the window while receiving 1,000 points/s** (target: 30 fps or
   better). The bundle (``livewidget/static/chart.js``) runs in a plain page with a minimal anywidget
   model (no kernel: the front end alone): the window is filled with 100,000 points through the
   ``points`` message, then a separate process publishes 1,000 points/s with
   :func:`livewidget.points` through the embedded server. Measured in the page: animation frames per
   second (``requestAnimationFrame``: the main thread's headroom), chart redraws per second, and the
   lag (now minus the newest drawn point's publish time, which is its x).
2. **Highest ingest rate held without growing lag** (target: 10,000 points/s): the same page, rates
   stepped up; a rate is held when the browser draws at least 97 % of what was published during the
   run and the lag at the end is under 1 s and no more than 0.5 s above the lag at the start.
3. **Plotly FigureWidget, same scenario, same browser**, in real JupyterLab (FigureWidget needs a
   kernel: it receives data only through it): a FigureWidget with 100,000 points, updated 20 times a
   second with 50 new points each (``fig.data[0].x = ...`` in ``batch_update``; FigureWidget has no
   append) from a running cell. LiveChart runs the same scenario in the same JupyterLab (its points from
   a background process). Reported as ratios (LiveChart / Plotly).

Medians over the measurement window (after a 1 s warm-up) are reported.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import itertools
import json
import math
import os
import platform
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
from livewidget.widgets.chart import encode_columns  # noqa: E402

STATIC = REPO / "livewidget" / "static"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-dev-shm-usage",
    "--enable-unsafe-swiftshader",  # WebGL in software, so Plotly's scattergl can draw without a GPU
]
WINDOW = 100_000

# A separate process publishing `rate` points/s for `seconds` with livewidget.points; x is the publish time.
PUBLISHER = r"""
import sys, time, math
import livewidget
channel, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
tick = 0.01
with livewidget.points(channel, interval=0.05) as pts:
    start = time.time()
    sent = 0
    while True:
        now = time.time()
        if now - start >= seconds:
            break
        due = int((now - start) * rate)
        while sent < due:
            pts.add(ts=time.time(), v=math.sin(sent / 500) + 0.1 * math.sin(sent / 7))
            sent += 1
        time.sleep(tick)
print(sent, flush=True)
"""

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><link rel="stylesheet" href="/widget.css">
<style>body { margin: 16px; font-family: sans-serif; } #chart { width: 960px; }</style></head>
<body><div id="chart"></div>
<script type="module">
import widget from "/widget.js";
class Model {
  constructor(attrs) { this.attrs = attrs; this.listeners = new Map(); }
  get(name) { return this.attrs[name]; }
  set(name, value) { this.attrs[name] = value; this.trigger("change:" + name); }
  save_changes() {}
  send() {}
  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, []);
    this.listeners.get(event).push(fn);
  }
  off(event, fn) {
    const l = this.listeners.get(event) || [];
    if (l.indexOf(fn) >= 0) l.splice(l.indexOf(fn), 1);
  }
  trigger(event, ...args) { for (const fn of [...(this.listeners.get(event) || [])]) fn(...args); }
}
const model = new Model(TRAITS);
widget.initialize({ model });
widget.render({ model, el: document.getElementById("chart") });
const bench = (window.bench = { frames: 0, samples: [] });
const loop = () => { bench.frames++; requestAnimationFrame(loop); };
requestAnimationFrame(loop);
setInterval(() => {
  const d = document.querySelector(".lw-chart")?.dataset || {};
  const x = Number(d.latestX);
  bench.samples.push({ t: performance.now(), frames: bench.frames, paints: Number(d.paints || 0),
    received: Number(d.received || 0), points: Number(d.points || 0), paintMs: Number(d.paintMs || 0),
    lag: Number.isFinite(x) && x > 0 ? Date.now() / 1000 - x : null });
}, 250);
const buf = await (await fetch("/prefill.bin")).arrayBuffer();
model.trigger("msg:custom", { type: "points" }, [new DataView(buf)]);
window.benchReady = true;
</script></body></html>
"""


def machine() -> str:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GB RAM"
    return (
        f"{cpu or platform.processor()}, {os.cpu_count()} vCPU{mem}, {platform.system()} {platform.release()}"
    )


def chromium_version() -> str:
    with contextlib.suppress(Exception):
        return subprocess.run(
            [CHROMIUM, "--version"], capture_output=True, text=True, timeout=20
        ).stdout.strip()
    return "chromium"


def prefill(now: float) -> bytes:
    """100,000 points over the 100 s before ``now`` (x: seconds since the epoch)."""
    rows = [
        (now * 1000.0, now - 100 + i / 1000, "", (math.sin(i / 500) + 0.1 * math.sin(i / 7),))
        for i in range(WINDOW)
    ]
    return encode_columns(rows, ["v"], False, "time")


def start_publisher(env: dict[str, str], channel: str, rate: float, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, channel, str(rate), str(seconds)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float) -> int:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        raise RuntimeError(f"publisher did not finish in {timeout} s: {err[-2000:]}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"publisher failed: {err[-2000:]}")
    return int(out.strip().splitlines()[-1])


def summarize(samples: list[dict[str, Any]], t0: float, t1: float) -> dict[str, Any]:
    """Rates and lag between page times t0 and t1 (ms), from the 250 ms samples."""
    window = [s for s in samples if t0 <= s["t"] <= t1]
    if len(window) < 3:
        raise RuntimeError(f"too few samples ({len(window)}) in the window")
    fps = []
    paints = []
    for a, b in itertools.pairwise(window):
        dt = (b["t"] - a["t"]) / 1000
        fps.append((b["frames"] - a["frames"]) / dt)
        paints.append((b["paints"] - a["paints"]) / dt)
    # per-second frame rates (4 samples a second) give a stable median
    per_second = []
    for i in range(0, len(window) - 4, 4):
        a, b = window[i], window[i + 4]
        per_second.append((b["frames"] - a["frames"]) / ((b["t"] - a["t"]) / 1000))
    lags = [s["lag"] for s in window if s["lag"] is not None]
    head = lags[: max(1, len(lags) // 5)]
    tail = lags[-max(1, len(lags) // 5) :]
    span = (window[-1]["t"] - window[0]["t"]) / 1000
    return {
        "fps_median": statistics.median(per_second or fps),
        "fps_min_1s": min(per_second or fps),
        "redraws_per_s": statistics.median(paints),
        "received_per_s": (window[-1]["received"] - window[0]["received"]) / span,
        "lag_median_s": statistics.median(lags) if lags else None,
        "lag_start_s": statistics.median(head) if lags else None,
        "lag_end_s": statistics.median(tail) if lags else None,
        "points_in_window": window[-1]["points"],
        "paint_ms_median": statistics.median([s.get("paintMs", 0) for s in window]),
    }


# ------------------------------------------------------------------------------------------ part 1 and 2


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def standalone(browser: Any, server: LocalServer, env: dict[str, str], quick: bool) -> dict[str, Any]:
    channel = "bench-chart"
    settings = resolve(host=server.host, port=server.port, app_id=server.app_id, key=server.key)
    traits = {
        "_kind": "chart",
        "_connection": settings.browser_config(),
        "_auth": {},
        "channels": [channel],
        "event_filter": [],
        "status": "disabled",
        "error": "",
        "count": 0,
        "dropped": 0,
        "title": "bench",
        "x": "ts",
        "y": ["v"],
        "by": None,
        "kind": "line",
        "window_points": WINDOW,
        "window_span": 0,
        "max_points": 1_000_000,
        "x_type": "time",
        "x_label": "",
        "y_label": "v",
        "log_x": False,
        "log_y": False,
        "xlim": None,
        "ylim": None,
        "missing": "gap",
        "height": 320,
        "colors": [],
        "_backfill": None,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "index.html").write_text(PAGE.replace("TRAITS", json.dumps(traits)))
        for suffix in (".js", ".css"):  # the LiveChart's own module, served as /widget.js
            (root / f"widget{suffix}").write_bytes((STATIC / f"chart{suffix}").read_bytes())
        handler = functools.partial(_Quiet, directory=str(root))
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}/index.html"
        results: dict[str, Any] = {"runs": []}
        try:
            rates = [1000, 2000, 5000, 10000] if quick else [1000, 2000, 5000, 10000, 15000, 20000, 30000]
            for rate in rates:
                (root / "prefill.bin").write_bytes(prefill(time.time()))
                context = browser.new_context(viewport={"width": 1100, "height": 600})
                page = context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
                page.goto(url)
                page.wait_for_function("window.benchReady === true", timeout=30_000)
                page.wait_for_function(
                    f"document.querySelector('.lw-chart')?.dataset.points === '{WINDOW}'"
                    " && document.querySelector('.lw-state')?.dataset.state === 'connected'",
                    timeout=30_000,
                )
                time.sleep(1.0)  # subscribed, idle
                seconds = 6 if quick else 10
                start_t = page.evaluate("performance.now()")
                proc = start_publisher(env, channel, rate, seconds)
                sent = finish(proc, seconds + 60)
                time.sleep(1.0)
                samples = page.evaluate("window.bench.samples")
                received = samples[-1]["received"]
                stats = summarize(samples, start_t + 1000, start_t + seconds * 1000)
                stats.update(rate=rate, sent=sent, received=received, errors=errors)
                stats["held"] = bool(
                    received >= 0.97 * sent
                    and stats["lag_end_s"] is not None
                    and stats["lag_end_s"] < 1.0
                    and stats["lag_end_s"] - stats["lag_start_s"] < 0.5
                )
                results["runs"].append(stats)
                if rate == 1000:
                    page.locator(".lw-chart").screenshot(
                        path=str(REPO / "test-artifacts" / "bench-chart-100k.png")
                    )
                context.close()
                print(
                    f"  {rate:>6} pts/s: fps {stats['fps_median']:.1f} (min {stats['fps_min_1s']:.1f}), "
                    f"redraws {stats['redraws_per_s']:.1f}/s, received {received}/{sent}, "
                    f"lag {stats['lag_start_s']:.3f} -> {stats['lag_end_s']:.3f} s, held {stats['held']}",
                    flush=True,
                )
                if not stats["held"] and rate > 10000:
                    break
        finally:
            httpd.shutdown()
    return results


# ------------------------------------------------------------------------------------------ part 3

PLOTLY_SETUP = """
import time, json, numpy as np, plotly.graph_objects as go
N = 100_000
now = time.time()
xs = now - 100 + np.arange(N) / 1000
ys = np.sin(np.arange(N) / 500) + 0.1 * np.sin(np.arange(N) / 7)
fig = go.FigureWidget([go.TRACE(x=xs, y=ys, mode="lines")], layout=dict(height=360, width=960))
fig
"""

PLOTLY_LOOP = """
i = N
end = time.time() + SECONDS
updates = 0
while time.time() < end:
    time.sleep(0.05)
    t = time.time()
    new_x = t - 0.05 + np.arange(50) * 0.001
    new_y = np.sin((i + np.arange(50)) / 500)
    i += 50
    xs = np.concatenate([xs[50:], new_x])
    ys = np.concatenate([ys[50:], new_y])
    with fig.batch_update():
        fig.data[0].x = xs
        fig.data[0].y = ys
    updates += 1
print("UPDATES", updates, flush=True)
"""

LIVECHART_SETUP = """
import time, numpy as np, pandas as pd, livewidget
N = 100_000
now = time.time()
chart = livewidget.LiveChart("CHANNEL", x="ts", y="v", window=N, height=320)
chart.extend(pd.DataFrame({"ts": now - 100 + np.arange(N) / 1000,
                           "v": np.sin(np.arange(N) / 500) + 0.1 * np.sin(np.arange(N) / 7)}))
chart
"""

JL_PROBE = """
(kind) => {
  const bench = (window.bench = { frames: 0, samples: [] });
  const loop = () => { bench.frames++; requestAnimationFrame(loop); };
  requestAnimationFrame(loop);
  setInterval(() => {
    let x = null, paints = 0, received = 0, points = 0, paintMs = 0;
    if (kind === "plotly") {
      const gd = document.querySelector(".js-plotly-plot");
      const data = gd && gd.data && gd.data[0];
      if (data && data.x && data.x.length) x = Number(data.x[data.x.length - 1]);
      points = data && data.x ? data.x.length : 0;
      paints = bench.afterplot || 0;
      if (gd && gd.on && !bench.hooked) {
        bench.hooked = true;
        gd.on("plotly_afterplot", () => { bench.afterplot = (bench.afterplot || 0) + 1; });
      }
    } else {
      const d = document.querySelector(".lw-chart")?.dataset || {};
      x = Number(d.latestX); paints = Number(d.paints || 0); received = Number(d.received || 0);
      points = Number(d.points || 0); paintMs = Number(d.paintMs || 0);
    }
    bench.samples.push({ t: performance.now(), frames: bench.frames, paints, received, points, paintMs,
      lag: Number.isFinite(x) && x > 0 ? Date.now() / 1000 - x : null });
  }, 250);
}
"""


def jupyterlab_peer(browser: Any, server: LocalServer, env: dict[str, str], seconds: float) -> dict[str, Any]:
    from tests.e2e.conftest import ARTIFACTS, JupyterLab, NotebookPage, write_notebook

    ARTIFACTS.mkdir(exist_ok=True)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "run").mkdir()
        s = server
        lab = JupyterLab(
            base,
            {
                "LIVEWIDGET_URL": f"http://{s.key}:{s.secret}@{s.host}:{s.port}/apps/{s.app_id}",
                "LIVEWIDGET_RUNTIME_DIR": str(base / "run"),
            },
        ).start()
        try:
            webgl = None
            for kind in ("livechart", "plotly"):
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                context.set_default_timeout(60_000)
                page = context.new_page()
                if kind == "livechart":
                    channel = "bench-jl"
                    cells = [LIVECHART_SETUP.replace("CHANNEL", channel)]
                else:
                    trace = "Scattergl" if webgl else "Scatter"
                    cells = [
                        PLOTLY_SETUP.replace("TRACE", trace),
                        PLOTLY_LOOP.replace("SECONDS", str(seconds)),
                    ]
                name = write_notebook(lab.root, f"bench_{kind}.ipynb", cells)
                nb = NotebookPage(lab, page, name).open()
                if webgl is None:
                    webgl = bool(
                        page.evaluate("() => !!document.createElement('canvas').getContext('webgl')")
                    )
                nb.run_all()
                if kind == "livechart":
                    page.wait_for_function(
                        f"document.querySelector('.lw-chart')?.dataset.points === '{WINDOW}'"
                        " && document.querySelector('.lw-state')?.dataset.state === 'connected'",
                        timeout=90_000,
                    )
                    time.sleep(1.5)
                    page.evaluate(JL_PROBE, "livechart")
                    start_t = page.evaluate("performance.now()")
                    proc = start_publisher(env, channel, 1000, seconds)
                    sent = finish(proc, seconds + 60)
                    time.sleep(1.0)
                    stats = summarize(
                        page.evaluate("window.bench.samples"), start_t + 1000, start_t + seconds * 1000
                    )
                    stats["sent"] = sent
                    nb.screenshot("bench-chart-jupyterlab-livechart", ".lw-chart")
                else:
                    page.wait_for_selector(".js-plotly-plot", timeout=120_000)
                    page.evaluate(JL_PROBE, "plotly")
                    start_t = page.evaluate("performance.now()")
                    # the loop cell runs right after the setup cell; measure while it runs
                    deadline = time.monotonic() + seconds + 240
                    while time.monotonic() < deadline:
                        text = nb.output_text(1) if page.locator(".jp-Cell").count() > 1 else ""
                        if "UPDATES" in text:
                            break
                        time.sleep(0.5)
                    time.sleep(1.0)
                    samples = page.evaluate("window.bench.samples")
                    stats = summarize(samples, start_t + 1000, start_t + seconds * 1000)
                    stats["trace"] = trace
                    stats["kernel_updates"] = nb.output_text(1).strip()
                    stats["lag_after_loop_s"] = samples[-1]["lag"]
                    with contextlib.suppress(Exception):
                        nb.screenshot("bench-chart-jupyterlab-plotly", ".js-plotly-plot")
                out[kind] = stats
                print(f"  {kind}: {json.dumps(stats, default=str)}", flush=True)
                context.close()
                lab.shutdown_notebook_kernel(name)
        finally:
            lab.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer rates")
    parser.add_argument("--skip-peer", action="store_true", help="skip the JupyterLab / Plotly part")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    (REPO / "test-artifacts").mkdir(exist_ok=True)
    report: dict[str, Any] = {
        "machine": machine(),
        "browser": chromium_version(),
        "command": " ".join(sys.argv),
    }
    with LocalServer() as server, sync_playwright() as pw:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PUSHER_", "LIVEWIDGET_"))}
        s = server
        env["LIVEWIDGET_URL"] = f"http://{s.key}:{s.secret}@{s.host}:{s.port}/apps/{s.app_id}"
        env["PYTHONPATH"] = str(REPO)
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            print("1-2. LiveChart alone in the page, 100,000 points in the window:", flush=True)
            report["standalone"] = standalone(browser, server, env, args.quick)
            if not args.skip_peer:
                print(
                    "3. JupyterLab: LiveChart and Plotly FigureWidget, 100,000 points, 1,000 points/s:",
                    flush=True,
                )
                report["peer"] = jupyterlab_peer(browser, server, env, 8 if args.quick else 15)
        finally:
            browser.close()
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"chart-{stamp}.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()

"""Benchmark livewidget's embedded server side by side with Soketi, on one client harness, in one run.

    .venv/bin/python bench/bench_server.py            # 3 rounds, about 7 minutes
    .venv/bin/python bench/bench_server.py --quick    # 1 round, short phases, about 1.5 minutes
    .venv/bin/python bench/bench_server.py --quick --only fanout-100 --against-history-off
                                                      # channel history (SQLite) vs none, no Soketi

It builds the compiled client harness (bench/client/lwbench.c -> bench/out/lwbench with gcc -O2), starts
``livewidget serve`` on 127.0.0.1:6203 and Soketi (/work/shared/peers/soketi/run) on 127.0.0.1:6103, and
runs every scenario against each server in turn (livewidget, Soketi, livewidget, Soketi...):

* fanout-100 / fanout-1000: N subscribers of one channel; publish-to-receive latency at fixed publish
  rates, then deliveries per second with publishes as fast as the server acknowledges them;
* channels-1000x2: 1,000 channels with 2 subscribers each, publishing round-robin over the channels;
* idle-10k: memory per idle connection, from a freshly started server's VmRSS before and after 10,000
  connections have received ``pusher:connection_established``.

livewidget runs with its default channel history (SQLite, group commits; ``--history memory|off``
changes it); ``--against-history-off`` puts livewidget without history where Soketi would be.

Events are triggered through the signed REST API (POST /apps/ID/events) by the harness itself. Every loop
is bounded in count and time. Medians over the rounds are printed side by side with the ratio
livewidget/Soketi; the raw results go to bench/out/bench-<time>.json and the table to bench-<time>.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"
HARNESS_SRC = BENCH / "client" / "lwbench.c"
HARNESS = OUT / "lwbench"
VENV = ROOT / ".venv" / "bin"
# The other side of the comparison: Soketi, or (--against-history-off) livewidget without history. Its
# runs are kept under the key "soketi" either way; only the label changes.
B_LABEL = {"name": "soketi"}
SOKETI_RUN = Path(os.environ.get("SOKETI_RUN", "/work/shared/peers/soketi/run"))

HOST = "127.0.0.1"
LW_PORT = 6203
SOKETI_PORT = 6103
APP_ID, KEY, SECRET = "4242", "lwkey", "lwsecret"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- servers


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0)
    with contextlib.suppress(OSError):
        if "State:\tZ" in Path(f"/proc/{pid}/status").read_text():
            return False
    return True


def wait_port(port: int, timeout: float, pid: int | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if pid is not None and not pid_alive(pid):
            raise RuntimeError(f"server process {pid} exited before listening on {port}")
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout} s")


def stop_pid(pid: int, popen: subprocess.Popen[bytes] | None = None, grace: float = 8.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; only ever the pid we started."""
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if popen is not None and popen.poll() is not None:
            return
        if popen is None and not pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(5)


# Scheduling priority of both servers and the harness (same for all, so the comparison stays fair): the
# machine may be shared, and a neighbour's burst on one of the two cores otherwise dominates the tails.
NICE = {"value": -10}


def renice(pid: int) -> None:
    """Give every thread of ``pid`` the benchmark's priority (nice is per thread on Linux)."""
    if not NICE["value"]:
        return
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, int(task), NICE["value"])


def _harness_priority() -> None:  # runs in the child before exec
    if NICE["value"]:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, NICE["value"])


@dataclass
class Server:
    name: str
    port: int
    pid: int = 0
    popen: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.pid > 0 and pid_alive(self.pid)


class Livewidget(Server):
    def __init__(
        self, uvloop: bool = True, history: str = "sqlite", name: str = "livewidget", port: int = LW_PORT
    ) -> None:
        super().__init__(name, port)
        self.uvloop = uvloop
        self.history = history  # sqlite (the serve default), memory or off

    def start(self) -> None:
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is already in use; stop whatever listens there")
        args = ["serve", "--port", str(self.port), "--app-id", APP_ID, "--key", KEY, "--secret", SECRET]
        if self.history == "sqlite":
            data = OUT / f"history-{self.port}"
            shutil.rmtree(data, ignore_errors=True)  # every start begins with an empty history
            args += ["--data", str(data)]
        else:
            args += ["--no-data" if self.history == "memory" else "--no-history"]
        if self.uvloop:
            cmd = [str(VENV / "livewidget"), *args]
        else:
            # the same entry point with uvloop made unimportable: plain asyncio
            code = (
                "import sys; sys.modules['uvloop'] = None; from livewidget.cli import main; sys.exit(main())"
            )
            cmd = [str(VENV / "python"), "-c", code, *args]
        log_path = OUT / f"livewidget-{self.port}.log"
        with open(log_path, "ab") as logf:
            self.popen = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT)
        self.pid = self.popen.pid
        wait_port(self.port, 20, self.pid)
        renice(self.pid)

    def stop(self) -> None:
        if self.pid:
            stop_pid(self.pid, self.popen)
        self.pid = 0
        self.popen = None


class Soketi(Server):
    def __init__(self) -> None:
        super().__init__("soketi", SOKETI_PORT)

    def start(self) -> None:
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is already in use; stop whatever listens there")
        env = dict(os.environ)
        # The run script enables user authentication, and Soketi then closes every connection that has
        # not signed in within 30 s (4009). Our clients are public subscribers: give them an hour.
        # This changes a timer's delay only, not the work Soketi does per connection.
        env["SOKETI_USER_AUTHENTICATION_TIMEOUT"] = "3600000"
        out = subprocess.run(
            [str(SOKETI_RUN), str(self.port), APP_ID, KEY, SECRET],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"soketi did not start: {out.stderr.strip()}")
        self.pid = int(out.stdout.strip().split()[-1])
        wait_port(self.port, 20, self.pid)
        renice(self.pid)

    def stop(self) -> None:
        if self.pid:
            stop_pid(self.pid)
        self.pid = 0


# ---------------------------------------------------------------------------------------- harness


def build_harness() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    if shutil.which("gcc") is None:
        raise RuntimeError("gcc is needed to build the client harness")
    cmd = ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(HARNESS), str(HARNESS_SRC)]
    log("building " + " ".join(cmd))
    subprocess.run(cmd, check=True, timeout=120)
    out = subprocess.run(
        [str(HARNESS), "--self-test"], capture_output=True, text=True, timeout=10, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"harness self-test (MD5 / HMAC-SHA256 vectors) failed: {out.stdout}")


def harness_cmd(server: Server, args: list[str], timeout: float) -> list[str]:
    return [
        str(HARNESS),
        "--host",
        HOST,
        "--port",
        str(server.port),
        "--app-id",
        APP_ID,
        "--key",
        KEY,
        "--secret",
        SECRET,
        "--server-pid",
        str(server.pid),
        "--timeout",
        str(timeout),
        *args,
    ]


def run_harness(server: Server, args: list[str], timeout: float) -> dict[str, Any]:
    cmd = harness_cmd(server, args, timeout)
    before = cpu_snapshot(server.pid)
    try:
        out = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout + 30,
            check=False,
            preexec_fn=_harness_priority,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"harness timed out after {timeout + 30} s"}
    after = cpu_snapshot(server.pid)
    try:
        result: dict[str, Any] = json.loads(out.stdout)
    except ValueError:
        return {"ok": False, "error": f"harness exit {out.returncode}: {out.stderr.strip()[-500:]}"}
    if out.returncode != 0 and "error" not in result:
        result["error"] = out.stderr.strip()[-500:]
    wall = after["wall"] - before["wall"]
    other = (after["busy"] - before["busy"]) - (after["server"] - before["server"])
    other -= after["children"] - before["children"]
    # CPU used by anything but this server and the harness (other processes, the hypervisor's steal)
    result["background_cpu_pct"] = round(100 * max(other, 0.0) / wall, 1) if wall > 0 else -1
    return result


def cpu_snapshot(*pids: int) -> dict[str, float]:
    """Busy CPU seconds of the whole machine, of ``pids``, and of our finished children (the harness)."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[i] for i in (0, 1, 2, 5, 6, 7) if i < len(fields)) / tick  # all but idle, iowait
    server = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            server += (int(stat[11]) + int(stat[12])) / tick
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall": time.monotonic(), "busy": busy, "server": server, "children": ru.ru_utime + ru.ru_stime}


class QuietWaiter:
    """Before a run, wait until other processes leave the CPUs alone (bounded per run and in total).

    The machine may be shared: another process busy on one of the two cores changes every figure.
    """

    def __init__(self, budget: float, per_run: float = 15.0, threshold: float = 25.0) -> None:
        self.budget, self.per_run, self.threshold = budget, per_run, threshold
        self.waited = 0.0

    def wait(self, servers: list[Server]) -> float:
        """Returns the background CPU % (of one core) of the last 1-second sample."""
        start = time.monotonic()
        pids = [s.pid for s in servers if s.pid]
        while True:
            a = cpu_snapshot(*pids)
            time.sleep(1.0)
            b = cpu_snapshot(*pids)
            other = (b["busy"] - a["busy"]) - (b["server"] - a["server"]) - (b["children"] - a["children"])
            pct = 100 * max(other, 0.0) / (b["wall"] - a["wall"])
            spent = time.monotonic() - start
            if pct < self.threshold or spent >= self.per_run or self.waited + spent >= self.budget:
                if pct >= self.threshold:
                    log(f"  the machine is busy ({pct:.0f}% of a core used by others); running anyway")
                elif spent > 1.5:
                    log(f"  waited {spent:.0f} s for other processes to quieten")
                self.waited += spent
                return round(pct, 1)


# ---------------------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    name: str
    conns: int
    channels: int
    # name, rate (0 = max), count, max seconds[, channels per publish]
    phases: list[tuple[str, float, int, float] | tuple[str, float, int, float, int]]
    description: str
    pub_conns: int = 16

    def args(self) -> list[str]:
        out = [
            "--conns",
            str(self.conns),
            "--channels",
            str(self.channels),
            "--pub-conns",
            str(self.pub_conns),
        ]
        out += ["--prefix", self.name.replace("_", "-")]
        for name, rate, count, max_s, *per in self.phases:
            out += ["--phase", ":".join([name, f"{rate:g}", str(count), f"{max_s:g}", *map(str, per)])]
        return out

    def timeout(self) -> float:
        return 60 + sum(p[3] + 6 for p in self.phases)


def fixed(rate: int, seconds: float) -> tuple[str, float, int, float]:
    """A fixed-rate phase; a server that falls behind is cut off at 1.5x the planned time."""
    return (f"r{rate}", rate, int(rate * seconds), seconds * 1.5 + 1)


def scenarios(quick: bool) -> list[Scenario]:
    d = 2.0 if quick else 4.0  # seconds per fixed-rate phase
    mx = 3.0 if quick else 6.0  # upper bound of a max-rate phase
    return [
        Scenario(
            "fanout-100",
            100,
            1,
            [("warmup", 0, 500, 3), fixed(10, d), fixed(100, d), fixed(1000, d), ("max", 0, 30000, mx)],
            "100 subscribers of one channel",
        ),
        Scenario(
            "fanout-1000",
            1000,
            1,
            [("warmup", 0, 200, 3), fixed(10, d), fixed(100, d), ("max", 0, 4000, mx)],
            "1,000 subscribers of one channel",
        ),
        Scenario(
            "channels-1000x2",
            2000,
            1000,
            [
                ("warmup", 0, 1000, 3),
                fixed(100, d),
                fixed(1000, d),
                ("max", 0, 40000, mx),
                ("max-10ch", 0, 10000, mx, 10),  # 10 channels per trigger: less HTTP per delivery
            ],
            "1,000 channels x 2 subscribers, publishing round-robin",
        ),
    ]


IDLE_CONNS = 10_000


def run_idle(server: Server, conns: int, settle: float) -> dict[str, Any]:
    """A fresh server: warm it up with a few connections, then connect ``conns`` and read VmRSS."""
    server.start()
    try:
        time.sleep(1.0)
        run_harness(server, ["--conns", "20", "--idle", "--settle", "0.5"], 30)
        time.sleep(1.0)
        return run_harness(server, ["--conns", str(conns), "--idle", "--settle", str(settle)], 90)
    finally:
        server.stop()
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------- report

PHASE_METRICS = [
    # key, label, higher is better
    ("deliveries_per_s", "deliveries/s", True),
    ("p50", "latency p50 ms", False),
    ("p99", "latency p99 ms", False),
    ("max_lat", "latency max ms", False),
    ("server_us_per_delivery", "server CPU us/delivery", False),
    ("server_cpu_pct", "server CPU % (all threads)", None),
    ("server_main_thread_cpu_pct", "server main thread CPU %", None),
    ("harness_cpu_pct", "harness CPU %", None),
    ("lost", "lost deliveries", None),
    ("late_publishes", "publishes >5 ms late", None),
]


def phase_figures(phase: dict[str, Any]) -> dict[str, float]:
    lat = phase["latency_us"]
    cpu = phase["server_cpu_s"]
    return {
        "deliveries_per_s": phase["deliveries_per_s"],
        "publishes_per_s": phase["publishes_per_s"],
        "p50": lat["p50"] / 1000,
        "p99": lat["p99"] / 1000,
        "max_lat": lat["max"] / 1000,
        "server_us_per_delivery": 1e6 * cpu / phase["deliveries"] if phase["deliveries"] and cpu >= 0 else -1,
        "server_cpu_pct": phase["server_cpu_pct"],
        "server_main_thread_cpu_pct": phase.get("server_main_thread_cpu_pct", -1),
        "harness_cpu_pct": phase["harness_cpu_pct"],
        "lost": phase["lost"],
        "late_publishes": phase["late_publishes"],
        "published": phase["published"],
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio_of(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b) or a < 0 or b <= 0:
        return float("nan")
    return a / b


def fmt(v: float) -> str:
    if math.isnan(v):
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def build_table(results: dict[str, Any]) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """Rows of the side-by-side table (medians over rounds) and the list of targets with verdicts."""
    rows: list[list[str]] = []
    targets: list[dict[str, Any]] = []
    for sc_name, per_server in results["scenarios"].items():
        lw_runs, sk_runs = per_server.get("livewidget", []), per_server.get("soketi", [])
        phase_names = (
            [p["name"] for p in (lw_runs or sk_runs)[0].get("phases", [])] if lw_runs or sk_runs else []
        )
        for ph in phase_names:
            if ph == "warmup":
                continue

            def collect(runs: list[dict[str, Any]], key: str, ph: str = ph) -> list[float]:
                vals = []
                for run in runs:
                    for p in run.get("phases", []):
                        if p["name"] == ph and p["published"] > 0:
                            vals.append(phase_figures(p)[key])
                return vals

            for key, label, higher in PHASE_METRICS:
                if not ph.startswith("max") and key == "deliveries_per_s":
                    continue  # the fixed rate times the subscribers
                if ph.startswith("max") and key in ("p50", "p99", "max_lat", "late_publishes"):
                    continue  # latency at saturation is queueing, not a target
                a, b = median(collect(lw_runs, key)), median(collect(sk_runs, key))
                ratio = ratio_of(a, b)
                verdict = ""
                is_target = (ph == "max" and key == "deliveries_per_s") or (ph[0] == "r" and key == "p99")
                if is_target and not math.isnan(ratio):
                    ok = ratio >= 1 if higher else ratio <= 1
                    verdict = "met" if ok else "MISSED"
                    targets.append(
                        {
                            "scenario": sc_name,
                            "phase": ph,
                            "metric": label,
                            "lw": a,
                            "soketi": b,
                            "ok": ok,
                            "lw_rounds": collect(lw_runs, key),
                            "soketi_rounds": collect(sk_runs, key),
                        }
                    )
                rows.append(
                    [
                        sc_name,
                        ph,
                        label,
                        fmt(a),
                        fmt(b),
                        fmt(ratio) + "x" if not math.isnan(ratio) else "-",
                        verdict,
                    ]
                )
        a = median([r["background_cpu_pct"] for r in lw_runs if "background_cpu_pct" in r])
        b = median([r["background_cpu_pct"] for r in sk_runs if "background_cpu_pct" in r])
        rows.append([sc_name, "all", "background CPU % (other processes)", fmt(a), fmt(b), "-", ""])
    idle = results.get("idle", {})
    if idle:
        for key, label in (
            ("rss_per_conn_bytes", "RSS per idle connection, bytes"),
            ("rss_before_kib", "RSS before, KiB"),
            ("rss_after_kib", "RSS after, KiB"),
            ("connect_per_s", "connections accepted/s"),
            ("connect_server_cpu_us", "server CPU us/connection"),
        ):
            a = median([r[key] for r in idle.get("livewidget", []) if r.get("ok")])
            b = median([r[key] for r in idle.get("soketi", []) if r.get("ok")])
            ratio = ratio_of(a, b)
            verdict = ""
            if key == "rss_per_conn_bytes" and not math.isnan(ratio):
                ok = ratio <= 1
                verdict = "met" if ok else "MISSED"
                targets.append(
                    {
                        "scenario": "idle-10k",
                        "phase": "idle",
                        "metric": label,
                        "lw": a,
                        "soketi": b,
                        "ok": ok,
                        "lw_rounds": [r[key] for r in idle.get("livewidget", []) if r.get("ok")],
                        "soketi_rounds": [r[key] for r in idle.get("soketi", []) if r.get("ok")],
                    }
                )
            rows.append(
                [
                    "idle-10k",
                    "idle",
                    label,
                    fmt(a),
                    fmt(b),
                    fmt(ratio) + "x" if not math.isnan(ratio) else "-",
                    verdict,
                ]
            )
    return rows, targets


def render(rows: list[list[str]], markdown: bool) -> str:
    head = [
        "scenario",
        "phase",
        "metric (median)",
        "livewidget",
        B_LABEL["name"],
        f"lw/{B_LABEL['name']}",
        "target",
    ]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=False)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    prev = None
    for r in rows:
        if prev is not None and (r[0], r[1]) != prev:
            out.append("")
        prev = (r[0], r[1])
        out.append(
            "  ".join(
                x.rjust(w) if i >= 3 else x.ljust(w) for i, (x, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(out)


def machine_info(uvloop: bool) -> dict[str, Any]:
    info: dict[str, Any] = {"nproc": os.cpu_count(), "platform": platform.platform()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["ram_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    probe = (
        "import sys, aiohttp; print(sys.version.split()[0]); print(aiohttp.__version__)\n"
        "try:\n import uvloop; print(uvloop.__version__)\nexcept ImportError:\n print('-')"
    )
    out = subprocess.run([str(VENV / "python"), "-c", probe], capture_output=True, text=True, check=False)
    py, aio, uv = ([*out.stdout.split(), "?", "?", "?"])[:3]
    info.update(python=py, aiohttp=aio, uvloop_installed=uv, uvloop_used=uvloop and uv != "-")
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    info["node"] = node.stdout.strip()
    gcc = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True, check=False)
    info["gcc"] = gcc.stdout.strip()
    return info


# ---------------------------------------------------------------------------------------- main


def run_scenarios(
    todo: list[Scenario], servers: list[Server], rounds: int, results: dict[str, Any], quiet: QuietWaiter
) -> None:
    for srv in servers:
        srv.start()
        log(f"{srv.name} listening on {HOST}:{srv.port}, pid {srv.pid}")
    for rnd in range(rounds):
        for sc in todo:
            for srv in servers:  # alternating: livewidget, soketi, livewidget, soketi...
                if not srv.alive():
                    raise RuntimeError(f"{srv.name} (pid {srv.pid}) died")
                log(f"round {rnd + 1}/{rounds} {sc.name} on {srv.name}")
                background_before = quiet.wait(servers)
                res = run_harness(srv, sc.args(), sc.timeout())
                res["round"] = rnd + 1
                res["background_cpu_pct_before"] = background_before
                results["scenarios"].setdefault(sc.name, {}).setdefault(srv.name, []).append(res)
                summary = ", ".join(
                    f"{p['name']}: {p['deliveries_per_s']:,.0f}/s p99 {p['latency_us']['p99'] / 1000:.1f} ms"
                    for p in res.get("phases", [])
                    if p["name"] != "warmup"
                )
                problem = res.get("error", "") or res.get("first_error", "")
                log(f"  ok={res.get('ok')} {summary} {problem} (background CPU {res['background_cpu_pct']}%)")
    for srv in servers:
        srv.stop()


def run_idle_rounds(
    servers: list[Server], rounds: int, conns: int, settle: float, results: dict[str, Any], quiet: QuietWaiter
) -> None:
    for rnd in range(rounds):
        for srv in servers:
            log(f"round {rnd + 1}/{rounds} idle-{conns} on a fresh {srv.name}")
            quiet.wait([])
            res = run_idle(srv, conns, settle)
            res["round"] = rnd + 1
            conn = res.get("connect", {})
            res["connect_per_s"] = conn.get("per_s", float("nan"))
            cpu = conn.get("server_cpu_s", -1)
            res["connect_server_cpu_us"] = 1e6 * cpu / conns if cpu is not None and cpu >= 0 else -1
            results["idle"].setdefault(srv.name, []).append(res)
            per_conn = res.get("rss_per_conn_bytes", float("nan"))
            rss = f"{res.get('rss_before_kib')} -> {res.get('rss_after_kib')} KiB"
            log(f"  ok={res.get('ok')} RSS {rss}, {per_conn:,.0f} B/conn {res.get('first_error', '')}")


def report(results: dict[str, Any]) -> None:
    rows, targets = build_table(results)
    results["targets"] = targets
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = OUT / f"bench-{stamp}.json"
    json_path.write_text(json.dumps(results, indent=1))
    spread = [
        f"| scenario | phase | metric | livewidget per round | {B_LABEL['name']} per round |",
        "|---|---|---|---|---|",
    ]
    for t in targets:
        lw_r = ", ".join(fmt(v) for v in t["lw_rounds"])
        sk_r = ", ".join(fmt(v) for v in t["soketi_rounds"])
        spread.append(f"| {t['scenario']} | {t['phase']} | {t['metric']} | {lw_r} | {sk_r} |")
    md = render(rows, markdown=True) + "\n\nTargets, every round:\n\n" + "\n".join(spread) + "\n"
    (OUT / f"bench-{stamp}.md").write_text(md)
    print()
    rounds, secs = results["rounds"], results["seconds"]
    print(f"livewidget vs {B_LABEL['name']}, medians of {rounds} round(s), {secs} s")
    print(f"machine: {json.dumps(results['machine'])}")
    print("latency = REST request written -> event received, per delivery; max = as fast as acknowledged")
    print()
    print(render(rows, markdown=False))
    print()
    bad = [
        run for r in results["scenarios"].values() for runs in r.values() for run in runs if not run.get("ok")
    ]
    bad += [run for runs in results["idle"].values() for run in runs if not run.get("ok")]
    if bad:
        print(f"WARNING: {len(bad)} run(s) were not clean (lost connections or errors); see the JSON")
    missed = [t for t in targets if not t["ok"]]
    print(f"targets: {len(targets) - len(missed)} met, {len(missed)} missed")
    for t in missed:
        lw, sk = fmt(t["lw"]), fmt(t["soketi"])
        print(f"  missed: {t['scenario']} {t['phase']} {t['metric']}: livewidget {lw}, soketi {sk}")
    print(f"raw results: {json_path}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 round with short phases (about 1.5 minutes)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of every scenario [3; 1 with --quick]")
    ap.add_argument("--no-uvloop", action="store_true", help="run livewidget on plain asyncio")
    ap.add_argument(
        "--history",
        choices=["sqlite", "memory", "off"],
        default="sqlite",
        help="livewidget's channel history: SQLite in bench/out (the serve default), memory, or off [sqlite]",
    )
    ap.add_argument(
        "--against-history-off",
        action="store_true",
        help="compare with livewidget without history (port 6204) instead of Soketi",
    )
    names = ["fanout-100", "fanout-1000", "channels-1000x2", "idle-10k"]
    ap.add_argument("--only", choices=names, action="append", help="run only this scenario (repeatable)")
    ap.add_argument("--idle-conns", type=int, default=IDLE_CONNS, help="connections of the idle scenario")
    ap.add_argument(
        "--quiet-budget",
        type=float,
        default=None,
        help="seconds in all to wait for other processes to leave the CPUs alone before runs [90; 30 quick]",
    )
    ap.add_argument(
        "--nice",
        type=int,
        default=NICE["value"],
        help="priority of both servers and the harness, 0 to leave it alone [-10; needs root]",
    )
    args = ap.parse_args(argv)
    NICE["value"] = args.nice if os.geteuid() == 0 or args.nice >= 0 else 0
    rounds = args.rounds or (1 if args.quick else 3)
    only = set(args.only or [])

    build_harness()
    info = machine_info(not args.no_uvloop)
    log(f"machine: {json.dumps(info)}")
    other: Server = Soketi()
    if args.against_history_off:
        B_LABEL["name"] = "history off"
        other = Livewidget(uvloop=not args.no_uvloop, history="off", name="soketi", port=LW_PORT + 1)
    servers: list[Server] = [Livewidget(uvloop=not args.no_uvloop, history=args.history), other]
    results_label = {"other": B_LABEL["name"], "history": args.history}
    results: dict[str, Any] = {
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "nice": NICE["value"],
        "sides": results_label,
        "rounds": rounds,
        "scenarios": {},
        "idle": {},
    }
    t0 = time.monotonic()
    try:
        todo = [s for s in scenarios(args.quick) if not only or s.name in only]
        quiet = QuietWaiter(
            budget=args.quiet_budget if args.quiet_budget is not None else (30 if args.quick else 90)
        )
        if todo:
            run_scenarios(todo, servers, rounds, results, quiet)
        if not only or "idle-10k" in only:
            run_idle_rounds(servers, rounds, args.idle_conns, 2.0 if args.quick else 3.0, results, quiet)
        results["waited_for_quiet_s"] = round(quiet.waited, 1)
    finally:
        for srv in servers:
            srv.stop()
    results["seconds"] = round(time.monotonic() - t0, 1)
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

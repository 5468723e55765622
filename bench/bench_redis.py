"""Scale-out over Redis (issue 8): fan-out throughput and p99 latency, one process vs two over Redis.

    .venv/bin/python bench/bench_redis.py            # 2 rounds, about 6 minutes
    .venv/bin/python bench/bench_redis.py --quick    # 1 round, short phases

Not a test. It reuses the compiled client harness (bench/client/lwbench.c, built by bench_server.py's
``build_harness``) and its scenario format. Setups, each on 127.0.0.1:6230 with a fresh redis-server
(``--save '' --appendonly no``) on a free port, run in turn within each round:

* ``lw-1``: one ``livewidget serve`` process, no Redis (today's server);
* ``lw-1-redis``: one process with ``--redis``: every event goes out to Redis and comes back (the hop);
* ``lw-2-redis``: two processes with ``--redis --reuse-port`` on the same port: the kernel spreads the
  subscribers and the REST publishers over both, every event crosses Redis;
* ``soketi-1-redis`` / ``soketi-2-redis``: Soketi 1.6.1 with ``adapter.driver=redis`` (one process, and
  two on the same port: uWebSockets listens with SO_REUSEPORT), installed by
  /work/shared/peers/soketi/run, started here with its own config file.

Latency = REST request written -> event received (per delivery, the harness's clock); deliveries/s at
"max" = publishes as fast as the servers acknowledge them. Server CPU is summed over all the setup's
processes (Redis included). Every loop is bounded in count and time. Results: bench/out/redis-<time>.json
and .md, and a table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_server as bs  # the other engineer's driver: harness, scenarios, CPU figures

HOST = bs.HOST
PORT = 6230
APP_ID, KEY, SECRET = bs.APP_ID, bs.KEY, bs.SECRET
SOKETI_DIR = Path(os.environ.get("SOKETI_DIR", Path.home() / ".cache" / "livewidget-peers" / "soketi"))
SOKETI_JS = SOKETI_DIR / "node_modules" / "@soketi" / "soketi" / "bin" / "server.js"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


class Procs:
    """The processes of one setup; only ever signals the pids it started."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, cmd: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None) -> int:
        with open(log, "ab") as f:
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        self.procs.append(p)
        return p.pid

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def stop(self) -> None:
        for p in reversed(self.procs):
            bs.stop_pid(p.pid, p)
        self.procs.clear()


def wait_log(path: Path, text: str, timeout: float, proc_pids: list[int]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if text in path.read_text(errors="replace"):
                return
        for pid in proc_pids:
            if not bs.pid_alive(pid):
                raise RuntimeError(f"process {pid} exited; see {path}")
        time.sleep(0.1)
    raise RuntimeError(f"{text!r} not in {path} after {timeout} s")


class Setup:
    """A named set of server processes behind 127.0.0.1:PORT."""

    def __init__(self, name: str, kind: str, processes: int, redis: bool) -> None:
        self.name, self.kind, self.processes, self.redis = name, kind, processes, redis
        self.procs = Procs()
        self.port = PORT
        self.pid = 0  # the first server process (the harness reads its CPU)

    def start(self) -> None:
        if bs.port_open(PORT):
            raise RuntimeError(f"port {PORT} is in use")
        out = bs.OUT
        redis_url = ""
        if self.redis:
            rport = free_port()
            exe = shutil.which("redis-server")
            if exe is None:
                raise RuntimeError("redis-server is not installed (scripts/setup.sh installs it)")
            cmd = [exe, "--port", str(rport), "--bind", HOST, "--save", "", "--appendonly", "no"]
            self.procs.spawn(cmd, out / f"redis-{rport}.log", out)
            bs.wait_port(rport, 10)
            redis_url = f"redis://{HOST}:{rport}"
        servers: list[int] = []
        for i in range(self.processes):
            log = out / f"{self.name}-{i}.log"
            log.write_text("")
            if self.kind == "livewidget":
                cmd = [str(bs.VENV / "livewidget"), "serve", "--port", str(PORT), "--app-id", APP_ID]
                cmd += ["--key", KEY, "--secret", SECRET]
                if self.redis:
                    cmd += ["--redis", redis_url]
                if self.processes > 1:
                    cmd += ["--reuse-port"]
                pid = self.procs.spawn(cmd, log, bs.ROOT)
                servers.append(pid)
                wait_log(log, "Press Ctrl-C", 30, [pid])
            else:
                cfg = out / f"{self.name}-{i}.json"
                cfg.write_text(json.dumps(soketi_config(PORT, i, redis_url)))
                env = dict(os.environ, SOKETI_USER_AUTHENTICATION_TIMEOUT="3600000")
                pid = self.procs.spawn(
                    ["node", str(SOKETI_JS), "start", f"--config={cfg}"], log, SOKETI_DIR, env
                )
                servers.append(pid)
                wait_log(log, "Server is up and running", 30, [pid])
        bs.wait_port(PORT, 10)
        self.pid = servers[0]

    def stop(self) -> None:
        self.procs.stop()
        time.sleep(0.5)


def soketi_config(port: int, index: int, redis_url: str) -> dict[str, Any]:
    """What /work/shared/peers/soketi/run writes, plus the Redis adapter and per-process side ports."""
    rhost, _, rport = redis_url.removeprefix("redis://").rpartition(":")
    return {
        "host": HOST,
        "port": port,
        "metrics.enabled": False,
        "metrics.port": 9650 + index,
        "cluster.address": HOST,
        "cluster.hostname": HOST,
        "cluster.unicast": HOST,
        "cluster.port": port + 5000 + index,
        "adapter.driver": "redis",
        "adapter.redis.prefix": "soketi-bench",
        "database.redis.host": rhost,
        "database.redis.port": int(rport),
        "appManager.array.apps.0.id": APP_ID,
        "appManager.array.apps.0.key": KEY,
        "appManager.array.apps.0.secret": SECRET,
        "appManager.array.apps.0.enableClientMessages": True,
        "appManager.array.apps.0.maxClientEventsPerSecond": 10,
    }


def ensure_soketi() -> str | None:
    """Install Soketi through the peer's run script (it starts one; we stop it). None, or why not."""
    if SOKETI_JS.exists():
        return None
    if not bs.SOKETI_RUN.exists():
        return f"{bs.SOKETI_RUN} does not exist"
    port = free_port()
    out = subprocess.run(
        [str(bs.SOKETI_RUN), str(port), APP_ID, KEY, SECRET], capture_output=True, text=True, timeout=300
    )
    if out.returncode != 0:
        return f"the run script failed: {out.stderr.strip()[-300:]}"
    with contextlib.suppress(ValueError, ProcessLookupError):
        os.kill(int(out.stdout.split()[-1]), signal.SIGTERM)
    return None if SOKETI_JS.exists() else f"{SOKETI_JS} missing after install"


def scenarios(quick: bool) -> list[bs.Scenario]:
    d = 2.0 if quick else 4.0
    mx = 3.0 if quick else 6.0
    return [
        bs.Scenario(
            "fanout-100",
            100,
            1,
            [("warmup", 0, 500, 3), bs.fixed(100, d), bs.fixed(1000, d), ("max", 0, 30000, mx)],
            "100 subscribers of one channel",
        ),
        bs.Scenario(
            "fanout-1000",
            1000,
            1,
            [("warmup", 0, 200, 3), bs.fixed(10, d), bs.fixed(100, d), ("max", 0, 4000, mx)],
            "1,000 subscribers of one channel",
        ),
    ]


def run(setups: list[Setup], rounds: int, quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    # The machine may be shared: wait (bounded) for other processes to leave the CPUs alone, and record
    # how busy they were.
    quiet = bs.QuietWaiter(budget=60 if quick else 180)
    for rnd in range(rounds):
        for setup in setups:
            bs.log(f"round {rnd + 1}/{rounds}: {setup.name}")
            try:
                setup.start()
            except RuntimeError as exc:
                bs.log(f"  {setup.name} did not start: {exc}")
                results.setdefault(setup.name, {})["error"] = str(exc)
                setup.stop()
                continue
            try:
                for sc in scenarios(quick):
                    pids = setup.procs.pids()
                    background = quiet.wait([])
                    before = bs.cpu_snapshot(*pids)
                    res = bs.run_harness(setup, sc.args(), sc.timeout())  # type: ignore[arg-type]
                    after = bs.cpu_snapshot(*pids)
                    res["all_server_cpu_s"] = round(after["server"] - before["server"], 2)
                    res["wall_s"] = round(after["wall"] - before["wall"], 1)
                    res["background_cpu_pct_before"] = background
                    results.setdefault(setup.name, {}).setdefault(sc.name, []).append(res)
                    summary = ", ".join(
                        f"{p['name']}: {p['deliveries_per_s']:,.0f}/s "
                        f"p99 {p['latency_us']['p99'] / 1000:.1f} ms lost {p['lost']}"
                        for p in res.get("phases", [])
                        if p["name"] != "warmup"
                    )
                    bs.log(f"  {sc.name} ok={res.get('ok')} {summary} {res.get('error', '')}")
                    cpu = res["all_server_cpu_s"]
                    bs.log(f"  server CPU {cpu} s; others' CPU before: {background}% of a core")
            finally:
                setup.stop()
    return results


def table(results: dict[str, Any], names: list[str]) -> tuple[str, str]:
    rows: list[list[str]] = []
    for sc in scenarios(False):
        for ph in [p[0] for p in sc.phases if p[0] != "warmup"]:
            for metric in ("deliveries/s", "p50 ms", "p99 ms", "lost"):
                if ph == "max" and metric in ("p50 ms", "p99 ms"):
                    continue
                if ph != "max" and metric == "deliveries/s":
                    continue
                row = [sc.name, ph, metric]
                for name in names:
                    vals = []
                    for res in results.get(name, {}).get(sc.name, []):
                        for p in res.get("phases", []):
                            if p["name"] == ph and p["published"] > 0:
                                f = bs.phase_figures(p)
                                key = {"deliveries/s": "deliveries_per_s", "p50 ms": "p50", "p99 ms": "p99"}
                                vals.append(f[key[metric]] if metric in key else p["lost"])
                    row.append(bs.fmt(statistics.median(vals)) if vals else "-")
                rows.append(row)
    head = ["scenario", "phase", "metric (median)", *names]
    md = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=False)]
    txt = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    txt += [
        "  ".join(
            x.rjust(w) if i >= 3 else x.ljust(w) for i, (x, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    return "\n".join(md), "\n".join(txt)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 round, short phases")
    ap.add_argument("--rounds", type=int, default=None, help="rounds [2; 1 with --quick]")
    ap.add_argument("--no-soketi", action="store_true", help="livewidget setups only")
    args = ap.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 2)
    bs.build_harness()
    setups = [
        Setup("lw-1", "livewidget", 1, False),
        Setup("lw-1-redis", "livewidget", 1, True),
        Setup("lw-2-redis", "livewidget", 2, True),
    ]
    soketi_problem = "skipped (--no-soketi)" if args.no_soketi else ensure_soketi()
    if soketi_problem is None:
        setups += [Setup("soketi-1-redis", "soketi", 1, True), Setup("soketi-2-redis", "soketi", 2, True)]
    else:
        bs.log(f"Soketi with Redis not run: {soketi_problem}")
    info = bs.machine_info(True)
    t0 = time.monotonic()
    results = run(setups, rounds, args.quick)
    names = [s.name for s in setups]
    md, txt = table(results, names)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "rounds": rounds,
        "seconds": round(time.monotonic() - t0, 1),
        "soketi": soketi_problem or "ran",
        "results": results,
    }
    (bs.OUT / f"redis-{stamp}.json").write_text(json.dumps(record, indent=1))
    (bs.OUT / f"redis-{stamp}.md").write_text(md + "\n")
    print(f"machine: {json.dumps(info)}")
    print(f"medians of {rounds} round(s); {record['seconds']} s")
    print(txt)
    print(f"raw results: {bs.OUT / f'redis-{stamp}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

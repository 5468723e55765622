"""Profile livewidget's server under one benchmark load with py-spy, and say where the time goes.

    .venv/bin/pip install py-spy                       # once
    .venv/bin/python bench/profile_server.py --scenario fanout-1000 --phase max
    .venv/bin/python bench/profile_server.py --scenario channels-1000x2 --phase max --native

It starts ``livewidget serve`` on 127.0.0.1:6203, runs the scenario of bench_server.py with the compiled
harness, and samples the server with ``py-spy record`` while the chosen phase runs. With ``--native``
py-spy also unwinds C frames (uvloop, libc), which shows how much is the kernel's send path; it stops the
process for each sample, so throughput drops while it records. The raw samples go to
bench/out/profile-<scenario>-<phase>.txt (py-spy "raw" format, for flamegraph.pl) and a summary is printed:
self time by component and by source line, and inclusive time by function.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_server import OUT, VENV, Livewidget, build_harness, harness_cmd, log, scenarios

# (component, pattern on the innermost frame); first match wins
COMPONENTS = [
    (
        "kernel: socket write/send (libc)",
        re.compile(r"^(__)?(write|writev|send|sendmsg|__libc_write)\w* \(libc"),
    ),
    ("kernel: read/recv/epoll (libc)", re.compile(r"^(__)?(read|readv|recv|recvmsg|epoll_p?wait)\w* \(libc")),
    ("event loop (uvloop / asyncio; runner.py is the loop's own frame)", re.compile(r"runner\.py")),
    ("livewidget.server._wire (HTTP and WebSocket parsing)", re.compile(r"livewidget/server/_wire\.py")),
    ("livewidget.server (app.py: fan-out loop, dispatch)", re.compile(r"livewidget/server/")),
    ("livewidget.protocol (hub, rest, signatures)", re.compile(r"livewidget/protocol/")),
    ("aiohttp (HTTP parsing, request/response, websocket)", re.compile(r"aiohttp/|llhttp|_http_parser")),
    ("yarl / multidict (URLs, headers)", re.compile(r"yarl/|multidict|_quoting_c")),
    ("json", re.compile(r"json/|_json")),
    ("hashing (hmac, md5, sha256)", re.compile(r"hmac|hashlib|libcrypto|_hashopenssl")),
    (
        "event loop (uvloop / asyncio; runner.py is the loop's own frame)",
        re.compile(r"uvloop|loop\.c|asyncio"),
    ),
]


def summarize(raw: Path, top: int = 20) -> str:
    self_line: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    comp: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n_text = line.rpartition(" ")
        if not stack or not n_text.isdigit():
            continue
        n = int(n_text)
        total += n
        frames = [
            re.sub(r" \((?:/[^)]*/)?((?:livewidget/)?[^/)]+/?[^/)]*)\)", r" (\1)", f)
            for f in stack.split(";")
        ]
        leaf = frames[-1]
        self_line[leaf] += n
        for f in set(frames):
            incl[re.sub(r":\d+\)$", ")", f)] += n
        for name, pattern in COMPONENTS:
            if pattern.search(leaf):
                comp[name] += n
                break
        else:
            comp["other (interpreter, allocator...)"] += n
    if not total:
        return "no samples"
    out = [f"{total} samples", "", "self time by component:"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in comp.most_common()]
    out += ["", "self time by line:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in self_line.most_common(top)]
    out += ["", "inclusive time by function:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top + 10)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    names = [s.name for s in scenarios(False)]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=names, default="fanout-1000")
    ap.add_argument("--phase", default="max", help="phase to sample (max, r100, ...) [max]")
    ap.add_argument("--seconds", type=float, default=4.0, help="how long to sample [4]")
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second [100]")
    ap.add_argument("--native", action="store_true", help="include C frames (uvloop, libc)")
    ap.add_argument("--no-uvloop", action="store_true", help="run livewidget on plain asyncio")
    ap.add_argument("--summarize", metavar="RAW", help="only summarize an earlier raw profile")
    args = ap.parse_args(argv)
    if args.summarize:
        print(summarize(Path(args.summarize)))
        return 0
    py_spy = VENV / "py-spy"
    if not py_spy.exists():
        print("py-spy is missing: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    build_harness()
    sc = next(s for s in scenarios(False) if s.name == args.scenario)
    if args.phase not in [p[0] for p in sc.phases]:
        print(f"{args.scenario} has no phase {args.phase}", file=sys.stderr)
        return 2
    raw = OUT / f"profile-{args.scenario}-{args.phase}{'-native' if args.native else ''}.txt"
    server = Livewidget(uvloop=not args.no_uvloop)
    server.start()
    try:
        cmd = [str(py_spy), "record", "-p", str(server.pid), "-d", f"{args.seconds:g}", "-r", str(args.rate)]
        cmd += ["-f", "raw", "-o", str(raw)]
        cmd += ["--native"] if args.native else ["--nonblocking"]
        spy: list[subprocess.Popen[bytes]] = []

        def on_phase(line: str) -> None:
            if line.strip() == f"lwbench: phase {args.phase}" and not spy:
                log(f"sampling {server.name} (pid {server.pid}) for {args.seconds:g} s during {args.phase}")
                spy.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))

        result = run_with_stderr_hook(server, sc.args(), sc.timeout(), on_phase)
        if spy:
            err = spy[0].communicate(timeout=args.seconds + 60)[1].decode()
            if spy[0].returncode != 0:
                print(f"py-spy failed: {err.strip()}", file=sys.stderr)
                return 1
    finally:
        server.stop()
    for p in result.get("phases", []):
        if p["name"] == args.phase:
            cpu = p["server_cpu_s"]
            per = 1e6 * cpu / p["deliveries"] if p["deliveries"] else float("nan")
            print(
                f"{args.scenario} {args.phase}: {p['deliveries_per_s']:,.0f} deliveries/s, "
                f"{p['publishes_per_s']:,.0f} publishes/s, server CPU {p['server_cpu_pct']}% "
                f"({per:.1f} us/delivery, slowed down by the sampling)"
            )
    print(f"raw samples: {raw}")
    print(summarize(raw))
    return 0


def run_with_stderr_hook(
    server: Livewidget, args: list[str], timeout: float, hook: Callable[[str], None]
) -> dict[str, Any]:
    """Like bench_server.run_harness, calling ``hook(line)`` for each line of the harness's stderr."""
    proc = subprocess.Popen(
        harness_cmd(server, args, timeout), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None and proc.stdout is not None
    stderr, stdout = proc.stderr, proc.stdout
    chunks: list[str] = []
    readers = [
        threading.Thread(target=lambda: [hook(line) for line in stderr], daemon=True),
        threading.Thread(target=lambda: chunks.append(stdout.read()), daemon=True),
    ]
    for t in readers:
        t.start()
    try:
        proc.wait(timeout + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for t in readers:
        t.join(5)
    try:
        parsed: dict[str, Any] = json.loads("".join(chunks))
    except ValueError:
        return {}
    return parsed


if __name__ == "__main__":
    sys.exit(main())

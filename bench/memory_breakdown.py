"""Where livewidget's memory per idle WebSocket connection goes, by source file (tracemalloc).

    .venv/bin/python bench/memory_breakdown.py [--conns 2000]

Runs the server in this process (LocalServer on 127.0.0.1:6203, uvloop if installed), warms it up with a
few connections, then has the compiled harness (bench/out/lwbench, built by bench_server.py) open
``--conns`` idle connections and compares tracemalloc snapshots taken before and while they are open.
tracemalloc sees Python allocations only (not uvloop/libuv's C structures nor the allocator's overhead);
bench_server.py's idle-10k scenario measures the whole process's RSS.
"""

from __future__ import annotations

import argparse
import collections
import gc
import re
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from bench_server import APP_ID, HARNESS, KEY, LW_PORT, ROOT, SECRET, build_harness

from livewidget.server import LocalServer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args(argv)
    build_harness()
    base = [
        str(HARNESS),
        "--port",
        str(LW_PORT),
        "--app-id",
        APP_ID,
        "--key",
        KEY,
        "--secret",
        SECRET,
        "--idle",
    ]
    with LocalServer(port=LW_PORT, app_id=APP_ID, key=KEY, secret=SECRET):
        subprocess.run(
            [*base, "--conns", "20", "--settle", "0.5"], capture_output=True, timeout=60, check=False
        )
        time.sleep(0.5)
        gc.collect()
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        proc = subprocess.Popen(
            [*base, "--conns", str(args.conns), "--settle", "6"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        # the harness connects (a few seconds), then holds the connections for 6 s
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.5)
            tcp = Path("/proc/net/tcp").read_text().upper()
            established = tcp.count(f":{LW_PORT:04X} 01 ")  # client side of the harness's connections
            del tcp  # not part of what is measured
            if established >= args.conns:
                break
        time.sleep(1.0)
        after = tracemalloc.take_snapshot()
        proc.communicate(timeout=60)
        tracemalloc.stop()
    by_file: collections.Counter[str] = collections.Counter()
    for stat in after.compare_to(before, "filename"):
        name = stat.traceback[0].filename
        name = re.sub(r".*/site-packages/|.*/lib/python3\.\d+/", "", name).replace(f"{ROOT}/", "")
        by_file[name] += stat.size_diff
    total = sum(by_file.values())
    print(
        f"Python allocations per idle connection ({args.conns} connections): {total / args.conns:,.0f} bytes"
    )
    for name, size in by_file.most_common(args.top):
        print(f"  {size / args.conns:8,.0f} B  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

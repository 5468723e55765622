"""Per-step overhead of the Keras callback: the same training with and without ``LiveCallback``.

    .venv/bin/python bench/bench_integrations.py [--rounds 5] [--epochs 2] [--width 256] [--url URL]

A small MLP (``--width`` units, two hidden layers) on random data, Keras 3 on PyTorch's CPU build,
``verbose=0``; the step time is set by the model size (a few ms per batch here, a realistic small
model on a CPU). Each round trains a fresh copy of the same model twice, once with
``LiveCallback`` (epoch points, batch points every ``batch_interval`` and the board's bars) and
once without, alternating which goes first; the per-step time is the fit's wall time / steps, and
its CPU time (the process's, every thread included) / steps, steadier on a shared machine. Medians
over rounds and the ratios (target: within a few percent).

Publishing goes to ``livewidget serve`` started for the run in its own process (127.0.0.1, a free
port), as the embedded server runs in practice, unless ``--url`` names another server.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps", type=int, default=100, help="batches per epoch")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--batch-interval", type=float, default=0.25)
    p.add_argument("--hook-calls", type=int, default=100_000, help="batches for the hooks-alone timing")
    p.add_argument("--threads", type=int, default=0, help="PyTorch threads (0: its default)")
    p.add_argument("--url", help="publish here instead of a `livewidget serve` started for the run")
    args = p.parse_args()

    server = None
    if args.url:
        os.environ["LIVEWIDGET_URL"] = args.url
    else:
        server = subprocess.Popen(
            [sys.executable, "-m", "livewidget", "serve", "--port", "0"], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None
        for line in server.stdout:
            if "LIVEWIDGET_URL=" in line:
                os.environ["LIVEWIDGET_URL"] = line.split("=", 1)[1].strip()
                break

    import keras
    import numpy as np
    import torch

    from livewidget.integrations.keras import LiveCallback

    if args.threads:
        torch.set_num_threads(args.threads)

    batch = 64
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.steps * batch, 64)).astype("float32")
    y = rng.integers(0, 10, size=args.steps * batch)

    def model() -> keras.Model:
        keras.utils.set_random_seed(0)
        m = keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(args.width, activation="relu"),
                keras.layers.Dense(args.width, activation="relu"),
                keras.layers.Dense(10),
            ]
        )
        m.compile(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return m

    cpu: dict[bool, list[float]] = {True: [], False: []}

    def per_step(callbacks: list[object]) -> float:
        m = model()
        m.fit(x[:batch], y[:batch], epochs=1, batch_size=batch, verbose=0)  # warm up outside the timing
        t, c = time.perf_counter(), time.process_time()
        m.fit(x, y, epochs=args.epochs, batch_size=batch, verbose=0, callbacks=callbacks)
        steps = args.epochs * args.steps
        # CPU time of the whole process (every thread, the callback's included): steadier than wall
        # time on a machine shared with other jobs
        cpu[bool(callbacks)].append((time.process_time() - c) / steps)
        return (time.perf_counter() - t) / steps

    with_cb: list[float] = []
    without: list[float] = []
    hook_ns: list[float] = []
    try:
        for r in range(args.rounds):
            order = [True, False] if r % 2 == 0 else [False, True]
            for use in order:
                if use:
                    with_cb.append(
                        per_step([LiveCallback("bench-train", batch_interval=args.batch_interval)])
                    )
                else:
                    without.append(per_step([]))
        # The hooks alone, called as Keras calls them for every batch (stable where the fits are noisy).
        hook_ns.clear()
        cb = LiveCallback("bench-train", batch_interval=args.batch_interval)
        cb.set_params({"epochs": 1, "steps": args.hook_calls, "verbose": 0})
        cb.on_train_begin()
        cb.on_epoch_begin(0)
        logs = {"loss": 0.5, "accuracy": 0.9}
        for _ in range(args.rounds):
            t = time.perf_counter_ns()
            for i in range(args.hook_calls):
                cb.on_train_batch_begin(i)
                cb.on_train_batch_end(i, logs)
            hook_ns.append((time.perf_counter_ns() - t) / args.hook_calls)
        cb.on_epoch_end(0, logs)
        cb.on_train_end()
    finally:
        from livewidget import _progress, _publish

        time.sleep(0.2)  # the callbacks' packing threads hand their last points to the publishers

        for pub in [*_progress._state.publishers.values(), *_publish._defaults.values()]:
            pub.flush(60)
        if server is not None:
            server.terminate()
            server.wait(10)

    a, b = statistics.median(without), statistics.median(with_cb)
    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, keras {keras.__version__}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print()
    print(
        f"Keras MLP 64-{args.width}-{args.width}-10, batch {batch}, "
        f"{args.steps} steps x {args.epochs} epochs, "
        f"{args.rounds} rounds alternating, medians"
    )
    print()
    print("| | per step | min | max |")
    print("|---|---:|---:|---:|")
    print(f"| without callback | {a * 1e3:.3f} ms | {min(without) * 1e3:.3f} | {max(without) * 1e3:.3f} |")
    print(f"| with LiveCallback | {b * 1e3:.3f} ms | {min(with_cb) * 1e3:.3f} | {max(with_cb) * 1e3:.3f} |")
    print()
    print(
        f"ratio (median with / median without): {b / a:.3f}x; overhead {1e6 * (b - a):.1f} µs per step; "
        f"min with / min without: {min(with_cb) / min(without):.3f}x"
    )
    ca, cb_ = statistics.median(cpu[False]), statistics.median(cpu[True])
    print(
        f"CPU time per step (process, all threads): without {ca * 1e3:.3f} ms, with {cb_ * 1e3:.3f} ms "
        f"(medians; mins {min(cpu[False]) * 1e3:.3f} / {min(cpu[True]) * 1e3:.3f}): {cb_ / ca:.3f}x"
    )
    h = statistics.median(hook_ns)
    print()
    print(
        f"the callback's batch hooks alone: {h / 1e3:.2f} µs per batch (median of {args.rounds} x "
        f"{args.hook_calls:,}; min {min(hook_ns) / 1e3:.2f}), {100 * h / 1e9 / a:.2f} % of the step above"
    )


if __name__ == "__main__":
    main()

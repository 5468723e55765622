"""``livewidget demo``: the embedded server, realistic traffic, and JupyterLab on the example notebooks.

What runs (every process started here is stopped on Ctrl-C or SIGTERM, by its pid; the embedded server
daemon keeps running, as it does for notebooks):

- the embedded server (started, or reused when it already runs; ``--port`` picks its port when it has
  to be started), or the server of ``LIVEWIDGET_URL`` / ``PUSHER_*`` when set;
- ``training``: a simulated training run, points ``{run, step, loss, val_loss?, accuracy}`` on
  ``demo-train`` (a :func:`livewidget.points` publisher), restarted (a new ``run``, ``step`` going on)
  every ``TRAIN_STEPS`` steps;
- ``jobs``: batches of shards processed by a multiprocessing pool, each shard a
  :func:`livewidget.progress` bar on ``demo-progress`` under the batch's parent job; now and then a
  shard fails;
- ``chat``: a bot in the chat room ``demo`` (channel ``presence-chat-demo``), listed online, that
  answers when it is addressed and otherwise posts a tip now and then (a few minutes apart, never the
  same twice in a row, and only a few before someone talks again);
- JupyterLab (``python -m jupyter lab``) on 127.0.0.1 with a token, on a working copy of the example
  notebooks (``LIVEWIDGET_DEMO_DIR``, default ``~/livewidget-demo``; files already there are kept),
  with its news toast and update check off by default (:func:`lab_env`).

Each traffic process is ``python -m livewidget._demo KIND``; it exits when its parent goes away.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["TRAFFIC", "demo_folder", "notebooks_source", "run_demo"]

TRAIN_CHANNEL = "demo-train"
PROGRESS_CHANNEL = "demo-progress"
CHAT_ROOM = "demo"
TRAFFIC = ("training", "jobs", "chat")
TRAIN_STEPS = 1200  # steps per simulated run (a minute)
STEP_EVERY = 0.05  # s between training steps
LAB_START_TIMEOUT = 90.0  # s for JupyterLab's /api/status to answer
STOP_TIMEOUT = 10.0  # s each child gets to stop after SIGTERM before SIGKILL
FIRST_NOTEBOOK = "00_live_demo.ipynb"


# ---------------------------------------------------------------------------------------------- helpers


def notebooks_source() -> Path:
    """The example notebooks: ``notebooks/`` of a source checkout, else the copy inside the package."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "notebooks", here / "notebooks"):
        if candidate.is_dir() and any(candidate.glob("*.ipynb")):
            return candidate
    raise FileNotFoundError("example notebooks missing (neither notebooks/ nor livewidget/notebooks/)")


def demo_folder() -> Path:
    """Where JupyterLab runs: ``$LIVEWIDGET_DEMO_DIR``, else ``~/livewidget-demo``."""
    return Path(os.environ.get("LIVEWIDGET_DEMO_DIR") or Path.home() / "livewidget-demo")


def _copy_notebooks(target: Path) -> list[str]:
    """Copy the notebooks missing from ``target`` (edits made there are kept); return their names."""
    target.mkdir(parents=True, exist_ok=True)
    names = []
    for nb in sorted(notebooks_source().glob("*.ipynb")):
        names.append(nb.name)
        if not (target / nb.name).exists():
            shutil.copyfile(nb, target / nb.name)
    return names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc; empty elsewhere)."""
    parents: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = (entry / "stat").read_text()
                    parents[int(entry.name)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found.append(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _stop(procs: list[subprocess.Popen[bytes]], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM each process, wait (bounded), SIGKILL what is left, then any leftover descendant."""
    pids = [p.pid for p in procs if p.poll() is None]
    family = {d for pid in pids for d in _descendants(pid)}
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
    leftovers = [pid for pid in family if _alive(pid)]
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in leftovers) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in leftovers:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def lab_command(port: int, root: Path, *, token: str, extra: Sequence[str] = ()) -> list[str]:
    """``jupyter lab`` on 127.0.0.1:``port`` serving ``root``, as the demo and the browser tests start it.

    ``window.jupyterapp`` is exposed for scripted checks; the news feed is off (its toast covers widgets).
    """
    cmd = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None", "--LabApp.expose_app_in_browser=True",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        *extra,
    ]  # fmt: skip
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    return cmd


# JupyterLab defaults for the demo: no "get notified about official Jupyter news?" toast (it covers the
# corner of the notebook, and --LabApp.news_url=None does not stop it asking) and no update check.
LAB_DEFAULTS = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
}


def lab_env(env: dict[str, str], folder: Path) -> dict[str, str]:
    """``env`` for the demo's JupyterLab: :data:`LAB_DEFAULTS` as default settings, the user's own kept.

    They go in ``<folder>/.jupyter-config/labconfig/default_setting_overrides.json``, a config folder put
    first on ``JUPYTER_CONFIG_PATH``: jupyterlab_server layers those files under the user's settings, so
    this changes defaults for this JupyterLab only, and a user who chose otherwise keeps their choice.
    """
    config = folder / ".jupyter-config"
    (config / "labconfig").mkdir(parents=True, exist_ok=True)
    (config / "labconfig" / "default_setting_overrides.json").write_text(json.dumps(LAB_DEFAULTS, indent=2))
    out = dict(env)
    paths = [str(config), env.get("JUPYTER_CONFIG_PATH", "")]
    out["JUPYTER_CONFIG_PATH"] = os.pathsep.join(p for p in paths if p)
    return out


def server_note(settings: Any, port: int | None, running_before: bool) -> str | None:
    """What to say about the embedded server ``settings`` names: reused (only if it ran before the demo
    asked for it), or None. ``port`` is ``--port`` (0: any)."""
    if settings.source != "embedded" or not running_before:
        return None
    note = f"livewidget demo: reusing the embedded server already running on port {settings.port}"
    if port and settings.port != port:
        note += f" (stop it with `livewidget server stop` to use port {port})"
    return note


def _lab_ready(url: str, token: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------- the command


def run_demo(no_browser: bool = False, port: int | None = None, lab_port: int | None = None) -> int:
    """Run the demo until Ctrl-C (or SIGTERM); returns the exit status."""
    import importlib.util

    from ._config import resolve

    if importlib.util.find_spec("jupyterlab") is None:
        print("livewidget demo needs JupyterLab: pip install 'livewidget[demo]'", file=sys.stderr)
        return 1
    from ._embedded import read_info

    if port is not None:
        os.environ["LIVEWIDGET_EMBEDDED_PORT"] = str(port)
    running_before = read_info() is not None  # to tell "reusing" from "just started" (--port 0 too)
    settings = resolve()
    note = server_note(settings, port, running_before)
    if note:
        print(note, flush=True)
    print(f"livewidget demo: Pusher server {settings.describe()}", flush=True)

    folder = demo_folder()
    names = _copy_notebooks(folder)
    token = secrets.token_hex(16)
    lab_port = lab_port or _free_port()
    base = f"http://127.0.0.1:{lab_port}"
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    lab_environment = lab_env(env, folder)
    procs: list[subprocess.Popen[bytes]] = []
    stopping = threading.Event()

    def on_term(signum: int, frame: Any) -> None:
        stopping.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C stops the demo even when started from a shell that ignored SIGINT for it (`cmd &`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    log_path = folder / ".jupyterlab.log"
    log = open(log_path, "ab")  # noqa: SIM115 (closed in finally)
    traffic_log = open(folder / ".traffic.log", "ab")  # noqa: SIM115 (closed in finally)
    try:
        for kind in TRAFFIC:
            # Own session: the terminal's Ctrl-C reaches only this process, which stops them in order.
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "livewidget._demo", kind],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=traffic_log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        lab_cmd = lab_command(lab_port, folder, token=token)
        lab = subprocess.Popen(
            lab_cmd, env=lab_environment, cwd=folder, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        procs.append(lab)
        deadline = time.monotonic() + LAB_START_TIMEOUT
        while not _lab_ready(base, token):
            if lab.poll() is not None or time.monotonic() > deadline:
                print(f"livewidget demo: JupyterLab did not start; see {log_path}", file=sys.stderr)
                return 1
            time.sleep(0.25)
        first = FIRST_NOTEBOOK if FIRST_NOTEBOOK in names else (names[0] if names else "")
        url = f"{base}/lab/tree/{first}?token={token}"
        print(f"livewidget demo: notebooks in {folder}", flush=True)
        print(f"livewidget demo: open {url}", flush=True)
        print("livewidget demo: traffic on demo-train, demo-progress and chat room 'demo'", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        if not no_browser:
            import webbrowser

            with contextlib.suppress(Exception):
                webbrowser.open(url)
        while not stopping.is_set():
            for p in procs:
                if p.poll() is not None:
                    what = "JupyterLab" if p is lab else f"the {TRAFFIC[procs.index(p)]} traffic process"
                    print(f"livewidget demo: {what} exited ({p.returncode}); stopping", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C must not cut the cleanup short (it is bounded: STOP_TIMEOUT + 5 s at most).
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("livewidget demo: stopping", flush=True)
        try:
            _stop(procs)
        finally:
            log.close()
            traffic_log.close()
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
        print(
            "livewidget demo: stopped (the embedded server runs on: `livewidget server stop`)",
            flush=True,
        )
    return 0


# ---------------------------------------------------------------------------------------------- traffic


def _exit_with_parent() -> None:
    """Exit (as on SIGTERM) when the demo that started this process is gone."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="livewidget-demo-watch").start()


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def training() -> None:
    """Simulated training runs: loss and accuracy every step, validation loss every 20 steps."""
    from ._points import points

    rng = random.Random()
    run = 0
    step = 0  # global: a new run (a warm restart) continues the x axis instead of drawing over it
    with points(TRAIN_CHANNEL, "point", interval=0.2) as pts:
        while True:
            run += 1
            lr = rng.uniform(0.6, 1.4)
            floor = rng.uniform(0.05, 0.2)
            for i in range(TRAIN_STEPS):
                step += 1
                progress = i / TRAIN_STEPS
                loss = floor + 2.3 * math.exp(-4 * lr * progress) + rng.gauss(0, 0.04)
                point: dict[str, Any] = {"run": run, "step": step, "loss": round(max(loss, 0.01), 4)}
                point["accuracy"] = round(min(0.99, 1 - loss / 2.5 + rng.gauss(0, 0.01)), 4)
                if i % 20 == 0:
                    point["val_loss"] = round(loss * 1.08 + 0.03 + rng.gauss(0, 0.02), 4)
                pts.add(point)
                time.sleep(STEP_EVERY)


def _shard(args: tuple[str, int, bool]) -> str:
    parent, index, fail = args
    from ._progress import progress

    total = random.randint(40, 90)
    quiet = open(os.devnull, "w")  # noqa: SIM115 (the board shows it; no text bar)
    with (
        quiet,
        progress(
            total=total,
            desc=f"shard {index}",
            channel=PROGRESS_CHANNEL,
            parent=parent,
            mininterval=0.2,
            file=quiet,
        ) as bar,
    ):
        for i in range(total):
            time.sleep(random.uniform(0.02, 0.08))
            if fail and i == total // 2:
                raise RuntimeError(f"shard {index}: corrupt record at row {i * 1000 + 17}")
            bar.update(1)
    return f"shard {index} done"


def _worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def jobs() -> None:
    """Batches of 8 shards on a pool of 4 processes; about one batch in two has a failing shard."""
    import multiprocessing

    batch = 0
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ctx.Pool(4, initializer=_worker_init) as pool:
        while True:
            batch += 1
            parent = f"batch {batch}"
            failing = random.randrange(8) if random.random() < 0.5 else -1
            results = [pool.apply_async(_shard, ((parent, i, i == failing),)) for i in range(8)]
            for result in results:
                with contextlib.suppress(Exception):
                    result.get(timeout=120)
            time.sleep(3.0)


BOT = {"id": "demo-bot", "name": "Demo bot", "color": "#7c3aed"}
BOT_NEWS_EVERY = (90.0, 240.0)  # s between the bot's own posts (uniformly random)
BOT_QUIET_AFTER = 3  # own posts in a row with nobody talking, after which it waits for someone
BOT_TIPS = (
    "The chart above comes from a separate training process, straight through the Pusher server.",
    "4 pool workers report progress with `livewidget.progress`; now and then a shard fails on purpose.",
    "Tip: `livewidget tail demo-train -n 5` prints the training points from a shell.",
    "Everything here goes through the embedded Pusher-compatible server on 127.0.0.1.",
    "Tip: open this notebook in a second tab: both views update live, and you count once online.",
    "Tip: `chat.df` in a notebook has every message of this room as a DataFrame.",
    'Tip: `livewidget publish demo-train point \'{"step": 1, "loss": 0.5}\'` adds a point by hand.',
)
_GREETINGS = ("hi", "hello", "hey", "bonjour", "hallo", "hola", "good morning", "good evening")


class BotBrain:
    """What the demo bot says, and when: no I/O, so the tests can drive it with their own clock.

    It answers a message addressed to it (its name, a greeting, ``status``, ``help``, a question mark),
    and nothing else; it posts a tip every :data:`BOT_NEWS_EVERY` seconds, cycling through
    :data:`BOT_TIPS` in a shuffled order without repeating the last one, and goes quiet after
    :data:`BOT_QUIET_AFTER` tips in a row until someone talks again.
    """

    def __init__(self, rng: random.Random | None = None, now: float = 0.0) -> None:
        self.rng = rng or random.Random()
        self._tips: list[str] = []
        self._last: str | None = None
        self.unanswered = 0  # own posts since someone else last spoke
        self.next_at = now + self.rng.uniform(*BOT_NEWS_EVERY)

    def _next_tip(self) -> str:
        if not self._tips:
            self._tips = list(BOT_TIPS)
            self.rng.shuffle(self._tips)
            if self._tips[-1] == self._last:  # popped from the end: never the same twice in a row
                self._tips.insert(0, self._tips.pop())
        tip = self._tips.pop()
        self._last = tip
        return tip

    def tip_due(self, now: float) -> str | None:
        """The tip to post at ``now``, or None (not yet, or quiet until someone talks)."""
        if now < self.next_at or self.unanswered >= BOT_QUIET_AFTER:
            return None
        self.next_at = now + self.rng.uniform(*BOT_NEWS_EVERY)
        self.unanswered += 1
        return self._next_tip()

    def reply(self, message: dict[str, Any], now: float) -> str | None:
        """The answer to someone else's ``message``, or None when it is not addressed to the bot."""
        self.unanswered = 0
        self.next_at = max(self.next_at, now + BOT_NEWS_EVERY[0])  # a conversation is not a cue for tips
        text = str(message.get("text", "")).strip()
        low = text.lower()
        name = str(message.get("name") or message.get("user_id") or "there")
        if "status" in low:
            return self.rng.choice(
                (
                    "All demo traffic is running: a training run, 4 pool workers, and me.",
                    "Training, the worker pool and this chat are all live on the embedded server.",
                )
            )
        if "help" in low:
            return "Ask me for `status`, or type anything with my name in it. I post a tip now and then."
        if low.startswith(_GREETINGS):
            return self.rng.choice((f"Hello {name}!", f"Hi {name}, welcome.", f"Hey {name}!")) + (
                " Ask me for `status`."
            )
        if "bot" in low or "?" in text:
            return self.rng.choice(
                (
                    f"{name}, I only know `status` and `help`, but the widgets here answer the rest.",
                    f"Good question, {name}. Try `status`, or look at the chart: it is live.",
                )
            )
        return None


def chat() -> None:
    """The bot in room ``demo`` (see :class:`BotBrain`), listed online like a person."""
    from .widgets import Chat

    bot = Chat(CHAT_ROOM, user=dict(BOT), as_member=True)
    brain = BotBrain(now=time.monotonic())
    lock = threading.Lock()

    def answer(message: dict[str, Any]) -> None:
        with lock:
            text = brain.reply(message, time.monotonic())
        if text:
            bot.send(text)

    bot.on_message(answer)
    try:
        bot.send("Hi! I am the demo bot. Say hello, or ask me for the `status`.")
        while True:
            with lock:
                tip = brain.tip_due(time.monotonic())
            if tip:
                bot.send(tip)
            time.sleep(1.0)
    finally:
        bot.close()


def _traffic_main(kind: str) -> int:
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGINT, _raise_exit)
    _exit_with_parent()
    target = {"training": training, "jobs": jobs, "chat": chat}[kind]
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        target()
    return 0


if __name__ == "__main__":  # pragma: no cover - run as `python -m livewidget._demo KIND`
    if len(sys.argv) != 2 or sys.argv[1] not in TRAFFIC:
        print(f"usage: python -m livewidget._demo {{{','.join(TRAFFIC)}}}", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(_traffic_main(sys.argv[1]))

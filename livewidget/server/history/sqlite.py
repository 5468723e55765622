"""History in SQLite (standard library): one file per app in the data folder, WAL, group commits.

Durability: an event is delivered to subscribers, and the REST publish that carried it answered, only
after the transaction holding it is committed. Everything published during one turn of the event loop
is committed together right after it (group commit): concurrent publishers share one transaction and
no thread hand-off is paid per event (a writer thread was measured: its wake-ups and the GIL cost more
latency than the commit it moves off the loop, on a busy 2-core machine).

What a commit costs is kept to SQLite's minimum:

- ``locking_mode=EXCLUSIVE``: the file belongs to this server anyway (the lock file beside it), so
  SQLite keeps its WAL index in memory and takes no file locks per transaction (about six ``fcntl``
  calls saved per commit, SQLite docs, *WAL without shared memory*).
- ``synchronous=OFF`` while publishing: a commit hands the WAL frames to the operating system and
  returns, so a committed event survives the server process being killed (SIGKILL) or crashing, which
  is what a 2xx promises. An OS crash or power loss may lose the last seconds and, without a sync, can
  damage the file; so checkpoints (WAL into the database) run on the loop, ten times a second (each
  one short) and without a sync while busy, and with a full sync (``synchronous=FULL`` for that
  checkpoint) once the history has been quiet for ``_QUIET`` seconds or at least every ``_SYNC_EVERY``
  seconds; a thread flushes the files just before (``fdatasync``), so the loop's own syncs are short.
  A file that fails SQLite's check at start-up is set aside (``.damaged-<time>``) and the app's
  history starts again with new stream ids, so clients are told their positions are gone
  (``stream_reset``), never handed a made-up past.

Events are appended to one table in arrival order (see ``_SCHEMA``); what the history drops is deleted
later, a window of the oldest rows at a time (``_compact``).

A file is used by one server at a time (an exclusive lock beside it): two servers giving out serials
for the same app would contradict each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...exceptions import ServerError
from ...protocol import Apps, Hub
from ...protocol.history import Entry, Forget, Store
from .base import DEFAULT_MAX_MEMORY, HistoryDriver, Runner

__all__ = ["SQLiteHistory"]

log = logging.getLogger("livewidget.server.history")

_CHECKPOINT_EVERY = 0.1  # seconds between checkpoints while events are being written: each one short
_QUIET = 2.0  # seconds without a commit after which a synced checkpoint makes the file durable
_SYNC_EVERY = 30.0  # seconds: a synced checkpoint at least this often, however busy
_COMPACT_MIN = 200  # dead rows before a compaction pass is worth it
_COMPACT_WINDOW = 500  # rowids looked at per pass, up to 4x with a backlog: passes stay short (they stall the
# loop) and come often

# Events are appended to ``log`` (a rowid table with no index): a commit writes the last page or two
# of one B-tree, whichever channels its events are on, instead of a leaf per channel (with 1,000 busy
# channels that was most of a commit's WAL writes and of each checkpoint). A row belongs to a stream by
# ``sid``; what the history has dropped is recorded in ``streams`` (``first``; a forgotten stream's row
# goes, and its sid with it) and the dead rows are deleted a window at a time (``_compact``).
_SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    sid INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: a dead stream's rows stay dead
    channel TEXT NOT NULL UNIQUE,
    stream_id TEXT NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS log (
    sid INTEGER NOT NULL,
    serial INTEGER NOT NULL,
    time REAL NOT NULL,
    event TEXT NOT NULL,
    data TEXT NOT NULL,
    user_id TEXT
);
"""

# Version 1 (livewidget before 2026-12-05): one row per event keyed by (channel, serial).
_MIGRATE_1 = (
    """
ALTER TABLE streams RENAME TO streams_1;
ALTER TABLE events RENAME TO events_1;
"""
    + _SCHEMA
    + """
INSERT INTO streams (channel, stream_id, first, last)
    SELECT channel, stream_id, coalesce((SELECT min(serial) FROM events_1 e WHERE e.channel = s.channel),
                                        last + 1), last FROM streams_1 s;
INSERT INTO log SELECT s.sid, e.serial, e.time, e.event, e.data, e.user_id
    FROM events_1 e JOIN streams s ON s.channel = e.channel ORDER BY e.channel, e.serial;
DROP TABLE events_1;
DROP TABLE streams_1;
"""
)


class _App:
    """One app's file, its lock and its connection (all on the event loop)."""

    __slots__ = ("db", "lock_fd", "path", "sync_fds")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sync_fds: list[int] = []
        self.lock_fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.lock_fd)
            raise ServerError(
                f"the history file {path} is in use by another livewidget server; give this one "
                "another folder (--data DIR) or keep its history in memory (--no-data)"
            ) from None
        try:
            # Private channels' events are in it: readable by this user only. SQLite gives the -wal and
            # -shm files the database file's permissions, so the file is made first, 0600.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            try:
                self.db = self._open(path)
            except sqlite3.DatabaseError as exc:
                # Damaged (a power loss while unsynced, or not a SQLite file): kept aside for whoever
                # wants to look, and history starts again (module docstring).
                aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
                log.warning("history file %s is damaged (%s); moved to %s, starting afresh", path, exc, aside)
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(str(path) + suffix, str(aside) + suffix)
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
                self.db = self._open(path)
        except ServerError:
            self.close()
            raise
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise ServerError(f"cannot open the history file {path}: {exc}") from exc
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)
        # For the pre-flush (SQLiteHistory._preflush): the database and its WAL, open as long as the
        # connection is (closing any descriptor of a file drops the process's POSIX locks on it, SQLite's
        # included, so these are closed only after it).
        for name in (str(path), str(path) + "-wal"):
            with contextlib.suppress(OSError):
                self.sync_fds.append(os.open(name, os.O_RDONLY))

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")  # see the module docstring; checkpoints sync
            db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints: SQLiteHistory._checkpoint
            ok = db.execute("PRAGMA quick_check").fetchone()
            if not ok or ok[0] != "ok":
                found = str(ok[0]).replace("\n", "; ")[:200] if ok else "no answer"  # one log line
                raise sqlite3.DatabaseError(f"quick_check: {found}")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if version == 0 and "events" in tables:
                db.executescript(f"BEGIN; {_MIGRATE_1} PRAGMA user_version = {_SCHEMA_VERSION}; COMMIT;")
            elif version > _SCHEMA_VERSION:
                raise ServerError(
                    f"the history file {path} was written by a newer livewidget (format {version}); "
                    "upgrade livewidget, or give this server another folder (--data DIR)"
                )
            else:
                db.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version = {_SCHEMA_VERSION}; COMMIT;")
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.db.close()
        for fd in self.sync_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.sync_fds = []
        with contextlib.suppress(OSError):
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
            os.close(self.lock_fd)


class _Stream:
    """What the writer knows of a channel's stream in the file: its ``sid`` (the rows' key) and the
    serials of its live rows, ``first`` to ``last`` (for the count of dead rows)."""

    __slots__ = ("first", "last", "sid", "stream_id")

    def __init__(self, stream_id: str, sid: int, first: int, last: int) -> None:
        self.stream_id = stream_id
        self.sid = sid
        self.first = first
        self.last = last

    @property
    def live(self) -> int:
        """Rows of this stream not dropped yet (dead once the stream is)."""
        return max(self.last - self.first + 1, 0)


def _read_streams(db: sqlite3.Connection, scan: bool = False) -> dict[str, _Stream]:
    """The file's streams by channel.

    A row's ``last`` is written when the stream starts and by a Forget, not by each append (that is the
    point of the log): with ``scan`` it is brought up to the stream's newest row in the log, in one pass
    over the log (after a rollback, never on the publishing path; ``_load`` does it as it reads)."""
    streams = {
        ch: _Stream(stream_id, sid, first, last)
        for sid, ch, stream_id, first, last in db.execute(
            "SELECT sid, channel, stream_id, first, last FROM streams"
        )
    }
    if scan:
        by_sid = {stream.sid: stream for stream in streams.values()}
        for sid, newest in db.execute("SELECT sid, max(serial) FROM log GROUP BY sid"):
            stream = by_sid.get(sid)
            if stream is not None and newest > stream.last:
                stream.last = newest
    return streams


class SQLiteHistory(HistoryDriver):
    """History kept in ``folder/history-<app_id>.sqlite3``, loaded back at start-up."""

    deferred = True

    def __init__(self, folder: str | os.PathLike[str], max_memory: int = DEFAULT_MAX_MEMORY) -> None:
        super().__init__(max_memory)
        self.folder = Path(folder)
        self._apps: dict[str, _App] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._run: Runner | None = None
        self._queue: list[tuple[Hub | None, Store | Forget, int]] = []
        self._flush_scheduled = False
        self._checkpoint_timer: asyncio.TimerHandle | None = None
        self._dirty = False  # committed since the last checkpoint
        self._last_commit = 0.0  # time.monotonic() of the last commit
        self._last_sync = 0.0  # ... of the last synced checkpoint
        self._preflush: threading.Thread | None = None  # flushing the files before a synced checkpoint
        self._preflushed = False  # ... done: the next checkpoint is the synced one
        self._submitted = 0  # the last ticket given out
        self._stored = 0  # the last ticket committed (or failed)
        self._waiters: deque[tuple[int, Callable[[str | None], None]]] = deque()
        self._error: str | None = None  # the last write error, until a write succeeds
        self._failing = 0  # writes failed in a row (logged at the first)
        # app id -> channel -> the stream its rows are appended to
        self._streams: dict[str, dict[str, _Stream]] = {}
        self._compact_from: dict[str, int] = {}  # app id -> the rowid the next compaction starts at
        self._dead = 0  # rows the history dropped that are still in the files (what _compact deletes)
        self.commits = 0
        self.compacted = 0
        self.checkpoints = 0
        self.synced_checkpoints = 0
        self.events_written = 0
        self.failures = 0
        self.maintenance_failures = 0  # checkpoints and compactions that failed (retried next round)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, apps: Apps, run: Runner) -> None:
        self._loop = asyncio.get_running_loop()
        self._run = run
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ServerError(f"cannot create the data folder {self.folder}: {exc}") from exc
        now = time.time()
        try:
            for hub in apps:
                app_id = hub.config.app_id
                app = self._apps[app_id] = _App(self.folder / f"history-{app_id}.sqlite3")
                if hub.history is not None:
                    self._load(app_id, app, hub, now)
        except BaseException:
            for app in self._apps.values():
                app.close()
            self._apps.clear()
            raise
        self._last_sync = time.monotonic()
        self._checkpoint_timer = self._loop.call_later(_CHECKPOINT_EVERY, self._checkpoint)

    def _load(self, app_id: str, app: _App, hub: Hub, now: float) -> None:
        history = hub.history
        assert history is not None
        streams = self._streams[app_id] = _read_streams(app.db)
        by_sid = {stream.sid: stream for stream in streams.values()}
        rows: dict[int, list[Entry]] = {sid: [] for sid in by_sid}
        for sid, serial, t, event, data, user_id in app.db.execute(
            "SELECT sid, serial, time, event, data, user_id FROM log ORDER BY rowid"
        ):
            out = rows.get(sid)
            # Dead rows (dropped by the history, not compacted yet) are skipped; appended in order, so a
            # stream's rows come oldest first (a repeat, which nothing writes, would be skipped too).
            if out is not None and serial >= by_sid[sid].first and (not out or serial > out[-1].serial):
                out.append(Entry(serial, t, event, data, user_id))
            else:
                self._dead += 1
        for ch, stream in streams.items():
            entries = rows[stream.sid]
            stream.last = max(stream.last, entries[-1].serial if entries else 0)
            history.restore(ch, stream.stream_id, stream.last, entries, now)
        log.info("history of app %s: %d streams loaded from %s", hub.config.app_id, len(streams), app.path)

    async def stop(self) -> None:
        if self._queue:
            self._flush()  # what the last turn published
        if self._checkpoint_timer is not None:
            self._checkpoint_timer.cancel()
            self._checkpoint_timer = None
        if self._preflush is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._preflush.join)
        self._compact(everything=True)  # a clean stop leaves no dead rows
        for app in self._apps.values():
            with contextlib.suppress(sqlite3.Error):
                app.db.execute("PRAGMA synchronous=FULL")
                app.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            app.close()
        self._apps.clear()

    # ------------------------------------------------------------------ the loop's side

    def store(self, hub: Hub, action: Store) -> int:
        self._submitted += 1
        self._enqueue((hub, action, self._submitted))
        return self._submitted

    def forget(self, action: Forget) -> None:
        self._enqueue((None, action, 0))

    def _enqueue(self, item: tuple[Hub | None, Store | Forget, int]) -> None:
        self._queue.append(item)
        if not self._flush_scheduled:
            # After the callbacks of this turn of the loop (every request read in it): one commit.
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._queue = self._queue, []
        if not batch:
            return
        error = None
        try:
            self._write(batch)
            self.commits += 1
            self._dirty = True
            self._last_commit = time.monotonic()
        except Exception as exc:
            self.failures += 1
            self._failing += 1
            # Once per run of failures (a full disk fails every commit until it has room again): each
            # publisher meanwhile gets its 507, and /stats counts them (write_failures).
            if self._failing == 1:
                log.exception("writing history failed (publishers get 507 until a write succeeds)")
            error = f"the event was delivered but not stored in history: {exc}"
        else:
            if self._failing:
                log.warning("history writes succeed again after %d failed", self._failing)
            self._failing = 0
        self._done(batch, error)

    def when_stored(self, ticket: int, callback: Callable[[str | None], None]) -> None:
        if ticket <= self._stored:
            callback(self._error)
        else:
            self._waiters.append((ticket, callback))

    def _done(self, batch: list[tuple[Hub | None, Store | Forget, int]], error: str | None) -> None:
        """On the loop: a batch is committed (or failed): deliver its events, answer who waited."""
        now = time.time()
        run = self._run
        assert run is not None
        self._error = error
        for hub, action, ticket in batch:
            if hub is not None and type(action) is Store:
                # Delivered even if storing failed: live delivery must not depend on the disk; the
                # publisher learns it (507) and the history has a gap, not a lie (nothing replays it).
                try:
                    run(hub, hub.deliver(action, now))
                except Exception:  # pragma: no cover - a bug must not stop the history
                    log.exception("delivering stored events failed")
                self._stored = max(self._stored, ticket)
        waiters = self._waiters
        while waiters and waiters[0][0] <= self._stored:
            _, callback = waiters.popleft()
            try:
                callback(error)
            except Exception:  # pragma: no cover
                log.exception("answering after a commit failed")

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint(self) -> None:
        """On the loop, every ``_CHECKPOINT_EVERY``: compact, copy the WAL into the database, and now and
        then sync (module docstring)."""
        self._checkpoint_timer = None
        if not self._apps or self._loop is None:
            return
        if self._dirty:
            self._compact()
        now = time.monotonic()
        due = self._last_commit > self._last_sync and (
            now - self._last_commit >= _QUIET or now - self._last_sync >= _SYNC_EVERY
        )
        synced = due and self._preflushed
        if due and not self._preflushed and self._preflush is None:
            # The files' dirty pages go to the disk in a thread first, so the synced checkpoint's own
            # syncs, on the loop, wait only for what was written since (about one checkpoint's worth)
            # instead of everything since the last sync (a stall of tens of ms under load).
            fds = [fd for app in self._apps.values() for fd in app.sync_fds]
            self._preflush = threading.Thread(
                target=self._preflush_files, args=(fds,), name="livewidget-history-sync", daemon=True
            )
            self._preflush.start()
        if self._dirty or synced:
            # PASSIVE: it copies what it can and returns (nothing else uses the file: no waiting).
            for app in self._apps.values():
                try:
                    if synced:
                        app.db.execute("PRAGMA synchronous=FULL")
                    app.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:  # the next round tries again
                    self._maintenance_failed("checkpoint")
                finally:
                    if synced:
                        with contextlib.suppress(sqlite3.Error):
                            app.db.execute("PRAGMA synchronous=OFF")
            self._dirty = False
            self.checkpoints += 1
            if synced:
                self._last_sync = now
                self._preflushed = False
                self.synced_checkpoints += 1
        self._checkpoint_timer = self._loop.call_later(_CHECKPOINT_EVERY, self._checkpoint)

    def _preflush_files(self, fds: list[int]) -> None:
        """The pre-flush thread: ``fdatasync`` each file (the GIL is let go meanwhile), then tell the loop."""
        for fd in fds:
            with contextlib.suppress(OSError):  # closed by stop() meanwhile: nothing left to do
                os.fdatasync(fd)
        loop = self._loop

        def done() -> None:
            self._preflush = None
            self._preflushed = True

        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(done)

    def _write(self, batch: list[tuple[Hub | None, Store | Forget, int]]) -> None:
        """One transaction per app file touched, in queue order."""
        touched: dict[str, _App] = {}
        dead = self._dead
        try:
            self._write_all(batch, touched)
            # Inside the try: a COMMIT can fail too (SQLITE_FULL while writing the WAL), and a
            # transaction left open would make every later BEGIN fail.
            for app in touched.values():
                app.db.execute("COMMIT")
        except BaseException:
            self._dead = dead  # the rows the rolled-back transaction dropped are still live
            for app_id, app in touched.items():
                # SQLite may have rolled back by itself already; then this fails, harmlessly
                with contextlib.suppress(sqlite3.Error):
                    app.db.execute("ROLLBACK")
                # Streams started or trimmed in the rolled-back transaction: as the file has them.
                with contextlib.suppress(sqlite3.Error):
                    self._streams[app_id] = _read_streams(app.db, scan=True)
            raise

    def _write_all(
        self, batch: list[tuple[Hub | None, Store | Forget, int]], touched: dict[str, _App]
    ) -> None:
        """Consecutive Store actions of an app become one INSERT of all their rows (the usual case: a
        batch of many small publishes); a Forget is applied in its place in the order."""
        rows: dict[str, list[tuple[Any, ...]]] = {}

        def flush(app_id: str) -> None:
            events = rows.pop(app_id, None)
            if events:
                self._apps[app_id].db.executemany("INSERT INTO log VALUES (?, ?, ?, ?, ?, ?)", events)
                self.events_written += len(events)

        for _, action, _ in batch:
            app_id = action.app_id
            app = self._apps.get(app_id)
            if app is None:
                continue
            if app_id not in touched:
                touched[app_id] = app
                app.db.execute("BEGIN")
            streams = self._streams.setdefault(app_id, {})
            if type(action) is Store:
                out = rows.setdefault(app_id, [])
                for ch, stream_id, e in action.entries:
                    known = streams.get(ch)
                    if known is None or known.stream_id != stream_id:
                        # A new stream (its first event, or the channel's history was lost): its row
                        # replaces the channel's old one, whose rows are then dead.
                        if known is not None:
                            self._dead += known.live
                        sid = app.db.execute(
                            "INSERT OR REPLACE INTO streams (channel, stream_id, first, last) "
                            "VALUES (?, ?, ?, ?)",
                            (ch, stream_id, e.serial, e.serial - 1),
                        ).lastrowid
                        assert sid is not None
                        known = streams[ch] = _Stream(stream_id, sid, e.serial, e.serial - 1)
                    known.last = e.serial
                    out.append((known.sid, e.serial, e.time, e.event, e.data, e.user_id))
                continue
            assert isinstance(action, Forget)
            flush(app_id)
            db = app.db
            whole = [ch for ch, upto in action.upto.items() if upto < 0]
            if whole:
                db.executemany("DELETE FROM streams WHERE channel = ?", [(ch,) for ch in whole])
                for ch in whole:
                    gone = streams.pop(ch, None)
                    if gone is not None:
                        self._dead += gone.live
            upto = [(n + 1, n, ch) for ch, n in action.upto.items() if n >= 0]
            for _, n, ch in upto:
                known = streams.get(ch)
                if known is not None and n >= known.first:
                    self._dead += min(n, known.last) - known.first + 1
                    known.first = n + 1
            db.executemany(
                "UPDATE streams SET first = max(first, ?), last = max(last, ?) WHERE channel = ?", upto
            )
        for app_id in list(rows):
            flush(app_id)

    def _compact(self, everything: bool = False) -> None:
        """Delete dead rows (dropped from the history) in a window of the oldest rowids, on the loop,
        once there are enough of them to be worth a pass: a window of about twice their number, so the
        file stays near the history's size however long the server runs; one statement per app."""
        if not everything and self._dead < _COMPACT_MIN:
            return
        window = min(2 * self._dead, max(_COMPACT_WINDOW, self._dead // 4), 4 * _COMPACT_WINDOW)
        if everything:
            window = 1 << 62
        for app_id, app in self._apps.items():
            start = 0 if everything else self._compact_from.get(app_id, 0)
            try:
                # Two lookups, each one B-tree descent (min and max in one SELECT would scan the range).
                first = app.db.execute(
                    "SELECT rowid FROM log WHERE rowid >= ? ORDER BY rowid LIMIT 1", (start,)
                ).fetchone()
                if first is None:
                    self._compact_from[app_id] = 0  # past the end: the next round starts over
                    continue
                lo = first[0]
                end = app.db.execute("SELECT max(rowid) FROM log").fetchone()[0]
                hi = lo + window
                cur = app.db.execute(
                    "DELETE FROM log WHERE rowid >= ? AND rowid < ? AND NOT EXISTS (SELECT 1 FROM streams s "
                    "WHERE s.sid = log.sid AND log.serial >= s.first)",
                    (lo, hi),
                )
                self.compacted += max(cur.rowcount, 0)
                self._dead = max(self._dead - max(cur.rowcount, 0), 0)
                self._compact_from[app_id] = hi if hi <= end else 0
            except sqlite3.Error:  # the next round tries again
                self._maintenance_failed("compaction")

    def _maintenance_failed(self, what: str) -> None:
        """Counted in ``/stats``; logged with its cause the first time (it runs ten times a second)."""
        self.maintenance_failures += 1
        if self.maintenance_failures == 1:
            log.warning("history %s failed (retried; counted in /stats)", what, exc_info=True)

    def stats(self) -> dict[str, Any]:
        return {
            "driver": "sqlite",
            "folder": str(self.folder),
            "commits": self.commits,
            "compacted": self.compacted,
            "dead_rows": self._dead,
            "checkpoints": self.checkpoints,
            "synced_checkpoints": self.synced_checkpoints,
            "events_written": self.events_written,
            "write_failures": self.failures,
            "maintenance_failures": self.maintenance_failures,
            **self.budget.stats(),
        }

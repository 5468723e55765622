"""Several server processes share each app through Redis (``livewidget serve --redis redis://...``).

How it holds together (every change is one atomic Lua script, see :mod:`._lua`):

- **Deliveries** (REST events, ``send_to_user``, client events, ``terminate_connections``) are
  published on the app's pub/sub channel and delivered by *every* process, this one included, only
  when they come back. One Redis channel per app gives one order for all processes: exactly once and
  in order per channel. A REST call answers after Redis has accepted the event, so an event that a
  caller saw accepted is ordered before anything it triggers next.
- **Shared state**: each process writes its share (subscribers per channel, presence members, signed-in
  users) into its own hash and the script folds the difference into cluster-wide sums. Transitions of a
  sum (a user's first connection in the cluster, its last, a channel's first subscriber, its last) are
  announced once, on the bus, from inside the same script: ``member_added``/``member_removed``,
  watchlist ``online``/``offline``, webhooks ``channel_occupied``/``channel_vacated``. REST reads the
  sums, so ``channels``, ``channel`` and ``users`` answer for the whole cluster.
- **Dead processes**: each process heartbeats a deadline; any process reaps one that missed it (once:
  reaping deletes what it reads), which removes its members and announces ``member_removed``.
- **Outages**: bus messages carry a sequence number; a gap (lost messages) or a reset (Redis restarted)
  is counted and logged, and the process re-registers its share (resync) and re-reads the shared state
  (reconcile), telling its clients what changed. Publishing while Redis is unreachable fails loudly:
  REST answers 503 and a client event gets ``pusher:error``; every such event is counted.

Counters are in :meth:`RedisAdapter.stats` (``GET /stats``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from ...exceptions import ConfigurationError, RestError, ServerError
from ...protocol import Action, Apps, Connection, Hub, RestResponse, Send, Webhook
from ...protocol.channels import USER_CHANNEL_PREFIX, ChannelKind, channel_kind, is_cache
from ...protocol.cluster import ClusterHub, Publish, SyncChannel, SyncMember, SyncUser, is_cluster_action
from ...protocol.history import Entry, History
from ...protocol.messages import dumps, error_frame
from ...protocol.rest import ChannelSnapshot, ChannelView, RestRequest, answer, route
from . import _lua
from ._pubsub import RespError, Subscriber, parse_url
from .base import Adapter, Runner

__all__ = ["RedisAdapter"]

_ERRORS = (OSError, RedisError, TimeoutError)  # Redis unreachable, or it refused
_FAILED = (OSError, RedisError, TimeoutError, ServerError)  # ... or this adapter is stopping

log = logging.getLogger("livewidget.server.redis")

_MAX_BATCH = 512  # commands per pipeline round trip
_BARRIER_TIMEOUT = 2.0  # seconds a subscribe waits for the bus to catch up before going on
_COMMAND_TIMEOUT = 5.0


def _redact(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


class _App:
    """What the adapter keeps per app."""

    __slots__ = ("args", "bus", "dirty", "hub", "last_seq", "prefix", "skip_upto")

    def __init__(self, hub: ClusterHub, namespace: str, node: str, node_ttl: float) -> None:
        cfg = hub.config
        self.hub = hub
        self.prefix = f"{namespace}:{cfg.app_id}:"
        self.bus = self.prefix + "bus"
        # the ARGV every state script starts with (see _lua._PRELUDE)
        self.args = [
            self.prefix,
            node,
            "1" if cfg.webhook_urls else "0",
            str(int(cfg.webhook_delay * 1000)),
            "1" if cfg.subscription_count else "0",
            str(int(node_ttl * 1000)),
        ]
        self.last_seq: int | None = None
        self.skip_upto = 0  # presence/online messages up to here are already in the replica
        self.dirty = False  # this process's share may be missing from Redis: resync


class _Job:
    __slots__ = ("args", "future", "script")

    def __init__(self, script: str, args: list[str], future: asyncio.Future[Any]) -> None:
        self.script = script
        self.args = args
        self.future = future


class RedisAdapter(Adapter):
    """Share every app with the other processes using the same Redis and ``namespace``.

    Parameters
    ----------
    url:
        ``redis://[[user]:password@]host[:port][/db]`` (or ``rediss://``).
    namespace:
        Prefix of every key and channel; processes with the same namespace and app id form a cluster.
    node_ttl:
        Seconds after its last heartbeat before a silent process is taken for dead and its presence
        members are removed (``member_removed`` is broadcast). Heartbeats go every ``node_ttl / 4``.
    node_id:
        This process's id in Redis (random by default).
    history:
        Channel history shared through Redis (positions, rewind, the history API; see
        :mod:`livewidget.server.history.redis`); ``max_memory`` bounds this process's copy.
    """

    clustered = True
    hub_class = ClusterHub

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "livewidget",
        node_ttl: float = 10.0,
        node_id: str | None = None,
        connect_timeout: float = 2.0,
        reconcile_every: float = 30.0,
        history: bool = True,
        max_memory: int | None = None,
    ) -> None:
        try:
            parse_url(url)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        if node_ttl <= 0:
            raise ConfigurationError("the Redis node TTL must be a positive number of seconds")
        self.url = url
        self.namespace = namespace
        self.node_ttl = float(node_ttl)
        self.node_id = node_id or secrets.token_hex(6)
        self.connect_timeout = connect_timeout
        self.reconcile_every = reconcile_every
        if history:
            from ..history.base import DEFAULT_MAX_MEMORY
            from ..history.redis import RedisHistory

            self.history = RedisHistory(DEFAULT_MAX_MEMORY if max_memory is None else max_memory)
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "published",  # messages accepted by Redis
                "publish_failed",  # events not delivered anywhere: Redis unreachable (REST got 503)
                "client_events_failed",  # client events not delivered (the sender got pusher:error)
                "received",  # bus messages received
                "missed",  # bus messages lost, from gaps in the sequence numbers
                "resets",  # the sequence restarted: Redis restarted, what it had in flight is lost
                "bus_disconnects",
                "sync_failed",  # state changes not written (written again by the next resync)
                "resyncs",
                "reconciles",
                "reaped_nodes",  # dead processes whose members this one removed
                "barrier_timeouts",
            ),
            0,
        )
        self.last_error: str | None = None
        self.bus_connected = False
        self._down_since: float | None = None
        self._run: Runner | None = None
        self._apps: dict[str, _App] = {}
        self._by_bus: dict[bytes, _App] = {}
        self._client: Any = None
        self._shas: dict[str, str] = {}
        self._jobs: deque[_Job] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._subscriber: Subscriber | None = None
        self._pongs: deque[asyncio.Future[None]] = deque()
        self._holds = 0
        self._held: deque[tuple[_App | None, bytes]] = deque()
        self._first_sync: asyncio.Future[None] | None = None
        self._reconcile_pending = False
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self, apps: Apps, run: Runner) -> None:
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError as exc:  # pragma: no cover - the extra is installed in tests
            raise ConfigurationError(
                "the Redis adapter needs redis-py: pip install 'livewidget[redis]'"
            ) from exc
        self._run = run
        for hub in apps:
            if not isinstance(hub, ClusterHub):
                raise ServerError("the Redis adapter needs the apps built with its hub_class (ClusterHub)")
            st = _App(hub, self.namespace, self.node_id, self.node_ttl)
            self._apps[hub.config.app_id] = st
            self._by_bus[st.bus.encode()] = st
        self._client = aioredis.Redis.from_url(
            self.url,
            decode_responses=True,
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=_COMMAND_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            await asyncio.wait_for(self._client.ping(), self.connect_timeout + 1)
            await self._load_scripts()
            await self._load_cache()
            await self._load_history()
        except _ERRORS as exc:
            await self._client.aclose()
            raise ServerError(f"cannot reach Redis at {_redact(self.url)}: {exc}") from exc
        loop = asyncio.get_running_loop()
        self._first_sync = loop.create_future()
        self._tasks.append(loop.create_task(self._writer()))
        self._tasks.append(loop.create_task(self._bus()))
        try:
            await asyncio.wait_for(asyncio.shield(self._first_sync), 10.0)
        except TimeoutError:
            await self.stop()
            raise ServerError(f"could not subscribe to Redis at {_redact(self.url)}") from None
        self._tasks.append(loop.create_task(self._heartbeat()))
        log.info("joined the cluster at %s as node %s", _redact(self.url), self.node_id)

    async def stop(self) -> None:
        """Let this process's last changes reach Redis, leave the cluster at once, disconnect."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=2.0)
        for st in self._apps.values():
            with contextlib.suppress(*_FAILED, asyncio.CancelledError):
                await asyncio.wait_for(self._state_job(st, "REAP", [self.node_id, "1"]), 2.0)
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._subscriber is not None:
            await self._subscriber.close()
        for job in self._jobs:
            if not job.future.done():
                job.future.set_exception(ServerError("the Redis adapter stopped"))
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def stats(self) -> dict[str, Any]:
        return {
            "adapter": "redis",
            "url": _redact(self.url),
            "node": self.node_id,
            "connected": self.bus_connected,
            "down_for_s": round(time.monotonic() - self._down_since, 1) if self._down_since else 0.0,
            "last_error": self.last_error,
            **self.counters,
        }

    # ------------------------------------------------------------------ frames from clients

    async def receive(self, hub: Hub, conn: Connection, text: str | bytes, now: float) -> None:
        if ClusterHub.needs_barrier(text):
            await self._barrier()
            now = time.time()
        await self._carry(hub, hub.receive(conn, text, now), conn)

    def closed(self, hub: Hub, conn: Connection, now: float) -> None:
        actions = hub.close(conn, now)
        if any(is_cluster_action(a) for a in actions):
            self._spawn(self._carry(hub, actions))
        else:
            self._do(hub, actions)

    async def _carry(self, hub: Hub, actions: list[Action], conn: Connection | None = None) -> None:
        """Carry out a hub's answer: cluster actions first (awaited, in order), then local ones."""
        local = [a for a in actions if not is_cluster_action(a)]
        cluster = [a for a in actions if is_cluster_action(a)]
        if not cluster:
            self._do(hub, local)
            return
        st = self._apps[hub.config.app_id]
        # A joining member's subscription_succeeded lists the replica as it is now: hold the bus until
        # it is sent, so that every member change it does not list reaches the member after it.
        hold = any(type(a) is SyncMember and a.present for a in cluster)
        if hold:
            self._hold()
        try:
            facts = [a for a in cluster if type(a) is not Publish]
            if facts:
                await self._sync(st, facts)
            for action in cluster:
                if type(action) is Publish:
                    try:
                        await self._publish(st, action.message)
                    except _FAILED as exc:
                        self.counters["client_events_failed"] += 1
                        self._problem(f"a client event could not be published: {exc}")
                        if conn is not None:
                            msg = "Client event not delivered: the cluster's message bus is unreachable"
                            local.append(Send((conn,), error_frame(msg, None)))
            self._do(hub, local)
        finally:
            if hold:
                self._release()

    def _do(self, hub: Hub, actions: list[Action]) -> None:
        """Carry out local actions; a cache_miss webhook is sent by one process only."""
        if not actions:
            return
        assert self._run is not None
        misses = [a for a in actions if type(a) is Webhook and a.event.get("name") == "cache_miss"]
        if misses:
            actions = [a for a in actions if a not in misses]
            st = self._apps[hub.config.app_id]
            for hook in misses:
                self._spawn(self._cache_miss(st, hook))
        self._run(hub, actions)

    async def _cache_miss(self, st: _App, hook: Webhook) -> None:
        key = st.prefix + "cmiss:" + str(hook.event.get("channel"))
        ttl = max(1, int(st.hub.config.cache_ttl * 1000))
        try:
            first = await self._client.set(key, "1", nx=True, px=ttl)
        except _ERRORS:
            first = True  # better twice than never
        if first:
            assert self._run is not None
            self._run(st.hub, [hook])

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ REST

    async def rest(
        self,
        apps: Apps,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        body: bytes,
        now: float,
        raw_path: str | None = None,
    ) -> RestResponse:
        try:
            request = route(apps, method, path, query, body, now, raw_path)
        except RestError as exc:
            return RestResponse(exc.status, {"error": exc.message})
        st = self._apps[request.hub.config.app_id]
        try:
            view = await self._view(st, request)
        except _ERRORS as exc:
            self._problem(f"REST query failed: {exc}")
            return RestResponse(503, {"error": f"The cluster's shared state (Redis) is unreachable: {exc}"})
        resp = answer(request, view, now)
        messages = _merge([a.message for a in resp.actions if type(a) is Publish])
        for message in messages:
            try:
                await self._publish(st, message)
            except _FAILED as exc:
                lost = len(message[1]) if message[0] == "e" else 1
                self.counters["publish_failed"] += lost
                self._problem(f"{lost} event(s) not delivered: Redis unreachable: {exc}")
                return RestResponse(
                    503,
                    {"error": f"Not delivered: the cluster's bus (Redis) is unreachable ({exc}); retry"},
                )
        local = [a for a in resp.actions if not is_cluster_action(a)]
        self._do(request.hub, local)
        resp.actions = []
        return resp

    async def _view(self, st: _App, request: RestRequest) -> ChannelView:
        kind, names, user_counts = request.wanted()
        p, client = st.prefix, self._client
        if kind == "users":
            return ChannelSnapshot({}, users={names[0]: list(await client.hkeys(p + "p:" + names[0]))})
        if kind == "list":
            subs = {
                k: int(v) for k, v in (await client.hgetall(p + "subs")).items() if k.startswith(names[0])
            }
            counts: dict[str, int] = {}
            if user_counts:
                presence = [n for n in subs if channel_kind(n) is ChannelKind.PRESENCE]
                async with client.pipeline(transaction=False) as pipe:
                    for n in presence:
                        pipe.hlen(p + "p:" + n)
                    counts = dict(zip(presence, await pipe.execute(), strict=True))
            return ChannelSnapshot(subs, counts)
        if kind == "counts":
            async with client.pipeline(transaction=False) as pipe:
                for n in names:
                    pipe.hget(p + "subs", n)
                    pipe.hlen(p + "p:" + n)
                values = await pipe.execute()
            subs = {n: int(values[2 * i] or 0) for i, n in enumerate(names)}
            return ChannelSnapshot(subs, {n: int(values[2 * i + 1]) for i, n in enumerate(names)})
        return ChannelSnapshot({})

    # ------------------------------------------------------------------ writing to Redis, in order

    def _submit(self, script: str, args: list[str]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._jobs.append(_Job(script, args, future))
        self._wake.set()
        return future

    def _state_job(self, st: _App, script: str, extra: list[str]) -> asyncio.Future[Any]:
        return self._submit(script, [*st.args, *extra])

    async def _writer(self) -> None:
        """One task writes everything, in order, pipelining what has queued up meanwhile."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._jobs:
                batch = [self._jobs.popleft() for _ in range(min(_MAX_BATCH, len(self._jobs)))]
                try:
                    results = await self._execute(batch)
                except _ERRORS as exc:
                    self._problem(f"Redis command failed: {exc!r}")
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                for job, result in zip(batch, results, strict=True):
                    if job.future.done():
                        continue
                    if isinstance(result, Exception):
                        job.future.set_exception(result)
                    else:
                        job.future.set_result(result)

    async def _execute(self, batch: list[_Job]) -> list[Any]:
        for attempt in range(2):
            async with self._client.pipeline(transaction=False) as pipe:
                for job in batch:
                    pipe.evalsha(self._shas[job.script], 0, *job.args)
                results: list[Any] = await asyncio.wait_for(
                    pipe.execute(raise_on_error=False), _COMMAND_TIMEOUT + 1
                )
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                await self._load_scripts()  # Redis restarted and forgot them
                continue
            return results
        return results

    async def _load_scripts(self) -> None:
        for name in ("SYNC", "RESYNC", "REAP", "HEARTBEAT", "PUBLISH", "PUBLISH_HISTORY", "SNAPSHOT"):
            self._shas[name] = await self._client.script_load(getattr(_lua, name))

    async def _publish(self, st: _App, message: list[Any]) -> None:
        script = "PUBLISH"
        history = st.hub.history
        if history is not None and message[0] in ("e", "c"):
            # Redis gives the positions (PUBLISH_HISTORY): tell it each channel's limits.
            script = "PUBLISH_HISTORY"
            if message[0] == "e":
                events = []
                for event, data, channels, exclude, *_ in message[1]:
                    limits = [_limits(history, ch) for ch in channels]
                    events.append([event, data, channels, exclude, limits])
                message = ["e", events]
            else:
                message = [*message[:4], _limits(history, message[1])]
        args = [st.prefix, dumps(message)]
        if message[0] == "e":
            ttl = str(max(1, int(st.hub.config.cache_ttl * 1000)))
            for event, data, channels, *_ in message[1]:
                for ch in channels:
                    if is_cache(ch):
                        args += [ch, dumps([event, data]), ttl]
        await self._submit(script, args)
        self.counters["published"] += 1

    async def _sync(self, st: _App, facts: list[Action]) -> None:
        # A channel's first subscriber before its members, its members before its last subscriber:
        # webhooks say channel_occupied, member_added ... member_removed, channel_vacated.
        facts = sorted(facts, key=lambda f: 1 if type(f) is not SyncChannel else (0 if f.count else 2))
        fields: list[list[Any]] = []
        for fact in facts:
            if type(fact) is SyncChannel:
                fields.append(["s|" + fact.channel, fact.count, "", ""])
            elif type(fact) is SyncMember:
                field = f"p|{fact.channel}|{fact.user_id}"
                fields.append([field, 1 if fact.present else 0, dumps(fact.user_info), fact.socket_id])
            elif type(fact) is SyncUser:
                fields.append(["u|" + fact.user_id, 1 if fact.online else 0, "", ""])
        try:
            result = await self._state_job(st, "SYNC", [dumps(fields)])
        except _FAILED as exc:
            self.counters["sync_failed"] += 1
            st.dirty = True
            self._problem(f"state change not written (resync later): {exc}")
            return
        if result == [-1]:  # Redis lost this process's share: register all of it again
            await self._resync(st)
        else:
            self._hooks(st, result)

    def _hooks(self, st: _App, events: list[str]) -> None:
        if events and self._run is not None:
            now_ms = int(time.time() * 1000)
            self._run(st.hub, [Webhook(json.loads(e), now_ms) for e in events])

    async def _resync(self, st: _App) -> None:
        state = st.hub.local_state()
        fields: list[list[Any]] = [["s|" + ch, n, ""] for ch, n in state.channels.items()]
        fields += [[f"p|{ch}|{uid}", 1, dumps(info)] for (ch, uid), info in state.members.items()]
        fields += [["u|" + uid, 1, ""] for uid in state.users]
        try:
            result = await self._state_job(st, "RESYNC", [dumps(fields)])
        except _FAILED as exc:
            st.dirty = True
            self._problem(f"resync failed: {exc}")
            return
        st.dirty = False
        self.counters["resyncs"] += 1
        self._hooks(st, result)

    async def _reconcile(self, st: _App) -> None:
        """Replace the replica with Redis's view, telling local clients what changed meanwhile."""
        self._hold()
        try:
            seq, flat, users = await self._client.evalsha(self._shas["SNAPSHOT"], 0, st.prefix)
            members: dict[str, dict[str, Any]] = {}
            for i in range(0, len(flat), 2):
                pairs = flat[i + 1]
                members[flat[i]] = {pairs[j]: json.loads(pairs[j + 1]) for j in range(0, len(pairs), 2)}
            st.skip_upto = int(seq)
            self.counters["reconciles"] += 1
            self._do(st.hub, st.hub.reconcile(members, users))
        except (OSError, RedisError, TimeoutError, ValueError) as exc:
            self._problem(f"reconcile failed: {exc}")
        finally:
            self._release()

    async def _load_cache(self) -> None:
        """Cache channels' last events, for a process that joins a running cluster."""
        now = time.time()
        for st in self._apps.values():
            async for key in self._client.scan_iter(match=st.prefix + "cache:*", count=500):
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.get(key)
                    pipe.pttl(key)
                    value, pttl = await pipe.execute()
                if value is None or pttl is None or pttl <= 0:
                    continue
                event, data = json.loads(value)
                st.hub.cache[key[len(st.prefix) + 6 :]] = (event, data, now + pttl / 1000)

    async def _load_history(self) -> None:
        """The channels' streams, for a process that joins a running cluster (or restarts)."""
        now = time.time()
        for st in self._apps.values():
            history = st.hub.history
            if history is None:
                continue
            start = len(st.prefix) + 3
            async for key in self._client.scan_iter(match=st.prefix + "hn:*", count=500):
                channel = key[start:]
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.get(key)
                    pipe.get(st.prefix + "hs:" + channel)
                    pipe.xrange(st.prefix + "h:" + channel)
                    last, stream_id, rows = await pipe.execute()
                if last is None or stream_id is None:
                    continue
                entries = [
                    Entry(int(rid.partition("-")[2]), int(f["t"]) / 1000, f["e"], f["d"], f.get("u") or None)
                    for rid, f in rows
                ]
                history.restore(channel, stream_id, int(last), entries, now)

    # ------------------------------------------------------------------ heartbeats and reaping

    async def _heartbeat(self) -> None:
        every = min(1.0, self.node_ttl / 4)
        last_reconcile = time.monotonic()
        while True:
            await asyncio.sleep(every)
            for st in list(self._apps.values()):
                try:
                    registered, dead, due = await self._state_job(st, "HEARTBEAT", [])
                except _FAILED:
                    st.dirty = True
                    continue
                self._hooks(st, due)
                if st.dirty or not registered:
                    await self._resync(st)
                for node in dead:
                    if node == self.node_id:
                        continue
                    try:
                        hooks = await self._state_job(st, "REAP", [node, "0"])
                    except _FAILED:
                        continue
                    self.counters["reaped_nodes"] += 1
                    log.warning(
                        "process %s missed its heartbeats: removed its members and subscriptions", node
                    )
                    self._hooks(st, hooks)
            if self.reconcile_every and time.monotonic() - last_reconcile >= self.reconcile_every:
                last_reconcile = time.monotonic()
                for st in list(self._apps.values()):
                    await self._reconcile(st)

    # ------------------------------------------------------------------ the bus

    async def _bus(self) -> None:
        """Stay subscribed: reconnect with backoff for as long as the server runs."""
        backoff = 0.05
        first = True
        while not self._stopping:
            sub = self._subscriber = Subscriber(
                self.url, [st.bus for st in self._apps.values()], connect_timeout=self.connect_timeout
            )
            try:
                await sub.connect()
                self.bus_connected = True
                backoff = 0.05
                if self._down_since is not None:
                    log.warning(
                        "Redis reachable again after %.1f s; resynchronising",
                        time.monotonic() - self._down_since,
                    )
                    self._down_since = None
                self._spawn(self._after_connect(first))
                first = False
                while True:
                    message = await sub.read()
                    if message is None:
                        self._dispatch(None, b"")
                    else:
                        st = self._by_bus.get(message[0])
                        if st is not None:
                            self._dispatch(st, message[1])
            except (OSError, TimeoutError, asyncio.IncompleteReadError, RespError, ValueError) as exc:
                if self.bus_connected:
                    self.counters["bus_disconnects"] += 1
                    self._problem(f"lost the Redis subscription: {exc!r}; events from other processes wait")
                self.bus_connected = False
                if self._down_since is None:
                    self._down_since = time.monotonic()
                for fut in self._pongs:
                    if not fut.done():
                        fut.set_result(None)
                self._pongs.clear()
            finally:
                await sub.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _after_connect(self, first: bool) -> None:
        """(Re)joined the bus: register this process's share, then re-read everybody's."""
        for st in self._apps.values():
            await self._resync(st)
        if not first:
            # Give the other processes a moment to notice the outage and register theirs too.
            await asyncio.sleep(min(2.0, self.node_ttl / 2))
        for st in self._apps.values():
            await self._reconcile(st)
        if self._first_sync is not None and not self._first_sync.done():
            self._first_sync.set_result(None)

    def _dispatch(self, st: _App | None, data: bytes) -> None:
        if self._holds or self._held:
            self._held.append((st, data))
        else:
            self._apply(st, data)

    def _hold(self) -> None:
        self._holds += 1

    def _release(self) -> None:
        self._holds -= 1
        while self._held and not self._holds:
            st, data = self._held.popleft()
            self._apply(st, data)

    async def _barrier(self) -> None:
        """Wait until every message published before now has been applied (a PING through the bus)."""
        sub = self._subscriber
        if not self.bus_connected or sub is None:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not sub.ping():
            return
        self._pongs.append(future)
        try:
            await asyncio.wait_for(asyncio.shield(future), _BARRIER_TIMEOUT)
        except TimeoutError:
            self.counters["barrier_timeouts"] += 1

    def _apply(self, st: _App | None, data: bytes) -> None:
        if st is None:  # a pong: everything before it has been applied
            if self._pongs:
                fut = self._pongs.popleft()
                if not fut.done():
                    fut.set_result(None)
            return
        self.counters["received"] += 1
        head, _, body = data.partition(b" ")
        try:
            seq = int(head)
            message = json.loads(body)
        except ValueError:
            log.error("ignored a malformed bus message: %r", data[:200])
            return
        last = st.last_seq
        st.last_seq = seq
        if last is not None and seq != last + 1:
            if seq > last:
                self.counters["missed"] += seq - last - 1
                self._problem(f"{seq - last - 1} bus message(s) lost (sequence {last} -> {seq})")
            else:
                self.counters["resets"] += 1
                self._problem(f"the bus sequence restarted ({last} -> {seq}): Redis restarted")
            self._schedule_reconcile(st)
        hub = st.hub
        kind = message[0]
        now = time.time()
        try:
            if kind == "e":
                actions = hub.apply_events(message[1], now)
            elif kind == "c":
                position = message[4] if len(message) > 4 else None
                actions = hub.apply_client_event(message[1], message[2], message[3], position)
            elif kind == "t":
                actions = hub.apply_terminate(message[1])
            elif kind == "n":
                actions = hub.apply_subscription_count(message[1], int(message[2]), now)
            elif seq <= st.skip_upto:
                return  # already part of the replica's last snapshot
            elif kind == "ma":
                actions = hub.apply_member_added(message[1], message[2], json.loads(message[3]), message[4])
            elif kind == "mr":
                actions = hub.apply_member_removed(message[1], message[2])
            elif kind in ("on", "off"):
                actions = hub.apply_online(message[1], kind == "on")
            else:
                log.error("ignored a bus message of unknown kind %r", kind)
                return
        except (IndexError, TypeError, ValueError):
            log.exception("ignored a malformed bus message: %r", data[:200])
            return
        if actions:
            assert self._run is not None
            self._run(hub, actions)

    def _schedule_reconcile(self, st: _App) -> None:
        if self._reconcile_pending:
            return
        self._reconcile_pending = True

        async def later() -> None:
            await asyncio.sleep(0.5)
            self._reconcile_pending = False
            await self._reconcile(st)

        self._spawn(later())

    def _problem(self, text: str) -> None:
        self.last_error = text
        log.warning("%s", text)


def _limits(history: History, channel: str) -> list[int] | None:
    """``[max_events, max_age ms]`` of a channel's history in Redis; None: not recorded."""
    if channel.startswith(USER_CHANNEL_PREFIX):
        return None
    limits = history.limits_for(channel)
    return [limits.max_events, max(1, int(limits.max_age * 1000))]


def _merge(messages: list[list[Any]]) -> list[list[Any]]:
    """Consecutive event messages (a batch) go out as one message, in order."""
    out: list[list[Any]] = []
    for message in messages:
        if message[0] == "e" and out and out[-1][0] == "e":
            out[-1] = ["e", out[-1][1] + message[1]]
        else:
            out.append(message)
    return out

"""Webhook delivery: off the event path, one queue and worker per URL, retries with backoff.

Body and headers per server_api/webhooks.md (reference §2.3): ``{"time_ms": <int ms>, "events": [...]}``,
``X-Pusher-Key`` and ``X-Pusher-Signature`` (HMAC-SHA256 of the raw body). Hosted Pusher retries for
five minutes; so do we. A receiver that is down or slow only fills its own bounded queue: delivery to
WebSocket clients and to other receivers never waits for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import deque
from typing import Any

import aiohttp

from ..protocol import signatures
from ..protocol.config import AppConfig

__all__ = ["WebhookSender"]

log = logging.getLogger("livewidget.server.webhooks")

MAX_BATCH = 50  # events per request when several are waiting
MAX_QUEUE = 10_000  # events waiting per URL before the oldest are dropped (and counted)
RETRY_FOR = 300.0  # seconds, as hosted Pusher
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
REQUEST_TIMEOUT = 5.0


def _for_log(url: str) -> str:
    """``url`` without what may be a credential: user:password, and the query (?token=...)."""
    url = re.sub(r"(?<=//)[^@/?#]*@", "", url, count=1)
    base, query, _ = url.partition("?")
    return base + "?…" if query else base


class _Target:
    __slots__ = ("app", "dropped", "queue", "shown", "task", "url", "wakeup")

    def __init__(self, app: AppConfig, url: str) -> None:
        self.app = app
        self.url = url
        self.shown = _for_log(url)  # how the logs name it
        self.queue: deque[dict[str, Any]] = deque()
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.dropped = 0


class WebhookSender:
    """Posts webhook events for every app to its URLs. Create and use inside the event loop."""

    def __init__(self) -> None:
        self._targets: dict[tuple[str, str], _Target] = {}
        self._session: aiohttp.ClientSession | None = None
        self.delivered = 0  # events acknowledged with 2xx, for tests and stats
        self.failed = 0  # events given up on after RETRY_FOR seconds or dropped

    def submit(self, app: AppConfig, event: dict[str, Any]) -> None:
        """Queue ``event`` for each of ``app``'s webhook URLs. Never blocks."""
        for url in app.webhook_urls:
            target = self._targets.get((app.app_id, url))
            if target is None:
                target = self._targets[(app.app_id, url)] = _Target(app, url)
                target.task = asyncio.get_running_loop().create_task(self._worker(target))
            if len(target.queue) >= MAX_QUEUE:
                target.queue.popleft()
                target.dropped += 1
                self.failed += 1
                if target.dropped == 1 or target.dropped % 1000 == 0:
                    log.warning(
                        "webhook queue for %s is full: %d events dropped", target.shown, target.dropped
                    )
            target.queue.append(event)
            target.wakeup.set()

    async def _session_get(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        return self._session

    async def _worker(self, target: _Target) -> None:
        while True:
            await target.wakeup.wait()
            target.wakeup.clear()
            while target.queue:
                batch = [target.queue.popleft() for _ in range(min(MAX_BATCH, len(target.queue)))]
                await self._deliver(target, batch)

    async def _deliver(self, target: _Target, events: list[dict[str, Any]]) -> None:
        app = target.app
        deadline = time.monotonic() + RETRY_FOR
        backoff = FIRST_BACKOFF
        while True:
            # time_ms is integer milliseconds, as pusher-http-python's validate_webhook requires;
            # stamped at each attempt so a retried webhook still passes its 300 s window.
            body = json.dumps({"time_ms": int(time.time() * 1000), "events": events}).encode()
            headers = {
                "Content-Type": "application/json",
                "X-Pusher-Key": app.key,
                "X-Pusher-Signature": signatures.webhook_signature(app.secret, body),
            }
            try:
                session = await self._session_get()
                async with session.post(target.url, data=body, headers=headers) as resp:
                    if 200 <= resp.status < 300:
                        self.delivered += len(events)
                        return
                    problem = f"HTTP {resp.status}"
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                problem = f"{type(exc).__name__}: {exc}".replace(target.url, target.shown)  # InvalidURL
            if time.monotonic() + backoff > deadline:
                self.failed += len(events)
                log.warning(
                    "webhook to %s failed for %.0f s (%s); %d event(s) dropped",
                    target.shown,
                    RETRY_FOR,
                    problem,
                    len(events),
                )
                return
            log.info("webhook to %s failed (%s); retrying in %.1f s", target.shown, problem, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def close(self, grace: float = 2.0) -> None:
        """Try for up to ``grace`` seconds to send what is queued, then stop."""
        end = time.monotonic() + grace
        while any(t.queue for t in self._targets.values()) and time.monotonic() < end:
            await asyncio.sleep(0.05)
        for target in self._targets.values():
            if target.task is not None:
                target.task.cancel()
        await asyncio.gather(
            *(t.task for t in self._targets.values() if t.task is not None), return_exceptions=True
        )
        if self._session is not None:
            await self._session.close()

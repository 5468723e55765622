"""``Chat``: a chat room beside the notebook, on a Pusher presence channel.

Where things live
    Messages travel between browsers as **client events** on ``presence-chat-<room>`` (pusher-js, no
    kernel in the path: chat works while a cell runs). ``chat.send(text)`` posts from Python through
    the REST API (the server SDKs cannot send client events) as ``chat-message``; the front end
    renders both the same. The kernel's receiver (a presence member marked ``livewidget_kernel``,
    hidden from member lists) records every message: ``chat.df``, ``chat.on_message``.

History
    Pusher stores nothing, so history lives in the members. The server stamps who sent each client
    event, but not who wrote the messages inside a history answer: a message is attributed to its
    author only when the answering member is that author (or the author's kernel); otherwise it is
    kept with ``relayed_by`` set to the answering member (shown "relayed by ..."), so a member cannot
    make others appear to have said something. A member that joins (browser or kernel)
    asks with ``client-chat-history-request``; members that hold messages answer with
    ``client-chat-history`` chunks (each under the 10 KB limit, paced under the client-event rate).
    Kernels answer first (they record from the moment the ``Chat`` is created, whether or not a view
    is open); browsers answer after a random 0.3-1 s only when nobody better has. Each answer carries
    the responder's ``horizon`` (since when it has heard everything); seeing an answer with a horizon
    at least as old as its own, a member cancels its answer. A view opened later on the same kernel
    also starts from the kernel's ``_history`` trait. The embedded server and hosted Pusher behave the
    same, provided client events are enabled on the hosted app (they are off by default there); with
    nobody left in the room, the history is gone, unless a kernel with a ``Chat`` is still running
    (keep one running, e.g. a bot, or save ``chat.df``).

Wire format (``data`` of the events)
    ``client-chat-message`` / ``chat-message``: a message *piece*
    ``{"id", "t": ms since epoch, "text", "user": {"id", "name", "color"}, "part"?, "parts"?}``;
    messages over ``PIECE_BYTES`` are sent as ``parts`` pieces with the same ``id`` (``part`` from
    0), joined by the receivers. For client events the sender's id is the ``user_id`` the server
    stamps (not ``data.user.id``), and its name and colour come from its signed presence info.
    ``client-chat-typing``: ``{"user": {...}}``, at most every ``TYPING_EVERY`` seconds while typing.
    ``client-chat-history-request``: ``{"req", "since": ms, "limit"}``.
    ``client-chat-history``: ``{"req", "horizon": ms, "seq", "done", "pieces": [piece, ...]}``, each
    piece with ``via`` and, when the answering member was itself told it, ``relayed_by``.

Contract with the front end (``_kind == "chat"``), in addition to :mod:`._base`'s
    ``room`` and ``me`` (``{"id", "name", "color"}``: who this notebook's views are) are synced;
    ``_history`` holds the recorded messages, one ``{"t", "channel", "event": "chat-message",
    "data": piece + {"via", "relayed_by"?}, "user_id"}`` per line (``relayed_by``: the member that passed
    on a history message it did not write; views show it).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import random
import re
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import traitlets

from .. import _check
from .._frames import table
from .._loop import io_loop
from ..protocol.client import ClientEvent
from ._base import HISTORY_EVERY, LiveWidget, _front_end

__all__ = ["Chat"]

log = logging.getLogger("livewidget.chat")

MESSAGE = "client-chat-message"  # from a browser (client event)
SERVER_MESSAGE = "chat-message"  # from Python: chat.send(), through the REST API
TYPING = "client-chat-typing"
HISTORY_REQUEST = "client-chat-history-request"
HISTORY = "client-chat-history"

PIECE_BYTES = 9000  # JSON bytes of one event's data: under the 10 KB limit with room to spare
MAX_PARTS = 12  # a message is at most this many pieces (about 100 KB); longer ones are refused
MAX_TEXT = 200_000  # characters kept of a received message (a hostile sender could send more parts)
# Incomplete multi-part messages: kept per (sender, id) at most PARTS_TTL seconds, at most
# PENDING_PER_SENDER per sender and PENDING_TOTAL in all (oldest dropped): a hostile member sending
# first parts only (90 KB/s) cannot grow the kernel's memory.
PARTS_TTL = 60.0
PENDING_PER_SENDER = 4
PENDING_TOTAL = 64
TYPING_EVERY = 2.5  # seconds between typing notifications
KERNEL_RATE = 5.0  # client events per second the kernel sends (Pusher allows 10 per connection)
KERNEL_ANSWER_DELAY = 0.15  # seconds: a kernel answers a history request within this (random)
COLUMNS = ("time", "user_id", "name", "text", "id", "via", "history", "relayed_by")

_ROOM_RE = re.compile(r"\A[A-Za-z0-9_\-=@,.;]{1,180}\Z")
_COLOR_RE = re.compile(r"\A#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})\Z")
# Readable on light and dark backgrounds; a user's colour is picked from their id.
PALETTE = (
    "#e5484d",
    "#f76b15",
    "#d6a100",
    "#46a758",
    "#12a594",
    "#0090ff",
    "#3e63dd",
    "#8e4ec6",
    "#d6409f",
    "#a18072",
    "#6e56cf",
    "#00a2c7",
)


def color_for(user_id: str) -> str:
    """The palette colour of ``user_id`` (stable: the same in Python and in the browser)."""
    h = 0
    for ch in user_id:  # the same 32-bit FNV-1a as js/src/chat.js colorFor()
        h = ((h ^ ord(ch)) * 16777619) & 0xFFFFFFFF
    return PALETTE[h % len(PALETTE)]


def _login() -> str:
    hub = os.environ.get("JUPYTERHUB_USER")
    if hub:
        return hub
    try:
        return getpass.getuser()
    except Exception:
        return "user"


def _full_name(login: str) -> str:
    try:
        import pwd

        gecos = pwd.getpwnam(login).pw_gecos.split(",")[0].strip()
    except (ImportError, KeyError, OSError):
        gecos = ""
    return gecos or login


def person(user: str | dict[str, Any] | None = None) -> dict[str, str]:
    """``{"id", "name", "color"}`` from ``user``: a user id (``"alice"``), a dict (``name``/``color``
    or ``info``), or ``None`` for the login name."""
    if user is None:
        login = _login()
        return {"id": login, "name": _full_name(login), "color": color_for(login)}
    if isinstance(user, str):
        user = {"id": user}
    if not isinstance(user, dict):
        raise TypeError(
            f'user must be a user id (a string such as "alice") or a dict {{"id", "name"?, "color"?}}, '
            f"not {type(user).__name__}"
        )
    if user.get("id") in (None, ""):
        raise ValueError(
            'user must be a non-empty user id, or a dict with an "id" (and optional "name" and "color")'
        )
    if not isinstance(user["id"], (str, int)) or isinstance(user["id"], bool):
        raise TypeError(f"user id must be a string, not {type(user['id']).__name__}")
    info = _dict(user.get("info"))
    uid = str(user["id"])
    if len(uid) > 120 or uid.endswith(":kernel"):
        raise ValueError(f"user id {uid!r}: at most 120 characters, not ending in ':kernel'")
    name = str(user.get("name") or info.get("name") or uid)[:80]
    color = user.get("color") or info.get("color") or color_for(uid)
    if not isinstance(color, str) or not _COLOR_RE.match(color):
        raise ValueError(f"user color must be '#rgb' or '#rrggbb', got {color!r}")
    return {"id": uid, "name": name, "color": color}


def split_text(text: str, budget: int = PIECE_BYTES - 400) -> list[str]:
    """``text`` in chunks whose JSON encoding is at most ``budget`` bytes each (whole code points)."""
    chunks: list[str] = []
    start = 0
    size = 0
    for i, ch in enumerate(text):
        cost = len(json.dumps(ch).encode()) - 2
        if size + cost > budget and i > start:
            chunks.append(text[start:i])
            start, size = i, 0
        size += cost
    chunks.append(text[start:])
    return chunks


def new_id(user_id: str) -> str:
    return f"{user_id[:40]}-{int(time.time() * 1000):x}-{uuid.uuid4().hex[:8]}"


class Chat(LiveWidget):
    """A chat room on a presence channel: who is online, messages, typing, history, and Python in it.

    ``chat = livewidget.Chat("team")`` then show ``chat``. Everyone (every notebook, on any machine
    with the same server) who opens ``Chat("team")`` is in the same room.

    Parameters
    ----------
    room:
        The room's name (letters, digits, ``_ - = @ , . ;``); the channel is ``presence-chat-<room>``.
    user:
        Who this notebook is: a user id (``"alice"``) or ``{"id", "name"?, "color"?: "#rrggbb"}``.
        Default: the login name
        (``JUPYTERHUB_USER`` on JupyterHub), the full name from the system when known, a colour
        derived from the id. A person in several tabs or kernels counts once.
    max_history:
        Messages the kernel keeps for views opened later and answers to members who join.
    max_rows:
        Messages kept in ``chat.df`` (the oldest go first).
    history:
        Events of the room the server's channel history replays when subscribing (a number, or a
        ``datetime.timedelta``; default 50; ``0``: none), so the last messages show even when no
        member holds them; marked ``history`` like those members send. Servers without history
        (hosted Pusher) ignore it.
    **kwargs:
        As for :class:`~livewidget.Feed`: connection keywords (``url``, ``key``, ``secret``,
        ``host``, ...), ``title``, ``authorize``; ``as_member=True`` for a bot that no browser shows:
        its kernel joins as ``user`` (listed online) rather than as a hidden kernel member.

    Python side
        ``chat.send(text)`` posts (for bots and job notifications; returns the message id);
        ``chat.df`` the messages as a DataFrame; ``chat.members`` who is online (a traitlet:
        ``chat.observe(fn, "members")``); ``chat.on_message(fn)`` calls ``fn(message)`` on the
        receiver thread for each new message from someone else, even while a cell runs;
        ``chat.wait(n)`` blocks until ``n`` messages have been recorded.

    Limits: a presence channel holds at most 100 members (hosted Pusher and the embedded server's
    default), and each notebook's kernel is one (hidden) member besides its user.

    See the module docstring for the wire format and where history lives.
    """

    _kind = traitlets.Unicode("chat").tag(sync=True)
    _default_history = 50
    _esm, _css = _front_end("chat")
    room = traitlets.Unicode("").tag(sync=True)
    me = traitlets.Dict().tag(sync=True)
    members = traitlets.List(traitlets.Dict())

    def __init__(
        self,
        room: str = "general",
        *,
        user: str | dict[str, Any] | None = None,
        max_history: int = 200,
        max_rows: int = 10_000,
        title: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(room, str):
            raise TypeError(f"room must be a string (the room's name), not {type(room).__name__}")
        if not _ROOM_RE.match(room):
            raise ValueError(
                f"invalid room name {room!r}: use 1 to 180 of a-z A-Z 0-9 _ - = @ , . ; (no spaces)"
            )
        _check.check_int(max_history, "max_history", minimum=1)
        _check.check_int(max_rows, "max_rows", minimum=1)
        me = person(user)
        self._me = me  # what send() uses: the synced `me` trait may be changed by the browser
        # Set before the base starts the receiver, which may deliver events at once (I/O thread).
        self._lock = threading.Lock()
        self._msgs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._parts: dict[tuple[str, str], dict[str, Any]] = {}  # (sender, id) -> parts received
        self._max_msgs = max_rows
        self._max_history = max_history
        self._mine: deque[str] = deque(maxlen=1000)  # ids sent by chat.send(): no on_message for them
        self._listeners: list[Callable[[dict[str, Any]], Any]] = []
        self._people: dict[str, dict[str, Any]] = {}
        self._members_dirty = False
        self._chat_dirty = False
        self._last_chat_history = 0.0
        self._horizon: int | None = None  # ms: since when this kernel has heard every message
        self._answers: dict[str, Any] = {}  # history requests we will answer: req -> timer handle
        self._outbox: deque[tuple[str, Any]] = deque()
        self._tokens = KERNEL_RATE
        self._token_time = time.monotonic()
        self._pumping = False
        self._my_request: str | None = None
        self.channel = f"presence-chat-{room}"
        super().__init__(
            [self.channel],
            user={"id": me["id"], "info": {"name": me["name"], "color": me["color"]}},
            max_rows=max_rows,
            keep=max_history,
            max_log=max_history,
            title=title or f"# {room}",
            room=room,
            me=me,
            **kwargs,
        )

    # ------------------------------------------------------------------ receiving (I/O thread)

    def _on_internal(self, event: ClientEvent) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        if event.event == "pusher:subscription_succeeded":
            people = _dict(_dict(data.get("presence")).get("hash"))
            self._people = {str(k): _dict(v) for k, v in people.items()}
            if self._horizon is None:
                self._horizon = int(time.time() * 1000)
            if len(self._people) > 1:
                self._request_history()
        elif event.event == "pusher:member_added" and data.get("user_id") is not None:
            info = data.get("user_info")
            self._people[str(data["user_id"])] = info if isinstance(info, dict) else {}
        elif event.event == "pusher:member_removed" and data.get("user_id") is not None:
            self._people.pop(str(data["user_id"]), None)
        self._members_dirty = self._dirty = True

    def _on_event(self, event: ClientEvent) -> None:
        if event.channel != self.channel:
            return
        data = event.data
        if not isinstance(data, dict):
            return
        try:
            if event.event in (MESSAGE, SERVER_MESSAGE):
                via = "python" if event.event == SERVER_MESSAGE else "browser"
                stamped = event.user_id if via == "browser" else None
                if via == "browser" and stamped is None:
                    return  # a client event always carries the sender the server stamped
                self._take_piece(data, via, stamped, history=event.history)
            elif event.history:
                return  # a past request or answer, replayed by the server's history: long settled
            elif event.event == HISTORY_REQUEST:
                self._history_requested(data)
            elif event.event == HISTORY:
                self._history_answered(data, event.user_id)
        except Exception:
            log.exception("chat: could not handle %s", event.event)

    def _sender(self, piece: dict[str, Any], stamped: str | None) -> dict[str, str]:
        """Who sent ``piece``: the server-stamped id wins; name and colour from the signed presence info."""
        claimed = _dict(piece.get("user"))
        uid = str(stamped if stamped is not None else claimed.get("id") or "?")[:128]
        info = self._people.get(uid) or {}
        name = info.get("name") or claimed.get("name") or uid
        color = info.get("color") or claimed.get("color")
        if not isinstance(color, str) or not _COLOR_RE.match(color):
            color = color_for(uid)
        return {"id": uid, "name": str(name)[:80], "color": color}

    def _take_piece(
        self,
        piece: dict[str, Any],
        via: str,
        stamped: str | None,
        *,
        history: bool,
        relayed_by: str | None = None,
        source: str | None = None,
    ) -> None:
        """One piece; whole messages are recorded. ``source`` is who sent the event (the stamped id
        for client events, the answering member for history): parts are joined per source and id."""
        mid, text, t = piece.get("id"), piece.get("text"), piece.get("t")
        if not isinstance(mid, str) or not mid or len(mid) > 200 or not isinstance(text, str):
            return
        if not isinstance(t, (int, float)) or isinstance(t, bool) or t != t or abs(t) > 1e15:
            t = time.time() * 1000
        parts = piece.get("parts")
        if isinstance(parts, int) and not isinstance(parts, bool) and 1 < parts <= MAX_PARTS:
            part = piece.get("part")
            if not isinstance(part, int) or isinstance(part, bool) or not 0 <= part < parts:
                return
            text = self._join(source or stamped or via, mid, parts, part, text)
            if text is None:
                return
        sender = self._sender(piece, stamped)
        if history and piece.get("via") in ("python", "browser"):
            via = str(piece["via"])
        msg = {
            "id": mid,
            "t": int(t),
            "user_id": sender["id"],
            "name": sender["name"],
            "color": sender["color"],
            "text": text[:MAX_TEXT],
            "via": via,
            "history": history,
            "relayed_by": relayed_by,
        }
        self._record(msg)

    def _join(self, source: str, mid: str, parts: int, part: int, text: str) -> str | None:
        """Keep part ``part`` of message ``mid`` from ``source``; the whole text once all are here."""
        now = time.monotonic()
        pending_all = self._parts
        for key in [k for k, v in pending_all.items() if now - v["since"] > PARTS_TTL]:
            del pending_all[key]  # expired: its other parts never came
        key = (source, mid)
        pending = pending_all.get(key)
        if pending is None or pending["parts"] != parts:
            mine = [k for k in pending_all if k[0] == source]
            while len(mine) >= PENDING_PER_SENDER:
                oldest = min(mine, key=lambda k: pending_all[k]["since"])
                del pending_all[oldest]
                mine.remove(oldest)
            while len(pending_all) >= PENDING_TOTAL:
                del pending_all[min(pending_all, key=lambda k: pending_all[k]["since"])]
            pending = pending_all[key] = {"got": {}, "parts": parts, "since": now}
        pending["got"][part] = text
        if len(pending["got"]) < parts:
            return None
        del pending_all[key]
        return "".join(pending["got"][i] for i in range(parts))

    def _record(self, msg: dict[str, Any]) -> bool:
        """Keep ``msg`` unless already known; tell the listeners about live ones from others."""
        with self._lock:
            if msg["id"] in self._msgs:
                return False
            self._msgs[msg["id"]] = msg
            while len(self._msgs) > self._max_msgs:
                oldest = min(self._msgs.values(), key=lambda m: m["t"])
                del self._msgs[oldest["id"]]
            self._chat_dirty = self._dirty = True
            tell = not msg["history"] and msg["id"] not in self._mine
        piece, t = _piece_of(msg), msg["t"] / 1000
        self._store.append(t, self.channel, SERVER_MESSAGE, piece, msg["user_id"], msg["history"])
        self._rate_window.append(time.time())
        if tell:
            for listener in list(self._listeners):
                try:
                    listener(dict(msg))
                except Exception:
                    log.exception("chat: on_message callback failed")
        with self._cond:
            self._cond.notify_all()
        return True

    # ------------------------------------------------------------------ history (I/O thread)

    def _request_history(self) -> None:
        req = uuid.uuid4().hex[:12]
        self._my_request = req
        with self._lock:
            since = max((m["t"] for m in self._msgs.values()), default=0)
        self._queue(HISTORY_REQUEST, {"req": req, "since": since, "limit": self._max_history})

    def _history_requested(self, data: dict[str, Any]) -> None:
        req = data.get("req")
        if not isinstance(req, str) or req in self._answers or req == self._my_request:
            return
        since = _number(data.get("since"), 0.0)
        limit = max(1, min(int(_number(data.get("limit"), self._max_history)), self._max_history))
        with self._lock:
            if not any(m["t"] > since for m in self._msgs.values()):
                return
        delay = random.random() * KERNEL_ANSWER_DELAY
        self._answers[req] = io_loop().call_later(delay, self._answer, req, since, limit)

    def _answer(self, req: str, since: float, limit: int) -> None:
        if self._answers.get(req) is None:
            return
        self._answers[req] = False  # answered: never again for this request
        with self._lock:
            msgs = sorted((m for m in self._msgs.values() if m["t"] > since), key=lambda m: m["t"])
        pieces = [
            {**p, "via": m["via"]} | ({"relayed_by": m["relayed_by"]} if m.get("relayed_by") else {})
            for m in msgs[-limit:]
            for p in _pieces_of(m)
        ]
        chunks = _chunks(pieces) or [[]]
        for seq, chunk in enumerate(chunks):
            answer = {"req": req, "horizon": self._horizon or 0, "seq": seq, "pieces": chunk}
            answer["done"] = seq == len(chunks) - 1
            self._queue(HISTORY, answer)

    def _history_answered(self, data: dict[str, Any], answerer: str | None = None) -> None:
        req = data.get("req")
        horizon = data.get("horizon")
        if not isinstance(req, str):
            return
        theirs = horizon if isinstance(horizon, (int, float)) else None
        pending = self._answers.get(req)
        if pending and theirs is not None and (self._horizon is None or theirs <= self._horizon):
            pending.cancel()  # someone who has heard at least as much answers
            self._answers[req] = False
        if req != self._my_request:
            return
        pieces = data.get("pieces")
        for piece in pieces if isinstance(pieces, list) else []:
            if isinstance(piece, dict):
                claimed = _dict(piece.get("user")).get("id")
                author = str(claimed)[:128] if isinstance(claimed, (str, int)) and claimed != "" else "?"
                # The server stamped the answering member, not the authors of what it relays; what it
                # was itself told (relayed_by) is not first-hand either, whoever wrote it.
                first_hand = _same_person(author, answerer) and not piece.get("relayed_by")
                relayed = None if first_hand else (answerer or "?")
                source = answerer or "?"
                self._take_piece(piece, "browser", author, history=True, relayed_by=relayed, source=source)
        if data.get("done") and theirs is not None and (self._horizon is None or theirs < self._horizon):
            self._horizon = int(theirs)

    # ------------------------------------------------------------------ sending client events

    def _queue(self, event: str, data: Any) -> None:
        """Send a client event from the kernel's connection, paced under Pusher's rate limit."""
        self._outbox.append((event, data))
        if not self._pumping:
            self._pump()

    def _pump(self) -> None:
        self._pumping = False
        if self._closed or self._receiver is None:
            self._outbox.clear()
            return
        now = time.monotonic()
        self._tokens = min(KERNEL_RATE, self._tokens + (now - self._token_time) * KERNEL_RATE)
        self._token_time = now
        while self._outbox and self._tokens >= 1:
            event, data = self._outbox.popleft()
            self._receiver.trigger(self.channel, event, data)
            self._tokens -= 1
        if self._outbox:
            self._pumping = True
            io_loop().call_later((1 - self._tokens) / KERNEL_RATE + 0.01, self._pump)

    # ------------------------------------------------------------------ coalesced trait updates

    def _flush(self) -> None:
        super()._flush()
        if self._members_dirty:
            self._members_dirty = False
            people = [
                {"id": uid, "name": str(info.get("name") or uid), "color": self._sender({}, uid)["color"]}
                for uid, info in self._people.items()
                if not info.get("livewidget_kernel")
            ]
            self.members = sorted(people, key=lambda p: (p["name"].lower(), p["id"]))
        now = time.time()
        if self._chat_dirty and now - self._last_chat_history >= HISTORY_EVERY:
            self._chat_dirty = False
            self._last_chat_history = now
            with self._lock:
                msgs = sorted(self._msgs.values(), key=lambda m: m["t"])[-self._max_history :]
            lines = [
                json.dumps(
                    {
                        "t": m["t"],
                        "channel": self.channel,
                        "event": SERVER_MESSAGE,
                        "data": {**_piece_of(m), "via": m["via"]}
                        | ({"relayed_by": m["relayed_by"]} if m.get("relayed_by") else {}),
                        "user_id": m["user_id"],
                    }
                )
                for m in msgs
            ]
            self._history = "\n".join(lines).encode()
            if msgs:
                last = msgs[-1]
                self.last = {
                    "time": last["t"] / 1000,
                    "channel": self.channel,
                    "event": SERVER_MESSAGE,
                    "data": _piece_of(last),
                    "user_id": last["user_id"],
                }
        elif self._chat_dirty:
            self._dirty = True  # come back for the history later

    # ------------------------------------------------------------------ public API

    def send(self, text: Any, *, user: str | dict[str, Any] | None = None) -> str:  # type: ignore[override]
        """Post ``text`` (Markdown) to the room, as this notebook's user or ``user``; returns its id.

        Goes through the REST API (queued, returns at once), so it works from any thread, also
        inside an :meth:`on_message` callback. Shown in ``chat.df`` at once. Raises ``ValueError``
        for an empty message or one over ``MAX_PARTS`` pieces (about 100 KB).
        """
        text = str(text)
        if not text.strip():
            raise ValueError("empty message")
        sender = self._me if user is None else person(user)
        chunks = split_text(text)
        if len(chunks) > MAX_PARTS:
            raise ValueError(
                f"message too long: {len(text.encode())} bytes in {len(chunks)} parts "
                f"(at most {MAX_PARTS} parts of {PIECE_BYTES} bytes)"
            )
        msg = {
            "id": new_id(sender["id"]),
            "t": int(time.time() * 1000),
            "user_id": sender["id"],
            "name": sender["name"],
            "color": sender["color"],
            "text": text,
            "via": "python",
            "history": False,
            "relayed_by": None,
        }
        with self._lock:
            self._mine.append(msg["id"])
        self._record(msg)
        from .._publish import Publisher

        if self._publisher is None:
            self._publisher = Publisher(self._settings)
        for piece in _pieces_of(msg):
            self._publisher.publish(self.channel, SERVER_MESSAGE, piece)
        return str(msg["id"])

    def on_message(self, callback: Callable[[dict[str, Any]], Any]) -> Callable[[], None]:
        """Call ``callback(message)`` for each new message from someone else, on the receiver thread.

        ``message`` is ``{"id", "t" (ms since the epoch), "user_id", "name", "color", "text", "via"
        ("browser" or "python"), "history", "relayed_by"}`` (``relayed_by``: the member who passed
        on a history message it did not write; ``None`` when the author is known first-hand). Not
        called for messages from :meth:`send` on this ``Chat`` (a bot cannot answer itself) nor for
        history. Runs while cells run: keep it quick (``chat.send`` is fine). Returns a function that
        removes the callback.
        """
        self._listeners.append(callback)

        def remove() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return remove

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every recorded message (up to ``max_rows``), oldest first, as dicts (see :meth:`on_message`)."""
        with self._lock:
            # Stable over arrival order: messages sent in the same millisecond keep their order
            # (ids are random, so they must not break ties).
            return [dict(m) for m in sorted(self._msgs.values(), key=lambda m: m["t"])]

    @property
    def df(self) -> Any:
        """The messages as a DataFrame, oldest first.

        Columns: time (UTC), user_id, name, text, id, via (``browser`` or ``python``), history (True
        when learned from another member rather than heard live), relayed_by (who passed it on, when
        that is not its author: its authorship is then only claimed).
        """
        rows = [{**m, "time": m["t"] / 1000} for m in self.messages]
        return table(rows, COLUMNS, times=("time",))

    def close(self) -> None:
        """Leave the room (views too) and free the record."""
        if getattr(self, "_closed", True):
            return
        for handle in self._answers.values():
            if handle:
                handle.cancel()
        self._answers.clear()
        self._outbox.clear()
        super().close()
        with self._lock:
            self._msgs.clear()
            self._parts.clear()


def _same_person(author: str, member: str | None) -> bool:
    """Whether ``member`` (a stamped presence id) is ``author`` or ``author``'s kernel."""
    return member is not None and member in (author, f"{author}:kernel")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any, default: float) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e15
    return float(value) if ok else default


def _piece_of(msg: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": msg["id"],
        "t": msg["t"],
        "text": msg["text"],
        "user": {"id": msg["user_id"], "name": msg["name"], "color": msg["color"]},
    }


def _pieces_of(msg: dict[str, Any]) -> list[dict[str, Any]]:
    """``msg`` as the pieces sent on the wire (one unless its JSON is over ``PIECE_BYTES``)."""
    whole = _piece_of(msg)
    chunks = split_text(msg["text"])
    if len(chunks) == 1:
        return [whole]
    return [{**whole, "text": c, "part": i, "parts": len(chunks)} for i, c in enumerate(chunks)]


def _chunks(pieces: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Pieces grouped so that each group's JSON stays under ``PIECE_BYTES``."""
    out: list[list[dict[str, Any]]] = []
    group: list[dict[str, Any]] = []
    size = 0
    for piece in pieces:
        n = len(json.dumps(piece).encode()) + 1
        if group and size + n > PIECE_BYTES - 200:
            out.append(group)
            group, size = [], 0
        group.append(piece)
        size += n
    if group:
        out.append(group)
    return out

"""``Chat`` against the embedded server: members, messages both ways, parts, history, callbacks.

A "browser" here is a plain client on the presence channel (the receiver class, with a user that is
not marked as a kernel), which sends client events as pusher-js does.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from livewidget._config import resolve
from livewidget.protocol.client import ClientEvent
from livewidget.receiver import Receiver
from livewidget.server import LocalServer
from livewidget.widgets import chat as chat_module
from livewidget.widgets.chat import (
    HISTORY,
    HISTORY_REQUEST,
    MAX_PARTS,
    MESSAGE,
    PIECE_BYTES,
    SERVER_MESSAGE,
    Chat,
    color_for,
    person,
    split_text,
)

from .conftest import creds, wait_for

ROOM_COUNTER = iter(range(1_000_000))


def room() -> str:
    return f"r{next(ROOM_COUNTER)}-{int(time.time() * 1000) % 100000}"


@pytest.fixture
def make_chat(server: LocalServer, comms: list[Any]) -> Iterator[Callable[..., Chat]]:
    made: list[Chat] = []

    def make(name: str, **kwargs: Any) -> Chat:
        chat = Chat(name, **{**creds(server), **kwargs})
        made.append(chat)
        wait_for(lambda: chat._receiver is not None and all(chat._receiver.protocol.channels.values()))
        return chat

    yield make
    for chat in made:
        chat.close()


class Browser:
    """A presence member like a pusher-js page: records what it hears, sends client events."""

    def __init__(self, server: LocalServer, channel: str, user_id: str, name: str) -> None:
        self.channel = channel
        self.heard: list[ClientEvent] = []
        self.receiver = Receiver(
            resolve(**creds(server)),
            [channel],
            self.heard.append,
            user={"id": user_id, "info": {"name": name, "color": "#0090ff"}},
        ).start()
        wait_for(lambda: all(self.receiver.protocol.channels.values()))

    def send(self, event: str, data: Any) -> None:
        self.receiver.trigger(self.channel, event, data)

    def events(self, name: str) -> list[ClientEvent]:
        return [e for e in self.heard if e.event == name]

    def close(self) -> None:
        self.receiver.stop()


@pytest.fixture
def browsers(server: LocalServer) -> Iterator[Callable[..., Browser]]:
    made: list[Browser] = []

    def make(channel: str, user_id: str, name: str = "") -> Browser:
        b = Browser(server, channel, user_id, name or user_id.title())
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def piece(mid: str, text: str, user: dict[str, Any] | None = None, t: int | None = None) -> dict[str, Any]:
    return {"id": mid, "t": t or int(time.time() * 1000), "text": text, "user": user or {"id": "x"}}


# ---------------------------------------------------------------------------------------------- helpers


def test_person_defaults_to_the_login_with_name_and_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    """No user: the login name (JUPYTERHUB_USER first), a display name, a colour from the id."""
    monkeypatch.setenv("JUPYTERHUB_USER", "hubuser")
    me = person()
    assert me["id"] == "hubuser" and me["name"] and me["color"] == color_for("hubuser")
    assert person({"id": "b", "name": "Bob", "color": "#123"}) == {"id": "b", "name": "Bob", "color": "#123"}
    assert person({"id": 7, "info": {"name": "Seven"}})["name"] == "Seven"
    for bad in (
        {"name": "x"},
        {"id": ""},
        {"id": "a", "color": "red; background: url(x)"},
        {"id": "a:kernel"},
    ):
        with pytest.raises(ValueError):
            person(bad)


def test_colours_are_the_same_as_in_the_browser() -> None:
    """color_for is the FNV-1a of js/src/chat.js colorFor (the JS tests pin the same values)."""
    assert [color_for(u) for u in ("alice", "bob", "Zoë 🚀")] == ["#12a594", "#46a758", "#e5484d"]


def test_split_text_is_lossless_and_under_the_event_limit() -> None:
    """Every chunk's JSON is under the budget (escapes and multibyte characters counted)."""
    text = 'é😀"\\\n<' * 5000 + "end"
    chunks = split_text(text)
    assert "".join(chunks) == text and len(chunks) > 3
    for c in chunks:
        assert len(json.dumps(c).encode()) < PIECE_BYTES
    assert split_text("hi") == ["hi"]


# ---------------------------------------------------------------------------------------------- widget


def test_room_user_and_traits(make_chat: Callable[..., Chat]) -> None:
    """The channel is presence-chat-<room>; `me` is synced; a bad room or user is a clear error."""
    chat = make_chat("team-1", user={"id": "ann", "name": "Ann", "color": "#e5484d"})
    assert chat.channels == ["presence-chat-team-1"]
    assert chat.me == {"id": "ann", "name": "Ann", "color": "#e5484d"}
    assert chat._kind == "chat" and chat.room == "team-1" and chat.title == "# team-1"
    state = chat.get_state()
    assert state["me"]["id"] == "ann" and "members" not in state
    with pytest.raises(ValueError, match="invalid room name"):
        Chat("has space")
    with pytest.raises(ValueError, match="user"):
        Chat("ok", user={"name": "no id"})


def test_members_hide_kernels_and_follow_joins_and_leaves(
    make_chat: Callable[..., Chat], browsers: Callable[..., Browser]
) -> None:
    """chat.members lists people (kernels hidden), once per user id, and updates on join/leave."""
    name = room()
    chat = make_chat(name, user={"id": "ann", "name": "Ann"})
    make_chat(name, user={"id": "ann", "name": "Ann"})  # a second kernel of the same person
    bob = browsers(chat.channel, "bob", "Bob")
    bob2 = browsers(chat.channel, "bob", "Bob")  # a second tab of the same person
    wait_for(lambda: [m["id"] for m in chat.members] == ["bob"])
    assert chat.members == [{"id": "bob", "name": "Bob", "color": "#0090ff"}]
    seen: list[list[str]] = []
    chat.observe(lambda change: seen.append([m["id"] for m in change["new"]]), "members")
    carol = browsers(chat.channel, "carol", "Carol")
    wait_for(lambda: [m["id"] for m in chat.members] == ["bob", "carol"])
    bob.close()
    time.sleep(0.3)
    assert [m["id"] for m in chat.members] == ["bob", "carol"], "bob still has a tab open"
    bob2.close()
    carol.close()
    wait_for(lambda: chat.members == [])
    assert seen[0] == ["bob", "carol"] and seen[-1] == []


def test_send_records_at_once_and_reaches_browsers_and_other_kernels(
    make_chat: Callable[..., Chat], browsers: Callable[..., Browser]
) -> None:
    """chat.send posts `chat-message` over REST: in chat.df at once, heard by browsers and kernels."""
    name = room()
    ann = make_chat(name, user={"id": "ann", "name": "Ann"})
    bob = make_chat(name, user={"id": "bob", "name": "Bob"})
    page = browsers(ann.channel, "carol")
    got: list[dict[str, Any]] = []
    ann.on_message(got.append)
    mid = ann.send("**build** finished")
    df = ann.df
    assert list(df.columns) == ["time", "user_id", "name", "text", "id", "via", "history", "relayed_by"]
    assert df.iloc[-1][["id", "user_id", "name", "text", "via"]].tolist() == [
        mid,
        "ann",
        "Ann",
        "**build** finished",
        "python",
    ]
    assert str(df["time"].dt.tz) == "UTC"
    bob.wait(1, timeout=5)
    assert bob.messages[0]["id"] == mid and bob.messages[0]["via"] == "python"
    wait_for(lambda: page.events(SERVER_MESSAGE))
    data = page.events(SERVER_MESSAGE)[0].data
    assert data["id"] == mid and data["text"] == "**build** finished" and data["user"]["id"] == "ann"
    time.sleep(0.3)
    assert got == [] and len(ann.df) == 1, "no callback and no duplicate for our own message"
    bot = ann.send("beep", user={"id": "ci", "name": "CI", "color": "#46a758"})
    bob.wait(2, timeout=5)
    assert bob.messages[-1]["id"] == bot and bob.messages[-1]["name"] == "CI"
    with pytest.raises(ValueError, match="empty"):
        ann.send("  ")


def test_browser_messages_are_recorded_with_the_stamped_sender(
    make_chat: Callable[..., Chat], browsers: Callable[..., Browser]
) -> None:
    """A client event's sender is the server's user_id, named from its presence info, not its claims."""
    chat = make_chat(room(), user={"id": "ann"})
    bob = browsers(chat.channel, "bob", "Bob")
    wait_for(lambda: bool(chat.members))
    bob.send(MESSAGE, piece("m1", "<script>x</script> hi", {"id": "ann", "name": "Impostor"}))
    chat.wait(1, timeout=5)
    msg = chat.messages[0]
    assert (msg["user_id"], msg["name"], msg["via"], msg["text"]) == (
        "bob",
        "Bob",
        "browser",
        "<script>x</script> hi",
    )
    bob.send(MESSAGE, piece("m1", "again"))  # a resend after a rate-limit error: ignored
    time.sleep(0.3)
    assert len(chat.df) == 1


def test_long_messages_travel_in_parts(
    make_chat: Callable[..., Chat], browsers: Callable[..., Browser]
) -> None:
    """Over 9 KB a message goes as parts (each event under 10 KB) and is joined on receipt."""
    name = room()
    ann = make_chat(name, user={"id": "ann"})
    bob = make_chat(name, user={"id": "bob"})
    page = browsers(ann.channel, "carol")
    text = "ü" * 12_000 + " the end"
    mid = ann.send(text)
    bob.wait(1, timeout=5)
    assert bob.messages[0]["text"] == text and bob.messages[0]["id"] == mid
    wait_for(lambda: len(page.events(SERVER_MESSAGE)) >= 3)
    for event in page.events(SERVER_MESSAGE):
        assert len(event.raw.encode()) < 10 * 1024 and event.data["parts"] >= 3
    with pytest.raises(ValueError, match="too long"):
        ann.send("x" * (PIECE_BYTES * (MAX_PARTS + 1)))


def test_on_message_runs_on_the_receiver_thread_while_the_main_thread_is_busy(
    make_chat: Callable[..., Chat], browsers: Callable[..., Browser]
) -> None:
    """A bot answers from its callback while this (main) thread sleeps, as a running cell would."""
    chat = make_chat(room(), user={"id": "bot", "name": "Bot"})
    page = browsers(chat.channel, "ann", "Ann")
    threads: list[str] = []

    def answer(msg: dict[str, Any]) -> None:
        threads.append(threading.current_thread().name)
        if msg["text"].startswith("!ping"):
            chat.send(f"pong, {msg['name']}")

    chat.on_message(answer)
    remove = chat.on_message(lambda msg: threads.append("removed"))
    remove()
    wait_for(lambda: bool(chat.members))
    page.send(MESSAGE, piece("q1", "!ping"))
    time.sleep(1.0)  # busy: the answer must come meanwhile
    pongs = [e for e in page.events(SERVER_MESSAGE) if e.data["text"] == "pong, Ann"]
    assert pongs and threads == ["livewidget-io"]


def test_a_late_joiner_gets_the_history_from_a_kernel(
    make_chat: Callable[..., Chat], browsers: Callable[..., Browser]
) -> None:
    """History lives in the members: a newcomer asks, a kernel answers in chunks under 10 KB."""
    name = room()
    ann = make_chat(name, user={"id": "ann"})
    for i in range(130):
        ann.send(f"message {i} " + "x" * 120)
    late = browsers(ann.channel, "zed")
    wait_for(lambda: any(m["id"] == "zed" for m in ann.members))
    late.send(HISTORY_REQUEST, {"req": "q1", "since": 0, "limit": 100})
    wait_for(lambda: any(e.data.get("done") for e in late.events(HISTORY)), timeout=10)
    answers = late.events(HISTORY)
    assert len(answers) >= 2 and all(len(e.raw.encode()) < 10 * 1024 for e in answers)
    texts = [p["text"] for e in answers for p in e.data["pieces"]]
    assert len(texts) == 100 and texts[0].startswith("message 30 ") and texts[-1].startswith("message 129 ")
    assert all(p["via"] == "python" for e in answers for p in e.data["pieces"])

    # A kernel that joins later asks by itself and records what it is told, marked as history.
    bob = make_chat(name, user={"id": "bob"}, max_history=500)
    bob.wait(130, timeout=15)
    df = bob.df
    assert len(df) == 130 and bool(df["history"].all())
    assert df["text"].iloc[0].startswith("message 0 ")


def test_answers_are_left_to_whoever_has_heard_more(
    make_chat: Callable[..., Chat], browsers: Callable[..., Browser]
) -> None:
    """A member cancels its answer when one with an older horizon answered first."""
    name = room()
    ann = make_chat(name, user={"id": "ann"})
    ann.send("hello")
    asker = browsers(ann.channel, "zed")
    other = browsers(ann.channel, "old")
    wait_for(lambda: len(ann.members) == 2)
    asker.send(HISTORY_REQUEST, {"req": "q2", "since": 0})
    other.send(HISTORY, {"req": "q2", "horizon": 1, "seq": 0, "done": True, "pieces": []})
    time.sleep(0.6)
    assert [e.data.get("req") for e in asker.events(HISTORY)] == ["q2"]  # only `other`'s


def test_history_trait_holds_the_recorded_messages(make_chat: Callable[..., Chat]) -> None:
    """_history: one JSON line per message (piece + via), for views opened later on this kernel."""
    chat = make_chat(room(), user={"id": "ann", "name": "Ann"})
    chat.send("one")
    chat.send("two")
    wait_for(lambda: chat._history.count(b"\n") == 1, timeout=5)
    lines = [json.loads(line) for line in chat._history.decode().splitlines()]
    assert [line["data"]["text"] for line in lines] == ["one", "two"]
    assert lines[0]["event"] == SERVER_MESSAGE and lines[0]["data"]["via"] == "python"
    assert lines[0]["user_id"] == "ann" and lines[0]["channel"] == chat.channel


def test_kernel_client_events_are_paced(
    monkeypatch: pytest.MonkeyPatch, make_chat: Callable[..., Chat]
) -> None:
    """The kernel sends client events no faster than KERNEL_RATE (Pusher refuses more than 10/s)."""
    chat = make_chat(room(), user={"id": "ann"})
    times: list[float] = []
    assert chat._receiver is not None
    monkeypatch.setattr(chat._receiver, "trigger", lambda *a: times.append(time.monotonic()))
    from livewidget._loop import io_loop

    for i in range(12):
        io_loop().call_soon_threadsafe(chat._queue, HISTORY, {"n": i})
    wait_for(lambda: len(times) == 12, timeout=5)
    assert times[-1] - times[0] >= (12 - chat_module.KERNEL_RATE) / chat_module.KERNEL_RATE - 0.1


def test_a_string_user_id_is_accepted(make_chat: Callable[..., Chat]) -> None:
    """Chat(room, user="alice") works like user={"id": "alice"}; other types say what is expected."""
    chat = make_chat(room(), user="alice")
    assert chat.me == {"id": "alice", "name": "alice", "color": chat.me["color"]}
    assert chat._user["id"] == "alice"
    with pytest.raises(TypeError, match="user must be a user id"):
        Chat("ok", user=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="user"):
        Chat("ok", user="")


def test_history_answers_cannot_forge_authorship(
    make_chat: Callable[..., Chat], browsers: Callable[..., Browser]
) -> None:
    """A member answering the kernel's history request cannot attribute messages to others: they are
    kept as relayed by that member (in messages, df and the `_history` its views start from)."""
    name = room()
    mallory = browsers(f"presence-chat-{name}", "mallory")
    chat = make_chat(name, user={"id": "ann"})
    wait_for(lambda: bool(mallory.events(HISTORY_REQUEST)), timeout=10)
    req = mallory.events(HISTORY_REQUEST)[0].data["req"]
    t = int(time.time() * 1000) - 60_000
    pieces = [
        {**piece("f1", "I resign", {"id": "bob", "name": "Bob"}, t), "via": "python"},
        {**piece("m1", "my own words", {"id": "mallory"}, t + 1), "via": "browser"},
        {**piece("k1", "claims a kernel", {"id": "ann:kernel"}, t + 2), "via": "browser"},
        {**piece("a1", "puts words in Ann's mouth", {"id": "ann"}, t + 3), "via": "browser"},
    ]
    mallory.send(HISTORY, {"req": req, "horizon": 0, "seq": 0, "done": True, "pieces": pieces})
    chat.wait(4, timeout=10)
    by_id = {m["id"]: (m["user_id"], m["relayed_by"], m["history"]) for m in chat.messages}
    assert by_id == {
        "f1": ("bob", "mallory", True),
        "m1": ("mallory", None, True),
        "k1": ("ann:kernel", "mallory", True),
        "a1": ("ann", "mallory", True),
    }
    df = chat.df
    assert [None if v != v else v for v in df["relayed_by"]] == ["mallory", None, "mallory", "mallory"]
    wait_for(lambda: chat._history.count(b"\n") == 3, timeout=5)
    lines = [json.loads(line) for line in chat._history.decode().splitlines()]
    assert [line["data"].get("relayed_by") for line in lines] == ["mallory", None, "mallory", "mallory"]

    # Passed on again by Ann's own kernel, the forged "a1" is still not first-hand (no laundering).
    late = make_chat(name, user={"id": "zed"})
    late.wait(4, timeout=15)
    relayed = {m["id"]: m["relayed_by"] for m in late.messages}
    assert relayed["a1"] == "ann:kernel" and relayed["f1"] == "ann:kernel" and relayed["m1"] == "ann:kernel"


def test_parts_are_joined_per_sender_and_incomplete_ones_are_capped(
    make_chat: Callable[..., Chat], browsers: Callable[..., Browser], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another member cannot complete (hijack) someone's multi-part message; first parts alone are
    kept at most PENDING_PER_SENDER per sender, PENDING_TOTAL in all, PARTS_TTL seconds."""
    name = room()
    chat = make_chat(name, user={"id": "ann"})
    bob = browsers(chat.channel, "bob")
    mallory = browsers(chat.channel, "mallory")
    bob.send(MESSAGE, {**piece("long", "hello "), "part": 0, "parts": 2})
    time.sleep(0.2)
    mallory.send(MESSAGE, {**piece("long", "FORGED"), "part": 1, "parts": 2})
    wait_for(lambda: len(chat._parts) == 2, timeout=5)
    bob.send(MESSAGE, {**piece("long", "world"), "part": 1, "parts": 2})
    chat.wait(1, timeout=10)
    assert [(m["user_id"], m["text"]) for m in chat.messages] == [("bob", "hello world")]

    for i in range(chat_module.PENDING_PER_SENDER + 3):  # paced under the 10 client events a second
        mallory.send(MESSAGE, {**piece(f"m{i}", "x" * 100), "part": 0, "parts": 12})
        time.sleep(0.12)
    wait_for(lambda: ("mallory", f"m{chat_module.PENDING_PER_SENDER + 2}") in chat._parts, timeout=5)
    assert sum(1 for k in chat._parts if k[0] == "mallory") == chat_module.PENDING_PER_SENDER
    # in all: many senders (as the receiver hands them over), never more than PENDING_TOTAL
    for i in range(chat_module.PENDING_TOTAL * 2):
        event = ClientEvent(
            MESSAGE, chat.channel, {**piece(f"p{i}", "x"), "part": 0, "parts": 3}, None, f"u{i}"
        )
        chat._on_event(event)
    assert len(chat._parts) == chat_module.PENDING_TOTAL
    monkeypatch.setattr(chat_module, "PARTS_TTL", -1.0)  # everything pending is now expired
    chat._on_event(ClientEvent(MESSAGE, chat.channel, {**piece("z", "x"), "part": 0, "parts": 2}, None, "u"))
    assert list(chat._parts) == [("u", "z")]

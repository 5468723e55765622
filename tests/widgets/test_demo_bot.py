"""The demo's chat bot as a member of the room: listed online (a Python bot has no browser view)."""

from __future__ import annotations

from typing import Any

from livewidget._demo import BOT
from livewidget.server import LocalServer
from livewidget.widgets import Chat

from .conftest import creds, wait_for


def test_a_bot_joined_as_member_is_listed_online_and_a_kernel_is_not(server: LocalServer, comms: list[Any]):
    """``as_member=True`` (the demo bot): its kernel joins as the bot itself, listed in ``members``
    (and in the browser's list, which hides only ``livewidget_kernel`` members); a plain Chat's kernel
    stays a hidden member (its person is there through the browser)."""
    alice = Chat("demo-bot-room", user={"id": "alice", "name": "Alice"}, **creds(server))
    bot = Chat("demo-bot-room", user=dict(BOT), as_member=True, **creds(server))
    try:
        wait_for(lambda: any(m["id"] == "demo-bot" for m in alice.members), timeout=10)
        assert [m["name"] for m in alice.members] == ["Demo bot"], "alice's kernel is not a person"
        assert alice._people["demo-bot"] == {"name": "Demo bot", "color": "#7c3aed"}
        assert alice._people["alice:kernel"]["livewidget_kernel"] is True
    finally:
        bot.close()
        alice.close()

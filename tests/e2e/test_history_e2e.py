"""Channel history end to end: a process publishes jobs and chat messages and ends; a ProgressBoard and a
Chat opened afterwards in a fresh kernel show them, in the browser (from its own rewind) and in ``df``.

The publisher is a plain Python process with the kernels' ``LIVEWIDGET_URL`` (what a notebook kernel
that ran the jobs and then ended leaves behind: nothing but the server's history).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from .conftest import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BOARD = ".jp-NotebookPanel:visible .lw-board"
CHAT = ".jp-NotebookPanel:visible .lw-chat"

PUBLISHER = """
import io, sys, livewidget
channel, room = sys.argv[1], sys.argv[2]
for name, fail in (("first", False), ("second", True)):
    try:
        with livewidget.progress(total=3, desc=name, job=name, channel=channel, file=io.StringIO()) as bar:
            for i in range(3):
                if fail and i == 2:
                    raise ValueError("broke")
                bar.update()
    except ValueError:
        pass
chat = livewidget.Chat(room, user={"id": "bot", "name": "Bot"}, record=False)
for text in ("hello from before", "still there?"):
    chat.send(text)
chat.close()

"""


def test_board_and_chat_opened_later_show_the_history(
    notebooks: Any, pusher_server: Any, frontend: str
) -> None:
    mark = uuid.uuid4().hex[:8]
    channel, room = f"progress-hist-{mark}", f"hist-{mark}"
    s = pusher_server
    env = {**os.environ, "LIVEWIDGET_URL": f"http://{s.key}:{s.secret}@{s.host}:{s.port}/apps/{s.app_id}"}
    done = subprocess.run(
        [sys.executable, "-c", PUBLISHER, channel, room], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr

    nb = notebooks(
        "history_later.ipynb",
        [
            f"import json\nimport livewidget\nboard = livewidget.ProgressBoard({channel!r})\nboard",
            f'chat = livewidget.Chat({room!r}, user={{"id": "ann", "name": "Ann"}})\nchat',
        ],
    )
    nb.run_all()
    nb.widget(".lw-board", timeout=30)
    nb.widget(".lw-chat", timeout=30)

    def statuses() -> dict[str, str]:
        rows = nb.page.locator(f"{BOARD} .lw-job").evaluate_all(
            "(els) => els.map((e) => [e.dataset.job, e.dataset.status])"
        )
        return dict(rows)

    wait_until(lambda: statuses() == {"first": "done", "second": "failed"}, 20, "the jobs' final states")

    def messages() -> list[list[Any]]:
        return list(
            nb.page.locator(f"{CHAT} .lw-msg").evaluate_all(
                "(els) => els.map((e) => [e.querySelector('.lw-msg-text')?.textContent ?? '',"
                " e.classList.contains('lw-history')])"
            )
        )

    wait_until(lambda: len(messages()) == 2, 20, "the room's last messages")
    assert [text.strip() for text, _ in messages()] == ["hello from before", "still there?"]
    assert all(history for _, history in messages()), messages()
    nb.screenshot("history-later-light")

    got = nb.kernel_json(
        "print(json.dumps({'jobs': dict(zip(board.df['job'], board.df['status'])),"
        " 'texts': chat.df['text'].tolist(), 'history': chat.df['history'].tolist(),"
        " 'raw': bool(board._store.to_frame()['history'].all())}))"
    )
    assert got["jobs"] == {"first": "done", "second": "failed"}
    assert got["texts"] == ["hello from before", "still there?"] and got["history"] == [True, True]
    assert got["raw"] is True

"""``livewidget demo``'s pieces that need no browser: the bot's manners, JupyterLab's defaults, and
what it says about the embedded server (the whole demo runs in tests/e2e/test_notebooks_e2e.py)."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from livewidget._demo import BOT_NEWS_EVERY, BOT_QUIET_AFTER, BOT_TIPS, BotBrain, lab_env, server_note


def test_the_bot_does_not_spam_an_empty_room() -> None:
    """An hour with nobody talking: a few tips, minutes apart, never the same twice in a row, then quiet."""
    brain = BotBrain(random.Random(1), now=0.0)
    posts = [(t, tip) for t in range(3600) if (tip := brain.tip_due(float(t)))]
    assert len(posts) == BOT_QUIET_AFTER
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(posts)]
    assert all(gap >= BOT_NEWS_EVERY[0] for gap in gaps), gaps
    assert posts[0][0] >= BOT_NEWS_EVERY[0]
    assert all(a[1] != b[1] for a, b in itertools.pairwise(posts))


def test_the_bot_answers_only_when_addressed_and_talk_re_arms_its_tips() -> None:
    brain = BotBrain(random.Random(2), now=0.0)
    for t in range(3600):
        brain.tip_due(float(t))
    assert brain.tip_due(4000.0) is None  # quiet
    assert brain.reply({"text": "lunch at noon?", "name": "Ann"}, 4000.0) is not None  # a question
    assert brain.reply({"text": "ok see you there", "name": "Bob"}, 4001.0) is None  # not for the bot
    assert "Ann" in (brain.reply({"text": "hello", "name": "Ann"}, 4002.0) or "")
    assert "running" in (brain.reply({"text": "bot, status please", "name": "Ann"}, 4003.0) or "")
    later = [tip for t in range(4004, 8000) if (tip := brain.tip_due(float(t)))]
    assert 1 <= len(later) <= BOT_QUIET_AFTER, "someone talked: a few tips again, then quiet"


def test_tips_cycle_without_an_immediate_repeat() -> None:
    for seed in range(50):
        brain = BotBrain(random.Random(seed))
        tips = [brain._next_tip() for _ in range(len(BOT_TIPS) * 4)]
        assert all(a != b for a, b in itertools.pairwise(tips)), seed
        assert set(tips) == set(BOT_TIPS)


def test_jupyterlab_news_toast_and_update_check_are_off_by_default(tmp_path: Path) -> None:
    """The demo's JupyterLab gets fetchNews=false as a default setting (the toast asked even with
    --LabApp.news_url=None); the user's own config path is kept after it."""
    env = lab_env({"JUPYTER_CONFIG_PATH": "/elsewhere", "PATH": "/bin"}, tmp_path)
    assert env["JUPYTER_CONFIG_PATH"].split(":") == [str(tmp_path / ".jupyter-config"), "/elsewhere"]
    probe = "from jupyterlab_server.settings_utils import _get_overrides; print(_get_overrides('/none')[0])"
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    expected = "{'fetchNews': 'false', 'checkForUpdates': False}"
    assert f"'@jupyterlab/apputils-extension:notification': {expected}" in out.stdout


def test_reusing_is_said_only_of_a_server_that_ran_before() -> None:
    """`./demo.sh --port 0` said it was "reusing" the server it had just started."""
    started = SimpleNamespace(source="embedded", port=41234)
    assert server_note(started, 0, running_before=False) is None
    assert server_note(started, 5000, running_before=False) is None
    assert server_note(started, None, running_before=False) is None
    assert "reusing" in (server_note(started, 0, running_before=True) or "")
    assert "to use port 5000" in (server_note(started, 5000, running_before=True) or "")
    assert "to use port" not in (server_note(started, 41234, running_before=True) or "")
    assert server_note(SimpleNamespace(source="environment", port=1), 0, running_before=True) is None

"""Every public entry point checks its arguments and says what it expected (issue 15 item 10).

``Feed(123)`` used to fail with "'int' object is not iterable"; now each bad argument raises
``TypeError`` (wrong type) or ``ValueError`` (wrong value; ``ConfigurationError`` is one) naming the
argument and what was expected, before anything is started.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import livewidget

from .conftest import creds

DEEP: Any = []
_inner = DEEP
for _ in range(1000):
    _inner.append([])
    _inner = _inner[0]


def cases() -> list[tuple[str, Callable[[dict[str, Any]], Any], type[Exception], str]]:
    F, C, P, L = livewidget.Feed, livewidget.Chat, livewidget.ProgressBoard, livewidget.LiveChart
    return [
        ("Feed(123)", lambda kw: F(123, **kw), TypeError, "channels must be a name .* not int"),
        ("Feed([ok, 5])", lambda kw: F(["ok", 5], **kw), TypeError, "channels must hold strings"),
        ("Feed([])", lambda kw: F([], **kw), ValueError, "at least one channel"),
        ("Feed(bad name)", lambda kw: F("bad name", **kw), ValueError, "invalid channel name 'bad name'"),
        ("Feed(events=5)", lambda kw: F("c", events=5, **kw), TypeError, "events must be a name"),
        (
            "Feed(max_rows=str)",
            lambda kw: F("c", max_rows="10", **kw),
            TypeError,
            "max_rows must be an integer",
        ),
        ("Feed(max_rows=0)", lambda kw: F("c", max_rows=0, **kw), ValueError, "max_rows must be at least 1"),
        ("Feed(keep=-1)", lambda kw: F("c", keep=-1, **kw), ValueError, "keep must be at least 0"),
        (
            "Feed(record=str)",
            lambda kw: F("c", record="yes", **kw),
            TypeError,
            "record must be True or False",
        ),
        (
            "Feed(authorize=5)",
            lambda kw: F("c", authorize=5, **kw),
            TypeError,
            "authorize must be a function",
        ),
        (
            "Feed(user=str)",
            lambda kw: F("c", user="bob", **kw),
            ValueError,
            "user must be a dict with an 'id'",
        ),
        ("Feed(title=5)", lambda kw: F("c", title=5, **kw), TypeError, "title must be a string"),
        (
            "Feed(port=str)",
            lambda kw: F("c", **{**kw, "port": "6001"}),
            ValueError,
            "port must be an integer",
        ),
        ("Feed(url=5)", lambda kw: F("c", url=5), ValueError, "url must be a string"),
        ("Feed(use_tls=str)", lambda kw: F("c", **{**kw, "use_tls": "no"}), ValueError, "use_tls must be"),
        ("LiveChart(5)", lambda kw: L(5, y="v", **kw), TypeError, "channel must be a name"),
        ("LiveChart(y=5)", lambda kw: L("c", y=5, **kw), TypeError, "y must be a name"),
        ("LiveChart(y=[])", lambda kw: L("c", y=[], **kw), ValueError, "y must name at least one field"),
        ("LiveChart(x=5)", lambda kw: L("c", y="v", x=5, **kw), TypeError, "x must be a string"),
        (
            "LiveChart(height)",
            lambda kw: L("c", y="v", height="big", **kw),
            TypeError,
            "height must be an integer",
        ),
        (
            "LiveChart(max_points=0)",
            lambda kw: L("c", y="v", max_points=0, **kw),
            ValueError,
            "max_points must",
        ),
        ("LiveChart(kind)", lambda kw: L("c", y="v", kind="pie", **kw), ValueError, "kind must be one of"),
        ("LiveChart(colors=5)", lambda kw: L("c", y="v", colors=5, **kw), TypeError, "colors must be a name"),
        ("ProgressBoard(5)", lambda kw: P(5, **kw), TypeError, "channel must be a name"),
        (
            "ProgressBoard(max_jobs)",
            lambda kw: P("p", max_jobs="5", **kw),
            TypeError,
            "max_jobs must be an integer",
        ),
        (
            "ProgressBoard(notify)",
            lambda kw: P("p", notify=1, **kw),
            TypeError,
            "notify must be True or False",
        ),
        ("Chat(5)", lambda kw: C(5, **kw), TypeError, "room must be a string"),
        ("Chat(room)", lambda kw: C("has space", **kw), ValueError, "invalid room name"),
        ("Chat(user=5)", lambda kw: C("r", user=5, **kw), TypeError, "user must be a user id"),
        (
            "Chat(user={})",
            lambda kw: C("r", user={"name": "x"}, **kw),
            ValueError,
            "user must be a non-empty",
        ),
        (
            "Chat(max_history)",
            lambda kw: C("r", max_history="5", **kw),
            TypeError,
            "max_history must be an int",
        ),
        ("publish(5, e)", lambda kw: livewidget.publish(5, "e", **kw), TypeError, "channel must be a string"),
        (
            "publish(bad!)",
            lambda kw: livewidget.publish("bad channel name!", "e", 1, **kw),
            ValueError,
            "invalid channel name 'bad channel name!'.*no spaces",
        ),
        ("publish(c, 5)", lambda kw: livewidget.publish("c", 5, **kw), TypeError, "event must be a string"),
        ("publish(c, '')", lambda kw: livewidget.publish("c", "", **kw), ValueError, "event name is empty"),
        ("publish(long)", lambda kw: livewidget.publish("c", "e" * 201, **kw), ValueError, "at most 200"),
        ("publish(pusher:)", lambda kw: livewidget.publish("c", "pusher:x", **kw), ValueError, "reserved"),
        (
            "publish(deep)",
            lambda kw: livewidget.publish("c", "e", DEEP, **kw),
            ValueError,
            "nested deeper than 100",
        ),
        (
            "publish(object)",
            lambda kw: livewidget.publish("c", "e", {"a": object()}, **kw),
            TypeError,
            r"cannot encode data\['a'\]",
        ),
        (
            "publish(wait=str)",
            lambda kw: livewidget.publish("c", "e", wait="y", **kw),
            TypeError,
            "wait must be",
        ),
        (
            "Publisher.publish(bad)",
            lambda kw: livewidget.Publisher(**kw).publish("a b", "e"),
            ValueError,
            "invalid channel name",
        ),
        ("points(5)", lambda kw: livewidget.points(5, **kw), TypeError, "channel must be a string"),
        (
            "points(interval=str)",
            lambda kw: livewidget.points("c", interval="fast", **kw),
            TypeError,
            "interval must be a number",
        ),
        (
            "points(interval=-1)",
            lambda kw: livewidget.points("c", interval=-1, **kw),
            ValueError,
            "interval must be at least 0",
        ),
        (
            "points().add(5)",
            lambda kw: livewidget.points("c", **kw).add(5),
            TypeError,
            "a point is a mapping",
        ),
        (
            "progress(channel=5)",
            lambda kw: livewidget.progress(range(3), channel=5),
            TypeError,
            "channel must be a string",
        ),
        (
            "progress(channel=bad)",
            lambda kw: livewidget.progress(range(3), channel="a b"),
            ValueError,
            "invalid channel name 'a b'",
        ),
        ("connect(5)", lambda kw: livewidget.connect(5), ValueError, "url must be a string"),
        (
            "connect(port)",
            lambda kw: livewidget.connect(**{**kw, "port": 70000}),
            ValueError,
            "port must be an integer from 1 to 65535",
        ),
        ("connect(embedded)", lambda kw: livewidget.connect(embedded="yes"), ValueError, "embedded must be"),
    ]


@pytest.mark.parametrize("call, error, message", [c[1:] for c in cases()], ids=[c[0] for c in cases()])
def test_bad_arguments_say_what_was_expected(server, comms, call, error, message):
    before = len(comms)
    with pytest.raises(error, match=message):
        call(creds(server))
    assert len(comms) == before, "nothing reached a front end"

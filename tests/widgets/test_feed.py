"""Feed in the kernel: recording, DataFrame, callbacks, coalesced traffic, authorization, bad input."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pusher
import pytest

from livewidget.exceptions import ConfigurationError
from livewidget.widgets import _base

from .conftest import creds, simulate_custom, wait_for


def sdk(server: Any) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=server.app_id,
        key=server.key,
        secret=server.secret,
        host=server.host,
        port=server.port,
        ssl=False,
    )


def test_records_every_event_once_in_order(make_feed, server):
    """Events on all channels are recorded once, in arrival order, with flattened data columns."""
    feed = make_feed(["t-a", "private-t-b"])
    client = sdk(server)
    for i in range(20):
        client.trigger("t-a" if i % 2 else "private-t-b", "tick", {"i": i, "m": {"loss": 1.0 / (i + 1)}})
    client.trigger("t-a", "note", "plain text, not JSON")
    feed.wait(21, timeout=10)
    df = feed.df
    assert len(df) == 21
    assert list(df["i"][:20]) == list(range(20))
    assert set(df["channel"][:20]) == {"t-a", "private-t-b"}
    assert df["m.loss"][3] == pytest.approx(0.25)
    assert df["data"].iloc[-1] == "plain text, not JSON"
    assert str(df["time"].dtype).startswith("datetime64")
    assert feed.total == 21
    assert [e["data"]["i"] for e in feed.events[:20]] == list(range(20))


def test_last_events_keep_and_filter(make_feed, server):
    """`events` keeps the last `keep`; `events=` filters by name; `last` follows after a flush."""
    feed = make_feed("t-keep", events=["wanted"], keep=3)
    client = sdk(server)
    for i in range(6):
        client.trigger("t-keep", "wanted" if i != 4 else "other", {"n": i})
    feed.wait(5, timeout=10)
    assert [e["data"]["n"] for e in feed.events] == [2, 3, 5]
    wait_for(lambda: feed.last is not None and feed.last["data"] == {"n": 5})
    assert feed.count == 5


def test_on_callbacks_run_on_the_receiver_thread(make_feed, server):
    """feed.on(event, cb) calls back on the I/O thread for that event; '*' for all; removable."""
    feed = make_feed("t-cb")
    seen: list[tuple[str, str]] = []
    remove = feed.on("ping", lambda row: seen.append((row["event"], threading.current_thread().name)))
    feed.on("*", lambda row: seen.append(("*", row["event"])))
    sdk(server).trigger("t-cb", "ping", {})
    feed.wait(1, timeout=10)
    wait_for(lambda: len(seen) == 2)
    assert ("ping", "livewidget-io") in seen and ("*", "ping") in seen
    remove()
    sdk(server).trigger("t-cb", "ping", {})
    feed.wait(2, timeout=10)
    time.sleep(0.1)
    assert len(seen) == 3


def test_wait_times_out_with_a_clear_message(make_feed):
    """wait() raises TimeoutError naming how many events came and the receiver state."""
    feed = make_feed("t-wait")
    with pytest.raises(TimeoutError, match=r"0 of 2 events.*connected"):
        feed.wait(2, timeout=0.3)


def test_max_rows_drops_oldest_and_reports(make_feed, server):
    """With max_rows, the oldest rows go and `dropped` says how many."""
    feed = make_feed("t-rows", max_rows=5)
    client = sdk(server)
    client.trigger_batch([{"channel": "t-rows", "name": "e", "data": json.dumps({"i": i})} for i in range(8)])
    feed.wait(8, timeout=10)
    assert list(feed.df["i"]) == [3, 4, 5, 6, 7]
    wait_for(lambda: feed.dropped == 3)


def test_flood_is_coalesced_and_history_is_binary(make_feed, server, comms):
    """A flood of events gives a few comm messages per second; history travels as a binary buffer."""
    feed = make_feed("t-flood", max_log=50)
    hub = server.server.apps.by_key[server.key]
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < 2.0:  # ~2 s of a few thousand events per second
        server.call(lambda: server.server._run(hub, hub.trigger("e", '{"x":1}', ["t-flood"], time.time())))
        sent += 1
    feed.wait(sent, timeout=20)
    time.sleep(_base.HISTORY_EVERY + 0.5)
    msgs = [m for m in comms if m[1] == "comm_msg" and m[0] >= start]
    duration = comms[-1][0] - start
    assert sent > 1000
    assert len(msgs) / duration < 30, f"{len(msgs)} messages in {duration:.1f} s"
    # ipywidgets moves bytes out of the JSON state into binary buffers, listed in buffer_paths
    history = [m for m in msgs if ["_history"] in (m[2].get("buffer_paths") or [])]
    assert history, "no history update was sent"
    assert history[-1][3], "history must travel in a binary buffer"
    lines = bytes(history[-1][3][0]).decode().splitlines()
    assert len(lines) == 50
    assert json.loads(lines[-1])["data"] == {"x": 1}


def test_auth_by_comm_message_and_no_secret_anywhere(make_feed, server, comms):
    """The browser's auth request over the comm is answered with a signature, never the secret."""
    feed = make_feed(["private-t-auth", "presence-t-room"], user={"id": "ann", "info": {"name": "Ann"}})
    simulate_custom(feed, {"type": "auth", "id": 7, "socket_id": "123.456", "channel_name": "private-t-auth"})
    simulate_custom(
        feed, {"type": "auth", "id": 8, "socket_id": "123.456", "channel_name": "presence-t-room"}
    )
    simulate_custom(feed, {"type": "auth", "id": 9, "socket_id": "123.456", "channel_name": "private-other"})
    replies = [m[2]["content"] for m in comms if m[1] == "comm_msg" and m[2].get("method") == "custom"]
    replies = [r for r in replies if r.get("type") == "auth"]  # not the relay stream's messages
    by_id = {r["id"]: r for r in replies}
    from livewidget.protocol.signatures import channel_auth

    assert by_id[7]["auth"] == channel_auth(server.key, server.secret, "123.456", "private-t-auth")
    assert json.loads(by_id[8]["channel_data"]) == {"user_id": "ann", "user_info": {"name": "Ann"}}
    assert "did not ask for private-other" in by_id[9]["error"]
    everything = json.dumps([m[2] for m in comms], default=str) + "".join(
        bytes(b).decode("utf-8", "replace") for m in comms for b in m[3]
    )
    assert server.secret not in everything
    assert server.key in everything  # the public key does go to the browser


def test_authorize_callback_refuses(make_feed):
    """authorize= can refuse a channel; the refusal reaches the browser as an error."""
    feed = make_feed(["private-t-yes", "private-t-no"], authorize=lambda ch: ch.endswith("yes"))
    assert "auth" in feed._sign("1.2", "private-t-yes")
    with pytest.raises(PermissionError, match="authorize= refused private-t-no"):
        feed._sign("1.2", "private-t-no")
    with pytest.raises(PermissionError, match="invalid socket id"):
        feed._sign("nope", "private-t-yes")


def _post(url: str, body: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "text/plain"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def test_auth_endpoint_answers_while_the_main_thread_is_busy(make_feed, server):
    """The kernel's HTTP auth endpoint signs for the widget's token even while the main thread is busy."""
    feed = make_feed("private-t-http")
    url, token = feed._auth["url"], feed._auth["token"]
    assert url.startswith("http://127.0.0.1:")
    result: dict[str, Any] = {}
    t = threading.Thread(
        target=lambda: result.update(
            answer=_post(url, {"token": token, "socket_id": "1.2", "channel_name": "private-t-http"})
        )
    )
    t.start()
    end = time.monotonic() + 0.5
    while time.monotonic() < end:  # keep the main thread busy, as a running cell would
        sum(range(1000))
    t.join(5)
    status, body, headers = result["answer"]
    assert status == 200 and body["auth"].startswith(server.key + ":")
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert _post(url, {"token": "wrong", "socket_id": "1.2", "channel_name": "private-t-http"})[0] == 403
    status, body, _ = _post(url, {"token": token, "socket_id": "1.2", "channel_name": "private-x"})
    assert status == 403 and "did not ask" in body["error"]
    assert _post(url, {"nope": 1})[0] == 400
    preflight = urllib.request.Request(url, method="OPTIONS")
    with urllib.request.urlopen(preflight, timeout=5) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Private-Network"] == "true"
    feed.close()
    assert _post(url, {"token": token, "socket_id": "1.2", "channel_name": "private-t-http"})[0] == 403


def test_send_publishes_and_checks_data(make_feed):
    """feed.send publishes to the first channel (or the one named); bad data raises before queueing."""
    feed = make_feed(["t-send", "t-send2"])
    feed.send("hello", {"a": 1})
    feed.send("hello", {"a": 2}, channel="t-send2")
    feed.wait(2, timeout=10)
    assert sorted(zip(feed.df["channel"], feed.df["a"], strict=True)) == [("t-send", 1), ("t-send2", 2)]
    with pytest.raises(ValueError, match="over the limit of 10240"):
        feed.send("big", "x" * 20_000)
    with pytest.raises(TypeError, match=r"data\['f'\]"):
        feed.send("bad", {"f": object()})


def test_bad_channel_names_raise(server, comms):
    """Invalid channel names raise ValueError naming the rule, before anything starts."""
    import livewidget

    with pytest.raises(ValueError, match="invalid channel name 'bad name'"):
        livewidget.Feed("bad name", **creds(server))
    with pytest.raises(ValueError, match="at least one channel"):
        livewidget.Feed([], **creds(server))
    with pytest.raises(ValueError, match="server-to-user"):
        livewidget.Feed("#server-to-user-1", **creds(server))


def test_unreachable_server_is_a_visible_status(comms):
    """An unreachable server shows status 'unavailable' with the reason, and a warning."""
    import livewidget

    with pytest.warns(RuntimeWarning, match="unavailable"):
        feed = livewidget.Feed("t-x", host="127.0.0.1", port=9, app_id="1", key="k", secret="s")
        wait_for(lambda: feed.status == "unavailable", timeout=10)
    assert "cannot reach 127.0.0.1:9" in feed.error
    feed.close()


def test_wrong_credentials_are_reported(server, comms):
    """A wrong key fails (4001); a wrong secret makes private channels refused, with the reason."""
    import livewidget

    with pytest.warns(RuntimeWarning):
        bad_key = livewidget.Feed("t-k", **{**creds(server), "key": "nokey"})
        wait_for(lambda: bad_key.status == "failed", timeout=10)
    assert "4001" in bad_key.error
    bad_key.close()
    with pytest.warns(RuntimeWarning, match="Invalid signature"):
        bad_secret = livewidget.Feed("private-t-s", **{**creds(server), "secret": "wrong"})
        wait_for(lambda: "Invalid signature" in bad_secret.error, timeout=10)
    assert re.search(r"[0-9a-f]{32}", bad_secret.error) is None, bad_secret.error  # no signature shown
    bad_secret.close()


def test_no_secret_means_public_only(server, comms):
    """Without a secret the widget still works for public channels; publishing says what is missing."""
    import livewidget

    feed = livewidget.Feed("t-pub", **{**creds(server), "secret": None})
    assert feed._auth == {}
    with pytest.raises(ConfigurationError, match="publishing needs the app secret"):
        feed.send("x", 1)
    feed.close()


def test_record_false_and_close(server, comms):
    """record=False starts no receiver; close() frees everything and is idempotent."""
    import livewidget

    feed = livewidget.Feed("t-norec", record=False, **creds(server))
    assert feed.status == "disabled" and feed._receiver is None
    with pytest.raises(Exception, match="record=False"):
        feed.wait(1, timeout=0.1)
    feed.close()
    feed.close()


def test_kernel_presence_member_is_marked(make_feed, server):
    """On presence channels the kernel's receiver is a marked member, apart from the browser's user."""
    make_feed("presence-t-members", user={"id": "bob", "info": {"name": "Bob"}})
    hub = server.server.apps.by_key[server.key]
    members = server.call(lambda: dict(hub.channels["presence-t-members"].members))
    assert list(members) == ["bob:kernel"]
    assert members["bob:kernel"][0] == {"name": "Bob", "livewidget_kernel": True}


def test_the_browser_cannot_widen_what_the_kernel_signs(make_feed, server, comms):
    """The synced `channels` (and `event_filter`) changed from the front end, as a browser would (a comm
    update message), never make the kernel sign, record or publish for channels Python did not give."""
    feed = make_feed(["private-t-mine"], events=["wanted"])
    feed.comm.handle_msg(
        {
            "content": {
                "data": {
                    "method": "update",
                    "state": {"channels": ["private-t-mine", "private-t-secret"], "event_filter": []},
                    "buffer_paths": [],
                }
            },
            "buffers": [],
        }
    )
    assert feed.channels == ["private-t-mine", "private-t-secret"]  # the trait did change...
    url, token = feed._auth["url"], feed._auth["token"]
    status, body, _ = _post(url, {"token": token, "socket_id": "1.2", "channel_name": "private-t-secret"})
    assert status == 403 and "did not ask for private-t-secret" in body["error"]  # ...what is signed did not
    assert _post(url, {"token": token, "socket_id": "1.2", "channel_name": "private-t-mine"})[0] == 200
    simulate_custom(feed, {"type": "auth", "id": 1, "socket_id": "1.2", "channel_name": "private-t-secret"})
    replies = [m[2]["content"] for m in comms if m[1] == "comm_msg" and m[2].get("method") == "custom"]
    replies = [r for r in replies if r.get("type") == "auth"]  # not the relay stream's messages
    assert "auth" not in replies[-1] and "did not ask for" in replies[-1]["error"]
    # set_state, as ipywidgets applies a front-end change, neither
    feed.set_state({"channels": ["private-t-secret"]})
    with pytest.raises(PermissionError):
        feed._sign("1.2", "private-t-secret")
    # the kernel still records only the events Python asked for
    from livewidget._publish import Publisher

    pub = Publisher(feed._settings)
    pub.publish("private-t-mine", "unwanted", 1, wait=True)
    pub.publish("private-t-mine", "wanted", 2, wait=True)
    feed.wait(1)
    time.sleep(0.2)
    assert [e["event"] for e in feed.events] == ["wanted"]
    pub.close()


def test_auth_endpoint_refuses_malformed_bodies_plainly(make_feed):
    """A nested or ill-typed body to the kernel's auth endpoint is a 400 with the expected shape."""
    feed = make_feed(["private-t-body"])
    url, token = feed._auth["url"], feed._auth["token"]
    for body in (
        [[[[[]]]]],
        {"token": token, "socket_id": ["1.2"], "channel_name": "private-t-body"},
        {"token": token, "socket_id": "1.2", "channel_name": {"x": 1}},
    ):
        assert _post(url, body)[0] == 400
    deep = ("[" * 5000 + "]" * 5000).encode()
    req = urllib.request.Request(url, data=deep, headers={"Content-Type": "text/plain"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 400 and "expected JSON" in json.loads(info.value.read())["error"]
    assert _post(url, {"token": token, "socket_id": "1.2", "channel_name": "private-t-body"})[0] == 200


def test_route_trait_is_reported_by_the_browser_and_changes_nothing_it_may_do(make_feed, server, comms):
    """``route`` is set by the browser (issue 12); unknown values are dropped, and it never widens
    what the kernel signs. A widget on a loopback server registers it for the Jupyter extension."""
    from livewidget import _routes

    feed = make_feed(["private-t-a"], record=False)
    cfg = feed._connection
    assert cfg["route"] == "auto" and cfg["serverId"] in _routes.targets()
    assert feed.route == ""
    feed.set_state({"route": "jupyter"})  # as a browser's update arrives
    assert feed.route == "jupyter"
    feed.set_state({"route": "anywhere; sign everything"})
    assert feed.route == ""
    feed.set_state({"route": "relay"})
    with pytest.raises(PermissionError, match="did not ask for private-other"):
        feed._sign("1.2", "private-other")
    assert "auth" in feed._sign("1.2", "private-t-a")


def test_registration_forgets_servers_that_stopped():
    """A new registration removes those of servers that no longer listen (the folder stays small)."""
    from livewidget import _routes
    from livewidget.server import LocalServer

    with LocalServer() as gone:
        sid = _routes.register(gone.app_id, gone.key, gone.host, gone.port)
    assert sid in _routes.targets()
    with LocalServer() as live:
        other = _routes.register(live.app_id, live.key, live.host, live.port)
        assert set(_routes.targets()) == {other}


def test_packed_points_are_one_row_each(make_feed, server, comms):
    """An event whose data is an array of objects (livewidget.points, LogHandler) is one row per object,
    in df, events, callbacks, wait() and the history; other arrays stay one row (issue 16)."""
    feed = make_feed("t-packed")
    seen: list[Any] = []
    feed.on("point", lambda row: seen.append(row["data"]))
    client = sdk(server)
    client.trigger("t-packed", "point", [{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.8, "extra": "x"}])
    client.trigger("t-packed", "point", [1, 2, 3])
    client.trigger("t-packed", "point", [])
    assert feed.wait(4, timeout=10) == 4
    df = feed.df
    assert df["step"].tolist()[:2] == [1, 2] and df["loss"].tolist()[:2] == [0.9, 0.8]
    assert df["data"].tolist()[:2] == [{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.8, "extra": "x"}]
    assert df["data"].tolist()[2:] == [[1, 2, 3], []]
    assert seen[:2] == [{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.8, "extra": "x"}]
    assert [e["data"] for e in feed.events][:2] == seen[:2]
    time.sleep(_base.HISTORY_EVERY + 0.5)
    history = [m for m in comms if m[1] == "comm_msg" and ["_history"] in (m[2].get("buffer_paths") or [])]
    lines = bytes(history[-1][3][0]).decode().splitlines()
    assert [json.loads(line)["data"] for line in lines] == [*seen[:2], [1, 2, 3], []]

"""Conformance of the HTTP REST API, with the official ``pusher`` SDK and raw signed requests.

The SDK is used wherever it can express the request; raw requests (signed here, independently of the
server's code, per rest-api.md *Authentication*) cover what it cannot: ``info`` on trigger, bad
signatures, stale timestamps, oversized or malformed bodies, and the ``/apps/{id}/users/...`` path.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pusher.errors
import pytest
import pytest_asyncio

from .conftest import Target
from .test_websocket import (
    Connect,
    client_factory,
    events_in,
    hmac_hex,
    rand_channel,
    rand_user,
    sdk_call,
    trigger_marker,
)

SOKETI_STATUS = "Soketi answers this error with HTTP 200 (it is no oracle for status codes)"


@pytest_asyncio.fixture
async def connect(target: Target) -> AsyncIterator[Connect]:
    """Open raw WebSocket connections to the target; all are closed after the test."""
    async for factory in client_factory(target):
        yield factory


def md5_hex(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def signed_params(
    target: Target,
    method: str,
    path: str,
    params: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    timestamp: int | None = None,
    body_md5: str | None = None,
    secret: str | None = None,
) -> dict[str, str]:
    """Query parameters of a signed request: auth_* (and body_md5 for a body) plus auth_signature."""
    query = {
        "auth_key": target.key,
        "auth_timestamp": str(int(time.time()) if timestamp is None else timestamp),
        "auth_version": "1.0",
        **(params or {}),
    }
    if body_md5 is not None:
        query["body_md5"] = body_md5
    elif body:
        query["body_md5"] = md5_hex(body)
    to_sign = "&".join(f"{k.lower()}={v}" for k, v in sorted(query.items()))
    query["auth_signature"] = hmac_hex(secret or target.secret, f"{method}\n{path}\n{to_sign}")
    return query


async def rest(
    target: Target,
    method: str,
    path: str,
    params: dict[str, str] | None = None,
    body: Any = None,
    **signing: Any,
) -> tuple[int, Any]:
    """Send one signed request; (HTTP status, JSON-decoded body). ``body`` may be bytes or JSON-able."""
    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    query = signed_params(target, method, path, params, raw, **signing)
    headers = {"Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, target.http_url + path, params=query, data=raw or None, headers=headers
        ) as resp,
    ):
        text = await resp.text()
    try:
        return resp.status, json.loads(text)
    except ValueError:
        return resp.status, text


def assert_json_error(status: int, body: Any, expected: int) -> None:
    assert status == expected, (status, body)
    assert isinstance(body, dict), f"error body is not a JSON object: {body!r}"
    assert isinstance(body.get("error"), str), body
    assert body["error"]


def event(channel: str, name: str = "lw-event", data: str = "{}", **extra: Any) -> dict[str, Any]:
    return {"name": name, "channels": [channel], "data": data, **extra}


# ---------------------------------------------------------------------------------------- triggering


@pytest.mark.asyncio
async def test_trigger_relays_data_byte_for_byte(connect: Connect, target: Target) -> None:
    """trigger's data reaches subscribers as exactly the string sent (spacing and unicode kept)."""
    client = await connect()
    channel = rand_channel()
    await client.subscribe(channel)
    odd = '{"hello":  "world" , "n": 1.50, "u": "h\u00e9llo \u2713"}'
    await sdk_call(target, "trigger", channel, "lw-odd", odd)
    assert (await client.expect("lw-odd", channel))["data"] == odd
    await sdk_call(target, "trigger", channel, "lw-dict", {"a": 1, "b": [1, 2]})
    assert (await client.expect("lw-dict", channel))["data"] == '{"a": 1, "b": [1, 2]}'
    await sdk_call(target, "trigger", channel, "lw-plain", "not json at all")
    assert (await client.expect("lw-plain", channel))["data"] == "not json at all"


@pytest.mark.asyncio
async def test_trigger_to_several_channels(connect: Connect, target: Target) -> None:
    """One trigger on several channels reaches the subscribers of each."""
    first, second = await connect(), await connect()
    one, two = rand_channel(), rand_channel("private-")
    await first.subscribe(one)
    await second.subscribe(two)
    await sdk_call(target, "trigger", [one, two], "lw-multi", "both")
    assert (await first.expect("lw-multi", one))["data"] == "both"
    assert (await second.expect("lw-multi", two))["data"] == "both"


@pytest.mark.asyncio
async def test_trigger_with_singular_channel_field(connect: Connect, target: Target) -> None:
    """An events body with "channel" (singular) instead of "channels" is delivered."""
    client = await connect()
    channel = rand_channel()
    await client.subscribe(channel)
    body = {"name": "lw-single", "channel": channel, "data": "one"}
    status, answer = await rest(target, "POST", f"/apps/{target.app_id}/events", body=body)
    assert status == 200, answer
    assert (await client.expect("lw-single", channel))["data"] == "one"


@pytest.mark.asyncio
async def test_channel_names_with_punctuation_work_over_rest(connect: Connect, target: Target) -> None:
    """Channel names with - _ = @ , . ; work in trigger and in the channel_info path."""
    client = await connect()
    channel = rand_channel("private-") + "-_=@,.;x"
    await client.subscribe(channel)
    await sdk_call(target, "trigger", channel, "lw-event", "punctuated")
    assert (await client.expect("lw-event", channel))["data"] == "punctuated"
    info = await sdk_call(target, "channel_info", channel, ["subscription_count"])
    assert info["occupied"] is True
    assert info["subscription_count"] == 1


@pytest.mark.asyncio
async def test_trigger_excludes_socket_id(connect: Connect, target: Target) -> None:
    """trigger with socket_id delivers to every subscriber but that connection."""
    excluded, other = await connect(), await connect()
    channel = rand_channel()
    await excluded.subscribe(channel)
    await other.subscribe(channel)
    await sdk_call(target, "trigger", channel, "lw-event", "x", socket_id=excluded.socket_id)
    await other.expect("lw-event", channel)
    assert not events_in(await trigger_marker(target, excluded, channel), "lw-event")


@pytest.mark.asyncio
@pytest.mark.hosted_only(
    "soketi", why="Soketi ignores the info parameter of a trigger and answers {'ok': true}"
)
async def test_trigger_with_info_returns_counts(connect: Connect, target: Target) -> None:
    """trigger with info=user_count,subscription_count answers the counts per channel."""
    presence, public = rand_channel("presence-"), rand_channel()
    tab1, tab2, reader = await connect(), await connect(), await connect()
    await tab1.subscribe(presence, user_id="u-same")
    await tab2.subscribe(presence, user_id="u-same")
    await reader.subscribe(public)
    body = {
        "name": "lw-event",
        "channels": [presence, public],
        "data": "{}",
        "info": "user_count,subscription_count",
    }
    status, answer = await rest(target, "POST", f"/apps/{target.app_id}/events", body=body)
    assert status == 200, answer
    assert answer == {
        "channels": {
            presence: {"user_count": 1, "subscription_count": 2},
            public: {"subscription_count": 1},
        }
    }


@pytest.mark.asyncio
async def test_trigger_batch_delivers_each_event(connect: Connect, target: Target) -> None:
    """trigger_batch delivers each event to its own channel with its data as sent."""
    client = await connect()
    one, two = rand_channel(), rand_channel("private-")
    await client.subscribe(one)
    await client.subscribe(two)
    batch = [
        {"channel": one, "name": "lw-first", "data": "1"},
        {"channel": two, "name": "lw-second", "data": {"x": 1}},
    ]
    await sdk_call(target, "trigger_batch", batch)
    assert (await client.expect("lw-first", one))["data"] == "1"
    assert (await client.expect("lw-second", two))["data"] == '{"x": 1}'


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi ignores the info parameter and answers {'ok': true}")
async def test_trigger_batch_with_info_returns_counts_by_index(connect: Connect, target: Target) -> None:
    """A batch with info answers {"batch": [...]} aligned with the events, {} where none was asked."""
    presence, public = rand_channel("presence-"), rand_channel()
    client = await connect()
    await client.subscribe(presence, user_id="u1")
    await client.subscribe(public)
    batch = [
        {"channel": presence, "name": "e", "data": "1", "info": "user_count,subscription_count"},
        {"channel": public, "name": "e", "data": "2"},
        {"channel": public, "name": "e", "data": "3", "info": "subscription_count"},
    ]
    status, answer = await rest(target, "POST", f"/apps/{target.app_id}/batch_events", body={"batch": batch})
    assert status == 200, answer
    assert answer == {"batch": [{"user_count": 1, "subscription_count": 1}, {}, {"subscription_count": 1}]}


@pytest.mark.asyncio
async def test_trigger_batch_respects_socket_id(connect: Connect, target: Target) -> None:
    """A batch event with socket_id skips that connection."""
    excluded, other = await connect(), await connect()
    channel = rand_channel()
    await excluded.subscribe(channel)
    await other.subscribe(channel)
    batch = [{"channel": channel, "name": "lw-event", "data": "x", "socket_id": excluded.socket_id}]
    await sdk_call(target, "trigger_batch", batch)
    await other.expect("lw-event", channel)
    assert not events_in(await trigger_marker(target, excluded, channel), "lw-event")


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi answers {'ok': true} instead of {}")
async def test_success_bodies_are_empty_objects(target: Target) -> None:
    """trigger, trigger_batch and terminate_connections answer {}."""
    channel = rand_channel()
    assert await sdk_call(target, "trigger", channel, "lw-event", "{}") == {}
    assert await sdk_call(target, "trigger_batch", [{"channel": channel, "name": "e", "data": "1"}]) == {}
    path = f"/apps/{target.app_id}/users/{rand_user()}/terminate_connections"
    assert await rest(target, "POST", path, body={}) == (200, {})


# ---------------------------------------------------------------------------------------- queries


@pytest.mark.asyncio
async def test_correctly_signed_raw_requests_are_accepted(target: Target) -> None:
    """The raw signing used by the error tests below is accepted when done right (GET and POST)."""
    status, body = await rest(target, "GET", f"/apps/{target.app_id}/channels")
    assert status == 200, body
    assert isinstance(body["channels"], dict)
    status, body = await rest(target, "POST", f"/apps/{target.app_id}/events", body=event(rand_channel()))
    assert status == 200, body


@pytest.mark.asyncio
async def test_channels_info_filters_by_prefix(connect: Connect, target: Target) -> None:
    """channels_info lists only occupied channels starting with filter_by_prefix."""
    prefix = rand_channel()
    occupied = [f"{prefix}-a", f"{prefix}-b"]
    client = await connect()
    for channel in occupied:
        await client.subscribe(channel)
    await client.subscribe(rand_channel())
    await client.subscribe(f"{prefix}-gone")
    await client.send("pusher:unsubscribe", {"channel": f"{prefix}-gone"})
    await client.barrier()
    answer = await sdk_call(target, "channels_info", prefix)
    assert sorted(answer["channels"]) == occupied
    assert all(isinstance(v, dict) for v in answer["channels"].values())


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi ignores info=user_count in channels_info")
async def test_channels_info_user_count_for_presence(connect: Connect, target: Target) -> None:
    """channels_info with a presence- prefix and info=user_count counts distinct users per channel."""
    channel = rand_channel("presence-")
    tabs = [await connect() for _ in range(3)]
    for tab, user in zip(tabs, ["u1", "u1", "u2"], strict=True):
        await tab.subscribe(channel, user_id=user)
    answer = await sdk_call(target, "channels_info", channel, ["user_count"])
    assert answer == {"channels": {channel: {"user_count": 2}}}


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi ignores info=user_count in channels_info")
@pytest.mark.parametrize("prefix", [None, "private-"])
async def test_channels_info_user_count_needs_presence_prefix(target: Target, prefix: str | None) -> None:
    """info=user_count without a presence- prefix is a 400 (PusherBadRequest in the SDK)."""
    with pytest.raises(pusher.errors.PusherBadRequest):
        await sdk_call(target, "channels_info", prefix, ["user_count"])


@pytest.mark.asyncio
async def test_channel_info_counts(connect: Connect, target: Target) -> None:
    """channel_info reports occupied, user_count (presence) and subscription_count."""
    presence, public = rand_channel("presence-"), rand_channel()
    tabs = [await connect() for _ in range(3)]
    for tab, user in zip(tabs, ["u1", "u1", "u2"], strict=True):
        await tab.subscribe(presence, user_id=user)
        await tab.subscribe(public)
    info = await sdk_call(target, "channel_info", presence, ["user_count", "subscription_count"])
    assert info["occupied"] is True
    assert info["user_count"] == 2
    assert info["subscription_count"] == 3
    info = await sdk_call(target, "channel_info", public, ["subscription_count"])
    assert info["occupied"] is True
    assert info["subscription_count"] == 3
    info = await sdk_call(target, "channel_info", rand_channel())
    assert info["occupied"] is False


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi ignores the info parameter of channel_info")
async def test_channel_info_user_count_on_non_presence_is_400(target: Target) -> None:
    """channel_info with info=user_count on a non-presence channel is a 400."""
    with pytest.raises(pusher.errors.PusherBadRequest):
        await sdk_call(target, "channel_info", rand_channel("private-"), ["user_count"])


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi ignores info=cache")
async def test_channel_info_cache(target: Target) -> None:
    """channel_info with info=cache returns the cached event's data and a positive ttl."""
    channel = rand_channel("cache-")
    await sdk_call(target, "trigger", channel, "lw-cached", '{"v": 1}')
    info = await sdk_call(target, "channel_info", channel, ["cache"])
    assert info["occupied"] is False
    assert info["cache"]["data"] == '{"v": 1}'
    assert 0 < info["cache"]["ttl"] <= 30 * 60


@pytest.mark.asyncio
async def test_users_info_lists_presence_members(connect: Connect, target: Target) -> None:
    """users_info lists each presence member once, by string id."""
    channel = rand_channel("presence-")
    tabs = [await connect() for _ in range(3)]
    for tab, user in zip(tabs, ["u1", "u1", "u2"], strict=True):
        await tab.subscribe(channel, user_id=user)
    answer = await sdk_call(target, "users_info", channel)
    assert sorted(answer["users"], key=lambda u: u["id"]) == [{"id": "u1"}, {"id": "u2"}]


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why=SOKETI_STATUS)
async def test_users_info_on_non_presence_is_400(target: Target) -> None:
    """users_info on a non-presence channel is a 400 with a JSON error."""
    with pytest.raises(pusher.errors.PusherBadRequest):
        await sdk_call(target, "users_info", rand_channel("private-"))
    status, body = await rest(target, "GET", f"/apps/{target.app_id}/channels/{rand_channel()}/users")
    assert_json_error(status, body, 400)


# ---------------------------------------------------------------------------------------- errors


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why=SOKETI_STATUS)
async def test_bad_signature_is_401(target: Target) -> None:
    """A request signed with the wrong secret is a 401 with a JSON error."""
    path = f"/apps/{target.app_id}/events"
    status, body = await rest(target, "POST", path, body=event(rand_channel()), secret="not-the-secret")
    assert_json_error(status, body, 401)
    wrong = pusher.Pusher(
        app_id=target.app_id,
        key=target.key,
        secret="wrong-secret",
        host=target.host,
        port=target.port,
        ssl=False,
    )
    with pytest.raises(pusher.errors.PusherBadAuth):
        await asyncio.to_thread(wrong.channels_info)


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi accepts any auth_timestamp")
@pytest.mark.parametrize("skew", [-700, 700])
async def test_timestamp_outside_600_seconds_is_401(target: Target, skew: int) -> None:
    """An auth_timestamp more than 600 s from the server's clock is a 401 with a JSON error."""
    status, body = await rest(
        target, "GET", f"/apps/{target.app_id}/channels", timestamp=int(time.time()) + skew
    )
    assert_json_error(status, body, 401)


@pytest.mark.asyncio
async def test_timestamp_within_600_seconds_is_accepted(target: Target) -> None:
    """An auth_timestamp a few minutes off is still accepted."""
    status, body = await rest(
        target, "GET", f"/apps/{target.app_id}/channels", timestamp=int(time.time()) - 300
    )
    assert status == 200, body


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why=SOKETI_STATUS)
async def test_wrong_body_md5_is_401(connect: Connect, target: Target) -> None:
    """A POST whose body_md5 does not match its body is a 401 and delivers nothing."""
    client = await connect()
    channel = rand_channel()
    await client.subscribe(channel)
    body = json.dumps(event(channel)).encode()
    status, answer = await rest(
        target, "POST", f"/apps/{target.app_id}/events", body=body, body_md5=md5_hex(b"something else")
    )
    assert_json_error(status, answer, 401)
    assert not events_in(await trigger_marker(target, client, channel), "lw-event")


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why=SOKETI_STATUS)
async def test_wrong_body_md5_on_get_is_401(target: Target) -> None:
    """A GET that sends a body_md5 other than the MD5 of the empty body is a 401."""
    status, body = await rest(target, "GET", f"/apps/{target.app_id}/channels", body_md5=md5_hex(b"x"))
    assert_json_error(status, body, 401)
    status, body = await rest(target, "GET", f"/apps/{target.app_id}/channels", body_md5=md5_hex(b""))
    assert status == 200, body


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why=SOKETI_STATUS)
async def test_unknown_app_id_is_404(target: Target) -> None:
    """A request for an unknown app id is a 404 with a JSON error."""
    unknown = "1" + target.app_id + "9"
    status, body = await rest(target, "POST", f"/apps/{unknown}/events", body=event(rand_channel()))
    assert_json_error(status, body, 404)


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why="Soketi's default event payload limit is 100 KB")
async def test_data_over_10kb_is_413(connect: Connect, target: Target) -> None:
    """Event data over 10 KB is a 413 with a JSON error and is not delivered; 10 KB exactly is fine."""
    client = await connect()
    channel = rand_channel()
    await client.subscribe(channel)
    path = f"/apps/{target.app_id}/events"
    status, body = await rest(target, "POST", path, body=event(channel, "lw-big", "x" * 10_241))
    assert_json_error(status, body, 413)
    status, body = await rest(target, "POST", path, body=event(channel, "lw-fits", "x" * 10_240))
    assert status == 200, body
    await client.expect("lw-fits", channel)
    assert not events_in(client.take(), "lw-big")


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why=SOKETI_STATUS)
async def test_over_100_channels_is_400(target: Target) -> None:
    """A trigger on more than 100 channels is a 400 with a JSON error."""
    body = {"name": "lw-event", "data": "{}", "channels": [rand_channel() for _ in range(101)]}
    status, answer = await rest(target, "POST", f"/apps/{target.app_id}/events", body=body)
    assert_json_error(status, answer, 400)


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why=SOKETI_STATUS)
async def test_over_10_events_per_batch_is_400(connect: Connect, target: Target) -> None:
    """A batch of more than 10 events is a 400 (PusherBadRequest in the SDK) and delivers none of them."""
    client = await connect()
    channel = rand_channel()
    await client.subscribe(channel)
    batch = [{"channel": channel, "name": "lw-batched", "data": str(i)} for i in range(11)]
    with pytest.raises(pusher.errors.PusherBadRequest):
        await sdk_call(target, "trigger_batch", batch)
    status, answer = await rest(target, "POST", f"/apps/{target.app_id}/batch_events", body={"batch": batch})
    assert_json_error(status, answer, 400)
    assert not events_in(await trigger_marker(target, client, channel), "lw-batched")


@pytest.mark.asyncio
@pytest.mark.hosted_only("soketi", why=SOKETI_STATUS)
@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"a string"'], ids=["invalid", "array", "string"])
async def test_malformed_json_body_is_400(target: Target, body: bytes) -> None:
    """A trigger body that is not a JSON object is a 400 with a JSON error."""
    status, answer = await rest(target, "POST", f"/apps/{target.app_id}/events", body=body)
    assert_json_error(status, answer, 400)


@pytest.mark.asyncio
@pytest.mark.hosted_only(
    "soketi",
    why="Soketi answers errors with HTTP 200 and accepts empty channel lists, bad channel names, socket ids",
)
@pytest.mark.parametrize(
    "bad",
    [{"name": ""}, {"channels": []}, {"channels": ["bad name!"]}, {"name": "x" * 201}, {"socket_id": "abc"}],
    ids=["empty-name", "no-channels", "bad-channel", "long-name", "bad-socket-id"],
)
async def test_invalid_event_is_400(target: Target, bad: dict[str, Any]) -> None:
    """An empty name, no channels, a bad channel name, a name over 200 chars or a bad socket_id is a 400."""
    body = {**event(rand_channel()), **bad}
    status, answer = await rest(target, "POST", f"/apps/{target.app_id}/events", body=body)
    assert_json_error(status, answer, 400)


# ---------------------------------------------------------------------------------------- users


@pytest.mark.asyncio
async def test_terminate_connections_on_apps_path(connect: Connect, target: Target) -> None:
    """POST /apps/{id}/users/{uid}/terminate_connections closes only that user's connections (4009)."""
    user = rand_user()
    victim, bystander = await connect(), await connect()
    await victim.signin(user)
    await bystander.signin(rand_user())
    status, body = await rest(
        target, "POST", f"/apps/{target.app_id}/users/{user}/terminate_connections", body={}
    )
    assert status == 200, body
    assert await victim.closed() == 4009
    await bystander.barrier()

"""The kernel's channel-auth endpoint refuses malformed bodies with 400 (issue 14 item 7)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from livewidget._authserver import endpoint


def _post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("body", [b"[" * 1000 + b"]" * 1000, b'{"token":' + b"[" * 5000, b"{", b"[]"])
def test_malformed_or_deep_body_is_400(body, caplog):
    """Was: 1,000 levels of [ raised RecursionError: a 500 and a traceback in the kernel's log."""
    status, answer = _post(endpoint().url, body)
    assert status == 400
    assert answer == {"error": "expected JSON {token, socket_id, channel_name}"}
    assert not [r for r in caplog.records if r.exc_info]


def test_unknown_token_is_403():
    body = {"token": "x", "socket_id": "1.1", "channel_name": "c"}
    status, answer = _post(endpoint().url, json.dumps(body).encode())
    assert (status, answer) == (403, {"error": "unknown widget token"})

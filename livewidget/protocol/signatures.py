"""HMAC signatures: channel authorization, user sign-in, REST requests and webhooks.

References: library_auth_reference/auth-signatures.md (reference §1.13) and rest-api.md
*Authentication* (reference §2.2). Every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

__all__ = [
    "body_md5",
    "channel_auth",
    "hmac_hex",
    "rest_string_to_sign",
    "sign_rest_query",
    "signin_auth",
    "verify_auth",
    "webhook_signature",
]


def hmac_hex(secret: str, message: str | bytes) -> str:
    """Hex HMAC-SHA256 of ``message`` under ``secret``."""
    if isinstance(message, str):
        message = message.encode()
    return hmac.digest(secret.encode(), message, "sha256").hex()  # one-shot: OpenSSL in one call


def channel_auth(key: str, secret: str, socket_id: str, channel: str, channel_data: str | None = None) -> str:
    """The ``auth`` value for subscribing ``socket_id`` to ``channel``.

    The string signed is ``<socket_id>:<channel>`` with ``:<channel_data>`` appended for presence
    channels, ``channel_data`` being the exact JSON string the client sends.
    """
    to_sign = f"{socket_id}:{channel}"
    if channel_data is not None:
        to_sign += f":{channel_data}"
    return f"{key}:{hmac_hex(secret, to_sign)}"


def signin_auth(key: str, secret: str, socket_id: str, user_data: str) -> str:
    """The ``auth`` value of ``pusher:signin``: HMAC of ``<socket_id>::user::<user_data>``."""
    return f"{key}:{hmac_hex(secret, f'{socket_id}::user::{user_data}')}"


def verify_auth(expected: str, given: object) -> bool:
    """Constant-time comparison of an expected ``key:signature`` with what a client sent."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def body_md5(body: bytes) -> str:
    """Hex MD5 of a REST request body (``body_md5`` query parameter)."""
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def rest_string_to_sign(method: str, path: str, params: Iterable[tuple[str, str]]) -> str:
    """``METHOD\\npath\\nk=v&k=v`` with keys lower-cased and sorted, values unescaped (§2.2)."""
    query = "&".join(
        f"{k}={v}" for k, v in sorted((k.lower(), v) for k, v in params if k != "auth_signature")
    )
    return f"{method.upper()}\n{path}\n{query}"


def sign_rest_query(method: str, path: str, params: Mapping[str, str], secret: str) -> dict[str, str]:
    """``params`` plus ``auth_signature``, as a REST client would send them."""
    signed = dict(params)
    signed["auth_signature"] = hmac_hex(secret, rest_string_to_sign(method, path, params.items()))
    return signed


def webhook_signature(secret: str, body: bytes) -> str:
    """``X-Pusher-Signature``: hex HMAC-SHA256 of the raw webhook body."""
    return hmac_hex(secret, body)

"""Argument checks for the public entry points: each says what it expected and what it got.

A wrong type raises ``TypeError``, a value out of range ``ValueError``, both naming the argument,
so ``Feed(123)`` says "channels must be a channel name or a list of names, not int" instead of
failing deeper down with "'int' object is not iterable".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["check_bool", "check_callable", "check_int", "check_number", "check_str", "names", "scrub"]

_QUERY = re.compile(r"\?[^\s'\"()<>]*")
_SIGNED = re.compile(r"(auth_signature|auth_key|body_md5|auth_timestamp)=[^&\s'\"()]*")
_HEX = re.compile(r"\b[0-9a-fA-F]{32,}\b")  # signatures and digests (servers echo the one sent)


def scrub(text: str, secret: str | None = None) -> str:
    """``text`` fit for a warning or a log: no query strings (the SDK's errors carry the signed URL),
    no signatures or digests (servers echo the one sent), no ``secret``."""
    text = _HEX.sub("…", _SIGNED.sub(r"\1=…", _QUERY.sub("?…", text)))
    if secret:
        text = text.replace(secret, "…")
    return text


def _kind(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def names(value: Any, what: str, *, allow_none: bool = False, allow_empty: bool = False) -> list[str]:
    """``value`` as a list of names: one string or an iterable of strings."""
    if value is None and allow_none:
        return []
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, bytearray, dict)):
        items = list(value)
    else:
        raise TypeError(f"{what} must be a name (a string) or a list of names, not {_kind(value)}")
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{what} must hold strings; got {item!r} ({_kind(item)})")
    if not items and not allow_empty:
        raise ValueError(f"{what}: give at least one {what.rstrip('s')} name")
    return items


def check_int(
    value: Any, what: str, *, minimum: int | None = None, maximum: int | None = None, allow_none: bool = False
) -> int | None:
    """``value`` if it is an int (not a bool) within the bounds."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an integer{' or None' if allow_none else ''}, not {_kind(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{what} must be at most {maximum}, got {value}")
    return value


def check_number(
    value: Any, what: str, *, minimum: float | None = None, allow_none: bool = False, positive: bool = False
) -> float | None:
    """``value`` as a float if it is a finite real number (not a bool) within the bounds."""
    if value is None and allow_none:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{what} must be a number{' or None' if allow_none else ''}, not {_kind(value)}")
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{what} must be a finite number, got {value}")
    if positive and number <= 0:
        raise ValueError(f"{what} must be positive, got {value}")
    if minimum is not None and number < minimum:
        raise ValueError(f"{what} must be at least {minimum}, got {value}")
    return number


def check_bool(value: Any, what: str) -> bool:
    """``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be True or False, not {_kind(value)}")
    return value


def check_str(value: Any, what: str, *, allow_none: bool = False, allow_empty: bool = True) -> str | None:
    """``value`` if it is a string."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string{' or None' if allow_none else ''}, not {_kind(value)}")
    if not value and not allow_empty:
        raise ValueError(f"{what} must not be empty")
    return value


def check_callable(value: Any, what: str, *, allow_none: bool = True) -> Callable[..., Any] | None:
    """``value`` if it can be called."""
    if value is None and allow_none:
        return None
    if not callable(value):
        raise TypeError(f"{what} must be a function, not {_kind(value)}")
    return value  # type: ignore[no-any-return]

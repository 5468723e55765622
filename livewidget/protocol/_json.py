"""JSON decoding with a bound on nesting depth, for input from the network.

The standard library's decoder recurses once per nested array or object: about 1,000 levels (2 KB of
``[``) raise :class:`RecursionError`, which is not a :class:`ValueError`, escapes the usual
``except ValueError`` and, deeper in a call stack, comes sooner. What is parsed here may also be
encoded again (relayed client events, presence ``user_info``), and the encoder recurses too. So the
depth is checked first, in linear time, and input nested deeper than ``max_depth`` is refused with
:class:`JSONDepthError` (a :class:`~livewidget.exceptions.ProtocolError` and a :class:`ValueError`,
so existing ``except ValueError`` handlers answer it as invalid JSON) before :func:`json.loads` runs.

The check only needs to be exact on text that :func:`json.loads` would read that deep: a valid JSON
prefix. There, strings are well delimited, so removing them (escapes included) and counting brackets
gives the parser's depth. At the first unterminated string the parser stops, so the check does too.
``max_depth`` defaults to 128, serde_json's recursion limit; the protocol's own messages nest 3 deep.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from ..exceptions import ProtocolError

__all__ = ["DEFAULT_MAX_DEPTH", "JSONDepthError", "json_depth", "loads_bounded"]

DEFAULT_MAX_DEPTH = 128

# A JSON string (unrolled loop: each character matches one way, so no backtracking blow-up), or an
# unterminated one: from its quote to the end, where json.loads stops too. Possessive: never retried.
_STRINGS = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"|".*', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]++")
_STEP = str.maketrans({"[": "\x01", "{": "\x01", "]": "\x02", "}": "\x02"})
_DELTA = (0, 1, -1)  # by step byte


class JSONDepthError(ProtocolError, ValueError):
    """JSON text nests arrays and objects deeper than allowed."""

    def __init__(self, depth: int, max_depth: int) -> None:
        super().__init__(f"Invalid JSON: nested {depth} levels deep; the limit is {max_depth}")
        self.depth = depth
        self.max_depth = max_depth


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects :func:`json.loads` would reach reading ``text``.

    Exact for valid JSON; for invalid JSON, at least the depth reached before the parser fails.
    Linear time.
    """
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text))
    if not brackets:
        return 0
    # +1 per opening bracket, -1 per closing one; the running maximum is the depth.
    steps = brackets.translate(_STEP).encode()  # b"\x01" / b"\x02"
    # map/accumulate/max run in C: about the cost of json.loads building one object per bracket
    return max(0, max(accumulate(map(_DELTA.__getitem__, steps))))


def loads_bounded(text: str | bytes | bytearray, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """:func:`json.loads`, refusing input nested deeper than ``max_depth`` with :class:`JSONDepthError`.

    Invalid JSON raises :class:`ValueError` as :func:`json.loads` does (``JSONDecodeError``, or
    ``UnicodeDecodeError`` for bytes that are not UTF-8/16/32).
    """
    if isinstance(text, (bytes, bytearray)):
        # as json.loads does it, so the check sees the same text the parser will
        text = bytes(text).decode(json.detect_encoding(text), "surrogatepass")
    # Fast path: too few opening brackets to nest that deep (every protocol frame).
    if text.count("[") + text.count("{") > max_depth:
        depth = json_depth(text)
        if depth > max_depth:
            raise JSONDepthError(depth, max_depth)
    return json.loads(text)

"""livewidget.protocol._json: JSON from the network with a bound on nesting (issue 14 item 7).

Held to :func:`json.loads` by a differential test on generated inputs (valid documents, mutated and
truncated ones, bracket soups, deep nests): wherever ``json.loads`` answers within the depth bound,
``loads_bounded`` answers the same; everywhere else it raises a ``ValueError``, never a
``RecursionError``.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest

from livewidget.exceptions import ProtocolError
from livewidget.protocol._json import DEFAULT_MAX_DEPTH, JSONDepthError, json_depth, loads_bounded


def depth_of(value: Any) -> int:
    """Nesting of arrays and objects in a decoded value (iterative: values may be deep)."""
    best, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, dict)):
            d += 1
            best = max(best, d)
            stack.extend((x, d) for x in (v.values() if isinstance(v, dict) else v))
    return best


def parse_depth(text: str | bytes) -> int:
    """How deep json.loads nests reading valid ``text`` (duplicate keys counted: the parser reads them)."""
    return depth_of(json.loads(text, object_pairs_hook=lambda pairs: [v for _, v in pairs]))


def reference(text: str | bytes) -> tuple[str, Any]:
    """What json.loads does with ``text``: ("ok", value), ("error", None) or ("recursion", None)."""
    try:
        return "ok", json.loads(text)
    except RecursionError:
        return "recursion", None
    except ValueError:
        return "error", None


def check(text: str | bytes, max_depth: int) -> None:
    kind, expected = reference(text)
    try:
        got = loads_bounded(text, max_depth=max_depth)
    except JSONDepthError as exc:
        # refused for depth: json.loads failed too, or what it returned is too deep
        assert kind != "ok" or parse_depth(text) > max_depth, (text, exc)
        assert exc.depth > max_depth
        if kind == "ok":
            assert exc.depth == parse_depth(text)  # exact on valid input
        return
    except ValueError:
        assert kind == "error", text  # same verdict as json.loads
        return
    assert kind == "ok", text
    assert parse_depth(text) <= max_depth, text
    assert json_depth(text if isinstance(text, str) else text.decode()) == parse_depth(text)
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)


_ATOMS = ["0", "-1.5e3", "true", "false", "null", '""', '"a"', '"\\""', '"\\\\"', '"[{"', '"]}"', '"\\u005b"']


def gen_value(rng: random.Random, depth: int) -> str:
    if depth <= 0 or rng.random() < 0.3:
        return rng.choice(_ATOMS)
    n = rng.randrange(4)
    if rng.random() < 0.5:
        return "[" + ",".join(gen_value(rng, depth - 1) for _ in range(n)) + "]"
    items = (f"{rng.choice(_ATOMS[5:])}:{gen_value(rng, depth - 1)}" for _ in range(n))
    return "{" + ",".join(items) + "}"


def mutate(rng: random.Random, text: str) -> str:
    ops = rng.randrange(1, 4)
    for _ in range(ops):
        i = rng.randrange(len(text) + 1)
        op = rng.randrange(4)
        if op == 0:
            text = text[:i] + rng.choice('[]{}",:\\ a0') + text[i:]
        elif op == 1:
            text = text[:i] + text[i + 1 :]
        elif op == 2:
            text = text[:i]  # truncated
        else:
            text = text[:i] + rng.choice(["[" * 40, "{" * 40, '"', '\\"', "]" * 5]) + text[i:]
    return text


def test_differential_against_json_loads():
    """A bounded fuzz (fixed seed, at most 5 s) agrees with json.loads on every generated input."""
    rng = random.Random(14)
    deadline = time.monotonic() + 5.0
    n = 0
    while n < 20_000 and time.monotonic() < deadline:
        max_depth = rng.choice([1, 2, 3, 5, 8])
        text = gen_value(rng, rng.randrange(12))
        if rng.random() < 0.6:
            text = mutate(rng, text)
        check(text, max_depth)
        n += 1
    assert n >= 1000  # the loop really ran


@pytest.mark.parametrize(
    "text",
    [
        "[" * 1000 + "]" * 1000,  # about 2 KB: the frame
        "[" * 100_000,  # never closed: json.loads recurses before it fails
        '{"a":' * 5000 + "1" + "}" * 5000,
        "[" + "[[]]," * 500 + "[" * 2000,
        '["\\"",' + "[" * 3000,  # an escaped quote does not end a string, the next quote does
    ],
)
def test_deep_input_raises_a_clean_error_not_recursion(text):
    kind, _ = reference(text)
    with pytest.raises(JSONDepthError) as info:
        loads_bounded(text)
    assert isinstance(info.value, ProtocolError) and isinstance(info.value, ValueError)
    assert f"limit is {DEFAULT_MAX_DEPTH}" in info.value.message
    assert kind in ("recursion", "error")


def test_brackets_in_strings_do_not_count():
    with pytest.raises(ValueError) as info:  # unterminated: invalid JSON, not too deep
        loads_bounded('["\\"' + "[" * 3000)
    assert not isinstance(info.value, JSONDepthError)
    text = json.dumps({"data": "[" * 10_000, "esc": '\\"[[[' * 100, "n": [[1]]})
    assert json_depth(text) == 3  # the object and two arrays
    assert loads_bounded(text, max_depth=3)["n"] == [[1]]


def test_limit_is_exact():
    assert loads_bounded("[" * 128 + "]" * 128) is not None
    with pytest.raises(JSONDepthError):
        loads_bounded("[" * 129 + "]" * 129)
    assert loads_bounded('{"a":{"b":[]}}', max_depth=3) == {"a": {"b": []}}
    with pytest.raises(JSONDepthError):
        loads_bounded('{"a":{"b":[]}}', max_depth=2)


def test_bytes_in_every_encoding_json_loads_reads():
    value = {"ü": ["x", 1]}
    for codec in ("utf-8", "utf-16", "utf-16-le", "utf-32-be"):
        assert loads_bounded(json.dumps(value, ensure_ascii=False).encode(codec)) == value
    with pytest.raises(ValueError):
        loads_bounded(b"\xff\xff[")


def test_unterminated_strings_are_linear():
    """An unclosed string full of escaped quotes is scanned once, not once per quote."""
    text = '["' + '\\"' * 200_000 + "[" * 200  # 400 KB
    t0 = time.perf_counter()
    assert json_depth(text) == 1
    assert time.perf_counter() - t0 < 1.0

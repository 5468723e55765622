"""The columnar event store and its DataFrames."""

from __future__ import annotations

import math

import pytest

from livewidget._frames import EventStore, flatten


def test_flatten_nested_objects():
    """Nested objects become dotted columns; lists stay whole."""
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": [1, 2], "f": {}}) == {
        "a.b": 1,
        "a.c.d": 2,
        "e": [1, 2],
        "f": {},
    }


def test_columns_stay_aligned_with_new_and_missing_keys():
    """Keys appearing late or missing give NaN/None gaps, rows stay aligned."""
    store = EventStore()
    store.append(1.0, "c", "e", {"a": 1}, None)
    store.append(2.0, "c", "e", "text", "u1")
    store.append(3.0, "d", "f", {"b": "x", "a": 3.5}, None)
    df = store.to_frame()
    assert list(df.columns) == ["time", "channel", "event", "user_id", "data", "history", "a", "b"]
    assert math.isnan(df["a"][1]) and df["a"][2] == 3.5
    assert df["b"].isna().tolist() == [True, True, False] and df["b"][2] == "x"
    assert list(df["user_id"].astype(object).where(df["user_id"].notna(), None)) == [None, "u1", None]
    assert str(df["channel"].dtype) == "category"


def test_reserved_names_are_prefixed():
    """A data field named like a base column becomes data.<name>."""
    store = EventStore()
    store.append(1.0, "c", "e", {"channel": "inner", "time": 5}, None)
    df = store.to_frame()
    assert df["channel"][0] == "c" and df["data.channel"][0] == "inner" and df["data.time"][0] == 5


def test_bounded_rows_drop_oldest():
    """max_rows keeps the newest rows and counts the dropped ones."""
    store = EventStore(max_rows=3)
    for i in range(5):
        store.append(float(i), "c", "e", {"i": i} if i != 3 else None, None)
    assert len(store) == 3 and store.dropped == 2 and store.total == 5
    df = store.to_frame()
    assert list(df["data"])[1] is None
    assert [r["time"] for r in store.rows()] == [2.0, 3.0, 4.0]
    assert [r["channel"] for r in store.rows(1)] == ["c"]
    store.clear()
    assert len(store) == 0 and store.to_frame().empty
    with pytest.raises(ValueError, match="max_rows"):
        EventStore(max_rows=0)


def test_empty_frame_has_the_base_columns():
    """An empty store still gives the base columns."""
    assert list(EventStore().to_frame().columns) == ["time", "channel", "event", "user_id", "data", "history"]

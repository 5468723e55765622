"""Recorded events, stored by column, and their pandas DataFrames (the only module importing pandas).

Rows arrive one at a time on the receiver's thread; a DataFrame is built on demand. Storage is
columnar (one bounded deque per column) so a million events become a DataFrame in well under a
second, and memory is bounded by ``max_rows`` (the oldest rows go first; :attr:`EventStore.dropped`
counts them).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BASE_COLUMNS", "EventStore", "flatten"]

BASE_COLUMNS = ("time", "channel", "event", "user_id", "data")
_CODED = ("channel", "event", "user_id")  # few distinct values: stored as codes, built as categoricals
MAX_DATA_COLUMNS = 256  # beyond this many distinct keys, new keys stay only in the `data` column


def flatten(value: dict[str, Any], prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": 2}`` → ``{"a.b": 1, "c": 2}`` (lists are kept whole)."""
    if out is None:
        out = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict) and item:
            flatten(item, name + ".", out)
        else:
            out[name] = item
    return out


class EventStore:
    """Thread-safe, bounded, columnar record of events.

    Parameters
    ----------
    max_rows:
        Rows kept; ``None`` keeps everything.
    """

    def __init__(self, max_rows: int | None = 1_000_000) -> None:
        if max_rows is not None and max_rows <= 0:
            raise ValueError("max_rows must be a positive number of rows, or None for no limit")
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._base: dict[str, deque[Any]] = {name: deque(maxlen=max_rows) for name in BASE_COLUMNS}
        self._extra: dict[str, deque[Any]] = {}
        # value -> code, per coded column; code 0 is None
        self._codes: dict[str, dict[Any, int]] = {name: {None: 0} for name in _CODED}
        self.total = 0  # rows ever appended
        self.dropped = 0  # rows dropped because of max_rows

    def __len__(self) -> int:
        return len(self._base["time"])

    def append(self, t: float, channel: str | None, event: str, data: Any, user_id: str | None) -> None:
        """Record one event received at ``t`` (seconds since the epoch)."""
        fields = flatten(data) if isinstance(data, dict) else None
        with self._lock:
            n = len(self._base["time"])
            if self.max_rows is not None and n == self.max_rows:
                self.dropped += 1
            base = self._base
            base["time"].append(t)
            codes = self._codes
            for name, value in (("channel", channel), ("event", event), ("user_id", user_id)):
                table = codes[name]
                code = table.get(value)
                if code is None:
                    code = table[value] = len(table)
                base[name].append(code)
            base["data"].append(data)
            extra = self._extra
            row: dict[str, Any] = {}
            if fields:
                for key, value in fields.items():
                    name = "data." + key if key in BASE_COLUMNS else key
                    if name not in extra:
                        if len(extra) >= MAX_DATA_COLUMNS:
                            continue
                        extra[name] = deque([None] * n, maxlen=self.max_rows)
                    row[name] = value
            # Every column gets exactly one value per row, so all stay aligned.
            for name, col in extra.items():
                col.append(row.get(name))
            self.total += 1

    def rows(self, last: int | None = None) -> list[dict[str, Any]]:
        """The most recent ``last`` rows (all when ``None``) as dicts of the base columns."""
        with self._lock:
            n = len(self._base["time"])
            start = 0 if last is None else max(0, n - last)
            cols = {name: list(col)[start:] for name, col in self._base.items()}
            for name in _CODED:
                values = list(self._codes[name])
                cols[name] = [values[c] for c in cols[name]]
        return [dict(zip(cols, values, strict=True)) for values in zip(*cols.values(), strict=True)]

    def to_frame(self) -> pd.DataFrame:
        """A DataFrame: time (UTC), channel, event, user_id, data, then one column per data field."""
        import numpy as np
        import pandas as pd

        with self._lock:
            n = len(self._base["time"])
            times = np.fromiter(self._base["time"], dtype="float64", count=n)
            coded = {
                name: (np.fromiter(self._base[name], dtype="int32", count=n), list(self._codes[name]))
                for name in _CODED
            }
            data = np.empty(n, dtype=object)
            data[:] = list(self._base["data"])
            extra = {name: list(col) for name, col in self._extra.items()}
        columns: dict[str, Any] = {"time": pd.to_datetime((times * 1e6).astype("int64"), unit="us", utc=True)}
        for name, (codes, values) in coded.items():
            # code 0 is None: pandas spells a missing category as -1
            columns[name] = pd.Categorical.from_codes(codes - 1, values[1:])
        columns["data"] = data
        for name, values in extra.items():
            columns[name] = _column(values)
        return pd.DataFrame(columns)

    def clear(self) -> None:
        """Forget every row (counters too)."""
        with self._lock:
            for col in self._base.values():
                col.clear()
            self._extra.clear()
            self._codes = {name: {None: 0} for name in _CODED}
            self.total = self.dropped = 0


def _column(values: Iterable[Any]) -> Any:
    """A column as a numpy array when it is all numbers (NaN for gaps), else a list of objects."""
    import numpy as np

    values = list(values)
    kinds = set(map(type, values))
    if kinds == {int}:
        return np.array(values, dtype="int64")
    if kinds <= {int, float, type(None)} and kinds & {int, float}:
        return np.array([np.nan if v is None else v for v in values], dtype="float64")
    return values

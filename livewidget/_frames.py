"""Recorded events, stored by column, and their pandas DataFrames (the only module importing pandas).

Rows arrive one at a time on the receiver's thread; a DataFrame is built on demand. Storage is
columnar (one bounded deque per column) so a million events become a DataFrame in well under a
second, and memory is bounded by ``max_rows`` (the oldest rows go first; :attr:`EventStore.dropped`
counts them).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BASE_COLUMNS", "EventStore", "flatten", "records", "table"]

BASE_COLUMNS = ("time", "channel", "event", "user_id", "data", "history")
_CODED = ("channel", "event", "user_id")  # few distinct values: stored as codes, built as categoricals
MAX_DATA_COLUMNS = 256  # beyond this many distinct keys, new keys stay only in the `data` column
_NAN = float("nan")  # the gap in data columns: a missing value for pandas whatever the column's type
# What a data column has held so far, tracked on append so building a frame needs no scan.
_INT, _FLOAT, _OBJECT = 0, 1, 2


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
        self._kinds: dict[str, int] = {}
        # value -> code, per coded column; code 0 is None
        self._codes: dict[str, dict[Any, int]] = {name: {None: 0} for name in _CODED}
        self.total = 0  # rows ever appended
        self.dropped = 0  # rows dropped because of max_rows

    def __len__(self) -> int:
        return len(self._base["time"])

    def append(
        self, t: float, channel: str | None, event: str, data: Any, user_id: str | None, history: bool = False
    ) -> None:
        """Record one event received at ``t`` (seconds since the epoch); ``history``: replayed from the
        channel's history when subscribing, not heard live."""
        fields = flatten(data) if isinstance(data, dict) else None
        with self._lock:
            n = len(self._base["time"])
            if self.max_rows is not None and n == self.max_rows:
                self.dropped += 1
            base = self._base
            base["time"].append(t)
            codes = self._codes
            for name, label in (("channel", channel), ("event", event), ("user_id", user_id)):
                table = codes[name]
                code = table.get(label)
                if code is None:
                    code = table[label] = len(table)
                base[name].append(code)
            base["data"].append(data)
            base["history"].append(history)
            extra = self._extra
            kinds = self._kinds
            row: dict[str, Any] = {}
            if fields:
                for key, value in fields.items():
                    name = "data." + key if key in BASE_COLUMNS else key
                    if name not in extra:
                        if len(extra) >= MAX_DATA_COLUMNS:
                            continue
                        extra[name] = deque([_NAN] * n, maxlen=self.max_rows)
                        kinds[name] = _FLOAT if n else _INT
                    kind: type = type(value)
                    if kind is float:
                        if kinds[name] == _INT:
                            kinds[name] = _FLOAT
                    elif kind is not int:
                        if value is None:
                            value = _NAN
                            if kinds[name] == _INT:
                                kinds[name] = _FLOAT
                        else:
                            kinds[name] = _OBJECT
                    row[name] = value
            # Every column gets exactly one value per row, so all stay aligned.
            if len(row) == len(extra):
                for name, col in extra.items():
                    col.append(row[name])
            else:
                for name, col in extra.items():
                    col.append(row.get(name, _NAN))
                for name in extra.keys() - row.keys():
                    if kinds[name] == _INT:
                        kinds[name] = _FLOAT
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
        """A DataFrame: time (UTC), channel, event, user_id, data, history (True for rewound events),
        then one column per data field."""
        import numpy as np
        import pandas as pd

        with self._lock:
            n = len(self._base["time"])
            times = np.fromiter(self._base["time"], dtype="float64", count=n)
            coded = {
                name: (np.fromiter(self._base[name], dtype="int32", count=n), list(self._codes[name]))
                for name in _CODED
            }
            data = np.fromiter(self._base["data"], dtype=object, count=n)
            history = np.fromiter(self._base["history"], dtype=bool, count=n)
            extra = {
                name: np.fromiter(col, dtype=_DTYPES[self._kinds[name]], count=n)
                for name, col in self._extra.items()
            }
        micros = (times * 1e6).astype("int64").view("datetime64[us]")
        columns: dict[str, Any] = {"time": pd.DatetimeIndex(micros).tz_localize("UTC")}
        for name, (codes, values) in coded.items():
            # code 0 is None: pandas spells a missing category as -1
            columns[name] = pd.Categorical.from_codes(codes - 1, values[1:])
        columns["data"] = data
        columns["history"] = history
        columns.update(extra)
        return pd.DataFrame(columns, copy=False)

    def clear(self) -> None:
        """Forget every row (counters too)."""
        with self._lock:
            for col in self._base.values():
                col.clear()
            self._extra.clear()
            self._kinds.clear()
            self._codes = {name: {None: 0} for name in _CODED}
            self.total = self.dropped = 0


_DTYPES: dict[int, Any] = {_INT: "int64", _FLOAT: "float64", _OBJECT: object}


def table(rows: list[dict[str, Any]], columns: Sequence[str], times: Sequence[str] = ()) -> pd.DataFrame:
    """A DataFrame of ``rows`` with exactly ``columns`` (a missing value is ``None``, then NaN).

    The ``times`` columns hold seconds since the epoch and become UTC timestamps.
    """
    import pandas as pd

    frame = pd.DataFrame([[row.get(c) for c in columns] for row in rows], columns=list(columns))
    for name in times:
        frame[name] = pd.to_datetime(frame[name].astype("float64"), unit="s", utc=True)
    return frame


def records(frame: Any, columns: Sequence[str]) -> tuple[list[dict[str, Any]], set[str]]:
    """``frame``'s ``columns`` as one dict per row (``None`` for missing values), and the names of the
    columns that held dates: those values are seconds since the epoch (naive dates taken as UTC).

    ``frame`` is a DataFrame, or anything ``pandas.DataFrame()`` accepts (dict of columns, records).
    """
    import numpy as np
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame)
    values: dict[str, list[Any]] = {}
    dates: set[str] = set()
    n = len(frame)
    for name in columns:
        if name not in frame.columns:
            continue
        col = frame[name]
        if pd.api.types.is_datetime64_any_dtype(col.dtype):
            stamps = pd.to_datetime(col, utc=True)
            secs = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype="float64")
            values[name] = [None if np.isnan(v) else float(v) for v in secs]
            dates.add(name)
        elif pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
            arr = col.to_numpy(dtype="float64", na_value=np.nan)
            values[name] = [None if np.isnan(v) else float(v) for v in arr]
        else:
            values[name] = [None if v is None or v is pd.NA or v is pd.NaT else v for v in col.tolist()]
    names = list(values)
    rows = [dict(zip(names, row, strict=True)) for row in zip(*values.values(), strict=True)] if names else []
    if not names:
        rows = [{} for _ in range(n)]
    return rows, dates

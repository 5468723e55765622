"""The verdict of bench/bench_routes.py's rate ramp: what "keeps up" means (the bench is not a test)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_routes.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_routes", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def samples(
    lag_at: Callable[[int], float | None], span_ms: int = 4000, every: int = 73
) -> list[dict[str, float | None]]:
    """The page's samples over a step starting at t = 1000 ms: the lag (ms) is ``lag_at(t - start)``."""
    return [{"t": 1000 + t, "count": 0, "lag": lag_at(t)} for t in range(0, span_ms, every)]


def test_a_flat_lag_with_every_event_shown_is_kept_up_with(bench: ModuleType) -> None:
    v = bench.step_verdict(samples(lambda t: 120.0), 1000, 5000, target=400, final_count=400)
    assert v["kept"] and v["early_lag"] == pytest.approx(0.12) and v["late_lag"] == pytest.approx(0.12)


def test_a_lag_growing_by_more_than_the_slack_is_missed(bench: ModuleType) -> None:
    growing = samples(lambda t: 100 + t / 2)  # 0.1 s behind, then half a second more per second
    v = bench.step_verdict(growing, 1000, 5000, target=400, final_count=400)
    assert not v["kept"] and v["late_lag"] > v["early_lag"] + bench.LAG_SLACK


def test_a_lag_growing_within_the_slack_is_kept_up_with(bench: ModuleType) -> None:
    v = bench.step_verdict(samples(lambda t: 100 + t / 20), 1000, 5000, target=400, final_count=400)
    assert v["kept"]


def test_an_event_missing_misses_the_step_however_flat_the_lag(bench: ModuleType) -> None:
    v = bench.step_verdict(samples(lambda t: 50.0), 1000, 5000, target=400, final_count=399)
    assert not v["kept"] and v["shown"] == 399


def test_no_row_shown_during_the_step_misses_it(bench: ModuleType) -> None:
    v = bench.step_verdict(samples(lambda t: None), 1000, 5000, target=0, final_count=0)
    assert not v["kept"]


def test_pct_is_the_nearest_rank_in_ms(bench: ModuleType) -> None:
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert bench.pct(values, 0.5) == pytest.approx(51)
    assert bench.pct(values, 0.99) == pytest.approx(100)
    assert bench.pct([], 0.5) != bench.pct([], 0.5)  # NaN

"""The simulator clock's modes: real time, accelerated, manual."""

from __future__ import annotations

import math
import time

import pytest

from simulators.plant import SimClock


def test_real_time_follows_the_wall_clock_plus_skew() -> None:
    clock = SimClock(skew_s=-3600.0)
    assert clock.realtime
    assert abs(clock.now_ms() - (time.time() * 1000 - 3_600_000)) < 5_000
    assert clock.wall_seconds_until(clock.now_ms() - 10) == 0.0


def test_accelerated_clock_starts_at_its_origin_and_runs_faster() -> None:
    clock = SimClock(time_scale=3600.0, start_ms=1_000_000)
    clock.anchor()
    first = clock.now_ms()
    assert 1_000_000 <= first < 1_000_000 + 3_600_000
    time.sleep(0.01)
    assert clock.now_ms() - first >= 30_000  # 10 ms of wall time is >= 36 s of model time
    assert not clock.realtime
    assert clock.wall_seconds_until(clock.now_ms() + 3_600_000) <= 1.0


def test_stopped_and_manual_clocks_move_only_when_told() -> None:
    still = SimClock(time_scale=0.0, start_ms=5_000)
    assert still.now_ms() == 5_000
    assert math.isinf(still.wall_seconds_until(6_000))
    manual = SimClock(manual=True, start_ms=5_000, skew_s=1.0)
    assert manual.now_ms() == 6_000
    manual.set_ms(10_000)
    assert manual.now_ms() == 10_000 and manual.base_ms() == 9_000
    manual.set_ms(7_000)  # never backwards
    assert manual.now_ms() == 10_000
    with pytest.raises(RuntimeError):
        SimClock().set_ms(1)
    with pytest.raises(ValueError):
        SimClock(time_scale=-1.0)

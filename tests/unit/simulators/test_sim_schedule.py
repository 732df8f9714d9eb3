"""The shift calendar: states and exact edges in wall-clock shifts and cyclic patterns."""

from __future__ import annotations

from datetime import UTC, datetime

from simulators.scenario import CalendarSpec, CyclicCalendarSpec, ShiftSpec
from simulators.schedule import Calendar


def _ms(text: str) -> int:
    return round(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def test_no_shifts_is_always_scheduled() -> None:
    cal = Calendar(CalendarSpec())
    assert cal.always_scheduled
    assert cal.state_at(_ms("2026-11-26T03:00:00")) == "scheduled"
    assert cal.next_edge(_ms("2026-11-26T03:00:00")) is None


def test_day_shift_with_break() -> None:
    spec = CalendarSpec(shifts=[ShiftSpec(name="A", start="08:00", end="16:00",
                                          breaks=[("12:00", "12:30")])])
    cal = Calendar(spec)
    assert cal.state_at(_ms("2026-11-26T07:59:59.999")) == "off"
    assert cal.state_at(_ms("2026-11-26T08:00:00")) == "scheduled"
    assert cal.state_at(_ms("2026-11-26T12:10:00")) == "break"
    assert cal.state_at(_ms("2026-11-26T12:30:00")) == "scheduled"
    assert cal.state_at(_ms("2026-11-26T16:00:00")) == "off"
    assert cal.next_edge(_ms("2026-11-26T07:00:00")) == _ms("2026-11-26T08:00:00")
    assert cal.next_edge(_ms("2026-11-26T08:00:00")) == _ms("2026-11-26T12:00:00")
    assert cal.next_edge(_ms("2026-11-26T12:00:00")) == _ms("2026-11-26T12:30:00")
    assert cal.next_edge(_ms("2026-11-26T16:00:00")) == _ms("2026-11-27T08:00:00")


def test_night_shift_crosses_midnight_in_local_time() -> None:
    spec = CalendarSpec(timezone="Asia/Shanghai",
                        shifts=[ShiftSpec(name="N", start="22:00", end="06:00",
                                          breaks=[("02:00", "02:30")])])
    cal = Calendar(spec)
    # 22:00 Shanghai = 14:00 UTC; 02:00 Shanghai = 18:00 UTC.
    assert cal.state_at(_ms("2026-11-26T13:59:00")) == "off"
    assert cal.state_at(_ms("2026-11-26T14:00:00")) == "scheduled"
    assert cal.state_at(_ms("2026-11-26T18:15:00")) == "break"
    assert cal.state_at(_ms("2026-11-26T21:59:00")) == "scheduled"
    assert cal.state_at(_ms("2026-11-26T22:00:00")) == "off"
    assert cal.next_edge(_ms("2026-11-26T14:00:00")) == _ms("2026-11-26T18:00:00")


def test_cyclic_pattern_is_aligned_to_the_epoch() -> None:
    cal = Calendar(CalendarSpec(cyclic=CyclicCalendarSpec(period_s=60, breaks=[(50, 55)],
                                                          off=[(10, 20)])))
    base = _ms("2026-11-26T08:00:00")
    assert cal.state_at(base + 5_000) == "scheduled"
    assert cal.state_at(base + 10_000) == "off"
    assert cal.state_at(base + 52_000) == "break"
    assert cal.state_at(base + 55_000) == "scheduled"
    assert cal.next_edge(base + 5_000) == base + 10_000
    assert cal.next_edge(base + 20_000) == base + 50_000
    assert cal.next_edge(base + 55_000) == base + 70_000

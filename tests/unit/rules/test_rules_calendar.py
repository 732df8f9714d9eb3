"""Shift calendar (site-local time, midnight, breaks, DST) and windows."""

from __future__ import annotations

from datetime import date, time

import pytest
from rules_helpers import T0, H, M, one_machine, pick, run, smp, utc

from rules.calendar import ShiftCalendar
from rules.errors import ConfigError
from rules.spec import ShiftSpec
from rules.windows import WindowPlan

NIGHT = ShiftSpec("N", time(22), time(6), ((time(2), time(2, 30)),))

# (zone, local date of the shift start, expected UTC start, expected UTC end, break)
OCCURRENCES = [
    ("Asia/Shanghai", date(2026, 1, 1), "2026-01-01T14:00", "2026-01-01T22:00",
     ("2026-01-01T18:00", "2026-01-01T18:30")),
    ("Europe/Berlin", date(2026, 3, 28), "2026-03-28T21:00", "2026-03-29T04:00",
     ("2026-03-29T01:00", "2026-03-29T01:30")),  # spring forward: a 7 h night
    ("Europe/Berlin", date(2026, 10, 24), "2026-10-24T20:00", "2026-10-25T05:00",
     ("2026-10-25T00:00", "2026-10-25T00:30")),  # fall back: a 9 h night, 02:00 is CEST
    ("UTC", date(2026, 1, 1), "2026-01-01T22:00", "2026-01-02T06:00",
     ("2026-01-02T02:00", "2026-01-02T02:30")),
]


@pytest.mark.parametrize(("zone", "day", "start", "end", "brk"), OCCURRENCES)
def test_night_shift_occurrence(
    zone: str, day: date, start: str, end: str, brk: tuple[str, str]
) -> None:
    (occ,) = ShiftCalendar((NIGHT,), zone).occurrences_on(day)
    assert (occ.start_ms, occ.end_ms) == (utc(start), utc(end))
    assert occ.breaks == ((utc(brk[0]), utc(brk[1])),)


def test_break_crossing_midnight_and_clipped() -> None:
    spec = ShiftSpec("N", time(20), time(4), ((time(23, 30), time(0, 30)), (time(3), time(5))))
    (occ,) = ShiftCalendar((spec,), "UTC").occurrences_on(date(2026, 1, 1))
    assert occ.breaks == (
        (utc("2026-01-01T23:30"), utc("2026-01-02T00:30")),
        (utc("2026-01-02T03:00"), utc("2026-01-02T04:00")),
    )


def test_segments() -> None:
    cal = ShiftCalendar((ShiftSpec("A", time(8), time(16), ((time(12), time(12, 30)),)),), "UTC")
    seg = cal.segment_at(utc("2026-01-01T07:00"))
    assert (seg.scheduled, seg.end_ms) == (False, utc("2026-01-01T08:00"))
    seg = cal.segment_at(utc("2026-01-01T12:10"))
    assert (seg.scheduled, seg.in_break, seg.end_ms) == (True, True, utc("2026-01-01T12:30"))
    seg = cal.segment_at(utc("2026-01-01T16:00"))
    assert (seg.scheduled, seg.end_ms) == (False, utc("2026-01-02T08:00"))


def test_night_shift_record_crossing_midnight_in_shanghai() -> None:
    spec = one_machine(windows=("shift",), timezone="Asia/Shanghai", shifts=(NIGHT,), meters=())
    start, end = utc("2026-01-01T14:00"), utc("2026-01-01T22:00")
    samples = [
        smp(start - H, "m1", "state", "producing"),
        smp(start, "m1", "parts_total", 0),
        smp(end - M, "m1", "parts_total", 600),
    ]
    records = run(spec, samples, end=end)
    rec = pick(records, window="shift")
    assert (rec.window_start_ms, rec.window_end_ms) == (start, end)
    assert rec.planned_busy_time_s == 7.5 * 3600
    assert rec.parts_produced == 600
    assert rec.availability == 1.0
    assert "incomplete" not in rec.flags


@pytest.mark.parametrize(
    ("day", "hours"), [("2026-03-28T21:00", 7 - 0.5), ("2026-10-24T20:00", 9 - 0.5)]
)
def test_dst_night_shift_planned_busy_time(day: str, hours: float) -> None:
    spec = one_machine(windows=("shift",), timezone="Europe/Berlin", shifts=(NIGHT,), meters=())
    start = utc(day)
    records = run(spec, [smp(start, "m1", "state", "idle")], end=start + 10 * H)
    rec = pick(records, window="shift", start=start)
    assert rec.planned_busy_time_s == hours * 3600
    assert rec.idle_time_s == hours * 3600


def test_tumbling_window_with_calendar_pot_is_scheduled_time_only() -> None:
    shift = ShiftSpec("A", time(8, 30), time(16), ((time(12), time(12, 30)),))
    spec = one_machine(windows=("1h", "shift"), shifts=(shift,), meters=())
    samples = [smp(T0 - H, "m1", "state", "producing")]  # T0 is 08:00 UTC
    records = run(spec, samples, end=T0 + 9 * H)
    assert pick(records, window="1h", start=T0 - H).planned_busy_time_s == 0
    assert pick(records, window="1h", start=T0 - H).availability is None
    assert pick(records, window="1h", start=T0).planned_busy_time_s == 30 * 60
    assert pick(records, window="1h", start=T0 + 4 * H).planned_busy_time_s == 30 * 60
    shift_rec = pick(records, window="shift")
    assert shift_rec.planned_busy_time_s == 7 * 3600
    assert shift_rec.window_start_ms == T0 + 30 * M
    assert "incomplete" not in shift_rec.flags


def test_break_counts_as_planned_downtime_whatever_the_state() -> None:
    shift = ShiftSpec("A", time(8), time(10), ((time(9), time(9, 15)),))
    spec = one_machine(windows=("shift",), shifts=(shift,), meters=())
    samples = [smp(T0, "m1", "state", "unplanned_down"), smp(T0 + 70 * M, "m1", "state", "idle")]
    rec = pick(run(spec, samples, end=T0 + 2 * H), window="shift")
    assert rec.planned_busy_time_s == 105 * 60
    assert rec.unplanned_down_time_s == 60 * 60
    assert rec.idle_time_s == 45 * 60


def test_window_plan() -> None:
    plan = WindowPlan(("1m", "15m", "1h"), None)
    assert plan.quantum_ms == 10_000
    assert plan.first_slice_start(T0 + 37 * M + 5) == T0
    assert WindowPlan(("10s", "1h"), None).quantum_ms == 10_000
    assert WindowPlan(("8h",), None).quantum_ms == 10_000
    assert WindowPlan(("4s", "1m"), None).quantum_ms == 4_000
    with pytest.raises(ConfigError):
        WindowPlan(("1x",), None)


def test_shift_label_without_calendar_gives_no_shift_records() -> None:
    spec = one_machine(windows=("shift", "1h"), meters=())
    records = run(spec, [smp(T0, "m1", "state", "idle")], end=T0 + H)
    assert {r.window for r in records} == {"1h"}

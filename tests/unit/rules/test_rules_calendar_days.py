"""Working calendar: weekdays, off days, make-up days, night shifts on a holiday eve, and
machines following another calendar than the site's."""

from __future__ import annotations

from datetime import date, time

import pytest
from rules_helpers import H, one_machine, pick, run, smp, utc

from rules.calendar import ShiftCalendar
from rules.engine import KpiEngine
from rules.errors import ConfigError
from rules.spec import CalendarSpec, LineSpec, MachineSpec, ShiftSpec

WEEKDAYS_ONLY = frozenset({1, 2, 3, 4, 5})
DAY = ShiftSpec("A", time(8), time(16), ((time(12), time(12, 30)),), WEEKDAYS_ONLY)
NIGHT = ShiftSpec("N", time(22), time(6), (), WEEKDAYS_ONLY)
# In Shanghai (+08:00); 4 March 2024 is a Monday.
MON = date(2024, 3, 4)


def _names(cal: ShiftCalendar, day: date) -> list[str]:
    return [occ.name for occ in cal.occurrences_on(day)]


def test_shifts_start_only_on_their_weekdays() -> None:
    cal = ShiftCalendar((DAY, NIGHT, ShiftSpec("W", time(9), time(13), (), frozenset({6}))),
                        "Asia/Shanghai")
    assert _names(cal, MON) == ["A", "N"]
    assert _names(cal, date(2024, 3, 9)) == ["W"]  # Saturday
    assert _names(cal, date(2024, 3, 10)) == []  # Sunday
    # Friday's night shift runs into Saturday: it is Friday's.
    (night,) = [o for o in cal.occurrences_on(date(2024, 3, 8)) if o.name == "N"]
    assert (night.start_ms, night.end_ms) == (utc("2024-03-08T14:00"), utc("2024-03-08T22:00"))
    assert cal.segment_at(utc("2024-03-08T21:00")).scheduled  # Saturday 05:00 local


def test_off_days_and_make_up_days() -> None:
    cal = ShiftCalendar((DAY,), "Asia/Shanghai", off_days=frozenset({MON}),
                        make_up_days=((date(2024, 3, 10), 5),))
    assert _names(cal, MON) == []
    assert cal.weekday_rule(MON) is None
    assert _names(cal, date(2024, 3, 10)) == ["A"]  # a Sunday worked as a Friday
    assert cal.weekday_rule(date(2024, 3, 10)) == 5
    assert _names(cal, date(2024, 3, 5)) == ["A"]


def test_a_night_shift_belongs_to_the_day_it_starts_on() -> None:
    # Wednesday 6 March is a holiday: Tuesday's night shift runs to its end on the
    # holiday's morning; none starts on the holiday's evening, though it would end on a
    # working Thursday.
    cal = ShiftCalendar((NIGHT,), "Asia/Shanghai", off_days=frozenset({date(2024, 3, 6)}))
    assert cal.segment_at(utc("2024-03-05T21:59")).scheduled  # Wed 05:59 local
    assert not cal.segment_at(utc("2024-03-05T22:00")).scheduled
    assert not cal.segment_at(utc("2024-03-06T21:00")).scheduled  # Thu 05:00 local
    assert cal.segment_at(utc("2024-03-07T14:00")).scheduled  # Thu 22:00 local


def test_exceptions_without_shifts_schedule_whole_days() -> None:
    cal = ShiftCalendar((), "Europe/Berlin", off_days=frozenset({date(2024, 3, 31)}))
    seg = cal.segment_at(utc("2024-03-30T12:00"))
    assert seg.scheduled and not seg.in_break
    assert seg.end_ms == utc("2024-03-30T23:00")  # local midnight
    assert not cal.segment_at(utc("2024-03-31T12:00")).scheduled
    assert cal.segment_at(utc("2024-03-31T22:00")).scheduled  # 1 April 00:00 CEST


def test_time_outside_the_calendar_is_outside_pot_whatever_the_machine_does() -> None:
    spec = one_machine(windows=("1d",), timezone="Asia/Shanghai", shifts=(DAY,),
                       off_days=frozenset({MON}), meters=())
    start = utc("2024-03-02T16:00")  # Sunday 3 March 00:00 local
    samples = [smp(start, "m1", "state", "producing"), smp(start, "m1", "parts_total", 0),
               smp(start + 12 * H, "m1", "parts_total", 100)]
    samples += [smp(start + d * 24 * H + 3 * H, "m1", "parts_total", 100 * (d + 1))
                for d in range(1, 3)]
    records = run(spec, samples, end=start + 3 * 24 * H)
    sunday = pick(records, window="1d", start=start)
    monday = pick(records, window="1d", start=start + 24 * H)
    tuesday = pick(records, window="1d", start=start + 48 * H)
    for rec in (sunday, monday):
        assert rec.planned_busy_time_s == rec.producing_time_s == 0
        assert rec.availability is None and rec.oee is None
        assert rec.parts_produced == 100  # counts are still reported
    assert tuesday.planned_busy_time_s == tuesday.producing_time_s == 7.5 * 3600
    assert tuesday.availability == 1.0


def _two_calendars(other: CalendarSpec) -> tuple[MachineSpec, ...]:
    return (MachineSpec("m1", "L1", 45.0), MachineSpec("m2", "L1", 45.0, calendar=other.name))


@pytest.mark.parametrize(("other", "m2_pbt_h"), [
    (CalendarSpec("always"), [1.0] * 10),
    (CalendarSpec("late", (ShiftSpec("B", time(9, 30), time(11)),)),
     [0, 0, 0.5, 1.0, 0, 0, 0, 0, 0, 0]),
])
def test_a_machine_follows_its_own_calendar(other: CalendarSpec, m2_pbt_h: list[float]) -> None:
    spec = one_machine(windows=("1h", "shift"), timezone="UTC", meters=(),
                       shifts=(ShiftSpec("A", time(8), time(16)),), calendars=(other,),
                       machines=_two_calendars(other), lines=(LineSpec("L1", "m1"),))
    t = utc("2024-03-04T07:00")
    samples = [smp(t, m, "state", "producing") for m in ("m1", "m2")]
    records = run(spec, samples, end=t + 10 * H)
    for k in range(10):
        m1 = pick(records, machine="m1", window="1h", start=t + k * H)
        m2 = pick(records, machine="m2", window="1h", start=t + k * H)
        assert m1.planned_busy_time_s == (3600 if 1 <= k <= 8 else 0)
        assert m2.planned_busy_time_s == m2_pbt_h[k] * 3600
    # Shift windows are the site's; the other calendar's machine gets its planned time.
    shift_m2 = pick(records, machine="m2", window="shift")
    assert (shift_m2.window_start_ms, shift_m2.window_end_ms) == (t + H, t + 9 * H)
    assert shift_m2.planned_busy_time_s == sum(m2_pbt_h[1:9]) * 3600
    line = pick(records, machine=None, window="1h", start=t)
    assert line.planned_busy_time_s == 0  # the line's output machine is m1


def test_an_unknown_calendar_name_is_a_config_error() -> None:
    spec = one_machine(machines=(MachineSpec("m1", "L1", 45.0, calendar="nope"),), meters=())
    with pytest.raises(ConfigError, match="nope"):
        KpiEngine(spec)


def test_weekday_night_shift_across_dst_in_berlin() -> None:
    sat = ShiftSpec("N", time(22), time(6), (), frozenset({6}))
    spec = one_machine(windows=("shift",), timezone="Europe/Berlin", shifts=(sat,), meters=())
    start = utc("2024-10-26T20:00")  # Saturday 22:00 CEST, the night clocks go back
    records = run(spec, [smp(start, "m1", "state", "idle")], end=start + 10 * H)
    rec = pick(records, window="shift")
    assert rec.window_end_ms - rec.window_start_ms == 9 * H
    assert rec.idle_time_s == 9 * 3600
    assert len([r for r in records if r.machine == "m1"]) == 1  # no Sunday night shift


def test_a_shift_after_a_23_hour_day_is_seen_a_day_ahead() -> None:
    # Saturday 30 March 2024, 23:30 CET in Berlin; Sunday lasts 23 h, so 24 h later it is
    # already Monday 00:30, and Monday's 00:00 shift must end the segment.
    cal = ShiftCalendar((ShiftSpec("M", time(0), time(6), (), frozenset({1})),),
                        "Europe/Berlin")
    seg = cal.segment_at(utc("2024-03-30T22:30"))
    assert not seg.scheduled
    assert seg.end_ms == utc("2024-03-31T22:00")  # Monday 00:00 CEST

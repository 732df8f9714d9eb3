"""Calendar windows (1d, 1w, 1mo from local midnight, across DST) beside fixed ones."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from rules_helpers import H, M, one_machine, pick, run, smp, utc

from rules.calendar import calendar_window, local_day
from rules.errors import ConfigError
from rules.spec import check_window_label, is_calendar_window, window_length_ms
from rules.windows import WindowPlan, describe_windows

BERLIN = ZoneInfo("Europe/Berlin")
SHANGHAI = ZoneInfo("Asia/Shanghai")

# (label, zone, an instant inside, expected start, expected end), all UTC
BOUNDS = [
    ("1d", SHANGHAI, "2024-03-04T15:59:59", "2024-03-03T16:00", "2024-03-04T16:00"),
    ("1d", SHANGHAI, "2024-03-04T16:00", "2024-03-04T16:00", "2024-03-05T16:00"),
    ("1d", BERLIN, "2024-03-31T12:00", "2024-03-30T23:00", "2024-03-31T22:00"),  # 23 h
    ("1d", BERLIN, "2024-10-27T12:00", "2024-10-26T22:00", "2024-10-27T23:00"),  # 25 h
    ("1d", BERLIN, "2024-10-27T00:30", "2024-10-26T22:00", "2024-10-27T23:00"),  # 1st 02:30
    ("1d", BERLIN, "2024-10-27T01:30", "2024-10-26T22:00", "2024-10-27T23:00"),  # 2nd 02:30
    ("1w", SHANGHAI, "2024-03-06T03:00", "2024-03-03T16:00", "2024-03-10T16:00"),
    ("1w", SHANGHAI, "2024-03-03T15:59", "2024-02-25T16:00", "2024-03-03T16:00"),
    ("1w", BERLIN, "2024-10-30T12:00", "2024-10-27T23:00", "2024-11-03T23:00"),
    ("1w", BERLIN, "2024-10-25T12:00", "2024-10-20T22:00", "2024-10-27T23:00"),  # 7 d + 1 h
    ("1mo", SHANGHAI, "2024-02-15T00:00", "2024-01-31T16:00", "2024-02-29T16:00"),
    ("1mo", SHANGHAI, "2024-12-31T16:00", "2024-12-31T16:00", "2025-01-31T16:00"),
    ("1mo", BERLIN, "2024-03-15T00:00", "2024-02-29T23:00", "2024-03-31T22:00"),  # 31 d - 1 h
    ("1mo", BERLIN, "2024-10-15T00:00", "2024-09-30T22:00", "2024-10-31T23:00"),  # 31 d + 1 h
    ("1mo", ZoneInfo("UTC"), "2024-02-29T23:59", "2024-02-01T00:00", "2024-03-01T00:00"),
]


@pytest.mark.parametrize(("label", "zone", "inside", "start", "end"), BOUNDS)
def test_calendar_window_bounds(label: str, zone: ZoneInfo, inside: str, start: str,
                                end: str) -> None:
    assert calendar_window(label, utc(inside), zone) == (utc(start), utc(end))


def test_a_day_where_midnight_is_skipped_starts_at_the_jump() -> None:
    # Chile moves its clocks from 00:00 to 01:00 in September: that day has no midnight.
    santiago = ZoneInfo("America/Santiago")
    day, start, end = local_day(utc("2024-09-08T12:00"), santiago)
    assert str(day) == "2024-09-08"
    assert start == utc("2024-09-08T04:00")  # 00:00 -04 is the jump to 01:00 -03
    assert end - start == 23 * H
    assert local_day(start - 1, santiago)[2] == start


def test_labels() -> None:
    assert [is_calendar_window(x) for x in ("1d", "1w", "1mo", "24h", "shift")] == [
        True, True, True, False, False]
    assert window_length_ms("1d") == 24 * H  # nominal: see calendar_window for the bounds
    assert window_length_ms("1w") == 7 * 24 * H
    for label in ("1mo", "2d", "2w", "3mo", "1y", "0m"):
        with pytest.raises(ValueError, match=repr(label)):
            window_length_ms(label)
    check_window_label("1mo")
    check_window_label("shift")
    with pytest.raises(ValueError, match="48h"):
        check_window_label("2d")
    with pytest.raises(ConfigError):
        WindowPlan(("2d",), None)


def test_slices_end_at_local_midnight_and_fixed_windows_stay_on_the_utc_grid() -> None:
    plan = WindowPlan(("1h", "1d", "1mo"), None, timezone="Asia/Kathmandu")  # +05:45
    midnight = utc("2024-03-04T18:15")
    info = plan.slice_at(midnight - 5_000)
    assert info.end_ms == midnight
    wins = plan.windows_of(plan.slice_at(midnight))
    assert wins == [(0, utc("2024-03-04T18:00"), utc("2024-03-04T19:00")),
                    (1, midnight, midnight + 24 * H),
                    (2, utc("2024-02-29T18:15"), utc("2024-03-31T18:15"))]
    # Calendar windows are not reached back to before the first sample; fixed ones are.
    assert plan.first_slice_start(utc("2024-03-04T18:37")) == utc("2024-03-04T18:00")


def test_day_week_and_month_records_across_a_dst_change() -> None:
    spec = one_machine(windows=("1d", "1w", "1mo"), timezone="Europe/Berlin", meters=())
    start = utc("2024-10-20T22:00")  # Monday 21 October, 00:00 CEST
    end = utc("2024-11-03T23:00")  # Monday 4 November, 00:00 CET
    samples = [smp(start, "m1", "state", "producing"), smp(start, "m1", "parts_total", 0)]
    samples += [smp(start + k * H, "m1", "parts_total", k) for k in range(1, 337)]
    samples.append(smp(end - 1, "m1", "parts_total", 337))
    records = run(spec, samples, end=end)
    sunday = pick(records, window="1d", start=utc("2024-10-26T22:00"))
    assert sunday.window_end_ms == utc("2024-10-27T23:00")
    assert sunday.planned_busy_time_s == sunday.producing_time_s == 25 * 3600
    assert sunday.parts_produced == 25
    week = pick(records, window="1w", start=start)
    assert week.window_end_ms == utc("2024-10-27T23:00")
    assert week.planned_busy_time_s == (7 * 24 + 1) * 3600
    assert "incomplete" not in week.flags
    october = pick(records, window="1mo", start=utc("2024-09-30T22:00"))
    assert october.window_end_ms == utc("2024-10-31T23:00")
    assert october.producing_time_s == (11 * 24 + 1) * 3600  # 21 to 31 October
    assert "incomplete" in october.flags
    assert october.observed_s == october.producing_time_s
    assert october.parts_produced == 264  # the count at 265 h is stamped 1 November 00:00
    november = pick(records, window="1mo", start=utc("2024-10-31T23:00"))
    assert november.parts_produced == 337 - 264


def test_shanghai_day_is_a_local_day_not_a_utc_day() -> None:
    spec = one_machine(windows=("1d",), timezone="Asia/Shanghai", meters=())
    t = utc("2024-03-03T16:00")  # 4 March 00:00 +08:00
    records = run(spec, [smp(t, "m1", "state", "idle")], end=t + 24 * H)
    rec = pick(records, window="1d")
    assert (rec.window_start_ms, rec.window_end_ms) == (t, t + 24 * H)
    assert rec.idle_time_s == 24 * 3600


def test_describe_windows() -> None:
    assert describe_windows(["1m", "15m", "1d", "1w", "1mo", "shift"], "Asia/Shanghai",
                            2024) == [
        "1m, 15m = fixed, aligned to the UTC epoch",
        "1d = local days in Asia/Shanghai (00:00-00:00 +08:00)",
        "1w = ISO weeks in Asia/Shanghai (Monday 00:00 +08:00)",
        "1mo = calendar months in Asia/Shanghai (the 1st 00:00 +08:00)",
        "shift = the shifts of [calendar]",
    ]
    (berlin,) = describe_windows(["1d"], "Europe/Berlin", 2024)
    assert berlin == ("1d = local days in Europe/Berlin (00:00-00:00 +01:00/+02:00, "
                      "23 h or 25 h across a DST change)")


def test_minute_windows_inside_a_local_day_keep_their_utc_grid() -> None:
    spec = one_machine(windows=("15m", "1d"), timezone="Asia/Kathmandu", meters=())
    t = utc("2024-03-04T18:00")
    records = run(spec, [smp(t, "m1", "state", "idle")], end=t + 30 * M)
    starts = sorted(r.window_start_ms for r in records if r.window == "15m" and r.machine)
    assert starts == [t, t + 15 * M]
    before, day = sorted((r for r in records if r.window == "1d" and r.machine),
                         key=lambda r: r.window_start_ms)
    assert day.window_start_ms == before.window_end_ms == t + 15 * M  # 00:00 +05:45
    assert before.idle_time_s == day.idle_time_s == 15 * 60

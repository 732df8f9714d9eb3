"""A period's KPIs from its window records, and the change against a baseline (docs/kpi.md)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from rules_helpers import T0, H, M, one_machine, run, smp

from rules.calendar import calendar_window
from rules.report import (
    PERIOD_FIELDS,
    RATE_FIELDS,
    SUM_FIELDS,
    Scope,
    compare,
    expected_windows,
    misaligned,
    relative_change,
    summarize,
    window_spans,
)
from rules.spec import LineSpec, MachineSpec, MeterSpec
from rules.types import KpiRecord, Sample

SHANGHAI, BERLIN = ZoneInfo("Asia/Shanghai"), ZoneInfo("Europe/Berlin")

SITE = Scope("site")
LINE = Scope("site", "line", "L1")
MACHINE = Scope("site", "machine", "m1")


def _plant_samples(seed: int, hours: int) -> list[Sample]:
    """Two machines of one line and their meters, changing state every few minutes."""
    rng = random.Random(seed)
    out: list[Sample] = []
    for machine, meter in (("m1", "e1"), ("m2", "e2")):
        parts = bad = 0
        kwh = 1000.0
        out += [smp(T0, machine, "parts_total", 0), smp(T0, machine, "parts_bad", 0)]
        t = T0
        while t < T0 + hours * H:
            state = rng.choice(["producing", "producing", "producing", "idle", "setup",
                                "unplanned_down"])
            out.append(smp(t, machine, "state", state))
            step = rng.randint(2, 11) * M + rng.randint(0, 59_999)
            if state == "producing":
                made = step // (50 * 1000)
                parts += made
                bad += sum(rng.random() < 0.04 for _ in range(made))
            kwh += round(step / H * (30 if state == "producing" else 4), 1)
            t += step
            out += [smp(t, machine, "parts_total", parts), smp(t, machine, "parts_bad", bad),
                    smp(t, meter, "energy_kwh", round(kwh, 1))]
    return out


def _spec() -> object:
    return one_machine(
        windows=("15m", "1h"),
        lines=(LineSpec("L1", "m2"),),
        machines=(MachineSpec("m1", "L1", 45.0), MachineSpec("m2", "L1", 48.0)),
        meters=(MeterSpec("e1", "m1", None, 0.1, 100000000.0, 500.0),
                MeterSpec("e2", "m2", None, 0.1, 100000000.0, 500.0)),
    )


@pytest.mark.parametrize("scope", [MACHINE, LINE, SITE], ids=str)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_four_quarter_hours_sum_to_their_hour(scope: Scope, seed: int) -> None:
    """Summing the 15m records of an hour gives that hour's own 1h record: the period
    arithmetic is the window arithmetic (sums, then ratios), never an average."""
    records = run(_spec(), _plant_samples(seed, 3), end=T0 + 3 * H)  # type: ignore[arg-type]
    for hour in range(3):
        start, end = T0 + hour * H, T0 + (hour + 1) * H
        (own,) = [r for r in records if r.window == "1h" and scope.matches(r)
                  and r.window_start_ms == start]
        period = summarize(records, scope, "15m", start, end)
        assert (period.windows, period.windows_expected) == (4, 4)
        for name in PERIOD_FIELDS:
            want = getattr(own, name)
            got = period.values[name]
            if want is None:
                assert got is None, name
            else:
                assert got == pytest.approx(want, rel=1e-9, abs=1e-9), name
        if scope != SITE:
            assert period.values["oee"] is not None


def _rec(end_ms: int, *, pq: int, sq: int, pbt: float = 3600.0, apt: float = 3000.0,
         ideal: float | None = 45.0, kwh: float | None = 10.0, machine: str | None = "m1",
         line: str | None = "L1", window: str = "1h", flags: tuple[str, ...] = ()) -> KpiRecord:
    gq = pq - sq
    return KpiRecord(
        site="site", line=line, machine=machine, window=window,
        window_start_ms=end_ms - H, window_end_ms=end_ms,
        planned_busy_time_s=pbt, producing_time_s=apt, parts_produced=pq, parts_good=gq,
        parts_scrap=sq, ideal_cycle_time_s=ideal,
        oee=None if ideal is None or pbt == 0 else ideal * gq / pbt,
        energy_kwh=kwh, co2_kg=None if kwh is None else kwh * 0.5306, flags=flags)


def test_kpi_md_defect_rate_from_2_to_1_5_percent_is_a_25_percent_reduction() -> None:
    records = [_rec(T0 + H, pq=1000, sq=20), _rec(T0 + 2 * H, pq=1000, sq=15)]
    base = summarize(records, MACHINE, "1h", T0, T0 + H)
    cur = summarize(records, MACHINE, "1h", T0 + H, T0 + 2 * H)
    report = compare(cur, base)
    assert base.values["defect_rate"] == 0.02 and cur.values["defect_rate"] == 0.015
    assert report.change["defect_rate"] == pytest.approx(0.25)
    assert report.change["parts_produced"] == 0.0
    assert report.change["energy_per_good_unit_kwh"] == pytest.approx(
        (10 / 980 - 10 / 985) / (10 / 980))


def test_relative_change_is_undefined_without_a_baseline() -> None:
    assert relative_change(None, 1.0) is None
    assert relative_change(1.0, None) is None
    assert relative_change(0, 0.5) is None
    assert relative_change(0.8, 0.6) == pytest.approx(0.25)
    assert relative_change(0.5, 0.6) == pytest.approx(-0.2)


def test_rates_come_from_sums_not_from_averaging_windows() -> None:
    # 10 % defects on 100 parts and 0 % on 900: the period is 1 %, not the mean 5 %.
    records = [_rec(T0 + H, pq=100, sq=10), _rec(T0 + 2 * H, pq=900, sq=0)]
    period = summarize(records, MACHINE, "1h", T0, T0 + 2 * H)
    assert period.values["defect_rate"] == pytest.approx(0.01)
    assert period.values["availability"] == pytest.approx(6000 / 7200)
    assert period.values["cycle_time_mean_s"] == pytest.approx(6000 / 1000)


def test_an_ideal_cycle_time_changed_mid_period_weights_each_window() -> None:
    records = [_rec(T0 + H, pq=60, sq=0, ideal=40.0), _rec(T0 + 2 * H, pq=60, sq=0, ideal=50.0)]
    period = summarize(records, MACHINE, "1h", T0, T0 + 2 * H)
    assert period.values["oee"] == pytest.approx((40 * 60 + 50 * 60) / 7200)
    assert period.values["performance"] == pytest.approx((40 * 60 + 50 * 60) / 6000)


def test_energy_intensity_uses_only_windows_with_energy_data() -> None:
    records = [_rec(T0 + H, pq=100, sq=0, kwh=10.0), _rec(T0 + 2 * H, pq=100, sq=0, kwh=None,
                                                            flags=("no_energy_data",))]
    period = summarize(records, MACHINE, "1h", T0, T0 + 2 * H)
    assert period.values["energy_kwh"] == 10.0
    assert period.values["energy_per_unit_kwh"] == pytest.approx(0.1)  # not 10 / 200
    assert period.values["kgce_per_good_unit"] == pytest.approx(0.1229 * 0.1)
    assert period.energy_windows == 1 and period.windows == 2
    assert period.flags == {"no_energy_data": 1}
    assert not period.complete


def test_no_energy_at_all_leaves_every_energy_figure_undefined() -> None:
    period = summarize([_rec(T0 + H, pq=10, sq=0, kwh=None)], MACHINE, "1h", T0, T0 + H)
    for name in ("energy_kwh", "co2_kg", "energy_per_unit_kwh", "energy_per_good_unit_kwh",
                 "kgce_per_good_unit", "co2_per_good_unit_kg"):
        assert period.values[name] is None, name


def test_a_replayed_record_counts_once_and_the_latest_wins() -> None:
    first = _rec(T0 + H, pq=100, sq=5)
    corrected = replace(first, parts_produced=110, parts_good=105)
    period = summarize([first, corrected, first, corrected], MACHINE, "1h", T0, T0 + H)
    assert period.windows == 1 and period.values["parts_produced"] == 110


def test_only_windows_wholly_inside_the_period_and_of_the_scope_count() -> None:
    records = [
        _rec(T0 + H, pq=1, sq=0),
        _rec(T0 + 2 * H, pq=2, sq=0),
        _rec(T0 + 3 * H, pq=4, sq=0),  # ends after the period
        _rec(T0 + 2 * H, pq=8, sq=0, machine="m2"),  # another machine
        _rec(T0 + 2 * H, pq=16, sq=0, machine=None),  # the line's own record
        _rec(T0 + 2 * H, pq=32, sq=0, window="15m"),  # another window size
    ]
    period = summarize(records, MACHINE, "1h", T0 + 30 * M, T0 + 2 * H + 30 * M)
    assert period.values["parts_produced"] == 2
    assert period.windows_expected == 1
    line = summarize(records, LINE, "1h", T0, T0 + 3 * H)
    assert line.values["parts_produced"] == 16


def test_missing_windows_show_in_the_coverage() -> None:
    period = summarize([_rec(T0 + H, pq=1, sq=0), _rec(T0 + 3 * H, pq=1, sq=0)], MACHINE,
                       "1h", T0, T0 + 3 * H)
    assert (period.windows, period.windows_expected, period.complete) == (2, 3, False)


def test_site_scope_has_no_schedule_rates_but_its_defect_rate() -> None:
    site = _rec(T0 + H, pq=100, sq=3, ideal=None, line=None, machine=None)
    period = summarize([replace(site, oee=None)], SITE, "1h", T0, T0 + H)
    assert period.values["oee"] is None and period.values["availability"] is None
    assert period.values["defect_rate"] == pytest.approx(0.03)
    assert period.values["energy_per_good_unit_kwh"] == pytest.approx(10 / 97)


def test_an_empty_period_is_refused() -> None:
    with pytest.raises(ValueError, match="end after"):
        summarize([], MACHINE, "1h", T0, T0)


def test_time_the_agent_did_not_observe_shows_in_the_coverage() -> None:
    """Every window is there, but the first one only from the agent's (fresh) start:
    the period is not complete, and the text says how much was observed."""
    first = replace(_rec(T0 + H, pq=10, sq=0), observed_s=1800.0, flags=("incomplete",))
    records = [first, _rec(T0 + 2 * H, pq=10, sq=0, flags=())]
    period = summarize(records, MACHINE, "1h", T0, T0 + 2 * H)
    assert (period.windows, period.windows_expected) == (2, 2)
    assert (period.observed_s, period.expected_s, period.partial_windows) == (5400.0, 7200.0, 1)
    assert not period.complete
    # A record from an agent that predates observed_s (None here, as the record built
    # above without it) counts as wholly observed.
    assert records[1].observed_s is None
    whole = summarize(records[1:], MACHINE, "1h", T0 + H, T0 + 2 * H)
    assert (whole.observed_s, whole.partial_windows, whole.complete) == (3600.0, 0, True)
    assert "observed_s" not in PERIOD_FIELDS  # coverage, not a figure with a reduction

    from agent.report import Period, ReportRequest, render_json, render_text

    request = ReportRequest("1h", Period(T0, T0 + 2 * H, "current"),
                            Period(T0 + H, T0 + 2 * H, "baseline"))
    report = compare(period, whole)
    text = render_text(report, request)
    assert "current  (2 of 2 windows, 1.50 h of 2.00 h observed)" in text
    assert "baseline  (1 of 1 windows, 1.00 h of 1.00 h observed)" in text
    assert "observed 1 of the current period's windows only in part" in text
    doc = render_json(report, request)
    assert (doc["current"]["observed_s"], doc["current"]["expected_s"]) == (5400.0, 7200.0)
    assert doc["current"]["complete"] is False and doc["baseline"]["complete"] is True


def test_shift_windows_count_observed_time_without_an_expected_span() -> None:
    records = [replace(_rec(T0 + H, pq=1, sq=0, window="shift"), observed_s=600.0)]
    period = summarize(records, MACHINE, "shift", T0, T0 + H)
    assert (period.observed_s, period.expected_s, period.partial_windows) == (600.0, None, 1)
    assert not period.complete


def _local_ms(day: date, zone: ZoneInfo) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp() * 1000)


def _calendar_rec(window: str, ts_ms: int, zone: ZoneInfo, *, pq: int = 100,
                  machine: str = "m1", **values: float | None) -> KpiRecord:
    """A record of the calendar window containing ``ts_ms``, bounded as the engine does."""
    start, end = calendar_window(window, ts_ms, zone)
    return KpiRecord(site="site", line="L1", machine=machine, window=window,
                     window_start_ms=start, window_end_ms=end, observed_s=(end - start) / 1000,
                     planned_busy_time_s=(end - start) / 1000, parts_produced=pq,
                     parts_good=pq, energy_kwh=10.0, co2_kg=5.0, **values)  # type: ignore[arg-type]


def test_1d_windows_of_a_shanghai_site_are_its_local_days() -> None:
    """The engine's 1d records of a Shanghai site start at 16:00 UTC; a report in the site's
    zone expects exactly those windows, finds them all and counts them in their days."""
    day0 = date(2026, 1, 2)
    start = _local_ms(day0, SHANGHAI)
    spec = one_machine(windows=("1h", "1d"), timezone="Asia/Shanghai")
    samples = [smp(start, "m1", "state", "producing"), smp(start, "m1", "parts_total", 0),
               smp(start, "e1", "energy_kwh", 1000.0)]
    for hour in range(1, 48):
        samples += [smp(start + hour * H, "m1", "parts_total", hour * 70),
                    smp(start + hour * H, "e1", "energy_kwh", 1000.0 + hour * 20)]
    records = run(spec, samples, end=start + 48 * H)
    days = [r for r in records if r.window == "1d" and MACHINE.matches(r)]
    assert [r.window_start_ms for r in days] == [start, start + 24 * H]
    assert start % (24 * H) == 16 * H  # local midnight is 16:00 UTC the day before

    two_days = summarize(records, MACHINE, "1d", start, start + 48 * H, "Asia/Shanghai")
    assert (two_days.windows, two_days.windows_expected) == (2, 2)
    assert two_days.expected_s == two_days.observed_s == 48 * 3600
    assert two_days.partial_windows == 0
    by_hours = summarize(records, MACHINE, "1h", start, start + 48 * H, "Asia/Shanghai")
    for name in ("parts_produced", "energy_kwh", "producing_time_s", "planned_busy_time_s"):
        assert two_days.values[name] == pytest.approx(by_hours.values[name]), name
    second = summarize(records, MACHINE, "1d", start + 24 * H, start + 48 * H, "Asia/Shanghai")
    assert (second.windows, second.windows_expected) == (1, 1)
    assert second.values["parts_produced"] == days[1].parts_produced

    # Read as UTC days, the same local dates hold one UTC day that no record is: the
    # report must refuse such records instead of counting them against the wrong windows.
    assert misaligned(records, "1d", "Asia/Shanghai") is None
    assert misaligned(records, "1d", "UTC") in days
    assert expected_windows("1d", start, start + 48 * H, "UTC") == (1, 24 * H)


def test_1mo_windows_across_berlin_dst_last_their_local_months() -> None:
    """October 2023 in Berlin has 745 h (the clocks went back on the 29th), March 2023
    743 h; each month window starts at local midnight of the 1st, in CEST or CET."""
    months = [_calendar_rec("1mo", _local_ms(date(2023, m, 15), BERLIN), BERLIN, pq=100 * m)
              for m in (9, 10, 11)]
    assert [r.window_end_ms - r.window_start_ms for r in months] == [720 * H, 745 * H, 720 * H]
    october = summarize(months, MACHINE, "1mo", _local_ms(date(2023, 10, 1), BERLIN),
                        _local_ms(date(2023, 11, 1), BERLIN), "Europe/Berlin")
    assert (october.windows, october.windows_expected) == (1, 1)
    assert october.expected_s == october.observed_s == 745 * 3600
    assert october.values["parts_produced"] == 1000
    autumn = summarize(months, MACHINE, "1mo", _local_ms(date(2023, 9, 1), BERLIN),
                       _local_ms(date(2023, 12, 1), BERLIN), "Europe/Berlin")
    assert (autumn.windows, autumn.windows_expected) == (3, 3)
    assert autumn.expected_s == (720 + 745 + 720) * 3600 and autumn.partial_windows == 0
    assert autumn.values["parts_produced"] == 900 + 1000 + 1100
    # a period that holds October but only part of September and November expects one
    wide = summarize(months, MACHINE, "1mo", _local_ms(date(2023, 9, 20), BERLIN),
                     _local_ms(date(2023, 11, 10), BERLIN), "Europe/Berlin")
    assert (wide.windows, wide.windows_expected) == (1, 1)
    march = window_spans("1mo", _local_ms(date(2023, 3, 1), BERLIN),
                         _local_ms(date(2023, 4, 1), BERLIN), "Europe/Berlin")
    assert [hi - lo for lo, hi in march] == [743 * H]
    assert misaligned(months, "1mo", "Europe/Berlin") is None
    assert misaligned(months, "1mo", "UTC") is months[0]


def test_1w_windows_are_iso_weeks_from_local_monday() -> None:
    monday = _local_ms(date(2023, 10, 23), BERLIN)  # the week of the autumn change
    assert window_spans("1w", monday - H, monday + 8 * 24 * H, "Europe/Berlin") == [
        (monday, monday + 169 * H)]
    assert expected_windows("1w", monday, monday + 169 * H, "Europe/Berlin") == (1, 169 * H)
    assert expected_windows("1h", monday, monday + 169 * H, "Europe/Berlin") == (169, 169 * H)


def test_energy_cost_per_good_unit_is_a_rate_of_the_summed_cost() -> None:
    """Cost, standard coal and the carriers' quantities add up; the cost per good unit is
    the summed cost over the good parts of the windows that carry a cost, never a sum."""
    assert "energy_cost_per_good_unit" in RATE_FIELDS
    assert "energy_cost_per_good_unit" not in SUM_FIELDS
    for name in ("kgce", "energy_cost", "natural_gas_m3", "steam_kg", "water_m3",
                 "compressed_air_m3", "scrap_all_machines"):
        assert name in SUM_FIELDS, name
    def carriers(record: KpiRecord) -> KpiRecord:
        return replace(record, natural_gas_m3=2.0, steam_kg=30.0, water_m3=1.5,
                       compressed_air_m3=40.0)

    records = [
        carriers(replace(_rec(T0 + H, pq=100, sq=0), kgce=50.0, energy_cost=80.0,
                         energy_cost_per_good_unit=0.8)),
        carriers(replace(_rec(T0 + 2 * H, pq=300, sq=0), kgce=30.0, energy_cost=60.0,
                         energy_cost_per_good_unit=0.2)),
        replace(_rec(T0 + 3 * H, pq=600, sq=0), kgce=20.0),  # no tariff for this window
    ]
    period = summarize(records, MACHINE, "1h", T0, T0 + 3 * H)
    values = period.values
    assert values["energy_cost"] == pytest.approx(140.0)
    assert values["energy_cost_per_good_unit"] == pytest.approx(140.0 / 400)  # not 1.0
    assert values["kgce"] == pytest.approx(100.0)
    assert values["kgce_per_good_unit"] == pytest.approx(100.0 / 1000)
    assert values["natural_gas_m3"] == pytest.approx(4.0)
    assert values["steam_kg"] == pytest.approx(60.0)
    assert values["water_m3"] == pytest.approx(3.0)
    assert values["compressed_air_m3"] == pytest.approx(80.0)
